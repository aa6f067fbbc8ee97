"""k-NN mining cost: FAISS vs torch exact search over the feature buffer's keys, and one full
ContrastiveLearner.update().

Part 1 (k-NN): N = 100k stored L2-normalised keys of d = 256, k = 16 neighbours, Q queries drawn
from the stored keys (anchors are buffer states), Q in {128 (the learner's anchors per update),
1024}. Each timed sample is `build(keys)` + `search(queries, k)`, as the learner rebuilds its index
at every update:
- `faiss-cpu`:   gaze_rl FaissKNN (faiss.IndexFlatIP on the host);
- `torch-cpu`:   gaze_rl TorchKNN (chunked matmul + running top-k) on the CPU;
- `torch-cuda`:  gaze_rl TorchKNN on the GPU (only where torch sees CUDA; there is no faiss-gpu there).
Build and search are also timed apart. For comparison with the numbers measured earlier on the
2-core machine (IndexFlatL2 search 0.43 s vs torch cdist + topk 2.0 s, 1024 queries), the same two
raw calls are timed too (`--no-reference` skips them).

Part 2 (update): one `ContrastiveLearner.update()` (index build, anchors, search, triplet mining,
re-attention of the mined maps, projection, loss, backward, Adam step) with a 100k buffer of
NatureCNN 128x128 feature maps (64x12x12, fp16), per k-NN backend, with the update's own
`gaze/mining_ms`. The buffer is filled with random maps and random returns through
`FeatureBuffer.add` with random unit keys (what `ContrastiveLearner.add` would compute from random
maps is just as random, and skipping the 9216 -> 256 projection of 100k maps keeps set-up short).

    python benchmarks/mining.py --out results/speed/mining-h100.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from gaze_rl.contrastive.learner import ContrastiveConfig, ContrastiveLearner
from gaze_rl.contrastive.mining import FaissKNN, TorchKNN
from gaze_rl.nets.extractor import GazeExtractor

from _common import median, print_table, sync, time_call, write_result


def unit_keys(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, d, generator=gen), dim=1)


def repeat_timing(fn: Callable[[], Any], repeats: int, warmup: int, device: str) -> list[float]:
    for _ in range(warmup):
        time_call(fn, device)
    return [time_call(fn, device)[0] for _ in range(repeats)]


def build_and_search(knn: Any, keys: torch.Tensor, queries: torch.Tensor, k: int) -> Any:
    """One update's k-NN work: index the keys, then search them."""
    knn.build(keys)
    return knn.search(queries, k)


def cdist_top_k(keys: torch.Tensor, idx: torch.Tensor, k: int) -> Any:
    """The reference search: the k nearest keys of keys[idx] by L2 distance (torch.cdist + topk)."""
    return torch.cdist(keys[idx], keys).topk(k, largest=False)


def knn_benchmark(n: int, d: int, k: int, queries: list[int], repeats: int, reference: bool) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    keys_cpu = unit_keys(n, d, gen)
    searchers: dict[str, tuple[Any, str]] = {"faiss-cpu": (FaissKNN(), "cpu"), "torch-cpu": (TorchKNN(), "cpu")}
    if torch.cuda.is_available():
        searchers["torch-cuda"] = (TorchKNN(), "cuda")
    results: dict[str, Any] = {}
    for q in queries:
        idx = torch.randperm(n, generator=gen)[:q]
        row: dict[str, Any] = {}
        for name, (knn, device) in searchers.items():
            keys = keys_cpu.to(device)
            qs = keys[idx.to(device)]
            total = repeat_timing(partial(build_and_search, knn, keys, qs, k), repeats, 1, device)
            build = repeat_timing(partial(knn.build, keys), repeats, 0, device)
            search = repeat_timing(partial(knn.search, qs, k), repeats, 0, device)
            row[name] = {"build_plus_search_ms": 1000 * median(total), "build_ms": 1000 * median(build),
                         "search_ms": 1000 * median(search), "raw_build_plus_search_s": total}
        if reference:
            import faiss

            x = keys_cpu.numpy()
            xq = x[idx.numpy()]
            flat = faiss.IndexFlatL2(d)
            flat.add(x)
            ref = repeat_timing(partial(flat.search, xq, k), repeats, 1, "cpu")
            cd = repeat_timing(partial(cdist_top_k, keys_cpu, idx, k), repeats, 1, "cpu")
            row["ref faiss IndexFlatL2 search"] = {"search_ms": 1000 * median(ref), "raw_s": ref}
            row["ref torch cdist+topk"] = {"search_ms": 1000 * median(cd), "raw_s": cd}
        # Side by side in this process: ratio of the medians of build+search.
        fa = row["faiss-cpu"]["build_plus_search_ms"]
        row["ratio faiss-cpu/torch-cpu"] = fa / row["torch-cpu"]["build_plus_search_ms"]
        if "torch-cuda" in row:
            row["ratio faiss-cpu/torch-cuda"] = fa / row["torch-cuda"]["build_plus_search_ms"]
        results[f"Q={q}"] = row
    return results


