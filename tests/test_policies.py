"""Policy contract tests: every policy type trains, predicts bounded chunks, acts tick by tick
through the runner."""

from __future__ import annotations

import copy

import pytest
import torch

from difftori_core.deploy.runner import PolicyRunner
from difftori_core.nn.encoders import EncoderConfig, ObservationEncoder
from difftori_core.policies import PolicyConfig, PolicySpec, make_policy
from difftori_core.policies.il import DiffTORIPolicy
from difftori_core.policies.normalizer import Normalizer
from difftori_core.processing import ProcessingSpec

SPEC = PolicySpec(
    obs_shapes={"point_cloud": [64, 3], "image": [3, 32, 32], "agent_pos": [5]},
    action_dim=4,
    action_low=[-1.0] * 4,
    action_high=[1.0] * 4,
)
SMALL = EncoderConfig(
    point_widths=(16, 32), point_out=16, image_channels=(8, 16), image_out=16, state_hidden=16, state_out=16
)


def small_config(kind: str, **difftori: object) -> PolicyConfig:
    cfg = PolicyConfig(type=kind, horizon=8, n_obs_steps=2, n_action_steps=4, encoder=SMALL)
    if kind == "difftori":
        cfg.difftori.cost_hidden = (32,)
        cfg.difftori.cvae_hidden = (32,)
        cfg.difftori.latent_dim = 8
        cfg.difftori.residual_dim = 8
        for key, value in difftori.items():
            setattr(cfg.difftori, key, value)
    used = cfg.used_sections()
    if "mlp_bc" in used:
        cfg.mlp_bc.hidden = (32,)
    if "diffusion" in used:
        cfg.diffusion.down_dims = (16, 32)
        cfg.diffusion.num_inference_steps = 3
    if "ibc" in used:
        cfg.ibc.hidden = (32,)
        cfg.ibc.num_negatives = 16
        cfg.ibc.inference_samples = 64
    return cfg


PROCESSING = ProcessingSpec(keys=("point_cloud", "image", "agent_pos"), num_points=64, image_size=(32, 32))


def batch(n: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": {
            "point_cloud": torch.randn(n, 2, 64, 3, generator=g),
            "image": torch.randint(0, 256, (n, 2, 3, 32, 32), generator=g, dtype=torch.uint8),
            "agent_pos": torch.randn(n, 2, 5, generator=g),
        },
        "action": torch.rand(n, 8, 4, generator=g) * 1.6 - 0.8,
    }


def fitted(kind: str, **kw: object):
    torch.manual_seed(0)
    policy = make_policy(small_config(kind, **kw), SPEC)
    b = batch()
    policy.normalizer.fit({"action": b["action"], "agent_pos": b["obs"]["agent_pos"]})
    return policy, b


KINDS = ["mlp_bc", "diffusion", "ibc", "difftori"]


