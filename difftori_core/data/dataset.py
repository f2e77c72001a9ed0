"""The on-disk demonstration dataset format, "difftori-dataset" version 1.

A dataset is a directory with two files:

``meta.json``::

    {"format": "difftori-dataset", "version": 1,
     "num_frames": N,                       total frames over all episodes
     "episode_ends": [e_1, ..., e_K],       exclusive end frame of each episode: 0 < e_1 < ... < e_K = N
     "schema": {key: {"dtype": "float32", "shape": [per-frame shape]}, ...},
     "files": {"data.npz": {"sha256": "<hex>", "bytes": <size>}},
     "env": {...},                          task, camera, action bounds and names, joint names, ...
     "processing": {...},                   the ProcessingSpec the observations went through (to_dict)
     "info": {...},                         free-form: how it was made (seeds, kept/discarded episodes)
     "created": "2026-01-01T00:00:00+00:00", "creator": {"numpy": ..., "python": ...}}

``data.npz``
    one array per schema key, the frames of all episodes concatenated in order: shape (N, *shape).
    Keys: `action` (N, A) float32 is required; observations are any of `point_cloud` (N, P, 3|6)
    float32, `image` (N, 3, h, w) uint8, `agent_pos` (N, D) float32, as `difftori_core.processing`
    produced them with the recorded spec.

Why one compressed .npz: it is a zip of plain .npy files that any numpy reads without this code;
deflate shrinks rendered RGB frames several-fold (large flat regions) and gains a little on
float point clouds; training loads the whole dataset into memory once anyway, so memory mapping
(safetensors' strength) buys nothing, and one data file means one checksum.

Writing is atomic (`artifacts.atomic_directory`), so a crash never leaves a half dataset under
the real name. Loading checks the format name, version and field types of meta.json, the
checksum and size of the data file, that every schema key is present with its dtype and
(N, *shape), and that episode_ends is consistent, and refuses anything else with a
`DatasetError` naming the file and the problem (and the field).

Training windows over a dataset: `difftori_core.data.windows.WindowSampler.from_dataset`.
"""

from __future__ import annotations

import json
import platform
import zipfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from difftori_core.artifacts import DATASET_DATA as DATA
from difftori_core.artifacts import DATASET_META as META
from difftori_core.artifacts import ArtifactError, atomic_directory, check_fields, read_json, sha256

FORMAT = "difftori-dataset"
VERSION = 1
META_FIELDS: dict[str, type | tuple[type, ...]] = {
    "num_frames": int,
    "episode_ends": list,
    "schema": dict,
    "files": dict,
    "env": dict,
    "processing": dict,
    "info": dict,
    "source": str,
}
OPTIONAL_META = ("env", "processing", "info", "source")


class DatasetError(ArtifactError):
    """A dataset is missing, corrupt, or not in the format/version this code reads."""


