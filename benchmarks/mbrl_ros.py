"""A model-based agent through ROS vs in-process: returns over seeded episodes, and tick latency.

    python benchmarks/mbrl_ros.py [--model models/cartpole-swingup-tdmpc] [--episodes 10]
        [--variant difftori|sampling] [--latency-ticks 1000] [--quick]

Part 1 (returns): the controller (`difftori_ros.controller_node`, efforts on
effort_controller/commands, simulation time) drives the DeepMind Control robot
(`difftori_ros.dmc_robot_node`, on_action stepping) as separate processes over DDS on loopback.
Before each episode this script re-arms the controller (deactivate, activate: the policy's
history and warm start are reset, as an operator re-arms a controller between trials) and
starts the episode with sim/reset. The same seeds run in-process through the runner
(`training.evaluation.run_dmc_episodes`). Reported: per-episode returns of both, and the mean
relative difference.

Part 2 (latency): the robot steps in real time at the task's control rate (`step_mode:
realtime`) holding the last command; this script records, on the wall clock, the time from each
JointState it receives to the next effort command it receives (client-side tick latency), over
`--latency-ticks` ticks after a warm-up, plus the controller's deadline misses and safe actions
from /diagnostics. JSON lines out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "cartpole-swingup-tdmpc"))
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=100_000)
    parser.add_argument("--variant", default="difftori")
    parser.add_argument("--latency-ticks", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="2 episodes, 60 latency ticks")
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.latency_ticks = 2, 60
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 60))
    os.environ.setdefault("MUJOCO_GL", "egl")

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, String
    from std_srvs.srv import Trigger

    from difftori_core.deploy.runner import load_runner
    from difftori_core.envs.dmc import DMCEnvConfig
    from difftori_core.training.evaluation import run_dmc_episodes
    from difftori_ros.qos import EPISODE_RESULTS
    from difftori_ros.sim_selection import simulated_robot

    runner = load_runner(args.model, variant=args.variant)
    robot = simulated_robot(args.model)
    env_cfg = DMCEnvConfig(task=robot.robot_parameters["task"], action_repeat=robot.robot_parameters["action_repeat"])
    t0 = time.perf_counter()
    in_process = run_dmc_episodes(runner, env_cfg, args.episodes, seed=args.seed)
    in_process_s = time.perf_counter() - t0
    period = 0.01 * env_cfg.repeat  # DMC's 10 ms physics step (all suite tasks used here)

    def start(module: str, params: dict) -> subprocess.Popen:
        cmd = [sys.executable, "-m", module, "--ros-args"]
        for k, v in params.items():
            cmd += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    controller_params = {
        "model": args.model,
        "backend": "torch",
        "autostart": True,
        "control_rate_hz": round(1 / period, 3),
        "variant": args.variant,
        "max_observation_age_ms": 5000.0,
        **robot.controller_parameters,
    }
    procs = [start("difftori_ros.controller_node", controller_params)]
    rows = []
    try:
        with rclpy.init():
            node = rclpy.create_node("difftori_mbrl_bench")
            episodes: list[dict] = []
            diags: list[DiagnosticArray] = []
            node.create_subscription(
                String, "sim/episode", lambda m: episodes.append(json.loads(m.data)), EPISODE_RESULTS
            )
            node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)

            def spin_until(done, timeout: float) -> bool:  # noqa: ANN001
                end = time.monotonic() + timeout
                while time.monotonic() < end:
                    rclpy.spin_once(node, timeout_sec=0.02)
                    if done():
                        return True
                return False

            def call(client, request, timeout: float = 30.0):  # noqa: ANN001, ANN202
                assert client.wait_for_service(timeout_sec=timeout), client.srv_name
                future = client.call_async(request)
                assert spin_until(future.done, timeout), client.srv_name
                return future.result()

            lifecycle = node.create_client(ChangeState, "difftori_controller/change_state")
            assert lifecycle.wait_for_service(timeout_sec=60)
            # Wait for autostart to finish (configure + activate), then start the robot.
            from lifecycle_msgs.srv import GetState

            get_state = node.create_client(GetState, "difftori_controller/get_state")
            assert spin_until(lambda: call(get_state, GetState.Request()).current_state.label == "active", 60)
            robot_params = {**robot.robot_parameters, "seed": args.seed, "episodes": args.episodes, "auto_reset": False}
            procs.append(start("difftori_ros.dmc_robot_node", robot_params))
            reset = node.create_client(Trigger, "sim/reset")
            assert reset.wait_for_service(timeout_sec=60)
            assert spin_until(lambda: bool(episodes), 300), "the first episode did not finish"
            t0 = time.perf_counter()
            for _ in range(args.episodes - 1):
                for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_ACTIVATE):
                    assert call(lifecycle, ChangeState.Request(transition=Transition(id=transition))).success
                n = len(episodes)
                assert call(reset, Trigger.Request()).success
                assert spin_until(lambda n=n: len(episodes) > n, 300), "an episode did not finish"
            ros_s = time.perf_counter() - t0
            ros = [e["return"] for e in episodes]
            local = [e["return"] for e in in_process]
            rel = float(abs(np.mean(ros) - np.mean(local)) / max(abs(np.mean(local)), 1e-9))
            rows.append(
                {
                    "bench": "mbrl_ros_returns",
                    "model": Path(args.model).name,
                    "variant": args.variant,
                    "episodes": args.episodes,
                    "seeds": [e["seed"] for e in episodes],
                    "ros_returns": ros,
                    "in_process_returns": local,
                    "ros_mean": float(np.mean(ros)),
                    "in_process_mean": float(np.mean(local)),
                    "relative_difference_of_means": rel,
                    "in_process_s": round(in_process_s, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            procs.pop().terminate()

            # Part 2: real-time stepping at the control rate, wall-clock latency per tick.
            procs.append(
                start(
                    "difftori_ros.dmc_robot_node",
                    {
                        **robot.robot_parameters,
                        "use_sim_time": False,
                        "step_mode": "realtime",
                        "seed": args.seed + 99,
                        "episodes": 0,
                    },
                )
            )
            for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_ACTIVATE):
                call(lifecycle, ChangeState.Request(transition=Transition(id=transition)))
            state_times: list[float] = []
            latencies: list[float] = []

            def on_state(_: JointState) -> None:
                state_times.append(time.perf_counter())

            def on_command(_: Float64MultiArray) -> None:
                if state_times:
                    latencies.append((time.perf_counter() - state_times[-1]) * 1e3)

            node.create_subscription(JointState, "joint_states", on_state, qos_profile_sensor_data)
            node.create_subscription(Float64MultiArray, "effort_controller/commands", on_command, 10)
            warmup = 20
            total = warmup + args.latency_ticks
            assert spin_until(lambda: len(latencies) >= total, total * period * 3 + 60), len(latencies)
            values: dict[str, str] = {}
            for arr in reversed(diags):
                for status in arr.status:
                    if "difftori_controller" in status.name and not values:
                        values = {kv.key: kv.value for kv in status.values}
            lat = np.array(latencies[warmup:total])
            rows.append(
                {
                    "bench": "mbrl_ros_latency",
                    "model": Path(args.model).name,
                    "variant": args.variant,
                    "control_rate_hz": round(1 / period, 2),
                    "ticks": len(lat),
                    "p50_ms": round(float(np.percentile(lat, 50)), 2),
                    "p99_ms": round(float(np.percentile(lat, 99)), 2),
                    "max_ms": round(float(lat.max()), 2),
                    "ticks_over_period": int((lat > period * 1e3).sum()),
                    "deadline_miss": int(values.get("deadline_miss", -1)),
                    "safe_action_published": int(values.get("safe_action_published", -1)),
                    "ros_episode_wall_s": round(ros_s / max(args.episodes - 1, 1), 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            node.destroy_node()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
