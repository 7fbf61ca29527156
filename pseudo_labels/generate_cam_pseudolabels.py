"""Semantic pseudo-labels from a trained CAM run (train-cam), scored by mIoU when GT exists.

Writes ``<root>/<output-subdir>/<split>/<city>/<stem>.png`` (uint8: Cityscapes trainIds with
255 = background/unlabelled, or VOC ids with 0 = background under ``--label-space voc``,
taken from the run), ``manifest.json`` and ``cam_eval.json`` (mIoU, per-class IoU, coverage).

CAM -> mask (the usual choices of the CAM literature): class maps at the patch grid,
ReLU and division by each class's maximum in the image, bilinear upsampling to the image,
a constant background score ``--bg-threshold``, argmax over background + the image's
tagged classes (:func:`pseudo_labels.stages.weak.masks.cams_to_labels`).

Which classes an image may take: its tags from ``--tags FILE`` or ``--tags-from-gt``
(the usual WSSS setting: pseudo-labels for tagged training images), otherwise the
classifier's own predictions (sigmoid(logit) > 0.5). ``--refine-depth-subdir D`` snaps
label boundaries to depth edges (marker watershed within ``--refine-band`` px).

Images run through the shared runner (``--workers``, ``--executor ray``, ``--shard i/n``,
``--fail-fast``, ``--overwrite``): a rerun skips label maps that are newer than the run's
checkpoint and the image's cached features, and refuses an output folder made with other
parameters unless ``--overwrite``. ``cam_eval.json`` covers the whole split; with
``--shard`` it is written by whichever shard finds every label map done.

Sweep: ``--sweep-deal-weights W1,W2,.. [--sweep-bg-thresholds T1,..] [--sweep-seeds S1,..]``
trains one head per DEAL weight x seed (settings, tags and feature cache of ``--run``; runs in
``RUN/sweep/w<W>_s<S>``, resumed when rerun), scores every background threshold on ``--split``
and writes ``--sweep-out`` (default ``RUN/cam_sweep.json``: ``{split, ..., results: [{deal_weight,
seed, bg_threshold, mIoU, ...}], summary, best, best_per_deal_weight}``) + a CSV + a heatmap PNG
of the mean mIoU over DEAL weight x background threshold, instead of writing label maps.
"""

from __future__ import annotations

import argparse
import csv
import functools
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option, add_runner_arguments, module_main, runner_options
from pseudo_labels.core.errors import PseudoLabelsError

STAGE = "generate-cam-pseudolabels"


