"""Package a trained run as a shipped model: weights, config, spec and a model card.

    python -m difftori_core.model_card runs/door-open-v3-difftori models/door-open-v3-difftori \
        [--command "the training command"]

The model folder gets the latest checkpoint without its training state (a shipped model is for
running, not resuming), `final_eval.json` from the run, its ONNX export (`onnx/`, see
`difftori_core.export`) and `README.md`: task, data, training command, success of the base policy
alone vs the DiffTORI policy (same seeded episodes), and the per-chunk inference time on this
machine's CPU with the torch and the ONNX Runtime backends. Passing a model folder as both `run`
and `out` refreshes its export and card in place.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from difftori_core import checkpoint as ckpt
from difftori_core.artifacts import CONFIG_FILE, MODEL_FILE, SPEC_FILE, ArtifactError
from difftori_core.config import to_dict
from difftori_core.data.dataset import Dataset
from difftori_core.data.windows import WindowSampler
from difftori_core.deploy.export import export_policy
from difftori_core.deploy.runner import load_runner


def chunk_latency_ms(policy: Any, dataset: Dataset, variant: str | None = None, repeats: int = 50) -> float:
    """Median time of one chunk of `variant` on a real observation window, batch 1."""
    sampler = WindowSampler.from_dataset(dataset, policy.n_obs_steps, policy.horizon, list(policy.spec.obs_shapes))
    obs = sampler.window(torch.tensor([len(sampler) // 2]))["obs"]
    for _ in range(5):
        policy.predict_action_chunk(obs, variant)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        policy.predict_action_chunk(obs, variant)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def package(run: Path, out: Path, command: str) -> Path:
    src = ckpt.resolve(run)
    final = json.loads((run / "final_eval.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    if src.resolve() != out.resolve():
        for name in (MODEL_FILE, CONFIG_FILE, SPEC_FILE):
            shutil.copy2(src / name, out / name)
        shutil.copy2(run / "final_eval.json", out / "final_eval.json")
        if (run / "learning_curve.png").exists():
            shutil.copy2(run / "learning_curve.png", out / "learning_curve.png")

    torch.set_num_threads(1)
    runner = load_runner(out)
    policy, info = runner.policy, runner.model
    dataset = Dataset.load(info.config["dataset"] or f"data/{info.config['task']}")
    timings = {}
    for variant in reversed(policy.variants):  # the base policy alone first, where there is one
        label = "base policy alone" if variant == "base" else variant
        timings[label] = chunk_latency_ms(policy, dataset, variant)
    manifest = export_policy(policy, out, to_dict(info.processing))
    onnx_policy = load_runner(out, backend="onnxruntime").policy
    timings[f"{policy.variants[0]}, onnxruntime backend"] = chunk_latency_ms(onnx_policy, dataset)

    cfg, spec = info.config, info.spec
    size_mb = (out / MODEL_FILE).stat().st_size / 1e6
    has_base = "base" in final["variants"]
    rows = [
        ("base policy alone (`--variant base`)" if v == "base" else f"{v} policy", final["variants"][v])
        for v in reversed(policy.variants)
        if v in final["variants"]
    ]
    lines = [
        f"# {out.name}",
        "",
        f"DiffTORI-ROS policy for the MetaWorld task `{cfg['task']}`.",
        "",
        "| | |",
        "|---|---|",
        f"| task | `{cfg['task']}` (camera `{cfg['env']['camera']}`, "
        f"{cfg['env']['width']}x{cfg['env']['height']} depth) |",
        f"| observations | {', '.join(f'`{k}` {v}' for k, v in spec['policy_spec']['obs_shapes'].items())} |",
        f"| policy | `{cfg['policy']['type']}`"
        + (f" on a `{cfg['policy']['difftori']['base']}` base" if cfg["policy"]["type"] == "difftori" else "")
        + f", horizon {cfg['policy']['horizon']}, {cfg['policy']['n_obs_steps']} observation frames, "
        f"{cfg['policy']['n_action_steps']} actions executed per chunk |",
        f"| data | {dataset.num_episodes} scripted-expert demonstrations ({dataset.num_frames} frames), "
        f"`{dataset.meta.get('source', '')}` |",
        f"| training | {cfg['base_steps']} base steps"
        + (f" + {cfg['cost_steps']} cost steps" if has_base else "")
        + f", batch {cfg['batch_size']}, seed {cfg['seed']} |",
        f"| weights | {size_mb:.1f} MB (`model.safetensors`, normalizer statistics included) |",
        "",
        "Training command:",
        "",
        "```",
        command,
        "```",
        "",
        f"## Success rate ({final['episodes']} seeded episodes, seeds {cfg['eval_seed']}..."
        f"{cfg['eval_seed'] + final['episodes'] - 1}, same episodes for every row)",
        "",
        "| policy | success | mean steps |",
        "|---|---|---|",
        *[
            f"| {name} | {r['success_rate']:.2f} ({r['successes']}/{r['episodes']}) | {r['mean_steps']:.0f} |"
            for name, r in rows
        ],
        "",
        f"Reproduce: `python -m difftori_core.eval {out} --episodes {final['episodes']} --seed {cfg['eval_seed']}`"
        + (" [--variant base]" if has_base else ""),
        "",
        "## Inference time (one action chunk, batch 1, 1 CPU thread, median of 50)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}.",
        "",
        "| policy | ms per chunk |",
        "|---|---|",
        *[f"| {name} | {ms:.1f} |" for name, ms in timings.items()],
        "",
        f"## ONNX export (`onnx/`, opset {manifest['opset']})",
        "",
        "The observation encoder and the base network as ONNX graphs (dynamic batch axis); the "
        "trajectory optimization stays in torch. `python -m difftori_core.eval ... --backend onnxruntime` "
        "uses them; the controller's default `backend: auto` times both backends at configure and keeps "
        "the faster.",
        "",
        "| file | max abs difference to torch (batch 1 and 4) |",
        "|---|---|",
        *[f"| `{e['file']}` | {e['parity_max_abs_error']:.1e} |" for e in manifest["networks"].values()],
        "",
        "![learning curve](learning_curve.png)",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--command", default="python -m difftori_core.train", help="training command for the card")
    args = parser.parse_args(argv)
    try:
        print(package(args.run, args.out, args.command))
    except (ArtifactError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
