#!/usr/bin/env bash
# Main job: set up (idempotent), then the shipped DiffTORI policy controls the simulated robot over
# ROS 2: the simulated robot and the controller run as separate processes talking over DDS on
# loopback; prints success rate and tick latency, writes outputs/ros_demo/. Extra arguments go to
# `python -m difftori_ros.demo` (e.g. --episodes 20 --model models/<name>).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((1 + $$ % 200))}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec "${DIFFTORI_VENV:-$ROOT/.venv}/bin/python" -m difftori_ros.demo "$@"
