"""Small residuals with known solutions, shared by the trajopt tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from difftori_core.trajopt.residuals import Context, Residual


class LinearResidual(Residual):
    """r = W vec(u) + C c (times an optional per-sample mask). For R >= N and full-rank W the
    minimizer is u* = -(W^T W)^-1 W^T C c, so every gradient has a closed form."""

    has_analytic_jacobian = True

    def __init__(self, horizon: int, action_dim: int, dim: int, context_dim: int, masked: bool = False):
        super().__init__()
        self.horizon, self.action_dim, self.dim = horizon, action_dim, dim
        self.W = nn.Parameter(torch.randn(dim, horizon * action_dim, dtype=torch.double))
        self.C = nn.Parameter(torch.randn(dim, context_dim, dtype=torch.double))
        self.context_spec = {"c": (context_dim,)}
        if masked:
            self.context_spec["mask"] = (1,)

    def _scale(self, context: Context) -> Tensor | float:
        return context["mask"] if "mask" in context else 1.0

    def forward(self, actions: Tensor, context: Context) -> Tensor:
        u = actions.reshape(actions.shape[0], -1)
        return (u @ self.W.T + context["c"] @ self.C.T) * self._scale(context)

    def linearize(self, flat: Tensor, context: Context) -> tuple[Tensor, Tensor]:
        scale = self._scale(context)
        J = self.W.expand(flat.shape[0], -1, -1)
        if not isinstance(scale, float):
            J = J * scale[:, :, None]
        return self.forward(flat, context), J

    def closed_form(self, context: Context) -> Tensor:
        rhs = -(context["c"] @ self.C.T) @ self.W  # (B, N) = -(W^T C c)^T
        sol = torch.linalg.solve(self.W.T @ self.W, rhs.T).T
        return sol.view(-1, self.horizon, self.action_dim)


class TanhResidual(Residual):
    """r = tanh(A vec(u)) - t(theta), zero at u* = A^-1 atanh(t). No analytic Jacobian, so the
    solvers use autodiff; at a zero-residual solution Gauss-Newton's Hessian is exact."""

    def __init__(self, horizon: int, action_dim: int):
        super().__init__()
        n = horizon * action_dim
        self.horizon, self.action_dim, self.dim = horizon, action_dim, n
        self.A = nn.Parameter(torch.eye(n, dtype=torch.double) + 0.2 * torch.randn(n, n, dtype=torch.double))
        self.theta = nn.Parameter(torch.randn(n, dtype=torch.double))
        self.context_spec = {"shift": (n,)}

    def target(self, context: Context) -> Tensor:
        return 0.6 * torch.tanh(self.theta + context["shift"])

    def forward(self, actions: Tensor, context: Context) -> Tensor:
        u = actions.reshape(actions.shape[0], -1)
        return torch.tanh(u @ self.A.T) - self.target(context)

    def closed_form(self, context: Context) -> Tensor:
        sol = torch.linalg.solve(self.A, torch.atanh(self.target(context)).T).T
        return sol.view(-1, self.horizon, self.action_dim)


class PoisonedResidual(Residual):
    """Wraps a residual; samples with context["poison"] > 0 produce NaN residuals mid-solve."""

    def __init__(self, inner: Residual):
        super().__init__()
        self.inner = inner
        self.horizon, self.action_dim, self.dim = inner.horizon, inner.action_dim, inner.dim
        self.context_spec = {**inner.context_spec, "poison": (1,)}

    def forward(self, actions: Tensor, context: Context) -> Tensor:
        r = self.inner(actions, context)
        return torch.where(context["poison"] > 0, torch.full_like(r, float("nan")), r)
