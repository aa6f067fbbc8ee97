#!/usr/bin/env bash
# Copies a grid's finished runs from the bench's output into results/ (curve.csv -> curves/<run>.csv,
# on_target.csv -> curves/<run>.on_target.csv), beside the runs already committed there, then
# summarises every committed curve of the grid chosen by the remaining arguments into results/
# (summary.csv, summary.md, plots/) with `gaze-rl bench --curves-from`, and per_seed.md
# (results/grid/per_seed.py: final success per seed, attention-on-target over training).
# PROFILE (default cpu-learn) names the bench profile the grid ran with (its success threshold).
# So a grid can grow over sessions whose bench folders (checkpoints) are gone:
#   bash results/grid/collect.sh bench/grid-pokecube results/grid/pokecube \
#     --envs PokeCube-v1 --methods baseline foveal gaze gaze-shuffled baseline+shift gaze+shift --seeds 0 1 2
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=$1
DEST=$2
shift 2
mkdir -p "$DEST/curves" "$DEST/plots"
for run in "$SRC"/runs/*/; do
  [ -f "$run/checkpoints/final.zip" ] || continue  # unfinished
  name=$(basename "$run")
  cp "$run/curve.csv" "$DEST/curves/$name.csv"
  if [ -f "$run/on_target.csv" ]; then cp "$run/on_target.csv" "$DEST/curves/$name.on_target.csv"; fi
done
SUMMARY=$(mktemp -d)  # the bench also writes curves.csv (every episode again): not for results/
trap 'rm -rf "$SUMMARY"' EXIT
.venv/bin/gaze-rl bench --profile "${PROFILE:-cpu-learn}" "$@" --curves-from "$DEST/curves" --out "$SUMMARY" > /dev/null
cp "$SUMMARY/summary.md" "$SUMMARY/summary.csv" "$DEST/"
cp "$SUMMARY"/plots/*.png "$DEST/plots/"
.venv/bin/python results/grid/per_seed.py "$DEST/curves" > "$DEST/per_seed.md"
echo "$DEST: $(ls "$DEST/curves" | grep -vc on_target) committed runs; summary:"
cat "$DEST/summary.md"
