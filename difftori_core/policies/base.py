"""The policy contract shared by training, evaluation, the sim runner and the ROS node.

Every policy is an `nn.Module` with:

* `forward(batch) -> (loss, info)`: one training step's loss on a batch
  `{"obs": {key: (B, T, ...)}, "action": (B, H, A)}` of raw (unnormalized) data;
* `predict_action_chunk(obs) -> (B, H, A)`: actions in environment units, clamped to the action
  bounds, from `{key: (B, T, ...)}` observations;
* `select_action(obs) -> (B, A)`: one control tick from the newest frame `{key: (B, ...)}`;
  the policy keeps the observation history (padded by repeating the first frame after a reset,
  exactly as the training sampler pads) and executes `n_action_steps` of each chunk;
  `next_frame_used()` tells whether the next frame will be looked at (else pass None);
* `reset()`: forget history and queued actions (call at the start of every episode).

Normalization statistics are buffers, so `state_dict()` holds everything needed to act.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from difftori_core.nn.encoders import EncoderConfig, ObservationEncoder
from difftori_core.policies.normalizer import Normalizer

Batch = Mapping[str, Any]


@dataclass
class PolicySpec:
    """What a policy consumes and produces; saved next to every checkpoint.

    obs_shapes: per-frame shape of each observation key after processing.
    action_names: one name per action dimension (the ROS node's JointTrajectory joint names).
    """

    obs_shapes: dict[str, list[int]]
    action_dim: int
    action_low: list[float]
    action_high: list[float]
    action_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.action_low) != self.action_dim or len(self.action_high) != self.action_dim:
            raise ValueError(f"action bounds must have {self.action_dim} entries")
        if not self.action_names:
            self.action_names = [f"action_{i}" for i in range(self.action_dim)]
        if len(self.action_names) != self.action_dim:
            raise ValueError(f"action_names must have {self.action_dim} entries, got {self.action_names}")


class Policy(nn.Module):
    """Base class: normalization, observation encoding, history and action-queue bookkeeping.

    Subclasses that encode observations themselves call `_build_perception` (it creates
    `self.normalizer` and `self.encoder`); a wrapper policy may instead expose its inner
    policy's as properties.
    """

    normalizer: Normalizer
    encoder: ObservationEncoder

    def __init__(self, spec: PolicySpec, horizon: int, n_obs_steps: int, n_action_steps: int) -> None:
        super().__init__()
        if not 1 <= n_action_steps <= horizon:
            raise ValueError(f"n_action_steps must be in [1, horizon={horizon}], got {n_action_steps}")
        self.spec = spec
        self.horizon, self.n_obs_steps, self.n_action_steps = horizon, n_obs_steps, n_action_steps
        self.action_dim = spec.action_dim
        self.register_buffer("action_low", torch.tensor(spec.action_low, dtype=torch.float32), persistent=False)
        self.register_buffer("action_high", torch.tensor(spec.action_high, dtype=torch.float32), persistent=False)
        self._history: deque[dict[str, Tensor]] = deque(maxlen=n_obs_steps)
        self._queue: deque[Tensor] = deque()

    def _build_perception(self, encoder: EncoderConfig) -> None:
        dims = {"action": self.spec.action_dim}
        if "agent_pos" in self.spec.obs_shapes:
            dims["agent_pos"] = self.spec.obs_shapes["agent_pos"][0]
        self.normalizer = Normalizer(dims)
        self.encoder = ObservationEncoder(self.spec.obs_shapes, self.n_obs_steps, encoder)
        self.feature_dim = self.encoder.feature_dim  # stays known if the encoder is swapped for ONNX

    # -- shared helpers ------------------------------------------------------------------

    def encode(self, obs: Mapping[str, Tensor], encoder: ObservationEncoder | None = None) -> Tensor:
        """(B, T, ...) raw observations -> (B, feature_dim), with proprioception normalized."""
        obs = {k: obs[k] for k in self.spec.obs_shapes}
        if "agent_pos" in obs:
            obs["agent_pos"] = self.normalizer.normalize("agent_pos", obs["agent_pos"].float())
        if "point_cloud" in obs:
            obs["point_cloud"] = obs["point_cloud"].float()
        return (encoder or self.encoder)(obs)

    def to_env_actions(self, normalized: Tensor) -> Tensor:
        """Normalized chunk -> environment units, clamped to the action bounds."""
        actions = self.normalizer.unnormalize("action", normalized)
        return torch.maximum(torch.minimum(actions, self.action_high), self.action_low)

    @property
    def device(self) -> torch.device:
        return self.action_low.device

    # -- contract -----------------------------------------------------------------------

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_action_chunk(self, obs: Mapping[str, Tensor]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self) -> None:
        self._history.clear()
        self._queue.clear()

    def next_frame_used(self) -> bool:
        """Whether the frame given to the next `select_action` will be part of a chunk's
        observation window. A frame arriving while k actions are still queued is used only if
        k < n_obs_steps (the next chunk is computed k ticks later from the last n_obs_steps
        frames), so a caller may skip preprocessing the others and pass None."""
        return not self._history or len(self._queue) < self.n_obs_steps

    @torch.inference_mode()
    def select_action(self, obs: Mapping[str, Tensor] | None) -> Tensor:
        """One control tick: `obs` holds the newest frame of each key, (B, ...), or is None
        when `next_frame_used()` said it would not be used (the queue's next action comes back)."""
        if obs is None:
            if self.next_frame_used():
                raise ValueError("select_action(None): this tick's frame is needed (see next_frame_used)")
            return self._queue.popleft()
        frame = {k: torch.as_tensor(obs[k], device=self.device) for k in self.spec.obs_shapes}
        if not self._history:
            self._history.extend([frame] * self.n_obs_steps)
        else:
            self._history.append(frame)
        if not self._queue:
            stacked = {k: torch.stack([f[k] for f in self._history], dim=1) for k in frame}
            chunk = self.predict_action_chunk(stacked)
            self._queue.extend(chunk[:, : self.n_action_steps].unbind(1))
        return self._queue.popleft()

    def pending_actions(self) -> Tensor | None:
        """Actions of the current chunk still queued after the last `select_action`, (B, k, A)."""
        return torch.stack(list(self._queue), dim=1) if self._queue else None
