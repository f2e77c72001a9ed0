"""A simulated robot cell on MetaWorld that speaks the topics real hardware would.

Publishes, stamped with simulation time (`use_sim_clock: true`, the default: MetaWorld's 12.5 ms
per step, also published on /clock, so the graph runs with use_sim_time) or with this node's
clock (`use_sim_clock: false`), at the moment the step's data is published:
  camera/color/image_raw   sensor_msgs/Image rgb8 (upright), frame `camera_frame`
  camera/depth/points      sensor_msgs/PointCloud2, the depth image back-projected: in the camera's
                           optical frame `camera_frame` (`cloud_frame: camera`, as a depth camera
                           driver publishes it; the extrinsic is sim_selection.METAWORLD_CAMERA_POSE)
                           or in `base_frame` (`cloud_frame: base`)
  joint_states             sensor_msgs/JointState, the 7 arm joints + 2 fingers
  /clock                   rosgraph_msgs/Clock (use_sim_clock)
  sim/success              std_msgs/Bool, after every step
  sim/episode              std_msgs/String (JSON), at the end of every episode
Consumes (`command_interface`):
  float64_array: difftori/action   std_msgs/Float64MultiArray: 4-D end-effector delta + gripper
  twist: difftori/twist + difftori/gripper   geometry_msgs/TwistStamped (linear x, y, z = the
                           delta divided by `twist_scale`, in `base_frame`) and std_msgs/
                           Float64MultiArray [gripper]; on_action steps once one of each has come
Services:
  sim/reset                std_srvs/Trigger: start the next seeded episode

Stepping: `step_mode: on_action` advances the simulation by one MetaWorld step per received action
and publishes the new sensor data at once (deterministic closed loop, the same sequence as
in-process evaluation); `step_mode: realtime` steps at `rate_hz` holding the last action (a robot
does not wait for its controller). While it waits for an action it republishes the unchanged
sensor data (same stamps) every `state_republish_s` of wall time: data sent before the
controller's subscriptions matched, or dropped on the best-effort sensor QoS, would otherwise
stall an on_action loop (the controller acts once per stamp, so a repeat is never a second step).
Episodes end at success or at `max_episode_steps`; the next one starts `auto_reset_delay_s`
later (or on sim/reset).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import TwistStamped
from rclpy.clock import Clock as SteadyClock
from rclpy.clock import ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState, PointCloud2
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger

from difftori_ros import convert
from difftori_ros.outputs import COMMAND_QOS
from difftori_ros.qos import EPISODE_RESULTS


class SimRobotNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("difftori_sim_robot", **kwargs)
        defaults = {
            "task": "door-open-v3",
            "seed": 1000,
            "episodes": 0,  # 0: unlimited
            "width": 128,
            "height": 128,
            "max_episode_steps": 200,
            "step_mode": "on_action",
            "rate_hz": 20.0,
            "publish_image": True,
            "auto_reset_delay_s": 0.5,
            "gif_path": "",  # record the first episode (rendered RGB) as a GIF here
            "base_frame": "base",
            "camera_frame": "camera_color_optical_frame",
            "cloud_frame": "camera",  # camera (its optical frame) | base
            "use_sim_clock": True,
            "command_interface": "float64_array",  # float64_array | twist
            "twist_scale": 1.0,
            "state_republish_s": 0.5,  # on_action: repeat the sensor data while no action comes (0: never)
        }
        for name, value in defaults.items():
            self.declare_parameter(name, value)
        p = {name: self.get_parameter(name).value for name in defaults}
        if p["step_mode"] not in ("on_action", "realtime"):
            raise ValueError(f"step_mode must be on_action or realtime, got {p['step_mode']!r}")
        if p["cloud_frame"] not in ("camera", "base"):
            raise ValueError(f"cloud_frame must be camera or base, got {p['cloud_frame']!r}")
        if p["command_interface"] not in ("float64_array", "twist"):
            raise ValueError(f"command_interface must be float64_array or twist, got {p['command_interface']!r}")
        self.p = p

        from difftori_core.envs.metaworld import MetaWorldEnv, MetaWorldEnvConfig

        cfg = MetaWorldEnvConfig(
            task=p["task"], width=p["width"], height=p["height"], max_episode_steps=p["max_episode_steps"]
        )
        self.env = MetaWorldEnv(cfg, render_image=p["publish_image"])
        qos = QoSProfile(
            depth=5, reliability=qos_profile_sensor_data.reliability, history=qos_profile_sensor_data.history
        )
        self.image_pub = self.create_publisher(Image, "camera/color/image_raw", qos)
        self.points_pub = self.create_publisher(PointCloud2, "camera/depth/points", qos)
        self.joints_pub = self.create_publisher(JointState, "joint_states", qos)
        self.success_pub = self.create_publisher(Bool, "sim/success", 10)
        self.episode_pub = self.create_publisher(String, "sim/episode", EPISODE_RESULTS)
        self.clock_pub = self.create_publisher(Clock, "/clock", 10) if p["use_sim_clock"] else None
        if p["command_interface"] == "twist":
            self.create_subscription(TwistStamped, "difftori/twist", self._on_twist, COMMAND_QOS)
            self.create_subscription(Float64MultiArray, "difftori/gripper", self._on_gripper, COMMAND_QOS)
        else:
            self.create_subscription(Float64MultiArray, "difftori/action", self._on_action, COMMAND_QOS)
        self.create_service(Trigger, "sim/reset", self._on_reset)
        self.sim_time_ns = 0
        self.step_ns = round(self.env.step_seconds * 1e9)
        self._twist: np.ndarray | None = None
        self._gripper: float | None = None
        self._stamp_ns = 0
        self._last_publish = time.monotonic()
        self.episode_index = 0
        self.results: list[dict[str, Any]] = []
        self._last_action = np.zeros(4)
        self._done = True
        self._reset_timer = None
        self._frames: list[np.ndarray] = []
        # Timers on the steady clock: with use_sim_clock this node is the source of simulation time.
        self._wall = SteadyClock(clock_type=ClockType.STEADY_TIME)
        if p["step_mode"] == "realtime":
            self.create_timer(1.0 / p["rate_hz"], self._realtime_step, clock=self._wall)
        elif p["state_republish_s"] > 0:
            self.create_timer(p["state_republish_s"] / 2, self._republish_if_waiting, clock=self._wall)
        self._start_episode()

    # -- episodes ------------------------------------------------------------------------

    def _start_episode(self) -> None:
        if self._reset_timer is not None:
            self.destroy_timer(self._reset_timer)
            self._reset_timer = None
        self._frames: list[np.ndarray] = []
        limit = self.p["episodes"]
        if limit and self.episode_index >= limit:
            return
        if self.episode_index > 0:  # a reset takes time: the next episode's stamps say so
            self.sim_time_ns += round(self.p["auto_reset_delay_s"] * 1e9)
        self.seed = self.p["seed"] + self.episode_index
        self.obs = self.env.reset(seed=self.seed)
        self.steps, self.success, self._done = 0, False, False
        self._last_action = np.zeros(4)
        self._publish_sensors()

    def _end_episode(self) -> None:
        self._done = True
        result = {"episode": self.episode_index, "seed": self.seed, "success": self.success, "steps": self.steps}
        self.results.append(result)
        self.episode_pub.publish(String(data=json.dumps(result)))
        self.get_logger().info(
            f"episode {self.episode_index} (seed {self.seed}): "
            f"{'success' if self.success else 'failure'} in {self.steps} steps"
        )
        if self._frames:
            from difftori_core.training.evaluation import write_gif

            write_gif(Path(self.p["gif_path"]), self._frames)
            self._frames = []
            self.p["gif_path"] = ""
        self.episode_index += 1
        self._reset_timer = self.create_timer(self.p["auto_reset_delay_s"], self._start_episode, clock=self._wall)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if not self._done:
            self._end_episode()
        self._start_episode()
        response.success, response.message = True, f"episode {self.episode_index} started (seed {self.seed})"
        return response

    # -- stepping ------------------------------------------------------------------------

    def _on_action(self, msg: Float64MultiArray) -> None:
        action = np.asarray(msg.data, dtype=np.float64)
        if action.shape != (4,) or not np.isfinite(action).all():
            self.get_logger().warning(f"ignoring malformed action {action}", throttle_duration_sec=2.0)
            return
        self._command(action)

    def _on_twist(self, msg: TwistStamped) -> None:
        lin = msg.twist.linear
        delta = np.array([lin.x, lin.y, lin.z]) / self.p["twist_scale"]
        if msg.header.frame_id != self.p["base_frame"] or not np.isfinite(delta).all():
            self.get_logger().warning(
                f"ignoring twist {delta.tolist()} in frame {msg.header.frame_id!r} "
                f"(needs finite values in {self.p['base_frame']!r})",
                throttle_duration_sec=2.0,
            )
            return
        self._twist = delta
        self._pair_twist_and_gripper()

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        value = np.asarray(msg.data, dtype=np.float64)
        if value.shape != (1,) or not np.isfinite(value).all():
            self.get_logger().warning(f"ignoring gripper command {value.tolist()}", throttle_duration_sec=2.0)
            return
        self._gripper = float(value[0])
        self._pair_twist_and_gripper()

    def _pair_twist_and_gripper(self) -> None:
        """One action = one twist + one gripper command, whichever arrives first (two topics have
        no order between them)."""
        if self._twist is None or self._gripper is None:
            return
        action = np.append(self._twist, self._gripper)
        self._twist = self._gripper = None
        self._command(action)

    def _command(self, action: np.ndarray) -> None:
        self._last_action = action
        if self.p["step_mode"] == "on_action":
            self._step(action)

    def _realtime_step(self) -> None:
        self._step(self._last_action)

    def _step(self, action: np.ndarray) -> None:
        if self._done:
            return
        self.obs, _, terminated, truncated, info = self.env.step(action)
        self.sim_time_ns += self.step_ns
        self.steps += 1
        if self.p["gif_path"]:
            self._frames.append(self.obs["image"] if "image" in self.obs else self.env.render_rgb())
        self.success = self.success or bool(info["success"])
        self.success_pub.publish(Bool(data=bool(info["success"])))
        if self.success or terminated or truncated:
            self._end_episode()
        else:
            self._publish_sensors()

    def _republish_if_waiting(self) -> None:
        if not self._done and time.monotonic() - self._last_publish >= self.p["state_republish_s"]:
            self._publish_sensors(self._stamp_ns)

    def _publish_sensors(self, stamp: int | None = None) -> None:
        """This step's sensor data under one stamp (a new stamp unless `stamp` repeats one)."""
        if stamp is None:
            stamp = self.sim_time_ns if self.clock_pub is not None else self.get_clock().now().nanoseconds
        self._stamp_ns, self._last_publish = stamp, time.monotonic()
        if self.clock_pub is not None:
            clock = Clock()
            clock.clock = convert.ns_to_stamp(stamp)
            self.clock_pub.publish(clock)
        obs = self.obs
        if "image" in obs:
            self.image_pub.publish(convert.numpy_to_image(obs["image"], "rgb8", stamp, self.p["camera_frame"]))
        points = obs["point_cloud"]
        points = points[np.isfinite(points).all(1)]
        frame = self.p["base_frame"]
        if self.p["cloud_frame"] == "camera":  # base -> optical: p_cam = R^T (p_base - t)
            pose = obs["camera_pose"]
            points = ((points - pose[:3, 3]) @ pose[:3, :3]).astype(np.float32)
            frame = self.p["camera_frame"]
        self.points_pub.publish(convert.numpy_to_pointcloud2(points, stamp, frame))
        self.joints_pub.publish(convert.numpy_to_joint_state(self.env.joint_names, obs["agent_pos"], stamp=stamp))

    def destroy_node(self) -> None:
        self.env.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    from rclpy.executors import ExternalShutdownException

    try:
        with rclpy.init(args=args):
            node = SimRobotNode()
            try:
                rclpy.spin(node)
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()
