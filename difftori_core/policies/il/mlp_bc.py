"""MLP behaviour cloning: observation features -> the whole action chunk in one pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from difftori_core.nn.encoders import EncoderConfig
from difftori_core.nn.mlp import MLP
from difftori_core.policies.base import Batch, Network, Policy, PolicySpec
from difftori_core.policies.registry import register_policy


@dataclass
class MLPBCConfig:
    hidden: tuple[int, ...] = (256, 256)


@register_policy("mlp_bc", MLPBCConfig)
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

    def propose_normalized(self, features: Tensor) -> Tensor:
        return self.head(features).view(-1, self.horizon, self.action_dim)

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        target = self.normalizer.normalize("action", batch["action"].float())
        pred = self.propose_normalized(self.encode(batch["obs"]))
        loss = F.mse_loss(pred, target)
        return loss, {"loss": loss.item()}

    def networks(self) -> list[Network]:
        def features(batch: int) -> dict[str, Tensor]:
            return {"features": torch.randn(batch, self.feature_dim, generator=torch.Generator().manual_seed(batch))}

        return [*super().networks(), Network("base_head", self, "head", features, ["chunk"])]


__all__ = ["MLPBCConfig", "MLPBCPolicy"]
