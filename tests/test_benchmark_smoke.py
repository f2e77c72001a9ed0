"""The benchmark script runs and emits well-formed JSON rows (numbers are for benchmarks/, not tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
