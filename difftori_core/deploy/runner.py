"""One runner turns a raw observation into an action, for evaluation, the sim runner and the
controller alike.

    runner = load_runner("models/door-open-v3-difftori", device="cpu", backend="auto")
    runner.reset()                                   # at the start of every episode
    action, status = runner.step(raw_observation)    # {"point_cloud": (N, 3), "agent_pos": (D,), ...}

Per call: the model's own `ObservationProcessor` (crop, resize, farthest-point sampling, exactly
the training-time preprocessing), the observation history (padded by repeating the first frame
after a reset, as the training sampler pads), the policy's chunk when the action queue is empty,
and the queue (`n_action_steps` of each chunk are executed). Frames that no chunk will see (k
actions still queued with k >= n_obs_steps) are still validated but not sampled, which saves most
of the processing cost; callers never need to know. `StepStatus` says what happened.

`variant` picks how the policy acts (`Policy.variants`: for DiffTORI "difftori" or "base"), so a
base-vs-refined comparison is two runners over one loaded policy, never a config change.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from difftori_core.checkpoint import ModelInfo, build_policy, read_model
from difftori_core.deploy.backends import apply_backend
from difftori_core.policies import Policy
from difftori_core.processing import ObservationProcessor, ProcessingSpec


@dataclass
class StepStatus:
    """What one `step` / `act` did.

    new_chunk: a chunk was computed on this call (else the action came from the queue).
    frame_used: the observation entered the history (a future chunk sees it).
    solver_failed / solver_iterations: the trajectory optimizer's outcome for a new chunk
        (failed samples get the proposal back); False / None when no solve ran.
    process_ms / policy_ms: time in preprocessing and in the policy.
    """

    new_chunk: bool
    frame_used: bool
    solver_failed: bool = False
    solver_iterations: int | None = None
    process_ms: float = 0.0
    policy_ms: float = 0.0


@dataclass
class PolicyRunner:
    policy: Policy
    processing: ProcessingSpec
    variant: str | None = None
    model: ModelInfo | None = None  # where the policy came from, when loaded from disk
    backend_info: dict[str, Any] = field(default_factory=lambda: {"backend": "torch"})

    def __post_init__(self) -> None:
        self.variant = self.policy.check_variant(self.variant)
        self.processor = ObservationProcessor(self.processing)
        self.policy.eval()
        self._history: deque[dict[str, Tensor]] = deque(maxlen=self.policy.n_obs_steps)
        self._queue: deque[Tensor] = deque()

    @property
    def spec(self) -> Any:
        return self.policy.spec

    @property
    def backend(self) -> str:
        return str(self.backend_info["backend"])

    def with_variant(self, variant: str | None) -> PolicyRunner:
        """Another runner over the same policy (and weights), acting as `variant`."""
        return PolicyRunner(self.policy, self.processing, variant, self.model, self.backend_info)

    def reset(self) -> None:
        """Forget history and queued actions (a new episode, or after a fallback)."""
        self._history.clear()
        self._queue.clear()
        self.policy.reset()

    def frame_used(self) -> bool:
        """Whether the next observation will be part of a chunk's observation window."""
        return not self._history or len(self._queue) < self.policy.n_obs_steps

    def step(self, raw: Mapping[str, Any]) -> tuple[np.ndarray, StepStatus]:
        """One control tick from a raw observation: (action (A,), status). Raises
        `ProcessingError` (naming the key and the problem) for an observation it cannot use."""
        used = self.frame_used()
        t0 = time.perf_counter()
        processed = self.processor.process(raw, sample=used)
        process_ms = (time.perf_counter() - t0) * 1e3
        frame = {k: torch.from_numpy(processed[k]).unsqueeze(0) for k in self.spec.obs_shapes} if used else None
        action, status = self.act(frame)
        status.process_ms = process_ms
        return action[0].cpu().numpy(), status

    @torch.inference_mode()
    def act(self, frame: Mapping[str, Tensor] | None) -> tuple[Tensor, StepStatus]:
        """One tick from a processed frame {key: (B, ...)}: (actions (B, A), status). `frame`
        may be None when `frame_used()` was False (the queue's next action comes back)."""
        t0 = time.perf_counter()
        if frame is None:
            if self.frame_used():
                raise ValueError("act(None): this tick's frame is needed (see frame_used)")
            return self._queue.popleft(), StepStatus(new_chunk=False, frame_used=False)
        frame = {k: torch.as_tensor(frame[k], device=self.policy.device) for k in self.spec.obs_shapes}
        if not self._history:
            self._history.extend([frame] * self.policy.n_obs_steps)
        else:
            self._history.append(frame)
        status = StepStatus(new_chunk=not self._queue, frame_used=True)
        if not self._queue:
            window = {k: torch.stack([f[k] for f in self._history], dim=1) for k in frame}
            chunk = self.policy.predict_chunk(window, self.variant)
            self._queue.extend(chunk.actions[:, : self.policy.n_action_steps].unbind(1))
            if chunk.solver_failed is not None:
                status.solver_failed = bool(chunk.solver_failed.any())
            if chunk.solver_iterations is not None:
                status.solver_iterations = int(chunk.solver_iterations.max())
        status.policy_ms = (time.perf_counter() - t0) * 1e3
        return self._queue.popleft(), status

    def pending_actions(self) -> np.ndarray:
        """Actions of the current chunk still queued after the last call, (k, A) of sample 0."""
        if not self._queue:
            return np.zeros((0, self.spec.action_dim))
        return torch.stack(list(self._queue), dim=1)[0].cpu().numpy()

    def warm_up(self) -> None:
        """One chunk on a synthetic observation, so the first real tick pays no lazy setup."""
        frame = {k: v[:, -1] for k, v in self.policy.example_observation(1).items()}
        self.reset()
        self.act(frame)
        self.reset()


def load_runner(
    path: str | Path, device: str | torch.device = "cpu", backend: str = "torch", variant: str | None = None
) -> PolicyRunner:
    """The runner of the model at `path` (a model, checkpoint or run directory): verified
    weights, its processing spec, on `device`, with the named backend (`deploy.backends`)."""
    info = read_model(path)
    policy = build_policy(info, device)
    backend_info = apply_backend(backend, policy, info.path, device)
    return PolicyRunner(policy, info.processing, variant, info, backend_info)
