"""Grid over k x tau x A_min (x sigma x dilation) of depth-guided splitting, scored by PQ.

Reads ``<root>/<semantic-subdir>/<split>/**.png`` (trainIds; or raw clusters mapped with
``<root>/<semantic-subdir>/kmeans_centroids.npz`` ``cluster_to_class``, as the reference),
``<root>/<depth-subdir>/<split>/**.npy`` and the Cityscapes panoptic ground truth
(``gtFine/cityscapes_panoptic_<split>.json`` + folder). Writes the JSON (the reference's
schema plus sigma, dilation, SQ/RQ splits and per-class numbers), a CSV next to it, one PQ
heatmap (tau x A_min) per semantic source, and prints the best configuration.
"""

from __future__ import annotations

import argparse
import csv
import functools
import sys
import time
from pathlib import Path

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.datasets.cityscapes import index_by_stem, panoptic_gt
from pseudo_labels.core.arguments import add_option, module_main, add_runner_arguments, runner_options
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.io import read_json, read_manifest, write_bytes, write_json
from pseudo_labels.core.runner import default_workers, run_per_image
from pseudo_labels.stages.sweep import CC_CELL, Grid, ImageJob, SweepSettings, best_row, result_row, summarize_cells, sweep_image

STAGE = "sweep"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--cityscapes-root", required=True, help="dataset root (Cityscapes layout)")
    parser.add_argument("--split", default="val")
    add_option(parser, "--semantic-subdir", nargs="+", required=True, action="extend",
               help="folder(s) under the root with semantic PNGs (one sweep per folder, e.g. one per k); "
                    "'gtFine' uses the GT labelTrainIds")
    add_option(parser, "--depth-subdir", default="depth_spidepth", help="folder under the root with depth .npy")
    add_option(parser, "--grad-thresholds", type=float, nargs="+", default=list(defaults.SWEEP_GRAD_THRESHOLDS))
    add_option(parser, "--min-areas", type=int, nargs="+", default=list(defaults.SWEEP_MIN_AREAS))
    add_option(parser, "--sigmas", "--depth-blur-sigma", type=float, nargs="+", default=[defaults.DEPTH_BLUR_SIGMA])
    add_option(parser, "--dilation-iters", type=int, nargs="+", default=[defaults.DILATION_ITERS])
    add_option(parser, "--connectivity", type=int, choices=(4, 8), default=defaults.CONNECTIVITY)
    add_option(parser, "--normalize", choices=("none", "minmax"), default="none")
    add_option(parser, "--resolution", type=int, nargs=2, metavar=("H", "W"), default=list(defaults.WORK_RESOLUTION),
               help="working resolution of the splitting (default %(default)s)")
    parser.add_argument("--protocol", choices=("standard", "reference"), default=defaults.PROTOCOL)
    add_option(parser, "--no-cc-baseline", action="store_true", help="skip the connected-components-only row")
    add_option(parser, "--max-images", type=int, default=None, help="first N images only (quick checks)")
    add_option(parser, "--skip-missing", action="store_true", help="skip images without semantics or depth (counted)")
    parser.add_argument("--out", required=True, help="output JSON (CSV and heatmaps are written next to it)")
    add_runner_arguments(parser, workers=default_workers(), shard=False, overwrite=False)


def load_cluster_lut(folder: Path, split: str) -> tuple[np.ndarray | None, int | None]:
    """(cluster -> trainId LUT, k) from ``folder/kmeans_centroids.npz`` or (None, None).

    The LUT is None when the per-image maps already hold trainIds, as the manifest of
    ``generate-overclustered-semantics`` (``outputs.content``) says; without a manifest
    (the reference layout) maps next to a mapped centroids file are raw cluster ids.
    """
    f = folder / "kmeans_centroids.npz"
    if not f.exists():
        return None, None
    manifest = read_manifest(folder / split) or {}
    already_mapped = manifest.get("outputs", {}).get("content") == "trainIds"
    with np.load(f) as z:
        if already_mapped:
            return None, int(len(z["centroids"]))
        if "cluster_to_class" not in z:
            raise PseudoLabelsError(f"{f}: no cluster_to_class array (map the clusters first)")
        c2c = np.asarray(z["cluster_to_class"]).astype(np.int64)
    k = len(c2c)
    lut = np.full(max(256, k + 1), 255, np.uint8)
    lut[:k] = np.where((c2c >= 0) & (c2c < 19), c2c, 255)
    if k < 255:
        lut[255] = 255
    return lut, k


