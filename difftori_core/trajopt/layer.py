"""TrajOptLayer: the differentiable trajectory optimizer as a torch module.

This is the one place that validates inputs and isolates failures, whichever backend solves:

* samples whose initial value or context is non-finite never enter the solver;
* a sample whose cost, Jacobian, factorization or solution turns non-finite is marked failed and
  gets its initial value back;
* when autograd is on and a sample failed mid-solve, the healthy samples are solved again without
  it, so its NaNs never reach the parameter gradients of the rest of the batch (samples are
  independent, so the re-solve gives them identical results). Inference never pays for this.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from difftori_core.trajopt.config import SolverConfig, SolverInfo
from difftori_core.trajopt.fast import FastSolver
from difftori_core.trajopt.residuals import Context, Residual


class Solver(Protocol):
    def solve(self, init: Tensor, context: Context) -> tuple[Tensor, SolverInfo]: ...


def make_solver(residual: Residual, config: SolverConfig) -> Solver:
    if config.backend == "fast":
        return FastSolver(residual, config)
    from difftori_core.trajopt.theseus_solver import TheseusSolver  # theseus is slow to import

    return TheseusSolver(residual, config)


def _rows_finite(*tensors: Tensor) -> Tensor:
    """Per sample: are all entries of all `tensors` (each (B, ...)) finite?"""
    return torch.isfinite(torch.cat([t.flatten(1) for t in tensors], dim=1)).all(-1)


class TrajOptLayer(nn.Module):
    """argmin_actions ||residual(actions, context)||^2, differentiable w.r.t. residual parameters
    and context, starting from `init` (e.g. a base policy's action chunk)."""

    #: attempts at solving the healthy subset before giving up on isolation (2 suffice: samples
    #: are independent, so a re-solve cannot fail anew; the bound only guards against surprises).
    MAX_ATTEMPTS = 3

    def __init__(self, residual: Residual, config: SolverConfig | None = None) -> None:
        super().__init__()
        self.residual = residual
        self.config = config or SolverConfig()
        self.solver = make_solver(residual, self.config)

    def _check_inputs(self, init: Tensor, context: Context) -> None:
        res = self.residual
        expected = (res.horizon, res.action_dim)
        if init.dim() != 3 or tuple(init.shape[1:]) != expected:
            raise ValueError(f"init must have shape (B, {expected[0]}, {expected[1]}), got {tuple(init.shape)}")
        missing = [k for k in res.context_spec if k not in context]
        if missing:
            raise ValueError(f"context is missing key(s) {missing}; the residual needs {list(res.context_spec)}")
        for key, shape in res.context_spec.items():
            value = context[key]
            if value.shape[0] != init.shape[0] or tuple(value.shape[1:]) != tuple(shape):
                raise ValueError(
                    f"context[{key!r}] must have shape ({init.shape[0]}, {', '.join(map(str, shape))}), "
                    f"got {tuple(value.shape)}"
                )

    def _solve_guarded(self, init: Tensor, context: Context) -> tuple[Tensor, SolverInfo]:
        """Backend solve; if the backend raises (Theseus does when a factorization fails with
        autograd on), find the culprits by solving each sample alone."""
        try:
            return self.solver.solve(init, context)
        except RuntimeError:
            if init.shape[0] == 1:
                info = SolverInfo.empty(1, init.device)
                info.failed[:] = True
                return init, info
        parts = [
            self._solve_guarded(init[i : i + 1], {k: v[i : i + 1] for k, v in context.items()})
            for i in range(init.shape[0])
        ]
        return torch.cat([p[0] for p in parts]), SolverInfo.cat([p[1] for p in parts])

    def forward(self, init: Tensor, context: Context) -> tuple[Tensor, SolverInfo]:
        """Returns the refined actions (B, H, A) and per-sample `SolverInfo`."""
        self._check_inputs(init, context)
        context = {k: context[k] for k in self.residual.context_spec}
        batch = init.shape[0]
        healthy = _rows_finite(init, *context.values())
        if bool(healthy.all()):
            # The common case, kept to a few ops: everything enters the solver, and unless a
            # sample fails under autograd (then the isolation below runs) its result stands.
            solution, info = self._solve_guarded(init, context)
            if not bool(info.failed.any()):
                return solution, info
            if not torch.is_grad_enabled():
                return torch.where(info.failed[:, None, None], init, solution), info

        info = SolverInfo.empty(batch, init.device)
        info.failed |= ~healthy
        index = healthy.nonzero().squeeze(-1)
        solution: Tensor | None = None
        for _ in range(self.MAX_ATTEMPTS):
            if index.numel() == 0:
                break
            whole = index.numel() == batch
            sub_init = init if whole else init[index]
            sub_ctx = context if whole else {k: v[index] for k, v in context.items()}
            sub_x, sub_info = self._solve_guarded(sub_init, sub_ctx)
            if not torch.is_grad_enabled() or not bool(sub_info.failed.any()):
                info.scatter_(index, sub_info)
                solution = sub_x if whole else init.index_copy(0, index, sub_x)
                break
            info.failed[index[sub_info.failed]] = True
            index = index[~sub_info.failed]

        if solution is None:
            solution = init
        if bool(info.failed.any()):
            solution = torch.where(info.failed[:, None, None], init, solution)
        return solution, info
