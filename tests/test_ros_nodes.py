"""The controller and the simulated robot as separate processes over real DDS (loopback only).

Each test starts the nodes with `python -m difftori_ros.<node>` in its own ROS domain, and talks
to them from an rclpy node in the test process.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import GetState
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState, PointCloud2
from std_msgs.msg import Float64MultiArray, String

from difftori_ros import convert
from difftori_ros.qos import EPISODE_RESULTS
from tests.ros_harness import (
    MODEL,
    ROOT,
    Procs,
    change_state,
    diag_values,
    get_state,
    image_model,
    publish_sensors,
    spin_until,
)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_closed_loop_on_the_simulated_robot(procs: Procs, node: Node, backend: str) -> None:
    episodes: list[dict] = []
    diags: list[DiagnosticArray] = []
    node.create_subscription(String, "sim/episode", lambda m: episodes.append(json.loads(m.data)), EPISODE_RESULTS)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    # The cell as the launch file and the demo start it: simulation time, the cloud in the
    # camera's optical frame, transformed by the controller with the camera extrinsic.
    from difftori_ros.sim_selection import ros_args, simulated_robot

    robot = simulated_robot(str(MODEL))
    procs.start("difftori_ros.sim_robot_node", *ros_args(robot.robot_parameters), "episodes:=3",
                "max_episode_steps:=150")
    procs.start("difftori_ros.controller_node", *ros_args(robot.controller_parameters), f"model:={MODEL}",
                "autostart:=true", f"backend:={backend}")
    assert spin_until(node, lambda: len(episodes) >= 3, timeout=150), f"episodes: {episodes}"
    assert spin_until(node, lambda: int(diag_values(diags).get("actions_published", 0)) > 0, timeout=5)
    # The shipped model opens the door through ROS as it does in-process.
    assert sum(e["success"] for e in episodes) >= 2, episodes
    values = diag_values(diags)
    assert float(values["latency_p50_ms"]) > 0
    assert all(p.poll() is None for p in procs.procs)


def test_lifecycle_and_bad_inputs_keep_the_node_alive(procs: Procs, node: Node) -> None:
    ctl = procs.start("difftori_ros.controller_node", f"model:={MODEL}", "max_observation_age_ms:=500.0")
    actions: list[Float64MultiArray] = []
    diags: list[DiagnosticArray] = []
    node.create_subscription(Float64MultiArray, "difftori/action", actions.append, 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    pubs = {
        "points": node.create_publisher(PointCloud2, "camera/depth/points", qos_profile_sensor_data),
        "joints": node.create_publisher(JointState, "joint_states", qos_profile_sensor_data),
    }
    assert get_state(node) == "unconfigured"
    assert change_state(node, Transition.TRANSITION_CONFIGURE) and get_state(node) == "inactive"
    clock = node.get_clock()
    for _ in range(5):  # inactive: sensors arrive, nothing is published
        publish_sensors(node, pubs, clock.now().nanoseconds)
        spin_until(node, lambda: False, 0.1)
    assert not actions
    assert change_state(node, Transition.TRANSITION_ACTIVATE) and get_state(node) == "active"
    assert spin_until(node, lambda: (publish_sensors(node, pubs, clock.now().nanoseconds), len(actions) > 3)[1], 20)

    # Bad inputs: truncated cloud data, wrong point_step, zero points, NaN points, a joint state
    # missing joints, stale stamps; then sensor dropout.
    truncated = convert.numpy_to_pointcloud2(np.zeros((100, 3), np.float32), frame_id="base")
    truncated.data = truncated.data[:-7]
    wrong_step = convert.numpy_to_pointcloud2(np.zeros((100, 3), np.float32), frame_id="base")
    wrong_step.point_step = 8
    empty = convert.numpy_to_pointcloud2(np.zeros((0, 3), np.float32), frame_id="base")
    for bad in (truncated, wrong_step, empty):
        bad.header.stamp = convert.ns_to_stamp(clock.now().nanoseconds)
        pubs["points"].publish(bad)
    nan_cloud = np.full((50, 3), np.nan, np.float32)
    publish_sensors(node, pubs, clock.now().nanoseconds, points=nan_cloud)
    pubs["joints"].publish(convert.numpy_to_joint_state(["right_j0"], np.zeros(1), stamp=clock.now().nanoseconds))
    publish_sensors(node, pubs, clock.now().nanoseconds - 5_000_000_000)  # 5 s old
    n_before = len(actions)
    spin_until(node, lambda: False, 2.5)  # dropout: no sensors at all
    assert ctl.poll() is None, "the controller died"
    assert len(actions) > n_before  # safe actions keep coming
    assert np.allclose(actions[-1].data[:3], 0.0)  # hold: zero end-effector motion
    values: dict[str, str] = {}

    def counted() -> bool:
        values.update(diag_values(diags))
        return int(values.get("malformed_pointcloud", 0)) >= 3 and int(values.get("stale_observation", 0)) >= 1

    assert spin_until(node, counted, 5), values
    assert int(values["malformed_joint_state"]) >= 1
    assert int(values["safe_action_published"]) >= 1

    assert change_state(node, Transition.TRANSITION_DEACTIVATE) and get_state(node) == "inactive"
    spin_until(node, lambda: False, 0.3)
    n = len(actions)
    spin_until(node, lambda: False, 1.0)
    assert len(actions) == n  # inactive: silent
    assert change_state(node, Transition.TRANSITION_CLEANUP) and get_state(node) == "unconfigured"
    assert ctl.poll() is None


def test_invalid_parameters_fail_configure_with_a_clear_message(procs: Procs, node: Node, tmp_path: Path) -> None:
    ctl = procs.start(
        "difftori_ros.controller_node", "model:=/nonexistent", "control_rate_hz:=-5.0", "backend:=tensorrt"
    )
    assert not change_state(node, Transition.TRANSITION_CONFIGURE)
    assert get_state(node) == "unconfigured" and ctl.poll() is None
    procs.stop()
    log = "".join(p.read_text() for p in tmp_path.glob("controller_node-*.log"))
    assert "control_rate_hz out of range Min: 1.0, Max: 1000.0, value: -5.0" in log
    assert "backend must be one of ['auto', 'torch', 'onnxruntime'], got 'tensorrt'" in log


def test_bad_images_are_counted_and_answered_with_the_safe_action(procs: Procs, node: Node, tmp_path: Path) -> None:
    model = image_model(tmp_path / "image_model")
    ctl = procs.start("difftori_ros.controller_node", f"model:={model}", "autostart:=true")
    actions: list[Float64MultiArray] = []
    diags: list[DiagnosticArray] = []
    node.create_subscription(Float64MultiArray, "difftori/action", actions.append, 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    img_pub = node.create_publisher(Image, "camera/color/image_raw", qos_profile_sensor_data)
    pubs = {
        "points": node.create_publisher(PointCloud2, "camera/depth/points", qos_profile_sensor_data),
        "joints": node.create_publisher(JointState, "joint_states", qos_profile_sensor_data),
    }
    clock = node.get_clock()
    rgb = np.zeros((128, 128, 3), np.uint8)

    def good_tick() -> bool:
        stamp = clock.now().nanoseconds
        img_pub.publish(convert.numpy_to_image(rgb, "rgb8", stamp))
        publish_sensors(node, pubs, stamp)
        return len(actions) > 3

    assert spin_until(node, good_tick, 60), "no actions from good data"
    unsupported = convert.numpy_to_image(rgb, "rgb8", clock.now().nanoseconds)
    unsupported.encoding = "yuv422"
    wrong_size = convert.numpy_to_image(rgb, "rgb8", clock.now().nanoseconds)
    wrong_size.height, wrong_size.width, wrong_size.step = 256, 256, 768  # data is for 128x128
    mono = convert.numpy_to_image(rgb[..., 0], "mono8", clock.now().nanoseconds)
    for bad in (unsupported, wrong_size, mono):
        img_pub.publish(bad)
    values: dict[str, str] = {}

    def counted() -> bool:
        values.update(diag_values(diags))
        return int(values.get("malformed_image", 0)) >= 3

    assert spin_until(node, counted, 10), values
    assert ctl.poll() is None


def test_controller_and_in_process_evaluation_give_identical_actions(procs: Procs, node: Node) -> None:
    """The same raw observations through the runner in-process (what eval does) and through the
    controller over DDS (converted from PointCloud2 / JointState) give the same actions."""
    from difftori_core.deploy.runner import load_runner
    from difftori_core.envs.metaworld import MetaWorldEnv, MetaWorldEnvConfig

    runner = load_runner(MODEL)
    observations, expected = [], []
    with MetaWorldEnv(MetaWorldEnvConfig(task="door-open-v3", width=64, height=64), render_image=False) as env:
        raw = env.reset(seed=1000)
        for _ in range(20):  # 2.5 chunks: new chunks and queued actions, frames used and skipped
            action, _ = runner.step(raw)
            observations.append(raw)
            expected.append(action)
            raw, *_ = env.step(action)

    procs.start(
        "difftori_ros.controller_node",
        f"model:={MODEL}",
        "autostart:=true",
        "backend:=torch",
        "max_observation_age_ms:=5000.0",
    )
    actions: list[np.ndarray] = []
    node.create_subscription(Float64MultiArray, "difftori/action", lambda m: actions.append(np.array(m.data)), 10)
    pubs = {
        "points": node.create_publisher(PointCloud2, "camera/depth/points", qos_profile_sensor_data),
        "joints": node.create_publisher(JointState, "joint_states", qos_profile_sensor_data),
    }
    client = node.create_client(GetState, "difftori_controller/get_state")
    assert client.wait_for_service(timeout_sec=30)
    assert spin_until(node, lambda: get_state(node) == "active", 60)
    spin_until(node, lambda: False, 0.5)  # let the watchdog's missing-sensor fallbacks pass
    actions.clear()
    clock = node.get_clock()
    for i, raw in enumerate(observations):
        stamp = clock.now().nanoseconds
        points = raw["point_cloud"][np.isfinite(raw["point_cloud"]).all(1)]
        pubs["points"].publish(convert.numpy_to_pointcloud2(points, stamp, "base"))
        pubs["joints"].publish(convert.numpy_to_joint_state(list(env.joint_names), raw["agent_pos"], stamp=stamp))
        assert spin_until(node, lambda i=i: len(actions) > i, 20), f"no action for observation {i}"
    np.testing.assert_allclose(np.array(actions[: len(expected)]), np.array(expected), atol=1e-6, rtol=0)


def test_dmc_robot_speaks_joint_states_clock_and_effort_commands(procs: Procs, node: Node) -> None:
    """The DeepMind Control robot over DDS: JointState with the model's joint names, /clock in
    simulated time, efforts as Float64MultiArray (bad ones ignored), and the episode return equal
    to the same commands applied in-process."""
    from rosgraph_msgs.msg import Clock

    from difftori_core.envs.dmc import DMCEnv, DMCEnvConfig

    robot = procs.start(
        "difftori_ros.dmc_robot_node", "task:=cartpole-swingup", "action_repeat:=50", "episodes:=1", "seed:=7"
    )
    states: list[JointState] = []
    clocks: list[int] = []
    episodes: list[dict] = []
    node.create_subscription(JointState, "joint_states", states.append, qos_profile_sensor_data)
    node.create_subscription(Clock, "/clock", lambda m: clocks.append(convert.stamp_to_ns(m.clock)), 10)
    node.create_subscription(String, "sim/episode", lambda m: episodes.append(json.loads(m.data)), EPISODE_RESULTS)
    commands = node.create_publisher(Float64MultiArray, "effort_controller/commands", 10)
    assert spin_until(node, lambda: commands.get_subscription_count() > 0, 30)
    efforts = np.sin(np.arange(20) * 0.7)
    commands.publish(convert.action_to_float64_multiarray(np.array([0.1, 0.2])))  # wrong length: ignored
    commands.publish(Float64MultiArray(data=[float("nan")]))  # NaN: ignored
    def newest_stamp() -> int:
        return max((convert.stamp_to_ns(m.header.stamp) for m in states), default=-1)

    # While waiting the robot repeats its state (same stamp), so a step's answer is a newer stamp.
    for i, e in enumerate(efforts):
        before = newest_stamp()
        commands.publish(convert.action_to_float64_multiarray(np.array([e])))
        assert spin_until(node, lambda b=before: newest_stamp() > b, 10), f"no joint state after command {i}"
    assert spin_until(node, lambda: bool(episodes), 10)
    newest = max(states, key=lambda m: convert.stamp_to_ns(m.header.stamp))
    assert newest.name == ["slider", "hinge_1"] and len(newest.velocity) == 2
    steps_ns = np.diff(sorted(set(clocks)))
    assert len(steps_ns) >= 19 and np.allclose(steps_ns, 50 * 0.01 * 1e9)  # 50 steps of 10 ms per command
    assert convert.stamp_to_ns(newest.header.stamp) == max(clocks)
    with DMCEnv(DMCEnvConfig(task="cartpole-swingup", action_repeat=50)) as env:
        env.reset(seed=7)
        expected = sum(env.step(np.array([e]))[1] for e in efforts)
    assert episodes[0]["steps"] == 20 and episodes[0]["return"] == pytest.approx(expected, rel=1e-9)
    assert robot.poll() is None


def test_dmc_robot_on_its_own_simulation_time_repeats_its_state_while_waiting(procs: Procs, node: Node) -> None:
    """Waiting for the first command, the robot republishes the unchanged state (same stamp),
    also when it runs on the simulation time it publishes itself (its timers must not wait for
    that clock to move)."""
    procs.start("difftori_ros.dmc_robot_node", "task:=cartpole-swingup", "use_sim_time:=true", "state_republish_s:=0.3")
    states: list[JointState] = []
    node.create_subscription(JointState, "joint_states", states.append, qos_profile_sensor_data)
    assert spin_until(node, lambda: len(states) >= 3, 30), f"{len(states)} states"
    assert {convert.stamp_to_ns(m.header.stamp) for m in states} == {0}
    assert all(m.position.tolist() == states[0].position.tolist() for m in states)


def test_model_based_agent_controls_the_dmc_robot_like_in_process(procs: Procs, node: Node, tmp_path: Path) -> None:
    """A packaged model-based agent in the controller, from JointState to effort commands, on
    simulation time: the episode's return over ROS equals the runner's in-process return."""
    from difftori_core.config import load_config
    from difftori_core.deploy.runner import load_runner
    from difftori_core.training.evaluation import run_dmc_episodes
    from difftori_core.training.rl import RLTrainConfig, RLTrainer, package_model
    from tests.test_rl import TINY

    overrides = [*TINY, "steps=2000", "env.observation=joints", f"output_dir={tmp_path / 'r'}"]
    cfg = load_config(RLTrainConfig, None, overrides)
    RLTrainer(cfg).run()
    model = package_model(tmp_path / "r", tmp_path / "model")
    (expected,) = run_dmc_episodes(load_runner(model), cfg.env, 1, seed=500)

    episodes: list[dict] = []
    node.create_subscription(String, "sim/episode", lambda m: episodes.append(json.loads(m.data)), EPISODE_RESULTS)
    procs.start(
        "difftori_ros.controller_node",
        f"model:={model}",
        "autostart:=true",
        "backend:=torch",
        "action_topic:=effort_controller/commands",
        "use_sim_time:=true",
    )
    client = node.create_client(GetState, "difftori_controller/get_state")
    assert client.wait_for_service(timeout_sec=60)
    assert spin_until(node, lambda: get_state(node) == "active", 60)
    # The robot starts once the controller is active, so its first state is acted on.
    procs.start(
        "difftori_ros.dmc_robot_node", "task:=cartpole-swingup", "action_repeat:=20", "episodes:=1", "seed:=500"
    )
    assert spin_until(node, lambda: bool(episodes), 120), "no episode finished"
    assert episodes[0]["steps"] == expected["steps"] == 50
    assert episodes[0]["return"] == pytest.approx(expected["return"], rel=1e-5)


def test_model_based_agent_answers_bad_joint_states_with_zero_effort(procs: Procs, node: Node) -> None:
    """The JointState sensor set of a model-based agent: malformed, non-finite, stale and missing
    input each publish the effort interface's safe action (zero effort), counted on /diagnostics."""
    ctl = procs.start(
        "difftori_ros.controller_node", f"model:={ROOT / 'models' / 'cartpole-swingup-tdmpc'}", "autostart:=true",
        "backend:=torch", "action_topic:=effort_controller/commands", "max_observation_age_ms:=500.0",
    )
    efforts: list[Float64MultiArray] = []
    diags: list[DiagnosticArray] = []
    node.create_subscription(Float64MultiArray, "effort_controller/commands", efforts.append, 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    joints = node.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
    names = ["slider", "hinge_1"]
    clock = node.get_clock()

    def state(positions: list[float], velocities: list[float] | None, age_s: float = 0.0) -> None:
        stamp = clock.now().nanoseconds - int(age_s * 1e9)
        joints.publish(convert.numpy_to_joint_state(names[: len(positions)], np.array(positions),
                                                    None if velocities is None else np.array(velocities), stamp))

    client = node.create_client(GetState, "difftori_controller/get_state")
    assert client.wait_for_service(timeout_sec=60)
    assert spin_until(node, lambda: get_state(node) == "active", 60)
    # Valid states: the planner acts (the pole hangs down, so it pushes).
    assert spin_until(node, lambda: (state([0.0, 3.1], [0.0, 0.0]), len(efforts) > 3)[1], 30)
    assert any(abs(m.data[0]) > 1e-3 for m in efforts), [list(m.data) for m in efforts]

    state([0.0], [0.0])  # a joint missing
    state([0.0, 3.1], None)  # no velocities (the agent needs them)
    state([0.0, 3.1], [float("nan"), 0.0])  # non-finite
    spin_until(node, lambda: False, 0.3)
    state([0.0, 3.1], [0.0, 0.0], age_s=5.0)  # 5 s old
    n_before = len(efforts)
    spin_until(node, lambda: False, 1.5)  # dropout: no sensors at all
    assert ctl.poll() is None, "the controller died"
    assert len(efforts) > n_before and list(efforts[-1].data) == [0.0]  # safe action: zero effort
    values: dict[str, str] = {}

    def counted() -> bool:
        values.update(diag_values(diags))
        return (
            int(values.get("malformed_joint_state", 0)) >= 2
            and int(values.get("nonfinite_input", 0)) >= 1
            and int(values.get("stale_observation", 0)) >= 1
        )

    assert spin_until(node, counted, 5), values
    assert int(values["safe_action_published"]) >= 1

    # One state stamped 3 s ahead is refused; it must not stay "newest" and silence control.
    state([0.0, 3.1], [0.0, 0.0], age_s=-3.0)
    n = len(efforts)
    assert spin_until(node, lambda: (state([0.0, 3.1], [0.0, 0.0]), len(efforts) > n + 3)[1], 5)
    assert abs(efforts[-1].data[0]) > 1e-3  # the planner acts again, not the safe action
    def refused() -> bool:
        values.update(diag_values(diags))
        return int(values.get("future_observation", 0)) >= 1

    assert spin_until(node, refused, 5), values

    # Shutdown from active stops control: no effort, not even the safe one, while states arrive.
    assert change_state(node, Transition.TRANSITION_ACTIVE_SHUTDOWN) and get_state(node) == "finalized"
    spin_until(node, lambda: False, 0.3)
    n = len(efforts)
    spin_until(node, lambda: (state([0.0, 3.1], [0.0, 0.0]), False)[1], 1.5)
    assert len(efforts) == n, "a finalized controller kept publishing"
