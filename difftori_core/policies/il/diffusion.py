"""Diffusion Policy: a conditional 1-D U-Net denoises the action chunk; DDIM sampling.

Schedulers come from `diffusers` (training uses the DDPM forward process through
`DDIMScheduler.add_noise`; inference runs `num_inference_steps` DDIM steps, deterministic
with eta = 0 apart from the initial noise, which a seeded generator makes reproducible).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from difftori_core.nn.encoders import EncoderConfig
from difftori_core.nn.unet1d import ConditionalUnet1D
from difftori_core.policies.base import Batch, Network, Policy, PolicySpec
from difftori_core.policies.registry import register_policy


@dataclass
class DiffusionConfig:
    down_dims: tuple[int, ...] = (64, 128, 256)
    kernel_size: int = 5
    num_train_timesteps: int = 100
    num_inference_steps: int = 10
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "sample"  # DP3 predicts the clean sample; "epsilon" is the DDPM default
    seed: int = 0  # initial-noise generator at inference


@register_policy("diffusion", DiffusionConfig)
class DiffusionPolicy(Policy):
    def __init__(
        self,
        spec: PolicySpec,
        horizon: int,
        n_obs_steps: int,
        n_action_steps: int,
        encoder: EncoderConfig,
        config: DiffusionConfig,
    ) -> None:
        super().__init__(spec, horizon, n_obs_steps, n_action_steps)
        factor = 2 ** (len(config.down_dims) - 1)
        if horizon % factor:
            levels = len(config.down_dims)
            raise ValueError(f"horizon {horizon} must be divisible by {factor} for a U-Net of {levels} levels")
        self._build_perception(encoder)
        from diffusers.schedulers.scheduling_ddim import DDIMScheduler  # heavy import, only when used

        self.config = config
        self.unet = ConditionalUnet1D(
            spec.action_dim, self.encoder.feature_dim, config.down_dims, kernel=config.kernel_size
        )
        self.scheduler = DDIMScheduler(
            num_train_timesteps=config.num_train_timesteps,
            beta_schedule=config.beta_schedule,
            clip_sample=True,
            set_alpha_to_one=True,
            steps_offset=0,
            prediction_type=config.prediction_type,
        )
        self._generator = torch.Generator().manual_seed(config.seed)

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        target = self.normalizer.normalize("action", batch["action"].float())
        cond = self.encode(batch["obs"])
        noise = torch.randn_like(target)
        t = torch.randint(0, self.config.num_train_timesteps, (target.shape[0],), device=target.device)
        noisy = self.scheduler.add_noise(target, noise, t)
        pred = self.unet(noisy, t, cond)
        goal = target if self.config.prediction_type == "sample" else noise
        loss = F.mse_loss(pred, goal)
        return loss, {"loss": loss.item()}

    def propose_normalized(self, cond: Tensor) -> Tensor:
        """DDIM sampling of a normalized chunk (B, H, A) given features (B, C)."""
        shape = (cond.shape[0], self.horizon, self.action_dim)
        x = torch.randn(shape, generator=self._generator).to(cond)
        self.scheduler.set_timesteps(self.config.num_inference_steps)
        for t in self.scheduler.timesteps:
            out = self.unet(x, t.to(cond.device), cond)
            x = self.scheduler.step(out, t, x).prev_sample
        return x

    def networks(self) -> list[Network]:
        def denoiser(batch: int) -> dict[str, Tensor]:
            g = torch.Generator().manual_seed(batch)
            return {
                "sample": torch.randn(batch, self.horizon, self.action_dim, generator=g),
                "timestep": torch.randint(0, self.config.num_train_timesteps, (batch,), generator=g),
                "cond": torch.randn(batch, self.feature_dim, generator=g),
            }

        return [*super().networks(), Network("denoiser", self, "unet", denoiser, ["denoised"])]
