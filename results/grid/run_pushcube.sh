#!/usr/bin/env bash
# The core grid of issue 13 on PushCube-v1 (profile cpu-learn: PPO, 64 px + state, pd_ee_delta_pos,
# 30k env steps, 2 env processes per run), one seed row at a time so that complete rows land
# first. Resumable: re-running skips finished runs and resumes unfinished ones from their
# newest checkpoint. WORKERS=2 runs two at once (the 2-core machine is then fully loaded).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/grid-pushcube}
WORKERS=${WORKERS:-1}
ARMS="baseline foveal gaze gaze-shuffled baseline+shift gaze+shift"
for seed in 0 1 2; do
  .venv/bin/gaze-rl bench --profile cpu-learn --envs PushCube-v1 --methods $ARMS --seeds $seed \
    --out "$OUT" --workers "$WORKERS"
done
# The summary of every finished run (all seeds).
.venv/bin/gaze-rl bench --profile cpu-learn --envs PushCube-v1 --methods $ARMS --seeds 0 1 2 --out "$OUT" --aggregate-only
