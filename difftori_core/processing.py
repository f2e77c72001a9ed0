"""Observation processing saved with every model: raw sensor arrays -> fixed-shape policy inputs.

Data collection, simulated evaluation and the ROS controller node all call
`ObservationProcessor.process` with the same `ProcessingSpec` (stored in the dataset's meta.json and
next to every checkpoint, as plain data via `to_dict` / `from_dict`), so a policy sees identical
preprocessing everywhere. Nothing here depends on the simulator: the inputs are what a camera, a
depth sensor and a JointState message provide.

Raw input keys (only those the spec uses are read):

* `point_cloud` float (N, 3) (extra columns ignored) in the robot base frame, metres. Non-finite
  rows are dropped first: organized clouds from depth images mark pixels without a return as NaN.
* `point_colors` uint8 (N, 3), row-aligned with `point_cloud`; only with `point_rgb`.
* `image` uint8 (H, W, 3) RGB, any size.
* `agent_pos` float (D,) joint positions.
* `joint_velocity` float (D,) joint velocities (JointState.velocity), for torque-level agents.

Outputs (fixed shapes, whatever the input size):

* `point_cloud` float32 (num_points, 3), or (num_points, 6) = xyz + rgb in [0, 1] with `point_rgb`:
  the points inside the workspace box, evenly strided down to at most `max_fps_input` points,
  then farthest-point sampled (open3d's legacy API; its tensor API is ~50x slower) starting from
  the first point, so the result is deterministic. A crop with fewer points than `num_points` is
  padded by repeating its points (a max-pooled PointNet is unaffected by duplicates). An empty
  crop raises `ProcessingError`: silently feeding zeros to a controller would hide a sensor or
  calibration fault.
* `image` uint8 (3, h, w), channel-first RGB resized with cv2 INTER_AREA (the right filter for
  shrinking). It stays uint8 (4x smaller on disk and on the wire); the image encoder divides by 255.
* `agent_pos`, `joint_velocity` float32 (D,).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from difftori_core.config import from_dict, to_dict

KEYS = ("point_cloud", "image", "agent_pos", "joint_velocity")


class ProcessingError(ValueError):
    """A raw observation cannot be turned into policy input (the message names the key and the problem).

    `kind` says which: "nonfinite_input" (NaN/Inf values, a cloud with no finite point),
    "empty_workspace" (finite points, none inside the crop box: a frame or calibration problem),
    "invalid_input" (missing keys, wrong shapes or types)."""

    def __init__(self, message: str, kind: str = "invalid_input") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class ProcessingSpec:
    """Attributes:
    keys: observation keys the policy consumes (a non-empty subset of point_cloud, image, agent_pos,
        joint_velocity).
    crop_min, crop_max: workspace box in the robot base frame (metres). The default keeps the
        MetaWorld table's working area above its surface (z > 5 mm): the bare table top carries no
        task information and would take most of the sampled points.
    num_points: points after farthest-point sampling.
    max_fps_input: cropped clouds larger than this are strided down to it before sampling, which
        bounds the sampling cost (~1 us per input point) for high-resolution real sensors; 0: no limit.
    point_rgb: append each point's colour (from `point_colors`) as 3 more channels in [0, 1].
    image_size: (height, width) of the policy image.
    """

    keys: tuple[str, ...] = ("point_cloud", "agent_pos")
    crop_min: tuple[float, float, float] = (-0.6, 0.25, 0.005)
    crop_max: tuple[float, float, float] = (0.6, 1.05, 0.7)
    num_points: int = 512
    max_fps_input: int = 8192
    point_rgb: bool = False
    image_size: tuple[int, int] = (84, 84)

    def __post_init__(self) -> None:
        self.keys = tuple(self.keys)
        self.crop_min = tuple(float(v) for v in self.crop_min)  # type: ignore[assignment]
        self.crop_max = tuple(float(v) for v in self.crop_max)  # type: ignore[assignment]
        self.image_size = tuple(int(v) for v in self.image_size)  # type: ignore[assignment]
        unknown = sorted(set(self.keys) - set(KEYS))
        if unknown or not self.keys or len(set(self.keys)) != len(self.keys):
            raise ValueError(f"keys must be a non-empty subset of {KEYS} without repeats, got {list(self.keys)}")
        if len(self.crop_min) != 3 or len(self.crop_max) != 3:
            raise ValueError(f"crop_min and crop_max need 3 values (x, y, z), got {self.crop_min}, {self.crop_max}")
        if not all(np.isfinite(self.crop_min + self.crop_max)) or any(
            a >= b for a, b in zip(self.crop_min, self.crop_max, strict=True)
        ):
            raise ValueError(f"crop box needs finite crop_min < crop_max in x, y, z: {self.crop_min}, {self.crop_max}")
        if self.num_points < 1:
            raise ValueError(f"num_points must be positive, got {self.num_points}")
        if self.max_fps_input != 0 and self.max_fps_input < self.num_points:
            raise ValueError(
                f"max_fps_input ({self.max_fps_input}) must be 0 or at least num_points ({self.num_points})"
            )
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ValueError(f"image_size must be (height, width), each at least 8, got {self.image_size}")

    def uses(self, key: str) -> bool:
        return key in self.keys

    def frame_shapes(self, agent_dim: int) -> dict[str, tuple[int, ...]]:
        """Per-frame output shape of every key the spec uses (`agent_dim`: the robot's joint count)."""
        shapes = {
            "point_cloud": (self.num_points, 6 if self.point_rgb else 3),
            "image": (3, *self.image_size),
            "agent_pos": (agent_dim,),
            "joint_velocity": (agent_dim,),
        }
        return {k: shapes[k] for k in self.keys}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-able data (tuples become lists there; `from_dict` restores them)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessingSpec:
        """Inverse of `to_dict`; unknown keys or wrong types raise `config.ConfigError`."""
        return from_dict(cls, dict(data), prefix="processing.")


class ObservationProcessor:
    """Applies a `ProcessingSpec` to raw observations (see the module docstring)."""

    def __init__(self, spec: ProcessingSpec) -> None:
        self.spec = spec
        self._lo = np.asarray(spec.crop_min, dtype=np.float32)
        self._hi = np.asarray(spec.crop_max, dtype=np.float32)
        if spec.uses("point_cloud"):
            # Importing open3d takes seconds: pay it here, not on the first control tick.
            import open3d  # noqa: F401

    def process(self, raw: Mapping[str, Any], sample: bool = True) -> dict[str, np.ndarray]:
        """Raw observation -> {key: fixed-shape array} for every key in `spec.keys`.

        sample=False checks the observation exactly as usual but skips the farthest-point
        sampling (most of the cost) and returns the cropped cloud as is: for frames the policy
        will not look at (`Policy.next_frame_used`), which must still be validated."""
        if not isinstance(raw, Mapping):
            raise ProcessingError(f"observation must be a mapping of arrays, got {type(raw).__name__}")
        out: dict[str, np.ndarray] = {}
        for key in self.spec.keys:
            if key not in raw:
                raise ProcessingError(f"observation lacks {key!r} (the model needs {list(self.spec.keys)})")
        if self.spec.uses("point_cloud"):
            out["point_cloud"] = self.point_cloud(raw["point_cloud"], raw.get("point_colors"), sample)
        if self.spec.uses("image"):
            out["image"] = self.image(raw["image"])
        if self.spec.uses("agent_pos"):
            out["agent_pos"] = self.agent_pos(raw["agent_pos"])
        if self.spec.uses("joint_velocity"):
            out["joint_velocity"] = self.vector("joint_velocity", raw["joint_velocity"])
        return {k: out[k] for k in self.spec.keys}

    def point_cloud(self, points: Any, colors: Any = None, sample: bool = True) -> np.ndarray:
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[1] < 3 or pts.dtype.kind not in "fiu":
            raise ProcessingError(f"point_cloud must be a numeric (N, 3) array, got {pts.dtype} {pts.shape}")
        pts = pts[:, :3].astype(np.float32, copy=False)
        rgb = None
        if self.spec.point_rgb:
            if colors is None:
                raise ProcessingError("point_rgb needs 'point_colors' (N, 3) uint8 beside the point cloud")
            rgb = np.asarray(colors)
            if rgb.shape != (len(pts), 3) or rgb.dtype != np.uint8:
                raise ProcessingError(f"point_colors must be uint8 ({len(pts)}, 3), got {rgb.dtype} {rgb.shape}")
        finite = np.isfinite(pts).all(axis=1)
        n_finite = int(finite.sum())
        keep = finite & (pts >= self._lo).all(axis=1) & (pts <= self._hi).all(axis=1)
        if not keep.any():
            if n_finite == 0:
                raise ProcessingError(
                    f"point_cloud has no finite points ({len(pts)} points, all NaN/Inf or empty)", "nonfinite_input"
                )
            raise ProcessingError(
                f"point_cloud: none of its {n_finite} finite points lies inside the workspace box "
                f"{self.spec.crop_min}..{self.spec.crop_max} (base frame, metres): wrong frame or calibration?",
                "empty_workspace",
            )
        pts = pts[keep]
        if not sample:
            return pts
        if rgb is not None:
            rgb = rgb[keep]
        if self.spec.max_fps_input and len(pts) > self.spec.max_fps_input:
            idx = np.linspace(0, len(pts) - 1, self.spec.max_fps_input).astype(np.int64)
            pts = pts[idx]
            rgb = None if rgb is None else rgb[idx]
        return farthest_point_sample(pts, self.spec.num_points, rgb)

    def image(self, image: Any) -> np.ndarray:
        import cv2

        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or min(img.shape[:2]) < 1:
            raise ProcessingError(f"image must be (H, W, 3) uint8 RGB, got {img.dtype} {img.shape}")
        h, w = self.spec.image_size
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(img.transpose(2, 0, 1))

    def agent_pos(self, pos: Any) -> np.ndarray:
        return self.vector("agent_pos", pos)

    def vector(self, key: str, value: Any) -> np.ndarray:
        """A finite numeric (D,) vector as float32 (joint positions, velocities)."""
        p = np.asarray(value)
        if p.ndim != 1 or p.size == 0 or p.dtype.kind not in "fiu":
            raise ProcessingError(f"{key} must be a non-empty numeric (D,) vector, got {p.dtype} {p.shape}")
        p = p.astype(np.float32)
        if not np.isfinite(p).all():
            raise ProcessingError(
                f"{key} contains NaN/Inf at index {np.flatnonzero(~np.isfinite(p)).tolist()}", "nonfinite_input"
            )
        return p


def farthest_point_sample(points: np.ndarray, n: int, colors: np.ndarray | None = None) -> np.ndarray:
    """`n` of `points` (M, 3) by farthest-point sampling from the first point (open3d legacy API),
    as float32 (n, 3), or (n, 6) with uint8 `colors` appended in [0, 1]. M < n pads by repetition."""
    if len(points) == 0:
        raise ProcessingError("farthest_point_sample: no points")
    if len(points) <= n:
        idx = np.arange(n) % len(points)
        xyz = points[idx].astype(np.float32)
        rgb = None if colors is None else colors[idx].astype(np.float32) / 255.0
    else:
        import open3d as o3d

        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
        if colors is not None:
            cloud.colors = o3d.utility.Vector3dVector(colors.astype(np.float64) / 255.0)
        sampled = cloud.farthest_point_down_sample(n, start_index=0)
        xyz = np.asarray(sampled.points, dtype=np.float32)
        rgb = None if colors is None else np.asarray(sampled.colors, dtype=np.float32)
    return np.ascontiguousarray(xyz if rgb is None else np.concatenate([xyz, rgb], axis=1), dtype=np.float32)
