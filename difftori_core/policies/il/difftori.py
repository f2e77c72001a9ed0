"""DiffTORI for imitation learning: a base policy proposes, a learned cost refines.

The frozen base policy's action chunk is the initial value of a trajectory optimization whose
cost is a learned residual r(obs features, z, chunk) (cost = ||r||^2, minimized by the
differentiable LM layer). z is the paper's CVAE latent: during training it is sampled from
q(z | features, demonstrated chunk), at inference it is the prior's mean (zero), so control is
deterministic. Variants: "difftori" (refined) and "base" (the base policy's proposal alone, the
comparison baseline from the same checkpoint).
Loss: MSE(refined chunk, demonstration) + kl_weight * KL(q || N(0, I)), back-propagated through
the optimizer into the cost (and the cost's own encoder, if it has one).
The refined chunk is clamped to the action bounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from difftori_core.nn.encoders import EncoderConfig, ObservationEncoder
from difftori_core.nn.mlp import MLP
from difftori_core.policies.base import Batch, Chunk, Network, Policy, PolicySpec, TrainingPhase
from difftori_core.policies.normalizer import Normalizer
from difftori_core.policies.registry import PolicyConfig, make_policy, register_policy
from difftori_core.trajopt import MLPResidual, SolverConfig, TrajOptLayer


def _default_solver() -> SolverConfig:
    return SolverConfig(
        backend="fast",
        method="lm",
        max_iterations=5,
        step_size=1.0,
        damping=0.1,
        backward_mode="truncated",
        backward_iterations=5,
    )


@dataclass
class DiffTORIConfig:
    """Attributes:
    base: the registered policy type that proposes the initial chunk (trained first, then
        frozen); it must have `propose_normalized(features) -> normalized chunk`.
    cost_encoder: "shared" reuses the frozen base encoder's features (cheap: no perception
        backward pass); "own" trains a separate encoder for the cost end-to-end.
    residual_dim / cost_hidden: the learned residual MLP.
    init_scale: the residual's output layer starts scaled by this, so an untrained cost barely
        moves the proposal and training starts from the base policy's performance.
    proposal_noise: training only: Gaussian noise (normalized action units) added to the base's
        proposal before the solve. The base was fit on the same demonstrations, so at training
        time its proposal already sits near the target and the cost learns little; from
        perturbed starts it must learn a basin that pulls toward the demonstration, which is
        what it meets at run time, where the base is off on unseen states.
    """

    base: str = "mlp_bc"
    cost_encoder: Literal["shared", "own"] = "shared"
    latent_dim: int = 64
    residual_dim: int = 32
    cost_hidden: tuple[int, ...] = (256,)
    cvae_hidden: tuple[int, ...] = (256,)
    kl_weight: float = 1e-3
    init_scale: float = 0.01
    proposal_noise: float = 0.0
    solver: SolverConfig = field(default_factory=_default_solver)


@register_policy("difftori", DiffTORIConfig, variants=("difftori", "base"))
class DiffTORIPolicy(Policy):
    def __init__(
        self,
        spec: PolicySpec,
        horizon: int,
        n_obs_steps: int,
        n_action_steps: int,
        encoder: EncoderConfig,
        config: DiffTORIConfig,
        base: Policy,
    ) -> None:
        super().__init__(spec, horizon, n_obs_steps, n_action_steps)
        self.config = config
        self.base = base
        self.own_encoder = (
            ObservationEncoder(spec.obs_shapes, n_obs_steps, encoder) if config.cost_encoder == "own" else None
        )
        feat = (self.own_encoder or base.encoder).feature_dim
        n = horizon * spec.action_dim
        self.posterior = MLP(feat + n, config.cvae_hidden, 2 * config.latent_dim, act="relu")
        residual = MLPResidual(
            {"obs": feat, "z": config.latent_dim},
            horizon,
            spec.action_dim,
            config.residual_dim,
            hidden=config.cost_hidden,
            act="relu",
        )
        with torch.no_grad():
            out = residual.mlp.linears[-1]
            out.weight.mul_(config.init_scale)
            out.bias.mul_(config.init_scale)
        self.layer = TrajOptLayer(residual, config.solver)  # the cost's parameters live here, once

    @classmethod
    def from_config(cls, config: PolicyConfig, spec: PolicySpec) -> DiffTORIPolicy:
        own = config.section("difftori")
        base_cfg = PolicyConfig(
            type=own.base,
            horizon=config.horizon,
            n_obs_steps=config.n_obs_steps,
            n_action_steps=config.n_action_steps,
            encoder=config.encoder,
            sections=config.sections,
        )
        base = make_policy(base_cfg, spec)
        return cls(spec, config.horizon, config.n_obs_steps, config.n_action_steps, config.encoder, own, base)

    @classmethod
    def required_sections(cls, section: DiffTORIConfig) -> list[str]:
        return ["difftori", section.base]

    # The base policy owns normalization; one copy of the statistics, one home.
    @property
    def normalizer(self) -> Normalizer:  # type: ignore[override]
        return self.base.normalizer

    @property
    def encoder(self) -> ObservationEncoder:  # type: ignore[override]
        return self.base.encoder

    def train(self, mode: bool = True) -> DiffTORIPolicy:
        super().train(mode)
        self.base.eval()  # frozen: no dropout/normalization updates either
        return self

    def reset(self) -> None:
        self.base.reset()

    def base_parameters(self) -> list[nn.Parameter]:
        return list(self.base.parameters())

    def cost_parameters(self) -> list[nn.Parameter]:
        base = {id(p) for p in self.base.parameters()}
        return [p for p in self.parameters() if id(p) not in base]

    def training_phases(self) -> list[TrainingPhase]:
        """The base policy first (alone, by its own loss), then the cost on top of it, frozen."""
        return [
            TrainingPhase("base", self.base, self.base_parameters()),
            TrainingPhase("cost", self, self.cost_parameters()),
        ]

    def networks(self) -> list[Network]:
        nets = self.base.networks()
        if self.own_encoder is not None:
            nets.insert(
                1, Network("cost_encoder", self, "own_encoder", self.base.example_observation, ["features"], True)
            )
        return nets

    def _propose(self, obs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Base features (B, C) and the base's normalized chunk (B, H, A), without gradients."""
        with torch.no_grad():
            feats = self.base.encode(obs)
            return feats, self.base.propose_normalized(feats)  # type: ignore[operator]

    def _cost_features(self, obs: Mapping[str, Tensor], base_feats: Tensor) -> Tensor:
        return base_feats if self.own_encoder is None else self.encode(obs, self.own_encoder)

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        obs = batch["obs"]
        target = self.normalizer.normalize("action", batch["action"].float())
        base_feats, proposal = self._propose(obs)
        init = proposal
        if self.config.proposal_noise > 0:
            init = proposal + self.config.proposal_noise * torch.randn_like(proposal)
        feats = self._cost_features(obs, base_feats)
        mu, logvar = self.posterior(torch.cat([feats, target.flatten(1)], dim=-1)).chunk(2, dim=-1)
        logvar = logvar.clamp(-10.0, 10.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        refined, info = self.layer(init, {"obs": feats, "z": z})
        mse = F.mse_loss(refined, target)
        kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1).mean()
        loss = mse + self.config.kl_weight * kl
        return loss, {
            "loss": loss.item(),
            "mse": mse.item(),
            "kl": kl.item(),
            "base_mse": F.mse_loss(proposal, target).item(),
            "solver_failed": float(info.failed.sum().item()),
        }

    def predict_chunk(self, obs: Mapping[str, Tensor], variant: str | None = None) -> Chunk:
        variant = self.check_variant(variant)
        with torch.inference_mode():
            base_feats, init = self._propose(obs)
            if variant == "base":
                return Chunk(self.to_env_actions(init))
            feats = self._cost_features(obs, base_feats)
            z = feats.new_zeros(feats.shape[0], self.config.latent_dim)
            refined, info = self.layer(init, {"obs": feats, "z": z})
            return Chunk(self.to_env_actions(refined), info.failed, info.iterations)
