"""Summarise the DeepVision study: results/deepvision/analysis/*.json (written by `gaze-rl analyze`)
and the runs' training curves -> summary.md, summary.json and two layer-wise plots.

Run from the repository root: `python results/deepvision/summarize.py`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from gaze_rl.analysis import plot

HERE = Path(__file__).parent
ORDER = ["gaze_all", "gaze_k16", "gaze_k8", "gaze_k4", "gaze_multi", "baseline_all", "gaze_init", "baseline_init"]
LAST_EPISODES = 10  # training return: mean of the last episodes of the curve


def train_return(run: Path) -> float:
    with open(run / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    return float(np.mean([float(r["episodic_return"]) for r in rows[-LAST_EPISODES:]]))


def main() -> None:
    analyses = {}
    for path in sorted((HERE / "analysis").glob("*.json")):
        analyses[path.stem] = json.loads(path.read_text())
    names = sorted(analyses, key=lambda n: (ORDER.index(n.split("__")[0]) if n.split("__")[0] in ORDER else 99, n))
    rows = []
    for name in names:
        a = analyses[name]
        run = Path(a["checkpoint"]).parent.parent
        layers = a["layers"]
        rows.append({
            "run": name, "label": a["label"], "train_steps": a["train_steps"],
            "train_return_last10": train_return(run) if (run / "curve.csv").is_file() else None,
            "eval_episodes": a["episodes"], "success_once": a["success_once"], "return_mean": a["return_mean"],
            "policy_attention_on_target": a["policy_attention_on_target"],
            "policy_attention_lift": a["policy_attention_lift"], "policy_attention_mode": a["policy_attention_mode"],
            "image_head_params": a["image_head_params"], "policy_params": a["policy_params"],
            "action_norm_mean": a["action_norm_mean"],
            "layer_lift": [round(layer["lift"], 3) for layer in layers],
            "layer_sensitivity_target": [round(layer["sensitivity_target"], 4) for layer in layers],
            "layer_sensitivity_control": [round(layer["sensitivity_control"], 4) for layer in layers],
        })
    (HERE / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
    lines = [
        "| run | train return (last 10 ep.) | eval success | eval return | attention-on-target (lift) | image head params "
        "| policy params | mean L2 of action | energy lift conv1/2/3 | sensitivity target conv1/2/3 "
        "| sensitivity random conv1/2/3 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {fmt(r['train_return_last10'], '.2f')} | {r['success_once']:.2f} | {r['return_mean']:.2f} | "
            f"{r['policy_attention_on_target']:.3f} ({r['policy_attention_lift']:.2f}, {r['policy_attention_mode']}) | "
            f"{r['image_head_params']:,} | {r['policy_params']:,} | {r['action_norm_mean']:.3f} | "
            f"{' / '.join(f'{v:.2f}' for v in r['layer_lift'])} | "
            f"{' / '.join(f'{v:.3f}' for v in r['layer_sensitivity_target'])} | "
            f"{' / '.join(f'{v:.3f}' for v in r['layer_sensitivity_control'])} |")
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    base = [analyses[n] for n in names if n.startswith(("gaze_all", "baseline_all", "gaze_init", "baseline_init"))]
    if base:
        plot(base, HERE / "layerwise_gaze_vs_baseline.png")
    variants = [analyses[n] for n in names if n.startswith("gaze_") and not n.startswith("gaze_init")]
    if variants:
        plot(variants, HERE / "layerwise_gaze_variants.png")


if __name__ == "__main__":
    main()
