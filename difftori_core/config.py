"""Typed dataclass configs: YAML files in the repo, `dotted.key=value` overrides from the CLI.

`load_config(Cls, path, ["solver.damping=0.1"])` builds `Cls` from the YAML (missing fields keep
their defaults), applies the overrides (values parsed as YAML scalars, never `eval`), and
type-checks every field, so a typo or a wrong type fails with a message that names the key.

A dataclass whose shape depends on its own content (the policy config: one section per policy
type, holding only the sections its type uses) defines `from_config(data, prefix)` and
`to_config()`; `from_dict` / `to_dict` call them wherever the class appears in a config tree.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and hasattr(tp, "from_config"):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return tp.from_config(value, prefix=f"{key}.")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: expected one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a (nested) dict, rejecting unknown keys."""
    if hasattr(cls, "from_config"):
        return cls.from_config(data, prefix=prefix)  # type: ignore[attr-defined]
    return fields_from_dict(cls, data, prefix)


def fields_from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """`from_dict` field by field, without the `from_config` hook (for the hook's own use)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s) {[prefix + k for k in unknown]}; known: {sorted(fields)}")
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix or cls.__name__}: {err}") from err


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain nested dicts (sections through their `to_config`)."""
    return _plain_config(config)


def _plain_config(value: Any) -> Any:
    if hasattr(value, "to_config"):
        return value.to_config()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain_config(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_config(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain_config(v) for k, v in value.items()}
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings to a nested dict (values parsed as YAML scalars)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        dotted, raw = item.split("=", 1)
        node = data
        *parents, leaf = dotted.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults <- YAML file (if given) <- overrides."""
    data: dict[str, Any] = to_dict(cls())
    if path is not None:
        text = Path(path).read_text()
        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        _deep_update(data, loaded)
    apply_overrides(data, overrides or [])
    return from_dict(cls, data)


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
