"""Batch independence, failure isolation, early stopping, determinism and input validation."""

from __future__ import annotations

import pytest
import torch

from difftori_core.trajopt import MLPResidual, ProximityResidual, SolverConfig, StackedResidual, TrajOptLayer
from tests.trajopt_problems import LinearResidual, PoisonedResidual

BACKENDS = ["fast", "theseus"]


def _il_residual() -> StackedResidual:
    return StackedResidual(
        MLPResidual({"obs": 5}, horizon=3, action_dim=2, dim=4, hidden=(12,), act="tanh"),
        ProximityResidual(horizon=3, action_dim=2, weight=0.5),
    ).double()


def _inputs(batch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    init = torch.randn(batch, 3, 2, dtype=torch.double)
    return init, {"obs": torch.randn(batch, 5, dtype=torch.double), "init": init.clone()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rel_tolerance", [0.0, 1e-3])
def test_batch_size_never_changes_one_samples_result(backend: str, rel_tolerance: float) -> None:
    res = _il_residual()
    layer = TrajOptLayer(
        res, SolverConfig(backend=backend, max_iterations=15, damping=0.1, rel_tolerance=rel_tolerance)
    )
    init, ctx = _inputs(6)
    with torch.no_grad():
        batched, info = layer(init, ctx)
        for i in range(6):
            single, single_info = layer(init[i : i + 1], {k: v[i : i + 1] for k, v in ctx.items()})
            torch.testing.assert_close(single[0], batched[i], atol=1e-12, rtol=1e-10)
            assert single_info.iterations.item() == info.iterations[i].item()


def test_early_stopping_is_per_sample() -> None:
    res = _il_residual()
    layer = TrajOptLayer(res, SolverConfig(max_iterations=50, damping=0.1, rel_tolerance=1e-6))
    init, ctx = _inputs(4)
    init[0] = 0.0  # an easier start converges sooner than the others
    with torch.no_grad():
        _, info = layer(init, ctx)
    assert info.converged.all()
    assert (info.iterations < 50).all()
    assert info.iterations.unique().numel() > 1


def _grads_of(res: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(res.parameters())))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("where", ["context", "init", "mid_solve"])
def test_planted_nan_leaves_other_samples_untouched(backend: str, where: str) -> None:
    torch.manual_seed(0)
    inner = _il_residual()
    res = PoisonedResidual(inner) if where == "mid_solve" else inner
    layer = TrajOptLayer(res, SolverConfig(backend=backend, max_iterations=6, damping=0.1, backward_mode="unroll"))
    init, ctx = _inputs(5)
    if where == "mid_solve":
        ctx["poison"] = torch.zeros(5, 1, dtype=torch.double)
        ctx["poison"][2] = 1.0
    bad_init, bad_ctx = init.clone(), {k: v.clone() for k, v in ctx.items()}
    if where == "context":
        bad_ctx["obs"][2, 1] = float("nan")
    elif where == "init":
        bad_init[2, 0, 0] = float("inf")

    sol, info = layer(bad_init, bad_ctx)
    assert info.failed.tolist() == [False, False, True, False, False]
    assert torch.equal(sol[2].isnan(), bad_init[2].isnan())
    torch.testing.assert_close(sol[2][~sol[2].isnan()], bad_init[2][~bad_init[2].isnan()])
    keep = torch.tensor([0, 1, 3, 4])
    weights = torch.randn(4, 3, 2, dtype=torch.double)
    grads = _grads_of(inner, (sol[keep] * weights).sum())
    assert all(torch.isfinite(g).all() for g in grads)

    clean_sol, clean_info = layer(init[keep], {k: v[keep] for k, v in ctx.items()})
    assert not clean_info.failed.any()
    torch.testing.assert_close(sol[keep], clean_sol, atol=1e-12, rtol=1e-10)
    for g, c in zip(grads, _grads_of(inner, (clean_sol * weights).sum()), strict=False):
        torch.testing.assert_close(g, c, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_failed_factorization_is_isolated(backend: str) -> None:
    """Gauss-Newton on a sample whose Jacobian vanishes cannot factorize J^T J."""
    res = LinearResidual(horizon=2, action_dim=2, dim=6, context_dim=3, masked=True)
    layer = TrajOptLayer(res, SolverConfig(backend=backend, method="gn", max_iterations=2, backward_mode="unroll"))
    init = torch.randn(3, 2, 2, dtype=torch.double)
    ctx = {"c": torch.randn(3, 3, dtype=torch.double), "mask": torch.ones(3, 1, dtype=torch.double)}
    ctx["mask"][1] = 0.0
    sol, info = layer(init, ctx)
    assert info.failed.tolist() == [False, True, False]
    torch.testing.assert_close(sol[1], init[1])
    torch.testing.assert_close(sol[[0, 2]], res.closed_form(ctx)[[0, 2]], atol=1e-9, rtol=1e-9)
    grads = torch.autograd.grad(sol[[0, 2]].sum(), [res.W, res.C])
    assert all(torch.isfinite(g).all() for g in grads)


def test_same_seed_same_result() -> None:
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        res = _il_residual()
        init, ctx = _inputs(3)
        sol, _ = TrajOptLayer(res, SolverConfig(max_iterations=5))(init, ctx)
        sol.sum().backward()
        outputs.append((sol.detach(), res.terms[0].mlp.linears[0].weight.grad.clone()))
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert torch.equal(outputs[0][1], outputs[1][1])


def test_bad_inputs_are_named() -> None:
    layer = TrajOptLayer(_il_residual())
    init, ctx = _inputs(2)
    with pytest.raises(ValueError, match=r"init must have shape \(B, 3, 2\)"):
        layer(init[:, :2], ctx)
    with pytest.raises(ValueError, match="missing key.*'obs'"):
        layer(init, {"init": init})
    with pytest.raises(ValueError, match=r"context\['obs'\] must have shape \(2, 5\)"):
        layer(init, {**ctx, "obs": torch.randn(2, 4, dtype=torch.double)})
    with pytest.raises(ValueError, match="invalid SolverConfig"):
        SolverConfig(max_iterations=0)
