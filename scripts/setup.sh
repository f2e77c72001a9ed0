#!/usr/bin/env bash
# Idempotent project setup for a fresh Debian 12 / Python 3.11 machine:
#   1. Debian packages the Python wheels need at run/build time (only the missing ones),
#   2. a project virtual environment (.venv, or $DIFFTORI_VENV),
#   3. pinned requirements: torch first, then requirements.txt, then theseus-ai with its quirk,
#   4. this package itself (editable).
# A stamp file skips steps 3-4 when nothing they depend on changed, so re-running costs ~1 s.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DIFFTORI_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

APT_PACKAGES=(
  libsuitesparse-dev   # scikit-sparse (theseus' sparse Cholesky)
  libusb-1.0-0         # open3d
  libegl1 libgl1-mesa-dri libosmesa6  # headless MuJoCo rendering (EGL, OSMesa fallback)
)

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# `ros2 run` / `ros2 launch` (from a sourced ROS 2 installation) find packages through
# AMENT_PREFIX_PATH; a pip install puts this one's ament index under the venv prefix, so the
# venv's activate script adds it there.
if ! grep -q "difftori: ament prefix" "$VENV/bin/activate"; then
  cat >> "$VENV/bin/activate" <<'ACTIVATE'
# difftori: ament prefix (ros2 run difftori_ros ... finds the package installed in this venv)
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
ACTIVATE
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# Some machines' pip.conf names local wheel mirrors that do not exist; pip then warns once per
# install ("Location ... is ignored"). The warning is harmless, so keep it out of the log.
pip_run() { "${PIP[@]}" "$@" 2> >(grep -v "is ignored" >&2); }

stamp_src="$(cat "$ROOT/requirements.txt" "$ROOT/scripts/setup.sh" "$ROOT/setup.py" "$ROOT/package.xml" | sha256sum | cut -d' ' -f1)"
stamp_file="$VENV/.difftori-setup-stamp"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp_src" ]; then
  exit 0
fi

log "installing Python requirements (first run takes a few minutes)"
# torch first and pinned: an unpinned torch (direct or transitive) would pull a multi-GB CUDA build.
pip_run install -q torch==2.13.0
pip_run install -q -r "$ROOT/requirements.txt"
# theseus-ai ships only an sdist whose setup.py imports torch: build it against the torch above.
pip_run install -q --no-deps --no-build-isolation theseus-ai==0.2.3
pip_run install -q --no-deps --no-build-isolation -e "$ROOT"
pip_run check >&2
echo "$stamp_src" > "$stamp_file"
log "environment ready: $VENV"
