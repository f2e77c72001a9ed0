"""Conditional 1-D U-Net over the action horizon (Diffusion Policy's denoiser).

Input: a noisy action chunk (B, H, A), the diffusion timestep (B,) and a global condition
(B, C) (observation features). Every residual block is FiLM-modulated by the condition and the
timestep embedding. The horizon is downsampled by 2 per level, so it must be divisible by
2 ** (levels - 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class SinusoidalEmbedding(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
        args = t.float()[:, None] * freqs[None]
        return torch.cat([args.sin(), args.cos()], dim=-1)


class _ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int) -> None:
        super().__init__(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(groups, c_out), nn.Mish())


class _FiLMResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.block1 = _ConvBlock(c_in, c_out, kernel, groups)
        self.block2 = _ConvBlock(c_out, c_out, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.block1(x) * scale + bias
        return self.block2(h) + self.skip(x)


class ConditionalUnet1D(nn.Module):
    def __init__(
        self,
        action_dim: int,
        cond_dim: int,
        down_dims: Sequence[int] = (64, 128, 256),
        step_embed_dim: int = 64,
        kernel: int = 5,
        groups: int = 8,
    ) -> None:
        super().__init__()
        self.step_embed = nn.Sequential(
            SinusoidalEmbedding(step_embed_dim),
            nn.Linear(step_embed_dim, 4 * step_embed_dim),
            nn.Mish(),
            nn.Linear(4 * step_embed_dim, step_embed_dim),
        )
        cdim = step_embed_dim + cond_dim
        dims = [action_dim, *down_dims]
        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            last = i == len(down_dims) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        _FiLMResidualBlock(c_in, c_out, cdim, kernel, groups),
                        _FiLMResidualBlock(c_out, c_out, cdim, kernel, groups),
                        nn.Conv1d(c_out, c_out, 3, stride=2, padding=1) if not last else nn.Identity(),
                    ]
                )
            )
        mid = down_dims[-1]
        self.mid = nn.ModuleList(
            [_FiLMResidualBlock(mid, mid, cdim, kernel, groups), _FiLMResidualBlock(mid, mid, cdim, kernel, groups)]
        )
        self.up = nn.ModuleList()
        rev = list(reversed(down_dims))
        for c_out, c_in in zip(rev[1:], rev[:-1], strict=True):
            self.up.append(
                nn.ModuleList(
                    [
                        _FiLMResidualBlock(2 * c_in, c_out, cdim, kernel, groups),
                        _FiLMResidualBlock(c_out, c_out, cdim, kernel, groups),
                        nn.ConvTranspose1d(c_out, c_out, 4, stride=2, padding=1),
                    ]
                )
            )
        self.final = nn.Sequential(
            _ConvBlock(down_dims[0], down_dims[0], kernel, groups), nn.Conv1d(down_dims[0], action_dim, 1)
        )
        self.levels = len(down_dims)

    def forward(self, sample: Tensor, timestep: Tensor, cond: Tensor) -> Tensor:
        """sample (B, H, A), timestep (B,) or scalar, cond (B, C) -> (B, H, A)."""
        if sample.shape[1] % (2 ** (self.levels - 1)):
            raise ValueError(f"horizon {sample.shape[1]} must be divisible by {2 ** (self.levels - 1)}")
        timestep = timestep.expand(sample.shape[0]) if timestep.dim() == 0 else timestep
        c = torch.cat([self.step_embed(timestep), cond], dim=-1)
        x = sample.transpose(1, 2)
        skips = []
        for res1, res2, downsample in self.down:
            x = res2(res1(x, c), c)
            skips.append(x)
            x = downsample(x)
        for block in self.mid:
            x = block(x, c)
        for res1, res2, upsample in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = upsample(res2(res1(x, c), c))
        return self.final(x).transpose(1, 2)
