"""The DiffTORI controller: sensor messages in, a trained policy's action out, every control tick.

Lifecycle (rclpy managed node):
  configure   read and validate parameters, load the model (weights, processing spec, action
              spec), warm it up, create subscriptions and publishers;
  activate    start the control timer (the policy's history and action queue start empty);
  deactivate  stop the timer: nothing is published;
  cleanup     destroy subscriptions, publishers and the model.

Data path of one tick, top to bottom: newest synchronized (image | point cloud | joint state) set
-> age check -> `runner.step` (the model's own preprocessing, history, chunk and action queue:
`difftori_core.deploy.runner`, the same code as evaluation) -> finiteness / solver / deadline checks
-> Float64MultiArray (this tick's action) and JointTrajectory (the rest of the chunk,
time_from_start = (i+1)/rate). Every failure on that path
(malformed or missing or stale sensor data, NaN input or output, solver failure, a missed
deadline) publishes the configured safe action instead -- or nothing -- is counted, and shows on
/diagnostics with the tick-latency statistics. The node never dies of bad input.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState, PointCloud2
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from difftori_ros import convert
from difftori_ros.diagnostics import DiagnosticsReporter, EventCounters, LatencyStats, LevelRules
from difftori_ros.sync import ApproximateTimeSync

EVENTS = (
    "ticks",
    "actions_published",
    "safe_action_published",
    "no_new_observation",
    "malformed_image",
    "malformed_pointcloud",
    "malformed_joint_state",
    "missing_sensor",
    "stale_observation",
    "future_observation",
    "nonfinite_input",
    "nonfinite_output",
    "solver_failure",
    "deadline_miss",
)


@dataclass
class ControllerParams:
    """The node's ROS parameters (see config/controller.yaml for documentation of each)."""

    model: str = "models/door-open-v3-difftori"
    device: str = "auto"
    backend: str = "auto"  # auto | torch | onnxruntime (auto: the faster, timed at configure, if exported)
    variant: str = ""  # how the policy acts ("" = its default; DiffTORI: difftori | base; tdmpc: difftori | sampling)
    control_rate_hz: float = 20.0
    image_topic: str = "camera/color/image_raw"
    use_compressed_image: bool = False
    points_topic: str = "camera/depth/points"
    joint_states_topic: str = "joint_states"
    action_topic: str = "difftori/action"
    trajectory_topic: str = "difftori/joint_trajectory"
    qos_depth: int = 5
    sync_tolerance_ms: float = 25.0
    max_observation_age_ms: float = 250.0
    deadline_ms: float = 0.0  # 0: one control period
    fallback: str = "hold"  # hold | none
    hold_keep_last: tuple[str, ...] = ("gripper",)
    torch_threads: int = 1
    diagnostics_period_s: float = 1.0
    autostart: bool = False  # configure and activate at startup (no lifecycle manager needed)
    tick_on_observation: bool = True  # act as soon as a new synchronized set is complete

    def validate(self) -> None:
        from difftori_core.deploy.backends import backend_names

        problems = []
        if not self.model:
            problems.append("model must name a model, checkpoint or run directory")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            problems.append(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.backend not in backend_names():
            problems.append(f"backend must be one of {list(backend_names())}, got {self.backend!r}")
        if not 0 < self.control_rate_hz <= 1000:
            problems.append(f"control_rate_hz must be in (0, 1000], got {self.control_rate_hz}")
        if self.qos_depth < 1:
            problems.append(f"qos_depth must be >= 1, got {self.qos_depth}")
        if self.sync_tolerance_ms < 0 or self.max_observation_age_ms <= 0 or self.deadline_ms < 0:
            problems.append("sync_tolerance_ms >= 0, max_observation_age_ms > 0 and deadline_ms >= 0 are required")
        if self.fallback not in ("hold", "none"):
            problems.append(f"fallback must be 'hold' or 'none', got {self.fallback!r}")
        if self.torch_threads < 1 or self.diagnostics_period_s <= 0:
            problems.append("torch_threads >= 1 and diagnostics_period_s > 0 are required")
        if problems:
            raise ValueError("invalid parameters: " + "; ".join(problems))


SENSOR_KEYS = {"image": "image", "point_cloud": "points", "agent_pos": "joints", "joint_velocity": "joints"}


class ControllerNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("difftori_controller", **kwargs)
        for name, default in ControllerParams().__dict__.items():
            self.declare_parameter(name, list(default) if isinstance(default, tuple) else default)
        self.counters = EventCounters(EVENTS)
        self.latency = LatencyStats(window=2000)
        self.runner: Any = None
        self._subs: list[Any] = []
        self._timers: list[Any] = []
        self._last_obs_stamp = -1
        self._last_action: np.ndarray | None = None
        self._active = False

    # -- lifecycle -----------------------------------------------------------------------

    def read_params(self) -> ControllerParams:
        values = {name: self.get_parameter(name).value for name in ControllerParams().__dict__}
        values["hold_keep_last"] = tuple(values["hold_keep_last"] or ())
        params = ControllerParams(**values)
        params.validate()
        return params

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        import torch

        from difftori_core.artifacts import ArtifactError
        from difftori_core.deploy.runner import load_runner

        try:
            self.params = p = self.read_params()
            torch.set_num_threads(p.torch_threads)
            device = ("cuda" if torch.cuda.is_available() else "cpu") if p.device == "auto" else p.device
            self.runner = load_runner(p.model, device, p.backend, p.variant or None)
        except (ValueError, ArtifactError) as err:
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        spec = self.runner.spec
        self.joint_names = list(self.runner.model.env.get("joint_names", []))
        if ("agent_pos" in spec.obs_shapes or "joint_velocity" in spec.obs_shapes) and not self.joint_names:
            where = self.runner.model.path
            self.get_logger().error(f"configure failed: {where}: the model uses joint positions but names no joints")
            self.runner = None
            return TransitionCallbackReturn.FAILURE
        self.action_names = list(spec.action_names)
        self.keys = [k for k in SENSOR_KEYS if k in spec.obs_shapes]
        self.sync = ApproximateTimeSync(self.keys, int(p.sync_tolerance_ms * 1e6), queue_size=max(4, p.qos_depth))
        self.runner.warm_up()
        info = {"path": self.runner.model.path, **self.runner.backend_info}

        qos = QoSProfile(
            depth=p.qos_depth,
            reliability=qos_profile_sensor_data.reliability,
            history=qos_profile_sensor_data.history,
            durability=qos_profile_sensor_data.durability,
        )
        if "image" in self.keys:
            msg_type = CompressedImage if p.use_compressed_image else Image
            topic = p.image_topic + ("/compressed" if p.use_compressed_image else "")
            self._subs.append(self.create_subscription(msg_type, topic, self._on_image, qos))
        if "point_cloud" in self.keys:
            self._subs.append(self.create_subscription(PointCloud2, p.points_topic, self._on_points, qos))
        if "agent_pos" in self.keys or "joint_velocity" in self.keys:
            self._subs.append(self.create_subscription(JointState, p.joint_states_topic, self._on_joints, qos))
        self.action_pub = self.create_lifecycle_publisher(Float64MultiArray, p.action_topic, 10)
        self.trajectory_pub = self.create_lifecycle_publisher(JointTrajectory, p.trajectory_topic, 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.reporter = DiagnosticsReporter(
            self.get_name(),
            self.counters,
            self.latency,
            LevelRules(warn_p99_ms=1000.0 / p.control_rate_hz),
        )
        self._timers.append(self.create_timer(p.diagnostics_period_s, self._publish_diagnostics))
        self.get_logger().info(
            f"configured: model {info['path']} on {device} ({info['backend']}), sensors {self.keys}, "
            f"{p.control_rate_hz} Hz"
            + (f"; backend auto measured ms per chunk: {info['chunk_ms']}" if "chunk_ms" in info else "")
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.runner.reset()
        # Data buffered before activation describes another moment (and, after a simulated
        # robot restarts, another clock): acting starts from the next message.
        self.sync.clear()
        self._last_obs_stamp = -1
        # With tick_on_observation the timer is the watchdog (missing / stale sensors) and acts
        # only if observations arrive without completing a set; otherwise it is the control clock.
        self._control_timer = self.create_timer(1.0 / self.params.control_rate_hz, self.tick)
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self.destroy_timer(self._control_timer)
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for sub in self._subs:
            self.destroy_subscription(sub)
        for timer in self._timers:
            self.destroy_timer(timer)
        self._subs, self._timers = [], []
        self.destroy_lifecycle_publisher(self.action_pub)
        self.destroy_lifecycle_publisher(self.trajectory_pub)
        self.destroy_publisher(self.diag_pub)
        self.runner = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Shutdown is reachable from every primary state: an active controller stops control
        (timer, publishers) before anything else, then whatever was configured is released."""
        if self._active:
            self.on_deactivate(state)
        if self.runner is not None:
            self.on_cleanup(state)
        return TransitionCallbackReturn.SUCCESS

    # -- sensors -------------------------------------------------------------------------

    def _on_image(self, msg: Image | CompressedImage) -> None:
        try:
            if isinstance(msg, CompressedImage):
                img = convert.compressed_image_to_numpy(msg)
            else:
                img = convert.image_to_numpy(msg)
            if img.ndim != 3 or img.shape[2] != 3:
                raise convert.ConversionError(f"Image: the model needs a colour image, got shape {img.shape}")
        except convert.ConversionError as err:
            self._reject("malformed_image", err)
            return
        self._add(msg.header.stamp, {"image": img})

    def _on_points(self, msg: PointCloud2) -> None:
        try:
            points = convert.pointcloud2_to_numpy(msg, skip_nans=True)
        except convert.ConversionError as err:
            self._reject("malformed_pointcloud", err)
            return
        self._add(msg.header.stamp, {"point_cloud": points})

    def _on_joints(self, msg: JointState) -> None:
        # One message, one or two streams (positions, velocities) under one stamp.
        fields = {"agent_pos": "position", "joint_velocity": "velocity"}
        try:
            values = {
                key: convert.joint_state_to_numpy(msg, self.joint_names, field=fields[key]).astype(np.float32)
                for key in fields
                if key in self.keys
            }
        except convert.ConversionError as err:
            self._reject("malformed_joint_state", err)
            return
        self._add(msg.header.stamp, values)

    def _add(self, stamp: Any, values: dict[str, np.ndarray]) -> None:
        """Buffer a message's values (all keys at once, so a set never pairs half a message).
        A stamp further ahead of this node's clock than `max_observation_age_ms` is refused:
        buffered, it would stay the newest set and silence control until the clock caught up."""
        stamp_ns = convert.stamp_to_ns(stamp)
        ahead_ns = stamp_ns - self.get_clock().now().nanoseconds
        if ahead_ns > self.params.max_observation_age_ms * 1e6:
            err = ValueError(f"stamped {ahead_ns / 1e6:.0f} ms ahead of this node's clock (clocks not synchronized?)")
            self._reject("future_observation", err)
            return
        for key, value in values.items():
            self.sync.add(key, stamp_ns, value)
        if self._active and self.params.tick_on_observation:
            newest = self.sync.latest()
            if newest is not None and newest.stamp_ns > self._last_obs_stamp:
                self.tick()

    def _reject(self, event: str, err: Exception) -> None:
        self.counters.inc(event)
        self.get_logger().warning(f"{event}: {err}", throttle_duration_sec=2.0)

    # -- control -------------------------------------------------------------------------

    def tick(self) -> None:
        """One control period: act on the newest synchronized observation, or fall back."""
        from difftori_core.processing import ProcessingError

        self.counters.inc("ticks")
        t_start = time.perf_counter()
        now_ns = self.get_clock().now().nanoseconds
        obs = self.sync.latest()
        if obs is None:
            return self._fallback("missing_sensor", f"no synchronized set yet; missing {self.sync.missing_keys()}")
        if obs.is_stale(now_ns, int(self.params.max_observation_age_ms * 1e6)):
            age = (now_ns - obs.stamp_ns) / 1e6
            return self._fallback("stale_observation", f"newest synchronized observation is {age:.0f} ms old")
        if obs.stamp_ns <= self._last_obs_stamp:
            self.counters.inc("no_new_observation")  # the last action / trajectory is still executing
            return None
        self._last_obs_stamp = obs.stamp_ns
        try:
            action, status = self.runner.step(obs.values)
        except ProcessingError as err:
            return self._fallback("nonfinite_input", str(err))
        except (RuntimeError, ValueError) as err:
            return self._fallback("solver_failure", f"policy raised {err}")
        action = action.astype(np.float64)
        if status.solver_failed:
            return self._fallback("solver_failure", "trajectory optimizer flagged the solve as failed")
        if not np.isfinite(action).all():
            return self._fallback("nonfinite_output", f"policy output {action}")
        elapsed_ms = (time.perf_counter() - t_start) * 1e3
        deadline_ms = self.params.deadline_ms or 1000.0 / self.params.control_rate_hz
        if elapsed_ms > deadline_ms:
            split = f"processing {status.process_ms:.1f}, policy {status.policy_ms:.1f} ms"
            return self._fallback("deadline_miss", f"tick took {elapsed_ms:.1f} ms > {deadline_ms:.1f} ms ({split})")
        self._publish(action, obs.stamp_ns)
        self.counters.inc("actions_published")
        return None

    def _publish(self, action: np.ndarray, obs_stamp_ns: int) -> None:
        chunk = np.concatenate([action[None], self.runner.pending_actions()])
        self.action_pub.publish(convert.action_to_float64_multiarray(action))
        stamp = self.get_clock().now().nanoseconds
        traj = convert.action_chunk_to_joint_trajectory(
            chunk, self.action_names, 1.0 / self.params.control_rate_hz, stamp=stamp
        )
        self.trajectory_pub.publish(traj)
        self._last_action = action
        self.latency.record((self.get_clock().now().nanoseconds - obs_stamp_ns) / 1e6)

    def safe_action(self) -> np.ndarray:
        """Hold: zero end-effector motion; dimensions named in hold_keep_last keep their last value."""
        action = np.zeros(len(self.action_names))
        if self._last_action is not None:
            for i, name in enumerate(self.action_names):
                if name in self.params.hold_keep_last:
                    action[i] = self._last_action[i]
        return action

    def _fallback(self, event: str, why: str) -> None:
        # The history and queued actions describe a world the robot may no longer be in (a
        # sensor gap, a new episode): the next good observation starts a fresh chunk.
        if self.runner is not None:
            self.runner.reset()
        self.counters.inc(event)
        self.get_logger().warning(f"{event}: {why}", throttle_duration_sec=2.0)
        if self.params.fallback == "hold":
            action = self.safe_action()
            self.action_pub.publish(convert.action_to_float64_multiarray(action))
            self.counters.inc("safe_action_published")

    def _publish_diagnostics(self) -> None:
        self.diag_pub.publish(self.reporter.build(self.get_clock().now().nanoseconds))


def main(args: list[str] | None = None) -> None:
    from rclpy.executors import ExternalShutdownException

    try:
        with rclpy.init(args=args):
            node = ControllerNode()
            if node.get_parameter("autostart").value:
                node.trigger_configure()
                node.trigger_activate()
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()
