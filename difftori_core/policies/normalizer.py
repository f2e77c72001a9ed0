"""Min-max normalization of actions and proprioception to [-1, 1], saved with the weights.

The statistics are buffers of the policy module, so they travel in the same safetensors file as
the weights and the controller node normalizes exactly as training did.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn


class Normalizer(nn.Module):
    """Per-key, per-dimension affine map of [min, max] onto [-1, 1].

    Dimensions whose range is (nearly) zero are mapped to 0 and back to their constant value,
    rather than divided by zero.
    """

    EPS = 1e-6

    def __init__(self, dims: Mapping[str, int]) -> None:
        super().__init__()
        self.keys = list(dims)
        for key, dim in dims.items():
            self.register_buffer(f"{key}_min", torch.full((dim,), -1.0))
            self.register_buffer(f"{key}_max", torch.full((dim,), 1.0))

    def fit(self, data: Mapping[str, np.ndarray | Tensor]) -> Normalizer:
        """Set the statistics from arrays whose last axis is the feature axis."""
        for key in self.keys:
            x = torch.as_tensor(np.asarray(data[key]), dtype=torch.float32).reshape(-1, self.dim(key))
            if not torch.isfinite(x).all():
                raise ValueError(f"cannot fit normalizer: {key!r} contains NaN/Inf")
            getattr(self, f"{key}_min").copy_(x.min(0).values)
            getattr(self, f"{key}_max").copy_(x.max(0).values)
        return self

    def dim(self, key: str) -> int:
        return getattr(self, f"{key}_min").shape[0]

    def _scale_offset(self, key: str, like: Tensor) -> tuple[Tensor, Tensor]:
        lo, hi = getattr(self, f"{key}_min"), getattr(self, f"{key}_max")
        span = hi - lo
        scale = torch.where(span > self.EPS, 2.0 / span.clamp_min(self.EPS), torch.zeros_like(span))
        offset = -1.0 - lo * scale
        offset = torch.where(span > self.EPS, offset, torch.zeros_like(offset))
        return scale.to(like), offset.to(like)

    def normalize(self, key: str, x: Tensor) -> Tensor:
        scale, offset = self._scale_offset(key, x)
        return x * scale + offset

    def unnormalize(self, key: str, x: Tensor) -> Tensor:
        lo, hi = getattr(self, f"{key}_min").to(x), getattr(self, f"{key}_max").to(x)
        return (x + 1.0) * 0.5 * (hi - lo) + lo
