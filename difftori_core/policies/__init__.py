"""Policies behind one contract (`base.Policy`), built from config through the registry.

Imitation-learning policies live in `policies.il` (MLP-BC, diffusion, DiffTORI), trained
model-based agents in `policies.tdmpc`; a new type registers itself with
`registry.register_policy` and needs no edit elsewhere.
"""

from __future__ import annotations

from difftori_core.policies.base import Chunk, Network, Policy, PolicySpec, TrainingPhase
from difftori_core.policies.registry import PolicyConfig, make_policy, policy_class, policy_types, register_policy

# The built-in policy types register themselves on import (a new type: its own module + import).
from difftori_core.policies import il, tdmpc  # noqa: E402, F401  isort: skip

__all__ = [
    "Chunk",
    "Network",
    "Policy",
    "PolicyConfig",
    "PolicySpec",
    "TrainingPhase",
    "make_policy",
    "policy_class",
    "policy_types",
    "register_policy",
]
