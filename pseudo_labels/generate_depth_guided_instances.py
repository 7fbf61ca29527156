"""Split thing classes into instances with depth edges + connected components.

Pairs semantic PNGs (trainIds, 255 void) with depth ``.npy`` maps by Cityscapes stem
(folders searched recursively, flat or ``<split>/<city>/`` layouts), resizes both to the
working resolution (semantic: nearest, PIL pixel-centre convention; depth: PIL bilinear,
as the reference), runs :func:`pseudo_labels.stages.instances.split_instances_by_depth_edges` and
writes ``<out>/<same relative folder>/<semantic file name without .png>_instance.png``
(uint16, 0 none, 1..N, at the working resolution), ``stats.json`` (the reference's
statistics) and ``manifest.json``.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.datasets.cityscapes import CLASS_NAMES, NUM_CLASSES, THING_TRAIN_IDS, index_by_stem
from pseudo_labels.core.arguments import add_option, add_runner_arguments, module_main, runner_options
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.stages.instances import (
    check_semantic_ids,
    normalize_depth_map,
    resize_depth_bilinear,
    resize_semantic,
    split_instances_by_depth_edges,
)
from pseudo_labels.core.io import is_up_to_date, prepare_output_dir, read_npy, read_png, write_json, write_manifest, write_png
from pseudo_labels.core.runner import default_workers, run_per_image

INSTANCE_SUFFIX = "_instance.png"
STAGE = "generate-depth-guided-instances"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--semantic-dir", required=True, help="semantic PNGs (trainIds, 255 void), searched recursively")
    add_option(parser, "--depth-dir", required=True, help="depth .npy maps (float, any size), searched recursively")
    add_option(parser, "--output-dir", required=True, help="output folder for instance PNGs (uint16)")
    add_option(parser, "--grad-threshold", type=float, default=defaults.GRAD_THRESHOLD,
               help="depth-gradient edge threshold tau (default %(default)s)")
    add_option(parser, "--min-area", type=int, default=defaults.MIN_AREA,
               help="minimum instance area A_min in pixels at the working resolution (default %(default)s)")
    add_option(parser, "--sigma", "--depth-blur", type=float, default=defaults.DEPTH_BLUR_SIGMA,
               help="Gaussian blur sigma before the Sobel gradient (default %(default)s)")
    add_option(parser, "--dilation-iters", type=int, default=defaults.DILATION_ITERS,
               help="boundary reclamation dilations (default %(default)s)")
    add_option(parser, "--connectivity", type=int, choices=(4, 8), default=defaults.CONNECTIVITY)
    add_option(parser, "--normalize", choices=("none", "minmax"), default="none",
               help="depth normalisation before the gradient (default none: reference maps are already min-max)")
    add_option(parser, "--resolution", type=int, nargs=2, metavar=("H", "W"), default=list(defaults.WORK_RESOLUTION),
               help="working resolution (default %(default)s, the reference's)")
    add_option(parser, "--thing-classes", default="cityscapes",
               help="'cityscapes' (trainIds 11..18), 'auto' (decided from depth statistics, for pseudo-classes) "
                    "or a comma-separated list of class ids")
    add_option(parser, "--skip-missing", action="store_true", help="skip images without a depth map (counted)")
    add_runner_arguments(parser, workers=default_workers())


def parse_thing_classes(text: str) -> list[int] | str:
    """'cityscapes' -> trainIds 11..18; 'auto' -> 'auto'; '11,13' -> [11, 13]."""
    t = text.strip().lower()
    if t == "cityscapes":
        return list(THING_TRAIN_IDS)
    if t == "auto":
        return "auto"
    try:
        ids = sorted({int(x) for x in t.replace(" ", "").split(",") if x})
    except ValueError:
        raise PseudoLabelsError(f"--thing-classes {text!r}: expected auto, cityscapes or a list like 11,12,13") from None
    if not ids or min(ids) < 0:
        raise PseudoLabelsError(f"--thing-classes {text!r}: expected non-negative class ids")
    return ids


def load_pair(sem_path, depth_path, resolution, check_ids: bool, normalize: str = "none"):
    """Read and resize one (semantic, depth) pair; errors name the file."""
    sem = read_png(sem_path)
    if sem.ndim != 2:
        raise InputFileError(sem_path, f"expected a single-channel class map, got shape {sem.shape}")
    if check_ids:
        bad = check_semantic_ids(sem)
        if bad:
            raise InputFileError(sem_path, f"unknown class ids {bad[:10]} (expected trainIds 0..18 or 255)",
                                 "map pseudo-classes to trainIds first, or pass --thing-classes auto|LIST")
    depth = read_npy(depth_path)
    depth = np.squeeze(depth)
    if depth.ndim != 2:
        raise InputFileError(depth_path, f"expected a 2-D depth map, got shape {depth.shape}")
    if not np.isfinite(depth).all():
        raise InputFileError(depth_path, "depth has NaN/infinite values", "fill invalid pixels when writing depth")
    sem = resize_semantic(sem, tuple(resolution))
    depth = resize_depth_bilinear(depth.astype(np.float32), tuple(resolution))
    depth = normalize_depth_map(depth, normalize)
    return sem, depth


def _process(item, params: dict, thing_classes: list[int], check_ids: bool) -> dict:
    stem, sem_path, depth_path, out_path = item
    sem, depth = load_pair(sem_path, depth_path, params["resolution"], check_ids, params["normalize"])
    inst = split_instances_by_depth_edges(
        sem, depth,
        grad_threshold=params["grad_threshold"], min_area=params["min_area"], sigma=params["sigma"],
        dilation_iters=params["dilation_iters"], connectivity=params["connectivity"],
        thing_classes=thing_classes,
    )
    if inst.max() > 65535:
        raise PseudoLabelsError(f"{stem}: more than 65535 instances")
    write_png(out_path, inst.astype(np.uint16))
    return _instance_stats(sem, inst)


def _instance_stats(sem: np.ndarray, inst: np.ndarray) -> dict:
    n = int(inst.max())
    per_class: dict[int, int] = {}
    if n:
        first = np.zeros(n + 1, np.int64)
        flat_i, flat_s = inst.ravel(), sem.ravel()
        first[flat_i] = flat_s  # any pixel: an instance lies in one class
        for c in first[1:]:
            per_class[int(c)] = per_class.get(int(c), 0) + 1
    return {"n": n, "per_class": per_class}


def _is_done(item) -> bool:
    return is_up_to_date(item[3], item[1], item[2])


def _stats_of_finished(item, params: dict) -> dict:
    """Statistics of an instance PNG written by an earlier (resumed) run."""
    _, sem_path, depth_path, out_path = item
    sem, _ = load_pair(sem_path, depth_path, params["resolution"], False, params["normalize"])
    return _instance_stats(sem, read_png(out_path).astype(np.int64))


def class_name(c: int) -> str:
    return CLASS_NAMES[c] if 0 <= c < NUM_CLASSES else f"class_{c}"


def run(args: argparse.Namespace) -> int:
    sem_dir, depth_dir, out_dir = Path(args.semantic_dir), Path(args.depth_dir), Path(args.output_dir)
    sems = index_by_stem(sem_dir, ".png")
    if not sems:
        raise PseudoLabelsError(f"{sem_dir}: no semantic PNGs with a Cityscapes stem (<city>_<seq>_<frame>...)")
    depths = index_by_stem(depth_dir, ".npy")
    opts = runner_options(args)
    auto = args.thing_classes.strip().lower() == "auto"
    mine = set(opts.select(sorted(sems)))  # --shard: this shard's images (by sorted stem)
    # 'auto' decides thing classes from every image, so it needs all depth maps even in a shard
    missing = [s for s in sems if s not in depths and (auto or s in mine)]
    if missing and not args.skip_missing:
        raise PseudoLabelsError(
            f"{depth_dir}: no depth map for {len(missing)} image(s), e.g. {missing[0]} "
            f"(expected {missing[0]}*.npy; pass --skip-missing to skip them)"
        )
    stems = [s for s in sems if s in depths]
    if args.grad_threshold < 0 or args.min_area < 1 or args.dilation_iters < 0 or args.sigma < 0:
        raise PseudoLabelsError("--grad-threshold and --sigma must be >= 0, --min-area >= 1, --dilation-iters >= 0")

    things = parse_thing_classes(args.thing_classes)
    thing_decision = None
    check_ids = things == list(THING_TRAIN_IDS) and args.thing_classes.strip().lower() == "cityscapes"
    if things == "auto":
        from pseudo_labels.stages.thing_stuff import decide_thing_classes_from_files

        thing_decision = decide_thing_classes_from_files(
            [sems[s] for s in stems], [depths[s] for s in stems], tuple(args.resolution),
            grad_threshold=args.grad_threshold, sigma=args.sigma, normalize=args.normalize,
        )
        things = sorted(thing_decision["thing_classes"])
        print(f"thing classes (auto): {things}", file=sys.stderr)

    params = {
        "grad_threshold": args.grad_threshold, "min_area": args.min_area, "sigma": args.sigma,
        "dilation_iters": args.dilation_iters, "connectivity": args.connectivity,
        "normalize": args.normalize, "resolution": list(args.resolution), "thing_classes": things,
        "min_new_pixels": defaults.MIN_NEW_PIXELS,
    }
    resume = prepare_output_dir(out_dir, STAGE, params, overwrite=opts.overwrite)

    items = []
    for s in (s for s in stems if s in mine):
        rel = sems[s].relative_to(sem_dir)
        out = out_dir / rel.parent / (sems[s].name[: -len(".png")] + INSTANCE_SUFFIX)
        items.append((s, str(sems[s]), str(depths[s]), str(out)))
    worker = functools.partial(_process, params=params, thing_classes=things, check_ids=check_ids)
    summary = run_per_image(worker, items, options=opts, desc="instances", name_of=lambda it: it[0],
                            is_done=_is_done if resume else None)
    summary.raise_if_failed()

    done = [r if r is not None else _stats_of_finished(it, params) for r, it in zip(summary.results, items)]
    counts = [r["n"] for r in done]
    per_class: dict[int, int] = {c: 0 for c in things}
    for r in done:
        for c, n in r["per_class"].items():
            per_class[c] = per_class.get(c, 0) + n
    stats = {
        "total_images": len(done),
        "total_instances": int(sum(counts)),
        "avg_instances_per_image": round(sum(counts) / max(len(done), 1), 2),
        "max_instances_per_image": max(counts) if counts else 0,
        "min_instances_per_image": min(counts) if counts else 0,
        "per_class_counts": {class_name(c): n for c, n in sorted(per_class.items())},
        "config": params,
        "skipped_existing": summary.skipped,
        "missing_depth": len(missing),
    }
    write_json(out_dir / "stats.json", stats)
    write_manifest(
        out_dir, STAGE, params, uses_ground_truth=False,
        inputs={"semantic_dir": str(sem_dir), "depth_dir": str(depth_dir)},
        counts={"images": len(items), "done": summary.done, "skipped_existing": summary.skipped,
                "missing_depth": len(missing), "instances": int(sum(counts))},
        extra={"thing_classes_decision": thing_decision, **opts.describe()},
    )
    msg = f"{summary.line()}; {sum(counts)} instances"
    if missing:
        msg += f"; {len(missing)} image(s) without depth skipped"
    print(msg, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.generate_depth_guided_instances"))
