"""Per-tick policy latency: torch vs ONNX Runtime, same model, same process, same inputs.

    python benchmarks/inference.py [--model models/door-open-v3-difftori] [--ticks 500]
        [--threads 1] [--device cpu|cuda] [--quick]

A "tick" here is what a control tick that computes a new chunk costs: `predict_action_chunk` on
one observation (batch 1) -- encoders, base network, trajectory optimization (always torch),
clamping. Each backend also gets the cost of its exported networks alone (encoder + base). The
backends alternate in blocks of 50 ticks, so a background load slows both alike. Observations
are the model's own shapes, random. One JSON row per backend, then a summary row naming the
faster backend (the controller's `backend` parameter default follows it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from difftori_core.deploy.runner import load_runner  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "door-open-v3-difftori"))
    parser.add_argument("--ticks", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="40 ticks, for smoke tests")
    args = parser.parse_args(argv)
    if args.quick:
        args.ticks, args.warmup = 40, 5
    torch.set_num_threads(args.threads)
    runners = {b: load_runner(args.model, args.device, b) for b in ("torch", "onnxruntime")}
    policies = {b: (r.policy, r.backend_info) for b, r in runners.items()}
    example = policies["torch"][0].example_observation(1)  # one raw observation of the model's shapes
    obs = {k: v.to(args.device) for k, v in example.items()}

    def sync() -> None:
        if torch.device(args.device).type == "cuda":
            torch.cuda.synchronize()

    tick_ms: dict[str, list[float]] = {b: [] for b in policies}
    nets_ms: dict[str, list[float]] = {b: [] for b in policies}
    for policy, _ in policies.values():
        for _ in range(args.warmup):
            policy.predict_action_chunk(obs)
    # Each exported network alone, on its own example input (the graph's shapes, batch 1).
    net_inputs = {
        b: [(net, {k: v.to(args.device) for k, v in net.inputs(1).items()}) for net in policy.networks()]
        for b, (policy, _) in policies.items()
    }
    block = 50
    for start in range(0, args.ticks, block):
        for backend, (policy, _) in policies.items():
            for _ in range(min(block, args.ticks - start)):
                sync()
                t0 = time.perf_counter()
                policy.predict_action_chunk(obs)
                sync()
                t1 = time.perf_counter()
                with torch.inference_mode():
                    for net, inputs in net_inputs[backend]:
                        if net.dict_input:
                            net.module(inputs)
                        else:
                            net.module(*inputs.values())
                sync()
                t2 = time.perf_counter()
                tick_ms[backend].append((t1 - t0) * 1e3)
                nets_ms[backend].append((t2 - t1) * 1e3)

    summary = {}
    for backend, (_, info) in policies.items():
        ticks = np.asarray(tick_ms[backend])
        row = {
            "bench": "inference",
            "model": Path(args.model).name,
            "backend": backend,
            "device": args.device,
            "threads": args.threads,
            "ticks": len(ticks),
            "tick_p50_ms": round(float(np.median(ticks)), 3),
            "tick_p99_ms": round(float(np.percentile(ticks, 99)), 3),
            "tick_mean_ms": round(float(ticks.mean()), 3),
            "networks_p50_ms": round(float(np.median(nets_ms[backend])), 3),
        }
        if backend == "onnxruntime":
            row["providers"] = sorted({p for ps in info["onnx"]["providers_in_use"].values() for p in ps[:1]})
        summary[backend] = row["tick_p50_ms"]
        print(json.dumps(row))
    faster = min(summary, key=summary.get)
    speedup = round(max(summary.values()) / min(summary.values()), 3)
    print(json.dumps({"bench": "inference_summary", "faster": faster, "speedup": speedup}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
