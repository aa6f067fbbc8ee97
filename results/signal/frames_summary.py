"""Attention-on-target over training steps from the TensorBoard logs of run_frames.sh runs.

    python results/signal/frames_summary.py runs/signal_frames > results/signal/frames.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(root: Path) -> None:
    print("| run | step: attention-on-target (chance) | final lift |\n| --- | --- | --- |")
    for run in sorted(p for p in root.iterdir() if (p / "tb").is_dir()):
        events = EventAccumulator(str(run / "tb"))
        events.Reload()
        tags = events.Tags()["scalars"]
        if "gaze/attention_on_target" not in tags:
            print(f"| {run.name} | not logged | - |")
            continue
        aot = events.Scalars("gaze/attention_on_target")
        chance = events.Scalars("gaze/attention_on_target_chance")
        lift = events.Scalars("gaze/attention_on_target_lift")
        points = ", ".join(f"{a.step}: {a.value:.4f}" for a in aot)
        print(f"| {run.name} | {points} (chance {chance[-1].value:.4f}) | {lift[-1].value:.2f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
