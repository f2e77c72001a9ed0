"""Corruption suite: a malformed model directory or dataset is refused with a message that names
the file and the field, through the library, the eval CLI and the trainer -- never a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from difftori_core.artifacts import ArtifactError
from difftori_core.checkpoint import build_policy, read_model
from difftori_core.data.dataset import Dataset, DatasetError, DatasetWriter

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "door-open-v3-difftori"


def edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(model: Path) -> None:
        data = json.loads((model / name).read_text())
        change(data)  # in place (its return value, e.g. of a pop, is ignored)
        (model / name).write_text(json.dumps(data))

    return apply


def edit_yaml(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(model: Path) -> None:
        data = yaml.safe_load((model / "config.yaml").read_text())
        change(data)
        (model / "config.yaml").write_text(yaml.safe_dump(data))

    return apply


def write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda model: (model / name).write_bytes(content)


def flip_a_weight_bit(model: Path) -> None:
    """Flip the lowest mantissa bit of the last float: a finite, plausible, wrong weight."""
    data = bytearray((model / "model.safetensors").read_bytes())
    data[-4] ^= 0x01
    (model / "model.safetensors").write_bytes(bytes(data))


def _set(d: dict, path: str, value: object) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        d = d[p]
    d[leaf] = value


MODEL_CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "config not utf-8": (write("config.yaml", b"policy:\n  type: \xff\xfe\n"), ["config.yaml", "not UTF-8"]),
    "config not yaml": (write("config.yaml", b"policy: [unclosed\n"), ["config.yaml", "not valid YAML"]),
    "config a list": (write("config.yaml", b"- 1\n- 2\n"), ["config.yaml", "top level must be a mapping"]),
    "config without policy": (edit_yaml(lambda c: c.pop("policy")), ["config.yaml", "'policy'"]),
    "horizon of wrong type": (
        edit_yaml(lambda c: _set(c, "policy.horizon", "sixteen")),
        ["config.yaml", "policy.horizon", "expected int"],
    ),
    "inconsistent horizon": (
        edit_yaml(lambda c: _set(c, "policy.n_action_steps", 40)),
        ["config.yaml", "'policy'", "n_action_steps"],
    ),
    "unknown policy type": (edit_yaml(lambda c: _set(c, "policy.type", "gpt")), ["config.yaml", "unknown policy type"]),
    "unknown config key": (
        edit_yaml(lambda c: _set(c, "policy.difftori.dampnig", 0.1)),
        ["config.yaml", "policy.difftori.dampnig"],
    ),
    "spec not json": (write("spec.json", b"{oops"), ["spec.json", "not valid JSON"]),
    "spec a list": (write("spec.json", b"[1, 2]"), ["spec.json", "top level must be a JSON object"]),
    "spec without processing": (edit_json("spec.json", lambda s: s.pop("processing")), ["spec.json", "'processing'"]),
    "processing a list": (
        edit_json("spec.json", lambda s: _set(s, "processing", [1, 2])),
        ["spec.json", "'processing'", "mapping"],
    ),
    "inverted crop": (
        edit_json("spec.json", lambda s: _set(s, "processing.crop_min", [1.0, 1.0, 1.0])),
        ["spec.json", "'processing'", "crop_min < crop_max"],
    ),
    "action_dim a string": (
        edit_json("spec.json", lambda s: _set(s, "policy_spec.action_dim", "4")),
        ["spec.json", "'policy_spec'", "action_dim"],
    ),
    "policy_spec without bounds": (
        edit_json("spec.json", lambda s: s["policy_spec"].pop("action_low")),
        ["spec.json", "'policy_spec'", "action_low"],
    ),
    "bounds of wrong length": (
        edit_json("spec.json", lambda s: _set(s, "policy_spec.action_high", [1.0])),
        ["spec.json", "'policy_spec'", "action bounds"],
    ),
    "step a string": (edit_json("spec.json", lambda s: _set(s, "step", "ten")), ["spec.json", "'step'", "integer"]),
    "no weights hash": (edit_json("spec.json", lambda s: s.pop("weights_sha256")), ["spec.json", "'weights_sha256'"]),
    "policy type mismatch": (
        edit_json("spec.json", lambda s: _set(s, "policy_type", "mlp_bc")),
        ["spec.json", "'policy_type'"],
    ),
    "observation not processed": (
        edit_json("spec.json", lambda s: _set(s, "processing.keys", ["point_cloud"])),
        ["spec.json", "obs_shapes", "processing.keys"],
    ),
    "future version": (edit_json("spec.json", lambda s: _set(s, "version", 9)), ["spec.json", "version 9"]),
    "weights bit flip": (flip_a_weight_bit, ["model.safetensors", "sha256 does not match"]),
    "weights missing": (lambda m: (m / "model.safetensors").unlink(), ["no model.safetensors"]),
}


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(MODEL, out, ignore=shutil.ignore_patterns("onnx", "*.png", "README.md"))
    return out


@pytest.mark.parametrize("case", list(MODEL_CASES), ids=list(MODEL_CASES))
def test_corrupt_model_is_refused_naming_file_and_field(model: Path, case: str) -> None:
    corrupt, expected = MODEL_CASES[case]
    build_policy(read_model(model))  # intact, it loads
    corrupt(model)
    with pytest.raises(ArtifactError) as err:
        build_policy(read_model(model))
    for text in expected:
        assert text in str(err.value), (case, str(err.value))


@pytest.mark.parametrize("case", ["config not utf-8", "inverted crop", "weights bit flip"])
def test_eval_cli_refuses_a_corrupt_model_without_a_traceback(
    model: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from difftori_core.eval import main

    MODEL_CASES[case][0](model)
    assert main([str(model), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(model) in err and MODEL_CASES[case][1][-1] in err


# -- datasets ------------------------------------------------------------------------------------


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    with DatasetWriter(tmp_path / "ds", env={"task": "door-open-v3"}, processing={"keys": ["agent_pos"]}) as w:
        for _ in range(2):
            w.add_episode({"agent_pos": rng.normal(size=(5, 3)).astype(np.float32), "action": np.zeros((5, 4), "f4")})
    return tmp_path / "ds"


def flip_a_data_byte(ds: Path) -> None:
    data = bytearray((ds / "data.npz").read_bytes())
    data[len(data) // 2] ^= 0x01
    (ds / "data.npz").write_bytes(bytes(data))


DATASET_CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "env a list": (edit_json("meta.json", lambda m: _set(m, "env", ["door-open-v3"])), ["meta.json", "'env'"]),
    "processing a string": (
        edit_json("meta.json", lambda m: _set(m, "processing", "default")),
        ["meta.json", "'processing'"],
    ),
    "num_frames a string": (
        edit_json("meta.json", lambda m: _set(m, "num_frames", "10")),
        ["meta.json", "'num_frames'", "integer"],
    ),
    "episode_ends missing": (edit_json("meta.json", lambda m: m.pop("episode_ends")), ["meta.json", "'episode_ends'"]),
    "meta not utf-8": (write("meta.json", b"\xff\xfe{}"), ["meta.json", "not UTF-8"]),
    "meta not json": (write("meta.json", b"{"), ["meta.json", "not valid JSON"]),
    "data bit flip": (flip_a_data_byte, ["data.npz", "sha256"]),
    "schema entry malformed": (
        edit_json("meta.json", lambda m: _set(m, "schema.agent_pos", {"dtype": "float32"})),
        ["meta.json", "schema entry 'agent_pos'"],
    ),
}


@pytest.mark.parametrize("case", list(DATASET_CASES), ids=list(DATASET_CASES))
def test_corrupt_dataset_is_refused_naming_file_and_field(dataset: Path, case: str) -> None:
    corrupt, expected = DATASET_CASES[case]
    Dataset.load(dataset)
    corrupt(dataset)
    with pytest.raises(DatasetError) as err:
        Dataset.load(dataset)
    for text in expected:
        assert text in str(err.value), (case, str(err.value))


def test_trainer_refuses_a_dataset_with_an_invalid_processing_spec(dataset: Path, tmp_path: Path) -> None:
    from difftori_core.config import load_config
    from difftori_core.training.il import TrainConfig, ensure_dataset

    edit_json("meta.json", lambda m: _set(m, "processing", {"keys": ["agent_pos"], "num_points": -3}))(dataset)
    cfg = load_config(TrainConfig, None, [f"dataset={dataset}", "processing.keys=[agent_pos]"])
    with pytest.raises(DatasetError, match=r"meta.json: field 'processing'.*num_points"):
        ensure_dataset(cfg)
