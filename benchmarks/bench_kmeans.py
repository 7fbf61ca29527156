"""k-means benchmark: our default backend vs scikit-learn MiniBatchKMeans (reference settings).

Data: N x D float32 points from a G-component Gaussian mixture, L2-normalised
(default 1,000,000 x 90, G = 100), k = 80. For each method: wall time of the fit and
the k-means objective (inertia: sum of squared distances to the nearest centre) on the
*full* data, for the raw cluster means and for the L2-normalised centroids that the
pipeline uses (cosine assignment). Also the peak RSS of the fit stage of the pipeline
(sample features of 100 / 500 synthetic images, fit) in a fresh process each, with the
default sample budget and with no cap (``--rss-only`` re-measures just that part).

    python benchmarks/bench_kmeans.py --out benchmarks/results/bench_kmeans.json
    python benchmarks/bench_kmeans.py --rss-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pseudo_labels.core import defaults  # noqa: E402
from pseudo_labels.stages.semantic.clustering import (  # noqa: E402
    auto_threads, fit_kmeans_raw, kmeans_inertia, l2_normalize, resolve_backend,
)


def mixture(n: int, d: int, g: int, seed: int) -> np.ndarray:
    """(n, d) float32 L2-normalised points of a g-component Gaussian mixture with unequal
    weights and spreads."""
    rng = np.random.default_rng(seed)
    means = l2_normalize(rng.standard_normal((g, d)).astype(np.float32), axis=1)
    weights = rng.dirichlet(np.full(g, 2.0))
    spread = rng.uniform(0.05, 0.2, g).astype(np.float32)
    comp = rng.choice(g, n, p=weights)
    x = means[comp] + spread[comp, None] * rng.standard_normal((n, d), dtype=np.float32)
    return l2_normalize(x, axis=1)


def cosine_objective(x: np.ndarray, centroids: np.ndarray, chunk: int = 200_000) -> float:
    """Sum of (2 - 2 max cos) = squared distance to the nearest *normalised* centroid."""
    c = l2_normalize(centroids, axis=1)
    return kmeans_inertia(x, c, chunk)


def run_method(name: str, fn, x: np.ndarray, repeats: int = 1) -> dict:
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        raw = fn()
        walls.append(round(time.perf_counter() - t0, 3))
    res = {"method": name, "wall_s": float(np.median(walls)), "wall_s_all": walls,
           "inertia_raw_centers": kmeans_inertia(x, raw),
           "inertia_normalised_centroids": cosine_objective(x, raw)}
    print(json.dumps(res), flush=True)
    return res


def faiss_defaults(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, verbose=False)
    km.train(x)
    return np.asarray(km.centroids, np.float32)


def fit_stage_rss(n_images: int, grid=(23, 46), d: int = 90, k: int = 80, max_samples: int | None = None) -> dict:
    """Child process: write n_images synthetic (D, h, w) float16 feature files, then run the
    pipeline's own fit stage on them (``collect_samples``: memory-mapped reads, per-image quotas
    of the sample budget, one preallocated sample array; then ``fit_kmeans``) and report the
    child's peak RSS. ``max_samples`` None: the default budget; 0: no total cap (the
    reference's sampling, every patch up to 2000 per image)."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    code = f"""
import os, sys, tempfile, time, numpy as np
sys.path.insert(0, {root!r})
from pathlib import Path
from pseudo_labels.core import defaults
from pseudo_labels.datasets.cityscapes import ImageEntry
from pseudo_labels.stages.semantic.clustering import fit_kmeans, fit_sample_budget
from pseudo_labels.stages.semantic.features import save_features
from pseudo_labels.stages.semantic.semantics import FeatureSource, collect_samples
tmp = tempfile.mkdtemp(prefix="bench_fit_rss_")
rng_feat = np.random.default_rng(0)
base = rng_feat.standard_normal(({d}, 8)).astype(np.float32)
entries = []
for i in range({n_images}):
    coef = rng_feat.random((8, {grid[0]} * {grid[1]}), dtype=np.float32)
    e = ImageEntry(f"bench_{{i:06d}}_000019", "bench", "val", Path(tmp) / "none.png")
    save_features(Path(tmp) / "features" / e.relative(".npy"), (base @ coef).reshape({d}, {grid[0]}, {grid[1]}))
    entries.append(e)
src = FeatureSource(os.path.join(tmp, "features"), "builtin", None, None, None, "cpu", 4)
budget = fit_sample_budget({k}, {max_samples!r})
t0 = time.perf_counter()
x, info = collect_samples(tmp, entries, src, sample_filter="uniform", samples_per_image=defaults.SAMPLES_PER_IMAGE,
                          max_samples=budget, seed=42, batch_size=4)
