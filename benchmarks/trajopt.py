"""Trajectory-optimizer benchmark: reference formulation vs Theseus path vs fast path.

Prints one JSON line per measurement. Every ratio compares against the reference formulation
(a) measured in the same run, so ratios hold on a noisy machine.

    python benchmarks/trajopt.py            # full: batch 1/16/128, reference at 100 iterations
    python benchmarks/trajopt.py --quick    # CI-sized: batch 1/16

Problems (see README "Benchmarks"):
  il:   H=16, A=4, context 128 (obs features 64 + CVAE latent 64), learned MLP residual
        (one 256-wide hidden layer; 32 residuals for (b)/(c), a scalar reward for (a)).
  mbrl: H=5, A=6, latent 50, TD-MPC-sized MLPs (512 wide, ELU) for dynamics, reward, Q, pi;
        per-step residuals for (b)/(c), the scalar "offset minus return" for (a).
Methods:
  reference: one flattened variable, scalar residual, dense-Cholesky LM, 100 iterations,
             step 3e-5, damping 0.01, truncated-5 backward (the original code's formulation).
  theseus:   this project's Theseus path (per-sample variables on the batch axis).
  fast:      this project's fast path (same problem and semantics, batched normal equations).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

from difftori_core.nn.mlp import MLP
from difftori_core.trajopt import MLPResidual, Residual, RolloutResidual, SolverConfig, TrajOptLayer
from difftori_core.trajopt.reference import ReferenceFlattenedSolver


def il_residual(dim: int, hidden: tuple[int, ...]) -> Residual:
    return MLPResidual({"obs": 64, "z": 64}, horizon=16, action_dim=4, dim=dim, hidden=hidden)


def mbrl_residual(mode: str) -> Residual:
    latent, act, width = 50, 6, 512
    return RolloutResidual(
        dynamics=MLP(latent + act, (width, width), latent, act="elu"),
        reward=MLP(latent + act, (width, width), 1, act="elu"),
        value=MLP(latent + act, (width, width), 1, act="elu", layer_norm=True),
        policy=MLP(latent, (width, width), act, act="elu", out_act="tanh"),
        horizon=5,
        action_dim=act,
        mode=mode,
    )


def inputs(problem: str, batch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(batch)
    if problem == "il":
        init = 0.5 * torch.randn(batch, 16, 4, generator=gen)
        return init, {"obs": torch.randn(batch, 64, generator=gen), "z": torch.randn(batch, 64, generator=gen)}
    return 0.5 * torch.randn(batch, 5, 6, generator=gen), {"latent": torch.randn(batch, 50, generator=gen)}


def with_anchor(residual: Residual, init: torch.Tensor, ctx: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The per-step rollout objective also reads its anchors (initial scores + margin)."""
    if isinstance(residual, RolloutResidual) and residual.mode == "per_step":
        return {**ctx, "anchor": residual.anchors(ctx["latent"], init)}
    return ctx


def final_cost(residual: Residual, solution: torch.Tensor, ctx: dict[str, torch.Tensor]) -> float:
    """Mean over samples of ||r||^2 at the solution: rows that solve the same problem must agree."""
    with torch.no_grad():
        return round(float(residual(solution.detach(), ctx).square().sum(-1).mean()), 6)


