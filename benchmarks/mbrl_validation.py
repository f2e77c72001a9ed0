"""Choosing DiffTORI's RL settings on the validation task (cartpole-swingup), never on a reported one.

    python benchmarks/mbrl_validation.py                      # run what is missing, then report
    python benchmarks/mbrl_validation.py --report-only

Each variant is a set of `key=value` overrides of `config/rl/<task>.yaml` with `planner=difftori`
(`sampling` is the reference, TD-MPC's MPPI on the same model size). Runs live in
`<out>/runs/<variant>-s<seed>`; finished ones (final_eval.json) are skipped, interrupted ones
resume from their last checkpoint, so re-running the command continues the selection. The
report, `<out>/validation.md` and `<out>/validation.png`, gives each variant's evaluation return at
every periodic evaluation (mean over seeds) and its final return per seed. Rule: among variants
that keep DiffTORI's loss, the highest mean final return becomes the default (ties within 5:
the higher mean over the periodic evaluations); `coef0` (loss off) and `sampling` are references.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mbrl_compare import ROOT, load_rows, train  # noqa: E402

# Policy-gradient schedules (hypothesis: on finger-spin the loss, switched on at full weight right
# after the warm-up, steered plans away from reward before the raw critic knew anything; a later
# start, a ramp or a smaller weight would keep DiffTORI's gain without the exploration collapse).
VARIANTS: dict[str, list[str]] = {
    "sampling": ["planner=sampling"],
    "default": ["pg_ramp_steps=0"],  # the loss at full weight from the warm-up's end (the first campaign)
    "coef0": ["agent.difftori_coef=0"],
    "coef0.03": ["agent.difftori_coef=0.03"],
    "start20k": ["pg_start_steps=20000"],
    "ramp30k": ["pg_ramp_steps=30000"],  # chosen: now RLTrainConfig's default
}


def report(task: str, variants: list[str], seeds: list[int], runs: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    lines, steps_header = [], None
    for name in variants:
        curves, finals = [], {}
        for seed in seeds:
            path = runs / f"{name}-s{seed}"
            rows = [r for r in load_rows(path) if "eval_return" in r]
            if rows and (path / "final_eval.json").is_file():  # finished runs only: whole curves
                curves.append({r["env_steps"]: r["eval_return"] for r in rows})
                finals[seed] = json.loads((path / "final_eval.json").read_text())["return"]
        if not curves:
            continue
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        mean = [float(np.mean([c[s] for c in curves])) for s in steps]
        ax.plot(steps, mean, label=f"{name} ({len(curves)} seeds)")
        steps_header = steps_header or steps
        per_step = " | ".join(f"{m:.0f}" for m in mean[: len(steps_header)])
        per_seed = ", ".join(f"{v:.0f}" for v in finals.values())
        final = f"{np.mean(list(finals.values())):.0f} ({per_seed})" if finals else "-"
        lines.append(f"| {name} | {per_step} | {final} |")
    if steps_header is None:
        print("[mbrl-validation] nothing to report yet")
        return
    head = "| variant | " + " | ".join(f"{s // 1000}k" for s in steps_header) + " | final (mean; per seed) |"
    table = [head, "|" + "---|" * (len(steps_header) + 2), *lines]
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (mean over seeds)")
    ax.set_title(f"{task}: DiffTORI settings (validation)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "validation.png", dpi=100)
    plt.close(fig)
    (out / "validation.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cartpole-swingup")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=40_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mbrl" / "validation")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    variants, seeds = args.variants.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    runs = args.out / "runs"
    if not args.report_only:
        for seed in seeds:  # seed-major: a partial selection compares whole seeds
            for name in variants:
                overrides = ["planner=difftori", *VARIANTS[name], "eval_every=5000"]
                train(args.task, seed, runs / f"{name}-s{seed}", args.steps, overrides)
                report(args.task, variants, seeds, runs, args.out)
    report(args.task, variants, seeds, runs, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
