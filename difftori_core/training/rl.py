"""Model-based RL on DeepMind Control: TD-MPC with the sampling planner or DiffTORI, resumable.

    python -m difftori_core.train algo=rl task=cartpole-swingup planner=difftori steps=100000
    python -m difftori_core.train --config config/rl/reacher-easy.yaml planner=sampling seed=1

`steps` counts simulator steps (TD-MPC's convention: agent steps x action repeat). Episodes are
collected whole; the first `seed_episodes` act uniformly at random, then the planner acts (with
`planner=difftori`, the sampling planner until `warmup_steps`, and DiffTORI's policy-gradient
loss joins the updates from then on). After each episode the agent makes one update per agent
step collected (TD-MPC's schedule; the first time, one per seed step). A failed solve falls back
to the prior's action and is counted; it never stops training.

A run directory holds `checkpoints/` (atomic, at episode ends: weights, optimizers, generators,
replay buffer, history; `latest` pointer), `tb/`, `metrics.jsonl`, `returns.png` and
`final_eval.json` (`{"task", "planner", "seed", "steps", "return", "per_episode": [...]}`).
Re-running the same command resumes from the latest checkpoint and continues exactly.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from difftori_core.artifacts import (
    CONFIG_FILE,
    LATEST,
    MODEL_FILE,
    SPEC_FILE,
    STATE_FILE,
    ArtifactError,
    atomic_directory,
    read_json,
    read_yaml,
    sha256,
    verify_file,
)
from difftori_core.checkpoint import mark_latest, rng_state, set_rng_state
from difftori_core.config import to_dict
from difftori_core.data.replay import ReplayBuffer
from difftori_core.envs.dmc import DMCEnv, DMCEnvConfig
from difftori_core.rl.agent import Agent, AgentConfig

FORMAT = "difftori-rl-checkpoint"
VERSION = 1


class RLCheckpointError(ArtifactError):
    """An RL checkpoint is missing, corrupt or does not match the run."""


@dataclass
class RLTrainConfig:
    """Attributes (YAML and `key=value` overrides):
    algo: "rl" selects this trainer in `python -m difftori_core.train`.
    task: DeepMind Control task; planner: difftori | sampling (also sets agent.planner).
    steps: simulator steps (agent steps x action repeat).
    seed_episodes: episodes of uniform random actions before planning starts.
    warmup_steps: DiffTORI only: simulator steps acting with the sampling planner.
    pg_start_steps / pg_ramp_steps: DiffTORI only: the policy-gradient loss joins the updates at
        `pg_start_steps` (-1: at `warmup_steps`) and its weight rises linearly from 0 to
        `agent.difftori_coef` over the next `pg_ramp_steps` simulator steps (0: at once; default
        30k, chosen on the validation task: benchmarks/mbrl_validation.py).
    eval_every: simulator steps between evaluations; eval_episodes / final_eval_episodes.
    checkpoint_every: episodes between checkpoints.
    """

    algo: str = "rl"
    task: str = "cartpole-swingup"
    planner: str = "difftori"
    steps: int = 100_000
    seed: int = 0
    device: str = "auto"  # auto: cuda when available
    threads: int = 1
    seed_episodes: int = 5
    warmup_steps: int = 6000
    pg_start_steps: int = -1
    pg_ramp_steps: int = 30_000  # chosen on cartpole-swingup (benchmarks/results/mbrl/validation)
    eval_every: int = 10_000
    eval_episodes: int = 5
    final_eval_episodes: int = 10
    eval_seed: int = 100_000
    checkpoint_every: int = 5
    keep_checkpoints: int = 2
    updates_per_step: float = 1.0  # gradient steps per agent step collected (TD-MPC: 1)
    output_dir: str = ""
    env: DMCEnvConfig = field(default_factory=DMCEnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)

    def __post_init__(self) -> None:
        self.env.task = self.task
        self.agent.planner = self.planner
        self.agent.__post_init__()
        if self.algo != "rl":
            raise ValueError(f"algo must be 'rl' for this trainer, got {self.algo!r}")
        if self.steps < 1 or self.eval_every < 1 or self.checkpoint_every < 1 or self.seed_episodes < 1:
            raise ValueError("steps, eval_every, checkpoint_every and seed_episodes must be positive")
        if self.updates_per_step <= 0:
            raise ValueError(f"updates_per_step must be positive, got {self.updates_per_step}")
        if self.pg_start_steps < -1 or self.pg_ramp_steps < 0:
            raise ValueError(
                f"pg_start_steps must be >= 0 (or -1: at warmup_steps) and pg_ramp_steps >= 0, "
                f"got {self.pg_start_steps} and {self.pg_ramp_steps}"
            )

    def difftori_weight(self, env_steps: int) -> float:
        """The policy-gradient loss's schedule: 0 before its start, then a linear ramp to 1."""
        start = self.warmup_steps if self.pg_start_steps < 0 else self.pg_start_steps
        if env_steps < start:
            return 0.0
        if self.pg_ramp_steps == 0:
            return 1.0
        return min(1.0, (env_steps - start) / self.pg_ramp_steps)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir or f"runs/rl/{self.task}-{self.planner}-s{self.seed}")


