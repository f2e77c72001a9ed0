"""Demonstration datasets (`dataset`: the on-disk format), training windows (`windows`) and
scripted-expert collection in simulation (`collect`)."""

from difftori_core.data.dataset import FORMAT, VERSION, Dataset, DatasetError, DatasetWriter, read_meta
from difftori_core.data.windows import WindowSampler, window_indices

__all__ = [
    "FORMAT",
    "VERSION",
    "Dataset",
    "DatasetError",
    "DatasetWriter",
    "WindowSampler",
    "read_meta",
    "window_indices",
]
