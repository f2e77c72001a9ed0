"""Neural-network building blocks."""

from difftori_core.nn.mlp import MLP

__all__ = ["MLP"]
