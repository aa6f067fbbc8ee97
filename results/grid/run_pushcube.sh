#!/usr/bin/env bash
# The core grid of issue 13 on PushCube-v1 (profile cpu-learn: PPO, 64 px + state, pd_ee_delta_pos,
# 30k env steps, 2 env processes per run). The bench runs the grid seed-major (every arm's seed 0,
# then seed 1, ...), so complete seed rows land first, and keeps --workers runs going at all times.
# Resumable: re-running skips finished runs and resumes unfinished ones from their newest
# checkpoint. WORKERS=2 runs two at once (the 2-core machine is then fully loaded). The bench
# writes the summary of every finished run (all seeds) at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/grid-pushcube}
WORKERS=${WORKERS:-1}
.venv/bin/gaze-rl bench --profile cpu-learn --envs PushCube-v1 \
  --methods baseline foveal gaze gaze-shuffled baseline+shift gaze+shift --seeds 0 1 2 \
  --out "$OUT" --workers "$WORKERS"
