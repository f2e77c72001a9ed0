"""benchmarks/il_table.py: the paired bootstrap on cases whose answer is known, and the table
from final_eval.json files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import il_table  # noqa: E402


def test_bootstrap_ci_matches_the_normal_approximation_for_many_episodes() -> None:
    diffs = np.zeros(2000)
    diffs[:600] = 1.0  # mean 0.3, standard error sqrt(0.21 / 2000)
    mean, lo, hi = il_table.bootstrap_mean_ci([[diffs]], n_boot=4000)
    se = np.sqrt(0.3 * 0.7 / len(diffs))
    assert mean == pytest.approx(0.3)
    assert lo == pytest.approx(0.3 - 1.96 * se, abs=0.004)
    assert hi == pytest.approx(0.3 + 1.96 * se, abs=0.004)


def test_bootstrap_resamples_training_seeds_not_only_episodes() -> None:
    # One seed gains on every episode, the other on none: with two seeds the data cannot rule
    # out either extreme, however many episodes each has.
    mean, lo, hi = il_table.bootstrap_mean_ci([[np.ones(500), np.zeros(500)]], n_boot=4000)
    assert mean == pytest.approx(0.5)
    assert lo == pytest.approx(0.0, abs=0.01) and hi == pytest.approx(1.0, abs=0.01)
    # Identical paired outcomes: no difference and no uncertainty.
    assert il_table.bootstrap_mean_ci([[np.zeros(50)] * 3, [np.zeros(20)]]) == (0.0, 0.0, 0.0)


def test_over_tasks_each_task_weighs_the_same() -> None:
    mean, lo, hi = il_table.bootstrap_mean_ci([[np.ones(10)] * 5, [np.zeros(10)]])
    assert (mean, lo, hi) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="at least one seed"):
        il_table.bootstrap_mean_ci([[]])


def write_run(root: Path, task: str, policy: str, seed: int, outcomes: dict[str, list[bool]]) -> None:
    run = root / f"{task}-{policy}-s{seed}"
    run.mkdir(parents=True)
    result = {
        "task": task,
        "policy": policy,
        "base": "mlp_bc" if policy == "difftori" else None,
        "train_seed": seed,
        "episodes": len(next(iter(outcomes.values()))),
        "variants": {v: {"success_rate": float(np.mean(o))} for v, o in outcomes.items()},
        "per_episode": {
            v: [{"seed": 1000 + k, "success": s, "steps": 10} for k, s in enumerate(o)] for v, o in outcomes.items()
        },
    }
    (run / "final_eval.json").write_text(json.dumps(result))


def test_table_pairs_variants_by_episode_and_reports_cis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for seed in range(3):
        # DiffTORI succeeds on every episode its base fails, and on none more.
        write_run(tmp_path, "push-v3", "difftori", seed, {"difftori": [True] * 4, "base": [True, True, False, False]})
        write_run(tmp_path, "push-v3", "ibc", seed, {"ibc": [False] * 4})
    rl = tmp_path / "cartpole-swingup-tdmpc"  # a model-based RL result lies among them: skipped
    rl.mkdir()
    (rl / "final_eval.json").write_text(json.dumps({"task": "cartpole-swingup", "planner": "difftori", "return": 8.0}))
    out = tmp_path / "table.json"
    assert il_table.main([str(tmp_path), "--json", str(out), "--boot", "500"]) == 0
    printed = capsys.readouterr().out
    assert "| push-v3 | hard | 0.50 (n=3) | 1.00 (n=3) | 0.00 (n=3) |" in printed
    summary = json.loads(out.read_text())
    vs_base = summary["tasks"]["push-v3"]["difftori(mlp_bc) - mlp_bc (base)"]
    assert vs_base["mean"] == pytest.approx(0.5) and vs_base["seeds"] == 3
    assert 0.0 < vs_base["ci95"][0] <= 0.5 <= vs_base["ci95"][1] <= 1.0
    assert summary["over_tasks"]["difftori(mlp_bc) - ibc"]["mean"] == pytest.approx(1.0)


def test_unpaired_runs_are_refused(tmp_path: Path) -> None:
    write_run(tmp_path, "push-v3", "difftori", 0, {"difftori": [True], "base": [False]})
    write_run(tmp_path / "other", "push-v3", "ibc", 0, {"ibc": [True]})
    ibc = tmp_path / "other" / "push-v3-ibc-s0" / "final_eval.json"
    result = json.loads(ibc.read_text())
    result["per_episode"]["ibc"][0]["seed"] = 5  # evaluated on another initial state
    ibc.write_text(json.dumps(result))
    with pytest.raises(ValueError, match="not paired"):
        il_table.main([str(tmp_path)])
