"""Planning time per environment step of both planners and update time per gradient step, for
the model-based RL agent (state-based), at the CPU-sized and the paper-sized configuration.

    python benchmarks/rl_speed.py [--quick] [--sizes cpu,paper] [--threads 1]

Prints one JSON line per measurement. Rows of one size use the same world model (same widths,
same horizon), so the two planners are compared on the same objective and model; the update
rows separate TD-MPC's losses from the extra DiffTORI policy-gradient loss.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from difftori_core.rl.agent import Agent, AgentConfig  # noqa: E402
from difftori_core.rl.planners import SamplingConfig  # noqa: E402
from difftori_core.rl.world_model import WorldModelConfig  # noqa: E402

SIZES = {
    # What config/rl/*.yaml ship for this 2-core CPU.
    "cpu": dict(
        model=WorldModelConfig(latent_dim=50, mlp_dim=128, enc_dim=128),
        sampling=SamplingConfig(iterations=4, num_samples=128, num_elites=16),
        batch_size=128,
        pg_batch=16,
    ),
    # TD-MPC's paper settings (for GPUs).
    "paper": dict(
        model=WorldModelConfig(latent_dim=50, mlp_dim=512, enc_dim=256),
        sampling=SamplingConfig(iterations=6, num_samples=512, num_elites=64),
        batch_size=256,
        pg_batch=32,
    ),
}


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="cpu,paper")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--obs-dim", type=int, default=24)
    parser.add_argument("--action-dim", type=int, default=6)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 5 if args.quick else 30
    for size in args.sizes.split(","):
        cfg = AgentConfig(planner="difftori", **SIZES[size])
        agent = Agent((args.obs_dim,), args.action_dim, cfg, seed=0)
        obs = torch.randn(args.obs_dim)
        base = {"bench": "rl_speed", "size": size, "threads": args.threads, "torch": torch.__version__}
        for planner in ("sampling", "difftori"):
            agent.reset()
            ms = median_ms(lambda planner=planner: agent.act(obs, explore=True, planner=planner), repeats)
            print(json.dumps({**base, "what": "plan_ms_per_env_step", "planner": planner, "ms": round(ms, 2)}))
        H, B = cfg.horizon, cfg.batch_size
        batch = {
            "obs": torch.randn(H + 1, B, args.obs_dim),
            "action": torch.rand(H, B, args.action_dim) * 2 - 1,
            "reward": torch.rand(H, B),
            "weight": torch.ones(B),
        }
        for with_pg in (False, True):
            weight = float(with_pg)
            ms = median_ms(lambda weight=weight: agent.update(batch, difftori_weight=weight), max(3, repeats // 3))
            what = "update_ms_tdmpc_losses" + ("_plus_difftori_loss" if with_pg else "")
            print(json.dumps({**base, "what": what, "batch": B, "pg_batch": cfg.pg_batch, "ms": round(ms, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
