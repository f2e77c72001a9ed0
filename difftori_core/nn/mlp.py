"""MLP with an analytic input Jacobian.

The trajectory optimizer needs d(residual)/d(actions) at every iteration. Forming it with
`vmap(jacrev(...))` costs several milliseconds of Python/dispatch overhead per call on a CPU; for
an MLP the Jacobian is just a chain of weight matrices and activation derivatives, which this
module forms in one reverse sweep with a handful of batched matmuls. The result is an ordinary
torch expression of the parameters, so it is differentiable (unrolled / truncated backward modes
back-propagate through it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

ACTIVATIONS = ("relu", "elu", "tanh", "silu", "mish", "softplus", "identity")


def activation(name: str, x: Tensor) -> Tensor:
    if name == "relu":
        return F.relu(x)
    if name == "elu":
        return F.elu(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "silu":
        return F.silu(x)
    if name == "mish":
        return F.mish(x)
    if name == "softplus":
        return F.softplus(x)
    if name == "identity":
        return x
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def activation_derivative(name: str, pre: Tensor, post: Tensor) -> Tensor:
    """Elementwise derivative of `activation(name, .)` at `pre`, given `post = activation(pre)`.

    Written in terms of `post` where that saves ops (this runs every solver iteration), and
    always in the input's floating dtype (a bool mask would cost a type conversion per use).
    """
    if name == "relu":
        return torch.sign(post)
    if name == "elu":
        return torch.where(pre > 0, 1.0, post + 1.0)
    if name == "tanh":
        return 1.0 - post.square()
    if name == "silu":
        s = torch.sigmoid(pre)
        return s * (1.0 + pre * (1.0 - s))
    if name == "mish":
        t = torch.tanh(F.softplus(pre))
        return t + pre * torch.sigmoid(pre) * (1.0 - t.square())
    if name == "softplus":
        return torch.sigmoid(pre)
    if name == "identity":
        return torch.ones_like(pre)
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


@dataclass
class _Layer:
    weight: Tensor  # (out, in)
    weight_t: Tensor  # (in, out), for addmm
    bias: Tensor  # (out,) or, for a folded first layer, (B, out)
    norm: tuple[Tensor, Tensor, float] | None = None  # LayerNorm (gamma, beta, eps)


@dataclass
class MLPPlan:
    """An MLP's weights as plain tensors, for one batch of calls with the same parameters.

    Ops on `nn.Parameter`s pay a Python dispatch (about 7 us each on a small CPU), and a
    millisecond-class solve makes hundreds of them; a plan takes that cost once. Its tensors
    are autograd views of the parameters, so gradients flow through them as usual. Build a new
    plan whenever the parameters may have changed (solvers build one per solve).
    """

    hidden: list[_Layer]
    out: _Layer


def _affine(x: Tensor, layer: _Layer) -> Tensor:
    # addmm is one op where `x @ W^T + b` is two; it needs a matrix input.
    return torch.addmm(layer.bias, x, layer.weight_t) if x.dim() == 2 else x @ layer.weight_t + layer.bias


class MLP(nn.Module):
    """Linear -> [LayerNorm] -> activation, repeated; a plain Linear output layer.

    Args:
        in_dim: input width.
        hidden: hidden layer widths.
        out_dim: output width.
        act: hidden activation name (see `ACTIVATIONS`).
        layer_norm: LayerNorm after each hidden Linear, before the activation (TD-MPC style).
        out_act: optional activation on the output.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        act: str = "relu",
        layer_norm: bool = False,
        out_act: str = "identity",
    ) -> None:
        super().__init__()
        if act not in ACTIVATIONS or out_act not in ACTIVATIONS:
            raise ValueError(f"activations must be among {ACTIVATIONS}, got {act!r}, {out_act!r}")
        dims = [in_dim, *hidden, out_dim]
        self.in_dim, self.out_dim = in_dim, out_dim
        self.act, self.out_act = act, out_act
        self.layer_norm = layer_norm
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=False))
        self.norms = nn.ModuleList(nn.LayerNorm(h) if layer_norm else nn.Identity() for h in hidden)

    def plan(self, fixed: Tensor | None = None) -> MLPPlan:
        """The weights as plain tensors (see `MLPPlan`), optionally with the first input columns
        fixed: for inputs [fixed, x] the plan's first layer takes only `x`, with `fixed`'s share
        folded into a per-sample bias once (e.g. the observation context of a learned cost that
        a solver evaluates at many action sequences)."""
        layers = []
        for idx, linear in enumerate(self.linears):
            weight, bias = linear.weight.view_as(linear.weight), linear.bias.view_as(linear.bias)
            if idx == 0 and fixed is not None:
                split = fixed.shape[-1]
                bias = F.linear(fixed, weight[:, :split], bias)
                weight = weight[:, split:].contiguous()
            norm = None
            if self.layer_norm and idx < len(self.norms):
                ln = self.norms[idx]
                norm = (ln.weight.view_as(ln.weight), ln.bias.view_as(ln.bias), ln.eps)
            layers.append(_Layer(weight, weight.t(), bias, norm))
        return MLPPlan(hidden=layers[:-1], out=layers[-1])

    def forward(self, x: Tensor, plan: MLPPlan | None = None) -> Tensor:
        """x: (..., in_dim) -> (..., out_dim)."""
        plan = plan or self.plan()
        for layer in plan.hidden:
            h = _affine(x, layer)
            if layer.norm is not None:
                # A Python-int shape (not h.shape) keeps the graph static for ONNX export.
                h = F.layer_norm(h, (layer.norm[0].numel(),), *layer.norm)
            x = activation(self.act, h)
        return activation(self.out_act, _affine(x, plan.out))

    def forward_with_jacobian(self, x: Tensor, plan: MLPPlan | None = None) -> tuple[Tensor, Tensor]:
        """Output and its Jacobian w.r.t. the input, for a batch.

        Args:
            x: (B, in_dim) input, or only the varying part with a plan from `plan(fixed)`.
            plan: weights to use (built on the fly when omitted).

        Returns:
            y: (B, out_dim), J: (B, out_dim, x.shape[1]).
        """
        plan = plan or self.plan()
        y, cache = self.forward_cached(x, plan)
        return y, self.vjp(cache, plan, None)

    def forward_cached(self, x: Tensor, plan: MLPPlan) -> tuple[Tensor, list[Tensor | None]]:
        """Output (B, out_dim) and what a reverse sweep (`vjp`) needs."""
        cache: list[Tensor | None] = []  # per hidden layer: pre, post, x_hat, 1/std; then out_pre, y
        h = x
        for layer in plan.hidden:
            pre = torch.addmm(layer.bias, h, layer.weight_t)
            x_hat = inv_std = None
            if layer.norm is not None:
                gamma, beta, eps = layer.norm
                var, mean = torch.var_mean(pre, -1, unbiased=False, keepdim=True)
                inv_std = torch.rsqrt(var + eps)
                x_hat = (pre - mean) * inv_std
                pre = torch.addcmul(beta, x_hat, gamma)
            h = activation(self.act, pre)
            cache += [pre, h, x_hat, inv_std]
        out_pre = torch.addmm(plan.out.bias, h, plan.out.weight_t)
        y = activation(self.out_act, out_pre)
        cache += [out_pre, y]
        return y, cache

    def vjp(self, cache: list[Tensor | None], plan: MLPPlan, rows: Tensor | None) -> Tensor:
        """Rows of output cotangents (B, K, out_dim) -> (B, K, in_dim): K vector-Jacobian
        products in one reverse sweep; `rows=None` means the identity (the full Jacobian).
        K rows cost K/out_dim of the full Jacobian: a rollout's H+1 scores need far fewer
        rows than a 50-wide latent has."""
        out_pre, y = cache[-2], cache[-1]
        if rows is None:
            g = plan.out.weight
            if self.out_act != "identity":
                g = activation_derivative(self.out_act, out_pre, y).unsqueeze(-1) * g
        else:
            if self.out_act != "identity":
                rows = rows * activation_derivative(self.out_act, out_pre, y).unsqueeze(1)
            g = rows @ plan.out.weight
        if not plan.hidden:
            return g.expand(y.shape[0], -1, -1) if rows is None else g
        for idx in range(len(plan.hidden) - 1, -1, -1):
            layer = plan.hidden[idx]
            pre, post, x_hat, inv_std = cache[4 * idx : 4 * idx + 4]
            g = g * activation_derivative(self.act, pre, post).unsqueeze(1)  # -> (B, K, h)
            if layer.norm is not None:
                g = g * layer.norm[0]
                # VJP of (z - mean) / std, row-wise, for every row of g at once.
                xh = x_hat.unsqueeze(1)
                g = inv_std.unsqueeze(1) * (g - g.mean(-1, keepdim=True) - xh * (g * xh).mean(-1, keepdim=True))
            g = g @ layer.weight
        return g
