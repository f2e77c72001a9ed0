"""The MLP's analytic input Jacobian equals autograd's, for every supported layer type."""

from __future__ import annotations

import pytest
import torch

from difftori_core.nn.mlp import ACTIVATIONS, MLP


@pytest.mark.parametrize("act", [a for a in ACTIVATIONS if a != "identity"])
@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("out_act", ["identity", "tanh"])
def test_analytic_jacobian_matches_autograd(act: str, layer_norm: bool, out_act: str) -> None:
    mlp = MLP(9, (17, 13), 5, act=act, layer_norm=layer_norm, out_act=out_act).double()
    if layer_norm:  # non-trivial affine parameters, so their role in the VJP is exercised
        for norm in mlp.norms:
            torch.nn.init.normal_(norm.weight)
            torch.nn.init.normal_(norm.bias)
    x = torch.randn(4, 9, dtype=torch.double)
    y, J = mlp.forward_with_jacobian(x)
    expected = torch.func.vmap(torch.func.jacrev(mlp))(x)
    torch.testing.assert_close(y, mlp(x))
    torch.testing.assert_close(J, expected, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("hidden", [(), (16,), (16, 8)])
def test_plan_with_fixed_columns_gives_jacobian_of_the_varying_part(hidden: tuple[int, ...]) -> None:
    mlp = MLP(10, hidden, 3, act="elu").double()
    x = torch.randn(6, 10, dtype=torch.double)
    plan = mlp.plan(fixed=x[:, :4])
    y, J = mlp.forward_with_jacobian(x[:, 4:], plan)
    full = torch.func.vmap(torch.func.jacrev(mlp))(x)
    torch.testing.assert_close(y, mlp(x))
    torch.testing.assert_close(mlp(x[:, 4:], plan), mlp(x))
    torch.testing.assert_close(J, full[..., 4:], atol=1e-10, rtol=1e-8)


def test_analytic_jacobian_is_differentiable_wrt_parameters() -> None:
    """Unrolled/truncated backward modes back-propagate through J itself."""
    mlp = MLP(6, (8,), 4, act="tanh").double()
    x = torch.randn(3, 6, dtype=torch.double)
    _, J = mlp.forward_with_jacobian(x)
    J.square().sum().backward()
    grad = mlp.linears[0].weight.grad.clone()
    mlp.zero_grad()
    torch.func.vmap(torch.func.jacrev(mlp))(x).square().sum().backward()
    torch.testing.assert_close(grad, mlp.linears[0].weight.grad)


def test_unknown_activation_is_rejected() -> None:
    with pytest.raises(ValueError, match="activations must be among"):
        MLP(2, (3,), 1, act="swishy")
