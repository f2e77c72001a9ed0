"""The main job: the shipped DiffTORI policy controlling the simulated robot over ROS 2.

    python -m difftori_ros.demo [--episodes 10] [--model door-open-v3-difftori] [--interface twist]
        [--out outputs/ros_demo]

Starts the simulated robot and the controller as separate processes that talk over DDS on
loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a domain id of its own), on the robot's
simulation time (/clock), with the cloud in the camera's optical frame and the controller
transforming it by the camera extrinsic, commands as Float64MultiArray or (`--interface twist`)
TwistStamped + gripper; runs seeded episodes, prints the success rate and the controller's tick
latency (p50/p99 from /diagnostics), writes `episodes.json`, `demo.png` and a GIF of the first
episode, and shuts both nodes down with SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from std_msgs.msg import String

from difftori_ros.qos import EPISODE_RESULTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--model", default="door-open-v3-difftori", help="an installed model's name or a path")
    parser.add_argument("--interface", default="float64_array", choices=["float64_array", "twist"])
    parser.add_argument("--task", default=None, help="default: the model's task")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="control rate, Hz")
    parser.add_argument("--out", type=Path, default=Path("outputs/ros_demo"))
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    from difftori_core.artifacts import ArtifactError
    from difftori_ros.sim_selection import ros_args, simulated_robot

    try:
        robot = simulated_robot(args.model, args.task or "", args.interface)
    except (ArtifactError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if robot.executable != "sim_robot_node":
        print(f"error: {args.model} is not a MetaWorld policy (use benchmarks/mbrl_ros.py for agents)", file=sys.stderr)
        return 2
    task = robot.robot_parameters["task"]
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
    env = dict(os.environ)
    gif = args.out / "episode0.gif"
    nodes = {
        "sim_robot": [*ros_args(robot.robot_parameters), f"seed:={args.seed}", f"episodes:={args.episodes}",
                      f"gif_path:={gif}"],
        "controller": [*ros_args(robot.controller_parameters), f"model:={args.model}",
                       f"control_rate_hz:={args.rate}", "autostart:=true"],
    }
    procs = []
    for name, params in nodes.items():
        cmd = [sys.executable, "-m", f"difftori_ros.{name}_node", "--ros-args"]
        for p in params:
            cmd += ["-p", p]
        log = open(args.out / f"{name}.log", "w")  # noqa: SIM115 (lives as long as the process)
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
    print(
        f"[demo] {task}: {args.episodes} episodes, model {args.model}, commands {args.interface}, "
        f"simulation time, ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}"
    )

    episodes: list[dict] = []
    latency: list[dict] = []
    try:
        with rclpy.init():
            node = rclpy.create_node("difftori_demo_monitor")

            def on_episode(msg: String) -> None:
                ep = json.loads(msg.data)
                episodes.append(ep)
                print(
                    f"[demo] episode {ep['episode']} seed {ep['seed']}: "
                    f"{'success' if ep['success'] else 'failure'} in {ep['steps']} steps"
                )

            def on_diag(msg: DiagnosticArray) -> None:
                for status in msg.status:
                    if "difftori_controller" in status.name:
                        latency.append({kv.key: kv.value for kv in status.values} | {"t": time.monotonic()})

            node.create_subscription(String, "sim/episode", on_episode, EPISODE_RESULTS)
            node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
            deadline = time.monotonic() + args.timeout
            while len(episodes) < args.episodes and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.1)
                if any(p.poll() is not None for p in procs):
                    print("[demo] a node exited early; see the logs in", args.out, file=sys.stderr)
                    break
            end = time.monotonic() + 1.5  # one more diagnostics report
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.1)
            node.destroy_node()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()

    successes = sum(e["success"] for e in episodes)
    last = latency[-1] if latency else {}
    summary = {
        "task": task,
        "episodes": len(episodes),
        "successes": successes,
        "success_rate": successes / max(len(episodes), 1),
        "tick_latency_p50_ms": float(last.get("latency_p50_ms", "nan")),
        "tick_latency_p99_ms": float(last.get("latency_p99_ms", "nan")),
        "safe_actions": int(last.get("safe_action_published", 0)),
        "actions": int(last.get("actions_published", 0)),
    }
    (args.out / "episodes.json").write_text(json.dumps({"summary": summary, "episodes": episodes}, indent=2))
    plot(args.out / "demo.png", episodes, latency, task)
    print(
        f"[demo] success {successes}/{len(episodes)}; tick latency p50 {summary['tick_latency_p50_ms']:.1f} ms, "
        f"p99 {summary['tick_latency_p99_ms']:.1f} ms (sensor stamp -> action)"
    )
    print(f"[demo] wrote {args.out}/episodes.json, demo.png, {gif.name}")
    return 0 if len(episodes) == args.episodes else 1


def plot(path: Path, episodes: list[dict], latency: list[dict], task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    colors = ["tab:green" if e["success"] else "tab:red" for e in episodes]
    ax[0].bar([e["episode"] for e in episodes], [e["steps"] for e in episodes], color=colors)
    ax[0].set_xlabel("episode (green: success)")
    ax[0].set_ylabel("steps")
    rows = [r for r in latency if r.get("latency_p50_ms", "n/a") != "n/a"]
    if rows:
        t0 = rows[0]["t"]
        ax[1].plot([r["t"] - t0 for r in rows], [float(r["latency_p50_ms"]) for r in rows], label="p50")
        ax[1].plot([r["t"] - t0 for r in rows], [float(r["latency_p99_ms"]) for r in rows], label="p99")
        ax[1].legend()
    ax[1].set_xlabel("time (s)")
    ax[1].set_ylabel("sensor stamp -> action (ms)")
    fig.suptitle(f"DiffTORI controller on the simulated robot over ROS 2: {task}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
