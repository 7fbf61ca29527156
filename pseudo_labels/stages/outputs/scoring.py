"""Whole-split scores of written predictions: panoptic PQ/SQ/RQ (and optionally mIoU) of folders.

The folder-level function of ``pseudo-labels evaluate``. The metrics are ``evaluation``'s
(:func:`evaluation.panoptic.evaluate_panoptic_folders`, equal to cityscapesscripts for the
``standard`` protocol; :mod:`evaluation.cups` for CUPS' protocol and the STEGO-style
``stego-miou``; :mod:`evaluation.semantic` for mIoU); this module pairs the files (ground truth
found by its suffix: ``*_gtFine_instanceIds.png``, ``*_gtFine_labelTrainIds.png`` or
``*_gtFine_labelIds.png``, so the official ``gtFine`` with four files per image works), runs the
per-image scoring through the shared runner (local pool or Ray) and writes the result JSON.
Panoptic categories come from the ground-truth JSON (``cups``: from the prediction JSON, as
pseudo-classes); the semantic mIoU uses the label table of ``dataset`` (class ids 0..C-1, void
255; Cityscapes: trainIds). Predictions of another size than the ground truth are resized to it
(nearest, PIL's pixel-centre convention) and the result says so (``prediction_resized_from``).
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
from pseudo_labels.core.io import check_json_file_names
from pseudo_labels.core.validate import validate_config

ENGINES = ("auto", "numpy", "hotcoco")
PROTOCOLS = ("standard", "reference", "cups", "stego-miou")
#: gtFine suffixes, in the order they are preferred
TRAIN_IDS_SUFFIX = "_labelTrainIds.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_IDS_SUFFIX = "_gtFine_instanceIds.png"


@dataclass(frozen=True)
class EvaluateConfig:
    """What ``evaluate`` scores and where the result JSON goes.

    Ground truth and prediction are COCO/Cityscapes panoptic (JSON + PNG folder), paired by
    ``image_id``. ``protocol``: ``standard`` (= cityscapesscripts, at the GT's size),
    ``reference`` (the reference repository's arithmetic at 512x1024), ``cups`` (CUPS' metric,
    :mod:`evaluation.cups`: GT from ``<cityscapes_root>/gtFine/<split>/**/*_gtFine_instanceIds.png``,
    the prediction's categories are pseudo-classes matched per split; ``num_classes`` 27 or 19,
    ``resolution`` ``full`` or ``HxW`` such as ``640x1280``, ``one_to_one``, ``thing_stuff_split``)
    or ``stego-miou`` (semantic only: ``pred_semantic_dir`` against the same GT, Hungarian,
    320x320 centre crop; ``crop_resize`` ``torch`` as CUPS or ``pil`` as STEGO's loader).
    ``also_protocols``: score the same files under these too (``also`` in the result).
    ``engine``: ``hotcoco`` (Rust, standard protocol, in-process threads), ``numpy`` (ours,
    through the runner) or ``auto``.
    ``gt_semantic_dir`` + ``pred_semantic_dir`` (both or neither): class-id PNGs paired by
    stem, scored with mIoU over the classes of ``dataset``. ``progress``: show progress bars.
    ``instances``: also instance AP/AR of the thing classes (:mod:`evaluation.instances`) with
    ``instance_protocol`` ``coco`` (= pycocotools COCOeval segm), ``cityscapes`` (=
    cityscapesscripts evalInstanceLevelSemanticLabeling) or ``reference``; score = segment area.
    """

    gt_json: str | None = None
    gt_folder: str | None = None
    pred_json: str | None = None
    pred_folder: str | None = None
    out: str = ""
    protocol: str = defaults.PROTOCOL
    engine: str = "auto"
    allow_missing: bool = False
    gt_semantic_dir: str | None = None
    pred_semantic_dir: str | None = None
    dataset: str = "cityscapes"
    progress: bool = True
    instances: bool = False
    instance_protocol: str = "coco"
    cityscapes_root: str | None = None
    split: str = "val"
    num_classes: int = 27
    resolution: str = "full"
    one_to_one: bool = False
    thing_stuff_split: bool = True
    crop_resize: str = "torch"
    also_protocols: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from evaluation.cups import CLASS_COUNTS, RESIZES, EvaluationError, parse_resolution

        for protocol in (self.protocol, *self.also_protocols):
            if protocol not in PROTOCOLS:
                raise PseudoLabelsError(f"--protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
            need = {"standard": ("gt_json", "gt_folder", "pred_json", "pred_folder"),
                    "reference": ("gt_json", "gt_folder", "pred_json", "pred_folder"),
                    "cups": ("cityscapes_root", "pred_json", "pred_folder"),
                    "stego-miou": ("cityscapes_root", "pred_semantic_dir")}[protocol]
            missing = [n for n in need if not getattr(self, n)]
            if missing:
                hint = (" (the official zips hold no panoptic GT: `pseudo-labels prepare-gt --cityscapes-root R "
                        "--out C` makes C/gtFine/cityscapes_panoptic_<split>.json and its PNG folder)"
                        if "gt_json" in missing or "gt_folder" in missing else "")
                raise PseudoLabelsError(f"--protocol {protocol} needs " + ", ".join(
                    "--" + n.replace("_", "-") for n in missing) + hint)
        if not self.out:
            raise PseudoLabelsError("--out: the result JSON to write is required")
        if self.num_classes not in CLASS_COUNTS:
            raise PseudoLabelsError(f"--num-classes {self.num_classes}: CUPS' protocol has 27 or 19 classes")
        if self.crop_resize not in RESIZES:
            raise PseudoLabelsError(f"--crop-resize {self.crop_resize!r}: choose {' or '.join(RESIZES)}")
        try:
            parse_resolution(self.resolution)
        except EvaluationError as exc:
            raise PseudoLabelsError(f"--resolution: {exc}") from None
        validate_config(self)  # one check for flags and TOML (issue 24)

    PATH_ROLES = {"out": "output_file"}  # path roles for the overlap check (issue 24)


def format_table(result: dict) -> str:
    """Per-class table (name, PQ, SQ, RQ, TP, FP, FN) and the All / Things / Stuff summary."""
    if result["protocol"] == "stego-miou":
        c = result["semantic_crop"]
        return (f"protocol: stego-miou   images: {result['n_images']}   classes: {result['num_classes']}   "
                f"pseudo-classes: {result['num_pseudo_classes']}\n"
                f"mIoU {c['mIoU']:.2f}   accuracy {c['accuracy']:.2f}   ({c['what']})\n"
                f"at the evaluation resolution: mIoU {result['matched_semantic']['mIoU']:.2f}   "
                f"accuracy {result['matched_semantic']['accuracy']:.2f}")
    head = (f"   classes: {result['num_classes']}   resolution: {result['resolution']}"
            if result["protocol"] == "cups" else "")
    lines = [f"protocol: {result['protocol']}   images: {result.get('n_images', '?')}" + head
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
    if "matched_semantic" in result:
        m, c = result["matched_semantic"], result.get("semantic_crop")
        lines.append(f"CUPS mIoU {m['mIoU']:.2f}   accuracy {m['accuracy']:.2f}"
                     + (f"   (320x320 crop: mIoU {c['mIoU']:.2f}   accuracy {c['accuracy']:.2f})" if c else ""))
    if result.get("prediction_resized_from"):
        lines.append(f"predictions resized from {result['prediction_resized_from']} to the ground truth's size")
    if "semantic" in result:
        s = result["semantic"]
        lines.append(f"mIoU {s['mIoU']:.2f}   pixel accuracy {s['pixel_accuracy']:.2f}   ({s['n_images']} images)")
    for protocol, r in result.get("also", {}).items():
        if "PQ" in r:
            lines.append(f"also {protocol}: PQ {r['PQ']:.2f}   SQ {r['SQ']:.2f}   RQ {r['RQ']:.2f}   "
                         f"PQ_th {r['PQ_things']:.2f}   PQ_st {r['PQ_stuff']:.2f}")
        else:
            lines.append(f"also {protocol}: mIoU {r['mIoU']:.2f}   accuracy {r['accuracy']:.2f}")
    if result.get("note"):
        lines.append("note: " + result["note"])
    if result.get("engine_note"):
        lines.append("note: " + result["engine_note"])
    return "\n".join(lines)


def gt_semantic_index(gt_dir: str | Path, labels: LabelTable = cityscapes.LABELS) -> dict[str, Path]:
    """GT stem -> PNG found by suffix: ``*_labelTrainIds.png`` first, else ``*_gtFine_labelIds.png``
    (Cityscapes only; :func:`~pseudo_labels.datasets.cityscapes.read_train_ids_file` maps those to
    trainIds); a folder with neither (other data sets, flat folders): every PNG, one per stem."""
    index = cityscapes.index_by_stem(gt_dir, LABEL_IDS_SUFFIX) if labels == cityscapes.LABELS else {}
    index.update(cityscapes.index_by_stem(gt_dir, TRAIN_IDS_SUFFIX))
    if not index:
        index = cityscapes.index_by_stem(gt_dir, ".png")
    if not index:
        raise PseudoLabelsError(f"{gt_dir}: no ground-truth PNGs found (*{TRAIN_IDS_SUFFIX} or *{LABEL_IDS_SUFFIX})")
    return index


def _semantic_pairs(gt_dir: str | Path, pred_dir: str | Path, labels: LabelTable) -> tuple[dict, dict]:
    """(GT stem -> PNG, prediction stem -> PNG); every GT image needs a prediction."""
    gt_index = gt_semantic_index(gt_dir, labels)
    pred_index = cityscapes.index_by_stem(pred_dir, ".png")
    missing = sorted(set(gt_index) - set(pred_index))
    if missing:
        raise PseudoLabelsError(f"{pred_dir}: no semantic prediction for {len(missing)} GT image(s), e.g. {missing[0]}")
    return gt_index, pred_index


def evaluate_semantic_dirs(gt_dir: str | Path, pred_dir: str | Path, num_classes: int | None = None,
                           ignore: int | None = None, labels: LabelTable = cityscapes.LABELS) -> dict:
    """mIoU of class-id PNGs paired by Cityscapes stem (GT found by suffix: :func:`gt_semantic_index`).

    Classes 0..C-1 of ``labels`` (``num_classes`` / ``ignore`` override the table's count and
    void id). A prediction of another size is resized to the GT's (nearest, PIL pixel-centre;
    recorded as ``prediction_resized_from``). Returns ``evaluation.semantic.miou_from_confusion``'s
    dict with per-class IoU by name.
    """
    from evaluation.pq_stats import EvaluationError
    from evaluation.resize import check_aspect, resize_nearest
    from evaluation.semantic import confusion_matrix_with_misses, miou_from_confusion

    from pseudo_labels.core.io import read_png

    num_classes = labels.num_classes if num_classes is None else num_classes
    ignore = labels.void if ignore is None else ignore
    gt_index, pred_index = _semantic_pairs(gt_dir, pred_dir, labels)
    cm = np.zeros((num_classes, num_classes), np.int64)
    miss = np.zeros(num_classes, np.int64)
    resized: set[str] = set()
    n_resized = 0
    for stem in sorted(gt_index):
        gt_file = gt_index[stem]
        gt = cityscapes.read_train_ids_file(gt_file) if labels == cityscapes.LABELS else read_png(gt_file)
        pred = read_png(pred_index[stem])
        if gt.ndim != 2 or pred.ndim != 2:
            raise PseudoLabelsError(f"{pred_index[stem] if pred.ndim != 2 else gt_file}: expected a "
                                    "single-channel class-id PNG")
        if gt.shape != pred.shape:
            try:
                check_aspect(pred.shape, gt.shape, pred_index[stem])
            except EvaluationError as exc:
                raise PseudoLabelsError(str(exc)) from None
            resized.add(f"{pred.shape[1]}x{pred.shape[0]}")
            n_resized += 1
            pred = resize_nearest(pred, gt.shape)
        c, m = confusion_matrix_with_misses(gt, pred, num_classes, ignore)
        cm += c
        miss += m
    out = miou_from_confusion(cm, miss)
    names = list(labels.names) if num_classes == labels.num_classes else [str(i) for i in range(num_classes)]
    out["per_class_iou"] = {n: (None if np.isnan(v) else v) for n, v in zip(names, out["per_class_iou"])}
    out["n_images"] = len(gt_index)
    if resized:
        out["prediction_resized_from"] = sorted(resized)[0] if len(resized) == 1 else sorted(resized)
        out["n_predictions_resized"] = n_resized
    out["convention"] = (f"rows GT, {ignore} ignored; predictions outside 0..{num_classes - 1} count as misses; "
                         "classes with no GT and no prediction are null and left out of the mean; predictions "
                         "of another size are nearest-resized (PIL pixel-centre) to the GT's size")
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
    optional ``semantic`` (mIoU), ``inputs`` and ``seconds``; with ``also_protocols``, the
    results of those protocols on the same files under ``also`` (by protocol name). Bad input
    raises :class:`PseudoLabelsError` naming the file.
    """
    import dataclasses

    from pseudo_labels.core.io import write_json

    options = options or RunOptions()
    t0 = time.perf_counter()
    result = _score(config, options)
    also = {}
    for protocol in dict.fromkeys(config.also_protocols):
        if protocol != config.protocol:
            keep = config.pred_semantic_dir if protocol == "stego-miou" else None
            also[protocol] = _score(dataclasses.replace(config, protocol=protocol, also_protocols=(),
                                                        gt_semantic_dir=None, pred_semantic_dir=keep), options)
    if also:
        result["also"] = also
    result["seconds"] = round(time.perf_counter() - t0, 3)
    write_json(config.out, result)
    return result


def _score(cfg: EvaluateConfig, options: RunOptions) -> dict:
    """The result of one protocol (not written)."""
    from evaluation.panoptic import EvaluationError, evaluate_panoptic_folders

    from pseudo_labels.datasets import label_table

    if cfg.protocol in ("cups", "stego-miou"):
        return _evaluate_cups(cfg, options)
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
    return result


# --------------------------------------------------------------------------- CUPS' protocol
def gt_instance_index(root: str | Path, split: str) -> dict[str, Path]:
    """Stem -> ``gtFine/<split>/**/*_gtFine_instanceIds.png`` (``*_gtFine_labelIds.png`` where no
    instanceIds exist: classes without instances), found by suffix among the official four files."""
    folder = Path(root) / "gtFine" / split
    if not folder.is_dir():
        raise PseudoLabelsError(f"{folder}: no such folder (the Cityscapes gtFine/<split>/<city>/ layout expected)")
    index = cityscapes.index_by_stem(folder, LABEL_IDS_SUFFIX)
    index.update(cityscapes.index_by_stem(folder, INSTANCE_IDS_SUFFIX))
    if not index:
        raise PseudoLabelsError(f"{folder}: no *{INSTANCE_IDS_SUFFIX} (or *{LABEL_IDS_SUFFIX}) files")
    return index


def _cups_jobs(cfg: EvaluateConfig) -> tuple[list, list | None]:
    """(jobs, prediction categories or None) for ``cups`` / ``stego-miou``; every GT image needs a prediction."""
    from evaluation.cups import CupsJob

    from pseudo_labels.core.io import read_json

    gt_index = gt_instance_index(cfg.cityscapes_root, cfg.split)
    if cfg.protocol == "stego-miou":
        pred_index = cityscapes.index_by_stem(cfg.pred_semantic_dir, ".png")
        missing = sorted(set(gt_index) - set(pred_index))
        if missing and not cfg.allow_missing:
            raise PseudoLabelsError(f"{cfg.pred_semantic_dir}: no semantic prediction for {len(missing)} GT "
                                    f"image(s), e.g. {missing[0]} (--allow-missing scores only those present)")
        return [CupsJob(stem, str(gt_index[stem]), str(pred_index[stem])) for stem in sorted(gt_index)
                if stem in pred_index], None
    data = read_json(cfg.pred_json)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
            or not isinstance(data.get("categories"), list):
        raise PseudoLabelsError(f"{cfg.pred_json}: a COCO panoptic JSON with 'annotations' and 'categories' expected")
    preds = {}
    for a in data["annotations"]:
        if not isinstance(a, dict) or "file_name" not in a or not isinstance(a.get("segments_info"), list):
            raise PseudoLabelsError(f"{cfg.pred_json}: malformed annotation {str(a)[:120]}")
        stem = cityscapes.stem_of(str(a.get("image_id", ""))) or cityscapes.stem_of(a["file_name"])
        if stem is None:
            raise PseudoLabelsError(f"{cfg.pred_json}: annotation {a['file_name']} names no Cityscapes image")
        preds[stem] = a
    missing = sorted(set(gt_index) - set(preds))
    if missing and not cfg.allow_missing:
        raise PseudoLabelsError(f"{cfg.pred_json}: no prediction for {len(missing)} GT image(s), e.g. {missing[0]} "
                                "(--allow-missing scores only the images predicted: under CUPS' rules an image "
                                "predicted all void adds nothing)")
    folder = Path(cfg.pred_folder)
    jobs = [CupsJob(stem, str(gt_index[stem]), str(folder / preds[stem]["file_name"]), preds[stem]["segments_info"])
            for stem in sorted(gt_index) if stem in preds]
    return jobs, data["categories"]


def _evaluate_cups(cfg: EvaluateConfig, options: RunOptions) -> dict:
    """``cups`` / ``stego-miou``: :func:`evaluation.cups.evaluate_cups` on the split (not written)."""
    from evaluation.cups import evaluate_cups
    from evaluation.pq_stats import EvaluationError

    from pseudo_labels.datasets import label_table

    t0 = time.perf_counter()
    jobs, categories = _cups_jobs(cfg)
    n_gt = len(gt_instance_index(cfg.cityscapes_root, cfg.split))
    try:
        result = evaluate_cups(jobs, categories, num_classes=cfg.num_classes, resolution=cfg.resolution,
                               one_to_one=cfg.one_to_one, thing_stuff_split=cfg.thing_stuff_split,
                               crop_resize=cfg.crop_resize, map_fn=runner_map(options, progress=cfg.progress))
    except EvaluationError as exc:
        raise PseudoLabelsError(str(exc)) from None
    result["n_missing"] = n_gt - len(jobs)
    if cfg.protocol == "cups" and cfg.gt_semantic_dir is not None and cfg.pred_semantic_dir is not None:
        result["semantic"] = evaluate_semantic_dirs(cfg.gt_semantic_dir, cfg.pred_semantic_dir,
                                                    labels=label_table(cfg.dataset))
    result["inputs"] = {"cityscapes_root": str(cfg.cityscapes_root), "split": cfg.split,
                        "pred_json": str(cfg.pred_json), "pred_folder": str(cfg.pred_folder),
                        "pred_semantic_dir": str(cfg.pred_semantic_dir)}
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result
