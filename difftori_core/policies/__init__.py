"""Policies behind one contract (see `base.Policy`) and the factory that builds them from config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from difftori_core.nn.encoders import EncoderConfig
from difftori_core.policies.base import Policy, PolicySpec
from difftori_core.policies.difftori import DiffTORIConfig, DiffTORIPolicy
from difftori_core.policies.diffusion import DiffusionConfig, DiffusionPolicy
from difftori_core.policies.mlp_bc import MLPBCConfig, MLPBCPolicy

PolicyType = Literal["mlp_bc", "diffusion", "difftori"]


@dataclass
class PolicyConfig:
    """Which policy, and its shape. `horizon` must be divisible by 4 for the diffusion U-Net."""

    type: PolicyType = "difftori"
    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    mlp_bc: MLPBCConfig = field(default_factory=MLPBCConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    difftori: DiffTORIConfig = field(default_factory=DiffTORIConfig)


def make_policy(config: PolicyConfig, spec: PolicySpec) -> Policy:
    shape = (spec, config.horizon, config.n_obs_steps, config.n_action_steps, config.encoder)
    if config.type == "mlp_bc":
        return MLPBCPolicy(*shape, config.mlp_bc)
    if config.type == "diffusion":
        return DiffusionPolicy(*shape, config.diffusion)
    if config.type == "difftori":
        base_cfg = PolicyConfig(**{**config.__dict__, "type": config.difftori.base})
        base = make_policy(base_cfg, spec)
        assert isinstance(base, (MLPBCPolicy, DiffusionPolicy))
        return DiffTORIPolicy(*shape, config.difftori, base)
    raise ValueError(f"unknown policy type {config.type!r}; expected one of mlp_bc, diffusion, difftori")


__all__ = [
    "DiffTORIConfig",
    "DiffTORIPolicy",
    "DiffusionConfig",
    "DiffusionPolicy",
    "MLPBCConfig",
    "MLPBCPolicy",
    "Policy",
    "PolicyConfig",
    "PolicySpec",
    "make_policy",
]
