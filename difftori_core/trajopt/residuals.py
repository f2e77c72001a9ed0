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
from torch.nn import functional as F

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


class BoxResidual(Residual):
    """r = sqrt(w) * (relu(a - high) - relu(low - a)): zero inside the action box, a linear
    penalty outside, so a solve stays within the actuator limits without clamping (a clamp's
    zero gradient would cut the solution off from the parameters)."""

    def __init__(self, horizon: int, action_dim: int, weight: float, low: float = -1.0, high: float = 1.0) -> None:
        super().__init__()
        if weight <= 0 or not low < high:
            raise ValueError(f"need weight > 0 and low < high, got {weight}, {low}, {high}")
        self.horizon, self.action_dim, self.dim = horizon, action_dim, horizon * action_dim
        self.scale, self.low, self.high = math.sqrt(weight), low, high
        self.context_spec = {}

    has_analytic_jacobian = True

    def forward(self, actions: Tensor, context: Context) -> Tensor:
        return self.evaluate(actions.reshape(actions.shape[0], -1), None)

    def evaluate(self, flat: Tensor, prepared: Any) -> Tensor:
        return self.scale * (F.relu(flat - self.high) - F.relu(self.low - flat))

    def linearize(self, flat: Tensor, prepared: Any) -> tuple[Tensor, Tensor]:
        outside = ((flat > self.high) | (flat < self.low)).to(flat.dtype)
        return self.evaluate(flat, prepared), torch.diag_embed(self.scale * outside)


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

    z_{t+1} = dynamics([z_t, a_t]),  s_t = reward([z_t, a_t]) for t < H, and the terminal
    s_H = min_i value_i([z_H, policy(z_H)]) (TD-MPC's twin Q), discount weights w_k = gamma^k.

    mode="per_step" (default): one residual per score, r_k = sqrt(w_k tau_k) softplus((c_k - s_k) / tau_k),
    with per-sample anchors c_k from context["anchor"] (B, H+1) -- `anchors(latent, init)` puts
    them `margin` temperatures above the initial scores. Every r_k is strictly decreasing in its
    score, so lowering ||r||^2 always means raising predicted rewards and value, at any return
    scale (a linear `offset - s` would push a score *down* once it passed the offset). Near the
    anchors d cost / d s_k is proportional to w_k, as for the discounted return itself, whatever
    tau_k; Gauss-Newton sees H+1 directions of curvature. tau_k sets how far a score may rise in
    one solve before its pull fades: `temperature` for rewards, temperature / (1 - gamma) for the
    value, the scale of a discounted return.
    mode="scalar" reproduces the reference formulation, a single residual
    offset - (sum_t w_t s_t), for which an LM step is a rescaled gradient step.

    The latent is read from context["latent"] (B, latent_dim): the encoder runs once per solve,
    never inside the residual. The analytic Jacobian is one reverse sweep of H+1 cotangent rows
    through the rollout (MLP.vjp), not a forward-mode pass of H*A columns through every latent.
    """

    def __init__(
        self,
        dynamics: MLP,
        reward: MLP,
        horizon: int,
        action_dim: int,
        value: MLP | Sequence[MLP] | None = None,
        policy: MLP | None = None,
        discount: float = 0.99,
        mode: str = "per_step",
        offset: float = 10.0,
        temperature: float = 1.0,
        margin: float = 2.0,
    ) -> None:
        super().__init__()
        if mode not in ("per_step", "scalar"):
            raise ValueError(f"mode must be per_step|scalar, got {mode!r}")
        if (value is None) != (policy is None):
            raise ValueError("value and policy must be given together (terminal value uses policy(z_H))")
        if not 0 < discount <= 1 or temperature <= 0:
            raise ValueError(f"need 0 < discount <= 1 and temperature > 0, got {discount}, {temperature}")
        values = [] if value is None else [value] if isinstance(value, MLP) else list(value)
        self.dynamics, self.reward, self.policy = dynamics, reward, policy
        self.values = nn.ModuleList(values)
        self.horizon, self.action_dim = horizon, action_dim
        self.latent_dim = dynamics.out_dim
        self.discount, self.mode, self.offset, self.margin = discount, mode, offset, margin
        n_terms = horizon + bool(values)
        self.n_terms = n_terms
        self.dim = 1 if mode == "scalar" else n_terms
        self.context_spec = {"latent": (self.latent_dim,)}
        if mode == "per_step":
            self.context_spec["anchor"] = (n_terms,)
        weights = torch.tensor([discount**t for t in range(n_terms)])
        value_tau = temperature / max(1.0 - discount, 1e-3)
        taus = torch.tensor([temperature] * horizon + ([value_tau] if values else []))
        self.register_buffer("_weights", weights, persistent=False)
        self.register_buffer("_taus", taus, persistent=False)

    @property
    def value(self) -> MLP | None:
        return self.values[0] if len(self.values) else None

    # -- scores --------------------------------------------------------------------------

    def prepare(self, context: Context) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
        nets: dict[str, Any] = {"reward": self.reward, "dynamics": self.dynamics}
        if self.policy is not None:
            nets["policy"] = self.policy
        plans = {name: net.plan() for name, net in nets.items()}
        plans["values"] = [v.plan() for v in self.values]
        return context["latent"], context.get("anchor"), plans

    def scores(self, flat: Tensor, prepared: tuple[Tensor, Tensor | None, dict[str, Any]]) -> Tensor:
        """Predicted rewards and terminal value (B, H+1) of flattened actions (B, H*A)."""
        z, _, plans = prepared
        actions = flat.view(-1, self.horizon, self.action_dim)
        out = []
        for t in range(self.horizon):
            za = torch.cat([z, actions[:, t]], dim=-1)
            out.append(self.reward(za, plans["reward"]))
            z = self.dynamics(za, plans["dynamics"])
        if len(self.values):
            za = torch.cat([z, self.policy(z, plans["policy"])], dim=-1)  # type: ignore[misc]
            qs = [v(za, p) for v, p in zip(self.values, plans["values"], strict=True)]
            out.append(torch.stack(qs).min(0).values)
        return torch.cat(out, dim=-1)

    def anchors(self, latent: Tensor, init: Tensor) -> Tensor:
        """context["anchor"] for a solve from `init` (B, H, A): `margin` temperatures above the
        initial scores, detached (where the objective is near-linear and strictly decreasing)."""
        with torch.no_grad():
            s = self.scores(init.reshape(init.shape[0], -1), (latent, None, self.prepare({"latent": latent})[2]))
            return s + self.margin * self._taus.to(s)

    def predicted_return(self, latent: Tensor, actions: Tensor) -> Tensor:
        """sum_k gamma^k s_k of action sequences (B, H, A) from latents (B, Z): what is maximized."""
        s = self.scores(actions.reshape(actions.shape[0], -1), (latent, None, self.prepare({"latent": latent})[2]))
        return (s * self._weights.to(s)).sum(-1)

    # -- residuals -----------------------------------------------------------------------

    def _combine(self, s: Tensor, anchor: Tensor | None) -> Tensor:
        w = self._weights.to(s.dtype)
        if self.mode == "scalar":
            return self.offset - (s * w).sum(-1, keepdim=True)
        tau = self._taus.to(s.dtype)
        return (w * tau).sqrt() * F.softplus((anchor - s) / tau)

    def _dcombine(self, s: Tensor, anchor: Tensor | None) -> Tensor:
        """d residual / d score: (B, dim, H+1)."""
        w = self._weights.to(s.dtype)
        if self.mode == "scalar":
            return (-w).expand(s.shape[0], 1, -1)
        tau = self._taus.to(s.dtype)
        return torch.diag_embed(-(w / tau).sqrt() * torch.sigmoid((anchor - s) / tau))

    def forward(self, actions: Tensor, context: Context) -> Tensor:
        return self.evaluate(actions.reshape(actions.shape[0], -1), self.prepare(context))

    def evaluate(self, flat: Tensor, prepared: tuple[Tensor, Tensor | None, dict[str, Any]]) -> Tensor:
        return self._combine(self.scores(flat, prepared), prepared[1])

    has_analytic_jacobian = True

    def linearize(self, flat: Tensor, prepared: tuple[Tensor, Tensor | None, dict[str, Any]]) -> tuple[Tensor, Tensor]:
        z, anchor, plans = prepared
        actions = flat.view(-1, self.horizon, self.action_dim)
        batch, zd, ad, k = actions.shape[0], self.latent_dim, self.action_dim, self.n_terms
        caches, scores = [], []
        for t in range(self.horizon):
            za = torch.cat([z, actions[:, t]], dim=-1)
            r, r_cache = self.reward.forward_cached(za, plans["reward"])
            z, d_cache = self.dynamics.forward_cached(za, plans["dynamics"])
            caches.append((r_cache, d_cache))
            scores.append(r)
        # Reverse sweep: lam (B, K, Z) = d s_k / d z_t for every score row k at once.
        blocks: list[Tensor] = []
        if len(self.values):
            a, p_cache = self.policy.forward_cached(z, plans["policy"])  # type: ignore[union-attr]
            za = torch.cat([z, a], dim=-1)
            outs = [v.forward_cached(za, p) for v, p in zip(self.values, plans["values"], strict=True)]
            q = torch.stack([o[0] for o in outs])  # (n, B, 1)
            pick = q.argmin(0)  # which critic is the min, per sample
            one = za.new_ones(batch, 1, 1)
            g = torch.stack(
                [v.vjp(c, p, one) for v, (_, c), p in zip(self.values, outs, plans["values"], strict=True)]
            )  # (n, B, 1, Z+A)
            g = torch.gather(g, 0, pick.view(1, batch, 1, 1).expand(1, batch, 1, zd + ad))[0]
            dz_h = g[..., :zd] + self.policy.vjp(p_cache, plans["policy"], g[..., zd:])  # type: ignore[union-attr]
            scores.append(q.min(0).values)
            lam = torch.cat([za.new_zeros(batch, k - 1, zd), dz_h], dim=1)
        else:
            lam = z.new_zeros(batch, k, zd)
        for t in range(self.horizon - 1, -1, -1):
            r_cache, d_cache = caches[t]
            g_d = self.dynamics.vjp(d_cache, plans["dynamics"], lam)  # (B, K, Z+A): rows k > t
            g_r = self.reward.vjp(r_cache, plans["reward"], z.new_ones(batch, 1, 1))  # (B, 1, Z+A): row t
            onehot = torch.zeros(k, 1, dtype=z.dtype, device=z.device)
            onehot[t] = 1.0
            g_t = g_d + onehot * g_r  # (B, K, Z+A)
            blocks.append(g_t[..., zd:])
            lam = g_t[..., :zd]
        ds = torch.cat(blocks[::-1], dim=-1)  # (B, K, H*A)
        s = torch.cat(scores, dim=-1)
        return self._combine(s, anchor), self._dcombine(s, anchor) @ ds
