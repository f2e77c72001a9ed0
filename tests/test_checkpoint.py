"""Checkpoints: round trip, atomic replacement, and refusal of corrupt or mismatched files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from difftori_core import checkpoint as ckpt
from difftori_core.config import to_dict
from tests.test_policies import PROCESSING, SPEC, batch, fitted, small_config

SPEC_EXTRA = {"processing": to_dict(PROCESSING)}


def load(path: Path) -> tuple[torch.nn.Module, ckpt.ModelInfo]:
    info = ckpt.read_model(path)
    return ckpt.build_policy(info), info


def saved(tmp_path: Path, kind: str = "difftori") -> tuple[Path, torch.nn.Module]:
    policy, _ = fitted(kind)
    config = {"policy": to_dict(small_config(kind))}
    path = ckpt.save_checkpoint(tmp_path / "step_0000010", policy, config, SPEC_EXTRA, {"step": 10})
    ckpt.mark_latest(tmp_path, "step_0000010")
    return path, policy


@pytest.mark.parametrize("kind", ["mlp_bc", "difftori"])
def test_round_trip_gives_identical_actions(tmp_path: Path, kind: str) -> None:
    path, policy = saved(tmp_path, kind)
    loaded, info = load(tmp_path)  # via the `latest` pointer
    assert info.path == path and info.policy_spec.action_dim == SPEC.action_dim
    assert info.spec["version"] == ckpt.VERSION and len(info.spec["weights_sha256"]) == 64
    policy.eval()
    obs = batch(3)["obs"]
    torch.testing.assert_close(loaded.predict_action_chunk(obs), policy.predict_action_chunk(obs))
    torch.testing.assert_close(loaded.normalizer.action_max, policy.normalizer.action_max)


def test_resave_replaces_atomically_and_leaves_no_temporaries(tmp_path: Path) -> None:
    path, policy = saved(tmp_path)
    ckpt.save_checkpoint(path, policy, {"policy": to_dict(small_config("difftori"))}, SPEC_EXTRA, {"step": 11})
    assert ckpt.load_training_state(path)["step"] == 11
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_0000010"]


def test_truncated_weights_are_refused(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    data = (path / ckpt.MODEL_FILE).read_bytes()
    (path / ckpt.MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="corrupt"):
        load(path)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    cfg = small_config("difftori")
    cfg.difftori.residual_dim = 5
    (path / ckpt.CONFIG_FILE).write_text(json.dumps({"policy": to_dict(cfg)}))
    with pytest.raises(ckpt.CheckpointError, match="wrong shape"):
        load(path)


def test_wrong_version_and_missing_files_are_refused(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    spec = json.loads((path / ckpt.SPEC_FILE).read_text())
    (path / ckpt.SPEC_FILE).write_text(json.dumps({**spec, "version": 99}))
    with pytest.raises(ckpt.CheckpointError, match="version 99"):
        load(path)
    (path / ckpt.SPEC_FILE).unlink()
    with pytest.raises(ckpt.CheckpointError, match="missing spec.json"):
        load(path)
    with pytest.raises(ckpt.CheckpointError, match="no model.safetensors"):
        load(tmp_path / "nowhere")


def test_nan_weights_are_refused(tmp_path: Path) -> None:
    policy, _ = fitted("mlp_bc")
    with torch.no_grad():
        next(policy.parameters()).fill_(float("nan"))
    path = ckpt.save_checkpoint(tmp_path / "c", policy, {"policy": to_dict(small_config("mlp_bc"))}, SPEC_EXTRA)
    with pytest.raises(ckpt.CheckpointError, match="NaN"):
        load(path)


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    state = ckpt.rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), __import__("numpy").random.rand(2))
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    torch.testing.assert_close(torch.rand(3), expected[0])
    assert (__import__("numpy").random.rand(2) == expected[1]).all()
