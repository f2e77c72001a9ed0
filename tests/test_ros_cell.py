"""The controller in a real robot cell, over real DDS between processes: command interfaces with
their consumer-facing fields, frames and extrinsics, runtime parameter validation, event labels,
the simulated robot on /clock, loud configure failures and models found by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState, PointCloud2
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from difftori_ros import convert
from difftori_ros.frames import Transform
from difftori_ros.sim_selection import METAWORLD_CAMERA_FRAME, METAWORLD_CAMERA_POSE
from tests.ros_harness import MODEL, ROOT, Procs, diag_values, get_state, spin_until

JOINTS = [f"right_j{i}" for i in range(7)] + ["r_close", "l_close"]
# A camera 1 m above the base looking down (optical z = -base z), turned about its axis.
CAMERA_POSE = (0.1, 0.6, 1.0, 1.0, 0.0, 0.0, 0.0)


def set_parameters(node: Node, **values: object) -> list:
    client = node.create_client(SetParameters, "difftori_controller/set_parameters")
    assert client.wait_for_service(timeout_sec=20)
    req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    future = client.call_async(req)
    assert spin_until(node, future.done, 10)
    return future.result().results


def counts(diags: list[DiagnosticArray], node: Node, **at_least: int) -> dict[str, str]:
    values: dict[str, str] = {}

    def done() -> bool:
        values.update(diag_values(diags))
        return all(int(values.get(k, 0)) >= n for k, n in at_least.items())

    assert spin_until(node, done, 10), (at_least, values)
    return values


def cloud_in_camera(rng: np.random.Generator, stamp: int, frame: str = "camera_link") -> PointCloud2:
    base = rng.uniform([-0.3, 0.4, 0.01], [0.3, 0.9, 0.4], (2000, 3))
    T = Transform(CAMERA_POSE)
    camera = (base - T.translation) @ T.rotation  # p_cam = R^T (p_base - t)
    return convert.numpy_to_pointcloud2(camera.astype(np.float32), stamp, frame)


def test_twist_interface_frames_events_and_runtime_parameters(procs: Procs, node: Node, tmp_path: Path) -> None:
    ctl = procs.start(
        "difftori_ros.controller_node",
        f"model:={MODEL}",
        "autostart:=true",
        "command_interface:=twist",
        "points_frame:=camera_link",
        "points_to_base:=[" + ", ".join(map(str, CAMERA_POSE)) + "]",
        "max_observation_age_ms:=500.0",
    )
    twists: list[TwistStamped] = []
    grippers: list[Float64MultiArray] = []
    diags: list[DiagnosticArray] = []
    node.create_subscription(TwistStamped, "difftori/twist", twists.append, 10)
    node.create_subscription(Float64MultiArray, "difftori/gripper", grippers.append, 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    points = node.create_publisher(PointCloud2, "camera/depth/points", qos_profile_sensor_data)
    joints = node.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
    clock, rng = node.get_clock(), np.random.default_rng(0)

    def publish(frame: str = "camera_link", joint_offset_s: float = 0.0, cloud: PointCloud2 | None = None) -> None:
        stamp = clock.now().nanoseconds
        points.publish(cloud or cloud_in_camera(rng, stamp, frame))
        joints.publish(convert.numpy_to_joint_state(JOINTS, np.zeros(9), stamp=stamp + int(joint_offset_s * 1e9)))

    assert spin_until(node, lambda: get_state(node) == "active", 60)
    assert spin_until(node, lambda: (publish(), len(twists) > 3)[1], 30), "no twists from good data"
    # What a Cartesian controller reads: a stamped twist in the model's base frame, the gripper apart.
    moving = [t for t in twists if abs(t.twist.linear.x) + abs(t.twist.linear.y) + abs(t.twist.linear.z) > 1e-4]
    assert moving and all(t.header.frame_id == "base" and t.header.stamp.sec > 0 for t in twists)
    assert all(t.twist.angular.x == t.twist.angular.y == t.twist.angular.z == 0.0 for t in twists)
    assert grippers and all(len(g.data) == 1 for g in grippers)

    # A cloud in another frame is refused (counted) and answered with the hold: a zero twist.
    n = len(twists)
    for _ in range(3):
        publish(frame="base")
        spin_until(node, lambda: False, 0.1)
    spin_until(node, lambda: False, 1.0)
    assert len(twists) > n and twists[-1].twist.linear.x == twists[-1].twist.linear.y == 0.0
    counts(diags, node, wrong_frame=3, safe_action_published=1)

    # Streams 200 ms apart never pair (tolerance 25 ms): unsynchronized, not a missing sensor.
    for _ in range(4):
        publish(joint_offset_s=0.2)
        spin_until(node, lambda: False, 0.1)
    # A cloud whose points all lie outside the workspace: empty_workspace, not non-finite input.
    far = convert.numpy_to_pointcloud2(np.full((100, 3), 50.0, np.float32), clock.now().nanoseconds, "camera_link")
    publish(cloud=far)
    spin_until(node, lambda: False, 0.3)
    values = counts(diags, node, unsynchronized=1, empty_workspace=1)
    assert int(values.get("nonfinite_input", 0)) == 0

    # Runtime parameter changes: invalid values are refused with a reason, live ones apply,
    # configure-time ones are refused while configured (they would be silently ignored).
    for bad in ({"control_rate_hz": -1.0}, {"control_rate_hz": 0.01}, {"qos_depth": 0}, {"fallback": "explode"}):
        (result,) = set_parameters(node, **bad)
        assert not result.successful and result.reason, bad
    (result,) = set_parameters(node, model="/nonexistent")
    assert not result.successful and "apply at configure" in result.reason
    (result,) = set_parameters(node, control_rate_hz=50.0)
    assert result.successful
    # The watchdog now runs at 50 Hz: with no sensors, holds come ~50 per second (20 before).
    twists.clear()
    spin_until(node, lambda: False, 2.0)
    assert len(twists) > 60, len(twists)
    assert ctl.poll() is None
    procs.stop()
    log = "".join(p.read_text() for p in tmp_path.glob("controller_node-*.log"))
    assert "cloud in frame 'base', expected 'camera_link'" in log
    assert "parameters changed: control_rate_hz=50.0" in log


def joint_position_model(path: Path) -> Path:
    """An (untrained) policy that acts in joint-position space: its actions are two of its joints."""
    from difftori_core.checkpoint import save_checkpoint
    from difftori_core.config import to_dict
    from difftori_core.policies import PolicyConfig, PolicySpec, make_policy
    from difftori_core.processing import ProcessingSpec

    spec = PolicySpec({"agent_pos": [9]}, 2, [-1.0] * 2, [1.0] * 2, ["right_j0", "right_j1"])
    cfg = PolicyConfig(type="mlp_bc")
    extra = {
        "task": "door-open-v3",
        "processing": to_dict(ProcessingSpec(keys=("agent_pos",))),
        "env": {"joint_names": JOINTS},
    }
    return save_checkpoint(path, make_policy(cfg, spec), {"policy": to_dict(cfg)}, extra)


def test_joint_trajectory_interface_names_joints_and_holds_with_an_empty_trajectory(
    procs: Procs, node: Node, tmp_path: Path
) -> None:
    # An end-effector model cannot speak joint trajectories: refused at configure, loudly (with
    # autostart the process exits 1, so a launch file sees it die).
    refused = procs.start(
        "difftori_ros.controller_node", f"model:={MODEL}", "autostart:=true", "command_interface:=joint_trajectory"
    )
    assert refused.wait(timeout=60) == 1
    model = joint_position_model(tmp_path / "joint_model")
    ctl = procs.start(
        "difftori_ros.controller_node", f"model:={model}", "autostart:=true", "command_interface:=joint_trajectory"
    )
    trajectories: list[JointTrajectory] = []
    node.create_subscription(JointTrajectory, "difftori/joint_trajectory", trajectories.append, 10)
    joints = node.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
    clock = node.get_clock()
    assert spin_until(node, lambda: get_state(node) == "active", 60)

    def publish() -> bool:
        joints.publish(convert.numpy_to_joint_state(JOINTS, np.zeros(9), stamp=clock.now().nanoseconds))
        return any(t.points for t in trajectories)

    assert spin_until(node, publish, 30)
    traj = next(t for t in trajectories if t.points)
    assert list(traj.joint_names) == ["right_j0", "right_j1"]
    assert all(len(p.positions) == 2 for p in traj.points)
    times = [convert.duration_to_ns(p.time_from_start) for p in traj.points]
    assert times[0] > 0 and all(b > a for a, b in zip(times, times[1:], strict=False))
    # Sensors stop: the hold is an empty trajectory (a joint_trajectory_controller stops there).
    trajectories.clear()
    spin_until(node, lambda: False, 1.5)
    assert trajectories and not trajectories[-1].points
    assert list(trajectories[-1].joint_names) == ["right_j0", "right_j1"]
    assert ctl.poll() is None
    procs.stop()
    log = "".join(p.read_text() for p in tmp_path.glob("controller_node-*.log"))
    assert "command_interface joint_trajectory needs a model that acts in joint-position space" in log


def test_simulated_robot_runs_on_its_clock_with_the_cloud_in_its_optical_frame(procs: Procs, node: Node) -> None:
    from difftori_core.envs.metaworld import MetaWorldEnv, MetaWorldEnvConfig

    with MetaWorldEnv(MetaWorldEnvConfig(task="door-open-v3"), render_image=False) as env:
        raw = env.reset(seed=1000)
        base_cloud = raw["point_cloud"][np.isfinite(raw["point_cloud"]).all(1)]
        # The extrinsic the launch file hands the controller is the simulator's camera pose.
        np.testing.assert_allclose(Transform(METAWORLD_CAMERA_POSE).rotation, raw["camera_pose"][:3, :3], atol=1e-5)
        np.testing.assert_allclose(Transform(METAWORLD_CAMERA_POSE).translation, raw["camera_pose"][:3, 3], atol=1e-5)
        step_s = env.step_seconds
    procs.start("difftori_ros.sim_robot_node", "seed:=1000", "command_interface:=twist", "publish_image:=false")
    clocks: list[Clock] = []
    clouds: list[PointCloud2] = []
    states: list[JointState] = []
    node.create_subscription(Clock, "/clock", clocks.append, 10)
    node.create_subscription(PointCloud2, "camera/depth/points", clouds.append, qos_profile_sensor_data)
    node.create_subscription(JointState, "joint_states", states.append, qos_profile_sensor_data)
    twist_pub = node.create_publisher(TwistStamped, "difftori/twist", 1)
    gripper_pub = node.create_publisher(Float64MultiArray, "difftori/gripper", 1)
    assert spin_until(node, lambda: bool(clouds and states), 60), "no sensor data (it is republished while waiting)"
    first = clouds[-1]
    assert first.header.frame_id == METAWORLD_CAMERA_FRAME
    back = Transform(METAWORLD_CAMERA_POSE).apply(convert.pointcloud2_to_numpy(first))
    np.testing.assert_allclose(back, base_cloud, atol=1e-5)  # the same cloud, expressed in the camera frame
    t0 = convert.stamp_to_ns(first.header.stamp)

    # One twist + one gripper command = one step: 12.5 ms of simulation time, on /clock and in the stamps.
    twist = TwistStamped()
    twist.header.frame_id = "base"
    twist.twist.linear.x = 0.5
    for i in range(1, 4):
        twist_pub.publish(twist)
        gripper_pub.publish(Float64MultiArray(data=[0.0]))
        want = t0 + round(i * step_s * 1e9)
        assert spin_until(node, lambda want=want: convert.stamp_to_ns(states[-1].header.stamp) == want, 20), i
    assert convert.stamp_to_ns(clocks[-1].clock) == t0 + round(3 * step_s * 1e9)
    assert convert.stamp_to_ns(clouds[-1].header.stamp) == convert.stamp_to_ns(states[-1].header.stamp)
    # A twist in another frame is not a command.
    bad = TwistStamped()
    bad.header.frame_id = "tool0"
    twist_pub.publish(bad)
    gripper_pub.publish(Float64MultiArray(data=[0.0]))
    spin_until(node, lambda: False, 1.0)
    assert convert.stamp_to_ns(states[-1].header.stamp) == t0 + round(3 * step_s * 1e9)


def test_models_resolve_by_name_from_any_directory(tmp_path: Path) -> None:
    from difftori_ros.models import installed_models, resolve_model

    assert {"door-open-v3-difftori", "cartpole-swingup-tdmpc"} <= set(installed_models())
    assert Path(resolve_model("door-open-v3-difftori")) == MODEL
    with pytest.raises(ValueError, match="neither a path nor an installed model.*door-open-v3-difftori"):
        resolve_model("no-such-model")
    # The controller process, started from another directory, finds the default model by name.
    code = "from difftori_ros.models import resolve_model; print(resolve_model('door-open-v3-difftori'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and Path(out.stdout.strip()) == ROOT / "models" / "door-open-v3-difftori", out.stderr
