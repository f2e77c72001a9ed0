"""ONNX export and the ONNX Runtime backend: parity with torch for every exported network and
every policy type, batch 1 and batch N, and refusal of missing, corrupt or stale exports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from difftori_core import checkpoint as ckpt
from difftori_core.artifacts import ONNX_DIR
from difftori_core.config import to_dict
from difftori_core.deploy.export import export_policy, torch_outputs
from difftori_core.deploy.onnx_backend import OnnxModelError, OrtModule, use_onnxruntime
from difftori_core.deploy.runner import load_runner
from difftori_core.export import main
from tests.test_policies import PROCESSING, batch, fitted, small_config

PROC = to_dict(PROCESSING)


def load(path: Path, backend: str = "torch") -> tuple[torch.nn.Module, dict]:
    runner = load_runner(path, backend=backend)
    return runner.policy, runner.backend_info

# Float32 graphs with fused kernels: differences are rounding, a few 1e-6 on O(1) outputs.
NETWORK_TOL = 1e-4
# A DiffTORI chunk is a few LM steps away from the base proposal; rounding differences of the
# features pass through the linear solves, still far below an action's resolution on a robot.
CHUNK_TOL = 1e-4

CASES = [
    ("mlp_bc", {}),
    ("diffusion", {}),
    ("difftori", {}),
    ("difftori", {"cost_encoder": "own"}),
    ("difftori", {"base": "diffusion"}),
    ("ibc", {}),
    ("difftori", {"base": "ibc"}),
]
IDS = ["mlp_bc", "diffusion", "difftori", "difftori-own-encoder", "difftori-diffusion-base", "ibc", "difftori-ibc-base"]


def saved(tmp_path: Path, kind: str, kw: dict) -> Path:
    policy, _ = fitted(kind, **kw)
    config = {"policy": to_dict(small_config(kind, **kw))}
    return ckpt.save_checkpoint(tmp_path / "model", policy, config, {"processing": PROC})


def assert_networks_match(
    reference: torch.nn.Module, onnx_policy: torch.nn.Module, batches: tuple[int, ...], label: str
) -> None:
    """Every exported network of `onnx_policy` against its torch original, on the same inputs."""
    for net, ort_net in zip(reference.networks(), onnx_policy.networks(), strict=True):
        assert isinstance(ort_net.module, OrtModule)
        for n in batches:
            inputs = net.inputs(n)
            err = np.abs(ort_net.module(*inputs.values()).numpy() - torch_outputs(net, inputs)).max()
            print(f"{label} {net.name} batch {n}: max abs error {err:.2e}")
            assert err < NETWORK_TOL, f"{net.name}: {err}"


def assert_chunks_match(reference: torch.nn.Module, onnx_policy: torch.nn.Module, obs: dict, label: str) -> None:
    reference.reset()
    onnx_policy.reset()
    err = (onnx_policy.predict_action_chunk(obs) - reference.predict_action_chunk(obs)).abs().max().item()
    print(f"{label} chunk batch {len(next(iter(obs.values())))}: max abs error {err:.2e}")
    assert err < CHUNK_TOL


@pytest.mark.parametrize(("kind", "kw"), CASES, ids=IDS)
def test_every_network_and_the_whole_policy_match_torch(tmp_path: Path, kind: str, kw: dict) -> None:
    path = saved(tmp_path, kind, kw)
    reference, _ = load(path)
    manifest = export_policy(reference, path, PROC)
    expected = {n.name for n in reference.networks()}
    assert set(manifest["networks"]) == expected and "encoder" in expected
    assert manifest["processing"] == PROC

    onnx_policy, onnx_info = load(path, backend="onnxruntime")
    assert onnx_info["onnx"]["providers_in_use"]["encoder"] == ["CPUExecutionProvider"]
    assert all(entry["parity_max_abs_error"] < NETWORK_TOL for entry in manifest["networks"].values())
    assert_networks_match(reference, onnx_policy, (1, 5), f"{kind}{kw}")
    for n in (1, 3):
        assert_chunks_match(reference, onnx_policy, batch(n, seed=n)["obs"], f"{kind}{kw}")


def test_diffusion_timestep_scalar_is_broadcast_to_the_batch(tmp_path: Path) -> None:
    path = saved(tmp_path, "diffusion", {})
    reference, _ = load(path)
    export_policy(reference, path, PROC)
    onnx_policy, _ = load(path, backend="onnxruntime")
    x, cond = torch.randn(3, 8, 4), torch.randn(3, reference.encoder.feature_dim)
    t = torch.tensor(7)
    torch.testing.assert_close(onnx_policy.unet(x, t, cond), reference.unet(x, t, cond), atol=NETWORK_TOL, rtol=0)


def test_missing_corrupt_and_stale_exports_are_refused(tmp_path: Path) -> None:
    path = saved(tmp_path, "difftori", {})
    policy, _ = load(path)
    with pytest.raises(OnnxModelError, match="python -m difftori_core.export"):
        load(path, backend="onnxruntime")
    export_policy(policy, path, PROC)

    encoder = path / ONNX_DIR / "encoder.onnx"
    good = encoder.read_bytes()
    encoder.write_bytes(good[: len(good) // 2])
    with pytest.raises(OnnxModelError, match="corrupt"):
        load(path, backend="onnxruntime")
    encoder.write_bytes(good)

    manifest = path / ONNX_DIR / "manifest.json"
    manifest.write_text("{not json")
    with pytest.raises(OnnxModelError, match="not valid JSON"):
        load(path, backend="onnxruntime")
    export_policy(policy, path, PROC)

    old_export = shutil.copytree(path / ONNX_DIR, tmp_path / "old_export")
    with torch.no_grad():  # retrained weights, re-saved as a consistent checkpoint
        next(policy.parameters()).add_(0.1)
    ckpt.save_checkpoint(path, policy, {"policy": to_dict(small_config("difftori"))}, {"processing": PROC})
    with pytest.raises(OnnxModelError, match="python -m difftori_core.export"):
        load(path, backend="onnxruntime")  # a re-save does not carry the old export along
    shutil.copytree(old_export, path / ONNX_DIR)  # ... but one copied back is stale
    with pytest.raises(OnnxModelError, match="other weights"):
        load(path, backend="onnxruntime")
    with pytest.raises(ValueError, match="backend must be one of"):
        load(path, backend="tensorrt")


def test_export_cli_writes_files_and_reports_parity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = saved(tmp_path, "mlp_bc", {})
    assert main([str(path), "--out", str(tmp_path / "elsewhere")]) == 0
    out = capsys.readouterr().out
    assert "encoder.onnx" in out and "base_head.onnx" in out and "max |onnxruntime - torch|" in out
    manifest = json.loads((tmp_path / "elsewhere" / "manifest.json").read_text())
    assert manifest["opset"] == 17 and manifest["networks"]["encoder"]["inputs"]["image"]["dtype"] == "uint8"
    assert main([str(tmp_path / "nowhere")]) == 2


SHIPPED = sorted(p for p in (Path(__file__).parents[1] / "models").iterdir() if (p / "onnx").is_dir())


@pytest.mark.parametrize("model", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_models_carry_an_onnx_export_that_matches_torch(model: Path) -> None:
    reference, _ = load(model)
    onnx_policy, _ = load(model, backend="onnxruntime")
    assert_networks_match(reference, onnx_policy, (1, 4), model.name)
    # The encoder's example input: one raw observation of the model's shapes.
    assert_chunks_match(reference, onnx_policy, reference.example_observation(1), model.name)


def test_use_onnxruntime_rejects_an_export_of_another_policy_type(tmp_path: Path) -> None:
    path = saved(tmp_path, "mlp_bc", {})
    policy, _ = load(path)
    export_policy(policy, path, PROC)
    diffusion, _ = fitted("diffusion")
    with pytest.raises(OnnxModelError, match="no 'denoiser' entry"):
        use_onnxruntime(diffusion, path)


def test_auto_backend_times_both_when_there_is_an_export_and_still_refuses_a_broken_one(tmp_path: Path) -> None:
    path = saved(tmp_path, "diffusion", {})
    policy, info = load(path, backend="auto")
    assert info["backend"] == "torch" and "chunk_ms" not in info  # nothing to compare with
    export_policy(policy, path, PROC)
    chosen, info = load(path, backend="auto")
    ms = info["chunk_ms"]
    assert set(ms) == {"torch", "onnxruntime"} and all(v > 0 for v in ms.values())
    assert info["backend"] == min(ms, key=ms.get)
    assert isinstance(chosen.encoder, OrtModule) == (info["backend"] == "onnxruntime")
    # The timing ran on copies: the chosen policy samples exactly like a freshly loaded one.
    obs = batch(2, seed=3)["obs"]
    fresh, _ = load(path)
    torch.testing.assert_close(
        chosen.predict_action_chunk(obs), fresh.predict_action_chunk(obs), atol=CHUNK_TOL, rtol=0
    )
    (path / ONNX_DIR / "denoiser.onnx").write_bytes(b"garbage")
    with pytest.raises(OnnxModelError, match="denoiser.onnx: sha256 does not match"):
        load(path, backend="auto")


def test_asking_for_cuda_without_cuda_libraries_says_so_once_and_runs_on_cpu() -> None:
    import subprocess
    import sys

    code = (
        "from pathlib import Path\n"
        "from difftori_core.deploy.onnx_backend import make_session, providers_for\n"
        f"s = make_session(Path({str(SHIPPED[0] / ONNX_DIR / 'encoder.onnx')!r}), providers_for('cuda'))\n"
        "print('PROVIDERS', s.get_providers())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    output = proc.stdout + proc.stderr
    if "CUDAExecutionProvider" in proc.stdout:  # a machine with a working CUDA: nothing to report
        assert "cannot load" not in output
    else:
        assert "PROVIDERS ['CPUExecutionProvider']" in proc.stdout
        noise = [line for line in output.splitlines() if line and not line.startswith("PROVIDERS")]
        assert len(noise) == 1 and "cannot load its CUDA provider" in noise[0], noise
