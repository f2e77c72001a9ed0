from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from difftori_core.config import ConfigError, load_config, to_dict
from difftori_core.trajopt import SolverConfig


@dataclass
class _Run:
    name: str = "run"
    hidden: tuple[int, ...] = (256,)
    solver: SolverConfig = field(default_factory=SolverConfig)


def test_yaml_then_overrides(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: a\nsolver:\n  damping: 0.5\n  method: gn\n")
    cfg = load_config(_Run, path, ["solver.max_iterations=7", "hidden=[64, 32]", "solver.damping=1"])
    assert cfg.name == "a" and cfg.hidden == (64, 32)
    assert cfg.solver.method == "gn" and cfg.solver.max_iterations == 7
    assert cfg.solver.damping == 1.0 and isinstance(cfg.solver.damping, float)
    assert load_config(_Run, None, []) == _Run()
    assert to_dict(cfg)["solver"]["max_iterations"] == 7


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("solver.dampign=0.1", r"unknown config key\(s\) \['solver.dampign'\]"),
        ("solver.method=newton", r"solver.method: expected one of \['lm', 'gn'\]"),
        ("solver.max_iterations=ten", "solver.max_iterations: expected int"),
        ("solver.max_iterations=0", "invalid SolverConfig field"),
        ("novalue", "must look like key.sub=value"),
    ],
)
def test_bad_config_is_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_Run, None, [override])
