"""Test-wide setup: ROS traffic stays on loopback with a domain id unique to this run."""

from __future__ import annotations

import os

# Must happen before anything imports rclpy. The id is derived from the pid so parallel runs on
# one machine don't cross-talk (ROS 2 domain ids are 0-232; 0 is avoided as the common default).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
os.environ.setdefault("MUJOCO_GL", "egl")

import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import rclpy  # noqa: E402
import torch  # noqa: E402
from rclpy.node import Node  # noqa: E402

from tests.ros_harness import Procs  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture()
def ros_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    domain = str(100 + (os.getpid() + int(time.monotonic() * 1000)) % 100)
    env = {**os.environ, "ROS_DOMAIN_ID": domain, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    old = os.environ.get("ROS_DOMAIN_ID")
    os.environ["ROS_DOMAIN_ID"] = domain
    yield env
    if old is None:
        os.environ.pop("ROS_DOMAIN_ID", None)
    else:
        os.environ["ROS_DOMAIN_ID"] = old


@pytest.fixture()
def procs(ros_env: dict[str, str], tmp_path: Path) -> Iterator[Procs]:
    p = Procs(ros_env, tmp_path)
    yield p
    p.stop()


@pytest.fixture()
def node(ros_env: dict[str, str]) -> Iterator[Node]:
    rclpy.init()
    n = rclpy.create_node("difftori_test_client")
    yield n
    n.destroy_node()
    rclpy.shutdown()
