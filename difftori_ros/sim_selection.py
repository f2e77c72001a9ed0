"""Which simulated robot a model needs (the launch file's `use_sim:=true`), from the model itself.

A model trained on MetaWorld drives the MetaWorld cell (`sim_robot_node`: camera, depth cloud,
joint states; end-effector actions on difftori/action). A model-based agent trained on DeepMind
Control (`spec.json` env kind "dmc") drives the torque-controlled `dmc_robot_node`: joint states
in, efforts out on effort_controller/commands, on simulation time (/clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SimulatedRobot:
    executable: str
    robot_parameters: dict[str, Any]
    controller_parameters: dict[str, Any] = field(default_factory=dict)


def simulated_robot(model: str, task: str = "") -> SimulatedRobot:
    """The simulated robot for `model` (a model, checkpoint or run directory); `task` overrides
    the model's task. Raises `ArtifactError` for a model that cannot be read."""
    from difftori_core.checkpoint import read_model

    info = read_model(model)
    env = info.env
    if env.get("kind") == "dmc":
        return SimulatedRobot(
            "dmc_robot_node",
            {"task": task or info.task, "action_repeat": int(env.get("action_repeat", 0)), "use_sim_time": True},
            {"action_topic": "effort_controller/commands", "use_sim_time": True},
        )
    return SimulatedRobot("sim_robot_node", {"task": task or info.task or "door-open-v3"})
