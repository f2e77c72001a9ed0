"""End-to-end controller latency over DDS, and a memory soak.

    python benchmarks/controller_latency.py [--ticks 1000] [--rate 30] [--soak-minutes 10] [--quick]
        [--model models/<name>]   (default: a DiffTORI model on 512 points + 84x84 image + joints)
        [--backend auto|torch|onnxruntime]   (the controller's `backend`; the default model is
                                              exported to ONNX unless torch is asked for)

A sensor process role is played by this script: it publishes a 128x128 rgb8 Image, a
16384-point PointCloud2 (base frame) and a JointState with one shared stamp at `--rate` Hz; the
controller (a separate process, `difftori_ros.controller_node`) preprocesses (crop, FPS to 512
points, resize to 84x84), runs the policy and publishes the action. Reported, after `--warmup`
sets:
  * controller-side latency, sensor stamp -> action publication (from its /diagnostics);
  * client-side latency, sensor stamp -> action received here (matched to the newest set sent);
  * dropped ticks: sets sent that got no action;
  * with --soak-minutes: the controller's RSS after warm-up and at the end (growth in %).
The default model has untrained weights (latency does not depend on them) and the default
architecture: DP3-style point encoder, image encoder, MLP base, 5 LM iterations. JSON lines out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from difftori_core.deploy.backends import backend_names

ROOT = Path(__file__).resolve().parents[1]


def make_model(out: Path) -> Path:
    from difftori_core.checkpoint import save_checkpoint
    from difftori_core.config import to_dict
    from difftori_core.envs.metaworld import ACTION_NAMES, JOINT_NAMES
    from difftori_core.policies import PolicyConfig, PolicySpec, make_policy
    from difftori_core.processing import ProcessingSpec

    processing = ProcessingSpec(keys=("point_cloud", "image", "agent_pos"))
    spec = PolicySpec(
        obs_shapes={"point_cloud": [512, 3], "image": [3, 84, 84], "agent_pos": [9]},
        action_dim=4,
        action_low=[-1.0] * 4,
        action_high=[1.0] * 4,
        action_names=list(ACTION_NAMES),
    )
    cfg = PolicyConfig()
    policy = make_policy(cfg, spec)
    extra = {"task": "door-open-v3", "processing": to_dict(processing), "env": {"joint_names": list(JOINT_NAMES)}}
    return save_checkpoint(out, policy, {"policy": to_dict(cfg)}, extra)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--ticks", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--soak-minutes", type=float, default=0.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", choices=backend_names(), default="auto")
    parser.add_argument("--quick", action="store_true", help="CI smoke: 60 ticks, no soak")
    args = parser.parse_args(argv)
    if args.quick:
        args.ticks, args.warmup, args.soak_minutes = 60, 10, 0.0

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState, PointCloud2
    from std_msgs.msg import Float64MultiArray

    from difftori_core.envs.metaworld import JOINT_NAMES
    from difftori_ros import convert

    tmp = Path(tempfile.mkdtemp(prefix="difftori_latency_"))
    model = args.model or str(make_model(tmp / "model"))
    if args.model is None and args.backend != "torch":  # ship the benchmark model like a real one
        from difftori_core.export import main as export_main

        export_main([model])
    cmd = [
        sys.executable,
        "-m",
        "difftori_ros.controller_node",
        "--ros-args",
        "-p",
        f"model:={model}",
        "-p",
        "autostart:=true",
        "-p",
        f"device:={args.device}",
        "-p",
        f"backend:={args.backend}",
        "-p",
        f"control_rate_hz:={args.rate}",
        "-p",
        "max_observation_age_ms:=1000.0",
    ]
    log = open(tmp / "controller.log", "w")  # noqa: SIM115
    ctl = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    cloud = np.concatenate(
        [rng.uniform([-0.5, 0.3, 0.01], [0.5, 1.0, 0.6], (4096, 3)), rng.uniform([-2, -1, -1], [2, 3, 0], (12288, 3))]
    ).astype(np.float32)
    joints = np.zeros(9)
    sent: list[int] = []
    received: list[tuple[int, int]] = []  # (newest stamp sent, receive time)
    diags: list[dict[str, str]] = []
    rows = []
    try:
        with rclpy.init():
            node = rclpy.create_node("difftori_latency_bench")
            qos = qos_profile_sensor_data
            pub_img = node.create_publisher(Image, "camera/color/image_raw", qos)
            pub_pts = node.create_publisher(PointCloud2, "camera/depth/points", qos)
            pub_js = node.create_publisher(JointState, "joint_states", qos)
            node.create_subscription(
                Float64MultiArray,
                "difftori/action",
                lambda m: received.append((sent[-1] if sent else 0, time.time_ns())),
                100,
            )

            def on_diag(msg: DiagnosticArray) -> None:
                for s in msg.status:
                    if "difftori_controller" in s.name:
                        diags.append({kv.key: kv.value for kv in s.values})

            node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
            # Wait until the controller is up and subscribed (no sleeps: discovery is observed).
            deadline = time.monotonic() + 120
            while pub_pts.get_subscription_count() == 0 or not diags:
                rclpy.spin_once(node, timeout_sec=0.1)
                if time.monotonic() > deadline or ctl.poll() is not None:
                    print(f"controller did not come up; see {tmp / 'controller.log'}", file=sys.stderr)
                    return 1

            def run_phase(n: int) -> tuple[int, int]:
                first_sent, first_recv = len(sent), len(received)
                period = 1.0 / args.rate
                next_t = time.monotonic()
                for _ in range(n):
                    stamp = node.get_clock().now().nanoseconds
                    pub_img.publish(convert.numpy_to_image(image, "rgb8", stamp, "camera_color_optical_frame"))
                    pub_pts.publish(convert.numpy_to_pointcloud2(cloud, stamp, "base"))
                    pub_js.publish(convert.numpy_to_joint_state(JOINT_NAMES, joints, stamp=stamp))
                    sent.append(stamp)
                    next_t += period
                    while True:
                        remaining = next_t - time.monotonic()
                        if remaining <= 0:
                            break
                        rclpy.spin_once(node, timeout_sec=remaining)
                end = time.monotonic() + 0.5
                while time.monotonic() < end:
                    rclpy.spin_once(node, timeout_sec=0.05)
                return first_sent, first_recv

            run_phase(args.warmup)
            rss_start = rss_kb(ctl.pid)
            s0, r0 = run_phase(args.ticks)
            lat = np.array([(t - s) / 1e6 for s, t in received[r0:]])
            n_sent = len(sent) - s0
            # Controller-side numbers: its window holds the last 2000 ticks, warm-up included when
            # ticks < 2000, so also report the client side (measured on this run's ticks only).
            ctl_diag = diags[-1] if diags else {}
            rows.append(
                {
                    "bench": "controller_latency",
                    "device": args.device,
                    "backend": args.backend,
                    "rate_hz": args.rate,
                    "ticks_sent": n_sent,
                    "actions_received": len(lat),
                    "dropped_ticks": max(0, n_sent - len(lat)),
                    "client_p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
                    "client_p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
                    "client_max_ms": round(float(lat.max()), 2) if len(lat) else None,
                    "controller_p50_ms": float(ctl_diag.get("latency_p50_ms", "nan")),
                    "controller_p99_ms": float(ctl_diag.get("latency_p99_ms", "nan")),
                    "controller_max_ms": float(ctl_diag.get("latency_max_ms", "nan")),
                    "safe_actions": int(ctl_diag.get("safe_action_published", 0)),
                    "model": "default 512-pt + 84x84 image DiffTORI" if args.model is None else model,
                    "cpu_threads": 1,
                }
            )
            if args.soak_minutes > 0:
                n = int(args.soak_minutes * 60 * args.rate)
                rss_soak0 = rss_kb(ctl.pid)
                run_phase(n)
                rss_end = rss_kb(ctl.pid)
                rows.append(
                    {
                        "bench": "controller_soak",
                        "minutes": args.soak_minutes,
                        "rate_hz": args.rate,
                        "sets_sent": n,
                        "rss_start_mb": round(rss_soak0 / 1024, 1),
                        "rss_end_mb": round(rss_end / 1024, 1),
                        "rss_growth_pct": round(100.0 * (rss_end - rss_soak0) / rss_soak0, 2),
                        "controller_alive": ctl.poll() is None,
                    }
                )
            rows[0]["rss_mb_after_warmup"] = round(rss_start / 1024, 1)
            node.destroy_node()
    finally:
        if ctl.poll() is None:
            ctl.send_signal(signal.SIGINT)
            try:
                ctl.wait(timeout=15)
            except subprocess.TimeoutExpired:
                ctl.kill()
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
