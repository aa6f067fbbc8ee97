"""Helpers shared by the speed benchmarks: machine info, timing, a small table, the JSON file.

Every benchmark writes one JSON file with the command line, the machine, the settings, the
medians and every raw sample, so that a number in results/speed/ can be traced to its run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch


def machine_info() -> dict[str, Any]:
    """Platform, CPU count, Python / torch versions and the GPU (if torch sees one)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    try:
        import faiss

        info["faiss"] = faiss.__version__
    except ImportError:
        info["faiss"] = None
    return info


def git_info() -> dict[str, Any]:
    """Commit of the checkout and whether package files were modified (results depend on both)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "gaze_rl"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.split("\n")
        return {"commit": commit or None, "modified_package_files": [line[3:] for line in dirty if line.strip()]}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "modified_package_files": None}


def machine_tag() -> str:
    """Short machine name for result files: the GPU's model, else 'cpu<N>'."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0).replace("NVIDIA ", "").split()[0].lower()
    return f"cpu{os.cpu_count()}"


def sync(device: torch.device | str | None = None) -> None:
    """Waits for queued CUDA work so that wall-clock times include it (no-op on CPU)."""
    if device is not None and torch.device(device).type != "cuda":
        return
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], device: torch.device | str | None = None) -> tuple[float, Any]:
    """Seconds taken by `fn()` (CUDA-synchronised before and after) and its result."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples)) if samples else float("nan")


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Prints a small left-aligned table."""
    def fmt(x: Any) -> str:
        if isinstance(x, float):
            return f"{x:.4g}"
        return str(x)

    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def write_result(out: Path | None, name: str, settings: dict[str, Any], results: Any, **extra: Any) -> Path:
    """Writes the benchmark's JSON (command, machine, settings, results) and returns its path."""
    path = out or Path("results/speed") / f"{name}-{machine_tag()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "git": git_info(),
        "settings": settings,
        "results": results,
        **extra,
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")
    return path