c = fit_kmeans(x, {k})
wall = time.perf_counter() - t0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]  # kB, this process only
import shutil; shutil.rmtree(tmp)
print(x.shape[0], wall, hwm, budget)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    res = {"n_images": n_images, "feature_grid": list(grid), "dim": d, "k": k,
           "budget": None if out[3] == "None" else int(out[3]), "n_samples": int(out[0]),
           "wall_s": round(float(out[1]), 3), "peak_rss_mib": round(int(out[2]) / 1024, 1),
           "all_features_would_be_mib": round(n_images * d * grid[0] * grid[1] * 2 / 2**20, 1)}
    print(json.dumps(res), flush=True)
    return res


def rss_table(images) -> dict:
    return {
        "note": ("peak RSS of a fresh process running the pipeline's fit stage (collect_samples + fit_kmeans, "
                 "faiss) on synthetic 90-d feature files; 'default budget' is the shipped behaviour, "
                 "'no cap' is --max-samples 0 (the previous behaviour: every patch, <= 2000 per image)"),
        "default_budget": [fit_stage_rss(n) for n in images],
        "no_cap": [fit_stage_rss(n, max_samples=0) for n in images],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/bench_kmeans.json")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=90)
    p.add_argument("--components", type=int, default=100)
    p.add_argument("--k", type=int, default=80)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--skip-sklearn", action="store_true")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each fast method (median reported)")
    p.add_argument("--sklearn-repeats", type=int, default=1)
    p.add_argument("--rss-images", type=int, nargs="*", default=[100, 500])
    p.add_argument("--rss-only", action="store_true",
                   help="only re-measure the fit-stage peak RSS and update that part of an existing --out file")
    args = p.parse_args()
    if args.rss_only:
        with open(args.out) as f:
            out = json.load(f)
        out["fit_stage_peak_rss"] = rss_table(args.rss_images)
        out["rss_command"] = "python " + " ".join(sys.argv)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)
        print("updated", args.out)
        return

    x = mixture(args.n, args.dim, args.components, args.seed)
    default = resolve_backend(defaults.KMEANS_BACKEND)
    methods = [
        (f"ours default ({default})", lambda: fit_kmeans_raw(x, args.k, "auto", args.seed)),
        ("ours torch (cpu)", lambda: fit_kmeans_raw(x, args.k, "torch", args.seed)),
        ("faiss defaults (random init, 256 pts/centroid, 25 iter)", lambda: faiss_defaults(x, args.k, args.seed)),
    ]
    if not args.skip_sklearn:
        from sklearn.cluster import MiniBatchKMeans
        from threadpoolctl import threadpool_limits

        def sklearn_1thread():
            with threadpool_limits(1):
                return MiniBatchKMeans(n_clusters=args.k, **defaults.SKLEARN_KMEANS).fit(x).cluster_centers_

        methods.append(("sklearn MiniBatchKMeans, reference settings, 1 thread (threadpoolctl)",
                        lambda: sklearn_1thread().astype(np.float32)))
        methods.append(("sklearn MiniBatchKMeans (reference: batch 10000, max_iter 300, n_init 3, rs 42)",
                        lambda: MiniBatchKMeans(n_clusters=args.k, **defaults.SKLEARN_KMEANS)
                        .fit(x).cluster_centers_.astype(np.float32)))
    results = [run_method(name, fn, x, args.sklearn_repeats if name.startswith("sklearn") else args.repeats)
               for name, fn in methods]
    summary = {}
    if not args.skip_sklearn:
        ours, sk1, sk = results[0], results[-2], results[-1]
        summary = {
            "speedup_default_vs_sklearn": round(sk["wall_s"] / ours["wall_s"], 2),
            "speedup_default_vs_sklearn_1thread": round(sk1["wall_s"] / ours["wall_s"], 2),
            "inertia_ratio_raw_centers": round(ours["inertia_raw_centers"] / sk["inertia_raw_centers"], 5),
            "inertia_ratio_normalised_centroids": round(
                ours["inertia_normalised_centroids"] / sk["inertia_normalised_centroids"], 5),
        }
        print(json.dumps(summary), flush=True)
    rss = rss_table(args.rss_images)
    out = {
        "data": {"n": args.n, "dim": args.dim, "components": args.components, "k": args.k, "seed": args.seed,
                 "kind": "Gaussian mixture, L2-normalised, float32"},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "note": "2 cores shared with other jobs; timings are noisy"},
        "defaults": {"backend": default, "threads_at_start": auto_threads(), "n_iter": defaults.KMEANS_N_ITER,
                     "init_sample": defaults.KMEANS_INIT_SAMPLE, "init_per_cluster": defaults.KMEANS_INIT_PER_CLUSTER},
        "results": results, "summary": summary, "fit_stage_peak_rss": rss,
        "command": "python " + " ".join(sys.argv),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
