"""Evaluate a policy in simulation: success rate over seeded episodes, optional GIF.

    python -m difftori_core.eval <checkpoint|model dir|run dir> [--episodes 50] [--seed 1000]
        [--no-refine] [--gif episode.gif] [--device cpu] [--backend torch|onnxruntime]
        [key=value overrides of the env config]

Episode k uses seed `seed + k`, so two evaluations with the same arguments see the same
initial states (and a base-vs-DiffTORI comparison is paired).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from difftori_core.config import apply_overrides, from_dict, to_dict
from difftori_core.envs.metaworld_env import MetaWorldEnv, MetaWorldEnvConfig
from difftori_core.policies import DiffTORIPolicy, Policy
from difftori_core.processing import ObservationProcessor, ProcessingSpec


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
    policy: Policy,
    env_config: MetaWorldEnvConfig,
    processing: ProcessingSpec,
    episodes: int,
    seed: int = 1000,
    gif: Path | None = None,
    progress: bool = True,
) -> EvalResult:
    """Closed-loop rollouts; an episode ends at success or at the env's step limit."""
    env = MetaWorldEnv(env_config, render_image=processing.uses("image"))
    processor = ObservationProcessor(processing)
    policy.eval()
    frames: list[np.ndarray] = []
    latencies: list[float] = []
    per_episode = []
    # Evaluation must not perturb the training RNG streams (exact resume).
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        for k in tqdm(range(episodes), desc="eval", disable=not progress, leave=False):
            raw = env.reset(seed=seed + k)
            policy.reset()
            success, steps = False, 0
            while steps < env_config.max_episode_steps:
                steps += 1
                obs = processor.process(raw)
                frame = {key: torch.as_tensor(obs[key]).unsqueeze(0) for key in policy.spec.obs_shapes}
                t0 = time.perf_counter()
                action = policy.select_action(frame)[0].cpu().numpy()
                latencies.append((time.perf_counter() - t0) * 1e3)
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


def main(argv: list[str] | None = None) -> int:
    from difftori_core.checkpoint import CheckpointError, load_policy

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint, shipped model (models/<name>) or run directory")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="onnxruntime runs the encoders and base network from the model's ONNX export",
    )
    parser.add_argument("--no-refine", action="store_true", help="DiffTORI policies: run the base policy alone")
    parser.add_argument("--gif", type=Path, default=None, help="write the first episode as a GIF")
    parser.add_argument("--json", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="env config overrides, e.g. max_episode_steps=200")
    args = parser.parse_intermixed_args(argv)  # overrides may follow options
    torch.set_num_threads(args.threads)
    try:
        policy, info = load_policy(args.checkpoint, args.device, args.backend)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if isinstance(policy, DiffTORIPolicy):
        policy.config.refine = not args.no_refine
    env_cfg = from_dict(MetaWorldEnvConfig, apply_overrides(dict(info["config"]["env"]), args.overrides))
    processing = from_dict(ProcessingSpec, info["spec"]["processing"])
    result = run_episodes(policy, env_cfg, processing, args.episodes, args.seed, args.gif)
    out = {
        "checkpoint": str(info["path"]),
        "task": env_cfg.task,
        "refine": not args.no_refine,
        "backend": args.backend,
        **result.summary(),
    }
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps({**out, "per_episode": result.per_episode, "env": to_dict(env_cfg)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
