"""Semantic pseudo-labels from a trained CAM run, scored by mIoU when ground truth exists.

:func:`generate_cam_pseudolabels` does what ``pseudo-labels generate-cam-pseudolabels`` does:
with ``sweep_deal_weights`` it runs the sweep (:func:`pseudo_labels.stages.weak.sweep.sweep_cam`),
otherwise it writes label maps (:func:`write_cam_labels`):

- ``<root>/<output_subdir>/<split>/<city>/<stem>.png``: uint8 Cityscapes trainIds with
  255 = background/unlabelled, or VOC ids with 0 = background (label space of the run);
- ``manifest.json``; ``cam_eval.json`` (mIoU, per-class IoU, coverage over the whole split,
  written once every image of every shard is done).

Per image: CAMs at the patch grid, ReLU + per-class max normalisation, bilinear upsampling,
a constant background score ``bg_threshold``, argmax over background + the allowed classes
(:func:`pseudo_labels.stages.weak.masks.cam_scores_for_image`, ``labels_from_scores``), then
optional depth-edge snapping. Allowed classes: the image's tags (``tags_file`` /
``tags_from_gt``) or the classifier's predictions. Images run through the shared runner; a
rerun skips label maps newer than the run's checkpoint and the image's cached features.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.io import (is_up_to_date, prepare_output_dir, read_image_rgb, read_png, write_json,
                                   write_manifest, write_png)
from pseudo_labels.core.runner import RunOptions, run_per_image
from pseudo_labels.datasets.cityscapes import ImageEntry, gt_train_ids_file, list_images, read_train_ids_file
from pseudo_labels.stages.semantic.features import build_extractor, load_features
from pseudo_labels.stages.weak.cam import CHECKPOINT_NAME, head_from_checkpoint, load_checkpoint
from pseudo_labels.stages.weak.inputs import DISPARITY, depth_index, ensure_cached_features, load_depth, load_tags
from pseudo_labels.stages.weak.masks import (cam_scores_for_image, eval_class_names, extended_confusion,
                                             labels_from_scores, scores_from_confusion)
from pseudo_labels.stages.weak.sweep import sweep_cam

STAGE = "generate-cam-pseudolabels"


@dataclass
class CamLabelConfig:
    """Settings of ``generate-cam-pseudolabels``.

    ``run``: run folder of train-cam (or its checkpoint file). ``output_subdir``: output folder
    under ``cityscapes_root`` (needed unless sweeping). ``bg_threshold``: normalised CAM score at
    or below which a pixel is background. Tags restricting each image's classes: ``tags_file`` or
    ``tags_from_gt`` (uses ground truth), else predicted. ``refine_depth_subdir``: snap boundaries
    to depth edges (``.npy`` folder under the root, or ``disparity``) within ``refine_band`` px.
    Sweep (instead of label maps) when ``sweep_deal_weights`` is given: one head per weight x
    ``sweep_seeds`` (default the run's seed), every ``sweep_bg_thresholds`` scored; DEAL depth
    ``depth_subdir`` (default the run's); results in ``sweep_out`` (default ``RUN/cam_sweep.json``).
    """

    run: str | os.PathLike
    cityscapes_root: str | os.PathLike
    split: str = "train"
    output_subdir: str | None = None
    bg_threshold: float = defaults.CAM_BG_THRESHOLD
    tags_file: str | os.PathLike | None = None
    tags_from_gt: bool = False
    refine_depth_subdir: str | None = None
    refine_band: int = defaults.CAM_REFINE_BAND
    device: str = "cpu"
    sweep_deal_weights: Sequence[float] | None = None
    sweep_bg_thresholds: Sequence[float] = defaults.SWEEP_CAM_BG_THRESHOLDS
    sweep_seeds: Sequence[int] | None = None
    depth_subdir: str | None = None
    sweep_out: str | os.PathLike | None = None

    @property
    def sweep_json(self) -> Path:
        """Where the sweep writes its JSON (CSV and heatmap PNG next to it)."""
        return Path(self.sweep_out) if self.sweep_out else Path(self.run) / "cam_sweep.json"

    @property
    def tags_description(self) -> str:
        return "ground truth" if self.tags_from_gt else (str(self.tags_file) if self.tags_file else "predicted")


def generate_cam_pseudolabels(config: CamLabelConfig, options: RunOptions | None = None,
                              log: Callable[[str], None] | None = None) -> dict:
    """Label maps + evaluation (:func:`write_cam_labels`), or the sweep when ``config.sweep_deal_weights``.

    The sweep runs in this process: ``options`` must then be the default (no shard, one local
    worker). Returns the evaluation or sweep result dict; both carry ``ground_truth_use``
    ({what: how} for ground truth read beyond scoring; empty when none).
    """
    opts = options or RunOptions()
    if config.sweep_deal_weights:
        if opts.shard is not None or opts.executor != "local" or opts.workers != 1:
            raise PseudoLabelsError("--shard / --workers / --executor apply to label-map generation, not to the sweep")
        res = sweep_cam(config.run, config.cityscapes_root, config.split, deal_weights=config.sweep_deal_weights,
                        bg_thresholds=config.sweep_bg_thresholds, seeds=config.sweep_seeds,
                        tags_file=config.tags_file, tags_from_gt=config.tags_from_gt,
                        depth_subdir=config.depth_subdir, refine_depth_subdir=config.refine_depth_subdir,
                        refine_band=config.refine_band, device=config.device, out_json=config.sweep_json, log=log)
        gt_use = {}
        if config.tags_from_gt:
            gt_use["tags"] = "image tags from gtFine labelTrainIds restrict the classes per image"
        if res.get("train_tags") == "ground truth":
            gt_use["training"] = "the swept CAM heads were trained with tags from ground truth"
        return {**res, "ground_truth_use": gt_use}
    if not config.output_subdir:
        raise PseudoLabelsError("--output-subdir NAME is required (or give --sweep-deal-weights)")
    return write_cam_labels(config, opts, log)


# --------------------------------------------------------------------------- per image (runs in the workers)
class LabelJob(NamedTuple):
    """One image's work: its entry, cached feature file, GT file ("" when absent), tags (C,) or None,
    depth reference (None, ``disparity`` or a ``.npy`` path) and output PNG."""

    entry: ImageEntry
    feature_file: str
    gt_file: str
    tags: np.ndarray | None
    depth_ref: str | None
    out_file: str


_HEADS: dict = {}


def _head_of(checkpoint: str):
    """The trained head of a checkpoint file, loaded once per process (keyed by path and mtime)."""
    key = (checkpoint, os.stat(checkpoint).st_mtime_ns)
    if key not in _HEADS:
        _HEADS.clear()
        _HEADS[key] = head_from_checkpoint(load_checkpoint(checkpoint))[0]
    return _HEADS[key]


def _depth_for(root, entry: ImageEntry, depth_ref: str | None) -> np.ndarray | None:
    if not depth_ref:
        return None
    if depth_ref == DISPARITY:
        return load_depth(root, entry, DISPARITY)
    from pseudo_labels.stages.instance.depth import read_depth_npy

    return read_depth_npy(depth_ref)


def _confusion(gt_file: str, labels: np.ndarray, n_classes: int, stem: str) -> np.ndarray | None:
    if not gt_file:
        return None
    gt = read_train_ids_file(gt_file)
    if gt.shape != labels.shape:
        raise PseudoLabelsError(f"image {stem}: ground truth {gt.shape} and label map {labels.shape} differ in size")
    return extended_confusion(gt, labels, n_classes)


def _process(job: LabelJob, params: dict) -> np.ndarray | None:
    """One image: CAMs -> label PNG (atomic write); returns its extended confusion (or None without GT)."""
    head = _head_of(params["checkpoint"])
    e = job.entry
    size = read_png(job.gt_file).shape[:2] if job.gt_file else read_image_rgb(e.image_path).shape[:2]
    scores, used = cam_scores_for_image(head, load_features(job.feature_file), size, job.tags)
    labels = labels_from_scores(scores, params["bg_threshold"], params["label_space"],
                                _depth_for(params["root"], e, job.depth_ref), params["refine_band"], used)
    write_png(job.out_file, labels)
    return _confusion(job.gt_file, labels, params["n_classes"], e.stem)


# --------------------------------------------------------------------------- label maps of a split
def _split_tags(config: CamLabelConfig, entries, label_space: str, meta: dict) -> dict:
    """stem -> (C,) tags, or None per image when the classes are predicted. Every image's tags are read
    (bad tags fail before any work)."""
    tags = None
    if config.tags_file is not None or config.tags_from_gt:
        tags = load_tags(config.cityscapes_root, entries, tags_file=config.tags_file,
                         tags_from_gt=config.tags_from_gt, label_space=label_space,
                         min_pixels=meta.get("tags_min_pixels", defaults.CAM_TAGS_MIN_PIXELS))
    return {e.stem: (None if tags is None else tags[i]) for i, e in enumerate(entries)}


def _depth_refs(config: CamLabelConfig, entries, mine) -> dict:
    """stem -> depth reference for snapping (None, ``disparity`` or a ``.npy`` path); this shard's images
    must have depth."""
    refs: dict = {e.stem: None for e in entries}
    sub = config.refine_depth_subdir
    if not sub:
        return refs
    index = depth_index(config.cityscapes_root, sub)
    for e in mine:
        if sub == DISPARITY:
            refs[e.stem] = DISPARITY
        elif e.stem in index:
            refs[e.stem] = str(index[e.stem])
        else:
            raise PseudoLabelsError(f"image {e.stem}: no depth map under {Path(config.cityscapes_root) / sub} "
                                    "for --refine-depth-subdir (expected <split>/<city>/<stem>.npy)")
    return refs


def _split_confusion(jobs: Sequence[LabelJob], fresh: dict, n_classes: int) -> tuple[np.ndarray, int]:
    """Summed (C, C + 1) confusion over the split's images with GT and their count; ``fresh``: stem ->
    confusion computed in this run; the others are read back from their label PNGs."""
    cm = np.zeros((n_classes, n_classes + 1), np.int64)
    n_gt = 0
    for job in jobs:
        c = fresh.get(job.entry.stem)
        if c is None and job.gt_file:
            c = _confusion(job.gt_file, read_png(job.out_file), n_classes, job.entry.stem)
        if c is not None:
            cm += c
            n_gt += 1
    return cm, n_gt


def _ground_truth_use(config: CamLabelConfig, meta: dict) -> dict:
    gt_use: dict = {}
    if config.tags_from_gt:
        gt_use["tags"] = "image tags from gtFine labelTrainIds restrict the classes per image"
    if meta.get("tags") == "ground truth":
        gt_use["training"] = "the CAM run was trained with tags from ground truth"
    return gt_use


def write_cam_labels(config: CamLabelConfig, options: RunOptions | None = None,
                     log: Callable[[str], None] | None = None) -> dict:
    """Write the label PNGs, manifest and ``cam_eval.json``; returns the evaluation dict.

    ``options``: workers, executor, shard, fail-fast, overwrite; default one local process over
    every image. With a shard whose siblings are not finished yet, returns ``{"complete": False,
    ...}`` without writing ``cam_eval.json``. The returned dict also has ``ground_truth_use``
    (not written to ``cam_eval.json``).
    """
    t0 = time.time()
    c, opts = config, options or RunOptions()
    root, run_dir = c.cityscapes_root, Path(c.run)
    state = load_checkpoint(run_dir)
    meta, train_config = state.get("meta", {}), state["config"]
    label_space = meta.get("label_space", "cityscapes")
    n_classes = len(eval_class_names(label_space))
    checkpoint = run_dir / CHECKPOINT_NAME if run_dir.is_dir() else run_dir
    entries = list_images(root, c.split)
    mine = opts.select(entries)
    tag_of = _split_tags(c, entries, label_space, meta)
    depth_ref = _depth_refs(c, entries, mine)
    params = {"run": str(run_dir.resolve()), "checkpoint_epoch": int(state.get("epoch", 0)),
              "train_config": train_config, "cityscapes_root": str(Path(root).resolve()), "split": c.split,
              "bg_threshold": float(c.bg_threshold), "label_space": label_space,
              "refine_depth_subdir": c.refine_depth_subdir, "refine_band": int(c.refine_band),
              "tags": c.tags_description}
    out_dir = Path(root) / c.output_subdir
    resume = prepare_output_dir(out_dir, STAGE, params, overwrite=opts.overwrite)
    extractor = build_extractor(meta.get("backbone", "builtin"), weights=meta.get("weights"), device=c.device,
                                input_size=tuple(meta.get("input_size", defaults.FEATURE_INPUT_SIZE)))
    feat_of = {e.stem: str(f) for e, f in zip(mine, ensure_cached_features(mine, extractor, run_dir / "features", log))}

    def job_of(e: ImageEntry, feature_file: str) -> LabelJob:
        g = gt_train_ids_file(root, e)
        return LabelJob(e, feature_file, str(g) if g is not None else "", tag_of[e.stem], depth_ref[e.stem],
                        str(out_dir / e.relative(".png")))

    jobs = [job_of(e, feat_of[e.stem]) for e in mine]
    work = {"checkpoint": str(checkpoint), "root": str(root), "bg_threshold": float(c.bg_threshold),
            "label_space": label_space, "refine_band": int(c.refine_band), "n_classes": n_classes}
    summary = run_per_image(functools.partial(_process, params=work), jobs, options=opts, desc="cam labels",
                            name_of=lambda j: j.entry.stem,
                            is_done=(lambda j: is_up_to_date(j.out_file, str(checkpoint), j.feature_file))
                            if resume else None)
    summary.raise_if_failed()
    gt_use = _ground_truth_use(c, meta)
    result = {"split": c.split, "label_space": label_space, "bg_threshold": c.bg_threshold,
              "deal_weight": train_config.get("deal_weight"), "refine_depth_subdir": c.refine_depth_subdir,
              "tags": c.tags_description, "n_images": len(entries), "done": summary.done,
              "skipped_existing": summary.skipped}
    # the evaluation covers the whole split: written once every image (of every shard) is done
    all_jobs = [job_of(e, "") for e in entries]
    if not all(Path(j.out_file).exists() for j in all_jobs):
        if log:
            log(f"{summary.line()}; shard {opts.shard} finished; cam_eval.json is written once every shard is done")
        return {**result, "complete": False, "ground_truth_use": gt_use}
    fresh = {j.entry.stem: r for j, r in zip(jobs, summary.results) if r is not None}
    cm, n_gt = _split_confusion(all_jobs, fresh, n_classes)
    result.update({"complete": True, "n_images_with_gt": n_gt})
    if n_gt:
        result.update(scores_from_confusion(cm, eval_class_names(label_space)))
        result["confusion"] = cm
    write_json(out_dir / "cam_eval.json", result)
    manifest_gt = {**gt_use, "evaluation": "mIoU against gtFine labelTrainIds (scores only)"} if n_gt else gt_use
    write_manifest(out_dir, STAGE, params, uses_ground_truth=manifest_gt if gt_use else False,
                   inputs={"run_manifest": str(run_dir / "manifest.json")},
                   counts={"n_images": len(entries), "done": summary.done, "skipped_existing": summary.skipped,
                           "seconds": round(time.time() - t0, 2)},
                   extra={"mIoU": result.get("mIoU"), **opts.describe()})
    return {**result, "ground_truth_use": gt_use}
