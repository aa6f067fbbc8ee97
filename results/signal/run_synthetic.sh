#!/usr/bin/env bash
# The synthetic part of the signal benchmark (issue 12): torch only, no simulator.
# Run from the repository root; PYTHONPATH makes `gaze_rl` this checkout's.
set -euo pipefail
export PYTHONPATH="$PWD"
PY=${PYTHON:-python}
nice -n 5 $PY benchmarks/gaze_signal.py --grid rules --episodes 64 --updates 15 --base steps_per_update=8 --out results/signal/synthetic_rules.json
nice -n 5 $PY benchmarks/gaze_signal.py --grid budget --episodes 64 --updates 15 --base rule=class,label=episode,exclude_window=-1 --out results/signal/synthetic_budget.json
nice -n 5 $PY benchmarks/gaze_signal.py --grid control --episodes 256 --updates 30 --base rule=class,label=episode,exclude_window=-1,steps_per_update=8,spread_weight=0.0 --out results/signal/synthetic_control.json
