#!/usr/bin/env bash
# DeepVision study, step 2: `gaze-rl analyze` every run of train_study.sh (5 held-out episodes,
# seeds 10000.., deterministic policy, every 2nd step), copy the JSONs here and summarise.
# Usage: bash results/deepvision/analyze_study.sh [EPISODES] [SEED]   (from the repository root)
set -euo pipefail
EPISODES=${1:-5}
SEED=${2:-0}
export OMP_NUM_THREADS=1
mkdir -p results/deepvision/analysis
for name in gaze_all gaze_k16 gaze_k8 gaze_k4 gaze_multi baseline_all gaze_init baseline_init; do
  run=runs/deepvision/${name}__s$SEED
  out=$run/analysis_e$EPISODES
  label=()
  [[ $name == *_init ]] && label=(--label "${name%_init} (200 steps)")
  echo "== $name"
  if [ ! -f "$out/final__seed10000.json" ]; then  # gaze-rl analyze never overwrites
    nice gaze-rl analyze --checkpoint "$run/checkpoints/final.zip" --episodes "$EPISODES" --every 2 \
      --out-dir "$out" "${label[@]}"
  fi
  cp "$out/final__seed10000.json" "results/deepvision/analysis/${name}__s$SEED.json"
done
python results/deepvision/summarize.py
