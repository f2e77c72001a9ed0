"""Train a policy, with periodic evaluation and exact resume.

    python -m difftori_core.train                       # embedded default: door-open-v3, DiffTORI on an MLP base
    python -m difftori_core.train task=push-v3 policy.type=mlp_bc
    python -m difftori_core.train --config path/to/train.yaml base_steps=500   # TrainConfig fields
    torchrun --nproc_per_node=2 -m difftori_core.train batch_size=64    # data-parallel (DDP)

Settings are the fields of `TrainConfig` (`difftori_core.training.il`), from a YAML file and
`key=value` overrides. Re-running the same command resumes the run from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from difftori_core.artifacts import ArtifactError
from difftori_core.config import ConfigError, load_config
from difftori_core.training.il import TrainConfig, Trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="YAML file (default: embedded defaults)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. policy.type=mlp_bc base_steps=500")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        result = Trainer(cfg).run()
    except (ConfigError, ArtifactError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result:
        print(json.dumps(result["variants"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
