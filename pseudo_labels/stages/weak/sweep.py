"""Sweep of CAM pseudo-labels: DEAL weight x seed (one training each) x background threshold (scoring only).

:func:`sweep_cam` trains one head per DEAL weight and seed with the settings, tags and feature
cache of a base run (``RUN/sweep/w<W>_s<S>``, resumed when rerun), scores every background
threshold by mIoU against gtFine labelTrainIds, and writes the rows, their summary over seeds
(:func:`summarize_cam_sweep`), a CSV and a heatmap PNG (:func:`write_cam_sweep`).
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.io import write_bytes, write_json
from pseudo_labels.datasets.cityscapes import list_images
from pseudo_labels.stages.semantic.features import build_extractor
from pseudo_labels.stages.outputs.report import plot_heatmap
from pseudo_labels.stages.weak.cam import head_from_checkpoint, load_checkpoint
from pseudo_labels.datasets.cityscapes import read_gt_train_ids
from pseudo_labels.stages.weak.inputs import cached_features, depth_index, load_depth, load_tags
from pseudo_labels.stages.weak.masks import (cam_scores_for_image, eval_class_names, extended_confusion,
                                             labels_from_scores, scores_from_confusion)
from pseudo_labels.stages.weak.training import CamTrainConfig, train_cam

CSV_COLUMNS = ("deal_weight", "seed", "bg_threshold", "mIoU", "mIoU_labelled", "coverage", "pixel_accuracy",
               "n_images")


# --------------------------------------------------------------------------- summary and files
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


def plot_cam_sweep_heatmap(summary: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """PNG heatmap of the mean mIoU over DEAL weight (rows) x background threshold (columns)."""
    return plot_heatmap(summary, path, "mIoU_mean", title or "CAM pseudo-label mIoU",
                        rows="deal_weight", cols="bg_threshold", row_label="DEAL weight",
                        col_label="background threshold", colorbar_label="mIoU (mean over seeds)",
                        value_format="{:.1f}")


def write_cam_sweep(result: dict, out_json: str | os.PathLike) -> dict:
    """Write the sweep JSON, its CSV (one row per result) and heatmap PNG next to it; returns ``result``
    with ``csv`` and ``heatmap`` paths added."""
    out_json = Path(out_json)
    out_csv = out_json.with_suffix(".csv")
    heat = out_json.with_name(out_json.stem + "_heatmap_mIoU.png")
    result = {**result, "csv": str(out_csv), "heatmap": str(heat)}
    write_json(out_json, result)
    buf = io.StringIO(newline="")
    wr = csv.writer(buf)
    wr.writerow(CSV_COLUMNS)
    for r in result["results"]:
        wr.writerow([r.get(k) for k in CSV_COLUMNS])
    write_bytes(out_csv, buf.getvalue().encode())  # through the one write layer (issue 24)
    if result.get("summary"):
        plot_cam_sweep_heatmap(result["summary"], heat)
    return result


# --------------------------------------------------------------------------- the sweep
def _evaluation_features(run_dir, meta: dict, in_dim: int, entries, device: str, log) -> np.ndarray:
    """(N, D, h, w) cached features of ``entries`` with the base run's backbone (its feature cache)."""
    extractor = build_extractor(meta.get("backbone", "builtin"), weights=meta.get("weights"), device=device,
                                input_size=tuple(meta.get("input_size", defaults.FEATURE_INPUT_SIZE)))
    feats = cached_features(entries, extractor, Path(run_dir) / "features", log)
    if feats.shape[1] != in_dim:
        raise PseudoLabelsError(f"{run_dir}: features have D={feats.shape[1]}, the head expects {in_dim}")
    return feats


