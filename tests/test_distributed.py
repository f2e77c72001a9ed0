"""Data-parallel training under torchrun: 2 CPU processes (gloo, loopback) match one process
with the same global batch, rank 0 alone writes the run, and a torchrun run resumes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from difftori_core.artifacts import MODEL_FILE
from difftori_core.checkpoint import resolve
from difftori_core.config import to_dict
from difftori_core.data.dataset import DatasetWriter
from difftori_core.processing import ProcessingSpec

ROOT = Path(__file__).resolve().parents[1]
# Same global batch, so the only difference is the order of floating-point sums (the gradient
# all-reduce): after 40 Adam steps the weights agree to this (measured here: 6e-8).
TOLERANCE = 1e-5


def make_dataset(path: Path) -> Path:
    rng = np.random.default_rng(0)
    env = {"task": "door-open-v3", "action_low": [-1.0] * 4, "action_high": [1.0] * 4}
    processing = to_dict(ProcessingSpec(keys=("agent_pos",)))
    with DatasetWriter(path, env=env, processing=processing) as writer:
        for _ in range(4):
            pos = rng.normal(size=(30, 3)).astype(np.float32)
            writer.add_episode({"agent_pos": pos, "action": np.tanh(pos @ rng.normal(size=(3, 4))).astype(np.float32)})
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(run: Path, data: Path, steps: int, nproc: int) -> None:
    args = [
        f"dataset={data}",
        f"output_dir={run}",
        "processing.keys=[agent_pos]",
        "policy.type=mlp_bc",
        "policy.horizon=4",
        "policy.n_action_steps=2",
        "policy.mlp_bc.hidden=[32]",
        f"base_steps={steps}",
        "batch_size=16",
        "threads=1",
        "device=cpu",
        "eval_episodes=0",
        "final_eval_episodes=0",
        "val_demos=0",
        "log_every=10",
        "checkpoint_every=20",
    ]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "difftori_core.train", *args]
    else:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "difftori_core.train", *args,
        ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_processes_match_one_with_the_same_global_batch_and_resume(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    train(tmp_path / "single", data, 40, nproc=1)
    train(tmp_path / "ddp", data, 20, nproc=2)
    train(tmp_path / "ddp", data, 40, nproc=2)  # resumes at step 20 under torchrun
    single = load_file(resolve(tmp_path / "single") / MODEL_FILE)
    ddp = load_file(resolve(tmp_path / "ddp") / MODEL_FILE)
    assert single.keys() == ddp.keys()
    worst = max(float((single[k] - ddp[k]).abs().max()) for k in single)
    print(f"max |single - 2-process| weight difference after 40 steps: {worst:.2e}")
    assert worst < TOLERANCE
    # Rank 0 alone wrote the run: one metrics row per logged step, one checkpoint series.
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    single_rows = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in single_rows], rtol=1e-4)
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == [
        "latest",
        "step_0000020",
        "step_0000040",
    ]