def median_ms(fn: Callable[[], None], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI-sized run: batch 1 and 16, few repeats")
    parser.add_argument("--problems", default="il,mbrl")
    parser.add_argument("--batches", default=None, help="comma list (default 1,16,128; quick: 1,16)")
    parser.add_argument("--iterations", type=int, default=10, help="LM iterations for theseus/fast")
    parser.add_argument("--reference-iterations", type=int, default=100)
    parser.add_argument(
        "--reference-iterations-large",
        type=int,
        default=5,
        help="reference iterations at batch >= 128, where one dense iteration takes about a minute on 2 cores: "
        "the row is then a lower bound on the 100-iteration time (and on the speedup)",
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--inference-threads",
        type=int,
        default=1,
        help="intra-op threads for the batch-1 inference rows (the controller node's setting: one core "
        "solves, the other serves DDS and sensor processing)",
    )
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in (args.batches or ("1,16" if args.quick else "1,16,128")).split(",")]
    repeats = args.repeats or (3 if args.quick else 10)
    machine = {"threads": args.threads, "device": "cpu", "torch": torch.__version__}

    for problem in args.problems.split(","):
        vector_res = il_residual(32, (256,)) if problem == "il" else mbrl_residual("per_step")
        scalar_res = il_residual(1, (256,)) if problem == "il" else mbrl_residual("scalar")
        for res in (vector_res, scalar_res):
            res.requires_grad_(True)
        params = list(vector_res.parameters())
        scalar_params = list(scalar_res.parameters())
        cfg = dict(max_iterations=args.iterations, damping=0.01, backward_mode="truncated", backward_iterations=5)
        # The reference problem's sizes; a scalar per-sample residual has one row per sample.
        layers = {name: TrajOptLayer(vector_res, SolverConfig(backend=name, **cfg)) for name in ("theseus", "fast")}

        for batch in batches:
            init, ctx = inputs(problem, batch)
            large = batch >= 128
            ref_iterations = args.reference_iterations_large if large else args.reference_iterations
            ref = ReferenceFlattenedSolver(scalar_res, batch, max_iterations=ref_iterations)

            ref_solution: list[torch.Tensor] = []

            def ref_step() -> None:
                sol = ref.solve(init, ctx)
                torch.autograd.grad(sol.square().sum(), scalar_params, allow_unused=True)
                ref_solution[:] = [sol]

            ref_repeats = 1 if large else min(repeats, 3)
            ref_ms = median_ms(ref_step, ref_repeats, warmup=0 if large else 1)
            base = {"bench": "trajopt", "problem": problem, "batch": batch, **machine}
            lower_bound = ref_iterations < args.reference_iterations
            emit(
                {
                    **base,
                    "method": "reference",
                    "iterations": ref_iterations,
                    "fwd_bwd_ms": round(ref_ms, 3),
                    "ratio_vs_reference": 1.0,
                    "residual": "scalar, batch flattened into one variable",
                    "step_size": 3e-5,
                    "final_cost": final_cost(scalar_res, ref_solution[0], ctx),
                    "repeats": ref_repeats,
                    **({"lower_bound_of_iterations": args.reference_iterations} if lower_bound else {}),
                }
            )

            # Like with like: the same scalar residual, iterations, step and damping as the reference,
            # per sample on the solver's batch axis (the only change: no flattened coupled variable).
            # Then the same formulation with 10 iterations (the fewer-iteration gain, alone).
            same_problem = {
                "per_sample (same residual, iterations, step)": ref_iterations,
                f"fewer_iterations ({args.iterations} instead of {ref_iterations})": args.iterations,
            }
            for gain, iterations in same_problem.items():
                scalar_layer = TrajOptLayer(
                    scalar_res,
                    SolverConfig(
                        backend="fast", max_iterations=iterations, step_size=3e-5, damping=0.01,
                        backward_mode="truncated", backward_iterations=5,
                    ),
                )
                solved: list[torch.Tensor] = []

                def scalar_step(layer: TrajOptLayer = scalar_layer, solved: list = solved) -> None:
                    sol, _ = layer(init, ctx)
                    torch.autograd.grad(sol.square().sum(), scalar_params, allow_unused=True)
                    solved[:] = [sol]

                ms = median_ms(scalar_step, repeats)
                emit(
                    {
                        **base,
                        "method": "fast",
                        "gain": gain,
                        "residual": "scalar, per sample",
                        "iterations": iterations,
                        "step_size": 3e-5,
                        "fwd_bwd_ms": round(ms, 3),
                        "final_cost": final_cost(scalar_res, solved[0], ctx),
                        "speedup_vs_reference": round(ref_ms / ms, 1),
                        "speedup_is_lower_bound": lower_bound,
                        "repeats": repeats,
                    }
                )

            # This project's formulation: a vector residual (another problem, so its final cost is
            # of its own objective and not comparable with the rows above).
            vctx = with_anchor(vector_res, init, ctx)
            for name, layer in layers.items():
                solved = []

                def step(layer: TrajOptLayer = layer, solved: list = solved) -> None:
                    sol, _ = layer(init, vctx)
                    torch.autograd.grad(sol.square().sum(), params, allow_unused=True)
                    solved[:] = [sol]

                ms = median_ms(step, repeats)
                emit(
                    {
                        **base,
                        "method": name,
                        "gain": "formulation (vector residual, step 1, 10 iterations): a different problem",
                        "residual": f"vector ({vector_res.dim} rows), per sample",
                        "iterations": args.iterations,
                        "step_size": 1.0,
                        "fwd_bwd_ms": round(ms, 3),
                        "final_cost": final_cost(vector_res, solved[0], vctx),
                        "speedup_vs_reference": round(ref_ms / ms, 1),
                        "speedup_is_lower_bound": lower_bound,
                        "repeats": repeats,
                    }
                )

            if batch == max(batches) and not args.quick and not lower_bound:
                # Same iteration count as the reference, for an apples-to-apples solver comparison.
                same = TrajOptLayer(
                    vector_res, SolverConfig(backend="fast", **{**cfg, "max_iterations": args.reference_iterations})
                )

                def same_step() -> None:
                    sol, _ = same(init, vctx)
                    torch.autograd.grad(sol.square().sum(), params, allow_unused=True)

                ms = median_ms(same_step, max(3, repeats // 2))
                emit(
                    {
                        **base,
                        "method": "fast",
                        "iterations": args.reference_iterations,
                        "fwd_bwd_ms": round(ms, 3),
                        "speedup_vs_reference": round(ref_ms / ms, 1),
                        "repeats": max(3, repeats // 2),
                    }
                )

        # Inference only, batch 1: what one control tick pays (inference_mode, as the policies use).
        init, ctx = inputs(problem, 1)
        torch.set_num_threads(args.inference_threads)
        machine_inf = {**machine, "threads": args.inference_threads}
        with torch.inference_mode():
            n = 20 if args.quick else 300
            ref = ReferenceFlattenedSolver(scalar_res, 1, max_iterations=args.reference_iterations)
            ref_ms = median_ms(lambda: ref.solve(init, ctx), max(3, n // 20), warmup=2)
            emit(
                {
                    "bench": "trajopt_inference",
                    "problem": problem,
                    "batch": 1,
                    "method": "reference",
                    "iterations": args.reference_iterations,
                    "ms_median": round(ref_ms, 3),
                    **machine_inf,
                }
            )
            vctx = with_anchor(vector_res, init, ctx)
            for name, layer in layers.items():
                ms = median_ms(lambda layer=layer: layer(init, vctx), n, warmup=10)
                emit(
                    {
                        "bench": "trajopt_inference",
                        "problem": problem,
                        "batch": 1,
                        "method": name,
                        "iterations": args.iterations,
                        "ms_median": round(ms, 3),
                        "speedup_vs_reference": round(ref_ms / ms, 1),
                        "repeats": n,
                        **machine_inf,
                    }
                )
        torch.set_num_threads(args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
