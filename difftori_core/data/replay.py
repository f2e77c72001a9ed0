"""Replay buffer for model-based RL: whole episodes, sampled as H-step subsequences with
prioritized replay (TD-MPC: priorities from the latent TD error, alpha 0.6, beta 0.4).

Episodes have a fixed length L (DeepMind Control: 1000 / action_repeat). Episode e holds
obs (L+1, ...), action (L, A), reward (L,); a sample is a start t in [0, L - H] with
obs[t : t+H+1], action[t : t+H], reward[t : t+H] and its importance weight. Sampling uses the
buffer's own generator, and `state()` / `load_state()` carry everything (arrays, priorities,
generator), so a resumed run draws the same batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


class ReplayBuffer:
    def __init__(
        self,
        obs_shape: tuple[int, ...],
        action_dim: int,
        episode_length: int,
        capacity_episodes: int,
        horizon: int,
        obs_dtype: Any = np.float32,
        alpha: float = 0.6,
        beta: float = 0.4,
        seed: int = 0,
    ) -> None:
        if episode_length <= horizon:
            raise ValueError(f"episodes of {episode_length} steps cannot hold {horizon}-step samples")
        self.L, self.H = episode_length, horizon
        self.capacity = capacity_episodes
        self.alpha, self.beta = alpha, beta
        self.obs = np.zeros((capacity_episodes, episode_length + 1, *obs_shape), dtype=obs_dtype)
        self.action = np.zeros((capacity_episodes, episode_length, action_dim), dtype=np.float32)
        self.reward = np.zeros((capacity_episodes, episode_length), dtype=np.float32)
        self.priority = np.zeros((capacity_episodes, episode_length - horizon + 1), dtype=np.float64)
        self.episodes = 0  # stored so far (the oldest is overwritten when full)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return min(self.episodes, self.capacity) * self.L

    def add_episode(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        if obs.shape[0] != self.L + 1 or action.shape[0] != self.L or reward.shape[0] != self.L:
            raise ValueError(
                f"an episode needs {self.L + 1} observations and {self.L} actions/rewards, "
                f"got {obs.shape[0]}, {action.shape[0]}, {reward.shape[0]}"
            )
        slot = self.episodes % self.capacity
        self.obs[slot], self.action[slot], self.reward[slot] = obs, action, reward
        stored = self.priority[: min(self.episodes, self.capacity)]
        self.priority[slot] = stored.max() if stored.size and stored.max() > 0 else 1.0
        self.episodes += 1

    def sample(self, batch: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """obs (H+1, B, ...), action (H, B, A), reward (H, B), weight (B,), index (B,) (TD-MPC's
        time-major layout)."""
        n = min(self.episodes, self.capacity)
        if n == 0:
            raise ValueError("the replay buffer is empty")
        p = torch.from_numpy(self.priority[:n].ravel() ** self.alpha)
        probs = p / p.sum()
        index = torch.multinomial(probs, batch, replacement=True, generator=self.generator)
        weight = (n * self.priority.shape[1] * probs[index]) ** (-self.beta)
        weight = (weight / weight.max()).float()
        ep = (index // self.priority.shape[1]).numpy()
        t = (index % self.priority.shape[1]).numpy()
        steps_obs = t[:, None] + np.arange(self.H + 1)[None]
        steps_act = t[:, None] + np.arange(self.H)[None]
        obs = torch.from_numpy(self.obs[ep[:, None], steps_obs]).transpose(0, 1)
        action = torch.from_numpy(self.action[ep[:, None], steps_act]).transpose(0, 1)
        reward = torch.from_numpy(self.reward[ep[:, None], steps_act]).transpose(0, 1)
        out = {"obs": obs, "action": action, "reward": reward, "weight": weight, "index": index}
        return {k: v.to(device) for k, v in out.items()}

    def update_priorities(self, index: Tensor, priority: Tensor) -> None:
        flat = self.priority.reshape(-1)
        flat[index.cpu().numpy()] = priority.detach().double().cpu().clamp_min(1e-6).numpy()

    def state(self) -> dict[str, Any]:
        n = min(self.episodes, self.capacity)
        return {
            "obs": torch.from_numpy(self.obs[:n].copy()),
            "action": torch.from_numpy(self.action[:n].copy()),
            "reward": torch.from_numpy(self.reward[:n].copy()),
            "priority": torch.from_numpy(self.priority[:n].copy()),
            "episodes": self.episodes,
            "generator": self.generator.get_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        n = state["obs"].shape[0]
        if n > self.capacity or tuple(state["obs"].shape[1:]) != self.obs.shape[1:]:
            raise ValueError(f"replay state of shape {tuple(state['obs'].shape)} does not fit {self.obs.shape}")
        self.obs[:n], self.action[:n] = state["obs"].numpy(), state["action"].numpy()
        self.reward[:n], self.priority[:n] = state["reward"].numpy(), state["priority"].numpy()
        self.episodes = int(state["episodes"])
        self.generator.set_state(state["generator"])
