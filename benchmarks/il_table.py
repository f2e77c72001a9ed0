"""Imitation-learning comparison table from training runs' final_eval.json files, with paired
bootstrap confidence intervals.

    python benchmarks/il_table.py runs [more dirs ...] [--json table.json]

Every `final_eval.json` under the given directories is one (task, method, training seed) run.
A DiffTORI run holds two variants on the same seeded episodes, "difftori" and "base" (its base
policy alone); a baseline run (mlp_bc, diffusion, ibc, ...) holds its own. Per task the table
shows each method's mean success over its training seeds and DiffTORI minus its base with a
paired bootstrap 95% CI: training seeds are resampled, then the evaluation episodes within each
(the same initial states for both variants, so each episode's difference is resampled as a
pair). The row over tasks resamples within every task independently (stratified) and averages
the task means, so each task weighs the same whatever its seed count. DiffTORI minus IBC is
paired by (training seed, episode seed) where both ran.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HARD = {"assembly-v3", "hand-insert-v3", "pick-out-of-hole-v3", "pick-place-v3", "push-v3", "push-back-v3"}
VERY_HARD = {"shelf-place-v3", "disassemble-v3", "stick-pull-v3", "stick-push-v3", "pick-place-wall-v3"}
LEVEL = {**dict.fromkeys(HARD, "hard"), **dict.fromkeys(VERY_HARD, "very hard")}

# Per-seed arrays of per-episode paired differences (or outcomes) for one task.
Seeds = Sequence[np.ndarray]


def bootstrap_mean_ci(
    tasks: Sequence[Seeds], n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean over tasks of each task's mean over seeds of the per-episode values, and its
    percentile bootstrap CI (seeds, then episodes within a seed, resampled per task)."""
    if not tasks or any(len(seeds) == 0 or any(len(ep) == 0 for ep in seeds) for seeds in tasks):
        raise ValueError("every task needs at least one seed with at least one episode")
    rng = np.random.default_rng(seed)
    point = float(np.mean([np.mean([np.mean(ep) for ep in seeds]) for seeds in tasks]))
    boot = np.zeros(n_boot)
    for seeds in tasks:
        n = len(seeds)
        # means[k, slot, b]: seed k's episodes resampled, independently for every slot it may fill.
        means = np.stack([np.asarray(ep, dtype=float)[rng.integers(0, len(ep), (n, n_boot, len(ep)))].mean(-1)
                          for ep in seeds])
        picks = rng.integers(0, n, size=(n, n_boot))  # which seed fills each slot
        boot += means[picks, np.arange(n)[:, None], np.arange(n_boot)[None]].mean(0)
    boot /= len(tasks)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return point, float(lo), float(hi)


def outcomes(per_episode: list[dict[str, Any]]) -> dict[int, float]:
    return {int(e["seed"]): float(e["success"]) for e in per_episode}


def load_runs(roots: Sequence[Path]) -> list[dict[str, Any]]:
    """One row per final_eval.json: task, policy, base type, training seed, variants, outcomes."""
    runs = []
    for root in roots:
        for path in sorted(root.rglob("final_eval.json")):
            if "checkpoints" in path.parts:
                continue
            result = json.loads(path.read_text())
            if "policy" not in result:  # a model-based RL result (its planners have no IL table)
                continue
            runs.append(
                {
                    "path": str(path),
                    "task": result["task"],
                    "policy": result["policy"],
                    "base": result.get("base", "mlp_bc" if result["policy"] == "difftori" else None),
                    "train_seed": int(result.get("train_seed", 0)),
                    "success": {v: s["success_rate"] for v, s in result.get("variants", {}).items()},
                    "outcomes": {v: outcomes(eps) for v, eps in result.get("per_episode", {}).items() if eps},
                }
            )
    return runs


def method_names(run: dict[str, Any]) -> dict[str, str]:
    """Variant -> method column: "difftori(<base>)" and "<base> (base)" for a DiffTORI run, each
    baseline run's own variant otherwise."""
    if run["policy"] == "difftori":
        return {"difftori": f"difftori({run['base']})", "base": f"{run['base']} (base)"}
    return {v: v for v in {**run["success"], **run["outcomes"]}}


