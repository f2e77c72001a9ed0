"""Model-based RL: DeepMind Control envs, the objective's meaning, both planners, the losses,
failure isolation, the policy-gradient loss's reach, exact resume (replay buffer included), and
a pixel-based run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from difftori_core.config import load_config
from difftori_core.envs.dmc import DMCEnv, DMCEnvConfig
from difftori_core.nn.mlp import MLP
from difftori_core.rl.agent import Agent, AgentConfig
from difftori_core.rl.planners import SamplingConfig, predicted_return, rollout_prior
from difftori_core.rl.world_model import WorldModelConfig
from difftori_core.training.rl import RLTrainConfig, RLTrainer
from difftori_core.trajopt import RolloutResidual

TINY = [
    "algo=rl",
    "task=cartpole-swingup",
    "env.action_repeat=20",  # 50 agent steps per episode
    "seed_episodes=1",
    "warmup_steps=2000",
    "eval_every=3000",
    "eval_episodes=1",
    "final_eval_episodes=1",
    "checkpoint_every=1",
    "agent.batch_size=16",
    "agent.pg_batch=4",
    "agent.model.latent_dim=8",
    "agent.model.mlp_dim=16",
    "agent.model.enc_dim=16",
    "agent.model.num_channels=8",
    "agent.sampling.iterations=2",
    "agent.sampling.num_samples=16",
    "agent.sampling.num_elites=4",
    "agent.difftori.solver.max_iterations=3",
    "agent.difftori.solver.backward_iterations=2",
]


def tiny_agent(planner: str = "difftori", obs_dim: int = 5, action_dim: int = 2) -> Agent:
    cfg = AgentConfig(
        planner=planner,
        batch_size=8,
        pg_batch=4,
        model=WorldModelConfig(latent_dim=8, mlp_dim=16, enc_dim=16),
        sampling=SamplingConfig(iterations=2, num_samples=16, num_elites=4),
    )
    return Agent((obs_dim,), action_dim, cfg, seed=0)


def fake_batch(agent: Agent, n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    H, d = agent.cfg.horizon, agent.obs_shape[0]
    obs = torch.randn(H + 1, n, d, generator=g)
    action = torch.rand(H, n, agent.action_dim, generator=g) * 2 - 1
    reward = obs[:-1, :, 0] * action[..., 0]  # a learnable reward
    return {"obs": obs, "action": action, "reward": reward, "weight": torch.ones(n)}


def test_dmc_env_is_seeded_and_repeats_actions() -> None:
    cfg = DMCEnvConfig(task="reacher-easy")
    assert cfg.repeat == 4 and cfg.episode_steps == 250
    with DMCEnv(cfg) as a, DMCEnv(cfg) as b:
        oa, ob = a.reset(seed=7), b.reset(seed=7)
        np.testing.assert_array_equal(oa["state"], ob["state"])
        assert oa["state"].shape == (a.state_dim,) == (6,) and a.action_dim == 2
        assert a.joint_names == ["shoulder", "wrist"]
        _, ra, done = a.step(np.ones(2))
        assert not done and ra >= 0
        assert not np.array_equal(a.reset(seed=8)["state"], ob["state"])
    with pytest.raises(ValueError, match="unknown DeepMind Control task"):
        DMCEnv(DMCEnvConfig(task="cartpole-juggle"))


def test_pixel_observations_stack_frames() -> None:
    with DMCEnv(DMCEnvConfig(task="cartpole-swingup", from_pixels=True, image_size=32)) as env:
        obs = env.reset(seed=0)
        assert obs["pixels"].shape == (9, 32, 32) and obs["pixels"].dtype == np.uint8
        obs2, _, _ = env.step(np.zeros(1))
        np.testing.assert_array_equal(obs2["pixels"][:6], obs["pixels"][3:])  # the stack shifts by a frame


def test_rollout_objective_keeps_maximizing_at_any_return_scale() -> None:
    """Per-step residuals are decreasing in every score, whatever its size (a linear
    offset - score objective pushes a score down once it passes the offset)."""
    torch.manual_seed(0)
    res = RolloutResidual(
        MLP(6, (16,), 4, act="elu"), MLP(6, (16,), 1, act="elu"), 3, 2,
        value=MLP(6, (16,), 1, act="elu"), policy=MLP(4, (16,), 2, out_act="tanh"),
    )
    for scale in (1.0, 100.0, 1e4):
        s = torch.full((5, 4), scale)
        anchor = s - 3.0 * scale  # scores far above their anchors
        d = res._dcombine(s, anchor)
        assert (d <= 0).all() and (res._combine(s, anchor) >= 0).all()
        assert (res._combine(s + 1.0, anchor) <= res._combine(s, anchor)).all()


def test_difftori_planner_raises_predicted_return_over_its_initial_value() -> None:
    agent = tiny_agent()
    z = agent.model.encode(torch.randn(6, 5))
    planner = agent.difftori
    init = planner.initial(z)
    with torch.no_grad():
        sol, failed, iters = planner.solve(z, init)
        before = predicted_return(agent.model, z, init, agent.cfg.discount)
        after = predicted_return(agent.model, z, sol, agent.cfg.discount)
    assert not failed.any() and (iters > 0).all()
    assert (after > before).float().mean() >= 0.8, (before, after)


def test_both_planners_act_within_bounds_and_the_losses_decrease() -> None:
    agent = tiny_agent()
    for planner in ("sampling", "difftori"):
        plan = agent.act(torch.randn(5), explore=True, planner=planner)
        assert plan.action.shape == (2,) and plan.action.abs().max() <= 1 and not plan.failed
        assert plan.sequence.shape == (1, agent.cfg.horizon, 2)
    batch = fake_batch(agent)
    first = None
    for _ in range(60):
        info, priority = agent.update(batch, difftori_weight=0.0)
        first = first or info
    assert priority.shape == (8,) and (priority >= 0).all()
    for key in ("consistency_loss", "reward_loss", "value_loss", "critic_loss"):
        assert info[key] < first[key], (key, first[key], info[key])
    info, _ = agent.update(batch)  # with DiffTORI's loss
    assert info["solver_failed"] == 0 and np.isfinite(info["difftori_loss"])


def test_following_the_gradient_through_the_optimizer_lowers_the_difftori_loss() -> None:
    """The gradient back-propagated through the solve is a descent direction of -Q_s(o, a*):
    training the model on it alone makes the optimizer pick actions the raw critic rates higher."""
    agent = tiny_agent()
    obs = torch.randn(16, 5)
    optim = torch.optim.Adam(agent.model.model_parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, _ = agent.difftori_loss(obs)
        optim.zero_grad()
        loss.backward(inputs=agent.model.model_parameters())
        optim.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.05 * abs(losses[0]), losses


def test_policy_gradient_schedule_starts_late_ramps_and_weights_the_loss() -> None:
    cfg = RLTrainConfig(warmup_steps=1000, pg_start_steps=4000, pg_ramp_steps=2000)
    assert [cfg.difftori_weight(s) for s in (0, 3999, 4000, 5000, 6000, 9000)] == [0, 0, 0, 0.5, 1, 1]
    assert RLTrainConfig(warmup_steps=1000, pg_ramp_steps=0).difftori_weight(1000) == 1.0  # start: warm-up's end
    with pytest.raises(ValueError, match="pg_ramp_steps"):
        RLTrainConfig(pg_ramp_steps=-1)
    # The weight scales DiffTORI's loss in the step: weight 0 leaves it out, 0.5 halves its gradient.
    batch = fake_batch(agent := tiny_agent())
    assert "difftori_loss" not in agent.update(batch, difftori_weight=0.0)[0]
    grads = []
    for weight in (1.0, 0.5):
        torch.manual_seed(0)  # the same initial weights for both
        agent = tiny_agent()
        agent.cfg.consistency_coef = agent.cfg.reward_coef = agent.cfg.value_coef = 0.0
        agent.cfg.grad_clip = 1e9
        captured = {}
        agent.model_optim.step = lambda captured=captured, agent=agent: captured.update(
            g=agent.model.reward.linears[0].weight.grad.clone()
        )
        info, _ = agent.update(batch, difftori_weight=weight)
        assert info["difftori_weight"] == weight
        grads.append(captured["g"])
    torch.testing.assert_close(grads[1], 0.5 * grads[0])


def test_a_failed_solve_falls_back_to_the_prior_and_is_reported() -> None:
    agent = tiny_agent()
    obs = torch.randn(5)
    with torch.no_grad():
        agent.model.dynamics.linears[0].weight[0, 0] = float("nan")  # the rollout turns NaN
    plan = agent.act(obs, explore=False, planner="difftori")
    assert plan.failed and torch.isfinite(plan.action).all()
    z = agent.model.encode(obs.unsqueeze(0))
    torch.testing.assert_close(plan.action, agent.model.policy(z)[0])  # the prior's first action
    # In a batch, only the poisoned sample fails (its NaN never reaches the others).
    agent2 = tiny_agent()
    z = agent2.model.encode(torch.randn(4, 5))
    z[1, 0] = float("nan")
    sol, failed, _ = agent2.difftori.solve(z, rollout_prior(agent2.model, z, agent2.cfg.horizon).nan_to_num())
    assert failed.tolist() == [False, True, False, False] and torch.isfinite(sol[~failed]).all()


def test_policy_gradient_loss_reaches_the_model_and_not_the_raw_critic_or_the_prior() -> None:
    agent = tiny_agent()
    obs = torch.randn(4, 5)
    loss, info = agent.difftori_loss(obs)
    assert info["solver_failed"] == 0
    m = agent.model
    reached = {
        name: torch.autograd.grad(loss, list(mod.parameters()), retain_graph=True, allow_unused=True)
        for name, mod in {
            "encoder": m.encoder, "dynamics": m.dynamics, "reward": m.reward, "q1": m.q1, "q2": m.q2,
        }.items()
    }
    for name, grads in reached.items():
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"no gradient reaches {name}"
    # The update back-propagates only into h, d, R, Q (as Agent.update does): Q_s and pi get none.
    loss.backward(inputs=m.model_parameters())
    assert all(p.grad is None for p in agent.critic.parameters())
    assert all(p.grad is None for p in m.pi.parameters())
    names = {id(p) for p in m.model_parameters()}
    assert not names & {id(p) for p in m.pi.parameters()}


def run_config(tmp_path: Path, name: str, *extra: str) -> RLTrainConfig:
    return load_config(RLTrainConfig, None, [*TINY, f"output_dir={tmp_path / name}", *extra])


def test_rl_run_resumes_exactly_including_the_replay_buffer(tmp_path: Path) -> None:
    straight = RLTrainer(run_config(tmp_path, "straight", "steps=4000"))  # 4 episodes
    straight.run()
    first = RLTrainer(run_config(tmp_path, "resumed", "steps=2000"))
    first.run()
    resumed = RLTrainer(run_config(tmp_path, "resumed", "steps=4000"))
    resumed.run()
    assert resumed.episode == straight.episode == 4
    a = load_file(straight.ckpt_dir / "episode_00004" / "model.safetensors")
    b = load_file(resumed.ckpt_dir / "episode_00004" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    for field in ("obs", "action", "reward", "priority"):
        np.testing.assert_array_equal(getattr(straight.buffer, field), getattr(resumed.buffer, field))
    rows = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [1000, 2000, 3000, 4000]
    final = json.loads((tmp_path / "resumed" / "final_eval.json").read_text())
    assert final["planner"] == "difftori" and len(final["per_episode"]) == 1
    assert (tmp_path / "resumed" / "returns.png").stat().st_size > 1000
    with pytest.raises(Exception, match="differs from the requested run"):
        RLTrainer(run_config(tmp_path, "resumed", "steps=5000", "agent.model.mlp_dim=32")).run()


def test_pixel_agent_trains_end_to_end(tmp_path: Path) -> None:
    cfg = run_config(tmp_path, "pixels", "steps=2000", "env.from_pixels=true", "env.image_size=64", "planner=sampling")
    result = RLTrainer(cfg).run()
    assert result["return"] is not None and np.isfinite(result["return"])
    rows = [json.loads(x) for x in (tmp_path / "pixels" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["acting"] == "sampling" and np.isfinite(rows[-1]["consistency_loss"])


def test_joint_state_observations_are_what_encoders_give() -> None:
    """observation=joints: features from joint positions and velocities alone (unlimited hinges
    as cos/sin), so an agent trained on them can run from a JointState message."""
    from difftori_core.envs.dmc import joint_features

    with DMCEnv(DMCEnvConfig(task="cartpole-swingup", observation="joints")) as env:
        assert env.joint_wrap == [False, True] and env.obs_shape == (5,)  # x, cos, sin, 2 velocities
        obs = env.reset(seed=3)
        for _ in range(3):
            obs, _, _ = env.step(np.array([0.5]))
        expected = joint_features(obs["qpos"], obs["qvel"], env.joint_wrap, env.joint_drop)
        np.testing.assert_allclose(obs["state"], expected)
        x, c, s = obs["state"][:3]
        assert x == pytest.approx(obs["qpos"][0]) and c**2 + s**2 == pytest.approx(1.0, abs=1e-6)
    with DMCEnv(DMCEnvConfig(task="cheetah-run", observation="joints")) as env:
        assert env.obs_shape == (18,)  # 8 positions (rootx dropped, as DMC does), rooty as cos/sin, 9 velocities


def test_a_joint_state_agent_packages_as_a_model_and_runs_through_the_runner(tmp_path: Path) -> None:
    """An RL run on joint-state observations becomes a model directory that load_runner runs
    from raw joint positions / velocities, with the same greedy return as the trainer's own
    evaluation, through either planner."""
    from difftori_core.deploy.runner import load_runner
    from difftori_core.training.evaluation import run_dmc_episodes
    from difftori_core.training.rl import package_model

    trainer = RLTrainer(run_config(tmp_path, "joints", "steps=2000", "env.observation=joints"))
    trainer.run()
    model = package_model(tmp_path / "joints", tmp_path / "model")
    runner = load_runner(model)
    assert runner.policy.type_name == "tdmpc" and runner.spec.obs_shapes == {"agent_pos": [2], "joint_velocity": [2]}
    via_runner = run_dmc_episodes(runner, trainer.cfg.env, 1, seed=trainer.cfg.eval_seed)
    direct = trainer.evaluate(1)
    assert via_runner[0]["return"] == pytest.approx(direct[0]["return"], rel=1e-6)
    sampling = run_dmc_episodes(runner.with_variant("sampling"), trainer.cfg.env, 1, seed=trainer.cfg.eval_seed)
    assert np.isfinite(sampling[0]["return"]) and sampling[0]["steps"] == 50
    RLTrainer(run_config(tmp_path, "task_obs", "steps=1000")).run()  # the task's own observation
    with pytest.raises(Exception, match="'env.observation' must be 'joints'"):
        package_model(tmp_path / "task_obs", tmp_path / "x")
    with pytest.raises(Exception, match="not an RL run directory"):
        package_model(tmp_path / "nowhere", tmp_path / "y")
