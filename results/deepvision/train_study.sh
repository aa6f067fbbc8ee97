#!/usr/bin/env bash
# DeepVision study, step 1: PushT-v1 PPO from 128 px pixels (NatureCNN grid 12x12 = 144 cells),
# one seed, a CPU budget. Every run: 2 CPU envs, the preset's hyperparameters. The two *_init
# runs stop after one PPO update (200 steps): the reference for what the architecture does
# before it has learnt anything.
# Usage: bash results/deepvision/train_study.sh [STEPS] [SEED]   (from the repository root)
set -euo pipefail
STEPS=${1:-3000}
SEED=${2:-0}
OUT=runs/deepvision
export OMP_NUM_THREADS=1  # small CNNs on a shared 2-core CPU: one torch thread is fastest
common=(--env-id PushT-v1 --algo ppo --image-size 128 --num-envs 2 --seed "$SEED"
        --checkpoint-every 0 --gaze-image-every 0 --no-progress-bar --overwrite)
run() {  # name, steps, extra options
  local name=$1 steps=$2; shift 2
  local cmd=(gaze-rl train "${common[@]}" --total-timesteps "$steps" "$@" --run-dir "$OUT/${name}__s$SEED")
  echo "== ${cmd[*]}"
  nice "${cmd[@]}"
}
run gaze_all      "$STEPS" --method gaze
run gaze_k16      "$STEPS" --method gaze --prune-top-k 16
run gaze_k8       "$STEPS" --method gaze --prune-top-k 8
run gaze_k4       "$STEPS" --method gaze --prune-top-k 4
run gaze_multi    "$STEPS" --method gaze --multi-level
run baseline_all  "$STEPS" --method baseline
run gaze_init     200 --method gaze
run baseline_init 200 --method baseline
