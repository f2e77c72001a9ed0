"""The main job's pipeline, shortened: training a cost through the optimizer beats the base proposal."""

from __future__ import annotations

import json

from difftori_core.demo import DemoConfig, main, run
from difftori_core.trajopt import SolverConfig


def test_learning_a_cost_through_trajopt_beats_the_base_policy(tmp_path) -> None:
    cfg = DemoConfig(
        train_samples=512,
        test_samples=128,
        steps=200,
        batch_size=32,
        output_dir=str(tmp_path),
        solver=SolverConfig(max_iterations=5, damping=0.01, backward_mode="implicit"),
    )
    result = run(cfg)
    assert result["difftori_test_mse"] < 0.8 * result["base_policy_test_mse"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["history"]["test_mse"][-1] < saved["history"]["test_mse"][0]
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000


def test_cli_reads_yaml_and_overrides(tmp_path) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                "--config",
                "config/demo.yaml",
                "steps=2",
                "train_samples=64",
                "test_samples=16",
                f"output_dir={out}",
                "solver.backend=theseus",
            ]
        )
        == 0
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["solver"]["backend"] == "theseus" and saved["config"]["steps"] == 2