def method_columns(runs: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[int, float]]:
    """(task, method, training seed) -> {episode seed: success} (`method_names`)."""
    table: dict[tuple[str, str, int], dict[int, float]] = {}
    for run in runs:
        for variant, method in method_names(run).items():
            if variant in run["outcomes"]:
                table[(run["task"], method, run["train_seed"])] = run["outcomes"][variant]
    return table


def paired(a: dict[int, float], b: dict[int, float], where: str) -> np.ndarray:
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ValueError(f"{where}: no evaluation episode seeds in common; the comparison is not paired")
    return np.array([a[s] - b[s] for s in shared])


def comparisons(
    table: dict[tuple[str, str, int], dict[int, float]], tasks: list[str]
) -> dict[str, dict[str, list[np.ndarray]]]:
    """{comparison name: {task: [per-seed paired differences]}} for DiffTORI minus its base and
    DiffTORI minus IBC, over the training seeds both sides have."""
    out: dict[str, dict[str, list[np.ndarray]]] = defaultdict(dict)
    methods = {m for _, m, _ in table}
    for ours in sorted(m for m in methods if m.startswith("difftori(")):
        base = ours[len("difftori(") : -1] + " (base)"
        for theirs, name in ((base, f"{ours} - {base}"), ("ibc", f"{ours} - ibc")):
            for task in tasks:
                seeds = sorted(s for t, m, s in table if t == task and m == ours and (task, theirs, s) in table)
                diffs = [paired(table[(task, ours, s)], table[(task, theirs, s)], f"{task} seed {s}") for s in seeds]
                if diffs:
                    out[name][task] = diffs
    return dict(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="directories searched for final_eval.json")
    parser.add_argument("--json", type=Path, help="also write the table and the CIs here")
    parser.add_argument("--boot", type=int, default=10_000, help="bootstrap resamples")
    args = parser.parse_args(argv)
    runs = load_runs(args.runs)
    if not runs:
        print(f"no final_eval.json under {', '.join(map(str, args.runs))}")
        return 1
    table = method_columns(runs)
    tasks = sorted({r["task"] for r in runs})
    # Mean success per (task, method): from the outcomes where kept, else the summary rate
    # (older runs kept no per-episode outcomes; they get no CI).
    success: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (task, method, _), eps in table.items():
        success[(task, method)].append(float(np.mean(list(eps.values()))))
    for run in runs:
        if run["policy"] == "difftori" and not run["outcomes"]:
            names = method_names(run)
            for variant, rate in run["success"].items():
                success[(run["task"], names[variant])].append(rate)
    methods = sorted({m for _, m in success}, key=lambda m: (not m.endswith("(base)"), m))
    ci = comparisons(table, tasks)

    print("| " + " | ".join(["task", "difficulty (DP3)", *methods, *ci]) + " |")
    print("|---|---|" + "---|" * (len(methods) + len(ci)))
    summary: dict[str, Any] = {"tasks": {}, "over_tasks": {}}
    for task in tasks:
        cells = []
        for m in methods:
            vals = success.get((task, m), [])
            cells.append(f"{np.mean(vals):.2f} (n={len(vals)})" if vals else "-")
        summary["tasks"][task] = {m: success.get((task, m), []) for m in methods}
        for name, per_task in ci.items():
            if task in per_task:
                mean, lo, hi = bootstrap_mean_ci([per_task[task]], args.boot)
                cells.append(f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]")
                summary["tasks"][task][name] = {"mean": mean, "ci95": [lo, hi], "seeds": len(per_task[task])}
            else:
                cells.append("-")
        print(f"| {task} | {LEVEL.get(task, 'easy/medium')} | " + " | ".join(cells) + " |")
    cells = []
    for m in methods:
        means = [np.mean(success[(t, m)]) for t in tasks if success.get((t, m))]
        cells.append(f"**{np.mean(means):.3f}** ({len(means)} tasks)" if means else "-")
    for name, per_task in ci.items():
        mean, lo, hi = bootstrap_mean_ci(list(per_task.values()), args.boot)
        cells.append(f"**{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]** ({len(per_task)} tasks)")
        summary["over_tasks"][name] = {"mean": mean, "ci95": [lo, hi], "tasks": sorted(per_task)}
    print("| **mean over tasks** | | " + " | ".join(cells) + " |")
    print("\nCIs: paired bootstrap 95% (training seeds, then episodes; stratified by task over tasks).")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
