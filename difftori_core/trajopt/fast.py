"""Fast batched Gauss-Newton / Levenberg-Marquardt in plain torch.

Solves the same problem as the Theseus backend (same step, damping, step size and backward-mode
semantics, so the two agree to float tolerance) without Theseus' generic machinery. Each
iteration forms the residual and its Jacobian (analytic when the residual provides one), the
small per-sample damped normal equations, and factorizes them with one batched `cholesky_ex`,
which reports failures per sample instead of raising.

On a CPU a control-tick-sized solve is bound by the number of torch ops, not FLOPs, so the loop
keeps ops to a minimum: no per-iteration finiteness checks (a NaN propagates into that sample's
solution, which is checked once at the end; samples never mix), and when there are fewer
residuals than variables the damped system is solved in its smaller dual form.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difftori_core.trajopt.config import SolverConfig, SolverInfo
from difftori_core.trajopt.residuals import Context, Linearizer, Residual


def damped_step(
    r: Tensor, J: Tensor, damping: float | Tensor, detach_hessian: bool = False, eye: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per sample, d = (J^T J + damping I)^-1 J^T r (the step is x - d) and the factorization
    status (0 = ok).

    With damping > 0 and R < N this uses the push-through identity
    (J^T J + l I)^-1 J^T = J^T (J J^T + l I)^-1: an R x R factorization instead of N x N.
    `detach_hessian` (implicit differentiation) always uses the primal form, so the detached
    matrix is exactly the Gauss-Newton Hessian; only there may `damping` be a per-sample (B,)
    tensor. `eye`, when given, is the identity of the system's size already scaled by `damping`
    (solvers build it once per solve rather than every iteration). Explicit bmm/baddbmm: `@` on
    batched transposes goes through expand/reshape copies, and each op counts at this size.
    """
    n_res, n_var = J.shape[-2:]
    Jt = J.transpose(1, 2)
    rhs = r.unsqueeze(-1)
    if not detach_hessian and damping > 0 and n_res < n_var:
        gram = torch.baddbmm(eye if eye is not None else _scaled_eye(n_res, damping, J), J, Jt)
        chol, status = torch.linalg.cholesky_ex(gram)
        return torch.bmm(Jt, _cholesky_solve(rhs, chol)).squeeze(-1), status
    if detach_hessian:
        hessian = torch.bmm(Jt, J).detach()
        if isinstance(damping, Tensor):  # per-sample damping
            hessian = hessian + damping[:, None, None] * _scaled_eye(n_var, 1.0, J)
        elif damping > 0:
            hessian = hessian + _scaled_eye(n_var, damping, J)
    elif damping > 0:
        hessian = torch.baddbmm(eye if eye is not None else _scaled_eye(n_var, damping, J), Jt, J)
    else:
        hessian = torch.bmm(Jt, J)
    chol, status = torch.linalg.cholesky_ex(hessian)
    return _cholesky_solve(torch.bmm(Jt, rhs), chol).squeeze(-1), status


def _cholesky_solve(rhs: Tensor, chol: Tensor) -> Tensor:
    """(L L^T)^-1 rhs by two triangular solves: `torch.cholesky_solve` also validates its input
    with a host sync and a copy, which costs a fifth of an iteration at control-tick sizes."""
    y = torch.linalg.solve_triangular(chol, rhs, upper=False)
    return torch.linalg.solve_triangular(chol.mT, y, upper=True)


def _scaled_eye(n: int, scale: float, like: Tensor) -> Tensor:
    return torch.eye(n, dtype=like.dtype, device=like.device).mul_(scale)


