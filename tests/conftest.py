"""Test-wide setup: ROS traffic stays on loopback with a domain id unique to this run."""

from __future__ import annotations

import os

# Must happen before anything imports rclpy. The id is derived from the pid so parallel runs on
# one machine don't cross-talk (ROS 2 domain ids are 0-232; 0 is avoided as the common default).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
