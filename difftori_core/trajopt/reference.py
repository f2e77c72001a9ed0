"""The reference implementation's formulation, kept only as a baseline to measure against.

The original DiffTORI code flattens the whole batch into ONE Theseus variable of size B*H*A with
ONE scalar residual (offset minus the summed reward), solved by dense-Cholesky LM with a tiny
step. That couples the samples (one sample's cost changes another's step) and makes every
iteration a dense (B*H*A)^3 factorization. Do not use it for anything but comparisons.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from difftori_core.trajopt.residuals import Context, Residual

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    import theseus as th


class ReferenceFlattenedSolver:
    """One variable vec(actions of the whole batch), one residual: sum_b r_b (r_b scalar).

    Defaults are the reference's: LM, dense Cholesky, 100 iterations, step 3e-5, damping 0.01,
    truncated backward over the last 5 iterations, Jacobians by Theseus' autograd.
    """

    def __init__(
        self,
        residual: Residual,
        batch: int,
        max_iterations: int = 100,
        step_size: float = 3e-5,
        damping: float = 0.01,
        backward_iterations: int = 5,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if residual.dim != 1:
            raise ValueError(f"the reference formulation needs a scalar residual, got dim={residual.dim}")
        self.residual, self.batch = residual, batch
        self.backward_iterations = min(backward_iterations, max_iterations)
        self.damping = damping
        shape = (batch, residual.horizon, residual.action_dim)
        keys = list(residual.context_spec)
        actions = th.Vector(batch * residual.num_vars, name="actions", dtype=dtype)
        ctx_vars = [
            th.Variable(torch.zeros(1, batch * int(torch.tensor(s).prod())), name=f"ctx_{k}")
            for k, s in residual.context_spec.items()
        ]

        def total_residual(optim_vars: tuple[th.Vector], aux_vars: tuple[th.Variable, ...]) -> Tensor:
            acts = optim_vars[0].tensor.view(*shape)
            ctx = {k: v.tensor.view(batch, *residual.context_spec[k]) for k, v in zip(keys, aux_vars, strict=False)}
            return residual(acts, ctx).sum(0, keepdim=True).view(1, 1)

        cost = th.AutoDiffCostFunction([actions], total_residual, 1, aux_vars=ctx_vars, name="reference")
        objective = th.Objective(dtype=dtype)
        objective.add(cost)
        optimizer = th.LevenbergMarquardt(
            objective,
            linear_solver_cls=th.CholeskyDenseSolver,
            max_iterations=max_iterations,
            step_size=step_size,
            abs_err_tolerance=0.0,
            rel_err_tolerance=0.0,
        )
        self.layer = th.TheseusLayer(optimizer, vectorize=False)

    def solve(self, init: Tensor, context: Context) -> Tensor:
        inputs = {"actions": init.reshape(1, -1)}
        inputs.update({f"ctx_{k}": v.reshape(1, -1) for k, v in context.items()})
        solution, _ = self.layer.forward(
            inputs,
            optimizer_kwargs={
                "backward_mode": "truncated",
                "backward_num_iterations": self.backward_iterations,
                "damping": self.damping,
                "track_best_solution": False,
            },
        )
        return solution["actions"].view_as(init)
