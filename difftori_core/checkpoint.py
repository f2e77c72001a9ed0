"""Checkpoints and shipped models: one directory format, written atomically, verified when read.

A checkpoint is a directory (file names: `difftori_core.artifacts`):

    model.safetensors      policy weights and buffers (incl. normalizer statistics)
    config.yaml            the resolved training config (its policy section builds the network)
    spec.json              format and version, policy type, policy spec (observation shapes,
                           action bounds and names), processing spec (crop, sampling, image
                           size), task, env metadata, step, and the sha256 of model.safetensors
    training_state.pt      optimizer state, step, RNG states (only in training checkpoints;
                           shipped models leave it out) -- tensors and plain types only, loaded
                           with `weights_only=True`

`read_model` checks everything but the weights (cheap: the controller calls it to validate a
`model` parameter); `build_policy` verifies the weights' hash and shapes and loads them. Every
problem raises `CheckpointError` naming the file and the field. Saves go through
`artifacts.atomic_directory` and then replace the run's `latest` pointer, so a kill at any moment
leaves the previous checkpoint intact.

Versions: 2 adds the weights' sha256 and the policy type to spec.json; a config holds only its
policy type's sections. Version 1 directories still load (their weights are not hash-checked);
saving writes version 2.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from difftori_core.artifacts import (
    CONFIG_FILE,
    LATEST,
    MODEL_FILE,
    SPEC_FILE,
    STATE_FILE,
    ArtifactError,
    atomic_directory,
    check_fields,
    read_json,
    read_yaml,
    sha256,
    verify_file,
    write_text_atomic,
)
from difftori_core.config import ConfigError, from_dict, to_dict
from difftori_core.policies import Policy, PolicyConfig, PolicySpec, make_policy
from difftori_core.processing import ProcessingSpec

FORMAT = "difftori-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)


class CheckpointError(ArtifactError):
    """A checkpoint is missing, corrupt, or does not match the code that loads it."""


@dataclass
class ModelInfo:
    """A model directory's validated contents (everything but the weights)."""

    path: Path
    config: dict[str, Any]  # config.yaml as saved
    spec: dict[str, Any]  # spec.json as saved
    policy_config: PolicyConfig
    policy_spec: PolicySpec
    processing: ProcessingSpec

    @property
    def task(self) -> str:
        return str(self.spec.get("task", self.config.get("task", "")))

    @property
    def env(self) -> dict[str, Any]:
        """The recording environment's metadata (joint and action names, camera, bounds)."""
        return dict(self.spec.get("env", {}))


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


