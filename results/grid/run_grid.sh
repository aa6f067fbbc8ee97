#!/usr/bin/env bash
# The method grid of issue 13 (profile cpu-learn: PPO, 64 px + state, pd_ee_delta_pos, 30k env
# steps, 2 env processes per run). The bench runs the grid seed-major (every arm's seed 0, then
# seed 1, ...), so complete seed rows land first, and keeps --workers runs going at all times.
# Resumable: re-running skips finished runs and resumes unfinished ones from their newest
# checkpoint. WORKERS=2 runs two at once (the 2-core machine is then fully loaded). The bench
# writes the summary of the runs it was given (METHODS x SEEDS) at the end.
#   core grid on PushCube-v1:  bash results/grid/run_grid.sh
#   the same on PokeCube-v1:   TASK=PokeCube-v1 bash results/grid/run_grid.sh
#   seeds 3 and 4 of the arms within noise of each other:
#       SEEDS="3 4" METHODS="baseline foveal gaze gaze-shuffled" bash results/grid/run_grid.sh
#   train on clutter:
#       VARIANT=clutter OUT=bench/grid-pushcube-clutter METHODS="baseline gaze" bash results/grid/run_grid.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
TASK=${TASK:-PushCube-v1}
SLUG=$(echo "${TASK%-v*}" | tr '[:upper:]' '[:lower:]')   # PushCube-v1 -> pushcube
OUT=${OUT:-bench/grid-$SLUG}
WORKERS=${WORKERS:-1}
METHODS=${METHODS:-baseline foveal gaze gaze-shuffled baseline+shift gaze+shift}
SEEDS=${SEEDS:-0 1 2}
VARIANT=${VARIANT:-none}
# shellcheck disable=SC2086  # METHODS and SEEDS are word lists
.venv/bin/gaze-rl bench --profile cpu-learn --envs "$TASK" --methods $METHODS --seeds $SEEDS \
  --variant "$VARIANT" --out "$OUT" --workers "$WORKERS"
