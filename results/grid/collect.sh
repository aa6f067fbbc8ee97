#!/usr/bin/env bash
# Copies a grid's results from the bench's output into results/: the summary the bench wrote
# (run `gaze-rl bench ... --aggregate-only` first), its plots, and every finished run's curves
# (curve.csv -> curves/<run>.csv, on_target.csv -> curves/<run>.on_target.csv).
#   bash results/grid/collect.sh bench/grid-pushcube results/grid/pushcube
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=${1:-bench/grid-pushcube}
DEST=${2:-results/grid/pushcube}
mkdir -p "$DEST/curves" "$DEST/plots"
cp "$SRC/summary.md" "$SRC/summary.csv" "$DEST/"
cp "$SRC"/plots/*.png "$DEST/plots/"
for run in "$SRC"/runs/*/; do
  [ -f "$run/checkpoints/final.zip" ] || continue  # unfinished: not part of the summary either
  name=$(basename "$run")
  cp "$run/curve.csv" "$DEST/curves/$name.csv"
  if [ -f "$run/on_target.csv" ]; then cp "$run/on_target.csv" "$DEST/curves/$name.on_target.csv"; fi
done
echo "collected $(ls "$DEST/curves" | grep -vc on_target) finished runs into $DEST"
