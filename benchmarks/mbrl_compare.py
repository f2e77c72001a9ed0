"""DiffTORI vs the sampling planner (TD-MPC's MPPI) on DeepMind Control: a resumable campaign.

    python benchmarks/mbrl_compare.py --tasks reacher-easy,cup-catch,finger-spin --seeds 0,1
    python benchmarks/mbrl_compare.py --report-only         # plots, table and JSON from what exists

Each (task, planner, seed) is one run of `python -m difftori_core.train --config
config/rl/<task>.yaml planner=<planner> seed=<seed>` in `<runs>/<task>-<planner>-s<seed>`
(default `benchmarks/results/mbrl/runs`, where git keeps each run's metrics.jsonl, returns.png
and final_eval.json but not its checkpoints); finished runs (final_eval.json present) are
skipped and interrupted ones resume from their last checkpoint, so re-running the same command
continues the campaign (in a fresh checkout an unfinished run starts over). Runs go one at a time (one
CPU-heavy job on this 2-core machine). Then, in `--out` (default benchmarks/results/mbrl):

* `<task>.png`: evaluation return vs environment steps, mean over seeds with min-max band, per planner;
* `final_returns.json`: `{"<task>": {"<planner>": {"<seed>": return}}}` (final evaluation);
* `table.md`: final return mean (and per seed) per planner, with TD-MPC's published 100k-step
  state-based return for reference (TD-MPC2 repository result files, 3 seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PLANNERS = ("difftori", "sampling")
# TD-MPC, state-based, 100k environment steps (published; DESIGN brief).
TDMPC_100K = {
    "cup-catch": 981,
    "finger-spin": 880,
    "reacher-easy": 832,
    "walker-stand": 976,
    "walker-walk": 964,
    "walker-run": 745,
    "cheetah-run": 532,
    "pendulum-swingup": 382,
}


def run_dir(runs: Path, task: str, planner: str, seed: int) -> Path:
    return runs / f"{task}-{planner}-s{seed}"


def train(task: str, seed: int, out: Path, steps: int | None, overrides: list[str]) -> None:
    """One resumable training run of `config/rl/<task>.yaml` into `out` (skipped when finished)."""
    if (out / "final_eval.json").is_file():
        print(f"[mbrl] done already: {out}", flush=True)
        return
    cmd = [
        sys.executable, "-m", "difftori_core.train", "--config", str(ROOT / "config" / "rl" / f"{task}.yaml"),
        f"seed={seed}", f"output_dir={out}", *([f"steps={steps}"] if steps else []), *overrides,
    ]
    print(f"[mbrl] {' '.join(cmd[2:])}", flush=True)
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def run(task: str, planner: str, seed: int, runs: Path, steps: int | None, extra: list[str]) -> None:
    train(task, seed, run_dir(runs, task, planner, seed), steps, [f"planner={planner}", *extra])


def load_rows(path: Path) -> list[dict]:
    f = path / "metrics.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.is_file() else []


def report(tasks: list[str], seeds: list[int], runs: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    finals: dict[str, dict[str, dict[str, float]]] = {}
    lines = [
        "| task | DiffTORI (mean; per seed) | sampling / MPPI (mean; per seed) | seeds done (D / S) "
        "| TD-MPC published, 100k |",
        "|---|---|---|---|---|",
    ]
    for task in tasks:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        finals[task] = {}
        for planner, colour in zip(PLANNERS, ("tab:red", "tab:blue"), strict=True):
            curves = []
            for seed in seeds:
                path = run_dir(runs, task, planner, seed)
                rows = [r for r in load_rows(path) if "eval_return" in r]
                if rows:
                    curves.append(([r["env_steps"] for r in rows], [r["eval_return"] for r in rows]))
                final = path / "final_eval.json"
                if final.is_file():
                    finals[task].setdefault(planner, {})[str(seed)] = json.loads(final.read_text())["return"]
            if curves:
                n = min(len(c[0]) for c in curves)
                steps = np.array(curves[0][0][:n])
                values = np.array([c[1][:n] for c in curves])
                ax.plot(steps, values.mean(0), color=colour, label=f"{planner} ({len(curves)} seeds)")
                ax.fill_between(steps, values.min(0), values.max(0), color=colour, alpha=0.2)
        if task in TDMPC_100K:
            ax.axhline(TDMPC_100K[task], color="grey", ls="--", lw=1, label="TD-MPC published (100k)")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("evaluation return")
        ax.set_title(task)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{task}.png", dpi=100)
        plt.close(fig)

        def cell(planner: str, task: str = task) -> str:
            got = finals[task].get(planner, {})
            if not got:
                return "-"
            per_seed = ", ".join(f"{v:.0f}" for v in got.values())
            return f"{np.mean(list(got.values())):.0f} ({per_seed})"

        done = f"{len(finals[task].get('difftori', {}))} / {len(finals[task].get('sampling', {}))}"
        lines.append(f"| {task} | {cell('difftori')} | {cell('sampling')} | {done} | {TDMPC_100K.get(task, '-')} |")
    (out / "final_returns.json").write_text(json.dumps(finals, indent=2) + "\n")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="reacher-easy,cup-catch,finger-spin")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--planners", default=",".join(PLANNERS))
    parser.add_argument("--steps", type=int, default=None, help="override the configs' 100k steps")
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "results" / "mbrl" / "runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mbrl")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = parser.parse_args(argv)
    tasks, seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
    if not args.report_only:
        # Seed-major order: a partial campaign has whole (task, seed) pairs of both planners.
        for seed in seeds:
            for task in tasks:
                for planner in args.planners.split(","):
                    run(task, planner, seed, args.runs, args.steps, args.overrides)
    report(tasks, seeds, args.runs, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
