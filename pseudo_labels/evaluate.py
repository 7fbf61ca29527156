"""Evaluate panoptic predictions (PQ/SQ/RQ, all / things / stuff / per class) and optionally mIoU.

Ground truth and prediction are COCO/Cityscapes panoptic (JSON + PNG folder), paired by
``image_id``. Protocol ``standard`` equals cityscapesscripts; ``reference`` reproduces the
reference repository's arithmetic at 512x1024 (see ``evaluation.panoptic``). With
``--gt-semantic-dir`` and ``--pred-semantic-dir`` the trainId PNGs found under them are
paired by Cityscapes stem and scored with mIoU too. The result JSON names its protocol
and the engine that computed it.

Engines (``--engine``): ``hotcoco`` reads and scores the PNGs in Rust (``hotcoco.panoptic``,
standard protocol only; ``--workers`` = its threads); ``numpy`` is ours (``--workers``
processes through the shared runner, Ray with ``--executor ray``); ``auto`` (default) is
hotcoco where it is installed and can do the request, else numpy. Both give the same
numbers, equal to cityscapesscripts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.core.errors import PseudoLabelsError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--gt-json", required=True, help="ground-truth panoptic JSON (e.g. gtFine/cityscapes_panoptic_val.json)")
    add_option(parser, "--gt-folder", required=True, help="folder of ground-truth panoptic PNGs")
    add_option(parser, "--pred-json", required=True, help="predicted panoptic JSON")
    add_option(parser, "--pred-folder", required=True, help="folder of predicted panoptic PNGs")
    add_option(parser, "--protocol", choices=("standard", "reference"), default=defaults.PROTOCOL,
               help="standard: = cityscapesscripts (default); reference: the reference repository's arithmetic "
                    "at 512x1024")
    add_option(parser, "--engine", choices=("auto", "numpy", "hotcoco"), default="auto",
               help="hotcoco: Rust reader/scorer (standard protocol only, --workers threads); numpy: ours "
                    "(--workers processes, or Ray); auto (default): hotcoco when installed and the request is "
                    "one it can do (standard protocol, local executor), else numpy. Same numbers either way")
    add_option(parser, "--allow-missing", action="store_true",
               help="score GT images without a prediction as all false negatives (default: error)")
    add_option(parser, "--gt-semantic-dir", default=None,
               help="optional: folder of GT trainId PNGs (*_gtFine_labelTrainIds.png) for mIoU")
    add_option(parser, "--pred-semantic-dir", default=None, help="optional: folder of predicted trainId PNGs for mIoU")
    add_option(parser, "--out", required=True, help="result JSON to write")
    add_option(parser, "--quiet", action="store_true", help="do not print the table")
    add_runner_arguments(parser, workers=1, shard=False, overwrite=False)


def format_table(result: dict) -> str:
    """Per-class table (name, PQ, SQ, RQ, TP, FP, FN) and the All / Things / Stuff summary."""
    lines = [f"protocol: {result['protocol']}   images: {result.get('n_images', '?')}"
             + (f"   engine: {result['engine']}" if result.get("engine") else "")
             + (f"   missing predictions: {result['n_missing']}" if result.get("n_missing") else ""),
             f"{'class':16s} {'PQ':>6s} {'SQ':>6s} {'RQ':>6s} {'TP':>6s} {'FP':>6s} {'FN':>6s}"]
    for name, r in result["per_class"].items():
        lines.append(f"{name:16s} {r['PQ']:6.2f} {r['SQ']:6.2f} {r['RQ']:6.2f} {r['TP']:6d} {r['FP']:6d} {r['FN']:6d}")
    lines.append("-" * 58)
    lines.append(f"{'':16s} {'PQ':>6s} {'SQ':>6s} {'RQ':>6s} {'N':>6s}")
    for label, suffix, n in (("All", "", "n_classes"), ("Things", "_things", "n_things"),
                             ("Stuff", "_stuff", "n_stuff")):
        lines.append(f"{label:16s} {result['PQ' + suffix]:6.2f} {result['SQ' + suffix]:6.2f} "
                     f"{result['RQ' + suffix]:6.2f} {result[n]:6d}")
    if "semantic" in result:
        s = result["semantic"]
        lines.append(f"mIoU {s['mIoU']:.2f}   pixel accuracy {s['pixel_accuracy']:.2f}   ({s['n_images']} images)")
    if result.get("note"):
        lines.append("note: " + result["note"])
    if result.get("engine_note"):
        lines.append("note: " + result["engine_note"])
    return "\n".join(lines)


def evaluate_semantic_dirs(gt_dir: str | Path, pred_dir: str | Path, num_classes: int = 19,
                           ignore: int = 255) -> dict:
    """mIoU of trainId PNGs paired by Cityscapes stem (GT: ``*_labelTrainIds.png`` if any, else all PNGs)."""
    from evaluation.semantic import confusion_matrix_with_misses, miou_from_confusion

    from pseudo_labels.datasets.cityscapes import CLASS_NAMES, index_by_stem
    from pseudo_labels.core.io import read_png

    gt_index = index_by_stem(gt_dir, ".png", "_labelTrainIds")
    if not gt_index:
        gt_index = index_by_stem(gt_dir, ".png")
    pred_index = index_by_stem(pred_dir, ".png")
    if not gt_index:
        raise PseudoLabelsError(f"{gt_dir}: no ground-truth trainId PNGs found")
    missing = sorted(set(gt_index) - set(pred_index))
    if missing:
        raise PseudoLabelsError(f"{pred_dir}: no semantic prediction for {len(missing)} GT image(s), e.g. {missing[0]}")
    cm = np.zeros((num_classes, num_classes), np.int64)
    miss = np.zeros(num_classes, np.int64)
    for stem in sorted(gt_index):
        gt = read_png(gt_index[stem])
        pred = read_png(pred_index[stem])
        if gt.ndim != 2 or pred.ndim != 2:
            raise PseudoLabelsError(f"{pred_index[stem] if pred.ndim != 2 else gt_index[stem]}: expected a "
                                    "single-channel trainId PNG")
        if gt.shape != pred.shape:
            raise PseudoLabelsError(f"{pred_index[stem]}: size {pred.shape[1]}x{pred.shape[0]} differs from the "
                                    f"ground truth {gt.shape[1]}x{gt.shape[0]}")
        c, m = confusion_matrix_with_misses(gt, pred, num_classes, ignore)
        cm += c
        miss += m
    out = miou_from_confusion(cm, miss)
    names = list(CLASS_NAMES) if num_classes == len(CLASS_NAMES) else [str(i) for i in range(num_classes)]
    out["per_class_iou"] = {n: (None if np.isnan(v) else v) for n, v in zip(names, out["per_class_iou"])}
    out["n_images"] = len(gt_index)
    out["convention"] = ("rows GT, 255 ignored; predictions outside 0..18 count as misses; classes with no GT and "
                         "no prediction are null and left out of the mean")
    return out


class _ScoreImage:
    """Picklable per-image scorer for the runner: evaluation errors become PseudoLabelsError (clean reports)."""

    def __init__(self, func):
        self.func = func

    def __call__(self, job):
        from evaluation.panoptic import EvaluationError

        try:
            return self.func(job)
        except EvaluationError as exc:
            raise PseudoLabelsError(str(exc)) from None


def _runner_map(options, progress: bool):
    """``map_fn`` for :func:`evaluation.panoptic.evaluate_panoptic_folders`: the shared runner (pool / Ray)."""
    from pseudo_labels.core.runner import run_per_image

    def map_fn(func, jobs):
        summary = run_per_image(_ScoreImage(func), jobs, options=options, desc="evaluate",
                                name_of=lambda job: str(job.image_id), progress=progress)
        if summary.failed:
            order = {str(job.image_id): k for k, job in enumerate(jobs)}
            messages = [m for _, m in sorted(summary.failed, key=lambda f: order.get(f[0], 0))]
            if len(messages) == 1:
                raise PseudoLabelsError(messages[0])
            more = f"; ... ({len(messages) - 3} more)" if len(messages) > 3 else ""
            raise PseudoLabelsError(f"{len(messages)} images failed: " + "; ".join(messages[:3]) + more)
        return summary.results

    return map_fn


def choose_engine(engine: str, options) -> str:
    """The engine argument for the evaluation: Ray runs the numpy engine (hotcoco is in-process only)."""
    if options.executor == "ray":
        if engine == "hotcoco":
            raise PseudoLabelsError("--engine hotcoco runs in this process with its own threads; it cannot use "
                                    "--executor ray (use --engine numpy or auto)")
        return "numpy"
    return engine


def run(args: argparse.Namespace) -> int:
    from evaluation.panoptic import EvaluationError, evaluate_panoptic_folders

    from pseudo_labels.core.io import write_json

    options = runner_options(args)
    if (args.gt_semantic_dir is None) != (args.pred_semantic_dir is None):
        raise PseudoLabelsError("--gt-semantic-dir and --pred-semantic-dir go together (give both or neither)")
    engine = choose_engine(args.engine, options)
    t0 = time.perf_counter()
    try:
        result = evaluate_panoptic_folders(args.gt_json, args.gt_folder, args.pred_json, args.pred_folder,
                                           protocol=args.protocol, workers=options.workers,
                                           allow_missing=args.allow_missing, engine=engine,
                                           map_fn=_runner_map(options, progress=not args.quiet))
    except EvaluationError as exc:
        raise PseudoLabelsError(str(exc)) from None
    if args.gt_semantic_dir is not None:
        result["semantic"] = evaluate_semantic_dirs(args.gt_semantic_dir, args.pred_semantic_dir)
    result["inputs"] = {"gt_json": str(args.gt_json), "gt_folder": str(args.gt_folder),
                        "pred_json": str(args.pred_json), "pred_folder": str(args.pred_folder)}
    result["seconds"] = round(time.perf_counter() - t0, 3)
    write_json(args.out, result)
    if not args.quiet:
        print(format_table(result))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from pseudo_labels.core.arguments import module_main

    raise SystemExit(module_main("pseudo_labels.evaluate"))
