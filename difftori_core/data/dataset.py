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

Writing is atomic: everything goes to a temporary sibling directory, which is renamed into place
(an existing dataset is moved aside first and deleted after), so a crash never leaves a half
dataset under the real name. Loading checks the format name, version, checksum and size of the
data file, that every schema key is present with its dtype and (N, *shape), and that episode_ends
is consistent, and refuses anything else with a `DatasetError` naming the file and the problem.

Training windows (Diffusion Policy's sampler): for frame t of an episode, the `n_obs_steps`
observation frames ending at t (the episode's first frame repeated before its start) and the
`horizon` actions starting at t (its last action repeated after its end). `Dataset.window(t, ...)`
and `Dataset.iter_windows(...)` return exactly what `difftori_core.training_data.WindowSampler`
batches for training, from the same index computation.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "difftori-dataset"
VERSION = 1
META, DATA = "meta.json", "data.npz"
REQUIRED_META = ("num_frames", "episode_ends", "schema", "files")


class DatasetError(RuntimeError):
    """A dataset is missing, corrupt, or not in the format/version this code reads."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            data = {k: np.concatenate([e[k] for e in self._episodes]) for k in self._schema}
            np.savez_compressed(tmp / DATA, **data)
            _fsync(tmp / DATA)
            ends = np.cumsum([len(e["action"]) for e in self._episodes]).tolist()
            meta = {
                "format": FORMAT,
                "version": VERSION,
                "num_frames": int(ends[-1]),
                "episode_ends": [int(e) for e in ends],
                "schema": {k: {"dtype": dt.name, "shape": list(shape)} for k, (dt, shape) in self._schema.items()},
                "files": {DATA: {"sha256": _sha256(tmp / DATA), "bytes": (tmp / DATA).stat().st_size}},
                "env": self.env,
                "processing": self.processing,
                "info": self.info,
                "source": self.source,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "creator": {"numpy": np.__version__, "python": platform.python_version()},
            }
            (tmp / META).write_text(json.dumps(meta, indent=1))
            _fsync(tmp / META)
            old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
            if self.path.exists():
                self.path.rename(old)
            tmp.rename(self.path)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
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
        self._windows: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

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

    def _window_indices(self, n_obs_steps: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        if n_obs_steps < 1 or horizon < 1:
            raise ValueError(f"n_obs_steps and horizon must be positive, got {n_obs_steps}, {horizon}")
        if (n_obs_steps, horizon) not in self._windows:
            # The one implementation of the window rule, shared with the training sampler.
            from difftori_core.training_data import window_indices

            self._windows[n_obs_steps, horizon] = window_indices(self.episode_ends, n_obs_steps, horizon)
        return self._windows[n_obs_steps, horizon]

    def window(self, t: int, n_obs_steps: int, horizon: int, obs_keys: Sequence[str] | None = None) -> dict[str, Any]:
        """The training window anchored at global frame `t`: {"obs": {key: (n_obs_steps, ...)},
        "action": (horizon, A)} (padding rule in the module docstring)."""
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} of {self.num_frames}")
        obs_idx, act_idx = self._window_indices(n_obs_steps, horizon)
        keys = [k for k in self.keys if k != "action"] if obs_keys is None else list(obs_keys)
        return {"obs": {k: self.arrays[k][obs_idx[t]] for k in keys}, "action": self.arrays["action"][act_idx[t]]}

    def iter_windows(
        self, n_obs_steps: int, horizon: int, obs_keys: Sequence[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every training window in frame order (one per frame)."""
        for t in range(self.num_frames):
            yield self.window(t, n_obs_steps, horizon, obs_keys)

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
        if _sha256(data_file) != expected.get("sha256"):
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
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{meta_file}: not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise DatasetError(f"{meta_file}: format is {found!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise DatasetError(f"{meta_file}: version {meta.get('version')!r} is not supported (this code reads {VERSION})")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise DatasetError(f"{meta_file}: missing field(s) {missing}")
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
