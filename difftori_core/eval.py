"""Evaluate a model in simulation: success rate over seeded episodes, optional GIF.

    python -m difftori_core.eval <checkpoint|model dir|run dir> [--episodes 50] [--seed 1000]
        [--variant base] [--gif episode.gif] [--device cpu] [--backend torch|onnxruntime|auto]
        [key=value overrides of the env config]

Episode k uses seed `seed + k`, so two evaluations with the same arguments see the same
initial states (and a base-vs-DiffTORI comparison is paired). `--variant` picks how the policy
acts (DiffTORI: `difftori`, the default, or `base` for its base policy alone; `--no-refine` is
the same as `--variant base`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from difftori_core.artifacts import ArtifactError
from difftori_core.config import ConfigError, apply_overrides, from_dict, to_dict
from difftori_core.deploy.backends import backend_names
from difftori_core.deploy.runner import load_runner
from difftori_core.envs.metaworld import MetaWorldEnvConfig
from difftori_core.training.evaluation import run_episodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint, shipped model (models/<name>) or run directory")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--backend",
        choices=backend_names(),
        default="torch",
        help="onnxruntime runs the encoders and base network from the model's ONNX export",
    )
    parser.add_argument("--variant", default=None, help="how the policy acts (DiffTORI: difftori | base)")
    parser.add_argument("--no-refine", action="store_true", help="DiffTORI policies: run the base policy alone")
    parser.add_argument("--gif", type=Path, default=None, help="write the first episode as a GIF")
    parser.add_argument("--json", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="env config overrides, e.g. max_episode_steps=200")
    args = parser.parse_intermixed_args(argv)  # overrides may follow options
    torch.set_num_threads(args.threads)
    variant = "base" if args.no_refine else args.variant
    try:
        runner = load_runner(args.checkpoint, args.device, args.backend, variant)
        env = dict(runner.model.config.get("env") or {"task": runner.model.task})
        env_cfg = from_dict(MetaWorldEnvConfig, apply_overrides(env, args.overrides), prefix="env.")
    except (ArtifactError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = run_episodes(runner, env_cfg, args.episodes, args.seed, args.gif)
    out = {
        "checkpoint": str(runner.model.path),
        "task": env_cfg.task,
        "variant": runner.variant,
        "backend": runner.backend,
        **result.summary(),
    }
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps({**out, "per_episode": result.per_episode, "env": to_dict(env_cfg)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
