"""The policy contract shared by training, evaluation, the sim runner and the ROS node.

Every policy is an `nn.Module` registered under a type name (`policies.registry`) with:

* `forward(batch) -> (loss, info)`: one training step's loss on a batch
  `{"obs": {key: (B, T, ...)}, "action": (B, H, A)}` of raw (unnormalized) data;
* `predict_chunk(obs, variant=None) -> Chunk`: actions (B, H, A) in environment units, clamped to
  the action bounds, from `{key: (B, T, ...)}` observations, with per-sample solver outcomes when
  the policy optimizes (`predict_action_chunk` returns the actions alone). `variant` names one of
  `variants` (the first is the default): a DiffTORI policy has "difftori" and "base" (its base
  policy alone), so a comparison is a call argument, never a config mutation;
* `training_phases()`: which module and parameters each training phase optimizes;
* `networks()`: the exportable submodules (ONNX) with example inputs;
* `reset()`: forget any per-episode state (call at the start of every episode).

Observation history and the action queue of tick-by-tick control live in one place, the runner
(`difftori_core.deploy.runner`), not in the policy. Normalization statistics are buffers, so
`state_dict()` holds everything needed to act.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from difftori_core.nn.encoders import EncoderConfig, ObservationEncoder
from difftori_core.policies.normalizer import Normalizer

Batch = Mapping[str, Any]


@dataclass
class PolicySpec:
    """What a policy consumes and produces; saved next to every checkpoint.

    obs_shapes: per-frame shape of each observation key after processing.
    action_names: one name per action dimension (the ROS node's JointTrajectory joint names).
    """

    obs_shapes: dict[str, list[int]]
    action_dim: int
    action_low: list[float]
    action_high: list[float]
    action_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.obs_shapes or not all(
            isinstance(s, (list, tuple)) and all(isinstance(d, int) and d > 0 for d in s)
            for s in self.obs_shapes.values()
        ):
            raise ValueError(f"obs_shapes must map keys to lists of positive ints, got {self.obs_shapes}")
        if self.action_dim < 1:
            raise ValueError(f"action_dim must be positive, got {self.action_dim}")
        if len(self.action_low) != self.action_dim or len(self.action_high) != self.action_dim:
            raise ValueError(f"action bounds must have {self.action_dim} entries")
        if any(lo > hi for lo, hi in zip(self.action_low, self.action_high, strict=True)):
            raise ValueError(f"action_low must not exceed action_high: {self.action_low} > {self.action_high}")
        if not self.action_names:
            self.action_names = [f"action_{i}" for i in range(self.action_dim)]
        if len(self.action_names) != self.action_dim:
            raise ValueError(f"action_names must have {self.action_dim} entries, got {self.action_names}")


class Chunk(NamedTuple):
    """One predicted action chunk (B, H, A) and, for optimizing policies, the per-sample solver
    outcome: `solver_failed` (B,) bool and `solver_iterations` (B,) long (None otherwise)."""

    actions: Tensor
    solver_failed: Tensor | None = None
    solver_iterations: Tensor | None = None


@dataclass
class TrainingPhase:
    """A stage of training: `module(batch)` gives the loss; only `parameters` are optimized."""

    name: str
    module: nn.Module
    parameters: list[nn.Parameter]


@dataclass
class Network:
    """One exportable submodule: `owner.<attr>` is the torch module an ONNX graph replaces.

    `inputs(batch)` builds example inputs (name -> tensor) for export and parity checks; the
    graph's positional inputs follow that order. `dict_input`: the module takes them as one dict
    (the observation encoders) rather than positionally.
    """

    name: str
    owner: nn.Module
    attr: str
    inputs: Callable[[int], dict[str, Tensor]]
    outputs: list[str]
    dict_input: bool = False

    @property
    def module(self) -> nn.Module:
        return getattr(self.owner, self.attr)


class Policy(nn.Module):
    """Base class: normalization, observation encoding and the contract above.

    Subclasses that encode observations themselves call `_build_perception` (it creates
    `self.normalizer` and `self.encoder`); a wrapper policy may instead expose its inner
    policy's as properties. `type_name`, `config_class` and (by default) `variants` are set by
    `registry.register_policy`.
    """

    type_name: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    variants: ClassVar[tuple[str, ...]] = ()
    normalizer: Normalizer
    encoder: ObservationEncoder

    def __init__(self, spec: PolicySpec, horizon: int, n_obs_steps: int, n_action_steps: int) -> None:
        super().__init__()
        if horizon < 1 or n_obs_steps < 1:
            raise ValueError(f"horizon and n_obs_steps must be positive, got {horizon}, {n_obs_steps}")
        if not 1 <= n_action_steps <= horizon:
            raise ValueError(f"n_action_steps must be in [1, horizon={horizon}], got {n_action_steps}")
        self.spec = spec
        self.horizon, self.n_obs_steps, self.n_action_steps = horizon, n_obs_steps, n_action_steps
        self.action_dim = spec.action_dim
        self.register_buffer("action_low", torch.tensor(spec.action_low, dtype=torch.float32), persistent=False)
        self.register_buffer("action_high", torch.tensor(spec.action_high, dtype=torch.float32), persistent=False)

    # -- construction (registry) ---------------------------------------------------------

    @classmethod
    def from_config(cls, config: Any, spec: PolicySpec) -> Policy:
        """Build from the shared shape fields of a `registry.PolicyConfig` and this type's own
        section of it."""
        return cls(  # type: ignore[call-arg]
            spec, config.horizon, config.n_obs_steps, config.n_action_steps, config.encoder,
            config.section(cls.type_name),
        )

    @classmethod
    def required_sections(cls, section: Any) -> list[str]:
        """Config sections (policy type names) a policy of this type needs, given its own."""
        return [cls.type_name]

    def _build_perception(self, encoder: EncoderConfig) -> None:
        dims = {"action": self.spec.action_dim}
        if "agent_pos" in self.spec.obs_shapes:
            dims["agent_pos"] = self.spec.obs_shapes["agent_pos"][0]
        self.normalizer = Normalizer(dims)
        self.encoder = ObservationEncoder(self.spec.obs_shapes, self.n_obs_steps, encoder)
        self.feature_dim = self.encoder.feature_dim  # stays known if the encoder is swapped for ONNX

    # -- shared helpers ------------------------------------------------------------------

    def encode(self, obs: Mapping[str, Tensor], encoder: nn.Module | None = None) -> Tensor:
        """(B, T, ...) raw observations -> (B, feature_dim), with proprioception normalized."""
        obs = {k: obs[k] for k in self.spec.obs_shapes}
        if "agent_pos" in obs:
            obs["agent_pos"] = self.normalizer.normalize("agent_pos", obs["agent_pos"].float())
        if "point_cloud" in obs:
            obs["point_cloud"] = obs["point_cloud"].float()
        return (encoder or self.encoder)(obs)

    def to_env_actions(self, normalized: Tensor) -> Tensor:
        """Normalized chunk -> environment units, clamped to the action bounds."""
        actions = self.normalizer.unnormalize("action", normalized)
        return torch.maximum(torch.minimum(actions, self.action_high), self.action_low)

    def example_observation(self, batch: int) -> dict[str, Tensor]:
        """Random raw observation windows (B, T, ...) of the right shapes and dtypes, seeded by
        `batch`: export inputs, warm-up and timing."""
        g = torch.Generator().manual_seed(batch)
        out = {}
        for key, shape in self.spec.obs_shapes.items():
            size = (batch, self.n_obs_steps, *shape)
            if key == "image":
                out[key] = torch.randint(0, 256, size, generator=g, dtype=torch.uint8)
            else:
                out[key] = torch.randn(size, generator=g)
        return out

    def check_variant(self, variant: str | None) -> str:
        if variant is None:
            return self.variants[0]
        if variant not in self.variants:
            raise ValueError(f"{self.type_name} policy has variants {list(self.variants)}, not {variant!r}")
        return variant

    @property
    def device(self) -> torch.device:
        return self.action_low.device

    # -- contract -----------------------------------------------------------------------

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def propose_normalized(self, features: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Features (B, C) -> a normalized chunk (B, H, A): what a direct policy predicts, and
        what a DiffTORI base proposes. Policies that act otherwise override `predict_chunk`."""
        raise NotImplementedError

    def predict_chunk(self, obs: Mapping[str, Tensor], variant: str | None = None) -> Chunk:
        self.check_variant(variant)
        with torch.inference_mode():
            return Chunk(self.to_env_actions(self.propose_normalized(self.encode(obs))))

    def predict_action_chunk(self, obs: Mapping[str, Tensor], variant: str | None = None) -> Tensor:
        return self.predict_chunk(obs, variant).actions

    def training_phases(self) -> list[TrainingPhase]:
        return [TrainingPhase("base", self, list(self.parameters()))]

    def networks(self) -> list[Network]:
        """Exportable networks, in a fixed order; the first is the observation encoder."""
        return [Network("encoder", self, "encoder", self.example_observation, ["features"], dict_input=True)]

    def reset(self) -> None:
        """Stateless by default."""
