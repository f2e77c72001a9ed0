"""Implicit behaviour cloning (Florence et al., 2021): an energy E(observation, chunk) trained
with InfoNCE against uniformly sampled counter-examples, acting by derivative-free optimization.

Training: for each demonstrated chunk, `num_negatives` counter-examples are drawn uniformly in
the normalized action box [-1, 1]^(H*A); the loss is the cross-entropy of picking the
demonstration among them with logits -E / temperature (the positive's slot is random, so ties
cannot favour a fixed index). Inference (the paper's DFO): `inference_samples` uniform
candidates, then `dfo_iterations` rounds of resampling in proportion to exp(-E / temperature)
and Gaussian perturbation whose scale starts at `noise_scale` and shrinks by `noise_shrink`
each round; the lowest-energy candidate is the chunk. The paper's DFO settings (3 iterations,
noise 0.33, shrink 0.5) are the defaults; its 16,384 samples are cut to 1,024 for CPU control
rates (raise `inference_samples` on a GPU). Sampling uses the policy's own generator, reseeded
at every `reset()`, so each episode is reproducible whatever ran before it.
As a DiffTORI base, `propose_normalized` is the DFO result.
"""

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
class IBCConfig:
    hidden: tuple[int, ...] = (256, 256)
    num_negatives: int = 256
    temperature: float = 1.0
    inference_samples: int = 1024
    dfo_iterations: int = 3
    noise_scale: float = 0.33
    noise_shrink: float = 0.5
    seed: int = 0  # inference sampling generator, reseeded at reset()

    def __post_init__(self) -> None:
        if self.num_negatives < 1 or self.inference_samples < 1 or self.dfo_iterations < 0:
            raise ValueError("ibc: num_negatives and inference_samples must be positive, dfo_iterations >= 0")
        if self.temperature <= 0 or self.noise_scale < 0 or not 0 < self.noise_shrink <= 1:
            raise ValueError("ibc: temperature > 0, noise_scale >= 0 and noise_shrink in (0, 1] required")


@register_policy("ibc", IBCConfig)
class IBCPolicy(Policy):
    def __init__(
        self,
        spec: PolicySpec,
        horizon: int,
        n_obs_steps: int,
        n_action_steps: int,
        encoder: EncoderConfig,
        config: IBCConfig,
    ) -> None:
        super().__init__(spec, horizon, n_obs_steps, n_action_steps)
        self.config = config
        self._build_perception(encoder)
        self.num_vars = horizon * spec.action_dim
        # Input: [features, flattened normalized chunk]; output: one energy per candidate.
        self.energy = MLP(self.encoder.feature_dim + self.num_vars, config.hidden, 1, act="relu", layer_norm=True)
        self._generator = torch.Generator().manual_seed(config.seed)

    def energies(self, features: Tensor, candidates: Tensor) -> Tensor:
        """Features (B, C) and candidate chunks (B, N, H*A) -> energies (B, N)."""
        b, n, _ = candidates.shape
        x = torch.cat([features[:, None].expand(b, n, features.shape[-1]), candidates], dim=-1)
        return self.energy(x.reshape(b * n, -1)).view(b, n)

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        target = self.normalizer.normalize("action", batch["action"].float()).flatten(1)
        feats = self.encode(batch["obs"])
        b = target.shape[0]
        negatives = torch.rand(b, self.config.num_negatives, self.num_vars, device=target.device) * 2 - 1
        candidates = torch.cat([target[:, None], negatives], dim=1)
        order = torch.argsort(torch.rand(b, candidates.shape[1], device=target.device), dim=1)
        candidates = candidates.gather(1, order[..., None].expand_as(candidates))
        label = (order == 0).float().argmax(dim=1)  # where the demonstration went
        logits = -self.energies(feats, candidates) / self.config.temperature
        loss = F.cross_entropy(logits, label)
        accuracy = (logits.argmax(dim=1) == label).float().mean()
        return loss, {"loss": loss.item(), "accuracy": accuracy.item()}

    def propose_normalized(self, features: Tensor) -> Tensor:
        """Derivative-free optimization of the energy: a normalized chunk (B, H, A)."""
        cfg, g = self.config, self._generator
        b, n = features.shape[0], cfg.inference_samples
        samples = (torch.rand(b, n, self.num_vars, generator=g) * 2 - 1).to(features)
        scale = cfg.noise_scale
        for _ in range(cfg.dfo_iterations):
            probs = torch.softmax(-self.energies(features, samples) / cfg.temperature, dim=1)
            picks = torch.multinomial(probs.cpu(), n, replacement=True, generator=g).to(features.device)
            samples = samples.gather(1, picks[..., None].expand_as(samples))
            samples = (samples + scale * torch.randn(samples.shape, generator=g).to(features)).clamp(-1.0, 1.0)
            scale *= cfg.noise_shrink
        best = self.energies(features, samples).argmin(dim=1)
        return samples[torch.arange(b), best].view(b, self.horizon, self.action_dim)

    def reset(self) -> None:
        self._generator.manual_seed(self.config.seed)

    def networks(self) -> list[Network]:
        def candidates(batch: int) -> dict[str, Tensor]:
            g = torch.Generator().manual_seed(batch)
            return {"x": torch.randn(batch, self.feature_dim + self.num_vars, generator=g)}

        return [*super().networks(), Network("energy", self, "energy", candidates, ["energy"])]


__all__ = ["IBCConfig", "IBCPolicy"]
