"""Scripted-expert demonstrations in simulation, written as a dataset (CLI: `python -m difftori_core.collect`).

MetaWorld's scripted expert drives each episode; observations go through the same
`ObservationProcessor` the policy and the ROS node use, and the dataset records the env config
and the processing spec. Attempt k uses seed `seed + k`; only successful episodes are kept, each
cut `extra_steps` steps after its first success (a long idle tail would teach the policy to idle
and bloat the files), until `episodes` are kept or `max_attempts` are spent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from difftori_core.config import from_dict, to_dict
from difftori_core.data.dataset import DatasetError, DatasetWriter
from difftori_core.envs.metaworld import MetaWorldEnv, MetaWorldEnvConfig
from difftori_core.processing import ObservationProcessor, ProcessingSpec


class CollectError(DatasetError):
    """Not enough successful expert episodes to write the requested dataset."""


def env_metadata(env: MetaWorldEnv) -> dict[str, Any]:
    """What a consumer of the dataset needs to know about the robot and sensors."""
    return {
        **to_dict(env.config),
        "action_low": env.action_low.tolist(),
        "action_high": env.action_high.tolist(),
        "action_names": list(env.action_names),
        "joint_names": list(env.joint_names),
        "camera_intrinsics": env.camera.K.tolist(),
        "camera_pose": env.camera.pose.tolist(),
        "frame": "robot base (MetaWorld 'base' body)",
    }


def collect(
    task: str,
    episodes: int,
    out: str | Path,
    seed: int = 0,
    env: MetaWorldEnvConfig | None = None,
    processing: ProcessingSpec | None = None,
    extra_steps: int = 5,
    max_attempts: int | None = None,
    progress: bool = True,
) -> Path:
    """Run the expert until `episodes` successful episodes are recorded; write them to `out`.

    `env.task` is replaced by `task`. Raises `CollectError` if fewer than `episodes` succeed
    within `max_attempts` (default 3 * episodes) seeds.
    """
    if episodes < 1 or extra_steps < 0:
        raise ValueError(f"episodes must be positive and extra_steps non-negative, got {episodes}, {extra_steps}")
    env_cfg = from_dict(MetaWorldEnvConfig, {**to_dict(env or MetaWorldEnvConfig()), "task": task})
    processing = processing or ProcessingSpec()
    processor = ObservationProcessor(processing)
    max_attempts = max_attempts or 3 * episodes
    needs_rgb = processing.uses("image") or processing.point_rgb
    kept_seeds: list[int] = []
    discarded_seeds: list[int] = []
    timing = {"env_s": 0.0, "processing_s": 0.0, "expert_s": 0.0, "steps": 0}
    episode_s: list[float] = []
    with MetaWorldEnv(env_cfg, render_image=needs_rgb) as sim:
        writer = DatasetWriter(out, source=f"metaworld scripted expert ({task}), seeds from {seed}")
        bar = tqdm(total=episodes, desc=f"collect {task}", unit="ep", disable=not progress)
        for attempt in range(max_attempts):
            if len(writer) == episodes:
                break
            t_episode = time.perf_counter()
            t0 = time.perf_counter()
            raw = sim.reset(seed=seed + attempt)
            timing["env_s"] += time.perf_counter() - t0
            frames: list[dict[str, np.ndarray]] = []
            success_at: int | None = None
            while True:
                t0 = time.perf_counter()
                action = sim.expert_action(raw)
                t1 = time.perf_counter()
                frames.append({**processor.process(raw), "action": action})
                t2 = time.perf_counter()
                raw, _, _, truncated, info = sim.step(action)
                t3 = time.perf_counter()
                timing["expert_s"] += t1 - t0
                timing["processing_s"] += t2 - t1
                timing["env_s"] += t3 - t2
                timing["steps"] += 1
                if success_at is None and info["success"]:
                    success_at = len(frames)
                if (success_at is not None and len(frames) >= success_at + extra_steps) or truncated:
                    break
            episode_s.append(time.perf_counter() - t_episode)
            if success_at is None:
                discarded_seeds.append(seed + attempt)
            else:
                writer.add_episode({k: np.stack([f[k] for f in frames]) for k in frames[0]})
                kept_seeds.append(seed + attempt)
                bar.update(1)
            bar.set_postfix(discarded=len(discarded_seeds), frames=writer.num_frames)
        bar.close()
        if len(writer) < episodes:
            raise CollectError(
                f"{task}: only {len(writer)} of {episodes} expert episodes succeeded in {max_attempts} attempts "
                f"(seeds {seed}..{seed + max_attempts - 1}); raise max_attempts or env.max_episode_steps"
            )
        steps = max(timing["steps"], 1)
        ms = {
            "env_step_ms": 1e3 * timing["env_s"] / steps,
            "processing_ms": 1e3 * timing["processing_s"] / steps,
            "expert_ms": 1e3 * timing["expert_s"] / steps,
            "episode_s": float(np.mean(episode_s)),
        }
        writer.env = env_metadata(sim)
        writer.processing = processing.to_dict()
        writer.info = {
            "episodes_kept": len(kept_seeds),
            "episodes_discarded": len(discarded_seeds),
            "kept_seeds": kept_seeds,
            "discarded_seeds": discarded_seeds,
            "extra_steps": extra_steps,
            "timing": {k: round(v, 3) for k, v in ms.items()},
        }
        path = writer.close()
    tqdm.write(
        f"[collect] {task}: kept {len(kept_seeds)} episodes ({writer.num_frames} frames), discarded "
        f"{len(discarded_seeds)} failed ones -> {path}  [per step: env+render {ms['env_step_ms']:.1f} ms, "
        f"processing {ms['processing_ms']:.1f} ms, expert {ms['expert_ms']:.2f} ms; {ms['episode_s']:.2f} s/episode]"
    )
    return path
