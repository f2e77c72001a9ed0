"""Export a policy's networks to ONNX, next to its weights (CLI: `python -m difftori_core.export`).

What is exported is the perception and the base policy, the parts a deployment wants on an
ONNX Runtime execution provider; the trajectory optimization stays in torch:

* ``encoder.onnx``: the observation encoder, raw per-key tensors (B, T, ...) -> features (B, C)
  (proprioception enters normalized: the normalizer is a two-line affine map kept in torch);
* ``cost_encoder.onnx``: a DiffTORI cost's own encoder, when it has one;
* ``base_head.onnx`` (MLP base) or ``denoiser.onnx`` (diffusion base: one U-Net call; the DDIM
  loop and its scheduler stay in Python).

The batch axis is dynamic everywhere, so batch 1 (a control tick) and batch N both run. Files go
to ``<model>/onnx/`` with ``manifest.json``: opset, each network's inputs/outputs, its sha256,
the max abs difference to torch measured right after export, and the model's processing spec.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from difftori_core.artifacts import MANIFEST, MODEL_FILE, ONNX_DIR, atomic_directory, sha256
from difftori_core.deploy.onnx_backend import MANIFEST_FORMAT, MANIFEST_VERSION, make_session
from difftori_core.policies import Network, Policy

DEFAULT_OPSET = 17


class _PositionalEncoder(nn.Module):
    """An observation encoder takes a dict; ONNX graphs take positional inputs."""

    def __init__(self, encoder: nn.Module, keys: list[str]) -> None:
        super().__init__()
        self.encoder, self.keys = encoder, keys

    def forward(self, *tensors: Tensor) -> Tensor:
        return self.encoder(dict(zip(self.keys, tensors, strict=True)))


def _graph_module(net: Network, names: list[str]) -> nn.Module:
    return _PositionalEncoder(net.module, names) if net.dict_input else net.module


def export_network(net: Network, path: Path, opset: int = DEFAULT_OPSET) -> None:
    example = net.inputs(2)
    names = list(example)
    dynamic = {n: {0: "batch"} for n in [*names, *net.outputs]}
    module = _graph_module(net, names).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks that are static here
        torch.onnx.export(
            module,
            tuple(example.values()),
            str(path),
            input_names=names,
            output_names=net.outputs,
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )


def torch_outputs(net: Network, inputs: dict[str, Tensor]) -> np.ndarray:
    """The torch module's output for `inputs` (the module must be on the CPU)."""
    with torch.no_grad():
        module = _graph_module(net, list(inputs)).eval()
        out = module(*inputs.values())
    return out.detach().cpu().numpy()


def export_policy(
    policy: Policy, model_dir: Path, processing: dict[str, Any], opset: int = DEFAULT_OPSET, out_dir: Path | None = None
) -> dict[str, Any]:
    """Export every network of `policy` (moved to the CPU) into `out_dir` (default
    `<model_dir>/onnx`, replaced atomically), check each against torch with ONNX Runtime at
    batch 1 and 4, and write the manifest. Returns it."""
    out_dir = out_dir or model_dir / ONNX_DIR
    policy = policy.cpu().eval()
    entries = {}
    with atomic_directory(out_dir) as tmp:
        for net in policy.networks():
            path = tmp / f"{net.name}.onnx"
            export_network(net, path, opset)
            session = make_session(path, providers=["CPUExecutionProvider"])
            max_err = 0.0
            for batch in (1, 4):
                inputs = net.inputs(batch)
                ort_out = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
                max_err = max(max_err, float(np.abs(ort_out - torch_outputs(net, inputs)).max()))
            entries[net.name] = {
                "file": path.name,
                "sha256": sha256(path),
                "replaces": f"{'base.' if net.owner is not policy else ''}{net.attr}",
                "inputs": {
                    k: {"shape": ["batch", *v.shape[1:]], "dtype": str(v.dtype).removeprefix("torch.")}
                    for k, v in net.inputs(1).items()
                },
                "outputs": net.outputs,
                "parity_max_abs_error": max_err,
            }
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "opset": opset,
            "torch": torch.__version__,
            "policy_type": policy.type_name,
            "weights_sha256": sha256(model_dir / MODEL_FILE),
            "networks": entries,
            "processing": processing,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
