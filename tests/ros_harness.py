"""What the ROS tests share: a ROS domain per test, node processes, a client node, waiting helpers."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition  # noqa: F401 (re-exported for the tests)
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.node import Node

from difftori_ros import convert

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "door-open-v3-difftori"


class Procs:
    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env, self.logdir, self.procs = env, logdir, []

    def start(self, module: str, *params: str) -> subprocess.Popen:
        args = [sys.executable, "-m", module, "--ros-args"]
        for p in params:
            args += ["-p", p]
        log = open(self.logdir / f"{module.split('.')[-1]}-{len(self.procs)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(2)  # SIGINT: clean shutdown
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def spin_until(node: Node, done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
        if done():
            return True
    return False


def diag_values(msgs: list[DiagnosticArray]) -> dict[str, str]:
    for arr in reversed(msgs):
        for status in arr.status:
            if "difftori_controller" in status.name:
                return {kv.key: kv.value for kv in status.values}
    return {}


def change_state(node: Node, transition: int) -> bool:
    client = node.create_client(ChangeState, "difftori_controller/change_state")
    assert client.wait_for_service(timeout_sec=20)
    future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
    assert spin_until(node, future.done, timeout=60)
    return future.result().success


def get_state(node: Node) -> str:
    client = node.create_client(GetState, "difftori_controller/get_state")
    assert client.wait_for_service(timeout_sec=20)
    future = client.call_async(GetState.Request())
    assert spin_until(node, future.done, timeout=10)
    return future.result().current_state.label


def publish_sensors(node: Node, pubs: dict, stamp_ns: int, points: np.ndarray | None = None) -> None:
    rng = np.random.default_rng(stamp_ns % 1000)
    if points is None:
        points = rng.uniform([-0.3, 0.4, 0.01], [0.3, 0.9, 0.4], (2000, 3)).astype(np.float32)
    pubs["points"].publish(convert.numpy_to_pointcloud2(points, stamp_ns, "base"))
    names = [f"right_j{i}" for i in range(7)] + ["r_close", "l_close"]
    pubs["joints"].publish(convert.numpy_to_joint_state(names, np.zeros(9), stamp=stamp_ns))


def image_model(path: Path) -> Path:
    """An (untrained) DiffTORI model that also consumes an 84x84 image."""
    from difftori_core.checkpoint import save_checkpoint
    from difftori_core.config import to_dict
    from difftori_core.envs.metaworld import ACTION_NAMES, JOINT_NAMES
    from difftori_core.nn.encoders import EncoderConfig
    from difftori_core.policies import PolicyConfig, PolicySpec, make_policy
    from difftori_core.processing import ProcessingSpec

    spec = PolicySpec(
        {"point_cloud": [512, 3], "image": [3, 84, 84], "agent_pos": [9]}, 4, [-1.0] * 4, [1.0] * 4, list(ACTION_NAMES)
    )
    cfg = PolicyConfig(encoder=EncoderConfig(image_channels=(8, 16)))
    extra = {
        "task": "door-open-v3",
        "processing": to_dict(ProcessingSpec(keys=("point_cloud", "image", "agent_pos"))),
        "env": {"joint_names": list(JOINT_NAMES)},
    }
    return save_checkpoint(path, make_policy(cfg, spec), {"policy": to_dict(cfg)}, extra)


