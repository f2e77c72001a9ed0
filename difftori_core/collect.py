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
from pathlib import Path
from typing import Any

from difftori_core.config import ConfigError, apply_overrides, from_dict, to_dict
from difftori_core.data.collect import collect
from difftori_core.data.dataset import DatasetError
from difftori_core.envs.metaworld import MetaWorldEnvConfig
from difftori_core.processing import ProcessingSpec


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