class RLTrainer:
    def __init__(self, cfg: RLTrainConfig) -> None:
        self.cfg = cfg
        torch.set_num_threads(max(1, cfg.threads))
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.env = DMCEnv(cfg.env, seed=cfg.seed)
        self.eval_env = DMCEnv(cfg.env, seed=cfg.seed)
        self.L = cfg.env.episode_steps
        self.obs_shape = self.env.obs_shape
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
        )
        self.agent = Agent(self.obs_shape, self.env.action_dim, cfg.agent, seed=cfg.seed).to(self.device)
        episodes = -(-cfg.steps // (self.L * cfg.env.repeat))
        self.buffer = ReplayBuffer(
            self.obs_shape, self.env.action_dim, self.L, max(episodes, 1), cfg.agent.horizon,
            obs_dtype=np.uint8 if cfg.env.from_pixels else np.float32, seed=cfg.seed,
        )
        self.generator = torch.Generator().manual_seed(cfg.seed + 3)  # seed-episode actions
        self.episode = 0
        self.history: list[dict[str, Any]] = []
        self.run_dir = cfg.run_dir
        self.ckpt_dir = self.run_dir / "checkpoints"

    @property
    def env_steps(self) -> int:
        return self.episode * self.L * self.cfg.env.repeat

    # -- episodes ------------------------------------------------------------------------

    def _obs_tensor(self, obs: dict[str, np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(self.env.observation(obs).copy())

    def collect_episode(self) -> dict[str, float]:
        cfg, env, agent = self.cfg, self.env, self.agent
        raw = env.reset(seed=cfg.seed * 100_000 + self.episode)
        agent.reset()
        obs, actions, rewards = [env.observation(raw)], [], []
        random_actions = self.episode < cfg.seed_episodes
        planner = cfg.planner if self.env_steps >= cfg.warmup_steps else "sampling"
        plan_ms, failures, iters = [], 0, []
        for _ in range(self.L):
            if random_actions:
                a = torch.rand(env.action_dim, generator=self.generator) * 2 - 1
            else:
                t0 = time.perf_counter()
                plan = agent.act(self._obs_tensor(raw), explore=True, planner=planner)
                plan_ms.append((time.perf_counter() - t0) * 1e3)
                failures += plan.failed
                iters.append(plan.iterations)
                a = plan.action
            a = a.cpu().numpy()
            raw, r, _ = env.step(a)
            obs.append(env.observation(raw))
            actions.append(a)
            rewards.append(r)
        self.buffer.add_episode(np.stack(obs), np.stack(actions), np.asarray(rewards, np.float32))
        return {
            "episode_return": float(np.sum(rewards)),
            "acting": "random" if random_actions else planner,
            "plan_ms": float(np.mean(plan_ms)) if plan_ms else 0.0,
            "solver_failures": float(failures),
        }

    def train_updates(self) -> dict[str, float]:
        cfg = self.cfg
        if self.episode < cfg.seed_episodes:
            return {}
        n = cfg.seed_episodes * self.L if self.episode == cfg.seed_episodes else self.L
        n = max(1, round(n * cfg.updates_per_step))
        weight = cfg.difftori_weight(self.env_steps)
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        for _ in range(n):
            batch = self.buffer.sample(cfg.agent.batch_size, self.device)
            info, priority = self.agent.update(batch, difftori_weight=weight)
            self.buffer.update_priorities(batch["index"], priority)
            for k, v in info.items():
                sums[k] = sums.get(k, 0.0) + v
        out = {k: v / n for k, v in sums.items()}
        out["update_ms"] = (time.perf_counter() - t0) * 1e3 / n
        out["updates"] = float(n)
        return out

    def evaluate(self, episodes: int) -> list[dict[str, Any]]:
        """Greedy episodes (no exploration noise) with the configured planner, seeded. The
        planners' generators are restored afterwards: evaluating never changes training (a run
        that stops at step N, evaluates and resumes equals one that never stopped)."""
        generators = self.agent.generator_states()
        out = []
        for k in range(episodes):
            seed = self.cfg.eval_seed + k
            raw = self.eval_env.reset(seed=seed)
            self.agent.reset()
            total = 0.0
            for _ in range(self.L):
                plan = self.agent.act(torch.from_numpy(self.eval_env.observation(raw).copy()), explore=False)
                raw, r, _ = self.eval_env.step(plan.action.cpu().numpy())
                total += r
            out.append({"seed": seed, "return": total})
        self.agent.load_generator_states(generators)
        return out

    # -- checkpoints ---------------------------------------------------------------------

    def save(self) -> Path:
        name = f"episode_{self.episode:05d}"
        with atomic_directory(self.ckpt_dir / name) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.agent.state_dict().items()}
            save_file(state, tmp / MODEL_FILE)
            import yaml

            (tmp / CONFIG_FILE).write_text(yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
            spec = {
                "format": FORMAT,
                "version": VERSION,
                "task": self.cfg.task,
                "planner": self.cfg.planner,
                "obs_shape": list(self.obs_shape),
                "action_dim": self.env.action_dim,
                "episode": self.episode,
                "env_steps": self.env_steps,
                "weights_sha256": sha256(tmp / MODEL_FILE),
            }
            (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2))
            torch.save(
                {
                    "episode": self.episode,
                    "updates": self.agent.updates,
                    "optimizers": self.agent.optimizer_state(),
                    "generators": {**self.agent.generator_states(), "trainer": self.generator.get_state()},
                    "rng": rng_state(),
                    "replay": self.buffer.state(),
                    "history": json.dumps(self.history),
                },
                tmp / STATE_FILE,
            )
        mark_latest(self.ckpt_dir, name, keep=self.cfg.keep_checkpoints, pattern="episode_*")
        return self.ckpt_dir / name

    def try_resume(self) -> bool:
        if not (self.ckpt_dir / LATEST).is_file():
            return False
        path = self.ckpt_dir / (self.ckpt_dir / LATEST).read_text().strip()
        spec = read_json(path / SPEC_FILE, RLCheckpointError)
        if spec.get("format") != FORMAT or spec.get("version") != VERSION:
            raise RLCheckpointError(f"{path / SPEC_FILE}: not a {FORMAT} v{VERSION} checkpoint")
        saved = read_yaml(path / CONFIG_FILE, RLCheckpointError)
        mine = json.loads(json.dumps(to_dict(self.cfg)))
        for key in ("task", "planner", "seed", "env", "agent"):
            if json.loads(json.dumps(saved.get(key))) != mine[key]:
                raise RLCheckpointError(
                    f"{path / CONFIG_FILE}: field {key!r} differs from the requested run; use a new output_dir"
                )
        verify_file(path / MODEL_FILE, spec.get("weights_sha256"), RLCheckpointError)
        self.agent.load_state_dict(load_file(path / MODEL_FILE, device=str(self.device)))
        try:
            state = torch.load(path / STATE_FILE, weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises several types for a corrupt file
            raise RLCheckpointError(f"{path / STATE_FILE}: unreadable or corrupt ({err})") from err
        self.agent.load_optimizer_state(state["optimizers"])
        gens = state["generators"]
        self.generator.set_state(gens.pop("trainer"))
        self.agent.load_generator_states(gens)
        set_rng_state(state["rng"])
        self.buffer.load_state(state["replay"])
        self.agent.updates = int(state["updates"])
        self.episode = int(state["episode"])
        self.history = json.loads(state["history"])
        tqdm.write(f"[train rl] resumed from {path} at {self.env_steps} steps")
        return True

    # -- loop ----------------------------------------------------------------------------

    def _open_logs(self) -> tuple[Any, Any]:
        from torch.utils.tensorboard import SummaryWriter

        with open(self.run_dir / "metrics.jsonl", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in self.history)
        shutil.rmtree(self.run_dir / "tb", ignore_errors=True)
        writer = SummaryWriter(str(self.run_dir / "tb"))
        for row in self.history:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "env_steps":
                    writer.add_scalar(k, v, row["env_steps"])
        return (self.run_dir / "metrics.jsonl").open("a"), writer

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.try_resume()
        metrics, writer = self._open_logs()
        bar = tqdm(total=cfg.steps, initial=self.env_steps, desc=f"rl {cfg.task} {cfg.planner}", unit="step")
        t_start = time.time()
        while self.env_steps < cfg.steps:
            before = self.env_steps
            row: dict[str, Any] = self.collect_episode()
            self.episode += 1
            row.update(self.train_updates())
            row["env_steps"] = self.env_steps
            row["elapsed_s"] = round(time.time() - t_start, 1)
            if before // cfg.eval_every != self.env_steps // cfg.eval_every or self.env_steps >= cfg.steps:
                results = self.evaluate(cfg.eval_episodes)
                row["eval_return"] = float(np.mean([r["return"] for r in results]))
                tqdm.write(f"[train rl] {self.env_steps} steps: eval return {row['eval_return']:.1f}")
            self.history.append(row)
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "env_steps":
                    writer.add_scalar(k, v, self.env_steps)
            bar.update(self.env_steps - before)
            bar.set_postfix(ret=f"{row['episode_return']:.0f}", plan_ms=f"{row['plan_ms']:.1f}")
            if self.episode % cfg.checkpoint_every == 0 or self.env_steps >= cfg.steps:
                self.save()
        bar.close()
        metrics.close()
        writer.close()
        final = self.final_evaluation()
        self.plot()
        return final

    def final_evaluation(self) -> dict[str, Any]:
        results = self.evaluate(self.cfg.final_eval_episodes) if self.cfg.final_eval_episodes > 0 else []
        out = {
            "task": self.cfg.task,
            "planner": self.cfg.planner,
            "seed": self.cfg.seed,
            "steps": self.env_steps,
            "return": float(np.mean([r["return"] for r in results])) if results else None,
            "per_episode": results,
        }
        (self.run_dir / "final_eval.json").write_text(json.dumps(out, indent=2))
        tqdm.write(f"[train rl] final evaluation: return {out['return']}")
        return out

    def plot(self) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        rows = self.history
        steps = [r["env_steps"] for r in rows]
        ax.plot(steps, [r["episode_return"] for r in rows], alpha=0.4, label="training episodes")
        ev = [r for r in rows if "eval_return" in r]
        ax.plot([r["env_steps"] for r in ev], [r["eval_return"] for r in ev], "o-", label="evaluation")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("return")
        ax.set_title(f"{self.cfg.task} / {self.cfg.planner} / seed {self.cfg.seed}")
        ax.legend()
        fig.tight_layout()
        path = self.run_dir / "returns.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def package_model(run: str | Path, out: str | Path) -> Path:
    """The run's latest agent as a deployable model directory (policy type "tdmpc"): loads with
    `deploy.runner.load_runner`, runs in the ROS controller from JointState. The run must have
    been trained on joint-state observations (`env.observation=joints`)."""
    from difftori_core.checkpoint import save_checkpoint
    from difftori_core.policies import PolicyConfig, PolicySpec
    from difftori_core.policies.tdmpc import TDMPCPolicy, TDMPCPolicyConfig
    from difftori_core.processing import ProcessingSpec

    run = Path(run)
    ckpt = run / "checkpoints"
    if not (ckpt / LATEST).is_file():
        raise RLCheckpointError(f"{run}: no checkpoints/{LATEST} (not an RL run directory)")
    path = ckpt / (ckpt / LATEST).read_text().strip()
    from difftori_core.config import from_dict

    cfg = from_dict(RLTrainConfig, read_yaml(path / CONFIG_FILE, RLCheckpointError))
    if cfg.env.observation != "joints" or cfg.env.from_pixels:
        raise RLCheckpointError(
            f"{path / CONFIG_FILE}: field 'env.observation' must be 'joints' to run from joint states"
        )
    with DMCEnv(cfg.env) as env:
        spec = PolicySpec(
            obs_shapes={"agent_pos": [len(env.joint_names)], "joint_velocity": [len(env.joint_names)]},
            action_dim=env.action_dim,
            action_low=env.action_low.tolist(),
            action_high=env.action_high.tolist(),
            action_names=list(env.actuator_names),
        )
        section = TDMPCPolicyConfig(agent=cfg.agent, joint_wrap=env.joint_wrap, joint_drop=env.joint_drop)
        env_meta = {
            "kind": "dmc", "task": cfg.task, "joint_names": list(env.joint_names),
            "actuator_names": list(env.actuator_names), "action_repeat": cfg.env.repeat,
            "control_period_s": float(env._env.physics.model.opt.timestep) * cfg.env.repeat,
        }
    policy_cfg = PolicyConfig(type="tdmpc", horizon=cfg.agent.horizon, n_obs_steps=1, n_action_steps=1)
    policy_cfg.sections["tdmpc"] = section
    policy = TDMPCPolicy(spec, section)
    rl_spec = read_json(path / SPEC_FILE, RLCheckpointError)
    verify_file(path / MODEL_FILE, rl_spec.get("weights_sha256"), RLCheckpointError)
    policy.agent.load_state_dict(load_file(path / MODEL_FILE))
    processing = ProcessingSpec(keys=("agent_pos", "joint_velocity"))
    config = {"policy": to_dict(policy_cfg), "task": cfg.task, "env": to_dict(cfg.env), "rl": to_dict(cfg)}
    extra = {
        "task": cfg.task, "processing": to_dict(processing), "env": env_meta, "step": rl_spec["env_steps"],
        "dataset": str(run),
    }
    return save_checkpoint(Path(out), policy, config, extra)
