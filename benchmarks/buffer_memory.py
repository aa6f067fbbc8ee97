"""Memory of the contrastive feature buffer: bytes per stored state and total at 100k states.

For each backbone / image size (NatureCNN 64x64 -> 64x4x4, NatureCNN 128x128 -> 64x12x12,
PlainConv 64x64 and 128x128 -> 64x4x4; the map shape is taken from the real backbone) and each
storage dtype (fp16, the default, and fp32) it builds a `FeatureBuffer(capacity, map_shape,
key_dim, dtype)` with key_dim = min(256, C*h*w) as ContrastiveLearner does, and reports
`FeatureBuffer.nbytes()` and `bytes_per_state()`. On a GPU it also measures the change of
`torch.cuda.memory_allocated()` when the buffer is created on the device (allocator rounding
included). Not counted: the transient fp32 copy of the keys that each update makes for the
k-NN index (capacity x key_dim x 4 bytes, freed after the update), the SB3 rollout/replay buffer.

    python benchmarks/buffer_memory.py --out results/speed/buffer_memory-h100.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from gaze_rl.contrastive.buffer import FeatureBuffer
from gaze_rl.nets.encoders import feature_map_shape, make_backbone

from _common import print_table, write_result

CASES = (("nature", 64), ("nature", 128), ("plain", 64), ("plain", 128))
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def measure(backbone: str, image_size: int, dtype_name: str, capacity: int, key_dim: int) -> dict[str, Any]:
    shape = feature_map_shape(make_backbone(backbone, 3, image_size), 3, image_size, image_size)
    flat = shape[0] * shape[1] * shape[2]
    keys = min(key_dim, flat)
    buf = FeatureBuffer(capacity, shape, keys, device="cpu", dtype=DTYPES[dtype_name])
    row: dict[str, Any] = {
        "backbone": backbone, "image_size": image_size, "map_shape": list(shape), "key_dim": keys,
        "dtype": dtype_name, "capacity": capacity, "bytes_per_state": buf.bytes_per_state(),
        "nbytes": buf.nbytes(), "feature_bytes_per_state": flat * buf._features.element_size(),
        "cuda_allocated_delta_bytes": None,
    }
    del buf
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        gpu_buf = FeatureBuffer(capacity, shape, keys, device="cuda", dtype=DTYPES[dtype_name])
        torch.cuda.synchronize()
        row["cuda_allocated_delta_bytes"] = torch.cuda.memory_allocated() - before
        del gpu_buf
        torch.cuda.empty_cache()
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    p.add_argument("--capacity", type=int, default=100_000)
    p.add_argument("--key-dim", type=int, default=256)
    a = p.parse_args()

    rows = [measure(b, s, d, a.capacity, a.key_dim) for b, s in CASES for d in DTYPES]
    mib = 1024 ** 2
    print_table(f"FeatureBuffer at {a.capacity} states", ["backbone", "px", "map", "dtype", "B/state", "total MiB", "cuda delta MiB"],
                [[r["backbone"], r["image_size"], "x".join(map(str, r["map_shape"])), r["dtype"], r["bytes_per_state"],
                  r["nbytes"] / mib, "" if r["cuda_allocated_delta_bytes"] is None else r["cuda_allocated_delta_bytes"] / mib]
                 for r in rows])
    write_result(a.out, "buffer_memory", vars(a) | {"out": str(a.out)}, rows)


if __name__ == "__main__":
    main()
