"""Rigid transforms for sensor data: a cloud in its sensor's frame -> the model's base frame.

tf2's Python packages are not installable here, and the controller needs one static transform (the
camera extrinsic, from calibration), so this is the small part of tf2 it uses: a pose given as
`x y z qx qy qz qw` (translation in metres, unit quaternion in ROS order), applied to points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IDENTITY = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)


class Transform:
    """T_target_source: `apply(points)` maps (N, 3) points in the source frame into the target frame."""

    def __init__(self, pose: Sequence[float]) -> None:
        values = np.asarray(list(pose), dtype=np.float64)
        if values.shape != (7,) or not np.isfinite(values).all():
            raise ValueError(f"a pose is 7 finite numbers (x y z qx qy qz qw), got {list(pose)}")
        q = values[3:]
        norm = float(np.linalg.norm(q))
        if abs(norm - 1.0) > 1e-3:
            raise ValueError(f"the quaternion (qx qy qz qw) must have unit norm, got {q.tolist()} (norm {norm:.4f})")
        x, y, z, w = q / norm
        self.rotation = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        self.translation = values[:3]
        self.is_identity = bool(np.allclose(self.rotation, np.eye(3)) and not self.translation.any())

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points -> (N, 3) float32 in the target frame (NaN points stay NaN)."""
        if self.is_identity:
            return points
        out = points.astype(np.float32, copy=False) @ self.rotation.T.astype(np.float32)
        out += self.translation.astype(np.float32)
        return out

    @staticmethod
    def from_matrix(matrix: np.ndarray) -> tuple[float, ...]:
        """A 4x4 homogeneous matrix -> the `x y z qx qy qz qw` pose (the inverse of the constructor)."""
        m = np.asarray(matrix, dtype=np.float64)
        r = m[:3, :3]
        w = np.sqrt(max(0.0, 1.0 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
        x = np.copysign(np.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2, r[2, 1] - r[1, 2])
        y = np.copysign(np.sqrt(max(0.0, 1.0 - r[0, 0] + r[1, 1] - r[2, 2])) / 2, r[0, 2] - r[2, 0])
        z = np.copysign(np.sqrt(max(0.0, 1.0 - r[0, 0] - r[1, 1] + r[2, 2])) / 2, r[1, 0] - r[0, 1])
        q = np.array([x, y, z, w]) / np.linalg.norm([x, y, z, w])
        return (*(float(v) for v in m[:3, 3]), *(float(v) for v in q))
