"""Demonstration datasets (see `dataset` for the on-disk format)."""

from difftori_core.data.dataset import FORMAT, VERSION, Dataset, DatasetError, DatasetWriter, read_meta

__all__ = ["FORMAT", "VERSION", "Dataset", "DatasetError", "DatasetWriter", "read_meta"]