# --------------------------------------------------------------------------- per image (pure)
def cam_scores_for_image(head, features: np.ndarray, image_size: tuple[int, int],
                         tags: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised CAMs upsampled to the image: (C, H, W) float32 in [0, 1], and the tags used (C,).

    ``features`` (D, h, w); ``tags`` (C,) multi-hot or None (predicted from the logits).
    ReLU + per-class max normalisation at the patch grid
    (:func:`pseudo_labels.stages.weak.cam.normalize_cams`; untagged classes 0), then bilinear
    upsampling to ``image_size``.
    """
    from pseudo_labels.stages.weak.cam import compute_cams, normalize_cams, predicted_tags
    from pseudo_labels.stages.weak.masks import upsample_cams

    raw, logits = compute_cams(head, features)
    used = predicted_tags(logits) if tags is None else np.asarray(tags, np.float32)
    return upsample_cams(normalize_cams(raw, used), image_size), used


def labels_from_scores(scores: np.ndarray, bg_threshold: float, label_space: str,
                       depth: np.ndarray | None = None, band: int = defaults.CAM_REFINE_BAND,
                       tags: np.ndarray | None = None) -> np.ndarray:
    """(C, H, W) normalised CAMs -> (H, W) uint8 labels (argmax over background = ``bg_threshold``
    and the tagged classes); with ``depth``, boundaries snapped to depth edges."""
    from pseudo_labels.stages.weak.masks import cams_to_labels, snap_to_depth_edges

    labels = cams_to_labels(scores, bg_threshold, label_space, tags)
    if depth is not None:
        labels = snap_to_depth_edges(labels, depth, band=band)
    return labels


# --------------------------------------------------------------------------- helpers
def _run_context(run_dir, root, split, *, tags_file=None, tags_from_gt=False, device="cpu", log=None):
    from pseudo_labels.datasets.cityscapes import list_images
    from pseudo_labels.stages.features import build_extractor
    from pseudo_labels.train_cam import cached_features, load_tags
    from pseudo_labels.stages.weak.cam import head_from_checkpoint, load_checkpoint

    state = load_checkpoint(run_dir)
    head, config = head_from_checkpoint(state)
    meta = state.get("meta", {})
    entries = list_images(root, split)
    label_space = meta.get("label_space", "cityscapes")
    tags = None
    if tags_file is not None or tags_from_gt:
        tags = load_tags(root, entries, tags_file=tags_file, tags_from_gt=tags_from_gt, label_space=label_space,
                         min_pixels=meta.get("tags_min_pixels", defaults.CAM_TAGS_MIN_PIXELS))
    extractor = build_extractor(meta.get("backbone", "builtin"), weights=meta.get("weights"), device=device,
                                input_size=tuple(meta.get("input_size", defaults.FEATURE_INPUT_SIZE)))
    feats = cached_features(entries, extractor, Path(run_dir) / "features", log)
    if feats.shape[1] != config.in_dim:
        raise PseudoLabelsError(f"{run_dir}: features have D={feats.shape[1]}, the head expects {config.in_dim}")
    return state, head, config, meta, entries, tags, feats


def _gt(root, entry, label_space):
    from pseudo_labels.datasets.cityscapes import gt_path
    from pseudo_labels.core.io import read_png

    p = gt_path(root, entry, "labelTrainIds")
    return read_png(p) if p.exists() else None


def _image_size(entry, gt):
    if gt is not None:
        return gt.shape[:2]
    from pseudo_labels.core.io import read_image_rgb

    return read_image_rgb(entry.image_path).shape[:2]


def _refine_depth(root, entry, subdir, index):
    if not subdir:
        return None
    from pseudo_labels.train_cam import load_depth

    return load_depth(root, entry, subdir, index)


def _depth_index(root, subdir):
    if not subdir or subdir == "disparity":
        return None
    from pseudo_labels.stages.depth import index_depth_folder

    folder = Path(root) / subdir
    return index_depth_folder(folder) if folder.is_dir() else {}


# --------------------------------------------------------------------------- generate
_HEADS: dict = {}


def _head_of(checkpoint: str):
    """The trained head of a checkpoint file, loaded once per process (keyed by path and mtime)."""
    import os

    from pseudo_labels.stages.weak.cam import head_from_checkpoint, load_checkpoint

    key = (checkpoint, os.stat(checkpoint).st_mtime_ns)
    if key not in _HEADS:
        _HEADS.clear()
        _HEADS[key] = head_from_checkpoint(load_checkpoint(checkpoint))[0]
    return _HEADS[key]


def _depth_for(root, entry, depth_ref: str | None):
    if not depth_ref:
        return None
    if depth_ref == "disparity":
        from pseudo_labels.train_cam import load_depth

        return load_depth(root, entry, "disparity")
    from pseudo_labels.stages.depth import read_depth_npy

    return read_depth_npy(depth_ref)


def _confusion(gt_file: str, labels: np.ndarray, n_classes: int, stem: str) -> np.ndarray | None:
    from pseudo_labels.core.io import read_png
    from pseudo_labels.stages.weak.masks import extended_confusion

    if not gt_file:
        return None
    gt = read_png(gt_file)
    if gt.shape != labels.shape:
        raise PseudoLabelsError(f"image {stem}: ground truth {gt.shape} and label map {labels.shape} differ in size")
    return extended_confusion(gt, labels, n_classes)


def _process(item, params: dict) -> np.ndarray | None:
    """One image: CAMs -> label PNG (atomic write); returns its extended confusion (or None without GT)."""
    from pseudo_labels.stages.features import load_features
    from pseudo_labels.core.io import read_image_rgb, read_png, write_png

    entry, feat_file, gt_file, tags, depth_ref, out_file = item
    head = _head_of(params["checkpoint"])
    size = read_png(gt_file).shape[:2] if gt_file else read_image_rgb(entry.image_path).shape[:2]
    scores, used = cam_scores_for_image(head, load_features(feat_file), size, tags)
    labels = labels_from_scores(scores, params["bg_threshold"], params["label_space"],
                                _depth_for(params["root"], entry, depth_ref), params["refine_band"], used)
    write_png(out_file, labels)
    return _confusion(gt_file, labels, params["n_classes"], entry.stem)


def _confusion_of_finished(item, params: dict) -> np.ndarray | None:
    """Confusion of a label PNG written by an earlier run or another shard."""
    from pseudo_labels.core.io import read_png

    entry, _, gt_file, _, _, out_file = item
    return _confusion(gt_file, read_png(out_file), params["n_classes"], entry.stem)


def generate_cam_pseudolabels(run_dir, root, split: str, output_subdir: str, *,
                              bg_threshold: float = defaults.CAM_BG_THRESHOLD, tags_file=None,
                              tags_from_gt: bool = False, refine_depth_subdir: str | None = None,
                              refine_band: int = defaults.CAM_REFINE_BAND, device: str = "cpu",
                              options=None, log: Callable[[str], None] | None = None) -> dict:
    """Write the label PNGs, manifest and ``cam_eval.json``; returns the evaluation dict.

    ``options``: :class:`pseudo_labels.core.runner.RunOptions` (workers, executor, shard, fail-fast,
    overwrite); default one local process over every image. With a shard whose siblings are
    not finished yet, returns ``{"complete": False, ...}`` without writing ``cam_eval.json``.
    """
    from pseudo_labels.datasets.cityscapes import gt_path, list_images
    from pseudo_labels.stages.features import build_extractor
    from pseudo_labels.core.io import is_up_to_date, prepare_output_dir, write_json, write_manifest
    from pseudo_labels.core.runner import RunOptions, run_per_image
    from pseudo_labels.train_cam import ensure_cached_features, load_tags
    from pseudo_labels.stages.weak.cam import CHECKPOINT_NAME, load_checkpoint
    from pseudo_labels.stages.weak.masks import eval_class_names, scores_from_confusion

    t0 = time.time()
    opts = options or RunOptions()
    state = load_checkpoint(run_dir)
    meta, config = state.get("meta", {}), state["config"]
    label_space = meta.get("label_space", "cityscapes")
    names = eval_class_names(label_space)
    checkpoint = Path(run_dir) / CHECKPOINT_NAME if Path(run_dir).is_dir() else Path(run_dir)
    entries = list_images(root, split)
    mine = opts.select(entries)
    tags = None
    if tags_file is not None or tags_from_gt:  # tags of every image: bad tags fail before any work
        tags = load_tags(root, entries, tags_file=tags_file, tags_from_gt=tags_from_gt, label_space=label_space,
                         min_pixels=meta.get("tags_min_pixels", defaults.CAM_TAGS_MIN_PIXELS))
    tag_of = {e.stem: (None if tags is None else tags[i]) for i, e in enumerate(entries)}
    depth_ref: dict = {e.stem: None for e in entries}
    if refine_depth_subdir:
        index = _depth_index(root, refine_depth_subdir)
        for e in mine:
            if refine_depth_subdir == "disparity":
                depth_ref[e.stem] = "disparity"
            elif e.stem in index:
                depth_ref[e.stem] = str(index[e.stem])
            else:
                raise PseudoLabelsError(f"image {e.stem}: no depth map under {Path(root) / refine_depth_subdir} "
                                        "for --refine-depth-subdir (expected <split>/<city>/<stem>.npy)")
    tags_desc = "ground truth" if tags_from_gt else (str(tags_file) if tags_file else "predicted")
    params = {"run": str(Path(run_dir).resolve()), "checkpoint_epoch": int(state.get("epoch", 0)), "train_config": config,
              "cityscapes_root": str(Path(root).resolve()), "split": split, "bg_threshold": float(bg_threshold),
              "label_space": label_space, "refine_depth_subdir": refine_depth_subdir,
              "refine_band": int(refine_band), "tags": tags_desc}
    out_dir = Path(root) / output_subdir
    resume = prepare_output_dir(out_dir, STAGE, params, overwrite=opts.overwrite)

    extractor = build_extractor(meta.get("backbone", "builtin"), weights=meta.get("weights"), device=device,
                                input_size=tuple(meta.get("input_size", defaults.FEATURE_INPUT_SIZE)))
    feat_files = ensure_cached_features(mine, extractor, Path(run_dir) / "features", log)
    feat_of = {e.stem: str(f) for e, f in zip(mine, feat_files)}

    def item_of(e, feat_file):
        g = gt_path(root, e, "labelTrainIds")
        return (e, feat_file, str(g) if g.exists() else "", tag_of[e.stem], depth_ref[e.stem],
                str(out_dir / e.relative(".png")))

    items = [item_of(e, feat_of[e.stem]) for e in mine]
    work = {"checkpoint": str(checkpoint), "root": str(root), "bg_threshold": float(bg_threshold),
            "label_space": label_space, "refine_band": int(refine_band), "n_classes": len(names)}
    summary = run_per_image(functools.partial(_process, params=work), items, options=opts, desc="cam labels",
                            name_of=lambda it: it[0].stem,
                            is_done=(lambda it: is_up_to_date(it[5], str(checkpoint), it[1])) if resume else None)
    summary.raise_if_failed()
    result = {"split": split, "label_space": label_space, "bg_threshold": bg_threshold,
              "deal_weight": config.get("deal_weight"), "refine_depth_subdir": refine_depth_subdir,
              "tags": tags_desc, "n_images": len(entries), "done": summary.done, "skipped_existing": summary.skipped}
    # the evaluation covers the whole split: written once every image (of every shard) is done
    all_items = [item_of(e, "") for e in entries]
    if not all(Path(it[5]).exists() for it in all_items):
        if log:
            log(f"{summary.line()}; shard {opts.shard} finished; cam_eval.json is written once every shard is done")
        return {**result, "complete": False}
    fresh = {it[0].stem: r for it, r in zip(items, summary.results) if r is not None}
    cm = np.zeros((len(names), len(names) + 1), np.int64)
    n_gt = 0
    for it in all_items:
        c = fresh.get(it[0].stem)
        if c is None and it[2]:
            c = _confusion_of_finished(it, work)
        if c is not None:
            cm += c
            n_gt += 1
    result.update({"complete": True, "n_images_with_gt": n_gt})
    if n_gt:
        result.update(scores_from_confusion(cm, names))
        result["confusion"] = cm
    write_json(out_dir / "cam_eval.json", result)
    gt_use: dict = {}
    if tags_from_gt:
        gt_use["tags"] = "image tags from gtFine labelTrainIds restrict the classes per image"
    if meta.get("tags") == "ground truth":
        gt_use["training"] = "the CAM run was trained with tags from ground truth"
    if n_gt:
        gt_use["evaluation"] = "mIoU against gtFine labelTrainIds (scores only)"
    write_manifest(out_dir, STAGE, params,
                   uses_ground_truth=gt_use if ("tags" in gt_use or "training" in gt_use) else False,
                   inputs={"run_manifest": str(Path(run_dir) / "manifest.json")},
                   counts={"n_images": len(entries), "done": summary.done, "skipped_existing": summary.skipped,
                           "seconds": round(time.time() - t0, 2)},
                   extra={"mIoU": result.get("mIoU"), **opts.describe()})
    return result


# --------------------------------------------------------------------------- sweep
def summarize_cam_sweep(rows: Sequence[dict]) -> dict:
    """Aggregate sweep rows ``{deal_weight, seed, bg_threshold, mIoU, ...}`` over seeds.

    Returns ``{summary: [{deal_weight, bg_threshold, mIoU_mean, mIoU_std, mIoU_min, mIoU_max,
    n_seeds, seeds}], best, best_per_deal_weight: {weight: summary row}}``: the mean over seeds
    per (weight, threshold); ``mIoU_std`` the sample standard deviation (ddof 1; 0 for one seed);
    ``best_per_deal_weight`` each weight at its own best background threshold (by the mean).
    """
    weights = sorted({float(r["deal_weight"]) for r in rows})
    thresholds = sorted({float(r["bg_threshold"]) for r in rows})
    summary = []
    for w in weights:
        for t in thresholds:
            sel = [r for r in rows if float(r["deal_weight"]) == w and float(r["bg_threshold"]) == t]
            if not sel:
                continue
            v = np.array([r["mIoU"] for r in sel], np.float64)
            summary.append({"deal_weight": w, "bg_threshold": t, "mIoU_mean": float(v.mean()),
                            "mIoU_std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                            "mIoU_min": float(v.min()), "mIoU_max": float(v.max()), "n_seeds": int(len(v)),
                            "seeds": [int(r["seed"]) for r in sel]})
    per_w: dict = {}
    for srow in summary:
        w = srow["deal_weight"]
        if w not in per_w or srow["mIoU_mean"] > per_w[w]["mIoU_mean"]:
            per_w[w] = srow
    return {"summary": summary, "best": max(summary, key=lambda r: r["mIoU_mean"]) if summary else None,
            "best_per_deal_weight": {f"{w:g}": r for w, r in per_w.items()}}


def plot_cam_sweep_heatmap(summary: Sequence[dict], path, title: str = "") -> Path:
    """PNG heatmap of the mean mIoU over DEAL weight (rows) x background threshold (columns)."""
    from pseudo_labels.report import plot_heatmap

    return plot_heatmap(summary, path, "mIoU_mean", title or "CAM pseudo-label mIoU",
                        rows="deal_weight", cols="bg_threshold", row_label="DEAL weight",
                        col_label="background threshold", colorbar_label="mIoU (mean over seeds)",
                        value_format="{:.1f}")


def write_cam_sweep(result: dict, out_json) -> dict:
    """Write the sweep JSON, its CSV (one row per result) and heatmap PNG next to it; returns ``result``
    with ``csv`` and ``heatmap`` paths added."""
    from pseudo_labels.core.io import write_json

    out_json = Path(out_json)
    out_csv = out_json.with_suffix(".csv")
    heat = out_json.with_name(out_json.stem + "_heatmap_mIoU.png")
    result = {**result, "csv": str(out_csv), "heatmap": str(heat)}
    write_json(out_json, result)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        wr = csv.writer(f)
        keys = ["deal_weight", "seed", "bg_threshold", "mIoU", "mIoU_labelled", "coverage", "pixel_accuracy",
                "n_images"]
        wr.writerow(keys)
        for r in result["results"]:
            wr.writerow([r.get(k) for k in keys])
    if result.get("summary"):
        plot_cam_sweep_heatmap(result["summary"], heat)
    return result


def sweep_cam(run_dir, root, split: str, *, deal_weights: Sequence[float] = defaults.SWEEP_DEAL_WEIGHTS,
              bg_thresholds: Sequence[float] = defaults.SWEEP_CAM_BG_THRESHOLDS,
              seeds: Sequence[int] | None = None, tags_file=None, tags_from_gt: bool = False,
              depth_subdir: str | None = None, refine_depth_subdir: str | None = None,
              refine_band: int = defaults.CAM_REFINE_BAND, device: str = "cpu", out_json=None,
              log: Callable[[str], None] | None = None) -> dict:
    """Grid over DEAL weight x seed (one training each) x background threshold (scoring only).

    Training settings, tags source and depth come from the base run ``run_dir`` unless
    given. Evaluation uses ``split`` (tags restrict classes when given). Returns and writes
    ``{split, label_space, depth_subdir, results: [{deal_weight, seed, bg_threshold, mIoU,
    mIoU_labelled, coverage, pixel_accuracy, per_class_iou, n_images}], summary, best,
    best_per_deal_weight}`` (:func:`summarize_cam_sweep`) + CSV + heatmap next to the JSON
    (:func:`write_cam_sweep`). Trained heads stay in ``RUN/sweep/w<W>_s<S>`` and are reused.
    """
    from pseudo_labels.train_cam import train_cam_run
    from pseudo_labels.stages.weak.cam import head_from_checkpoint, load_checkpoint
    from pseudo_labels.stages.weak.masks import eval_class_names, extended_confusion, scores_from_confusion

    base = load_checkpoint(run_dir)
    meta, cfg = base.get("meta", {}), base["config"]
    label_space = meta.get("label_space", "cityscapes")
    train_tags = meta.get("tags")
    depth_subdir = depth_subdir or meta.get("depth_subdir")
    if not deal_weights or not bg_thresholds:
        raise PseudoLabelsError("the sweep needs at least one DEAL weight and one background threshold")
    if any(w > 0 for w in deal_weights) and not depth_subdir:
        raise PseudoLabelsError("the sweep has DEAL weights > 0: give --depth-subdir (the base run has no depth)")
    seeds = list(seeds) if seeds else [int(cfg["seed"])]
    _, _, _, _, entries, tags, feats = _run_context(run_dir, root, split, tags_file=tags_file,
                                                    tags_from_gt=tags_from_gt, device=device, log=log)
    names = eval_class_names(label_space)
    gts = [_gt(root, e, label_space) for e in entries]
    if not any(g is not None for g in gts):
        raise PseudoLabelsError(f"split {split}: no gtFine labelTrainIds to score the sweep against")
    index = _depth_index(root, refine_depth_subdir)
    depths = [_refine_depth(root, e, refine_depth_subdir, index) for e in entries]
    rows = []
    t0 = time.time()
    for w in deal_weights:
        for s in seeds:
            sub = Path(run_dir) / "sweep" / f"w{w:g}_s{s}"
            train_cam_run(root, meta.get("split", split), sub,
                          tags_file=None if train_tags == "ground truth" else train_tags,
                          tags_from_gt=train_tags == "ground truth", label_space=label_space,
                          tags_min_pixels=meta.get("tags_min_pixels", defaults.CAM_TAGS_MIN_PIXELS),
                          backbone=meta.get("backbone", "builtin"), weights=meta.get("weights"),
                          input_size=meta.get("input_size", defaults.FEATURE_INPUT_SIZE),
                          depth_subdir=depth_subdir if w > 0 else None,
                          depth_transform=meta.get("depth_transform", "none"), deal_weight=w,
                          epochs=cfg["epochs"], seed=s, lr=cfg["lr"], batch_size=cfg["batch_size"],
                          hidden=cfg["hidden"], pooling=cfg.get("pooling", "gap"), device=device,
                          feature_cache=Path(run_dir) / "features")
            head, _ = head_from_checkpoint(load_checkpoint(sub))
            cms = {t: np.zeros((len(names), len(names) + 1), np.int64) for t in bg_thresholds}
            for i, e in enumerate(entries):
                if gts[i] is None:
                    continue
                scores, used = cam_scores_for_image(head, feats[i].astype(np.float32), gts[i].shape[:2],
                                                    None if tags is None else tags[i])
                for t in bg_thresholds:
                    lab = labels_from_scores(scores, t, label_space, depths[i], refine_band, used)
                    cms[t] += extended_confusion(gts[i], lab, len(names))
            for t in bg_thresholds:
                sc = scores_from_confusion(cms[t], names)
                rows.append({"deal_weight": float(w), "seed": int(s), "bg_threshold": float(t),
                             "mIoU": sc["mIoU"], "mIoU_labelled": sc["mIoU_labelled"], "coverage": sc["coverage"],
                             "pixel_accuracy": sc["pixel_accuracy"], "per_class_iou": sc["per_class_iou"],
                             "n_images": sum(g is not None for g in gts)})
            if log:
                best_t = max((r for r in rows if r["deal_weight"] == w and r["seed"] == s), key=lambda r: r["mIoU"])
                log(f"deal weight {w:g}, seed {s}: best mIoU {best_t['mIoU']:.2f} at bg {best_t['bg_threshold']:g}")
    result = {"split": split, "train_split": meta.get("split"), "label_space": label_space,
              "depth_subdir": depth_subdir, "depth_transform": meta.get("depth_transform", "none"),
              "refine_depth_subdir": refine_depth_subdir,
              "tags": "ground truth" if tags_from_gt else (str(tags_file) if tags_file else "predicted"),
              "train_tags": train_tags, "tags_min_pixels": meta.get("tags_min_pixels"),
              "backbone": meta.get("backbone"), "input_size": meta.get("input_size"),
              "feature_grid": meta.get("feature_grid"), "train_config": {k: v for k, v in cfg.items() if k != "seed"},
              "seeds": seeds, "deal_weights": [float(w) for w in deal_weights],
              "bg_thresholds": [float(t) for t in bg_thresholds], "results": rows,
              **summarize_cam_sweep(rows), "seconds": round(time.time() - t0, 1),
              "uses_ground_truth": bool(train_tags == "ground truth" or tags_from_gt)}
    return write_cam_sweep(result, Path(out_json) if out_json else Path(run_dir) / "cam_sweep.json")


# --------------------------------------------------------------------------- CLI
def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PseudoLabelsError(f"{text!r}: expected comma-separated numbers") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--run", required=True, help="run folder written by train-cam (checkpoint.pt)")
    add_option(parser, "--cityscapes-root", required=True)
    add_option(parser, "--split", default="train")
    add_option(parser, "--output-subdir", default=None, help="output folder under the root (required unless --sweep-*)")
    add_option(parser, "--bg-threshold", type=float, default=defaults.CAM_BG_THRESHOLD,
               help=f"normalised CAM score at or below which a pixel is background (default {defaults.CAM_BG_THRESHOLD}: "
                    "every pixel takes its best tagged class, right for the Cityscapes label space, which has no "
                    "background; with --label-space voc pick one with --sweep-bg-thresholds)")
    src = parser.add_mutually_exclusive_group()
    add_option(src, "--tags", metavar="FILE", help="restrict each image to its tags from this file")
    add_option(src, "--tags-from-gt", action="store_true", help="restrict each image to its GT classes (uses GT)")
    add_option(parser, "--refine-depth-subdir", default=None,
               help="snap boundaries to depth edges: .npy folder under the root, or 'disparity'")
    add_option(parser, "--refine-band", type=int, default=defaults.CAM_REFINE_BAND,
               help="px a boundary may move when snapping to depth edges")
    add_option(parser, "--device", choices=("cpu", "cuda"), default="cpu")
    add_option(parser, "--sweep-deal-weights", type=_floats, default=None, metavar="W1,W2",
               help="run the sweep over these DEAL weights (trains one head per weight x seed; "
                    "one process: the runner flags other than --device do not apply)")
    add_option(parser, "--sweep-bg-thresholds", type=_floats, default=list(defaults.SWEEP_CAM_BG_THRESHOLDS),
               metavar="T1,T2")
    add_option(parser, "--sweep-seeds", type=lambda s: [int(v) for v in _floats(s)], default=None, metavar="S1,S2")
    add_option(parser, "--depth-subdir", default=None, help="sweep: depth for DEAL (default: the base run's)")
    add_option(parser, "--sweep-out", default=None, help="sweep JSON (default RUN/cam_sweep.json; CSV and heatmap PNG next to it)")
    add_runner_arguments(parser, workers=1)


def run(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        print(f"generate-cam-pseudolabels: {msg}", file=sys.stderr)

    opts = runner_options(args)
    if args.sweep_deal_weights:
        if opts.shard is not None or opts.executor != "local" or opts.workers != 1:
            raise PseudoLabelsError("--shard / --workers / --executor apply to label-map generation, not to the sweep")
        res = sweep_cam(args.run, args.cityscapes_root, args.split, deal_weights=args.sweep_deal_weights,
                        bg_thresholds=args.sweep_bg_thresholds, seeds=args.sweep_seeds, tags_file=args.tags,
                        tags_from_gt=args.tags_from_gt, depth_subdir=args.depth_subdir,
                        refine_depth_subdir=args.refine_depth_subdir, refine_band=args.refine_band,
                        device=args.device, out_json=args.sweep_out, log=log)
        b = res["best"]
        print(f"sweep: best mIoU {b['mIoU_mean']:.2f} +- {b['mIoU_std']:.2f} at DEAL weight {b['deal_weight']:g}, "
              f"bg threshold {b['bg_threshold']:g}; {args.sweep_out or Path(args.run) / 'cam_sweep.json'}")
        return 0
    if not args.output_subdir:
        raise PseudoLabelsError("--output-subdir NAME is required (or give --sweep-deal-weights)")
    res = generate_cam_pseudolabels(args.run, args.cityscapes_root, args.split, args.output_subdir,
                                    bg_threshold=args.bg_threshold, tags_file=args.tags,
                                    tags_from_gt=args.tags_from_gt, refine_depth_subdir=args.refine_depth_subdir,
                                    refine_band=args.refine_band, device=args.device, options=opts, log=log)
    msg = (f"done {res['done']}, skipped {res['skipped_existing']} (already finished) label maps in "
           f"{Path(args.cityscapes_root) / args.output_subdir}")
    if not res.get("complete", True):
        msg += "; other shards unfinished, so no cam_eval.json yet"
    elif "mIoU" in res:
        msg += f"; mIoU {res['mIoU']:.2f} (labelled pixels {res['mIoU_labelled']:.2f}, coverage {res['coverage']:.1f}%)"
    print(msg)
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.generate_cam_pseudolabels"))
