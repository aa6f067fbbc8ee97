#!/usr/bin/env bash
# Real-frame part of the signal benchmark, kept small: PushT-v1 from 64 px on the CPU, PPO,
# attention-on-target (gaze/attention_on_target in TensorBoard) on a fixed probe set of 32
# frames every 500 steps, for baseline / foveal / gaze / gaze-shuffled; then frames_summary.py.
set -euo pipefail
export PYTHONPATH="$PWD"
PY=${PYTHON:-python}
STEPS=${STEPS:-1600}
for method in gaze gaze-shuffled foveal baseline; do
  nice -n 5 $PY -m gaze_rl.cli train --env-id PushT-v1 --algo ppo --method "$method" --seed 0 \
    --total-timesteps "$STEPS" --num-envs 2 --on-target-every 400 --gaze-image-every 0 --checkpoint-every 0 \
    --run-dir "runs/signal_frames/PushT-v1__$method" --overwrite --no-progress-bar --device cpu
done
$PY results/signal/frames_summary.py runs/signal_frames > results/signal/frames.md
