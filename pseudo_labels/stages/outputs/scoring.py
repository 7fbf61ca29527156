"""Whole-split scores of written predictions: panoptic PQ/SQ/RQ (and optionally mIoU) of folders.

The folder-level function of ``pseudo-labels evaluate``. The metrics are ``evaluation``'s
(:func:`evaluation.panoptic.evaluate_panoptic_folders`, equal to cityscapesscripts for the
``standard`` protocol; :mod:`evaluation.semantic` for mIoU); this module pairs the files,
runs the per-image scoring through the shared runner (local pool or Ray) and writes the
result JSON. Panoptic categories come from the ground-truth JSON; the semantic mIoU uses the
label table of ``dataset`` (class ids 0..C-1, void 255; Cityscapes: trainIds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.runner import RunOptions
from pseudo_labels.datasets import cityscapes
from pseudo_labels.datasets.base import LabelTable
from pseudo_labels.core.paths import check_json_file_names
from pseudo_labels.core.validate import validate_config

ENGINES = ("auto", "numpy", "hotcoco")
PROTOCOLS = ("standard", "reference")


@dataclass(frozen=True)
class EvaluateConfig:
    """What ``evaluate`` scores and where the result JSON goes.

    Ground truth and prediction are COCO/Cityscapes panoptic (JSON + PNG folder), paired by
    ``image_id``. ``protocol``: ``standard`` (= cityscapesscripts) or ``reference`` (the
    reference repository's arithmetic at 512x1024). ``engine``: ``hotcoco`` (Rust, standard
    protocol, in-process threads), ``numpy`` (ours, through the runner) or ``auto``.
    ``gt_semantic_dir`` + ``pred_semantic_dir`` (both or neither): class-id PNGs paired by
    stem, scored with mIoU over the classes of ``dataset``. ``progress``: show progress bars.
    ``instances``: also instance AP/AR of the thing classes (:mod:`evaluation.instances`) with
    ``instance_protocol`` ``coco`` (= pycocotools COCOeval segm), ``cityscapes`` (=
    cityscapesscripts evalInstanceLevelSemanticLabeling) or ``reference``; score = segment area.
    """

    gt_json: str
    gt_folder: str
    pred_json: str
    pred_folder: str
    out: str
    protocol: str = defaults.PROTOCOL
    engine: str = "auto"
    allow_missing: bool = False
    gt_semantic_dir: str | None = None
    pred_semantic_dir: str | None = None
    dataset: str = "cityscapes"
    progress: bool = True
    instances: bool = False
    instance_protocol: str = "coco"

    PATH_ROLES = {"out": "output_file"}  # path roles for the overlap check (issue 24)
    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)


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
    if "instances" in result:
        r = result["instances"]
        keys = [k for k in ("AP", "AP50", "AP75", "AR100") if k in r]
        lines.append(f"instances ({r['protocol']}): " + "   ".join(f"{k} {r[k]:.2f}" for k in keys)
                     + (f"   class-agnostic AP {r['class_agnostic']['AP']:.2f}" if "class_agnostic" in r else ""))
    if "semantic" in result:
        s = result["semantic"]
        lines.append(f"mIoU {s['mIoU']:.2f}   pixel accuracy {s['pixel_accuracy']:.2f}   ({s['n_images']} images)")
    if result.get("note"):
        lines.append("note: " + result["note"])
    if result.get("engine_note"):
        lines.append("note: " + result["engine_note"])
    return "\n".join(lines)


def _semantic_pairs(gt_dir: str | Path, pred_dir: str | Path) -> tuple[dict, dict]:
    """(GT stem -> PNG, prediction stem -> PNG); GT: ``*_labelTrainIds.png`` if any, else all PNGs."""
    gt_index = cityscapes.index_by_stem(gt_dir, ".png", "_labelTrainIds")
    if not gt_index:
        gt_index = cityscapes.index_by_stem(gt_dir, ".png")
    pred_index = cityscapes.index_by_stem(pred_dir, ".png")
    if not gt_index:
        raise PseudoLabelsError(f"{gt_dir}: no ground-truth trainId PNGs found")
    missing = sorted(set(gt_index) - set(pred_index))
    if missing:
        raise PseudoLabelsError(f"{pred_dir}: no semantic prediction for {len(missing)} GT image(s), e.g. {missing[0]}")
    return gt_index, pred_index


def evaluate_semantic_dirs(gt_dir: str | Path, pred_dir: str | Path, num_classes: int | None = None,
                           ignore: int | None = None, labels: LabelTable = cityscapes.LABELS) -> dict:
    """mIoU of class-id PNGs paired by Cityscapes stem (GT: ``*_labelTrainIds.png`` if any, else all PNGs).

    Classes 0..C-1 of ``labels`` (``num_classes`` / ``ignore`` override the table's count and
    void id). Returns ``evaluation.semantic.miou_from_confusion``'s dict with per-class IoU by name.
    """
    from evaluation.semantic import confusion_matrix_with_misses, miou_from_confusion

    from pseudo_labels.core.io import read_png

    num_classes = labels.num_classes if num_classes is None else num_classes
    ignore = labels.void if ignore is None else ignore
    gt_index, pred_index = _semantic_pairs(gt_dir, pred_dir)
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
    names = list(labels.names) if num_classes == labels.num_classes else [str(i) for i in range(num_classes)]
    out["per_class_iou"] = {n: (None if np.isnan(v) else v) for n, v in zip(names, out["per_class_iou"])}
    out["n_images"] = len(gt_index)
    out["convention"] = (f"rows GT, {ignore} ignored; predictions outside 0..{num_classes - 1} count as misses; "
                         "classes with no GT and no prediction are null and left out of the mean")
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


def runner_map(options: RunOptions, progress: bool):
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


def choose_engine(engine: str, options: RunOptions) -> str:
    """The engine argument for the evaluation: Ray runs the numpy engine (hotcoco is in-process only)."""
    if options.executor == "ray":
        if engine == "hotcoco":
            raise PseudoLabelsError("--engine hotcoco runs in this process with its own threads; it cannot use "
                                    "--executor ray (use --engine numpy or auto)")
        return "numpy"
    return engine


def evaluate_folders(config: EvaluateConfig, options: RunOptions | None = None) -> dict:
    """Score the prediction folder against the ground truth, write ``config.out`` and return the result.

    The result holds PQ/SQ/RQ (all / things / stuff / per class), the protocol and engine,
    optional ``semantic`` (mIoU), ``inputs`` and ``seconds``. Bad input raises
    :class:`PseudoLabelsError` naming the file.
    """
    from evaluation.panoptic import EvaluationError, evaluate_panoptic_folders

    from pseudo_labels.core.io import write_json
    from pseudo_labels.datasets import label_table

    cfg, options = config, options or RunOptions()
    if (cfg.gt_semantic_dir is None) != (cfg.pred_semantic_dir is None):
        raise PseudoLabelsError("--gt-semantic-dir and --pred-semantic-dir go together (give both or neither)")
    labels = label_table(cfg.dataset)
    engine = choose_engine(cfg.engine, options)
    t0 = time.perf_counter()
    check_json_file_names(cfg.gt_json, cfg.gt_folder)  # every PNG named stays in its folder (issue 24)
    check_json_file_names(cfg.pred_json, cfg.pred_folder)
    try:
        result = evaluate_panoptic_folders(cfg.gt_json, cfg.gt_folder, cfg.pred_json, cfg.pred_folder,
                                           protocol=cfg.protocol, workers=options.workers,
                                           allow_missing=cfg.allow_missing, engine=engine,
                                           map_fn=runner_map(options, progress=cfg.progress))
        if cfg.instances:
            from evaluation.instances import evaluate_instance_folders

            result["instances"] = evaluate_instance_folders(
                cfg.gt_json, cfg.gt_folder, cfg.pred_json, cfg.pred_folder, protocol=cfg.instance_protocol,
                allow_missing=cfg.allow_missing, map_fn=runner_map(options, progress=cfg.progress))
    except EvaluationError as exc:
        raise PseudoLabelsError(str(exc)) from None
    if cfg.gt_semantic_dir is not None:
        result["semantic"] = evaluate_semantic_dirs(cfg.gt_semantic_dir, cfg.pred_semantic_dir, labels=labels)
    result["inputs"] = {"gt_json": str(cfg.gt_json), "gt_folder": str(cfg.gt_folder),
                        "pred_json": str(cfg.pred_json), "pred_folder": str(cfg.pred_folder)}
    result["seconds"] = round(time.perf_counter() - t0, 3)
    write_json(cfg.out, result)
    return result
