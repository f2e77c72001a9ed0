"""Train a policy, with periodic evaluation and exact resume.

    python -m difftori_core.train                       # embedded default: door-open-v3, DiffTORI on an MLP base
    python -m difftori_core.train task=push-v3 policy.type=mlp_bc
    python -m difftori_core.train --config path/to/train.yaml base_steps=500   # TrainConfig fields
    torchrun --nproc_per_node=2 -m difftori_core.train batch_size=64    # data-parallel (DDP)
    python -m difftori_core.train --config config/rl/reacher-easy.yaml planner=sampling   # model-based RL
    python -m difftori_core.train algo=rl task=cartpole-swingup steps=100000

`algo` picks the trainer: `il` (default; `TrainConfig`, `difftori_core.training.il`) or `rl`
(`RLTrainConfig`, `difftori_core.training.rl`), from the YAML file or an override. Re-running the
same command resumes the run from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from difftori_core.artifacts import ArtifactError
from difftori_core.config import ConfigError, load_config
from difftori_core.training.il import TrainConfig, Trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="YAML file (default: embedded defaults)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. policy.type=mlp_bc base_steps=500")
    args = parser.parse_intermixed_args(argv)
    try:
        if algo(args.config, args.overrides) == "rl":
            from difftori_core.training.rl import RLTrainConfig, RLTrainer

            result = RLTrainer(load_config(RLTrainConfig, args.config, args.overrides)).run()
            print(json.dumps({k: result[k] for k in ("task", "planner", "seed", "steps", "return")}))
            return 0
        result = Trainer(load_config(TrainConfig, args.config, args.overrides)).run()
    except (ConfigError, ArtifactError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result:
        print(json.dumps(result["variants"]))
    return 0


def algo(config: Path | None, overrides: list[str]) -> str:
    """`algo` from the overrides, else the YAML file, else "il"."""
    for item in reversed(overrides):
        if item.startswith("algo="):
            return item.split("=", 1)[1].strip()
    if config is not None:
        data = yaml.safe_load(Path(config).read_text()) or {}
        if isinstance(data, dict) and "algo" in data:
            return str(data["algo"])
    return "il"


if __name__ == "__main__":
    sys.exit(main())
