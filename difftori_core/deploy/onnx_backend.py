"""The ONNX Runtime inference backend: a policy whose networks run as exported ONNX graphs.

`use_onnxruntime(policy, model_dir, device)` swaps each exported submodule (see
`Policy.networks`) for an `OrtModule` with the same call signature, so the policy
code path (normalization, DDIM loop, trajectory optimization, clamping, action queue) is the
same for both backends. Execution providers follow the device: CUDA when the device is cuda and
ONNX Runtime can load its CUDA provider, CPU otherwise; ONNX Runtime's own logging is limited to
errors so a CPU-only machine prints no provider warnings.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from difftori_core.artifacts import MANIFEST, MODEL_FILE, ONNX_DIR, ArtifactError, read_json, sha256, verify_file
from difftori_core.policies import Policy

MANIFEST_FORMAT = "difftori-onnx"
MANIFEST_VERSION = 1

log = logging.getLogger(__name__)

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int64)": np.int64}


class OnnxModelError(ArtifactError):
    """A model's ONNX export is missing, corrupt, stale or does not fit the policy."""


def providers_for(device: str | torch.device) -> list[Any]:
    import onnxruntime as ort

    device = torch.device(device)
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(path: Path, providers: Sequence[Any] | None = None, threads: int | None = None) -> Any:
    """An InferenceSession with full graph optimization, `threads` intra-op threads (default:
    torch's setting, so both backends get the same CPU budget) and errors-only logging."""
    import onnxruntime as ort

    wants_cuda = any((p[0] if isinstance(p, tuple) else p) == "CUDAExecutionProvider" for p in providers or [])
    # Errors only; while trying CUDA not even those: a missing CUDA library is reported once, below.
    ort.set_default_logger_severity(4 if wants_cuda else 3)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if wants_cuda and hasattr(ort, "preload_dlls"):
        # CUDA/cuDNN from the nvidia-* wheels torch brought, when there are some; it prints a
        # line per library it cannot find, which is not news on a machine without them.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                ort.preload_dlls(directory="")
            except Exception:  # noqa: BLE001 - missing libraries only mean the CPU provider is used
                pass
    providers = list(providers or ["CPUExecutionProvider"])
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    finally:
        ort.set_default_logger_severity(3)
    if wants_cuda and "CUDAExecutionProvider" not in session.get_providers():
        log.warning("%s: ONNX Runtime cannot load its CUDA provider (CUDA 12 / cuDNN 9); using CPU", path.name)
    return session


class OrtModule(nn.Module):
    """Calls an ONNX Runtime session like the torch module it replaces: positional tensors, or
    one dict keyed by input name (the observation encoder). A 0-d input (the diffusion timestep
    during sampling) stands for the same value for every sample and is broadcast to the batch.
    Outputs come back as torch tensors on `device`."""

    def __init__(self, session: Any, device: torch.device) -> None:
        super().__init__()
        self.session = session
        self.device = device
        self.names = [i.name for i in session.get_inputs()]
        self.dtypes = [_ORT_DTYPES[i.type] for i in session.get_inputs()]

    def forward(self, *args: Any) -> Tensor:
        values = [args[0][n] for n in self.names] if len(args) == 1 and isinstance(args[0], Mapping) else list(args)
        batch = next(v.shape[0] for v in values if v.dim() > 0)
        feed = {
            name: (v.expand(batch) if v.dim() == 0 else v).detach().cpu().numpy().astype(dtype, copy=False)
            for name, v, dtype in zip(self.names, values, self.dtypes, strict=True)
        }
        return torch.from_numpy(self.session.run(None, feed)[0]).to(self.device)


def read_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / ONNX_DIR / MANIFEST
    if not path.is_file():
        raise OnnxModelError(
            f"{model_dir}: no ONNX export ({path} missing); run: python -m difftori_core.export {model_dir}"
        )
    manifest = read_json(path, OnnxModelError)
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != MANIFEST_VERSION:
        raise OnnxModelError(f"{path}: not a {MANIFEST_FORMAT} v{MANIFEST_VERSION} manifest")
    return manifest


def use_onnxruntime(policy: Policy, model_dir: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Replace `policy`'s exported networks with ONNX Runtime sessions (in place). The export
    must come from these exact weights (the manifest records their sha256) and every file must
    match its recorded hash. Returns the manifest with the providers in use added."""
    manifest = read_manifest(model_dir)
    weights = sha256(model_dir / MODEL_FILE)
    if manifest.get("weights_sha256") != weights:
        raise OnnxModelError(
            f"{model_dir / ONNX_DIR}: exported from other weights than {model_dir / MODEL_FILE}; "
            f"re-run: python -m difftori_core.export {model_dir}"
        )
    device = torch.device(device)
    providers = providers_for(device)
    in_use: dict[str, list[str]] = {}
    entries = manifest.get("networks")
    for net in policy.networks():
        entry = entries.get(net.name) if isinstance(entries, dict) else None
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("file", "sha256")):
            raise OnnxModelError(
                f"{model_dir / ONNX_DIR / MANIFEST}: field 'networks' has no {net.name!r} entry with file and sha256"
            )
        path = model_dir / ONNX_DIR / entry["file"]
        verify_file(path, entry["sha256"], OnnxModelError)
        try:
            session = make_session(path, providers)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise OnnxModelError(f"{path}: ONNX Runtime cannot load it ({err})") from err
        expected = list(net.inputs(1))
        got = [i.name for i in session.get_inputs()]
        if got != expected:
            raise OnnxModelError(f"{path}: inputs {got} do not match the policy's {expected}")
        setattr(net.owner, net.attr, OrtModule(session, device))
        in_use[net.name] = session.get_providers()
    return {**manifest, "providers_in_use": in_use}


def _chunk_ms(policy: Policy, obs: dict[str, Tensor], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        policy.predict_action_chunk(obs)
        if obs and next(iter(obs.values())).is_cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def faster_backend(policy: Policy, model_dir: Path, repeats: int = 20) -> dict[str, Any]:
    """Time one-observation chunks with torch and with ONNX Runtime on this machine and device,
    and switch `policy` (in place) to ONNX Runtime if that is faster. Which one wins depends on
    the model (convolutions gain most) and the hardware, so it is measured, not assumed. Timing
    runs on copies, so `policy` (its sampling RNG included) is as freshly loaded. Returns info:
    backend, per-backend median ms and, for onnxruntime, the manifest (`onnx`)."""
    candidates = {"torch": copy.deepcopy(policy), "onnxruntime": copy.deepcopy(policy)}
    use_onnxruntime(candidates["onnxruntime"], model_dir, policy.device)
    obs = {k: v.to(policy.device) for k, v in policy.example_observation(1).items()}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for p in candidates.values():
        _chunk_ms(p, obs, 3)  # warm-up: first calls allocate
    for _ in range(2):  # alternate, so a background load slows both alike
        for name, p in candidates.items():
            times[name] += _chunk_ms(p, obs, repeats // 2)
    ms = {name: round(statistics.median(t), 3) for name, t in times.items()}
    best = min(ms, key=ms.__getitem__)
    info: dict[str, Any] = {"backend": best, "chunk_ms": ms}
    if best == "onnxruntime":
        info["onnx"] = use_onnxruntime(policy, model_dir, policy.device)
    return info
