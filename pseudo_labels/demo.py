"""Run the whole pipeline on a built-in synthetic city and print a results table.

Makes a small synthetic Cityscapes-layout city (with ground truth, disparity and
camera files), then runs every stage through the same commands a user would type:
built-in backbone features + k-means + majority mapping, depth from disparity,
depth-guided instance splitting, panoptic assembly, evaluation, a small sweep, CUPS
export, overlays and a markdown report. Each step prints its command line.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from pseudo_labels import cli
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.io import read_json

DEMO_N_IMAGES = 12
DEMO_SIZE = (512, 1024)  # (H, W): the reference's working resolution, so its A_min applies unscaled
DEMO_K = 80
DEMO_MIN_AREA = 1000  # the reference's A_min at 512x1024
DEMO_SWEEP_TAUS = ("0.1", "0.2", "0.3")
DEMO_SWEEP_MIN_AREAS = ("500", "1000", "2000")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli.add_option(parser, "--out", default="demo_out", help="output folder (default: demo_out)")
    cli.add_option(parser, "--n", type=int, default=DEMO_N_IMAGES, help="number of synthetic images")
    cli.add_option(parser, "--seed", type=int, default=0, help="seed of the synthetic city")
    cli.add_option(parser, "--workers", type=int, default=2, help="worker processes per stage")


def demo_steps(out: Path, n: int, seed: int, workers: int) -> list[tuple[str, list[str]]]:
    """The demo as (title, pseudo-labels argv) pairs."""
    city = out / "city"
    split = "val"
    sem = f"pseudo_semantic_k{DEMO_K}"
    depth = "depth_disparity"
    h, w = (str(v) for v in DEMO_SIZE)
    pan_json, pan_dir = out / "panoptic.json", out / "panoptic"
    gt_json, gt_dir = city / "gtFine" / f"cityscapes_panoptic_{split}.json", city / "gtFine" / f"cityscapes_panoptic_{split}"
    wk = ["--workers", str(workers)]
    return [
        ("synthetic city", ["synth", "--out", city, "--n", n, "--seed", seed, "--size", h, w, "--split", split]),
        (
            f"features (built-in backbone) + k-means k={DEMO_K} + majority mapping",
            ["generate-overclustered-semantics", "--cityscapes-root", city, "--split", split, "--k", DEMO_K,
             "--backbone", "builtin", "--mapping", "majority", "--output-subdir", sem, *wk],
        ),
        (
            "depth from stereo disparity (min-max normalised per image, as the reference)",
            ["generate-depth", "--cityscapes-root", city, "--split", split, "--source", "disparity",
             "--normalize", "minmax", "--output-subdir", depth, *wk],
        ),
        (
            "depth-guided instance splitting",
            ["generate-depth-guided-instances", "--semantic-dir", city / sem / split, "--depth-dir", city / depth / split,
             "--output-dir", out / "instances", "--grad-threshold", "0.20", "--min-area", DEMO_MIN_AREA,
             "--resolution", h, w, *wk],
        ),
        (
            "panoptic assembly",
            ["generate-panoptic", "--semantic-dir", city / sem / split, "--instance-dir", out / "instances",
             "--out-json", pan_json, "--out-folder", pan_dir, "--resolution", h, w, *wk],
        ),
        (
            "evaluation (standard protocol = cityscapesscripts)",
            ["evaluate", "--gt-json", gt_json, "--gt-folder", gt_dir, "--pred-json", pan_json, "--pred-folder", pan_dir,
             "--gt-semantic-dir", city / "gtFine" / split, "--pred-semantic-dir", city / sem / split,
             "--out", out / "evaluation.json", *wk],
        ),
        (
            "parameter sweep (tau x A_min)",
            ["sweep", "--cityscapes-root", city, "--split", split, "--semantic-subdir", sem, "--depth-subdir", depth,
             "--grad-thresholds", *DEMO_SWEEP_TAUS, "--min-areas", *DEMO_SWEEP_MIN_AREAS,
             "--resolution", h, w, "--out", out / "sweep.json", *wk],
        ),
        (
            "CUPS export",
            ["convert-to-cups-format", "--panoptic-dir", pan_dir, "--panoptic-json", pan_json, "--cityscapes-root", city,
             "--split", split, "--out", out / "cups", "--overwrite"],
        ),
        (
            "COCO panoptic export",
            ["export-coco", "--panoptic-dir", pan_dir, "--panoptic-json", pan_json, "--out", out / "coco", "--overwrite"],
        ),
        (
            "overlays",
            ["visualize", "--cityscapes-root", city, "--split", split, "--panoptic-dir", pan_dir, "--panoptic-json",
             pan_json, "--depth-dir", city / depth / split, "--out", out / "overlays", "--n", "4"],
        ),
        ("report", ["report", out / "sweep.json", "--out", out / "report" / "report.md", "--overlays", out / "overlays"]),
    ]


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    steps = demo_steps(out, args.n, args.seed, args.workers)
    t_start = time.perf_counter()
    timings = []
    for i, (title, argv) in enumerate(steps, 1):
        argv = [str(a) for a in argv]
        if argv[0] == "convert-to-cups-format":
            link_sequence_folder(out / "city")
        print(f"\n[{i}/{len(steps)}] {title}\n    $ pseudo-labels {shlex.join(argv)}", flush=True)
        t0 = time.perf_counter()
        rc = cli.main(argv)
        timings.append((title, time.perf_counter() - t0))
        if rc != 0:
            raise PseudoLabelsError(f"demo step {i} ({title}) failed with exit code {rc}; see the message above")
    print_summary(out, timings, time.perf_counter() - t_start)
    return 0


def link_sequence_folder(city: Path) -> None:
    """CUPS reads images from ``leftImg8bit_sequence``; the key frames have the same names."""
    seq = city / "leftImg8bit_sequence"
    if not seq.exists():
        seq.symlink_to("leftImg8bit", target_is_directory=True)
        print(f"    (linked {seq.name} -> leftImg8bit: CUPS reads its images from the sequence folder)")


def print_summary(out: Path, timings: list[tuple[str, float]], total: float) -> None:
    ev = read_json(out / "evaluation.json")
    sweep = read_json(out / "sweep.json")
    best = sweep.get("best") or max(sweep["results"], key=lambda r: r["PQ"])
    rows = [
        ("pipeline at tau=0.20", ev),
        (f"sweep best (tau={best['grad_threshold']}, A_min={best['min_area']})", best),
    ]
    print("\nResults on the synthetic city (protocol: %s)" % ev.get("protocol", "standard"))
    print(f"{'':44s} {'PQ':>6s} {'SQ':>6s} {'RQ':>6s} {'PQ_st':>6s} {'PQ_th':>6s}")
    for name, r in rows:
        print(f"{name:44s} {r['PQ']:6.2f} {r['SQ']:6.2f} {r['RQ']:6.2f} {r['PQ_stuff']:6.2f} {r['PQ_things']:6.2f}")
    if "semantic" in ev:
        print(f"semantic mIoU of the k={DEMO_K} majority-mapped clusters: {ev['semantic']['mIoU']:.2f}")
    print("\nGround truth use: the majority mapping read gtFine labels (recorded in its manifest);"
          " evaluation and sweep compare against ground truth. Everything else is label-free.")
    print("\nStep times: " + ", ".join(f"{t:.1f}s" for _, t in timings) + f"  (total {total:.1f}s)")
    print(f"\nOutputs in {out}:")
    for name, what in [
        ("city/", "synthetic Cityscapes-layout dataset"),
        (f"city/pseudo_semantic_k{DEMO_K}/", "raw clusters, semantic pseudo-labels, centroids, manifest"),
        ("city/depth_disparity/", "depth maps (.npy)"),
        ("instances/", "instance pseudo-labels"),
        ("panoptic/ + panoptic.json", "Cityscapes-panoptic pseudo-labels"),
        ("evaluation.json", "PQ/SQ/RQ per class"),
        ("sweep.json / .csv / heatmap", "parameter sweep"),
        ("cups/", "CUPS training format"),
        ("coco/", "COCO panoptic (integer image ids)"),
        ("overlays/", "per-image panels and contact sheet"),
        ("report/report.md", "markdown report"),
    ]:
        print(f"  {name:34s} {what}")


if __name__ == "__main__":
    raise SystemExit(cli.module_main("pseudo_labels.demo"))
