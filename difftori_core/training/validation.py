"""Imitation error on held-out demonstrations, measured the way the policy acts at run time.

The validation demonstrations come from expert seeds disjoint from the training ones. Every
variant predicts through `Policy.predict_chunk` (inference mode, z at its run-time value, the
inference solver settings), never through the training loss (which samples z from the
posterior that sees the demonstrated chunk), so "refined" here is exactly what the robot gets.
The error is the mean squared difference in normalized action units ([-1, 1] per dimension)
over the `n_action_steps` actions the runner executes from each chunk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from difftori_core.data.dataset import Dataset
from difftori_core.data.windows import window_indices
from difftori_core.policies import Policy


class ValidationSet:
    """All windows (or an evenly strided subset of at most `max_windows`) of a dataset."""

    def __init__(
        self, dataset: Dataset, n_obs_steps: int, horizon: int, obs_keys: list[str], max_windows: int = 512
    ) -> None:
        obs_idx, act_idx = window_indices(dataset.episode_ends, n_obs_steps, horizon)
        keep = np.unique(np.linspace(0, len(obs_idx) - 1, min(max_windows, len(obs_idx))).round().astype(np.int64))
        self.obs = {k: torch.from_numpy(np.ascontiguousarray(dataset.arrays[k][obs_idx[keep]])) for k in obs_keys}
        self.action = torch.from_numpy(np.ascontiguousarray(dataset.arrays["action"][act_idx[keep]])).float()
        self.episodes = dataset.num_episodes

    def __len__(self) -> int:
        return self.action.shape[0]

    def imitation_mse(self, policy: Policy, variant: str | None = None, batch_size: int = 128) -> float:
        """Mean squared error of the executed part of each predicted chunk (normalized units)."""
        was_training = policy.training
        policy.eval()
        device, n = policy.device, policy.n_action_steps
        total = 0.0
        try:
            for start in range(0, len(self), batch_size):
                obs = {k: v[start : start + batch_size].to(device) for k, v in self.obs.items()}
                predicted = policy.predict_chunk(obs, variant).actions[:, :n]
                target = self.action[start : start + batch_size, :n].to(device)
                err = policy.normalizer.normalize("action", predicted) - policy.normalizer.normalize("action", target)
                total += float(err.square().sum())
        finally:
            policy.train(was_training)
        return total / (len(self) * n * policy.action_dim)

    def evaluate(self, policy: Policy) -> dict[str, Any]:
        """{variant: mse} for every variant of the policy."""
        return {variant: self.imitation_mse(policy, variant) for variant in policy.variants}