def _sweep_train_config(run_dir, root, split: str, meta: dict, cfg: dict, weight: float, seed: int,
                        depth_subdir: str | None, device: str) -> CamTrainConfig:
    """The base run's training settings with one DEAL weight and seed, run in ``RUN/sweep/w<W>_s<S>``."""
    train_tags = meta.get("tags")
    return CamTrainConfig(
        cityscapes_root=root, split=meta.get("split", split), out=Path(run_dir) / "sweep" / f"w{weight:g}_s{seed}",
        tags_file=None if train_tags == "ground truth" else train_tags, tags_from_gt=train_tags == "ground truth",
        label_space=meta.get("label_space", "cityscapes"),
        tags_min_pixels=meta.get("tags_min_pixels", defaults.CAM_TAGS_MIN_PIXELS),
        backbone=meta.get("backbone", "builtin"), weights=meta.get("weights"),
        input_size=meta.get("input_size", defaults.FEATURE_INPUT_SIZE),
        depth_subdir=depth_subdir if weight > 0 else None, depth_transform=meta.get("depth_transform", "none"),
        deal_weight=weight, epochs=cfg["epochs"], seed=seed, lr=cfg["lr"], batch_size=cfg["batch_size"],
        hidden=cfg["hidden"], pooling=cfg.get("pooling", "gap"), device=device,
        feature_cache=Path(run_dir) / "features")


def _score_head(head, feats, gts, tags, depths, bg_thresholds, label_space: str, refine_band: int) -> dict:
    """{threshold: (C, C + 1) extended confusion summed over the images with GT}."""
    n = len(eval_class_names(label_space))
    cms = {t: np.zeros((n, n + 1), np.int64) for t in bg_thresholds}
    for i, gt in enumerate(gts):
        if gt is None:
            continue
        scores, used = cam_scores_for_image(head, feats[i].astype(np.float32), gt.shape[:2],
                                            None if tags is None else tags[i])
        for t in bg_thresholds:
            cms[t] += extended_confusion(gt, labels_from_scores(scores, t, label_space, depths[i], refine_band, used), n)
    return cms


def _rows_of(cms: dict, bg_thresholds, weight: float, seed: int, names, n_images: int) -> list[dict]:
    """One result row per background threshold: scores of its confusion (:func:`scores_from_confusion`)."""
    rows = []
    for t in bg_thresholds:
        sc = scores_from_confusion(cms[t], names)
        rows.append({"deal_weight": float(weight), "seed": int(seed), "bg_threshold": float(t),
                     "mIoU": sc["mIoU"], "mIoU_labelled": sc["mIoU_labelled"], "coverage": sc["coverage"],
                     "pixel_accuracy": sc["pixel_accuracy"], "per_class_iou": sc["per_class_iou"],
                     "n_images": n_images})
    return rows


def sweep_cam(run_dir: str | os.PathLike, root: str | os.PathLike, split: str, *,
              deal_weights: Sequence[float] = defaults.SWEEP_DEAL_WEIGHTS,
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
    (:func:`write_cam_sweep`; default ``RUN/cam_sweep.json``). Trained heads stay in
    ``RUN/sweep/w<W>_s<S>`` and are reused.
    """
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
    entries = list_images(root, split)
    tags = None
    if tags_file is not None or tags_from_gt:
        tags = load_tags(root, entries, tags_file=tags_file, tags_from_gt=tags_from_gt, label_space=label_space,
                         min_pixels=meta.get("tags_min_pixels", defaults.CAM_TAGS_MIN_PIXELS))
    feats = _evaluation_features(run_dir, meta, int(cfg["in_dim"]), entries, device, log)
    names = eval_class_names(label_space)
    gts = [read_gt_train_ids(root, e) for e in entries]
    if not any(g is not None for g in gts):
        raise PseudoLabelsError(f"split {split}: no gtFine labelTrainIds to score the sweep against")
    index = depth_index(root, refine_depth_subdir)
    depths = [load_depth(root, e, refine_depth_subdir, index) if refine_depth_subdir else None for e in entries]
    n_gt = sum(g is not None for g in gts)
    rows = []
    t0 = time.time()
    for w in deal_weights:
        for s in seeds:
            config = _sweep_train_config(run_dir, root, split, meta, cfg, w, s, depth_subdir, device)
            train_cam(config)
            head, _ = head_from_checkpoint(load_checkpoint(config.out))
            cms = _score_head(head, feats, gts, tags, depths, bg_thresholds, label_space, refine_band)
            new = _rows_of(cms, bg_thresholds, w, s, names, n_gt)
            rows += new
            if log:
                best_t = max(new, key=lambda r: r["mIoU"])
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
