"""The controller's command interfaces: what a robot stack consumes, and what "hold" means for each.

One interface per controller, chosen by the `command_interface` parameter:

  float64_array     std_msgs/Float64MultiArray on `action_topic`, one value per action dimension
                    (ros2_control's forward_command_controller convention: efforts, velocities or
                    end-effector deltas, in the model's `action_names` order). Hold: the safe action
                    (zeros; `hold_keep_last` dimensions keep their last value).
  twist             geometry_msgs/TwistStamped on `twist_topic` in `command_frame` (the MoveIt Servo /
                    Cartesian-controller convention), from the actions named ee_dx, ee_dy, ee_dz
                    (linear) and ee_droll, ee_dpitch, ee_dyaw (angular) times `twist_scale` (1.0:
                    unitless commands in [-1, 1], Servo's `command_in_type: unitless`), plus the
                    gripper command as a one-element Float64MultiArray on `gripper_topic` (a
                    forward_command_controller on the gripper joint). Hold: a zero twist; the gripper
                    keeps its last command.
  joint_trajectory  trajectory_msgs/JointTrajectory on `trajectory_topic` with the model's joint names
                    and positions: only for models that act in joint-position space (every action
                    name is one of the model's joints). The chunk becomes the trajectory's points,
                    point i at (i + 1) * dt. Hold: an empty trajectory, which a joint_trajectory_
                    controller reads as "stop and hold the current position".

Every publisher is reliable, keep-last 1: a command that waited behind a newer one is worth nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from geometry_msgs.msg import TwistStamped
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from difftori_ros import convert

INTERFACES = ("float64_array", "twist", "joint_trajectory")
COMMAND_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
LINEAR_NAMES = ("ee_dx", "ee_dy", "ee_dz")
ANGULAR_NAMES = ("ee_droll", "ee_dpitch", "ee_dyaw")
GRIPPER_NAME = "gripper"


class CommandOutput:
    """Publishes a policy action (and the rest of its chunk) or the hold command on one interface."""

    def __init__(self, node: Any, action_names: Sequence[str]) -> None:
        self.node, self.action_names = node, list(action_names)
        self.publishers: list[Any] = []

    def _publisher(self, msg_type: type, topic: str) -> Any:
        pub = self.node.create_lifecycle_publisher(msg_type, topic, COMMAND_QOS)
        self.publishers.append(pub)
        return pub

    def publish(self, action: np.ndarray, chunk: np.ndarray, stamp_ns: int, dt: float) -> None:
        raise NotImplementedError

    def hold(self, safe_action: np.ndarray, stamp_ns: int) -> None:
        raise NotImplementedError

    def destroy(self) -> None:
        for pub in self.publishers:
            self.node.destroy_lifecycle_publisher(pub)
        self.publishers = []


class Float64ArrayOutput(CommandOutput):
    def __init__(self, node: Any, action_names: Sequence[str], topic: str) -> None:
        super().__init__(node, action_names)
        self.pub = self._publisher(Float64MultiArray, topic)

    def publish(self, action: np.ndarray, chunk: np.ndarray, stamp_ns: int, dt: float) -> None:
        self.pub.publish(convert.action_to_float64_multiarray(action))

    def hold(self, safe_action: np.ndarray, stamp_ns: int) -> None:
        self.pub.publish(convert.action_to_float64_multiarray(safe_action))


class TwistOutput(CommandOutput):
    def __init__(
        self, node: Any, action_names: Sequence[str], twist_topic: str, gripper_topic: str, frame: str, scale: float
    ) -> None:
        super().__init__(node, action_names)
        index = {name: i for i, name in enumerate(action_names)}
        known = {*LINEAR_NAMES, *ANGULAR_NAMES, GRIPPER_NAME}
        unknown = [n for n in action_names if n not in known]
        if unknown or not any(n in index for n in LINEAR_NAMES + ANGULAR_NAMES):
            raise ValueError(
                f"command_interface twist needs end-effector actions named {LINEAR_NAMES + ANGULAR_NAMES} "
                f"(and {GRIPPER_NAME!r}); this model's actions are {list(action_names)}"
                + (f" ({unknown} have no twist meaning)" if unknown else "")
            )
        self.linear = [index.get(n) for n in LINEAR_NAMES]
        self.angular = [index.get(n) for n in ANGULAR_NAMES]
        self.gripper = index.get(GRIPPER_NAME)
        self.frame, self.scale = frame, scale
        self.twist_pub = self._publisher(TwistStamped, twist_topic)
        self.gripper_pub = self._publisher(Float64MultiArray, gripper_topic) if self.gripper is not None else None

    def _twist(self, action: np.ndarray, stamp_ns: int) -> TwistStamped:
        msg = TwistStamped()
        msg.header.stamp = convert.ns_to_stamp(stamp_ns)
        msg.header.frame_id = self.frame
        lin = [0.0 if i is None else float(action[i]) * self.scale for i in self.linear]
        ang = [0.0 if i is None else float(action[i]) * self.scale for i in self.angular]
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = lin
        msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = ang
        return msg

    def publish(self, action: np.ndarray, chunk: np.ndarray, stamp_ns: int, dt: float) -> None:
        # Gripper first: a robot that steps on the twist then already has this tick's gripper.
        if self.gripper_pub is not None:
            self.gripper_pub.publish(convert.action_to_float64_multiarray(action[[self.gripper]]))
        self.twist_pub.publish(self._twist(action, stamp_ns))

    def hold(self, safe_action: np.ndarray, stamp_ns: int) -> None:
        # The safe action is zero motion; the gripper keeps its last command (hold_keep_last).
        self.publish(safe_action, safe_action[None], stamp_ns, 0.0)


class JointTrajectoryOutput(CommandOutput):
    def __init__(self, node: Any, action_names: Sequence[str], joint_names: Sequence[str], topic: str) -> None:
        super().__init__(node, action_names)
        outside = [n for n in action_names if n not in joint_names]
        if outside:
            raise ValueError(
                f"command_interface joint_trajectory needs a model that acts in joint-position space (every "
                f"action a joint of the model); actions {outside} are not joints {list(joint_names)}: "
                f"use float64_array or twist"
            )
        self.pub = self._publisher(JointTrajectory, topic)

    def publish(self, action: np.ndarray, chunk: np.ndarray, stamp_ns: int, dt: float) -> None:
        self.pub.publish(convert.action_chunk_to_joint_trajectory(chunk, self.action_names, dt, stamp=stamp_ns))

    def hold(self, safe_action: np.ndarray, stamp_ns: int) -> None:
        msg = JointTrajectory()
        msg.header.stamp = convert.ns_to_stamp(stamp_ns)
        msg.joint_names = list(self.action_names)
        self.pub.publish(msg)


def make_output(node: Any, params: Any, action_names: Sequence[str], joint_names: Sequence[str]) -> CommandOutput:
    """The interface `params.command_interface` names (ValueError: why this model cannot use it)."""
    kind = params.command_interface
    if kind == "float64_array":
        return Float64ArrayOutput(node, action_names, params.action_topic)
    if kind == "twist":
        return TwistOutput(
            node,
            action_names,
            params.twist_topic,
            params.gripper_topic,
            params.command_frame or params.base_frame,
            params.twist_scale,
        )
    if kind == "joint_trajectory":
        return JointTrajectoryOutput(node, action_names, joint_names, params.trajectory_topic)
    raise ValueError(f"command_interface must be one of {INTERFACES}, got {kind!r}")
