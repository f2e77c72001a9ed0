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
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=False))
        self.norms = nn.ModuleList(nn.LayerNorm(h) if layer_norm else nn.Identity() for h in hidden)
        # Plain lists of the same modules: slicing a ModuleList builds a new ModuleList, which
        # costs more than a small matmul. (Parameters stay shared; .to()/load_state_dict are fine.)
        self._hidden = [
            (lin, norm if layer_norm else None) for lin, norm in zip(self.linears[:-1], self.norms, strict=False)
        ]
        self._out = self.linears[-1]

    def split_first_layer(self, fixed: Tensor, split: int) -> tuple[Tensor, Tensor]:
        """Fold the first `split` input columns, fixed across calls, into a per-sample bias.

        For an input [fixed, x], returns (weight, bias) such that the first layer's
        pre-activation is x @ weight.T + bias; pass them as `first=` to `forward` and
        `forward_with_jacobian`, which then take only `x` and differentiate w.r.t. it.
        """
        first = self.linears[0]
        bias = F.linear(fixed, first.weight[:, :split], first.bias)
        return first.weight[:, split:].contiguous(), bias

    def _first_preact(self, x: Tensor, first: tuple[Tensor, Tensor] | None) -> Tensor:
        if first is None:
            return F.linear(x, self.linears[0].weight, self.linears[0].bias)
        weight, bias = first
        return torch.addmm(bias, x, weight.t())

    def forward(self, x: Tensor, first: tuple[Tensor, Tensor] | None = None) -> Tensor:
        # F.linear rather than module calls: this runs every solver iteration, where per-call
        # overhead is a sizeable part of a millisecond-class control tick.
        layers = self._hidden
        for idx, (linear, norm) in enumerate(layers):
            x = self._first_preact(x, first) if idx == 0 else F.linear(x, linear.weight, linear.bias)
            x = activation(self.act, x if norm is None else norm(x))
        if not layers:
            return activation(self.out_act, self._first_preact(x, first))
        return activation(self.out_act, F.linear(x, self._out.weight, self._out.bias))

    def forward_with_jacobian(self, x: Tensor, first: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Output and its Jacobian w.r.t. the input, for a batch.

        Args:
            x: (B, in_dim) input, or only the varying part when `first` comes from
                `split_first_layer`.
            first: optional (weight, bias) replacing the first layer (see `split_first_layer`).

        Returns:
            y: (B, out_dim), J: (B, out_dim, x.shape[1]).
        """
        # Forward, keeping what the reverse sweep needs.
        saved: list[tuple[Tensor, Tensor, Tensor | None, Tensor | None]] = []  # pre, post, x_hat, 1/std
        h = x
        for idx, (linear, norm) in enumerate(self._hidden):
            pre = self._first_preact(h, first) if idx == 0 else F.linear(h, linear.weight, linear.bias)
            if norm is not None:
                mean = pre.mean(-1, keepdim=True)
                var = pre.var(-1, unbiased=False, keepdim=True)
                inv_std = torch.rsqrt(var + norm.eps)
                x_hat = (pre - mean) * inv_std
                pre = x_hat * norm.weight + norm.bias
                h = activation(self.act, pre)
                saved.append((pre, h, x_hat, inv_std))
            else:
                h = activation(self.act, pre)
                saved.append((pre, h, None, None))
        out_pre = F.linear(h, self._out.weight, self._out.bias) if saved else self._first_preact(h, first)
        y = activation(self.out_act, out_pre)

        # Reverse sweep: G = dy/dh_l, shape (B, out_dim, width_l).
        g = self._out.weight if (saved or first is None) else first[0]
        if self.out_act != "identity":
            g = activation_derivative(self.out_act, out_pre, y).unsqueeze(-1) * g
        if not saved:
            g = g.expand(x.shape[0], -1, -1)
        for idx in range(len(saved) - 1, -1, -1):
            pre, post, x_hat, inv_std = saved[idx]
            g = g * activation_derivative(self.act, pre, post).unsqueeze(1)  # -> (B, out, h)
            linear, norm = self._hidden[idx]
            if x_hat is not None:
                g = g * norm.weight
                # VJP of (z - mean) / std, row-wise, for every output row of g at once.
                xh = x_hat.unsqueeze(1)
                g = inv_std.unsqueeze(1) * (g - g.mean(-1, keepdim=True) - xh * (g * xh).mean(-1, keepdim=True))
            weight = first[0] if (idx == 0 and first is not None) else linear.weight
            g = g @ weight
        return y, g
