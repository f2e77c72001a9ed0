"""Export a policy's networks to ONNX, next to its weights.

    python -m difftori_core.export <checkpoint|model dir|run dir> [--opset 17] [--out DIR]

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

import argparse
import hashlib
import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from difftori_core.checkpoint import MODEL_FILE, ONNX_DIR
from difftori_core.policies import DiffTORIPolicy, DiffusionPolicy, MLPBCPolicy, Policy

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "difftori-onnx"
MANIFEST_VERSION = 1
DEFAULT_OPSET = 17


@dataclass
class Network:
    """One exportable submodule: `owner.<attr>` is the torch module the ONNX graph replaces.

    `inputs(batch)` builds example inputs (name -> tensor) for export and parity checks; the
    graph's positional inputs follow that order. `dict_input`: the module takes them as one dict
    (the observation encoders) rather than positionally.
    """

    name: str
    owner: nn.Module
    attr: str
    inputs: Callable[[int], dict[str, Tensor]]
    outputs: list[str]
    dict_input: bool = False

    @property
    def module(self) -> nn.Module:
        return getattr(self.owner, self.attr)


def _obs_inputs(policy: Policy) -> Callable[[int], dict[str, Tensor]]:
    def make(batch: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(batch)
        out = {}
        for key, shape in policy.spec.obs_shapes.items():
            size = (batch, policy.n_obs_steps, *shape)
            if key == "image":
                out[key] = torch.randint(0, 256, size, generator=g, dtype=torch.uint8)
            else:
                out[key] = torch.randn(size, generator=g)
        return out

    return make


def networks(policy: Policy) -> list[Network]:
    """The exportable networks of `policy`, in a fixed order (one home for the list: the
    exporter and the ONNX Runtime backend both read it)."""
    base = policy.base if isinstance(policy, DiffTORIPolicy) else policy
    feat = base.feature_dim
    horizon, adim = base.horizon, base.action_dim

    def features(batch: int) -> dict[str, Tensor]:
        return {"features": torch.randn(batch, feat, generator=torch.Generator().manual_seed(batch))}

    nets = [Network("encoder", base, "encoder", _obs_inputs(base), ["features"], dict_input=True)]
    if isinstance(policy, DiffTORIPolicy) and policy.own_encoder is not None:
        nets.append(Network("cost_encoder", policy, "own_encoder", _obs_inputs(base), ["features"], dict_input=True))
    if isinstance(base, MLPBCPolicy):
        nets.append(Network("base_head", base, "head", features, ["chunk"]))
    elif isinstance(base, DiffusionPolicy):

        def denoiser(batch: int) -> dict[str, Tensor]:
            g = torch.Generator().manual_seed(batch)
            return {
                "sample": torch.randn(batch, horizon, adim, generator=g),
                "timestep": torch.randint(0, base.config.num_train_timesteps, (batch,), generator=g),
                "cond": torch.randn(batch, feat, generator=g),
            }

        nets.append(Network("denoiser", base, "unet", denoiser, ["denoised"]))
    else:  # pragma: no cover - every policy type is one of the above
        raise TypeError(f"no ONNX export for {type(policy).__name__}")
    return nets


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


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_policy(
    policy: Policy, model_dir: Path, spec: dict[str, Any], opset: int = DEFAULT_OPSET, out_dir: Path | None = None
) -> dict[str, Any]:
    """Export every network of `policy` (moved to the CPU) into `out_dir` (default
    `<model_dir>/onnx`), check each against torch with ONNX Runtime at batch 1 and 4, and write
    the manifest. Returns it."""
    from difftori_core.onnx_backend import make_session

    out_dir = out_dir or model_dir / ONNX_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    policy = policy.cpu().eval()
    entries = {}
    for net in networks(policy):
        path = out_dir / f"{net.name}.onnx"
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
        "policy_type": type(policy).__name__,
        "weights_sha256": sha256(model_dir / MODEL_FILE),
        "networks": entries,
        "processing": spec.get("processing"),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    from difftori_core.checkpoint import CheckpointError, load_policy

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint, shipped model (models/<name>) or run directory")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default <model>/{ONNX_DIR})")
    args = parser.parse_args(argv)
    try:
        policy, info = load_policy(args.checkpoint, "cpu")
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    manifest = export_policy(policy, info["path"], info["spec"], args.opset, args.out)
    out = args.out or info["path"] / ONNX_DIR
    for entry in manifest["networks"].values():
        size = (out / entry["file"]).stat().st_size / 1e6
        print(f"{out / entry['file']}: {size:.2f} MB, max |onnxruntime - torch| = {entry['parity_max_abs_error']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
