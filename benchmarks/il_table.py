"""Markdown table of base-policy vs DiffTORI success from training runs' final_eval.json files.

python benchmarks/il_table.py runs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HARD = {"assembly-v3", "hand-insert-v3", "pick-out-of-hole-v3", "pick-place-v3", "push-v3", "push-back-v3"}
VERY_HARD = {"shelf-place-v3", "disassemble-v3", "stick-pull-v3", "stick-push-v3", "pick-place-wall-v3"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", type=Path)
    args = parser.parse_args(argv)
    rows = []
    for path in sorted(args.runs.glob("*/final_eval.json")):
        result = json.loads(path.read_text())
        variants = result.get("variants", {})
        if not {"base", "difftori"} <= set(variants):
            continue
        task = result["task"]
        level = "very hard" if task in VERY_HARD else "hard" if task in HARD else "easy/medium"
        base, ours = variants["base"], variants["difftori"]
        rows.append((task, level, base["success_rate"], ours["success_rate"], result["episodes"]))
    print("| task | difficulty (DP3) | base policy alone | DiffTORI | episodes |")
    print("|---|---|---|---|---|")
    for task, level, b, d, n in rows:
        print(f"| {task} | {level} | {b:.2f} | {d:.2f} | {n} |")
    if rows:
        mb = sum(r[2] for r in rows) / len(rows)
        md = sum(r[3] for r in rows) / len(rows)
        print(f"| **mean over {len(rows)} tasks** | | **{mb:.3f}** | **{md:.3f}** ({md - mb:+.3f}) | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
