"""Random training windows from a demonstration dataset, with a saveable sampling state.

A window anchored at frame t of an episode holds the `n_obs_steps` observation frames ending at
t (the first frame of the episode repeated before it starts) and the `horizon` actions starting
at t (the last action repeated after it ends): Diffusion Policy's sampler, and exactly what
`Policy.select_action` feeds the network at run time. Sampling uses its own `torch.Generator`,
whose state goes into every checkpoint, so a resumed run draws the same batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def window_indices(episode_ends: np.ndarray, n_obs_steps: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """For every frame t: the frame indices of its observation window (N, n_obs_steps) and of
    its action window (N, horizon), clamped to t's episode."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    if ends.ndim != 1 or len(ends) == 0 or np.any(np.diff(ends) <= 0) or ends[0] <= 0:
        raise ValueError(f"episode_ends must be strictly increasing positive frame counts, got {ends.tolist()}")
    starts = np.concatenate([[0], ends[:-1]])
    lengths = ends - starts
    t = np.arange(ends[-1])
    first = np.repeat(starts, lengths)
    last = np.repeat(ends - 1, lengths)
    obs = np.maximum(t[:, None] + np.arange(-n_obs_steps + 1, 1)[None], first[:, None])
    act = np.minimum(t[:, None] + np.arange(horizon)[None], last[:, None])
    return obs, act


class WindowSampler:
    """Random windows as torch batches: {"obs": {key: (B, T, ...)}, "action": (B, H, A)}."""

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        episode_ends: np.ndarray,
        n_obs_steps: int,
        horizon: int,
        obs_keys: Sequence[str],
        seed: int = 0,
    ) -> None:
        missing = [k for k in [*obs_keys, "action"] if k not in arrays]
        if missing:
            raise ValueError(f"dataset lacks key(s) {missing} needed by the policy")
        self.arrays = {k: torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in [*obs_keys, "action"]}
        self.obs_keys = list(obs_keys)
        obs_idx, act_idx = window_indices(episode_ends, n_obs_steps, horizon)
        self.obs_idx, self.act_idx = torch.from_numpy(obs_idx), torch.from_numpy(act_idx)
        self.generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_dataset(
        cls, dataset: Any, n_obs_steps: int, horizon: int, obs_keys: Sequence[str], seed: int = 0
    ) -> WindowSampler:
        """Windows over a loaded `data.dataset.Dataset`."""
        return cls(dataset.arrays, dataset.episode_ends, n_obs_steps, horizon, obs_keys, seed)

    def __len__(self) -> int:
        return self.obs_idx.shape[0]

    def window(self, anchors: Tensor, device: torch.device | str = "cpu") -> dict[str, Any]:
        obs = {k: self.arrays[k][self.obs_idx[anchors]].to(device) for k in self.obs_keys}
        return {"obs": obs, "action": self.arrays["action"][self.act_idx[anchors]].to(device)}

    def sample(self, batch_size: int, device: torch.device | str = "cpu") -> dict[str, Any]:
        return self.window(torch.randint(len(self), (batch_size,), generator=self.generator), device)

    def state(self) -> Tensor:
        return self.generator.get_state()

    def set_state(self, state: Tensor) -> None:
        self.generator.set_state(state)
