"""Theseus backend: the same problem as a Theseus Objective, solved by th.TheseusLayer.

One Objective per (device, dtype) is built on first use and re-fed inputs on every call (never
rebuilt per forward pass). The batch lives on Theseus' batch axis: each sample has its own
(H*A)-dimensional variable and its own residual block, so samples are solved independently.
Jacobians come from the residual itself (analytic when available), not from Theseus' autograd.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from difftori_core.trajopt.config import SolverConfig, SolverInfo
from difftori_core.trajopt.residuals import Context, Residual, residual_and_jacobian

with warnings.catch_warnings():
    # theseus warns at import when scikit-sparse's CHOLMOD is absent; we only use dense solvers.
    warnings.simplefilter("ignore", UserWarning)
    import theseus as th

_ACTIONS = "actions"


def _ctx_name(key: str) -> str:
    return f"ctx_{key}"


class _LearnedResidualCost(th.CostFunction):
    """Wraps a `Residual` as a Theseus cost function over the flattened action variable."""

    def __init__(
        self,
        actions: th.Vector,
        context: dict[str, th.Variable],
        residual: Residual,
        jacobian_mode: str,
        name: str | None = None,
    ) -> None:
        super().__init__(th.ScaleCostWeight(torch.ones(1, 1, dtype=actions.dtype)), name=name)
        self.residual = residual
        self.jacobian_mode = jacobian_mode
        self.actions = actions
        self.register_optim_var("actions")
        self.context_keys = list(context)
        for key, var in context.items():
            setattr(self, _ctx_name(key), var)
            self.register_aux_var(_ctx_name(key))

    def _inputs(self) -> tuple[Tensor, dict[str, Tensor]]:
        x = self.actions.tensor
        actions = x.view(x.shape[0], self.residual.horizon, self.residual.action_dim)
        ctx = {k: getattr(self, _ctx_name(k)).tensor for k in self.context_keys}
        return actions, ctx

    def error(self) -> Tensor:
        return self.residual(*self._inputs())

    def jacobians(self) -> tuple[list[Tensor], Tensor]:
        r, J = residual_and_jacobian(self.residual, *self._inputs(), mode=self.jacobian_mode)
        return [J], r

    def dim(self) -> int:
        return self.residual.dim

    def _copy_impl(self, new_name: str | None = None) -> _LearnedResidualCost:
        return _LearnedResidualCost(
            self.actions.copy(),
            {k: getattr(self, _ctx_name(k)).copy() for k in self.context_keys},
            self.residual,
            self.jacobian_mode,
            name=new_name,
        )


class TheseusSolver:
    """Theseus-backed solver with the same `solve(init, context)` contract as FastSolver."""

    def __init__(self, residual: Residual, config: SolverConfig) -> None:
        self.residual = residual
        self.config = config
        self._layers: dict[tuple[torch.device, torch.dtype], th.TheseusLayer] = {}

    def _layer(self, device: torch.device, dtype: torch.dtype) -> th.TheseusLayer:
        key = (device, dtype)
        if key not in self._layers:
            cfg, res = self.config, self.residual
            actions = th.Vector(res.num_vars, name=_ACTIONS, dtype=dtype)
            ctx = {
                k: th.Variable(torch.zeros(1, *shape, dtype=dtype), name=_ctx_name(k))
                for k, shape in res.context_spec.items()
            }
            objective = th.Objective(dtype=dtype)
            objective.add(_LearnedResidualCost(actions, ctx, res, cfg.jacobian, name="learned_residual"))
            optimizer_cls = th.LevenbergMarquardt if cfg.method == "lm" else th.GaussNewton
            optimizer = optimizer_cls(
                objective,
                linear_solver_cls=th.CholeskyDenseSolver,
                max_iterations=cfg.max_iterations,
                step_size=cfg.step_size,
                # abs tolerance is compared to the batch-mean error in Theseus, which would couple
                # samples; only the per-sample relative test is used.
                abs_err_tolerance=0.0,
                rel_err_tolerance=cfg.rel_tolerance,
            )
            self._layers[key] = th.TheseusLayer(optimizer, vectorize=False).to(device)
        return self._layers[key]

    def _optimizer_kwargs(self) -> dict[str, Any]:
        cfg = self.config
        kwargs: dict[str, Any] = {
            "backward_mode": cfg.backward_mode,
            "track_best_solution": False,
            "verbose": False,
        }
        if cfg.backward_mode == "truncated":
            kwargs["backward_num_iterations"] = min(cfg.backward_iterations, cfg.max_iterations)
        if cfg.method == "lm":
            kwargs.update(damping=cfg.damping, adaptive_damping=False)
        return kwargs

    def solve(self, init: Tensor, context: Context) -> tuple[Tensor, SolverInfo]:
        batch = init.shape[0]
        layer = self._layer(init.device, init.dtype)
        inputs = {_ACTIONS: init.reshape(batch, -1)}
        inputs.update({_ctx_name(k): v for k, v in context.items()})
        info = SolverInfo.empty(batch, init.device)
        with torch.no_grad():
            info.initial_cost = self.residual(init, context).square().sum(-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no-grad failures are reported in info
            solution, th_info = layer.forward(inputs, optimizer_kwargs=self._optimizer_kwargs())
        x = solution[_ACTIONS].view_as(init)
        with torch.no_grad():
            final = self.residual(x.detach(), context).square().sum(-1)
            status = torch.as_tensor(
                [s == th.NonlinearOptimizerStatus.FAIL for s in th_info.status], device=init.device
            )
            info.failed = status | ~torch.isfinite(final) | ~torch.isfinite(x).flatten(1).all(-1)
            info.final_cost = torch.where(info.failed, info.initial_cost, final)
            conv_iter = th_info.converged_iter.to(init.device)
            info.converged = conv_iter >= 0
            info.converged &= conv_iter < self.config.max_iterations
            info.iterations = torch.where(conv_iter >= 0, conv_iter, self.config.max_iterations)
        return x, info
