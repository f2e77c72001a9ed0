"""Inference backends, looked up by name: how a loaded policy's networks are executed.

    torch         the policy as built (the default for training and evaluation)
    onnxruntime   the exported networks run as ONNX Runtime sessions (`deploy.onnx_backend`)
    auto          when the model carries an export, whichever of the two is faster on this
                  machine (timed at load, ~1 s); otherwise torch

A backend is `fn(policy, model_dir, device) -> info`: it may swap the policy's submodules in
place and returns at least {"backend": <the backend in use>}. `register_backend` adds one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from difftori_core.artifacts import ONNX_DIR
from difftori_core.deploy.onnx_backend import faster_backend, use_onnxruntime
from difftori_core.policies import Policy

Backend = Callable[[Policy, Path, torch.device], dict[str, Any]]


def _torch(policy: Policy, model_dir: Path, device: torch.device) -> dict[str, Any]:
    return {"backend": "torch"}


def _onnxruntime(policy: Policy, model_dir: Path, device: torch.device) -> dict[str, Any]:
    return {"backend": "onnxruntime", "onnx": use_onnxruntime(policy, model_dir, device)}


def _auto(policy: Policy, model_dir: Path, device: torch.device) -> dict[str, Any]:
    if (model_dir / ONNX_DIR).is_dir():  # a broken export is still refused
        return faster_backend(policy, model_dir)
    return {"backend": "torch"}


_BACKENDS: dict[str, Backend] = {"auto": _auto, "torch": _torch, "onnxruntime": _onnxruntime}


def register_backend(name: str, backend: Backend) -> None:
    _BACKENDS[name] = backend


def backend_names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def check_backend(name: str) -> None:
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {list(_BACKENDS)}, got {name!r}")


def apply_backend(name: str, policy: Policy, model_dir: Path, device: str | torch.device) -> dict[str, Any]:
    check_backend(name)
    return _BACKENDS[name](policy, model_dir, torch.device(device))
