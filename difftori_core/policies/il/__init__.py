"""Imitation-learning policies; importing this package registers them."""

from difftori_core.policies.il.difftori import DiffTORIConfig, DiffTORIPolicy
from difftori_core.policies.il.diffusion import DiffusionConfig, DiffusionPolicy
from difftori_core.policies.il.ibc import IBCConfig, IBCPolicy
from difftori_core.policies.il.mlp_bc import MLPBCConfig, MLPBCPolicy

__all__ = [
    "DiffTORIConfig",
    "DiffTORIPolicy",
    "DiffusionConfig",
    "DiffusionPolicy",
    "IBCConfig",
    "IBCPolicy",
    "MLPBCConfig",
    "MLPBCPolicy",
]