class FastSolver:
    """Batched damped normal-equation solver; samples are solved independently."""

    def __init__(self, residual: Residual, config: SolverConfig) -> None:
        self.residual = residual
        self.config = config
        self._shape = (residual.horizon, residual.action_dim)
        self._eyes: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def solve(self, init: Tensor, context: Context) -> tuple[Tensor, SolverInfo]:
        """Solve from `init` (B, H, A); returns the solution (B, H, A) and per-sample info.

        With autograd enabled, the last `config.grad_iterations()` iterations are recorded
        (all of them in unroll mode); earlier ones run under no_grad. Failed samples are only
        flagged here; TrajOptLayer replaces them and, under autograd, re-solves the rest.
        """
        cfg = self.config
        batch = init.shape[0]
        x = init.reshape(batch, -1)
        n_grad = cfg.grad_iterations() if torch.is_grad_enabled() else 0
        n_free = cfg.max_iterations - n_grad
        early_stop = cfg.rel_tolerance > 0
        damping = cfg.effective_damping
        linearizer = Linearizer(self.residual, context, cfg.jacobian)
        eye = self._damping_eye(init)
        statuses: list[Tensor] = []  # factorization status per iteration, reduced once at the end
        initial_cost: Tensor | None = None
        # Early stopping needs per-sample bookkeeping every iteration; without it the loop is
        # straight-line and the counters are filled in once at the end.
        iterations = torch.zeros(batch, dtype=torch.long, device=init.device) if early_stop else None
        converged = torch.zeros(batch, dtype=torch.bool, device=init.device)
        failed = torch.zeros_like(converged) if early_stop else None

        with torch.no_grad():
            if n_free > 0:
                x = x.detach()
            prev_cost: Tensor | None = None
            for it in range(n_free):
                r, J = linearizer(x)
                if it == 0 or early_stop:
                    cost = r.square().sum(-1)
                    if it == 0:
                        initial_cost = cost
                direction, status = damped_step(r, J, damping, eye=eye)
                statuses.append(status)
                if early_stop:
                    failed |= status != 0
                    if prev_cost is not None:
                        converged |= (prev_cost - cost).abs() <= cfg.rel_tolerance * prev_cost.abs()
                    frozen = converged | failed
                    if bool(frozen.all()):
                        break
                    direction = direction.masked_fill(frozen[:, None], 0.0)
                    iterations += (~frozen).long()
                    prev_cost = cost
                x = torch.add(x, direction, alpha=-cfg.step_size)

        # Gradient-carrying iterations: every sample steps, converged ones too (their step is ~0
        # in value but carries the sensitivity of the solution to the parameters).
        for it in range(n_grad):
            r, J = linearizer(x)
            if n_free == 0 and it == 0:
                initial_cost = r.detach().square().sum(-1)
            if cfg.backward_mode == "implicit":
                # One Gauss-Newton step at the solution with the Hessian detached (implicit
                # function theorem). With fewer residuals than variables J^T J is singular by
                # construction, so the damped matrix is used; otherwise samples whose GN system
                # fails to factorize are re-solved damped, in one factorization (selecting
                # between two solves would send the failed one's NaNs into backward).
                full_rank = J.shape[-2] >= J.shape[-1]
                direction, status = damped_step(r, J, 0.0 if full_rank else cfg.damping, detach_hessian=True)
                singular = status != 0
                if full_rank and cfg.damping > 0 and bool(singular.any()):
                    per_sample = singular.to(r.dtype) * cfg.damping
                    direction, status = damped_step(r, J, per_sample, detach_hessian=True)
                x = x - direction
            else:
                direction, status = damped_step(r, J, damping, eye=eye)
                x = x - cfg.step_size * direction
            statuses.append(status)

        with torch.no_grad():
            solution = x.detach()
            final = linearizer.residual_only(solution).square().sum(-1)
            # One reduction covers a failed factorization in any iteration and a non-finite
            # solution or final cost.
            bad = torch.stack(statuses).ne(0).any(0) if statuses else converged
            bad = bad | ~torch.isfinite(final + solution.sum(-1))
            if failed is not None:
                bad |= failed
            if iterations is None:
                iterations = torch.full((batch,), cfg.max_iterations, dtype=torch.long, device=init.device)
            else:
                iterations += n_grad
            assert initial_cost is not None  # max_iterations >= 1
            info = SolverInfo(
                iterations=iterations,
                initial_cost=initial_cost,
                final_cost=torch.where(bad, initial_cost, final),
                converged=converged,
                failed=bad,
            )
        return x.view_as(init), info

    def _damping_eye(self, like: Tensor) -> Tensor | None:
        """damping * I of the size damped_step factorizes, cached per device and dtype."""
        damping = self.config.effective_damping
        if damping <= 0:
            return None
        n = min(self.residual.dim, self.residual.num_vars)
        key = (like.device, like.dtype)
        if key not in self._eyes:
            self._eyes[key] = _scaled_eye(n, damping, like)
        return self._eyes[key]
