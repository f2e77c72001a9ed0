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


def damped_step(r: Tensor, J: Tensor, damping: float | Tensor, detach_hessian: bool = False) -> tuple[Tensor, Tensor]:
    """Per sample, d = (J^T J + damping I)^-1 J^T r (the step is x - d) and the factorization
    status (0 = ok).

    With damping > 0 and R < N this uses the push-through identity
    (J^T J + l I)^-1 J^T = J^T (J J^T + l I)^-1: an R x R factorization instead of N x N.
    `detach_hessian` (implicit differentiation) always uses the primal form, so the detached
    matrix is exactly the Gauss-Newton Hessian; only there may `damping` be a per-sample (B,)
    tensor. Explicit bmm/baddbmm: `@` on batched transposes goes through expand/reshape copies,
    and each op counts at this size.
    """
    n_res, n_var = J.shape[-2:]
    Jt = J.transpose(1, 2)
    rhs = r.unsqueeze(-1)
    if not detach_hessian and damping > 0 and n_res < n_var:
        gram = torch.baddbmm(_scaled_eye(n_res, damping, J), J, Jt)
        chol, status = torch.linalg.cholesky_ex(gram)
        return torch.bmm(Jt, torch.cholesky_solve(rhs, chol)).squeeze(-1), status
    if detach_hessian:
        hessian = torch.bmm(Jt, J).detach()
        if isinstance(damping, Tensor):  # per-sample damping
            hessian = hessian + damping[:, None, None] * _scaled_eye(n_var, 1.0, J)
        elif damping > 0:
            hessian = hessian + _scaled_eye(n_var, damping, J)
    elif damping > 0:
        hessian = torch.baddbmm(_scaled_eye(n_var, damping, J), Jt, J)
    else:
        hessian = torch.bmm(Jt, J)
    chol, status = torch.linalg.cholesky_ex(hessian)
    return torch.cholesky_solve(torch.bmm(Jt, rhs), chol).squeeze(-1), status


def _scaled_eye(n: int, scale: float, like: Tensor) -> Tensor:
    return torch.eye(n, dtype=like.dtype, device=like.device).mul_(scale)


class FastSolver:
    """Batched damped normal-equation solver; samples are solved independently."""

    def __init__(self, residual: Residual, config: SolverConfig) -> None:
        self.residual = residual
        self.config = config
        self._shape = (residual.horizon, residual.action_dim)

    def solve(self, init: Tensor, context: Context) -> tuple[Tensor, SolverInfo]:
        """Solve from `init` (B, H, A); returns the solution (B, H, A) and per-sample info.

        With autograd enabled, the last `config.grad_iterations()` iterations are recorded
        (all of them in unroll mode); earlier ones run under no_grad. Failed samples are only
        flagged here; TrajOptLayer replaces them and, under autograd, re-solves the rest.
        """
        cfg = self.config
        batch = init.shape[0]
        info = SolverInfo.empty(batch, init.device)
        x = init.reshape(batch, -1)
        n_grad = cfg.grad_iterations() if torch.is_grad_enabled() else 0
        n_free = cfg.max_iterations - n_grad
        early_stop = cfg.rel_tolerance > 0
        prev_cost: Tensor | None = None
        linearizer = Linearizer(self.residual, context, cfg.jacobian)
        shape = (batch, *self._shape)
        statuses: list[Tensor] = []  # factorization status per iteration, reduced once at the end

        with torch.no_grad():
            if n_free > 0:
                x = x.detach()
            for it in range(n_free):
                r, J = linearizer(x.view(shape))
                if it == 0 or early_stop:
                    cost = r.square().sum(-1)
                    if it == 0:
                        info.initial_cost = cost
                direction, status = damped_step(r, J, cfg.effective_damping)
                statuses.append(status)
                if early_stop:
                    info.failed |= status != 0
                    if prev_cost is not None:
                        info.converged |= (prev_cost - cost).abs() <= cfg.rel_tolerance * prev_cost.abs()
                    frozen = info.converged | info.failed
                    if bool(frozen.all()):
                        break
                    direction = direction.masked_fill(frozen[:, None], 0.0)
                    info.iterations += (~frozen).long()
                    prev_cost = cost
                x = torch.add(x, direction, alpha=-cfg.step_size)
            if not early_stop:  # then the loop never breaks early
                info.iterations += n_free

        # Gradient-carrying iterations: every sample steps, converged ones too (their step is ~0
        # in value but carries the sensitivity of the solution to the parameters).
        for it in range(n_grad):
            r, J = linearizer(x.view(shape))
            if n_free == 0 and it == 0:
                info.initial_cost = r.detach().square().sum(-1)
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
                direction, status = damped_step(r, J, cfg.effective_damping)
                x = x - cfg.step_size * direction
            statuses.append(status)
            info.iterations += 1

        with torch.no_grad():
            if statuses:
                info.failed |= torch.stack(statuses).ne(0).any(0)
            solution = x.detach()
            final = linearizer.residual_only(solution.view(shape)).square().sum(-1)
            info.failed |= ~(torch.isfinite(final) & torch.isfinite(solution).all(-1))
            info.final_cost = torch.where(info.failed, info.initial_cost, final)
        return x.view_as(init), info
