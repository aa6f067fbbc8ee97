"""Success per 2,500-step window of the protocol-search runs (curves/*.csv), as a Markdown table.

    python results/protocol/summarize.py > results/protocol/summary.md
"""

from __future__ import annotations

import csv
from pathlib import Path

WINDOW = 2_500
HERE = Path(__file__).parent


def windows(path: Path) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            out.setdefault(int(row["global_step"]) // WINDOW, []).append(float(row["success_once"]))
    return out


def main() -> None:
    runs = {p.stem: windows(p) for p in sorted((HERE / "curves").glob("*.csv"))}
    last = max(max(w) for w in runs.values())
    heads = [f"{k * WINDOW / 1000:g}-{(k + 1) * WINDOW / 1000:g}k" for k in range(last + 1)]
    print("success_once per window of env steps (episodes in brackets)\n")
    print("| run | " + " | ".join(heads) + " |")
    print("| --- |" + " --- |" * len(heads))
    for name, w in runs.items():
        cells = [f"{sum(w[k]) / len(w[k]):.2f} ({len(w[k])})" if k in w else "" for k in range(last + 1)]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
