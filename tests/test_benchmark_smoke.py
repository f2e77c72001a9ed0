"""The benchmark script runs and emits well-formed JSON rows (numbers are for benchmarks/, not tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_trajopt_benchmark_emits_json_rows() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/trajopt.py",
            "--quick",
            "--problems",
            "il",
            "--batches",
            "1",
            "--reference-iterations",
            "3",
            "--iterations",
            "3",
            "--repeats",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    methods = {(r["bench"], r["method"]) for r in rows}
    assert {("trajopt", "reference"), ("trajopt", "theseus"), ("trajopt", "fast")} <= methods
    assert all(r.get("fwd_bwd_ms", r.get("ms_median", 0)) > 0 for r in rows)
    # Like with like: at batch 1 the per-sample solve of the reference's own problem (same
    # residual, iterations and step) reaches the reference's final cost.
    ref = next(r for r in rows if r["bench"] == "trajopt" and r["method"] == "reference")
    same = next(r for r in rows if r.get("gain", "").startswith("per_sample"))
    assert same["iterations"] == ref["iterations"] and same["final_cost"] == pytest.approx(ref["final_cost"], rel=1e-3)


def test_controller_latency_benchmark_emits_a_row(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "ROS_DOMAIN_ID": str(150 + os.getpid() % 50), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    proc = subprocess.run(
        [sys.executable, "benchmarks/controller_latency.py", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert row["bench"] == "controller_latency" and row["ticks_sent"] == 60
    assert row["actions_received"] > 0 and row["client_p50_ms"] > 0


def test_inference_benchmark_compares_both_backends_on_the_default_model() -> None:
    proc = subprocess.run(
        [sys.executable, "benchmarks/inference.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    by_backend = {r["backend"]: r for r in rows if r["bench"] == "inference"}
    assert set(by_backend) == {"torch", "onnxruntime"}
    assert all(r["tick_p50_ms"] > 0 and r["ticks"] == 40 for r in by_backend.values())
    (summary,) = [r for r in rows if r["bench"] == "inference_summary"]
    assert summary["faster"] == min(by_backend, key=lambda b: by_backend[b]["tick_p50_ms"])


def test_rl_speed_benchmark_times_both_planners_and_the_updates() -> None:
    proc = subprocess.run(
        [sys.executable, "benchmarks/rl_speed.py", "--quick", "--sizes", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    plans = {r["planner"]: r["ms"] for r in rows if r["what"] == "plan_ms_per_env_step"}
    assert set(plans) == {"sampling", "difftori"} and all(v > 0 for v in plans.values())
    updates = {r["what"]: r["ms"] for r in rows if r["what"].startswith("update_ms")}
    assert updates["update_ms_tdmpc_losses_plus_difftori_loss"] > updates["update_ms_tdmpc_losses"] > 0


def test_mbrl_report_builds_plots_table_and_json_from_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for planner, value in (("difftori", 50.0), ("sampling", 40.0)):
        run = runs / f"reacher-easy-{planner}-s0"
        run.mkdir(parents=True)
        rows = [{"env_steps": s, "eval_return": value * s / 2000, "episode_return": 1.0} for s in (1000, 2000)]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (run / "final_eval.json").write_text(json.dumps({"return": value}))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "benchmarks/mbrl_compare.py", "--report-only", "--tasks", "reacher-easy", "--seeds", "0",
         "--runs", str(runs), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "final_returns.json").read_text()) == {
        "reacher-easy": {"difftori": {"0": 50.0}, "sampling": {"0": 40.0}}
    }
    assert "| reacher-easy | 50 (50) | 40 (40) | 1 / 1 | 832 |" in (out / "table.md").read_text()
    assert (out / "reacher-easy.png").stat().st_size > 1000
