"""Which simulated robot a model needs (the launch file's `use_sim:=true`), from the model itself.

A model trained on MetaWorld drives the MetaWorld cell (`sim_robot_node`: camera, depth cloud in
the camera's optical frame, joint states, /clock; end-effector actions on difftori/action, or a
twist + gripper with `command_interface="twist"`); the controller gets the camera extrinsic
(`METAWORLD_CAMERA_POSE`, what a calibration would give) and runs on simulation time.
A model-based agent trained on DeepMind Control (`spec.json` env kind "dmc") drives the
torque-controlled `dmc_robot_node`: joint states in, efforts out on effort_controller/commands,
on simulation time (/clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: T_base_optical of the MetaWorld cell's depth camera ("corner2", the same in every task):
#: x y z qx qy qz qw. tests/test_ros_cell.py checks it against the simulator.
METAWORLD_CAMERA_FRAME = "camera_color_optical_frame"
METAWORLD_CAMERA_POSE = (1.3, -0.2, 1.1, -0.765363, -0.395038, 0.262667, 0.434937)


@dataclass
class SimulatedRobot:
    executable: str
    robot_parameters: dict[str, Any]
    controller_parameters: dict[str, Any] = field(default_factory=dict)


def simulated_robot(model: str, task: str = "", command_interface: str = "float64_array") -> SimulatedRobot:
    """The simulated robot for `model` (a model, checkpoint or run directory); `task` overrides
    the model's task; `command_interface` (MetaWorld) is float64_array or twist. Raises
    `ArtifactError` for a model that cannot be read."""
    from difftori_core.checkpoint import read_model
    from difftori_ros.models import resolve_model

    info = read_model(resolve_model(model))
    env = info.env
    if env.get("kind") == "dmc":
        return SimulatedRobot(
            "dmc_robot_node",
            {"task": task or info.task, "action_repeat": int(env.get("action_repeat", 0)), "use_sim_time": True},
            {"action_topic": "effort_controller/commands", "use_sim_time": True},
        )
    return SimulatedRobot(
        "sim_robot_node",
        {"task": task or info.task or "door-open-v3", "command_interface": command_interface},
        {
            "command_interface": command_interface,
            "points_frame": METAWORLD_CAMERA_FRAME,
            "points_to_base": list(METAWORLD_CAMERA_POSE),
            "use_sim_time": True,
        },
    )


def ros_args(params: dict) -> list[str]:
    """`name:=value` strings for `--ros-args -p` (lists as YAML flow sequences)."""
    def value(v: object) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(str(x) for x in v) + "]"
        return str(v)

    return [f"{k}:={value(v)}" for k, v in params.items()]
