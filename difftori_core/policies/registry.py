"""Policy types register themselves here with their typed config section.

    @register_policy("mlp_bc", MLPBCConfig)
    class MLPBCPolicy(Policy): ...

A new policy type is one module with one registration: the config (`policy.type=<name>`, its
section `policy.<name>.*`), checkpoints, export, evaluation, the runner and the controller all go
through this table and never name a policy class.

`PolicyConfig` holds the shape every policy shares (horizon, observation frames, executed
actions, the observation encoder) and one section per policy type it uses; a saved config holds
only those (a DiffTORI policy: its own section and its base policy's), so a checkpoint carries no
other type's settings. Sections are typed dataclasses, built with defaults when first asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from difftori_core.config import ConfigError, fields_from_dict, from_dict, to_dict
from difftori_core.nn.encoders import EncoderConfig
from difftori_core.policies.base import Policy, PolicySpec

P = TypeVar("P", bound=type[Policy])

_REGISTRY: dict[str, type[Policy]] = {}


def register_policy(name: str, config: type, variants: tuple[str, ...] | None = None) -> Callable[[P], P]:
    """Class decorator: make `cls` the policy type `name` whose config section is `config`.
    `variants`: the ways it can act (default: just `name`)."""

    def decorate(cls: P) -> P:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"policy type {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.type_name, cls.config_class = name, config
        cls.variants = variants or (name,)
        _REGISTRY[name] = cls
        return cls

    return decorate


def policy_class(name: str) -> type[Policy]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown policy type {name!r}; registered: {sorted(_REGISTRY)}") from None


def policy_types() -> list[str]:
    return sorted(_REGISTRY)


@dataclass
class PolicyConfig:
    """Which policy, and its shape. `horizon` must be divisible by 4 for the diffusion U-Net.
    Type-specific settings live in `sections` (`config.section(name)`, or `config.<name>`);
    in YAML they are keys of the policy mapping: `policy: {type: difftori, difftori: {...}}`."""

    type: str = "difftori"
    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    sections: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        policy_class(self.type)  # unknown types fail here, naming the registered ones

    def section(self, name: str) -> Any:
        """The typed config of policy type `name` (its defaults if not set)."""
        if name not in self.sections:
            self.sections[name] = policy_class(name).config_class()
        return self.sections[name]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("type", "sections"):
            raise AttributeError(name)
        if name in policy_types():
            return self.section(name)
        raise AttributeError(f"PolicyConfig has no field or policy section {name!r}")

    def used_sections(self) -> list[str]:
        """The sections this config's policy type needs, its own first."""
        out: list[str] = []
        todo = [self.type]
        while todo:
            name = todo.pop(0)
            if name in out:
                continue
            out.append(name)
            todo += [n for n in policy_class(name).required_sections(self.section(name)) if n not in out]
        return out

    def to_config(self) -> dict[str, Any]:
        plain = {k: getattr(self, k) for k in ("type", "horizon", "n_obs_steps", "n_action_steps")}
        sections = {n: to_dict(self.section(n)) for n in self.used_sections()}
        return {**plain, "encoder": to_dict(self.encoder), **sections}

    @classmethod
    def from_config(cls, data: dict[str, Any], prefix: str = "") -> PolicyConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{prefix.rstrip('.') or 'policy'}: expected a mapping, got {data!r}")
        plain_keys = {"type", "horizon", "n_obs_steps", "n_action_steps", "encoder"}
        known = policy_types()
        unknown = sorted(k for k in data if k not in plain_keys and k not in known)
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {[prefix + k for k in unknown]}; known: {sorted(plain_keys)} "
                f"and the policy types' sections {known}"
            )
        sections = {
            name: from_dict(policy_class(name).config_class, value, prefix=f"{prefix}{name}.")
            for name, value in data.items()
            if name not in plain_keys
        }
        plain = {k: v for k, v in data.items() if k in plain_keys}
        return fields_from_dict(cls, {**plain, "sections": sections}, prefix)


def make_policy(config: PolicyConfig, spec: PolicySpec) -> Policy:
    return policy_class(config.type).from_config(config, spec)
