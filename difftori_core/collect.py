"""Collect scripted-expert demonstrations in simulation into a dataset.

    python -m difftori_core.collect --task reach-v3 --episodes 10 --out data/reach-v3 [--seed 0]
        [--extra-steps 5] [--processing.num_points 512] [env.camera=corner2 ...]

MetaWorld's scripted expert drives each episode; observations go through the same
`ObservationProcessor` the policy and the ROS node use, and the dataset records the env config
and the processing spec. Attempt k uses seed `seed + k`; only successful episodes are kept, each
cut `extra_steps` steps after its first success (a long idle tail would teach the policy to idle
and bloat the files), until `episodes` are kept or `max_attempts` are spent. Overrides of the
`env.*` / `processing.*` dataclass fields are accepted as `key=value` or `--key value`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from difftori_core.config import ConfigError, apply_overrides, from_dict, to_dict
from difftori_core.data.dataset import DatasetError, DatasetWriter
from difftori_core.envs.metaworld_env import MetaWorldEnv, MetaWorldEnvConfig
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


def split_dashed_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Pull `--processing.num_points 256` / `--env.camera=corner3` out of `argv` as
    `processing.num_points=256` overrides (a dotted name is never one of the CLI's own options)."""
    rest: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        item = argv[i]
        name = item.split("=", 1)[0]
        if item.startswith("--") and "." in name:
            if "=" in item:
                overrides.append(item[2:])
                i += 1
                continue
            if i + 1 >= len(argv):
                raise ConfigError(f"{item} needs a value")
            overrides.append(f"{name[2:]}={argv[i + 1]}")
            i += 2
            continue
        rest.append(item)
        i += 1
    return rest, overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default=MetaWorldEnvConfig.task, help="MetaWorld v3 task (default %(default)s)")
    parser.add_argument("--episodes", type=int, default=10, help="successful episodes to keep")
    parser.add_argument("--out", type=Path, default=None, help="dataset directory (default data/<task>)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first attempt")
    parser.add_argument("--extra-steps", type=int, default=5, help="steps recorded after the first success")
    parser.add_argument("--max-attempts", type=int, default=None, help="default: 3 x episodes")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="env.* / processing.* overrides, e.g. processing.num_points=256")
    try:
        argv, dashed = split_dashed_overrides(list(sys.argv[1:] if argv is None else argv))
    except ConfigError as err:
        parser.error(str(err))
    args = parser.parse_args(argv)
    overrides = [*args.overrides, *dashed]
    try:
        sections: dict[str, Any] = {"env": to_dict(MetaWorldEnvConfig()), "processing": ProcessingSpec().to_dict()}
        apply_overrides(sections, overrides)
        unknown = sorted(set(sections) - {"env", "processing"})
        if unknown:
            raise ConfigError(f"unknown override section(s) {unknown}; use env.* or processing.*")
        sections["env"]["task"] = args.task
        env = from_dict(MetaWorldEnvConfig, sections["env"], prefix="env.")
        processing = from_dict(ProcessingSpec, sections["processing"], prefix="processing.")
        collect(
            args.task,
            args.episodes,
            args.out or Path("data") / args.task,
            args.seed,
            env,
            processing,
            extra_steps=args.extra_steps,
            max_attempts=args.max_attempts,
            progress=not args.no_progress,
        )
    except (ConfigError, ValueError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
