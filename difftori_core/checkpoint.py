"""Checkpoints: atomic saves, exact resume, and loading a policy with everything it needs.

A checkpoint is a directory:

    model.safetensors      policy weights and buffers (incl. normalizer statistics)
    config.yaml            the resolved training config (policy section builds the network)
    spec.json              format version, policy spec (observation shapes, action bounds and
                           names), processing spec (crop, sampling, image size), task, step
    training_state.pt      optimizer state, step, RNG states (only in training checkpoints;
                           shipped models leave it out) -- tensors and plain types only, loaded
                           with `weights_only=True`

Saves write a temporary sibling directory and rename it into place, then replace the run's
`latest` pointer file, so a kill at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from difftori_core.config import ConfigError, from_dict
from difftori_core.policies import Policy, PolicyConfig, PolicySpec, make_policy

FORMAT = "difftori-checkpoint"
VERSION = 1
MODEL_FILE, CONFIG_FILE, SPEC_FILE, STATE_FILE, LATEST = (
    "model.safetensors",
    "config.yaml",
    "spec.json",
    "training_state.pt",
    "latest",
)
ONNX_DIR = "onnx"  # a model's ONNX export (difftori_core.export), beside its weights
BACKENDS = ("auto", "torch", "onnxruntime")  # see load_policy


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not match the code that loads it."""


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    directory: Path,
    policy: Policy,
    config: dict[str, Any],
    spec_extra: dict[str, Any],
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Atomically write a checkpoint directory at `directory` (replacing an older one there)."""
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    save_file(state, tmp / MODEL_FILE, metadata={"format": FORMAT, "version": str(VERSION)})
    (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    spec = {"format": FORMAT, "version": VERSION, "policy_spec": asdict(policy.spec), **spec_extra}
    (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2))
    if training_state is not None:
        torch.save(training_state, tmp / STATE_FILE)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old)
    else:
        tmp.rename(directory)
    _fsync_dir(directory.parent)
    return directory


def mark_latest(run_checkpoints: Path, name: str) -> None:
    tmp = run_checkpoints / f".{LATEST}.tmp"
    tmp.write_text(name + "\n")
    os.replace(tmp, run_checkpoints / LATEST)


def resolve(path: str | Path) -> Path:
    """A checkpoint directory from itself, a run's `checkpoints/` folder, or a run folder."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if (candidate / LATEST).is_file():
            name = (candidate / LATEST).read_text().strip()
            path = candidate / name
            break
    if not (path / MODEL_FILE).is_file():
        raise CheckpointError(f"{path}: no {MODEL_FILE} here (expected a checkpoint, model or run directory)")
    return path


def read_spec(path: Path) -> dict[str, Any]:
    try:
        spec = json.loads((path / SPEC_FILE).read_text())
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: missing {SPEC_FILE}") from err
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path / SPEC_FILE}: not valid JSON ({err})") from err
    if spec.get("format") != FORMAT:
        raise CheckpointError(f"{path / SPEC_FILE}: format {spec.get('format')!r} is not {FORMAT!r}")
    if spec.get("version") != VERSION:
        raise CheckpointError(
            f"{path / SPEC_FILE}: version {spec.get('version')} unsupported (this code reads {VERSION})"
        )
    return spec


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load((path / CONFIG_FILE).read_text())
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: missing {CONFIG_FILE}") from err
    except yaml.YAMLError as err:
        raise CheckpointError(f"{path / CONFIG_FILE}: not valid YAML ({err})") from err
    if not isinstance(config, dict) or "policy" not in config:
        raise CheckpointError(f"{path / CONFIG_FILE}: no 'policy' section")
    return config


def load_weights(policy: Policy, path: Path) -> None:
    try:
        state = load_file(path / MODEL_FILE)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path / MODEL_FILE}: unreadable or corrupt ({err})") from err
    expected = policy.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path / MODEL_FILE} does not match the policy its config describes: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}"
        )
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise CheckpointError(f"{path / MODEL_FILE}: contains NaN/Inf weights")
    policy.load_state_dict(state)


def load_policy(
    path: str | Path, device: str | torch.device = "cpu", backend: str = "torch"
) -> tuple[Policy, dict[str, Any]]:
    """Build the policy a checkpoint describes and load its weights. Returns (policy in eval
    mode, info) where info has the resolved `path`, `config` (dict) and `spec` (dict).

    backend: "torch"; "onnxruntime" to run the networks from the model's ONNX export
    (`python -m difftori_core.export`; info then also has `onnx`: manifest + providers); or
    "auto": when the model carries an export (a broken one is still refused), whichever of the
    two is faster on this machine (timed on a synthetic observation, ~1 s), else torch.
    info["backend"] is the backend in use."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be auto, torch or onnxruntime, got {backend!r}")
    ckpt = resolve(path)
    spec = read_spec(ckpt)
    config = read_config(ckpt)
    try:
        policy_cfg = from_dict(PolicyConfig, config["policy"], prefix="policy.")
        policy_spec = PolicySpec(**spec["policy_spec"])
    except (ConfigError, TypeError, ValueError) as err:
        raise CheckpointError(f"{ckpt}: invalid config or spec ({err})") from err
    policy = make_policy(policy_cfg, policy_spec)
    load_weights(policy, ckpt)
    policy.to(device).eval()
    info: dict[str, Any] = {"path": ckpt, "config": config, "spec": spec, "backend": backend}
    if backend == "auto" and (ckpt / ONNX_DIR).is_dir():
        from difftori_core.onnx_backend import faster_backend

        info.update(faster_backend(policy, ckpt))
    elif backend == "auto":
        info["backend"] = "torch"
    elif backend == "onnxruntime":
        from difftori_core.onnx_backend import use_onnxruntime

        info["onnx"] = use_onnxruntime(policy, ckpt, device)
    return policy, info


def load_training_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path / STATE_FILE, weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: no {STATE_FILE} (a shipped model cannot be resumed)") from err
    except Exception as err:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(f"{path / STATE_FILE}: unreadable or corrupt ({err})") from err
