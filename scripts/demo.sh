#!/usr/bin/env bash
# Main job: set up (idempotent), then run the most complete pipeline that exists.
# Until the ROS 2 controller lands this is the core demo: a cost learned end-to-end through the
# differentiable trajectory optimizer. Extra arguments are config overrides (key=value).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((1 + $$ % 200))}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec "${DIFFTORI_VENV:-$ROOT/.venv}/bin/python" -m difftori_core.demo --config config/demo.yaml "$@"
