"""MLP behaviour cloning: observation features -> the whole action chunk in one pass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from difftori_core.nn.encoders import EncoderConfig
from difftori_core.nn.mlp import MLP
from difftori_core.policies.base import Batch, Policy, PolicySpec


@dataclass
class MLPBCConfig:
    hidden: tuple[int, ...] = (256, 256)


class MLPBCPolicy(Policy):
    def __init__(
        self,
        spec: PolicySpec,
        horizon: int,
        n_obs_steps: int,
        n_action_steps: int,
        encoder: EncoderConfig,
        config: MLPBCConfig,
    ) -> None:
        super().__init__(spec, horizon, n_obs_steps, n_action_steps)
        self._build_perception(encoder)
        self.head = MLP(self.encoder.feature_dim, config.hidden, horizon * spec.action_dim, act="relu", layer_norm=True)

    def predict_normalized(self, features: Tensor) -> Tensor:
        return self.head(features).view(-1, self.horizon, self.action_dim)

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        target = self.normalizer.normalize("action", batch["action"].float())
        pred = self.predict_normalized(self.encode(batch["obs"]))
        loss = F.mse_loss(pred, target)
        return loss, {"loss": loss.item()}

    def predict_action_chunk(self, obs: Mapping[str, Tensor]) -> Tensor:
        with torch.inference_mode():
            return self.to_env_actions(self.predict_normalized(self.encode(obs)))


__all__ = ["MLPBCConfig", "MLPBCPolicy"]
