"""Every shipped model loads through the runner and reproduces the actions it gave before the
layout change (tests/data/shipped_actions.json: 12 ticks per model and variant, recorded with
the previous code on the observations `raw_observations` generates)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from difftori_core.deploy.runner import load_runner
from difftori_core.processing import ProcessingSpec

ROOT = Path(__file__).resolve().parents[1]
RECORDED = json.loads((ROOT / "tests" / "data" / "shipped_actions.json").read_text())
# Imitation models (the recording covers them); model-based agents have their own test below.
SHIPPED = sorted(
    p for p in (ROOT / "models").iterdir() if (p / "model.safetensors").is_file() and "tdmpc" not in p.name
)


def raw_observations(spec: ProcessingSpec, joint_dim: int, ticks: int = 12, seed: int = 0) -> list[dict]:
    """Seeded raw sensor data: a 3000-point cloud filling the workspace box, an RGB image and
    joint positions (the generator the recorded actions were made with)."""
    rng = np.random.default_rng(seed)
    lo, hi = np.array(spec.crop_min), np.array(spec.crop_max)
    return [
        {
            "point_cloud": (lo + rng.random((3000, 3)) * (hi - lo)).astype(np.float32),
            "image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            "agent_pos": rng.normal(size=joint_dim).astype(np.float32),
        }
        for _ in range(ticks)
    ]


def test_every_shipped_model_has_a_recording() -> None:
    assert SHIPPED and sorted(RECORDED) == [p.name for p in SHIPPED]


@pytest.mark.parametrize("model", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_model_reproduces_its_recorded_actions(model: Path) -> None:
    torch.set_num_threads(1)
    runner = load_runner(model)
    assert runner.model.spec["version"] == 2 and runner.policy.variants == ("difftori", "base")
    joints = runner.spec.obs_shapes.get("agent_pos", [9])[0]
    observations = raw_observations(runner.processing, joints)
    for variant, expected in RECORDED[model.name].items():
        r = runner.with_variant(variant)
        r.reset()
        actions = np.array([r.step(raw)[0] for raw in observations])
        np.testing.assert_allclose(actions, np.array(expected), atol=1e-5, rtol=0, err_msg=f"{model.name} {variant}")


def test_shipped_model_based_agent_loads_and_plans_from_joint_states() -> None:
    runner = load_runner(ROOT / "models" / "cartpole-swingup-tdmpc")
    assert runner.policy.type_name == "tdmpc" and runner.model.env["kind"] == "dmc"
    runner.reset()
    action, status = runner.step({"agent_pos": np.array([0.1, 3.0]), "joint_velocity": np.zeros(2)})
    assert action.shape == (1,) and abs(action[0]) <= 1 and status.new_chunk and not status.solver_failed
