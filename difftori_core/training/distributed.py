"""Data-parallel training under `torchrun` (DistributedDataParallel: gloo on CPU, NCCL on CUDA).

    torchrun --nproc_per_node=2 -m difftori_core.train batch_size=64 ...

Every rank draws the same global batch from identically seeded samplers and trains on its own
contiguous shard of it; DDP averages the gradients, so with equal shards a step is the
single-process step on the whole batch (up to the order of floating-point sums). Rank 0 alone
writes checkpoints, logs and evaluations; every rank reads the checkpoint to resume.
Without torchrun (no WORLD_SIZE > 1 in the environment) everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")  # where collectives put their tensors

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: torch.device) -> tuple[Distributed, torch.device]:
        """Join the torchrun process group if there is one; returns it and this rank's device."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(), device
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), device), device

    def shard(self, batch: dict[str, Any], global_size: int) -> dict[str, Any]:
        """This rank's contiguous slice of a global batch (nested dicts of (B, ...) tensors)."""
        if not self.enabled:
            return batch
        if global_size % self.world_size:
            raise ValueError(f"batch_size {global_size} must be divisible by the {self.world_size} processes")
        n = global_size // self.world_size
        lo = self.rank * n

        def cut(x: Any) -> Any:
            return {k: cut(v) for k, v in x.items()} if isinstance(x, dict) else x[lo : lo + n]

        return cut(batch)

    def wrap(self, module: nn.Module) -> nn.Module:
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device = next(module.parameters()).device
        return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Scalars averaged over ranks (logged losses describe the global batch)."""
        if not self.enabled:
            return values
        import torch.distributed as dist

        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist(), strict=True)}

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