def semantic_index(root: Path, subdir: str, split: str) -> dict:
    folder = root / subdir / split
    if subdir.rstrip("/") == "gtFine":
        return index_by_stem(folder, "_gtFine_labelTrainIds.png")
    return index_by_stem(folder, ".png")


def run(args: argparse.Namespace) -> int:
    t0 = time.time()
    root = Path(args.cityscapes_root)
    gt_json, gt_folder = panoptic_gt(root, args.split)
    gt = read_json(gt_json)
    anns = {a["image_id"]: a for a in gt.get("annotations", [])}
    if not anns:
        raise PseudoLabelsError(f"{gt_json}: no annotations")
    stems = sorted(anns)
    sources = list(dict.fromkeys(args.semantic_subdir))
    sem_idx = [semantic_index(root, s, args.split) for s in sources]
    luts, ks = zip(*[load_cluster_lut(root / s, args.split) for s in sources])
    depth_idx = index_by_stem(root / args.depth_subdir / args.split, ".npy")
    missing = [s for s in stems if s not in depth_idx or any(s not in ix for ix in sem_idx)]
    if missing and not args.skip_missing:
        s = missing[0]
        what = "depth map" if s not in depth_idx else "semantic map"
        raise PseudoLabelsError(f"no {what} for {len(missing)} image(s) of {gt_json.name}, e.g. {s} "
                                "(pass --skip-missing to skip them)")
    stems = [s for s in stems if s not in missing]
    if args.max_images:
        stems = stems[: args.max_images]
    if not stems:
        raise PseudoLabelsError("no image has semantics, depth and ground truth")
    if min(args.min_areas) < 1 or min(args.dilation_iters) < 0 or min(args.sigmas) < 0:
        raise PseudoLabelsError("--min-areas must be >= 1, --dilation-iters and --sigmas >= 0")

    grid = Grid(tuple(args.grad_thresholds), tuple(args.min_areas), tuple(args.sigmas), tuple(args.dilation_iters),
                cc_baseline=not args.no_cc_baseline)
    settings = SweepSettings(protocol=args.protocol, work_resolution=tuple(args.resolution),
                             connectivity=args.connectivity, normalize=args.normalize, luts=list(luts))
    jobs = [ImageJob(s, [str(ix[s]) for ix in sem_idx], str(depth_idx[s]), str(gt_folder / anns[s]["file_name"]),
                     anns[s]["segments_info"]) for s in stems]
    worker = functools.partial(sweep_image, grid=grid, settings=settings)
    summary = run_per_image(worker, jobs, options=runner_options(args), desc="sweep", name_of=lambda j: j.stem)
    summary.raise_if_failed()
    per_source = summarize_cells(summary.results, len(sources))

    eval_res = list(defaults.REFERENCE_EVAL_RESOLUTION) if args.protocol == "reference" else None
    if eval_res is None:
        from evaluation.panoptic import read_panoptic_png
        eval_res = list(read_panoptic_png(jobs[0].gt_png).shape)
    runs = []
    all_rows = []
    cells = grid.cells() + ([CC_CELL] if grid.cc_baseline else [])
    for src, k, res in zip(sources, ks, per_source):
        rows = []
        for cell in cells:
            row = result_row(cell, res[cell])
            row["semantic_subdir"] = src
            row["k"] = k
            rows.append(row)
        runs.append({"semantic_subdir": src, "k": k, "results": rows, "best": best_row(rows)})
        all_rows.extend(rows)
    best = best_row(all_rows)
    out = {
        "split": args.split,
        "k": ks[0] if len(ks) == 1 else list(ks),
        "eval_resolution": eval_res,
        "depth_subdir": args.depth_subdir,
        "protocol": args.protocol,
        "semantic_subdir": sources[0] if len(sources) == 1 else sources,
        "work_resolution": list(args.resolution),
        "grid": {"grad_thresholds": list(grid.grad_thresholds), "min_areas": list(grid.min_areas),
                 "sigmas": list(grid.sigmas), "dilation_iters": list(grid.dilation_iters),
                 "connectivity": args.connectivity, "normalize": args.normalize},
        "n_images": len(stems),
        "n_missing_skipped": len(missing),
        "uses_ground_truth": {"evaluation": "Cityscapes panoptic GT (scoring only)"},
        "results": all_rows,
        "best": best,
        "runs": runs if len(runs) > 1 else None,
        "elapsed_seconds": round(time.time() - t0, 2),
    }
    out_path = Path(args.out)
    write_json(out_path, out)
    write_csv(out_path.with_suffix(".csv"), all_rows)
    for run_ in runs:
        tag = f"k{run_['k']}" if run_["k"] is not None else Path(run_["semantic_subdir"]).name
        if len(runs) == 1:
            name = out_path.with_name(out_path.stem + "_heatmap.png")
        else:
            name = out_path.with_name(f"{out_path.stem}_heatmap_{tag}.png")
        write_heatmap(name, run_["results"], grid, run_["best"], title=f"{run_['semantic_subdir']} ({tag})")
    print_best(out, file=sys.stdout)
    return 0


