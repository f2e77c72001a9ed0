"""The DiffTORI controller: sensor messages in, a trained policy's action out, every control tick.

Lifecycle (rclpy managed node):
  configure   read and validate parameters, load the model (weights, processing spec, action
              spec), warm it up, create subscriptions and publishers;
  activate    start the control timer (the policy's history and action queue start empty);
  deactivate  stop the timer: nothing is published;
  cleanup     destroy subscriptions, publishers and the model.

Data path of one tick, top to bottom: sensor message -> frame check (clouds: `points_frame`, then
the `points_to_base` extrinsic) -> conversion -> newest synchronized (image | point cloud | joint
state) set -> age check -> `runner.step` (the model's own preprocessing, history, chunk and action
queue: `difftori_core.deploy.runner`, the same code as evaluation) -> finiteness / solver / deadline
checks -> the command interface (`outputs.py`: Float64MultiArray, TwistStamped + gripper, or a
JointTrajectory of the chunk). Every failure on that path (malformed, missing, unsynchronized,
stale, future-stamped or wrong-frame sensor data, an empty workspace, NaN input or output, solver
failure, a missed deadline) publishes the interface's hold command instead -- or nothing -- is
counted, and shows on /diagnostics with the tick-latency statistics. The node never dies of bad
input. Parameters carry descriptors (ranges); `ros2 param set` is validated like configure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterValueException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState, PointCloud2

from difftori_ros import convert
from difftori_ros.diagnostics import DiagnosticsReporter, EventCounters, LatencyStats, LevelRules
from difftori_ros.frames import Transform
from difftori_ros.outputs import make_output
from difftori_ros.sync import ApproximateTimeSync

EVENTS = (
    "ticks",
    "actions_published",
    "safe_action_published",
    "no_new_observation",
    "observation_gap",
    "malformed_image",
    "malformed_pointcloud",
    "malformed_joint_state",
    "missing_sensor",
    "stale_observation",
    "future_observation",
    "unsynchronized",
    "wrong_frame",
    "invalid_input",
    "empty_workspace",
    "nonfinite_input",
    "nonfinite_output",
    "solver_failure",
    "deadline_miss",
)


def _param(default: Any, doc: str, lo: float | None = None, hi: float | None = None, live: bool = False) -> Any:
    """A ROS parameter: default, description, optional range (ParameterDescriptor) and whether a
    change applies while configured (`live`) or only at the next configure."""
    return field(default=default, metadata={"doc": doc, "range": (lo, hi), "live": live})


@dataclass
class ControllerParams:
    """The node's ROS parameters (config/controller.yaml shows them with their defaults)."""

    model: str = _param("door-open-v3-difftori", "model name (installed models), model folder, checkpoint or run")
    device: str = _param("auto", "auto (cuda when available) | cpu | cuda[:N]")
    backend: str = _param("auto", "auto | torch | onnxruntime (auto: the faster, timed at configure, if exported)")
    variant: str = _param("", "'' = the policy's default; DiffTORI: difftori | base; tdmpc: difftori | sampling")
    control_rate_hz: float = _param(20.0, "control ticks per second (also the watchdog's rate)", 1.0, 1000.0, live=True)
    image_topic: str = _param("camera/color/image_raw", "sensor_msgs/Image, only if the model uses images")
    use_compressed_image: bool = _param(False, "subscribe to <image_topic>/compressed instead")
    points_topic: str = _param("camera/depth/points", "sensor_msgs/PointCloud2, any x/y/z layout")
    joint_states_topic: str = _param("joint_states", "sensor_msgs/JointState (joints picked by the model's names)")
    qos_depth: int = _param(5, "sensor subscriptions' keep-last depth", 1, 100)
    sensor_reliability: str = _param("best_effort", "sensors: best_effort (matches any publisher) | reliable")
    base_frame: str = _param("base", "the frame of the model's workspace (its crop box); commands' default frame")
    points_frame: str = _param("", "frame_id clouds must carry ('' = base_frame); others are refused (wrong_frame)")
    points_to_base: tuple[float, ...] = _param(
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0), "T_base_points extrinsic: x y z qx qy qz qw (metres, ROS quaternion order)"
    )
    command_interface: str = _param("float64_array", "float64_array | twist | joint_trajectory (outputs.py)")
    action_topic: str = _param("difftori/action", "float64_array: std_msgs/Float64MultiArray, this tick's action")
    twist_topic: str = _param("difftori/twist", "twist: geometry_msgs/TwistStamped end-effector command")
    gripper_topic: str = _param("difftori/gripper", "twist: std_msgs/Float64MultiArray [gripper command]")
    command_frame: str = _param("", "twist: header.frame_id of the command ('' = base_frame)")
    twist_scale: float = _param(1.0, "twist: velocity per action unit (1: unitless)", 1e-6, 1e6)
    trajectory_topic: str = _param("difftori/joint_trajectory", "joint_trajectory: trajectory_msgs/JointTrajectory")
    sync_tolerance_ms: float = _param(25.0, "max stamp spread inside one synchronized observation", 0.0, 1e4, live=True)
    max_observation_age_ms: float = _param(
        250.0, "older observations trigger the fallback; ones stamped further ahead are refused", 1.0, 6e4, live=True
    )
    deadline_ms: float = _param(0.0, "tick compute budget; 0 = one control period", 0.0, 6e4, live=True)
    fallback: str = _param("hold", "hold: publish the interface's hold command | none: publish nothing", live=True)
    hold_keep_last: tuple[str, ...] = _param(("gripper",), "action dims that keep their last value held", live=True)
    torch_threads: int = _param(1, "intra-op threads (one core solves, the other serves DDS)", 1, 256)
    diagnostics_period_s: float = _param(1.0, "/diagnostics publication period", 0.05, 60.0, live=True)
    autostart: bool = _param(False, "configure and activate at startup (no lifecycle manager needed)")
    tick_on_observation: bool = _param(True, "act when a new synchronized set completes (timer: watchdog)", live=True)

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> ControllerParams:
        values = dict(values)
        values["hold_keep_last"] = tuple(values.get("hold_keep_last") or ())
        values["points_to_base"] = tuple(float(v) for v in values.get("points_to_base") or ())
        return cls(**values)

    def validate(self) -> None:
        from difftori_core.deploy.backends import backend_names
        from difftori_ros.frames import Transform
        from difftori_ros.outputs import INTERFACES

        problems = []
        for f in fields(self):
            lo, hi = f.metadata["range"]
            value = getattr(self, f.name)
            if lo is not None and not lo <= value <= hi:
                problems.append(f"{f.name} must be in [{lo:g}, {hi:g}], got {value}")
        if not self.model:
            problems.append("model must name a model, checkpoint or run directory")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            problems.append(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.backend not in backend_names():
            problems.append(f"backend must be one of {list(backend_names())}, got {self.backend!r}")
        if self.fallback not in ("hold", "none"):
            problems.append(f"fallback must be 'hold' or 'none', got {self.fallback!r}")
        if self.command_interface not in INTERFACES:
            problems.append(f"command_interface must be one of {list(INTERFACES)}, got {self.command_interface!r}")
        if self.sensor_reliability not in ("best_effort", "reliable"):
            problems.append(f"sensor_reliability must be best_effort or reliable, got {self.sensor_reliability!r}")
        if not self.base_frame:
            problems.append("base_frame must name the model's frame")
        try:
            Transform(self.points_to_base)
        except ValueError as err:
            problems.append(f"points_to_base: {err}")
        if problems:
            raise ValueError("invalid parameters: " + "; ".join(problems))


LIVE_PARAMETERS = frozenset(f.name for f in fields(ControllerParams) if f.metadata["live"])


def parameter_descriptor(f: Any) -> ParameterDescriptor:
    lo, hi = f.metadata["range"]
    desc = ParameterDescriptor(
        description=f.metadata["doc"],
        additional_constraints="" if f.metadata["live"] else "applies at configure (clean up first to change it)",
    )
    if lo is not None and isinstance(f.default, float):
        desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    elif lo is not None:
        desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
    return desc


SENSOR_KEYS = {"image": "image", "point_cloud": "points", "agent_pos": "joints", "joint_velocity": "joints"}


class ControllerNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("difftori_controller", **kwargs)
        # A launch-time value outside its range would make declare_parameter raise and kill the
        # node; it is kept as a problem instead, and configure fails naming it (the node stays up).
        self._startup_problems: list[str] = []
        for f in fields(ControllerParams):
            default = list(f.default) if isinstance(f.default, tuple) else f.default
            try:
                self.declare_parameter(f.name, default, parameter_descriptor(f))
            except InvalidParameterValueException as err:
                self._startup_problems.append(str(err).split("Reason: ")[-1])
                self.declare_parameter(f.name, default, parameter_descriptor(f), ignore_override=True)
        self.add_on_set_parameters_callback(self._validate_parameter_change)
        self.add_post_set_parameters_callback(self._apply_parameter_change)
        self.counters = EventCounters(EVENTS)
        self.latency = LatencyStats(window=2000)
        self.runner: Any = None
        self.params: ControllerParams | None = None
        self._subs: list[Any] = []
        self._diag_timer: Any = None
        self._control_timer: Any = None
        self._last_obs_stamp = -1
        self._last_action: np.ndarray | None = None
        self._active = False

    # -- parameters ----------------------------------------------------------------------

    def _values(self) -> dict[str, Any]:
        return {f.name: self.get_parameter(f.name).value for f in fields(ControllerParams)}

    def read_params(self) -> ControllerParams:
        params = ControllerParams.from_values(self._values())
        try:
            params.validate()
        except ValueError as err:
            raise ValueError("; ".join([*self._startup_problems, str(err)])) from None
        if self._startup_problems:
            raise ValueError("invalid parameters: " + "; ".join(self._startup_problems))
        return params

    def _validate_parameter_change(self, changes: list[Parameter]) -> SetParametersResult:
        """`ros2 param set` is checked like configure checks: an invalid value is refused with the
        reason; while configured, a parameter that only applies at configure is refused too
        (it would otherwise be accepted and silently ignored)."""
        values = self._values()
        values.update({c.name: c.value for c in changes})
        try:
            ControllerParams.from_values(values).validate()
        except (TypeError, ValueError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        if self.runner is not None:
            fixed = sorted(c.name for c in changes if c.name not in LIVE_PARAMETERS)
            if fixed:
                return SetParametersResult(
                    successful=False,
                    reason=f"{fixed} apply at configure: deactivate and clean up, set them, configure again",
                )
        return SetParametersResult(successful=True)

    def _apply_parameter_change(self, changes: list[Parameter]) -> None:
        """Live parameters take effect at once while configured (timers are re-created)."""
        if self.runner is None:
            return
        self.params = p = ControllerParams.from_values(self._values())
        self.sync.tolerance_ns = int(p.sync_tolerance_ms * 1e6)
        self.reporter.level_rules = LevelRules(warn_p99_ms=1000.0 / p.control_rate_hz)
        names = {c.name for c in changes}
        if "diagnostics_period_s" in names:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(p.diagnostics_period_s, self._publish_diagnostics)
        if "control_rate_hz" in names and self._active:
            self.destroy_timer(self._control_timer)
            self._control_timer = self.create_timer(1.0 / p.control_rate_hz, self.tick)
        self.get_logger().info(f"parameters changed: {', '.join(f'{c.name}={c.value}' for c in changes)}")

    # -- lifecycle -----------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Every failure is logged with what was wrong (a failed transition never goes unexplained)
        and leaves the node unconfigured, ready for another try."""
        try:
            self._configure()
        except Exception as err:  # noqa: BLE001 -- a configure failure must be reported, whatever raised
            from difftori_core.artifacts import ArtifactError

            known = isinstance(err, (ValueError, ArtifactError))
            self.get_logger().error(f"configure failed: {err if known else f'{type(err).__name__}: {err}'}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        import torch

        from difftori_core.deploy.runner import load_runner
        from difftori_ros.models import resolve_model

        p = self.read_params()
        torch.set_num_threads(p.torch_threads)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if p.device == "auto" else p.device
        runner = load_runner(resolve_model(p.model), device, p.backend, p.variant or None)
        spec = runner.spec
        joint_names = list(runner.model.env.get("joint_names", []))
        if ("agent_pos" in spec.obs_shapes or "joint_velocity" in spec.obs_shapes) and not joint_names:
            raise ValueError(f"{runner.model.path}: the model uses joint positions but names no joints")
        self.params, self.joint_names, self.action_names = p, joint_names, list(spec.action_names)
        self.output = make_output(self, p, self.action_names, joint_names)
        self.runner = runner
        self.points_frame = p.points_frame or p.base_frame
        self.points_to_base = Transform(p.points_to_base)
        self.keys = [k for k in SENSOR_KEYS if k in spec.obs_shapes]
        self.sync = ApproximateTimeSync(self.keys, int(p.sync_tolerance_ms * 1e6), queue_size=max(4, p.qos_depth))
        runner.warm_up()
        info = {"path": runner.model.path, **runner.backend_info}

        reliable = p.sensor_reliability == "reliable"
        qos = QoSProfile(
            depth=p.qos_depth,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            history=HistoryPolicy.KEEP_LAST,
            durability=DurabilityPolicy.VOLATILE,
        )
        if "image" in self.keys:
            msg_type = CompressedImage if p.use_compressed_image else Image
            topic = p.image_topic + ("/compressed" if p.use_compressed_image else "")
            self._subs.append(self.create_subscription(msg_type, topic, self._on_image, qos))
        if "point_cloud" in self.keys:
            self._subs.append(self.create_subscription(PointCloud2, p.points_topic, self._on_points, qos))
        if "agent_pos" in self.keys or "joint_velocity" in self.keys:
            self._subs.append(self.create_subscription(JointState, p.joint_states_topic, self._on_joints, qos))
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.reporter = DiagnosticsReporter(
            self.get_name(),
            self.counters,
            self.latency,
            LevelRules(warn_p99_ms=1000.0 / p.control_rate_hz),
        )
        self._diag_timer = self.create_timer(p.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(
            f"configured: model {info['path']} on {device} ({info['backend']}), sensors {self.keys}, "
            f"{p.control_rate_hz} Hz, commands: {p.command_interface}"
            + (f"; backend auto measured ms per chunk: {info['chunk_ms']}" if "chunk_ms" in info else "")
        )

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.runner.reset()
        # Data buffered before activation describes another moment (and, after a simulated
        # robot restarts, another clock): acting starts from the next message.
        self.sync.clear()
        self._last_obs_stamp = -1
        self._obs_period_ns: float | None = None
        # With tick_on_observation the timer is the watchdog (missing / stale sensors) and acts
        # only if observations arrive without completing a set; otherwise it is the control clock.
        self._control_timer = self.create_timer(1.0 / self.params.control_rate_hz, self.tick)
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self.destroy_timer(self._control_timer)
        self._control_timer = None
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """Undo whatever configure created (also after a configure that failed half-way)."""
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if getattr(self, "output", None) is not None:
            self.output.destroy()
            self.output = None
        if getattr(self, "diag_pub", None) is not None:
            self.destroy_publisher(self.diag_pub)
            self.diag_pub = None
        self.runner = None

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
        if msg.header.frame_id != self.points_frame:
            err = ValueError(
                f"cloud in frame {msg.header.frame_id!r}, expected {self.points_frame!r} "
                f"(set points_frame and its points_to_base extrinsic)"
            )
            self._reject("wrong_frame", err)
            return
        try:
            points = convert.pointcloud2_to_numpy(msg, skip_nans=True)
        except convert.ConversionError as err:
            self._reject("malformed_pointcloud", err)
            return
        self._add(msg.header.stamp, {"point_cloud": self.points_to_base.apply(points)})

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
            missing = self.sync.missing_keys()
            if missing:
                return self._fallback("missing_sensor", f"nothing received yet (or since activation) on {missing}")
            newest = {k: f"{self.sync.newest_stamp(k) / 1e9:.3f}" for k in self.keys}
            return self._fallback(
                "unsynchronized",
                f"no set of stamps within {self.params.sync_tolerance_ms:g} ms; newest stamps (s): {newest}",
            )
        if obs.is_stale(now_ns, int(self.params.max_observation_age_ms * 1e6)):
            age = (now_ns - obs.stamp_ns) / 1e6
            return self._fallback("stale_observation", f"newest synchronized observation is {age:.0f} ms old")
        if obs.stamp_ns <= self._last_obs_stamp:
            self.counters.inc("no_new_observation")  # the last action / trajectory is still executing
            return None
        if self._last_obs_stamp >= 0:
            gap = obs.stamp_ns - self._last_obs_stamp
            if gap > self.params.max_observation_age_ms * 1e6:
                # The history and queued actions are from before the gap (on simulation time a
                # reset jumps the clock, and no watchdog tick saw the data go stale meanwhile).
                self.runner.reset()
                self.counters.inc("observation_gap")
            else:
                self._obs_period_ns = gap if self._obs_period_ns is None else 0.9 * self._obs_period_ns + 0.1 * gap
        self._last_obs_stamp = obs.stamp_ns
        try:
            action, status = self.runner.step(obs.values)
        except ProcessingError as err:
            return self._fallback(err.kind, str(err))
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
        self._publish(action, obs.stamp_ns, t_start)
        self.counters.inc("actions_published")
        return None

    def step_period_s(self) -> float:
        """Seconds between the chunk's actions: the observed period between synchronized sets when
        acting on observations (actions go out at the sensor rate), else the control period."""
        if self.params.tick_on_observation and self._obs_period_ns:
            return self._obs_period_ns / 1e9
        return 1.0 / self.params.control_rate_hz

    def _publish(self, action: np.ndarray, obs_stamp_ns: int, t_start: float) -> None:
        chunk = np.concatenate([action[None], self.runner.pending_actions()])
        self.output.publish(action, chunk, self.get_clock().now().nanoseconds, self.step_period_s())
        self._last_action = action
        # Sensor stamp -> action on a shared wall clock; on simulation time (which stands still
        # while a stepped simulator waits) the tick's own wall time from the set's completion.
        if self.get_parameter("use_sim_time").value:
            self.latency.record((time.perf_counter() - t_start) * 1e3)
        else:
            self.latency.record((self.get_clock().now().nanoseconds - obs_stamp_ns) / 1e6)

    def safe_action(self) -> np.ndarray:
        """Hold: zero motion; dimensions named in hold_keep_last keep their last value."""
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
            self.output.hold(self.safe_action(), self.get_clock().now().nanoseconds)
            self.counters.inc("safe_action_published")

    def _publish_diagnostics(self) -> None:
        self.diag_pub.publish(self.reporter.build(self.get_clock().now().nanoseconds))


def main(args: list[str] | None = None) -> int:
    """Spin the controller. With `autostart`, a configure that fails ends the process with exit
    code 1 after logging why: a launch file (or systemd) then sees a dead node, not a silent one."""
    from rclpy.executors import ExternalShutdownException

    try:
        with rclpy.init(args=args):
            node = ControllerNode()
            if node.get_parameter("autostart").value:
                if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                    node.get_logger().fatal("autostart: configure failed (see the error above); exiting")
                    return 1
                node.trigger_activate()
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
