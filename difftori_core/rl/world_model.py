"""TD-MPC's task-oriented latent world model, small and readable.

    z = h(obs)                      encoder (MLP on states, conv net on stacked pixels)
    z' = d(z, a),  r = R(z, a)      latent dynamics and reward
    a = pi(z)                       policy prior (tanh-bounded mean; noise added by the caller)
    Q1(z, a), Q2(z, a)              twin latent critics (+ EMA targets of h and Q)

Dynamics, reward, policy and critics are `nn.mlp.MLP`s, so the trajectory optimizer gets their
Jacobians analytically (`RolloutResidual`). The encoder runs once per planning step; the
planners work on the latent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from difftori_core.nn.mlp import MLP


@dataclass
class WorldModelConfig:
    """Sizes. TD-MPC (paper): latent 50, mlp 512, encoder 256; the CPU default is narrower."""

    latent_dim: int = 50
    mlp_dim: int = 256
    enc_dim: int = 256
    num_channels: int = 32  # pixel encoder
    min_std: float = 0.05  # policy noise floor (TD-MPC)


class PixelEncoder(nn.Module):
    """TD-MPC's conv encoder for (3 * frames, 84, 84) uint8 stacks."""

    def __init__(self, in_channels: int, size: int, channels: int, out_dim: int) -> None:
        super().__init__()
        if size < 53:
            raise ValueError(f"the pixel encoder's four strided convolutions need images of >= 53 pixels, got {size}")
        layers: list[nn.Module] = []
        c = in_channels
        for kernel, stride in ((7, 2), (5, 2), (3, 2), (3, 2)):
            layers += [nn.Conv2d(c, channels, kernel, stride), nn.ReLU()]
            c = channels
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, in_channels, size, size)).numel()
        self.head = nn.Linear(flat, out_dim)

    def forward(self, obs: Tensor) -> Tensor:
        x = obs.float() / 255.0 - 0.5
        return self.head(self.convs(x).flatten(1))


def make_encoder(obs_shape: tuple[int, ...], out_dim: int, cfg: WorldModelConfig) -> nn.Module:
    if len(obs_shape) == 3:
        return PixelEncoder(obs_shape[0], obs_shape[1], cfg.num_channels, out_dim)
    return MLP(obs_shape[0], (cfg.enc_dim,), out_dim, act="elu")


class WorldModel(nn.Module):
    def __init__(self, obs_shape: tuple[int, ...], action_dim: int, cfg: WorldModelConfig) -> None:
        super().__init__()
        z, a, m = cfg.latent_dim, action_dim, cfg.mlp_dim
        self.cfg, self.action_dim = cfg, action_dim
        self.encoder = make_encoder(obs_shape, z, cfg)
        self.dynamics = MLP(z + a, (m, m), z, act="elu")
        self.reward = MLP(z + a, (m, m), 1, act="elu")
        self.pi = MLP(z, (m, m), a, act="elu", out_act="tanh")
        self.q1 = MLP(z + a, (m, m), 1, act="elu", layer_norm=True)
        self.q2 = MLP(z + a, (m, m), 1, act="elu", layer_norm=True)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_q1 = copy.deepcopy(self.q1).requires_grad_(False)
        self.target_q2 = copy.deepcopy(self.q2).requires_grad_(False)

    def encode(self, obs: Tensor) -> Tensor:
        return self.encoder(obs)

    def next(self, z: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        za = torch.cat([z, a], dim=-1)
        return self.dynamics(za), self.reward(za)

    def policy(self, z: Tensor, std: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
        mu = self.pi(z)
        if std <= 0:
            return mu
        # A CPU generator (reproducible on any device); the noise then moves to the policy's device.
        noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device) * std
        return (mu + noise).clamp(-1.0, 1.0)

    def q(self, z: Tensor, a: Tensor, target: bool = False) -> tuple[Tensor, Tensor]:
        za = torch.cat([z, a], dim=-1)
        if target:
            return self.target_q1(za), self.target_q2(za)
        return self.q1(za), self.q2(za)

    def model_parameters(self) -> list[nn.Parameter]:
        """What the model loss (and DiffTORI's policy-gradient loss) trains: h, d, R, Q."""
        return [p for m in (self.encoder, self.dynamics, self.reward, self.q1, self.q2) for p in m.parameters()]

    @torch.no_grad()
    def update_targets(self, tau: float) -> None:
        pairs = ((self.encoder, self.target_encoder), (self.q1, self.target_q1), (self.q2, self.target_q2))
        for online, target in pairs:
            for p, tp in zip(online.parameters(), target.parameters(), strict=True):
                tp.lerp_(p, tau)