@pytest.mark.parametrize("kind", KINDS)
def test_forward_returns_finite_loss_with_gradients(kind: str) -> None:
    policy, b = fitted(kind)
    policy.train()
    loss, info = policy(b)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert info["loss"] == pytest.approx(loss.item())
    loss.backward()
    trainable = policy.cost_parameters() if isinstance(policy, DiffTORIPolicy) else list(policy.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    if isinstance(policy, DiffTORIPolicy):  # the base is frozen in phase 2
        assert all(p.grad is None for p in policy.base_parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_predicted_chunk_has_horizon_and_respects_action_bounds(kind: str) -> None:
    policy, b = fitted(kind)
    policy.eval()
    # Bounds tighter than the data, so clamping is exercised.
    policy.action_low.fill_(-0.5)
    policy.action_high.fill_(0.5)
    chunk = policy.predict_action_chunk(b["obs"])
    assert chunk.shape == (6, 8, 4)
    assert chunk.min() >= -0.5 and chunk.max() <= 0.5


@pytest.mark.parametrize("kind", KINDS)
def test_runner_executes_n_action_steps_of_each_chunk(kind: str) -> None:
    policy, b = fitted(kind)
    calls = []
    original = policy.predict_chunk

    def spy(obs, variant=None):
        calls.append({k: v.clone() for k, v in obs.items()})
        return original(obs, variant)

    policy.predict_chunk = spy  # type: ignore[method-assign]
    runner = PolicyRunner(policy, PROCESSING)
    frames = [{k: v[:1, 0] for k, v in batch(1, seed=s)["obs"].items()} for s in range(9)]
    results = [runner.act(f) for f in frames]
    assert all(a.shape == (1, 4) for a, _ in results)
    assert len(calls) == 3  # ticks 0, 4, 8 with n_action_steps = 4
    assert [s.new_chunk for _, s in results] == [True, False, False, False] * 2 + [True]
    # First call: history padded by repeating the first frame, as the training sampler pads.
    torch.testing.assert_close(calls[0]["agent_pos"][:, 0], calls[0]["agent_pos"][:, 1])
    # Later calls see the two newest frames in order.
    torch.testing.assert_close(
        calls[1]["agent_pos"][0], torch.stack([frames[3]["agent_pos"][0], frames[4]["agent_pos"][0]])
    )
    assert runner.pending_actions().shape == (3, 4)
    runner.reset()
    runner.act(frames[0])
    assert len(calls) == 4  # reset dropped the queued actions


@pytest.mark.parametrize("kind", KINDS)
def test_skipping_the_frames_no_chunk_will_see_changes_no_action(kind: str) -> None:
    policy, _ = fitted(kind)
    frames = [{k: v[:1, 0] for k, v in batch(1, seed=s)["obs"].items()} for s in range(13)]
    twin = PolicyRunner(copy.deepcopy(policy), PROCESSING)  # the same sampling RNG state for diffusion
    every_frame = [twin.act(f)[0] for f in frames]
    runner = PolicyRunner(policy, PROCESSING)
    used, skipping = [], []
    for f in frames:
        used.append(runner.frame_used())
        skipping.append(runner.act(f if used[-1] else None)[0])
    # n_action_steps 4, n_obs_steps 2: a chunk at ticks 0, 4, 8, 12 sees frames (t-1, t).
    assert used == [True, False, False, True, True, False, False, True, True, False, False, True, True]
    for a, b in zip(every_frame, skipping, strict=True):
        torch.testing.assert_close(a, b)
    runner.reset()
    with pytest.raises(ValueError, match="frame is needed"):
        runner.act(None)


def test_difftori_base_variant_returns_the_base_chunk_and_refined_reports_the_solve() -> None:
    policy, b = fitted("difftori")
    policy.eval()
    base_chunk = policy.base.predict_action_chunk(b["obs"])
    torch.testing.assert_close(policy.predict_action_chunk(b["obs"], "base"), base_chunk)
    refined = policy.predict_chunk(b["obs"])
    assert refined.solver_failed is not None and not refined.solver_failed.any()
    assert refined.solver_iterations is not None and (refined.solver_iterations > 0).all()
    assert not torch.equal(refined.actions, base_chunk)
    with pytest.raises(ValueError, match="variants"):
        policy.predict_chunk(b["obs"], "refined")
    # Two runners over one policy: the variant is a call argument, the policy is not mutated.
    runner = PolicyRunner(policy, PROCESSING)
    base_runner = runner.with_variant("base")
    frame = {k: v[:1, 0] for k, v in b["obs"].items()}
    a_base, s_base = base_runner.act(frame)
    a_ref, s_ref = runner.act(frame)
    assert s_base.solver_iterations is None and s_ref.solver_iterations is not None
    assert not torch.equal(a_base, a_ref)


def test_policy_config_holds_only_the_sections_its_type_uses() -> None:
    from difftori_core.config import ConfigError, from_dict, to_dict

    cfg = to_dict(PolicyConfig(type="difftori"))
    assert {"difftori", "mlp_bc"} <= set(cfg) and "diffusion" not in cfg
    cfg["difftori"]["base"] = "diffusion"
    rebased = to_dict(from_dict(PolicyConfig, cfg))
    assert "diffusion" in rebased and "mlp_bc" not in rebased
    with pytest.raises(ConfigError, match="policy.nonsense"):
        from_dict(PolicyConfig, {**cfg, "nonsense": {}}, prefix="policy.")
    with pytest.raises(ConfigError, match="unknown policy type"):
        from_dict(PolicyConfig, {**cfg, "type": "transformer"}, prefix="policy.")


def test_difftori_training_lowers_loss_below_the_base_proposal() -> None:
    """The learned cost must improve on a fixed (untrained) base proposal on a fixed batch."""
    policy, b = fitted("difftori", init_scale=1.0)
    policy.train()
    opt = torch.optim.Adam(policy.cost_parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss, info = policy(b)
        first = first or info
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert info["mse"] < 0.5 * info["base_mse"], info
    assert info["mse"] < first["mse"]


def test_normalizer_round_trip_and_constant_dimensions() -> None:
    norm = Normalizer({"x": 3})
    data = torch.tensor([[0.0, 5.0, 2.0], [1.0, 5.0, 4.0], [0.5, 5.0, 3.0]])
    norm.fit({"x": data})
    z = norm.normalize("x", data)
    assert z[:, 0].tolist() == [-1.0, 1.0, 0.0] and z[:, 1].abs().max() == 0
    torch.testing.assert_close(norm.unnormalize("x", z), data)
    with pytest.raises(ValueError, match="NaN"):
        norm.fit({"x": torch.tensor([[float("nan"), 0.0, 0.0]])})


def test_encoder_rejects_wrong_shapes_with_the_key_name() -> None:
    enc = ObservationEncoder({"agent_pos": [5]}, 2, SMALL)
    with pytest.raises(ValueError, match="agent_pos"):
        enc({"agent_pos": torch.zeros(3, 1, 5)})
    with pytest.raises(ValueError, match="subset"):
        ObservationEncoder({"depth": [4]}, 1, SMALL)


def test_ibc_learns_an_observation_to_action_map_that_dfo_recovers() -> None:
    spec = PolicySpec(obs_shapes={"agent_pos": [2]}, action_dim=1, action_low=[-1.0], action_high=[1.0])
    cfg = PolicyConfig(type="ibc", horizon=1, n_obs_steps=1, n_action_steps=1, encoder=SMALL)
    cfg.ibc.hidden, cfg.ibc.num_negatives, cfg.ibc.inference_samples = (64, 64), 64, 256
    torch.manual_seed(0)
    policy = make_policy(cfg, spec)
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(1024, 1, 2, generator=g) * 2 - 1
    action = 0.8 * obs[:, :, :1]  # a = 0.8 x0, x1 is a distractor
    policy.normalizer.fit({"action": action, "agent_pos": obs})
    test_obs = {"agent_pos": torch.rand(64, 1, 2, generator=g) * 2 - 1}
    target = 0.8 * test_obs["agent_pos"][:, :, :1]
    policy.eval()
    untrained = (policy.predict_action_chunk(test_obs) - target).abs().mean()
    policy.train()
    opt = torch.optim.Adam(policy.parameters(), lr=2e-3)
    for _ in range(300):
        idx = torch.randint(0, len(obs), (128,), generator=g)
        loss, info = policy({"obs": {"agent_pos": obs[idx]}, "action": action[idx]})
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()
    policy.reset()
    first = policy.predict_action_chunk(test_obs)
    error = (first - target).abs().mean()
    assert error < 0.1 < untrained, (float(error), float(untrained))
    assert info["accuracy"] > 0.2  # the demonstration picked out of 65 candidates
    policy.reset()  # reseeds the DFO sampler: an episode replays exactly
    torch.testing.assert_close(policy.predict_action_chunk(test_obs), first)