def write_csv(path: Path, rows: list[dict]) -> None:
    cols = ["semantic_subdir", "k", "mode", "grad_threshold", "min_area", "sigma", "dilation_iters", "PQ", "PQ_stuff",
            "PQ_things", "SQ", "RQ", "SQ_stuff", "RQ_stuff", "SQ_things", "RQ_things", "avg_instances",
            "avg_placed_instances", "n_images"]
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for r in rows:
        w.writerow([("" if r.get(c) is None else (f"{r[c]:.4f}" if isinstance(r[c], float) else r[c])) for c in cols])
    write_bytes(path, buf.getvalue().encode())


def write_heatmap(path: Path, rows: list[dict], grid: Grid, best: dict | None, title: str = "") -> None:
    """PQ over tau (rows) x A_min (columns) at the best row's sigma / dilation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sigma = best["sigma"] if best else grid.sigmas[0]
    dil = best["dilation_iters"] if best else grid.dilation_iters[0]
    taus, areas = list(grid.grad_thresholds), list(grid.min_areas)
    pq = np.full((len(taus), len(areas)), np.nan)
    for r in rows:
        if r["mode"] == "depth-guided" and r["sigma"] == sigma and r["dilation_iters"] == dil:
            pq[taus.index(r["grad_threshold"]), areas.index(r["min_area"])] = r["PQ"]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(areas), 1.0 + 0.6 * len(taus)))
    im = ax.imshow(pq, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(areas)), [str(a) for a in areas])
    ax.set_yticks(range(len(taus)), [f"{t:g}" for t in taus])
    ax.set_xlabel("A_min (px)")
    ax.set_ylabel("tau")
    for i in range(len(taus)):
        for j in range(len(areas)):
            if np.isfinite(pq[i, j]):
                ax.text(j, i, f"{pq[i, j]:.1f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_title(f"PQ {title} sigma={sigma:g} dil={dil}", fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def print_best(out: dict, file=sys.stdout) -> None:
    b = out["best"]
    print(f"{len(out['results'])} rows, {out['n_images']} images, protocol {out['protocol']}", file=file)
    if b is None:
        print("no depth-guided configuration scored", file=file)
        return
    print(f"best: {b['semantic_subdir']} tau={b['grad_threshold']:g} A_min={b['min_area']} sigma={b['sigma']:g} "
          f"dilation={b['dilation_iters']}: PQ {b['PQ']:.2f}  PQ_st {b['PQ_stuff']:.2f}  PQ_th {b['PQ_things']:.2f}  "
          f"SQ {b['SQ']:.2f}  RQ {b['RQ']:.2f}  inst/img {b['avg_instances']:.1f}", file=file)


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.sweep_cli"))
