"""The fast path solves the same problem as the Theseus path: same solutions, same gradients."""

from __future__ import annotations

import pytest
import torch

from difftori_core.nn.mlp import MLP
from difftori_core.trajopt import (
    MLPResidual,
    ProximityResidual,
    RolloutResidual,
    SolverConfig,
    StackedResidual,
    TrajOptLayer,
)


def _il_problem(seed: int, batch: int) -> tuple[torch.nn.Module, dict, torch.Tensor]:
    torch.manual_seed(seed)
    res = StackedResidual(
        MLPResidual({"obs": 6, "z": 3}, horizon=4, action_dim=2, dim=5, hidden=(16,), act="elu"),
        ProximityResidual(horizon=4, action_dim=2, weight=0.3),
    ).double()
    init = torch.randn(batch, 4, 2, dtype=torch.double)
    ctx = {
        "obs": torch.randn(batch, 6, dtype=torch.double),
        "z": torch.randn(batch, 3, dtype=torch.double),
        "init": init,
    }
    return res, ctx, init


def _mbrl_problem(seed: int, batch: int, mode: str) -> tuple[torch.nn.Module, dict, torch.Tensor]:
    torch.manual_seed(seed)
    latent, act = 5, 2
    res = RolloutResidual(
        dynamics=MLP(latent + act, (16,), latent, act="elu"),
        reward=MLP(latent + act, (16,), 1, act="elu"),
        value=MLP(latent + act, (16,), 1, act="elu", layer_norm=True),
        policy=MLP(latent, (16,), act, act="elu", out_act="tanh"),
        horizon=3,
        action_dim=act,
        mode=mode,
        offset=2.0,
        temperature=0.1,
    ).double()
    latent_in = torch.randn(batch, latent, dtype=torch.double)
    init = 0.3 * torch.randn(batch, 3, act, dtype=torch.double)
    ctx = {"latent": latent_in}
    if mode == "per_step":
        ctx["anchor"] = res.anchors(latent_in, init)
    return res, ctx, init


PROBLEMS = {
    "il_mlp_proximity": lambda seed, b: _il_problem(seed, b),
    "mbrl_per_step": lambda seed, b: _mbrl_problem(seed, b, "per_step"),
    "mbrl_scalar": lambda seed, b: _mbrl_problem(seed, b, "scalar"),
}


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("mode", ["unroll", "truncated", "implicit"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_matches_theseus(problem: str, mode: str, seed: int) -> None:
    res, ctx, init = PROBLEMS[problem](seed, 4)
    if mode == "implicit" and res.dim < res.num_vars:
        pytest.skip("J^T J singular by construction: Theseus' implicit GN step is then arbitrary; ours is damped")
    step = 0.5 if problem == "mbrl_scalar" else 1.0
    # The monotone per-step objective saturates once a score passes its anchor; light damping
    # then makes the normal equations ill-conditioned and both backends amplify rounding alike.
    damping = 0.5 if problem == "mbrl_per_step" else 0.05
    results = {}
    for backend in ("fast", "theseus"):
        cfg = SolverConfig(
            backend=backend,
            method="lm",
            max_iterations=8,
            damping=damping,
            step_size=step,
            backward_mode=mode,
            backward_iterations=3,
        )
        sol, info = TrajOptLayer(res, cfg)(init, ctx)
        res.zero_grad()
        (sol * torch.linspace(-1, 1, sol.numel(), dtype=sol.dtype).view_as(sol)).sum().backward()
        grads = [p.grad.clone() for p in res.parameters() if p.grad is not None]
        results[backend] = (sol.detach(), grads, info)
    (sol_f, grads_f, info_f), (sol_t, grads_t, info_t) = results["fast"], results["theseus"]
    torch.testing.assert_close(sol_f, sol_t, atol=1e-9, rtol=1e-7)
    assert len(grads_f) == len(grads_t) > 0
    for gf, gt in zip(grads_f, grads_t, strict=False):
        torch.testing.assert_close(gf, gt, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(info_f.final_cost, info_t.final_cost, atol=1e-9, rtol=1e-7)
    assert (info_f.final_cost < info_f.initial_cost).all()


@pytest.mark.parametrize("jacobian", ["analytic", "autodiff"])
def test_jacobian_modes_agree(jacobian: str) -> None:
    res, ctx, init = _mbrl_problem(3, 3, "per_step")
    ref, _ = TrajOptLayer(res, SolverConfig(jacobian="autodiff", damping=0.5))(init, ctx)
    sol, _ = TrajOptLayer(res, SolverConfig(jacobian=jacobian, damping=0.5))(init, ctx)
    torch.testing.assert_close(sol, ref, atol=1e-10, rtol=1e-8)


def test_implicit_on_rank_deficient_scalar_formulation_stays_finite_and_per_sample() -> None:
    res, ctx, init = _mbrl_problem(0, 4, "scalar")
    layer = TrajOptLayer(res, SolverConfig(max_iterations=6, damping=0.05, step_size=0.5, backward_mode="implicit"))
    sol, info = layer(init, ctx)
    assert not info.failed.any()
    grads = torch.autograd.grad(sol.sum(), list(res.dynamics.parameters()))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    single, _ = layer(init[:1], {k: v[:1] for k, v in ctx.items()})
    torch.testing.assert_close(single[0], sol[0], atol=1e-12, rtol=1e-10)