def save_checkpoint(
    directory: Path,
    policy: Policy,
    config: dict[str, Any],
    spec_extra: dict[str, Any],
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Atomically write a checkpoint directory at `directory` (replacing an older one there).
    `spec_extra` must hold `processing` (the ProcessingSpec as a dict); task, env, step, ... ."""
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
        save_file(state, tmp / MODEL_FILE, metadata={"format": FORMAT, "version": str(VERSION)})
        (tmp / CONFIG_FILE).write_text(_yaml_dump(config))
        spec = {
            "format": FORMAT,
            "version": VERSION,
            "policy_type": policy.type_name,
            "policy_spec": asdict(policy.spec),
            **spec_extra,
            "weights_sha256": sha256(tmp / MODEL_FILE),
        }
        (tmp / SPEC_FILE).write_text(_json_dump(spec))
        if training_state is not None:
            torch.save(training_state, tmp / STATE_FILE)
    return directory


def _yaml_dump(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def _json_dump(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2)


def rewrite_spec(directory: Path, spec: dict[str, Any]) -> None:
    """Replace spec.json in place (migrations, packaging)."""
    write_text_atomic(directory / SPEC_FILE, _json_dump(spec))


def mark_latest(run_checkpoints: Path, name: str, keep: int = 0, pattern: str = "step_*") -> None:
    """Point the run's `latest` at checkpoint `name`; with keep > 0, delete all but the newest
    `keep` checkpoints matching `pattern` (names sort by step)."""
    write_text_atomic(run_checkpoints / LATEST, name + "\n")
    if keep > 0:
        old = sorted(p for p in run_checkpoints.glob(pattern) if p.name != name)
        for p in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(p, ignore_errors=True)


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


_SPEC_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "version": int,
    "policy_spec": dict,
    "processing": dict,
    "policy_type": str,
    "task": str,
    "env": dict,
    "step": int,
    "dataset": str,
    "weights_sha256": str,
}
_SPEC_OPTIONAL = ("task", "env", "step", "dataset")
_SPEC_V2 = ("policy_type", "weights_sha256")  # optional in version 1


def read_spec(path: Path) -> dict[str, Any]:
    """spec.json with its format, version and field types checked."""
    file = path / SPEC_FILE
    spec = read_json(file, CheckpointError)
    if spec.get("format") != FORMAT:
        raise CheckpointError(f"{file}: format {spec.get('format')!r} is not {FORMAT!r}")
    if spec.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{file}: version {spec.get('version')} unsupported (this code reads {list(READABLE_VERSIONS)})"
        )
    optional = _SPEC_OPTIONAL if spec["version"] >= 2 else (*_SPEC_OPTIONAL, *_SPEC_V2)
    check_fields(spec, _SPEC_FIELDS, file, CheckpointError, optional=optional)
    return spec


def read_config(path: Path) -> dict[str, Any]:
    file = path / CONFIG_FILE
    config = read_yaml(file, CheckpointError)
    if not isinstance(config.get("policy"), dict):
        raise CheckpointError(f"{file}: missing field 'policy' (a mapping)")
    return config


def _typed(cls: type, data: dict[str, Any], file: Path, field: str) -> Any:
    try:
        return from_dict(cls, data, prefix=f"{field}.")
    except (ConfigError, TypeError, ValueError) as err:
        raise CheckpointError(f"{file}: field {field!r}: {err}") from err


def read_model(path: str | Path) -> ModelInfo:
    """Resolve `path` and validate its config and spec (not the weights)."""
    ckpt = resolve(path)
    spec = read_spec(ckpt)
    config = read_config(ckpt)
    if spec["version"] == 1:
        config = _config_v1_to_v2(config)
    policy_config = _typed(PolicyConfig, config["policy"], ckpt / CONFIG_FILE, "policy")
    policy_spec = _typed(PolicySpec, spec["policy_spec"], ckpt / SPEC_FILE, "policy_spec")
    processing = _typed(ProcessingSpec, spec["processing"], ckpt / SPEC_FILE, "processing")
    if spec.get("policy_type", policy_config.type) != policy_config.type:
        raise CheckpointError(
            f"{ckpt / SPEC_FILE}: field 'policy_type' is {spec['policy_type']!r} but {CONFIG_FILE} builds "
            f"{policy_config.type!r}"
        )
    if set(policy_spec.obs_shapes) - set(processing.keys):
        raise CheckpointError(
            f"{ckpt / SPEC_FILE}: field 'policy_spec.obs_shapes' has keys {sorted(policy_spec.obs_shapes)} but "
            f"'processing.keys' is {list(processing.keys)}"
        )
    return ModelInfo(ckpt, config, spec, policy_config, policy_spec, processing)


def _config_v1_to_v2(config: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept a `refine` switch in the DiffTORI section (now the runner's `variant`)."""
    policy = dict(config["policy"])
    if isinstance(policy.get("difftori"), dict):
        policy["difftori"] = {k: v for k, v in policy["difftori"].items() if k != "refine"}
    return {**config, "policy": policy}


def instantiate(info: ModelInfo) -> Policy:
    """The (untrained) policy a model's config and spec describe."""
    try:
        return make_policy(info.policy_config, info.policy_spec)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{info.path / CONFIG_FILE}: field 'policy' describes no valid policy: {err}") from err


def load_weights(policy: Policy, path: Path, expected_sha256: str | None = None) -> None:
    """Load `path`'s weights into `policy`, refusing a hash mismatch, other shapes or NaN/Inf."""
    file = path / MODEL_FILE
    verify_file(file, expected_sha256, CheckpointError)
    try:
        state = load_file(file)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{file}: unreadable or corrupt ({err})") from err
    expected = policy.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{file} does not match the policy its config describes: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}"
        )
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise CheckpointError(f"{file}: contains NaN/Inf weights")
    policy.load_state_dict(state)


def build_policy(info: ModelInfo, device: str | torch.device = "cpu") -> Policy:
    """The model's policy with its verified weights, in eval mode on `device`."""
    policy = instantiate(info)
    load_weights(policy, info.path, info.spec.get("weights_sha256"))
    return policy.to(device).eval()


def load_training_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path / STATE_FILE, weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: no {STATE_FILE} (a shipped model cannot be resumed)") from err
    except Exception as err:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(f"{path / STATE_FILE}: unreadable or corrupt ({err})") from err


def migrate(path: str | Path) -> Path:
    """Rewrite a version-1 model directory as version 2 (weights hash, policy type, only the
    policy's own config sections), after checking that its weights load."""
    info = read_model(path)
    build_policy(info)
    config = {**info.config, "policy": to_dict(info.policy_config)}
    (info.path / CONFIG_FILE).write_text(_yaml_dump(config))
    spec = {
        **info.spec,
        "version": VERSION,
        "policy_type": info.policy_config.type,
        "weights_sha256": sha256(info.path / MODEL_FILE),
    }
    rewrite_spec(info.path, spec)
    return info.path
