"""Benchmark: seconds per 2048x1024 image per core of every per-image stage of the default chain.

On N synthetic 1024x2048 images of the official Cityscapes layout (``synth --layout official``:
what the four official zips hold; the panoptic GT and trainIds that scoring reads are made by
cityscapesscripts into a cache, as ``prepare-gt`` does), every per-image stage after the
features, on ONE thread (torch, BLAS and OpenMP limited to 1):

* PNG read (leftImg8bit RGB), depth from disparity (PNG + camera -> metres, invalid filled);
* assignment (``assign_clusters``, bilinear similarity upsampling then argmax) from a 23x46
  patch grid at k = 80 and k = 300, fast and straightforward (all k maps resized by torch) in
  the same run, labels checked identical;
* cluster statistics (pixels per cluster, confusion with GT for the majority mapping),
  cluster -> class map (``apply_mapping``);
* depth split at the working resolution 512x1024 (resizes + ``split_instances_by_depth_edges``
  at the reference defaults), panoptic assembly (``panoptic_for_image``: 1024x2048 output),
  also as it was before issue 27 (segments by ``np.unique``), outputs checked identical;
* PNG writes (raw clusters, semantics, instances, panoptic);
* evaluation at full resolution (PQ accumulators ``pq_stats_image`` at 1024x2048, standard
  protocol, numpy engine, GT PNG read included; semantic confusion matrix).

Features come from the built-in backbone on the same images (23x46 grid, 37-d), centroids
from k-means on them: a stand-in for DINOv2 / CAUSE features with the same grid and output
size. Each stage is repeated (``--repeat``; the straightforward assignment fewer times) and
the minimum CPU time and minimum wall time per image are kept (the machine is shared: CPU
time counts only time on a core; wall is also given); projections use the CPU minimum.

    PYTHONPATH=$PWD python3 benchmarks/bench_fullres.py --n 2 --out benchmarks/results/bench_fullres.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = (1024, 2048)
WORK = (512, 1024)
TRAIN_IMAGES = 2975
KS = (80, 300)


def make_city(root: Path, n: int, seed: int) -> Path:
    """A synthetic city in the official Cityscapes layout (``synth --layout official``) plus
    its derived GT (panoptic, trainIds) made by cityscapesscripts into ``<root>/gt_cache``.
    Returns the cache root."""
    from pseudo_labels.datasets.cityscapes_gt import prepare_ground_truth
    from pseudo_labels.datasets.synthetic_city import SyntheticCityConfig, write_synthetic_city_config

    write_synthetic_city_config(root / "city", SyntheticCityConfig(n=n, seed=seed, size=SIZE, layout="official"),
                                split="val")
    cache = root / "gt_cache"
    prepare_ground_truth(root / "city", "val", cache)
    return cache


def panoptic_before(sem: np.ndarray, inst: np.ndarray):
    """``panoptic_for_image(sem, inst, 64, None)`` as it was before issue 27: segments by
    ``np.unique`` (a sort) at 512x1024 and again on the resized 1024x2048 map."""
    from scipy import ndimage

    from pseudo_labels.stages.instance import panoptic as P

    def unique_segments(pan):
        ids, inverse = np.unique(pan, return_inverse=True)
        inverse = inverse.reshape(pan.shape)
        areas = np.bincount(inverse.ravel(), minlength=len(ids))
        return P._segment_dicts(ids, areas, ndimage.find_objects(inverse + 1))

    saved = P.panoptic_segments
    P.panoptic_segments = unique_segments  # what assemble_panoptic calls
    try:
        pan, segs = P.assemble_panoptic(P.resize_semantic(sem, inst.shape), inst, 64)
    finally:
        P.panoptic_segments = saved
    pan = P.resize_panoptic(pan, sem.shape)
    return pan, unique_segments(pan)


def timed(fn, repeat: int):
    """(result, min CPU s, min wall s, median wall s) of ``repeat`` calls of ``fn``."""
    cpu, wall, out = [], [], None
    for _ in range(max(1, repeat)):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return out, min(cpu), min(wall), float(np.median(wall))


class Stages:
    """Per-stage timings summed over images (divided by the image count at the end)."""

    def __init__(self):
        self.rows: dict[str, dict] = {}

    def run(self, name: str, fn, repeat: int, note: str = ""):
        out, cpu, wall, med = timed(fn, repeat)
        r = self.rows.setdefault(name, {"cpu_s": 0.0, "wall_s": 0.0, "wall_median_s": 0.0, "images": 0,
                                        "repeats": repeat, "note": note})
        r["cpu_s"] += cpu
        r["wall_s"] += wall
        r["wall_median_s"] += med
        r["images"] += 1
        return out

    def per_image(self) -> dict:
        return {name: {"cpu_s": round(r["cpu_s"] / r["images"], 4), "wall_s": round(r["wall_s"] / r["images"], 4),
                       "wall_median_s": round(r["wall_median_s"] / r["images"], 4), "repeats": r["repeats"],
                       "note": r["note"]}
                for name, r in self.rows.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2, help="images (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="repeats per stage (default 3)")
    ap.add_argument("--repeat-straightforward", type=int, default=2,
                    help="repeats of the straightforward assignment (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/bench_fullres.json"))
    args = ap.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    from evaluation.panoptic import normalize_categories, pq_stats_image, read_panoptic_png
    from evaluation.semantic import confusion_matrix
    from pseudo_labels.core.io import read_image_rgb, read_json, read_png, write_npy, write_png
    from pseudo_labels.datasets.cityscapes import LABELS, list_images
    from pseudo_labels.stages.instance.depth import depth_from_disparity, read_camera
    from pseudo_labels.stages.instance.instances import split_instances_by_depth_edges
    from pseudo_labels.stages.instance.maps import resize_depth_bilinear, resize_semantic
    from pseudo_labels.stages.instance.panoptic import panoptic_categories, panoptic_for_image, write_panoptic_png
    from pseudo_labels.stages.semantic.clustering import (
        _assign_clusters_straightforward, assign_clusters, cluster_png_array, fit_kmeans,
    )
    from pseudo_labels.stages.semantic.features import builtin_features, resize_image
    from pseudo_labels.stages.semantic.mapping import apply_mapping, cluster_confusion, map_clusters

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_fullres_") as tmp, threadpool_limits(1):
        tmp = Path(tmp)
        cache = make_city(tmp, args.n, args.seed)
        data_s = time.perf_counter() - t0
        root = tmp / "city"
        entries = list_images(root, "val")
        gt_json = read_json(cache / "gtFine" / "cityscapes_panoptic_val.json")
        gt_segments = {a["file_name"]: a["segments_info"] for a in gt_json["annotations"]}
        categories = normalize_categories(panoptic_categories(LABELS))

        # features (built-in backbone, 23x46) and centroids: set-up, not timed
        feats = [builtin_features(resize_image(read_image_rgb(e.image_path), (322, 644))) for e in entries]
        sample = np.concatenate([f.reshape(f.shape[0], -1).T for f in feats])
        gts = [read_png(cache / "gtFine" / "val" / e.city / f"{e.stem}_gtFine_labelTrainIds.png") for e in entries]
        centroids, mapping = {}, {}
        for k in KS:
            centroids[k] = fit_kmeans(sample, k, backend="torch", seed=0, threads=1)
        assign_clusters(feats[0], centroids[KS[0]], (64, 128))  # warm-up (imports, torch kernel probes)

        st = Stages()
        r = args.repeat
        identical, n_labels = {}, {}
        for i, e in enumerate(entries):
            out_dir = tmp / "out" / e.stem
            out_dir.mkdir(parents=True)
            st.run("png_read_image", lambda: read_image_rgb(e.image_path), r, "leftImg8bit RGB 1024x2048")
            depth = st.run("depth_from_disparity", lambda: depth_from_disparity(
                read_png(root / "disparity" / "val" / e.city / f"{e.stem}_disparity.png"),
                read_camera(root / "camera" / "val" / e.city / f"{e.stem}_camera.json")), r,
                "disparity PNG + camera -> metres, invalid filled (nearest)")
            st.run("png_write_depth_npy", lambda: write_npy(out_dir / "depth.npy", depth), r, "float32 1024x2048")
            clusters = {}
            for k in KS:
                fast = st.run(f"assign_k{k}", lambda: assign_clusters(feats[i], centroids[k], SIZE), r,
                              "23x46 grid -> 1024x2048, exact labels")
                ref = st.run(f"assign_k{k}_straightforward",
                             lambda: _assign_clusters_straightforward(feats[i], centroids[k], SIZE),
                             args.repeat_straightforward, "all k maps resized by torch (8 per call), argmax")
                identical[f"k{k}"] = identical.get(f"k{k}", True) and bool(np.array_equal(fast, ref))
                n_labels.setdefault(f"k{k}", []).append(int(len(np.unique(fast))))
                clusters[k] = fast
                st.run(f"png_write_raw_clusters_k{k}",
                       lambda: write_png(out_dir / f"raw_k{k}.png", cluster_png_array(fast, k)), r,
                       "uint8 (k<=255) / uint16")
            k = KS[0]
            conf = st.run("cluster_statistics", lambda: (np.bincount(clusters[k].ravel(), minlength=k),
                                                         cluster_confusion(clusters[k], gts[i], k, 19)), r,
                          f"k={k}: pixels per cluster + confusion with GT trainIds (majority mapping input)")[1]
            mapping[k] = map_clusters(conf, "majority")
            sem = st.run("cluster_to_class_map", lambda: apply_mapping(clusters[k], mapping[k]), r,
                         f"k={k}, apply_mapping at 1024x2048")
            st.run("png_write_semantic", lambda: write_png(out_dir / "sem.png", sem), r, "uint8 trainIds 1024x2048")

            def split():
                s = resize_semantic(sem, WORK)
                d = resize_depth_bilinear(depth, WORK)
                return split_instances_by_depth_edges(s, d)

            inst = st.run("depth_split_512x1024", split, r,
                          "resize semantic (nearest) + depth (bilinear) to 512x1024, tau 0.20, A_min 1000")
            st.run("png_write_instances", lambda: write_png(out_dir / "inst.png", inst.astype(np.uint16)), r,
                   "uint16 512x1024")
            pan, segs = st.run("panoptic_assembly", lambda: panoptic_for_image(sem, inst, 64, None), r,
                               "stuff >= 64 px + instances, resized to 1024x2048, segments")
            pan0, segs0 = st.run("panoptic_assembly_before", lambda: panoptic_before(sem, inst), r,
                                 "the same before issue 27: np.unique segments at 512x1024 and 1024x2048")
            identical["panoptic"] = identical.get("panoptic", True) and bool(np.array_equal(pan0, pan)) \
                and segs0 == segs
            st.run("png_write_panoptic", lambda: write_panoptic_png(out_dir / "pan.png", pan), r,
                   "COCO panoptic RGB 1024x2048")
            gt_name = f"{e.stem}_gtFine_panoptic.png"

            def evaluate():
                gt_pan = read_panoptic_png(cache / "gtFine" / "cityscapes_panoptic_val" / gt_name)
                return pq_stats_image(gt_pan, gt_segments[gt_name], pan, segs, categories, "standard")

            st.run("evaluate_pq_full_res", evaluate, r, "standard protocol, numpy engine, GT PNG read included")
            st.run("evaluate_semantic_confusion", lambda: confusion_matrix(gts[i], sem, 19), r,
                   "19-class confusion at 1024x2048")

    per = st.per_image()
    chain = ["png_read_image", "depth_from_disparity", "png_write_depth_npy", "cluster_statistics",
             "cluster_to_class_map", "png_write_semantic", "depth_split_512x1024", "png_write_instances",
             "panoptic_assembly", "png_write_panoptic", "evaluate_pq_full_res", "evaluate_semantic_confusion"]
    totals, projection, ratios = {}, {}, {}
    for k in KS:
        rest = sum(per[s]["cpu_s"] for s in chain) + per[f"png_write_raw_clusters_k{k}"]["cpu_s"]
        before = rest + per[f"assign_k{k}_straightforward"]["cpu_s"] + per["panoptic_assembly_before"]["cpu_s"] \
            - per["panoptic_assembly"]["cpu_s"]
        after = rest + per[f"assign_k{k}"]["cpu_s"]
        totals[f"k{k}"] = {"before_s": round(before, 3), "after_s": round(after, 3)}
        projection[f"k{k}"] = {"before_core_hours": round(before * TRAIN_IMAGES / 3600, 2),
                               "after_core_hours": round(after * TRAIN_IMAGES / 3600, 2),
                               "assignment_only_before_core_hours": round(
                                   per[f"assign_k{k}_straightforward"]["cpu_s"] * TRAIN_IMAGES / 3600, 2),
                               "assignment_only_after_core_hours": round(
                                   per[f"assign_k{k}"]["cpu_s"] * TRAIN_IMAGES / 3600, 3)}
        ratios[f"k{k}"] = {
            "fast_over_straightforward_cpu": round(per[f"assign_k{k}"]["cpu_s"]
                                                   / per[f"assign_k{k}_straightforward"]["cpu_s"], 4),
            "fast_over_straightforward_wall": round(per[f"assign_k{k}"]["wall_s"]
                                                    / per[f"assign_k{k}_straightforward"]["wall_s"], 4),
        }
    result = {
        "benchmark": "bench_fullres",
        "command": "PYTHONPATH=$PWD python3 benchmarks/bench_fullres.py " + " ".join(sys.argv[1:]),
        "n_images": args.n,
        "image_size": list(SIZE),
        "working_resolution": list(WORK),
        "feature_grid": list(feats[0].shape[1:]),
        "feature_dim": int(feats[0].shape[0]),
        "data": "synthetic city, official layout (synth --layout official) + prepare-gt cache (cityscapesscripts)",
        "data_generation_s": round(data_s, 1),
        "threads": 1,
        "timing": f"per image: min over repeats of CPU time (process_time) and of wall time, "
                  f"averaged over the {args.n} images; the machine was shared",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_1min_at_end": round(os.getloadavg()[0], 2), "torch": torch.__version__,
                    "numpy": np.__version__},
        "chain_stages": chain + ["png_write_raw_clusters_k<k>", "assign_k<k> (after) or "
                                 "assign_k<k>_straightforward + panoptic_assembly_before - panoptic_assembly (before)"],
        "identical_outputs": identical,
        "distinct_labels_per_image": n_labels,
        "seconds_per_image": per,
        "assignment_ratio": ratios,
        "chain_seconds_per_image_cpu": totals,
        "projected_core_hours_2975_images": projection,
        "total_run_s": round(time.perf_counter() - t0, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(s) for s in per)
    print(f"{'stage':{width}}  cpu_s   wall_s")
    for name, row in per.items():
        print(f"{name:{width}}  {row['cpu_s']:.4f}  {row['wall_s']:.4f}")
    print(json.dumps({"identical": identical, "ratios": ratios, "totals": totals, "core_hours": projection}))
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