class DatasetWriter:
    """Accumulates episodes in memory; `close()` writes the dataset atomically and returns its path.

    Usable as a context manager: leaving the block normally writes, an exception writes nothing.
    """

    def __init__(
        self,
        path: str | Path,
        env: Mapping[str, Any] | None = None,
        processing: Mapping[str, Any] | None = None,
        source: str = "",
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.env, self.processing = dict(env or {}), dict(processing or {})
        self.source, self.info = source, dict(info or {})
        self._episodes: list[dict[str, np.ndarray]] = []
        self._schema: dict[str, tuple[np.dtype, tuple[int, ...]]] | None = None

    def add_episode(self, episode: Mapping[str, Any]) -> None:
        """One episode: {key: (T, ...) array}, all of the same length T > 0, `action` (T, A) included."""
        arrays = {str(k): np.ascontiguousarray(v) for k, v in episode.items()}
        if "action" not in arrays:
            raise DatasetError(f"{self.path}: an episode needs an 'action' array, got keys {sorted(arrays)}")
        if arrays["action"].ndim != 2 or arrays["action"].dtype.kind != "f":
            raise DatasetError(
                f"{self.path}: 'action' must be float (T, A), got {arrays['action'].dtype} {arrays['action'].shape}"
            )
        lengths = {k: (v.shape[0] if v.ndim else 0) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1 or lengths["action"] == 0:
            raise DatasetError(f"{self.path}: episode arrays must share a non-zero length, got {lengths}")
        for key, value in arrays.items():
            if value.dtype.kind not in "fiub":
                raise DatasetError(f"{self.path}: {key!r} has unsupported dtype {value.dtype}")
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise DatasetError(f"{self.path}: episode {len(self._episodes)} {key!r} contains NaN/Inf")
        schema = {k: (v.dtype, tuple(v.shape[1:])) for k, v in arrays.items()}
        if self._schema is None:
            self._schema = schema
        elif schema != self._schema:
            raise DatasetError(f"{self.path}: episode schema {schema} differs from the first episode's {self._schema}")
        self._episodes.append(arrays)

    def __len__(self) -> int:
        return len(self._episodes)

    @property
    def num_frames(self) -> int:
        return sum(len(e["action"]) for e in self._episodes)

    def close(self) -> Path:
        if not self._episodes or self._schema is None:
            raise DatasetError(f"{self.path}: no episodes to write")
        if self.path.exists() and not (self.path / META).is_file() and any(self.path.iterdir()):
            raise DatasetError(f"{self.path}: exists and is not a dataset; refusing to replace it")
        with atomic_directory(self.path) as tmp:
            data = {k: np.concatenate([e[k] for e in self._episodes]) for k in self._schema}
            np.savez_compressed(tmp / DATA, **data)
            ends = np.cumsum([len(e["action"]) for e in self._episodes]).tolist()
            meta = {
                "format": FORMAT,
                "version": VERSION,
                "num_frames": int(ends[-1]),
                "episode_ends": [int(e) for e in ends],
                "schema": {k: {"dtype": dt.name, "shape": list(shape)} for k, (dt, shape) in self._schema.items()},
                "files": {DATA: {"sha256": sha256(tmp / DATA), "bytes": (tmp / DATA).stat().st_size}},
                "env": self.env,
                "processing": self.processing,
                "info": self.info,
                "source": self.source,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "creator": {"numpy": np.__version__, "python": platform.python_version()},
            }
            (tmp / META).write_text(json.dumps(meta, indent=1))
        return self.path

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()


class Dataset:
    """A loaded, verified dataset: `arrays` (key -> (N, ...)), `episode_ends` (K,), `meta`."""

    def __init__(self, path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.path, self.meta, self.arrays = path, meta, arrays
        self.episode_ends = np.asarray(meta["episode_ends"], dtype=np.int64)

    @property
    def keys(self) -> list[str]:
        return list(self.arrays)

    @property
    def num_frames(self) -> int:
        return int(self.meta["num_frames"])

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)

    def frame_shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.meta["schema"][key]["shape"])

    def episode_bounds(self, index: int) -> tuple[int, int]:
        """[start, end) frame range of episode `index`."""
        if not -self.num_episodes <= index < self.num_episodes:
            raise IndexError(f"episode {index} of {self.num_episodes}")
        index %= self.num_episodes
        return (0 if index == 0 else int(self.episode_ends[index - 1])), int(self.episode_ends[index])

    def episode(self, index: int) -> dict[str, np.ndarray]:
        start, end = self.episode_bounds(index)
        return {k: v[start:end] for k, v in self.arrays.items()}

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        """Read and verify a dataset; raises `DatasetError` naming the file and the problem."""
        path = Path(path)
        meta = read_meta(path)
        data_file = path / DATA
        if not data_file.is_file():
            raise DatasetError(f"{data_file}: missing (meta.json lists it)")
        expected = meta["files"][DATA]
        size = data_file.stat().st_size
        if size != expected.get("bytes"):
            what = "truncated" if isinstance(expected.get("bytes"), int) and size < expected["bytes"] else "wrong size"
            raise DatasetError(f"{data_file}: {size} bytes, meta.json says {expected.get('bytes')} ({what})")
        if sha256(data_file) != expected.get("sha256"):
            raise DatasetError(f"{data_file}: sha256 checksum mismatch (the file is corrupt or was modified)")
        try:
            with np.load(data_file, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
            raise DatasetError(f"{data_file}: unreadable ({err})") from err
        _check_arrays(path, meta, arrays)
        return cls(path, meta, arrays)


def read_meta(path: str | Path) -> dict[str, Any]:
    """meta.json of the dataset at `path`, with its format, version and fields checked (cheap:
    the data file is not read)."""
    path = Path(path)
    meta_file = path / META
    if not meta_file.is_file():
        raise DatasetError(f"{path}: not a dataset (no {META})")
    meta = read_json(meta_file, DatasetError)
    if meta.get("format") != FORMAT:
        raise DatasetError(f"{meta_file}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise DatasetError(f"{meta_file}: version {meta.get('version')!r} is not supported (this code reads {VERSION})")
    check_fields(meta, META_FIELDS, meta_file, DatasetError, optional=OPTIONAL_META)
    for key in ("env", "processing", "info"):
        meta.setdefault(key, {})
    n = meta["num_frames"]
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise DatasetError(f"{meta_file}: num_frames must be a positive integer, got {n!r}")
    ends = meta["episode_ends"]
    if (
        not isinstance(ends, list)
        or not ends
        or not all(isinstance(e, int) and not isinstance(e, bool) for e in ends)
        or any(b <= a for a, b in zip([0, *ends[:-1]], ends, strict=True))
        or ends[-1] != n
    ):
        shown = ends[:8] if isinstance(ends, list) else ends
        raise DatasetError(
            f"{meta_file}: episode_ends {shown}{'...' if isinstance(ends, list) and len(ends) > 8 else ''} "
            f"must be positive integers, strictly increasing, ending at num_frames = {n}"
        )
    schema = meta["schema"]
    if not isinstance(schema, dict) or "action" not in schema:
        raise DatasetError(f"{meta_file}: schema must be a mapping that includes 'action'")
    for key, spec in schema.items():
        ok = isinstance(spec, dict) and isinstance(spec.get("shape"), list)
        ok = ok and all(isinstance(d, int) and d >= 0 for d in spec["shape"])
        try:
            ok = ok and np.dtype(spec["dtype"]).kind in "fiub"
        except (TypeError, KeyError):
            ok = False
        if not ok:
            raise DatasetError(f"{meta_file}: schema entry {key!r} must be {{dtype, shape: [ints]}}, got {spec!r}")
    files = meta["files"]
    if not isinstance(files, dict) or not isinstance(files.get(DATA), dict):
        raise DatasetError(f"{meta_file}: files must describe {DATA!r} (sha256, bytes)")
    return meta


def _check_arrays(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    schema, data_file = meta["schema"], path / DATA
    missing, extra = sorted(set(schema) - set(arrays)), sorted(set(arrays) - set(schema))
    if missing or extra:
        raise DatasetError(
            f"{data_file}: key(s) missing {missing} / not in the schema {extra} (schema: {sorted(schema)})"
        )
    n = meta["num_frames"]
    for key, spec in schema.items():
        arr = arrays[key]
        want = (n, *spec["shape"])
        if arr.shape != want or arr.dtype != np.dtype(spec["dtype"]):
            raise DatasetError(
                f"{data_file}: {key!r} is {arr.dtype.name} {arr.shape}, schema says {spec['dtype']} {want}"
            )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise DatasetError(f"{data_file}: {key!r} contains NaN/Inf")
