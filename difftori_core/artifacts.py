"""On-disk artifacts: one home for file names, hashing, atomic directory writes and checked reads.

Checkpoints and shipped models (`difftori_core.checkpoint`), demonstration datasets
(`difftori_core.data.dataset`) and ONNX exports (`difftori_core.deploy.export`) are directories
written the same way: everything goes to a temporary sibling, every file is fsynced, the
directory is renamed into place (an existing one is moved aside first and deleted after) and the
parent is fsynced, so a crash never leaves a half-written artifact under the real name.

Reading is checked the same way too: `read_json` / `read_yaml` / `verify_file` raise
`ArtifactError` naming the file and the problem (missing, undecodable, wrong top-level type, hash
mismatch), and `check_fields` names the file and the field that is missing or of the wrong type.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

# The file names of every artifact directory, in one place.
MODEL_FILE = "model.safetensors"  # policy weights and buffers (normalizer statistics included)
CONFIG_FILE = "config.yaml"  # the resolved training config
SPEC_FILE = "spec.json"  # format, version, policy / processing spec, weights hash
STATE_FILE = "training_state.pt"  # optimizer, step, RNG (training checkpoints only)
LATEST = "latest"  # a run's pointer to its newest checkpoint
ONNX_DIR = "onnx"  # a model's ONNX export, beside its weights
MANIFEST = "manifest.json"  # the ONNX export's manifest
DATASET_META, DATASET_DATA = "meta.json", "data.npz"


class ArtifactError(RuntimeError):
    """An artifact (checkpoint, model, dataset, export) is missing, corrupt or malformed."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync(path: Path) -> None:
    """fsync a file or a directory (a directory's entry list, after a rename into it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Write a directory atomically: the block fills the yielded temporary directory; on normal
    exit its files are fsynced and it replaces `path`; on an exception nothing changes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                fsync(f)
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
        fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Replace one file atomically (a pointer or a manifest next to other files)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    fsync(tmp)
    os.replace(tmp, path)


def _read_text(path: Path, error: type[ArtifactError]) -> str:
    try:
        return path.read_text()
    except FileNotFoundError as err:
        raise error(f"{path.parent}: missing {path.name}") from err
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise error(f"{path}: unreadable ({err})") from err


def read_json(path: Path, error: type[ArtifactError] = ArtifactError) -> dict[str, Any]:
    """A JSON object from `path`; anything else raises `error` naming the file."""
    text = _read_text(path, error)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise error(f"{path}: top level must be a JSON object, got {type(data).__name__}")
    return data


def read_yaml(path: Path, error: type[ArtifactError] = ArtifactError) -> dict[str, Any]:
    """A YAML mapping from `path`; anything else raises `error` naming the file."""
    text = _read_text(path, error)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise error(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def verify_file(path: Path, expected_sha256: str | None, error: type[ArtifactError] = ArtifactError) -> None:
    """Refuse a missing file or one whose sha256 is not the recorded one."""
    if not path.is_file():
        raise error(f"{path}: missing")
    if expected_sha256 is not None and sha256(path) != expected_sha256:
        raise error(f"{path}: sha256 does not match the recorded one (the file is corrupt or was modified)")


_TYPE_NAMES = {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number"}


def check_fields(
    data: Mapping[str, Any],
    fields: Mapping[str, type | tuple[type, ...]],
    where: Path | str,
    error: type[ArtifactError] = ArtifactError,
    optional: tuple[str, ...] = (),
) -> None:
    """Every field of `fields` present (unless optional) with one of its types; `where` names the file."""
    for name, types in fields.items():
        if name not in data:
            if name in optional:
                continue
            raise error(f"{where}: missing field {name!r}")
        types = types if isinstance(types, tuple) else (types,)
        value = data[name]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            want = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
            raise error(f"{where}: field {name!r} must be {want}, got {type(value).__name__} {value!r:.80}")
