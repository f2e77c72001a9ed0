"""Differentiable trajectory optimization: argmin over action sequences of learned costs."""

from difftori_core.trajopt.config import SolverConfig, SolverInfo
from difftori_core.trajopt.layer import TrajOptLayer
from difftori_core.trajopt.residuals import (
    BoxResidual,
    MLPResidual,
    ProximityResidual,
    Residual,
    RolloutResidual,
    StackedResidual,
    residual_and_jacobian,
)

__all__ = [
    "BoxResidual",
    "MLPResidual",
    "ProximityResidual",
    "Residual",
    "RolloutResidual",
    "SolverConfig",
    "SolverInfo",
    "StackedResidual",
    "TrajOptLayer",
    "residual_and_jacobian",
]
