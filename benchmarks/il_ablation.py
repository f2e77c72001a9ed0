"""DiffTORI imitation ablation, screened on validation MSE (held-out expert seeds), resumable.

    python benchmarks/il_ablation.py --tasks push-v3,pick-place-v3 --seeds 0 \
        --variants default,noise0.1,noise0.3,noise0.3-wide [--final-episodes 50]

Each (task, variant, seed) is one `python -m difftori_core.train` run under
`benchmarks/results/il_ablation/runs/<task>/<variant>-s<seed>`; a finished run (final_eval.json
present) is skipped and an interrupted one resumes from its checkpoint, so re-running the same
command continues the campaign. Settings are chosen on the validation split (refined vs base
imitation MSE at inference settings), never on the success rates the IL table reports; with
`--final-episodes N` the runs are also evaluated closed loop (N paired episodes per variant).
Writes `ablation.md` and `ablation.json` next to the runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "il_ablation"

# One hypothesis per row; each names what it changes against the shipped defaults.
VARIANTS: dict[str, list[str]] = {
    "default": [],
    # The base fits the same demonstrations, so at training time it starts at the target: perturb it.
    "noise0.1": ["policy.difftori.proposal_noise=0.1"],
    "noise0.3": ["policy.difftori.proposal_noise=0.3"],
    # ... and make the solve well posed and closer to an argmin (residual width H*A, less damping,
    # more iterations).
    "noise0.3-wide": [
        "policy.difftori.proposal_noise=0.3",
        "policy.difftori.residual_dim=64",
        "policy.difftori.solver.damping=0.01",
        "policy.difftori.solver.max_iterations=10",
        "policy.difftori.solver.backward_iterations=10",
    ],
    # The cost sees its own features, trained through the optimizer.
    "noise0.3-own": ["policy.difftori.proposal_noise=0.3", "policy.difftori.cost_encoder=own"],
    "noise0.1-own": ["policy.difftori.proposal_noise=0.1", "policy.difftori.cost_encoder=own"],
    # The cost trains 3x longer (the reference trains ~1000 epochs).
    "noise0.1-cost3k": ["policy.difftori.proposal_noise=0.1", "cost_steps=3000"],
    # The reference's chunking: horizon 4, all 4 executed.
    "h4": ["policy.horizon=4", "policy.n_action_steps=4"],
}


def run_dir(task: str, variant: str, seed: int) -> Path:
    return OUT / "runs" / task / f"{variant}-s{seed}"


def train(task: str, variant: str, seed: int, final_episodes: int, threads: int) -> None:
    out = run_dir(task, variant, seed)
    if (out / "final_eval.json").is_file():
        return
    out.mkdir(parents=True, exist_ok=True)
    args = [
        f"task={task}",
        f"seed={seed}",
        f"threads={threads}",
        "env.max_episode_steps=200",
        "eval_episodes=0",
        "eval_every=250",  # validation only (no rollouts): cheap, and a finer curve
        f"final_eval_episodes={final_episodes}",
        f"output_dir={out}",
        *VARIANTS[variant],
    ]
    print(f"[ablation] {task} {variant} seed {seed}: {' '.join(VARIANTS[variant]) or 'defaults'}", flush=True)
    with open(out / "train.log", "a") as log:
        cmd = [sys.executable, "-m", "difftori_core.train", *args]
        subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=log, check=True)


def report() -> list[dict]:
    rows = []
    for path in sorted((OUT / "runs").glob("*/*/final_eval.json")):
        result = json.loads(path.read_text())
        variant, seed = path.parent.name.rsplit("-s", 1)
        mse = result.get("validation_mse", {})
        row = {"task": result["task"], "variant": variant, "seed": int(seed), "val_mse": mse}
        if "base" in mse and "difftori" in mse:
            row["relative_change"] = mse["difftori"] / mse["base"] - 1.0
        row["success"] = {v: s["success_rate"] for v, s in result.get("variants", {}).items()}
        rows.append(row)
    lines = [
        "| task | variant | seed | val MSE base | val MSE DiffTORI | change | success base | success DiffTORI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mse, succ = r["val_mse"], r["success"]
        lines.append(
            f"| {r['task']} | {r['variant']} | {r['seed']} | {mse.get('base', float('nan')):.4f} | "
            f"{mse.get('difftori', float('nan')):.4f} | {100 * r.get('relative_change', float('nan')):+.1f}% | "
            f"{succ.get('base', '-')} | {succ.get('difftori', '-')} |"
        )
    (OUT / "ablation.md").write_text("\n".join(lines) + "\n")
    plot(sorted({r["task"] for r in rows}))
    (OUT / "ablation.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))
    return rows


def plot(tasks: list[str]) -> None:
    """ablation.png: validation MSE against training step, one panel per task, every variant's
    refined policy (solid) and the base policy (dashed, the same for every variant of a seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not tasks:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        base_drawn = False
        for run in sorted((OUT / "runs" / task).glob("*-s*")):
            metrics = run / "metrics.jsonl"
            if not metrics.is_file():
                continue
            vals = [r for r in map(json.loads, metrics.read_text().splitlines()) if "val_mse" in r]
            if not vals:
                continue
            steps = [r["step"] for r in vals]
            variant = run.name.rsplit("-s", 1)[0]
            color = f"C{list(VARIANTS).index(variant) % 10}" if variant in VARIANTS else None
            ax.plot(steps, [r["val_mse"]["difftori"] for r in vals], ".-", color=color, label=run.name)
            if not base_drawn:
                ax.plot(steps, [r["val_mse"]["base"] for r in vals], "k--", label="base policy")
                base_drawn = True
        ax.set_title(task)
        ax.set_xlabel("training step (base phase, then cost phase)")
        ax.set_ylabel("validation MSE, executed actions (normalized)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "ablation.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="push-v3,pick-place-v3")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--final-episodes", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    if not args.report_only:
        for task in args.tasks.split(","):
            for seed in map(int, args.seeds.split(",")):
                for variant in args.variants.split(","):
                    train(task, variant, seed, args.final_episodes, args.threads)
    report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
