"""Feature-extraction throughput: images/s for builtin, DINOv2 ViT-S/14 and ViT-B/14.

Random weights (nothing is downloaded), random 1024x2048 RGB frames resized to the
network input (default 322x644), batch 1 and 4; CPU always, CUDA (fp16 autocast) when
present. Optional ``--cause`` adds the CAUSE-TR sliding-window path (ViT-B/14 + head).

    python benchmarks/bench_features.py --out benchmarks/results/bench_features.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _bench(ext, images, batch: int, repeats: int) -> dict:
    ext.extract(images[:batch], batch_size=batch)  # warm-up (allocations, position-embedding cache)
    _sync(ext.device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        ext.extract(images[:batch], batch_size=batch)
        _sync(ext.device)
        times.append(time.perf_counter() - t)
    best = min(times)
    return {"batch": batch, "repeats": repeats, "seconds_per_batch": round(best, 4),
            "images_per_s": round(batch / best, 3)}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main(argv=None) -> int:
    import torch

    from pseudo_labels.stages.semantic.features import build_extractor

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/bench_features.json")
    ap.add_argument("--backbones", nargs="+", default=["builtin", "dinov2_vits14", "dinov2_vitb14"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--input-size", type=int, nargs=2, default=[322, 644])
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    ap.add_argument("--cause", action="store_true", help="also time dinov2_vitb14 + CAUSE head (dense)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8) for _ in range(max(args.batches))]
    configs = [(b, None) for b in args.backbones] + ([("dinov2_vitb14", "cause")] if args.cause else [])
    results = []
    for device in devices:
        for backbone, head in configs:
            torch.manual_seed(0)
            ext = build_extractor(backbone, head=head, device=device, input_size=tuple(args.input_size),
                                  random_weights=backbone != "builtin")
            for b in args.batches:
                r = {"backbone": backbone, "head": head, "device": device, "dim": ext.dim,
                     "output": "dense" if ext.dense else "patch grid", **_bench(ext, images, b, args.repeats)}
                print(json.dumps(r), flush=True)
                results.append(r)
            del ext
    report = {
        "benchmark": "feature extraction throughput (random weights, 1024x2048 input frames)",
        "input_size": args.input_size,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "note": "best of `repeats` timed runs after one warm-up; includes the resize from 1024x2048",
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
