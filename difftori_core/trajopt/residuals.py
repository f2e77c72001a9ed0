"""Learned residual functions r(actions, context): the cost the optimizer minimizes is ||r||^2.

Every residual maps a batch of action sequences `actions` (B, H, A) plus a dict of per-sample
context tensors (each (B, ...)) to residuals (B, R), samples independent of each other.

Residuals with an analytic Jacobian (`has_analytic_jacobian`) split the work in two:
`prepare(context)` does what depends only on the context, once per solve (e.g. the context's
share of the first layer), and `linearize(flat, prepared)` returns the residual and its Jacobian
(B, R, H*A) at the flattened actions `flat` (B, H*A) at every iteration (solvers iterate on the
flat vector; a reshape per call is an op per call). Others get their Jacobian
from `torch.func` autodiff. `Linearizer` hides the difference from the solvers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from difftori_core.nn.mlp import MLP, MLPPlan

Context = Mapping[str, Tensor]


class Residual(nn.Module):
    """Base class. Subclasses set `horizon`, `action_dim`, `dim` and implement `forward`."""

    horizon: int
    action_dim: int
    dim: int
    #: context keys this residual reads, with the trailing shape each must have.
    context_spec: dict[str, tuple[int, ...]]

    @property
    def num_vars(self) -> int:
        return self.horizon * self.action_dim

    has_analytic_jacobian: bool = False

    def forward(self, actions: Tensor, context: Context) -> Tensor:  # (B,H,A) -> (B,R)
        raise NotImplementedError

    def prepare(self, context: Context) -> Any:
        """Context-only work shared by every iteration of one solve."""
        return context

    def evaluate(self, flat: Tensor, prepared: Any) -> Tensor:
        """The residual at flattened actions (B, H*A) from prepared context (equals `forward`)."""
        return self.forward(flat.view(-1, self.horizon, self.action_dim), prepared)

    def linearize(self, flat: Tensor, prepared: Any) -> tuple[Tensor, Tensor]:
        """(r, dr/d flat) analytically at flattened actions; only when `has_analytic_jacobian`."""
        raise NotImplementedError(f"{type(self).__name__} has no analytic Jacobian")


def autodiff_jacobian(residual: Residual, actions: Tensor, context: Context) -> tuple[Tensor, Tensor]:
    """Per-sample Jacobian by `vmap` over `jacrev`/`jacfwd` (whichever side is narrower)."""

    def single(a: Tensor, ctx: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        r = residual(a.unsqueeze(0), {k: v.unsqueeze(0) for k, v in ctx.items()}).squeeze(0)
        return r, r

    jac = torch.func.jacrev if residual.dim <= residual.num_vars else torch.func.jacfwd
    jac_fn = jac(single, argnums=0, has_aux=True)
    J, r = torch.func.vmap(jac_fn)(actions, dict(context))
    return r, J.reshape(actions.shape[0], residual.dim, residual.num_vars)


class Linearizer:
    """One solve's view of a residual: context prepared once, then r and J per flat iterate (B, H*A).

    `mode`: "auto" (analytic when the residual has it), "analytic" (required) or "autodiff".
    """

    def __init__(self, residual: Residual, context: Context, mode: str = "auto") -> None:
        if mode not in ("auto", "analytic", "autodiff"):
            raise ValueError(f"jacobian mode must be auto|analytic|autodiff, got {mode!r}")
        if mode == "analytic" and not residual.has_analytic_jacobian:
            raise ValueError(f"{type(residual).__name__} has no analytic Jacobian")
        self.residual = residual
        self.context = context
        self.analytic = mode != "autodiff" and residual.has_analytic_jacobian
        self.prepared = residual.prepare(context)

    def residual_only(self, flat: Tensor) -> Tensor:
        return self.residual.evaluate(flat, self.prepared)

    def __call__(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        if self.analytic:
            return self.residual.linearize(flat, self.prepared)
        res = self.residual
        return autodiff_jacobian(res, flat.view(-1, res.horizon, res.action_dim), self.context)


def residual_and_jacobian(
    residual: Residual, actions: Tensor, context: Context, mode: str = "auto"
) -> tuple[Tensor, Tensor]:
    """r (B, R) and J (B, R, H*A) at `actions` (B, H, A) (one-off; solvers keep a `Linearizer`)."""
    return Linearizer(residual, context, mode)(actions.reshape(actions.shape[0], -1))


class MLPResidual(Residual):
    """r = MLP([context features..., vec(actions)]): the learned cost of the imitation policy.

    Args:
        context_dims: context key -> feature width, concatenated in this order before the actions.
        horizon, action_dim: shape of the decision variable.
        dim: residual width (use >= 1; a width near H*A gives Gauss-Newton a well-posed curvature).
        hidden, act, layer_norm: MLP architecture.
    """

    def __init__(
        self,
        context_dims: Mapping[str, int],
        horizon: int,
        action_dim: int,
        dim: int,
        hidden: Sequence[int] = (256, 256),
        act: str = "relu",
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.horizon, self.action_dim, self.dim = horizon, action_dim, dim
        self.context_spec = {k: (int(v),) for k, v in context_dims.items()}
        self.context_width = sum(int(v) for v in context_dims.values())
        self.mlp = MLP(self.context_width + self.num_vars, hidden, dim, act=act, layer_norm=layer_norm)

    has_analytic_jacobian = True

    def _context(self, context: Context) -> Tensor:
        return torch.cat([context[k] for k in self.context_spec], dim=-1)

    def forward(self, actions: Tensor, context: Context) -> Tensor:
        flat = actions.reshape(actions.shape[0], -1)
        return self.mlp(torch.cat([self._context(context), flat], dim=-1))

    def prepare(self, context: Context) -> MLPPlan:
        return self.mlp.plan(fixed=self._context(context))

    def evaluate(self, flat: Tensor, prepared: MLPPlan) -> Tensor:
        return self.mlp(flat, prepared)

    def linearize(self, flat: Tensor, prepared: MLPPlan) -> tuple[Tensor, Tensor]:
        return self.mlp.forward_with_jacobian(flat, prepared)


class ProximityResidual(Residual):
    """r = sqrt(w) * (vec(actions) - vec(context[key])): stay near the proposal (e.g. the base
    policy's chunk). Adds w*I to the Gauss-Newton matrix, making it full rank."""

    def __init__(self, horizon: int, action_dim: int, weight: float, key: str = "init") -> None:
        super().__init__()
        if weight <= 0:
            raise ValueError(f"proximity weight must be > 0, got {weight}")
        self.horizon, self.action_dim, self.dim = horizon, action_dim, horizon * action_dim
        self.key, self.scale = key, math.sqrt(weight)
        self.context_spec = {key: (horizon, action_dim)}

    has_analytic_jacobian = True

    def forward(self, actions: Tensor, context: Context) -> Tensor:
        return self.scale * (actions - context[self.key]).reshape(actions.shape[0], -1)

    def prepare(self, context: Context) -> tuple[Tensor, Tensor]:
        anchor = context[self.key].reshape(-1, self.num_vars)
        eye = torch.eye(self.num_vars, dtype=anchor.dtype, device=anchor.device) * self.scale
        return anchor, eye.expand(anchor.shape[0], -1, -1)

    def evaluate(self, flat: Tensor, prepared: tuple[Tensor, Tensor]) -> Tensor:
        return self.scale * (flat - prepared[0])

    def linearize(self, flat: Tensor, prepared: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return self.evaluate(flat, prepared), prepared[1]


class StackedResidual(Residual):
    """Concatenation of residual terms over the same decision variable (cost = sum of costs)."""

    def __init__(self, *terms: Residual) -> None:
        super().__init__()
        if not terms:
            raise ValueError("StackedResidual needs at least one term")
        shapes = {(t.horizon, t.action_dim) for t in terms}
        if len(shapes) != 1:
            raise ValueError(f"all terms must share (horizon, action_dim), got {sorted(shapes)}")
        self.terms = nn.ModuleList(terms)
        self.horizon, self.action_dim = terms[0].horizon, terms[0].action_dim
        self.dim = sum(t.dim for t in terms)
        self.context_spec = {}
        for t in terms:
            for key, shape in t.context_spec.items():
                if self.context_spec.setdefault(key, shape) != shape:
                    raise ValueError(f"context key {key!r} used with shapes {shape} and {self.context_spec[key]}")

    def forward(self, actions: Tensor, context: Context) -> Tensor:
        return torch.cat([t(actions, context) for t in self.terms], dim=-1)

    @property
    def has_analytic_jacobian(self) -> bool:  # type: ignore[override]
        return all(t.has_analytic_jacobian for t in self.terms)

    def prepare(self, context: Context) -> list[Any]:
        return [t.prepare(context) for t in self.terms]

    def evaluate(self, flat: Tensor, prepared: list[Any]) -> Tensor:
        return torch.cat([t.evaluate(flat, p) for t, p in zip(self.terms, prepared, strict=True)], dim=-1)

    def linearize(self, flat: Tensor, prepared: list[Any]) -> tuple[Tensor, Tensor]:
        parts = [t.linearize(flat, p) for t, p in zip(self.terms, prepared, strict=True)]
        return torch.cat([p[0] for p in parts], dim=-1), torch.cat([p[1] for p in parts], dim=1)


class RolloutResidual(Residual):
    """Model-based objective: roll a latent dynamics model over the horizon and score it.

    z_{t+1} = dynamics([z_t, a_t]),  R_t = reward([z_t, a_t]),  V = value([z_H, policy(z_H)]).

    mode="per_step" (default) gives one residual per step, r_t = gamma^(t/2) (offset - R_t) and a
    terminal r_H = gamma^(H/2) (value_offset - V): Gauss-Newton then sees H+1 directions of
    curvature. mode="scalar" reproduces the reference formulation, a single residual
    offset - (sum_t gamma^t R_t + gamma^H V), for which an LM step is a rescaled gradient step.

    The latent is read from context["latent"] (B, latent_dim): the encoder runs once per solve,
    never inside the residual (the reference re-encoded the observation at every evaluation).
    """

    def __init__(
        self,
        dynamics: MLP,
        reward: MLP,
        horizon: int,
        action_dim: int,
        value: MLP | None = None,
        policy: MLP | None = None,
        discount: float = 0.99,
        mode: str = "per_step",
        offset: float = 10.0,
        value_offset: float = 100.0,
    ) -> None:
        super().__init__()
        if mode not in ("per_step", "scalar"):
            raise ValueError(f"mode must be per_step|scalar, got {mode!r}")
        if (value is None) != (policy is None):
            raise ValueError("value and policy must be given together (terminal value uses policy(z_H))")
        self.dynamics, self.reward, self.value, self.policy = dynamics, reward, value, policy
        self.horizon, self.action_dim = horizon, action_dim
        self.latent_dim = dynamics.out_dim
        self.discount, self.mode, self.offset, self.value_offset = discount, mode, offset, value_offset
        n_terms = horizon + (value is not None)
        self.dim = 1 if mode == "scalar" else n_terms
        self.context_spec = {"latent": (self.latent_dim,)}
        weights = torch.tensor([discount**t for t in range(n_terms)])
        self.register_buffer("_weights", weights, persistent=False)

    def _combine(self, scores: Tensor, offsets: Tensor) -> Tensor:
        """scores (B, T) of rewards [+ value] -> residuals (B, dim)."""
        w = self._weights.to(scores.dtype)
        if self.mode == "scalar":
            return self.offset - (scores * w).sum(-1, keepdim=True)
        return w.sqrt() * (offsets - scores)

    def _offsets(self, like: Tensor) -> Tensor:
        vals = [self.offset] * self.horizon + ([self.value_offset] if self.value is not None else [])
        return torch.tensor(vals, dtype=like.dtype, device=like.device)

    def forward(self, actions: Tensor, context: Context) -> Tensor:
        return self.evaluate(actions.reshape(actions.shape[0], -1), self.prepare(context))

    def prepare(self, context: Context) -> tuple[Tensor, dict[str, MLPPlan]]:
        nets = {"reward": self.reward, "dynamics": self.dynamics}
        if self.value is not None and self.policy is not None:
            nets.update(value=self.value, policy=self.policy)
        return context["latent"], {name: net.plan() for name, net in nets.items()}

    def evaluate(self, flat: Tensor, prepared: tuple[Tensor, dict[str, MLPPlan]]) -> Tensor:
        z, plans = prepared
        actions = flat.view(-1, self.horizon, self.action_dim)
        scores = []
        for t in range(self.horizon):
            za = torch.cat([z, actions[:, t]], dim=-1)
            scores.append(self.reward(za, plans["reward"]))
            z = self.dynamics(za, plans["dynamics"])
        if self.value is not None:
            a = self.policy(z, plans["policy"])
            scores.append(self.value(torch.cat([z, a], dim=-1), plans["value"]))
        s = torch.cat(scores, dim=-1)
        return self._combine(s, self._offsets(s))

    has_analytic_jacobian = True

    def linearize(self, flat: Tensor, prepared: tuple[Tensor, dict[str, MLPPlan]]) -> tuple[Tensor, Tensor]:
        # Forward-mode chain rule through the rollout: dz_{t+1}/du = Dz d . dz_t/du + Da d . E_t.
        z, plans = prepared
        actions = flat.view(-1, self.horizon, self.action_dim)
        batch, n, zd = actions.shape[0], self.num_vars, self.latent_dim
        dz = actions.new_zeros(batch, zd, n)
        scores, dscores = [], []
        for t in range(self.horizon):
            za = torch.cat([z, actions[:, t]], dim=-1)
            cols = slice(t * self.action_dim, (t + 1) * self.action_dim)
            r, jr = self.reward.forward_with_jacobian(za, plans["reward"])  # (B,1), (B,1,Z+A)
            z_next, jd = self.dynamics.forward_with_jacobian(za, plans["dynamics"])  # (B,Z), (B,Z,Z+A)
            dr = jr[..., :zd] @ dz
            dr[..., cols] += jr[..., zd:]
            dz_next = jd[..., :zd] @ dz
            dz_next[..., cols] += jd[..., zd:]
            scores.append(r)
            dscores.append(dr)
            z, dz = z_next, dz_next
        if self.value is not None:
            a, jp = self.policy.forward_with_jacobian(z, plans["policy"])  # (B,A), (B,A,Z)
            v, jv = self.value.forward_with_jacobian(torch.cat([z, a], dim=-1), plans["value"])
            dv_dz = jv[..., :zd] + jv[..., zd:] @ jp  # total derivative through policy(z_H)
            scores.append(v)
            dscores.append(dv_dz @ dz)
        s = torch.cat(scores, dim=-1)  # (B, T)
        ds = torch.cat(dscores, dim=1)  # (B, T, N)
        w = self._weights.to(s.dtype)
        if self.mode == "scalar":
            J = -(ds * w[:, None]).sum(1, keepdim=True)
        else:
            J = -(w.sqrt()[:, None] * ds)
        return self._combine(s, self._offsets(s)), J
