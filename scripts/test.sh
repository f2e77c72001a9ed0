#!/usr/bin/env bash
# Test command: set up (idempotent), lint, then the pytest suite. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
PY="${DIFFTORI_VENV:-$ROOT/.venv}/bin/python"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export MUJOCO_GL="${MUJOCO_GL:-egl}"
"$PY" -m ruff check difftori_core difftori_ros tests benchmarks launch ros_bin
exec "$PY" -m pytest tests -p no:cacheprovider "$@"
