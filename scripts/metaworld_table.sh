#!/usr/bin/env bash
# Train base vs DiffTORI on several MetaWorld tasks with the default (CPU-sized) config and
# print the comparison table (`python benchmarks/il_table.py runs`). Each task: 10 expert demos,
# 2000 base steps + 1000 cost steps, 50 paired evaluation episodes. ~15-25 min per task on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
TASKS=${TASKS:-"door-open-v3 push-v3 pick-place-v3 assembly-v3 drawer-open-v3"}
for task in $TASKS; do
  if [ -f "runs/$task-difftori/final_eval.json" ]; then continue; fi
  .venv/bin/python -m difftori_core.train task="$task" threads=2 env.max_episode_steps=200 "$@"
done
.venv/bin/python benchmarks/il_table.py runs
