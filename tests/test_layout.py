"""The structure itself: no import cycles in the core, the core never imports ROS, and a policy
type registered from outside the package trains, saves, loads and runs without editing any
central file."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from difftori_core.policies import Policy, PolicySpec, register_policy

CORE = Path(__file__).resolve().parents[1] / "difftori_core"


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the difftori_core modules it imports (anywhere in the file, lazily or not)."""
    modules = {module_name(p): p for p in CORE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_difftori_core() -> None:
    graph = import_graph()
    assert "difftori_core.deploy.runner" in graph and graph["difftori_core.deploy.runner"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_difftori_core_never_imports_ros() -> None:
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] in ("rclpy", "difftori_ros", "sensor_msgs") for n in names), path


# -- a policy type defined here, in the test file alone ------------------------------------------


@dataclass
class LinearConfig:
    scale: float = 1.0


@register_policy("test_linear", LinearConfig)
class LinearPolicy(Policy):
    """Features -> chunk by one linear map: the smallest thing that honours the contract."""

    def __init__(self, spec: PolicySpec, horizon, n_obs_steps, n_action_steps, encoder, config: LinearConfig) -> None:
        super().__init__(spec, horizon, n_obs_steps, n_action_steps)
        self._build_perception(encoder)
        self.head = torch.nn.Linear(self.feature_dim, horizon * spec.action_dim)
        self.scale = config.scale

    def propose_normalized(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * self.head(features).view(-1, self.horizon, self.action_dim)

    def forward(self, batch):
        target = self.normalizer.normalize("action", batch["action"].float())
        loss = F.mse_loss(self.propose_normalized(self.encode(batch["obs"])), target)
        return loss, {"loss": loss.item()}


def test_a_policy_registered_from_a_test_file_trains_saves_loads_and_runs(tmp_path: Path) -> None:
    from difftori_core.config import load_config
    from difftori_core.data.dataset import DatasetWriter
    from difftori_core.deploy.runner import load_runner
    from difftori_core.training.il import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    env = {"task": "door-open-v3", "action_low": [-1.0] * 4, "action_high": [1.0] * 4, "joint_names": ["j0", "j1"]}
    processing = {"keys": ["agent_pos"]}
    from difftori_core.config import to_dict
    from difftori_core.processing import ProcessingSpec

    processing = to_dict(ProcessingSpec(keys=("agent_pos",)))
    with DatasetWriter(data, env=env, processing=processing) as writer:
        for _ in range(3):
            pos = rng.normal(size=(20, 2)).astype(np.float32)
            writer.add_episode({"agent_pos": pos, "action": np.tanh(pos @ rng.normal(size=(2, 4))).astype(np.float32)})
    cfg = load_config(
        TrainConfig,
        None,
        [
            f"dataset={data}",
            f"output_dir={tmp_path / 'run'}",
            "processing.keys=[agent_pos]",
            "policy.type=test_linear",
            "policy.test_linear.scale=0.5",
            "policy.horizon=4",
            "policy.n_action_steps=2",
            "base_steps=30",
            "cost_steps=10",  # ignored: this type has one phase
            "batch_size=8",
            "eval_episodes=0",
            "final_eval_episodes=0",
            "val_demos=0",
            "log_every=10",
            "checkpoint_every=30",
        ],
    )
    Trainer(cfg).run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30] and rows[-1]["loss"] < rows[0]["loss"]
    saved = (tmp_path / "run" / "checkpoints" / "step_0000030" / "config.yaml").read_text()
    assert "test_linear:" in saved and "difftori" not in saved and "mlp_bc" not in saved
    runner = load_runner(tmp_path / "run")
    assert isinstance(runner.policy, LinearPolicy) and runner.policy.scale == 0.5
    actions = [runner.step({"agent_pos": rng.normal(size=2)}) for _ in range(3)]
    assert [s.new_chunk for _, s in actions] == [True, False, True]
    assert all(a.shape == (4,) and np.all(np.abs(a) <= 1.0) for a, _ in actions)


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_policy("test_linear", LinearConfig)(type("Other", (LinearPolicy,), {}))
