"""Closed-loop evaluation in simulation: success rate over seeded episodes, optional GIF.

Episode k uses seed `seed + k`, so two evaluations with the same arguments see the same initial
states (a base-vs-DiffTORI comparison is paired). The policy acts through its `PolicyRunner`,
the same code path as the ROS controller's tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from difftori_core.deploy.runner import PolicyRunner
from difftori_core.envs.metaworld import MetaWorldEnv, MetaWorldEnvConfig


@dataclass
class EvalResult:
    episodes: int
    successes: int
    success_rate: float
    mean_steps: float
    policy_ms_median: float
    policy_ms_p99: float
    per_episode: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "per_episode"}


def run_episodes(
    runner: PolicyRunner,
    env_config: MetaWorldEnvConfig,
    episodes: int,
    seed: int = 1000,
    gif: Path | None = None,
    progress: bool = True,
) -> EvalResult:
    """Closed-loop rollouts; an episode ends at success or at the env's step limit."""
    env = MetaWorldEnv(env_config, render_image=runner.processing.uses("image"))
    frames: list[np.ndarray] = []
    latencies: list[float] = []
    per_episode = []
    # Evaluation must not perturb the training RNG streams (exact resume).
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        for k in tqdm(range(episodes), desc="eval", disable=not progress, leave=False):
            raw = env.reset(seed=seed + k)
            runner.reset()
            success, steps = False, 0
            while steps < env_config.max_episode_steps:
                steps += 1
                action, status = runner.step(raw)
                latencies.append(status.policy_ms)
                raw, _, terminated, truncated, info = env.step(action)
                if gif is not None and k == 0:
                    frames.append(env.render_rgb())
                if info.get("success"):
                    success = True
                    break
                if terminated or truncated:
                    break
            per_episode.append({"seed": seed + k, "success": success, "steps": steps})
    np.random.set_state(np_state)
    env.close()
    if gif is not None and frames:
        write_gif(gif, frames)
    successes = sum(e["success"] for e in per_episode)
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    return EvalResult(
        episodes=episodes,
        successes=successes,
        success_rate=successes / max(episodes, 1),
        mean_steps=float(np.mean([e["steps"] for e in per_episode])) if per_episode else 0.0,
        policy_ms_median=float(np.median(lat)),
        policy_ms_p99=float(np.percentile(lat, 99)),
        per_episode=per_episode,
    )


def write_gif(path: Path, frames: list[np.ndarray], fps: int = 20) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames[::2]]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(2000 / fps), loop=0)
    return path


def run_dmc_episodes(runner: PolicyRunner, env_config: Any, episodes: int, seed: int = 100_000) -> list[dict[str, Any]]:
    """Seeded DeepMind Control episodes through the runner, from joint states (what the ROS
    robot publishes): [{"seed", "return", "steps"}, ...]."""
    from difftori_core.envs.dmc import DMCEnv

    out = []
    with DMCEnv(env_config) as env, torch.random.fork_rng(devices=[]):
        for k in range(episodes):
            raw = env.reset(seed=seed + k)
            runner.reset()
            total, steps, last = 0.0, 0, False
            while not last:
                action, _ = runner.step({"agent_pos": raw["qpos"], "joint_velocity": raw["qvel"]})
                raw, reward, last = env.step(action)
                total += reward
                steps += 1
            out.append({"seed": seed + k, "return": total, "steps": steps})
    return out