def update_benchmark(n: int, image_size: int, repeats: int) -> dict[str, Any]:
    """Median seconds of one ContrastiveLearner.update() at a full buffer, per (device, backend)."""
    configs = [("cpu", "faiss"), ("cpu", "torch")]
    if torch.cuda.is_available():
        configs += [("cuda", "torch"), ("cuda", "faiss")]  # faiss on a cuda buffer: host index, keys copied
    space = spaces.Dict({"rgb": spaces.Box(0, 255, (3, image_size, image_size), np.uint8),
                         "state": spaces.Box(-np.inf, np.inf, (31,), np.float32)})
    out: dict[str, Any] = {}
    for device, backend in configs:
        torch.manual_seed(0)
        extractor = GazeExtractor(space, backbone="nature", attention="gaussian", detach_attention=True).to(device)
        map_shape = extractor.map_shape
        learner = ContrastiveLearner(extractor, ContrastiveConfig(buffer_size=n, knn_backend=backend), seed=0)
        gen = torch.Generator().manual_seed(1)
        t0 = time.perf_counter()
        for lo in range(0, n, 8192):
            m = min(8192, n - lo)
            learner.buffer.add(torch.rand((m, *map_shape), generator=gen).to(device),
                               unit_keys(m, learner.key_dim, gen).to(device),
                               (torch.rand(m, generator=gen) * 2 - 1).to(device))
        sync(device)
        fill_s = time.perf_counter() - t0
        metrics: list[dict[str, float]] = []
        totals: list[float] = []
        time_call(learner.update, device)  # warm-up
        peak_extra = None
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        for _ in range(repeats):
            seconds, m = time_call(learner.update, device)
            totals.append(seconds)
            metrics.append(m)
        if device == "cuda":
            peak_extra = torch.cuda.max_memory_allocated() - base
        name = f"{backend}({type(learner.knn).__name__})@{device}"
        out[name] = {
            "update_ms": 1000 * median(totals),
            "mining_ms": median([m.get("gaze/mining_ms", float("nan")) for m in metrics]),
            "num_triplets": median([m.get("gaze/num_triplets", float("nan")) for m in metrics]),
            "feature_map_shape": list(map_shape),
            "buffer_fill_s": fill_s,
            "cuda_peak_extra_bytes_during_update": peak_extra,
            "raw_update_s": totals,
            "raw_mining_ms": [m.get("gaze/mining_ms") for m in metrics],
        }
        del learner, extractor
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    p.add_argument("--n", type=int, default=100_000, help="stored keys / buffer states")
    p.add_argument("--d", type=int, default=256, help="key dimension")
    p.add_argument("--k", type=int, default=16, help="neighbours")
    p.add_argument("--queries", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--update-repeats", type=int, default=5)
    p.add_argument("--image-size", type=int, default=128, help="NatureCNN input of the update benchmark")
    p.add_argument("--no-reference", action="store_true", help="skip the raw IndexFlatL2 / cdist reference")
    p.add_argument("--no-update", action="store_true", help="skip the ContrastiveLearner.update() part")
    a = p.parse_args()

    knn = knn_benchmark(a.n, a.d, a.k, a.queries, a.repeats, not a.no_reference)
    rows = []
    for q, row in knn.items():
        for name, r in row.items():
            if isinstance(r, dict):
                rows.append([q, name, r.get("build_ms", ""), r["search_ms"], r.get("build_plus_search_ms", "")])
    print_table(f"k-NN, N={a.n}, d={a.d}, k={a.k} (median ms)", ["queries", "searcher", "build", "search", "build+search"], rows)
    print_table("ratios of build+search medians", ["queries", "ratio", "value"],
                [[q, k, v] for q, row in knn.items() for k, v in row.items() if k.startswith("ratio")])

    update = None
    if not a.no_update:
        update = update_benchmark(a.n, a.image_size, a.update_repeats)
        shape = next(iter(update.values()))["feature_map_shape"]
        print_table(f"ContrastiveLearner.update(), buffer {a.n} x {shape} fp16 (median)",
                    ["backend@device", "update ms", "mining ms", "triplets"],
                    [[k, v["update_ms"], v["mining_ms"], v["num_triplets"]] for k, v in update.items()])

    write_result(a.out, "mining", vars(a) | {"out": str(a.out)}, {"knn": knn, "update": update})


if __name__ == "__main__":
    main()
