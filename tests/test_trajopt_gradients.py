"""Every backward mode of both backends against exact gradients on problems with known answers."""

from __future__ import annotations

import pytest
import torch

from difftori_core.trajopt import SolverConfig, TrajOptLayer
from tests.trajopt_problems import LinearResidual, TanhResidual

MODES = ["unroll", "truncated", "implicit"]
BACKENDS = ["fast", "theseus"]


def _grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, params))


def _finite_difference(fn, param: torch.Tensor, entries: list[tuple[int, ...]], eps: float = 1e-6) -> list[float]:
    out = []
    with torch.no_grad():
        for idx in entries:
            orig = param[idx].item()
            param[idx] = orig + eps
            plus = fn().item()
            param[idx] = orig - eps
            minus = fn().item()
            param[idx] = orig
            out.append((plus - minus) / (2 * eps))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["gn", "lm"])
def test_linear_least_squares_gradients_are_exact(backend: str, mode: str, method: str) -> None:
    res = LinearResidual(horizon=3, action_dim=2, dim=9, context_dim=4)
    ctx = {"c": torch.randn(5, 4, dtype=torch.double, requires_grad=True)}
    init = torch.randn(5, 3, 2, dtype=torch.double)
    weights = torch.randn(5, 3, 2, dtype=torch.double)
    cfg = SolverConfig(
        backend=backend,
        method=method,
        max_iterations=30 if method == "lm" else 3,
        damping=1e-4,
        backward_mode=mode,
        backward_iterations=3,
    )
    layer = TrajOptLayer(res, cfg)
    sol, info = layer(init, ctx)
    assert not info.failed.any()
    torch.testing.assert_close(sol, res.closed_form(ctx), atol=1e-8, rtol=1e-8)

    params = [res.W, res.C, ctx["c"]]
    got = _grads((sol * weights).sum(), params)
    exact = _grads((res.closed_form(ctx) * weights).sum(), params)
    for g, e in zip(got, exact, strict=False):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-6)

    # ... and the exact gradient is what finite differences of the closed form give.
    entries = [(0, 0), (3, 5), (8, 1)]
    fd = _finite_difference(lambda: (res.closed_form(ctx) * weights).sum(), res.W, entries)
    for (i, j), value in zip(entries, fd, strict=False):
        assert got[0][i, j].item() == pytest.approx(value, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_nonlinear_zero_residual_gradients_match_finite_differences(backend: str, mode: str) -> None:
    res = TanhResidual(horizon=2, action_dim=2)
    ctx = {"shift": 0.3 * torch.randn(3, 4, dtype=torch.double)}
    exact_solution = res.closed_form(ctx).detach()
    init = exact_solution + 0.05 * torch.randn_like(exact_solution)
    weights = torch.randn_like(init)
    cfg = SolverConfig(backend=backend, method="gn", max_iterations=12, backward_mode=mode, backward_iterations=4)
    layer = TrajOptLayer(res, cfg)
    sol, info = layer(init, ctx)
    assert not info.failed.any()
    torch.testing.assert_close(sol, exact_solution, atol=1e-9, rtol=1e-9)
    got = _grads((sol * weights).sum(), [res.A, res.theta])

    def solved_loss() -> torch.Tensor:
        with torch.no_grad():
            return (layer(init, ctx)[0] * weights).sum()

    entries_a = [(0, 0), (1, 3), (3, 2)]
    for (i, j), value in zip(entries_a, _finite_difference(solved_loss, res.A, entries_a), strict=False):
        assert got[0][i, j].item() == pytest.approx(value, rel=1e-5, abs=1e-7)
    entries_t = [(0,), (2,)]
    for (i,), value in zip(entries_t, _finite_difference(solved_loss, res.theta, entries_t), strict=False):
        assert got[1][i].item() == pytest.approx(value, rel=1e-5, abs=1e-7)


def test_truncated_gradient_differs_from_unrolled_before_convergence() -> None:
    """The modes are genuinely different computations (guards against a mode being ignored)."""
    res = LinearResidual(horizon=2, action_dim=2, dim=6, context_dim=3)
    ctx = {"c": torch.randn(2, 3, dtype=torch.double)}
    init = torch.randn(2, 2, 2, dtype=torch.double)
    grads = {}
    for mode in ("unroll", "truncated"):
        cfg = SolverConfig(method="lm", max_iterations=4, damping=5.0, backward_mode=mode, backward_iterations=1)
        sol, _ = TrajOptLayer(res, cfg)(init, ctx)
        grads[mode] = torch.autograd.grad(sol.sum(), res.W)[0]
    assert not torch.allclose(grads["unroll"], grads["truncated"])
