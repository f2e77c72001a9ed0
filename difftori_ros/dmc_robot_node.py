"""A simulated torque-controlled robot on DeepMind Control that speaks what real hardware speaks.

Publishes (stamped with simulation time, which it also publishes on /clock, so the whole graph
can run with use_sim_time):
  joint_states             sensor_msgs/JointState: every joint's position and velocity, names
                           from the MuJoCo model (what a joint_state_broadcaster publishes)
  camera/color/image_raw   sensor_msgs/Image rgb8 (publish_image: true), the task's camera
  /clock                   rosgraph_msgs/Clock: simulated seconds since the node started
  sim/episode              std_msgs/String (JSON): episode, seed, return, steps at every episode end
Consumes:
  effort_controller/commands   std_msgs/Float64MultiArray, one effort per actuator in [-1, 1]
                               (the forward_command_controller convention); each command is
                               applied for `action_repeat` simulator steps. A command of the wrong
                               length or with NaN/Inf is ignored and counted, never applied.
Services:
  sim/reset                std_srvs/Trigger: start the next seeded episode

`step_mode: on_action` advances one agent step per received command and publishes the new state
at once (deterministic closed loop: the same sequence as in-process evaluation). While it waits
for a command it republishes the unchanged state (same stamp) every `state_republish_s` of wall
time, as a joint_state_broadcaster publishes continuously: a state sent before the controller's
subscription matched, or dropped on the best-effort sensor QoS, would otherwise stall the loop
forever. A controller acts once per stamp, so a repeat never becomes a second step;
`step_mode: realtime` steps at the task's control rate holding the last command, as a robot does.
Episode k uses seed `seed + k`; episodes last 1000 simulator steps, as in training. With
`auto_reset: false` the next episode starts on sim/reset only (an evaluation harness re-arms the
controller between episodes).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import rclpy
from rclpy.clock import Clock as SteadyClock
from rclpy.clock import ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from difftori_ros import convert
from difftori_ros.qos import EPISODE_RESULTS


class DMCRobotNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("difftori_dmc_robot", **kwargs)
        defaults = {
            "task": "cartpole-swingup",
            "seed": 100_000,
            "episodes": 0,  # 0: unlimited
            "action_repeat": 0,  # 0: the task's TD-MPC value
            "step_mode": "on_action",
            "publish_image": False,
            "image_size": 84,
            "command_topic": "effort_controller/commands",
            "joint_states_topic": "joint_states",
            "image_topic": "camera/color/image_raw",
            "camera_frame": "camera_color_optical_frame",
            "auto_reset": True,  # start the next episode by itself (else: on sim/reset)
            "auto_reset_delay_s": 0.2,
            "state_republish_s": 0.5,  # on_action: repeat the state while no command comes (0: never)
        }
        for name, value in defaults.items():
            self.declare_parameter(name, value)
        p = {name: self.get_parameter(name).value for name in defaults}
        if p["step_mode"] not in ("on_action", "realtime"):
            raise ValueError(f"step_mode must be on_action or realtime, got {p['step_mode']!r}")
        self.p = p

        from difftori_core.envs.dmc import DMCEnv, DMCEnvConfig

        cfg = DMCEnvConfig(task=p["task"], action_repeat=p["action_repeat"], image_size=p["image_size"])
        self.env = DMCEnv(cfg)
        physics = self.env._env.physics
        if physics.model.nq != physics.model.nv or physics.model.nq != len(self.env.joint_names):
            raise ValueError(f"{p['task']}: joints with several degrees of freedom are not published as JointState")
        self.dt = float(physics.model.opt.timestep) * cfg.repeat  # simulated seconds per command
        qos = QoSProfile(
            depth=5, reliability=qos_profile_sensor_data.reliability, history=qos_profile_sensor_data.history
        )
        self.joints_pub = self.create_publisher(JointState, p["joint_states_topic"], qos)
        self.image_pub = self.create_publisher(Image, p["image_topic"], qos) if p["publish_image"] else None
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.episode_pub = self.create_publisher(String, "sim/episode", EPISODE_RESULTS)
        self.create_subscription(Float64MultiArray, p["command_topic"], self._on_command, 10)
        self.create_service(Trigger, "sim/reset", self._on_reset)
        self.sim_time_ns = 0
        self.episode_index = 0
        self.rejected_commands = 0
        self._command = np.zeros(self.env.action_dim)
        self._done = True
        self._reset_timer = None
        self._last_publish = time.monotonic()
        # This node is the source of simulation time, so its own timers run on the steady clock:
        # on its /clock (use_sim_time) they would wait for the steps they are meant to trigger.
        self._wall = SteadyClock(clock_type=ClockType.STEADY_TIME)
        if p["step_mode"] == "realtime":
            self.create_timer(self.dt, lambda: self._step(self._command), clock=self._wall)
        elif p["state_republish_s"] > 0:
            self.create_timer(p["state_republish_s"] / 2, self._republish_if_waiting, clock=self._wall)
        self._start_episode()

    # -- episodes ------------------------------------------------------------------------

    def _start_episode(self) -> None:
        if self._reset_timer is not None:
            self.destroy_timer(self._reset_timer)
            self._reset_timer = None
        if self.p["episodes"] and self.episode_index >= self.p["episodes"]:
            return
        if self.episode_index > 0:  # a reset takes time: the next episode's stamps say so
            self.sim_time_ns += round(self.p["auto_reset_delay_s"] * 1e9)
        self.seed = self.p["seed"] + self.episode_index
        self.obs = self.env.reset(seed=self.seed)
        self.steps, self.ret, self._done = 0, 0.0, False
        self._command = np.zeros(self.env.action_dim)
        self._publish_state()

    def _end_episode(self) -> None:
        self._done = True
        result = {"episode": self.episode_index, "seed": self.seed, "return": self.ret, "steps": self.steps}
        self.episode_pub.publish(String(data=json.dumps(result)))
        self.get_logger().info(f"episode {self.episode_index} (seed {self.seed}): return {self.ret:.1f}")
        self.episode_index += 1
        if self.p["auto_reset"]:
            self._reset_timer = self.create_timer(self.p["auto_reset_delay_s"], self._start_episode, clock=self._wall)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if not self._done:
            self._end_episode()
        if self._reset_timer is None and self.p["episodes"] and self.episode_index >= self.p["episodes"]:
            response.success, response.message = False, f"all {self.p['episodes']} episodes are done"
            return response
        self._start_episode()
        response.success, response.message = True, f"episode {self.episode_index} started (seed {self.seed})"
        return response

    # -- stepping ------------------------------------------------------------------------

    def _on_command(self, msg: Float64MultiArray) -> None:
        effort = np.asarray(msg.data, dtype=np.float64)
        if effort.shape != (self.env.action_dim,) or not np.isfinite(effort).all():
            self.rejected_commands += 1
            self.get_logger().warning(
                f"ignoring command {effort.tolist()}: needs {self.env.action_dim} finite efforts "
                f"({self.env.actuator_names})",
                throttle_duration_sec=2.0,
            )
            return
        self._command = np.clip(effort, -1.0, 1.0)
        if self.p["step_mode"] == "on_action":
            self._step(self._command)

    def _step(self, effort: np.ndarray) -> None:
        if self._done:
            return
        self.obs, reward, last = self.env.step(effort)
        self.sim_time_ns += round(self.dt * 1e9)
        self.steps += 1
        self.ret += reward
        self._publish_state()
        if last:
            self._end_episode()

    def _republish_if_waiting(self) -> None:
        if not self._done and time.monotonic() - self._last_publish >= self.p["state_republish_s"]:
            self._publish_state()

    def _publish_state(self) -> None:
        self._last_publish = time.monotonic()
        stamp = self.sim_time_ns
        clock = Clock()
        clock.clock = convert.ns_to_stamp(stamp)
        self.clock_pub.publish(clock)
        self.joints_pub.publish(
            convert.numpy_to_joint_state(self.env.joint_names, self.obs["qpos"], self.obs["qvel"], stamp=stamp)
        )
        if self.image_pub is not None:
            image = self.env.render()
            self.image_pub.publish(convert.numpy_to_image(image, "rgb8", stamp, self.p["camera_frame"]))

    def destroy_node(self) -> None:
        self.env.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    from rclpy.executors import ExternalShutdownException

    try:
        with rclpy.init(args=args):
            node = DMCRobotNode()
            try:
                rclpy.spin(node)
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()
