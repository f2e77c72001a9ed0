"""Solver configuration and per-sample solver information."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Method = Literal["lm", "gn"]
BackwardMode = Literal["implicit", "truncated", "unroll"]
Backend = Literal["fast", "theseus"]
JacobianMode = Literal["auto", "analytic", "autodiff"]


@dataclass
class SolverConfig:
    """How the trajectory optimizer solves and differentiates.

    Attributes:
        backend: "fast" (batched damped normal equations in plain torch) or "theseus".
        method: "lm" (Levenberg-Marquardt, fixed damping) or "gn" (Gauss-Newton; needs a
            full-rank Jacobian, e.g. residual width >= H*A or a proximity term).
        max_iterations: iterations per solve.
        step_size: x <- x + step_size * delta.
        damping: LM damping lambda in (J^T J + lambda I) delta = -J^T r.
        backward_mode: "unroll" back-propagates through every iteration; "truncated" through the
            last `backward_iterations`; "implicit" through one Gauss-Newton step at the solution
            with the Hessian detached (implicit function theorem, Gauss-Newton approximation;
            with fewer residuals than variables the damped Hessian, since J^T J is singular).
        backward_iterations: k for truncated mode.
        rel_tolerance: a sample stops once its relative cost decrease falls below this; 0 runs
            every iteration (the reference behaviour). Never batch-coupled.
        jacobian: "auto" (analytic when the residual provides it), "analytic" or "autodiff".
    """

    backend: Backend = "fast"
    method: Method = "lm"
    max_iterations: int = 10
    step_size: float = 1.0
    damping: float = 1e-3
    backward_mode: BackwardMode = "truncated"
    backward_iterations: int = 5
    rel_tolerance: float = 0.0
    jacobian: JacobianMode = "auto"

    def __post_init__(self) -> None:
        checks = {
            "backend": self.backend in ("fast", "theseus"),
            "method": self.method in ("lm", "gn"),
            "backward_mode": self.backward_mode in ("implicit", "truncated", "unroll"),
            "jacobian": self.jacobian in ("auto", "analytic", "autodiff"),
            "max_iterations": self.max_iterations >= 1,
            "step_size": self.step_size > 0,
            "damping": self.damping >= 0,
            "backward_iterations": 1 <= self.backward_iterations,
            "rel_tolerance": self.rel_tolerance >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid SolverConfig field(s) {bad}: {self}")

    @property
    def effective_damping(self) -> float:
        return self.damping if self.method == "lm" else 0.0

    def grad_iterations(self) -> int:
        """How many of the final iterations carry gradients when autograd is on."""
        if self.backward_mode == "unroll":
            return self.max_iterations
        if self.backward_mode == "truncated":
            return min(self.backward_iterations, self.max_iterations)
        return 1  # implicit: the final Gauss-Newton step


@dataclass
class SolverInfo:
    """Per-sample outcome of one solve; every field has the batch as its first axis."""

    iterations: Tensor  # long: iterations that updated this sample
    initial_cost: Tensor  # ||r||^2 at the initial value
    final_cost: Tensor  # ||r||^2 at the returned solution (initial cost where failed)
    converged: Tensor  # bool: stopped by rel_tolerance before max_iterations
    failed: Tensor  # bool: non-finite cost/Jacobian/solution or failed factorization

    @classmethod
    def empty(cls, batch: int, device: torch.device) -> SolverInfo:
        return cls(
            iterations=torch.zeros(batch, dtype=torch.long, device=device),
            initial_cost=torch.full((batch,), float("nan"), device=device),
            final_cost=torch.full((batch,), float("nan"), device=device),
            converged=torch.zeros(batch, dtype=torch.bool, device=device),
            failed=torch.zeros(batch, dtype=torch.bool, device=device),
        )

    @classmethod
    def cat(cls, infos: list[SolverInfo]) -> SolverInfo:
        """Infos of consecutive row blocks, as one."""
        return cls(**{f.name: torch.cat([getattr(i, f.name) for i in infos]) for f in dataclasses.fields(cls)})

    def scatter_(self, index: Tensor, other: SolverInfo) -> SolverInfo:
        """Write `other` (a solve of the rows `index`) into this info."""
        for f in dataclasses.fields(self):
            mine = getattr(self, f.name)
            mine[index] = getattr(other, f.name).to(mine.dtype)
        return self

    def summary(self) -> dict[str, float]:
        return {
            "iterations_mean": self.iterations.float().mean().item(),
            "initial_cost_mean": self.initial_cost.nanmean().item(),
            "final_cost_mean": self.final_cost.nanmean().item(),
            "converged_frac": self.converged.float().mean().item(),
            "failed": int(self.failed.sum().item()),
        }
