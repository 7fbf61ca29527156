"""Semantic pseudo-labels from a trained CAM run (train-cam), scored by mIoU when GT exists.

Writes ``<root>/<output-subdir>/<split>/<city>/<stem>.png`` (uint8: Cityscapes trainIds with
255 = background/unlabelled, or VOC ids with 0 = background under ``--label-space voc``,
taken from the run), ``manifest.json`` and ``cam_eval.json`` (mIoU, per-class IoU, coverage).

Which classes an image may take: its tags from ``--tags FILE`` or ``--tags-from-gt``
(the usual WSSS setting: pseudo-labels for tagged training images), otherwise the
classifier's own predictions (sigmoid(logit) > 0.5). ``--refine-depth-subdir D`` snaps
label boundaries to depth edges (marker watershed within ``--refine-band`` px).

Sweep: ``--sweep-deal-weights W1,W2,.. [--sweep-bg-thresholds T1,..] [--sweep-seeds S1,..]``
trains one head per DEAL weight x seed (settings, tags and feature cache of ``--run``; runs in
``RUN/sweep/w<W>_s<S>``), scores every background threshold on ``--split`` and writes
``--sweep-out`` (default ``RUN/cam_sweep.json``) + a CSV, instead of writing PNGs.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import defaults
from .cli import add_option, module_main
from .errors import PseudoLabelsError


# --------------------------------------------------------------------------- per image (pure)
def cam_scores_for_image(head, features: np.ndarray, image_size: tuple[int, int],
                         tags: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised CAMs upsampled to the image: (C, H, W) float32 in [0, 1], and the tags used (C,).

    ``features`` (D, h, w); ``tags`` (C,) multi-hot or None (predicted from the logits).
    """
    from .weak.cam import compute_cams, normalize_cams, predicted_tags
    from .weak.masks import upsample_cams

    raw, logits = compute_cams(head, features)
    used = predicted_tags(logits) if tags is None else np.asarray(tags, np.float32)
    return upsample_cams(normalize_cams(raw, used), image_size), used


def labels_from_scores(scores: np.ndarray, bg_threshold: float, label_space: str,
                       depth: np.ndarray | None = None, band: int = defaults.CAM_REFINE_BAND) -> np.ndarray:
    """(C, H, W) normalised CAMs -> (H, W) uint8 labels; with ``depth``, boundaries snapped to depth edges."""
    from .weak.masks import cams_to_labels, snap_to_depth_edges

    labels = cams_to_labels(scores, bg_threshold, label_space)
    if depth is not None:
        labels = snap_to_depth_edges(labels, depth, band=band)
    return labels


# --------------------------------------------------------------------------- helpers
def _run_context(run_dir, root, split, *, tags_file=None, tags_from_gt=False, device="cpu", log=None):
    from .cityscapes import list_images
    from .features import build_extractor
    from .train_cam import cached_features, load_tags
    from .weak.cam import head_from_checkpoint, load_checkpoint

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
    from .cityscapes import gt_path
    from .io import read_png

    p = gt_path(root, entry, "labelTrainIds")
    return read_png(p) if p.exists() else None


def _image_size(entry, gt):
    if gt is not None:
        return gt.shape[:2]
    from .io import read_image_rgb

    return read_image_rgb(entry.image_path).shape[:2]


def _refine_depth(root, entry, subdir, index):
    if not subdir:
        return None
    from .train_cam import load_depth

    return load_depth(root, entry, subdir, index)


def _depth_index(root, subdir):
    if not subdir or subdir == "disparity":
        return None
    from .depth import index_depth_folder

    folder = Path(root) / subdir
    return index_depth_folder(folder) if folder.is_dir() else {}


# --------------------------------------------------------------------------- generate
def generate_cam_pseudolabels(run_dir, root, split: str, output_subdir: str, *,
                              bg_threshold: float = defaults.CAM_BG_THRESHOLD, tags_file=None,
                              tags_from_gt: bool = False, refine_depth_subdir: str | None = None,
                              refine_band: int = defaults.CAM_REFINE_BAND, device: str = "cpu",
                              log: Callable[[str], None] | None = None) -> dict:
    """Write the label PNGs, manifest and ``cam_eval.json``; returns the evaluation dict."""
    from .io import write_json, write_manifest, write_png
    from .weak.masks import eval_class_names, extended_confusion, scores_from_confusion

    t0 = time.time()
    state, head, config, meta, entries, tags, feats = _run_context(
        run_dir, root, split, tags_file=tags_file, tags_from_gt=tags_from_gt, device=device, log=log)
    label_space = meta.get("label_space", "cityscapes")
    names = eval_class_names(label_space)
    out_dir = Path(root) / output_subdir
    index = _depth_index(root, refine_depth_subdir)
    cm = np.zeros((len(names), len(names) + 1), np.int64)
    n_gt = 0
    for i, e in enumerate(entries):
        gt = _gt(root, e, label_space)
        scores, _ = cam_scores_for_image(head, feats[i].astype(np.float32), _image_size(e, gt),
                                         None if tags is None else tags[i])
        labels = labels_from_scores(scores, bg_threshold, label_space,
                                    _refine_depth(root, e, refine_depth_subdir, index), refine_band)
        write_png(out_dir / e.relative(".png"), labels)
        if gt is not None:
            cm += extended_confusion(gt, labels, len(names))
            n_gt += 1
    result = {"split": split, "label_space": label_space, "bg_threshold": bg_threshold,
              "deal_weight": config.deal_weight, "refine_depth_subdir": refine_depth_subdir,
              "tags": "ground truth" if tags_from_gt else (str(tags_file) if tags_file else "predicted"),
              "n_images": len(entries), "n_images_with_gt": n_gt}
    if n_gt:
        result.update(scores_from_confusion(cm, names))
        result["confusion"] = cm
    write_json(out_dir / "cam_eval.json", result)
    gt_use: dict = {}
    if tags_from_gt:
        gt_use["tags"] = "image tags from gtFine labelTrainIds restrict the classes per image"
    train_manifest = Path(run_dir) / "manifest.json"
    if meta.get("tags") == "ground truth":
        gt_use["training"] = "the CAM run was trained with tags from ground truth"
    if n_gt:
        gt_use["evaluation"] = "mIoU against gtFine labelTrainIds (scores only)"
    write_manifest(out_dir, "generate-cam-pseudolabels",
                   {"run": str(run_dir), "cityscapes_root": str(root), "split": split, "bg_threshold": bg_threshold,
                    "label_space": label_space, "refine_depth_subdir": refine_depth_subdir,
                    "refine_band": refine_band, "tags": result["tags"]},
                   uses_ground_truth=gt_use if ("tags" in gt_use or "training" in gt_use) else False,
                   inputs={"run_manifest": str(train_manifest)},
                   counts={"n_images": len(entries), "seconds": round(time.time() - t0, 2)},
                   extra={"mIoU": result.get("mIoU")})
    return result


# --------------------------------------------------------------------------- sweep
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
    mIoU_labelled, coverage, pixel_accuracy, n_images}], summary: [{deal_weight, bg_threshold,
    mIoU_mean, mIoU_std, n_seeds}], best}`` (+ CSV next to the JSON).
    """
    from .io import write_json
    from .train_cam import train_cam_run
    from .weak.cam import head_from_checkpoint, load_checkpoint
    from .weak.masks import eval_class_names, extended_confusion, scores_from_confusion

    base = load_checkpoint(run_dir)
    meta, cfg = base.get("meta", {}), base["config"]
    label_space = meta.get("label_space", "cityscapes")
    train_tags = meta.get("tags")
    depth_subdir = depth_subdir or meta.get("depth_subdir")
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
                          hidden=cfg["hidden"], pooling=cfg.get("pooling", "gap"), device=device, feature_cache=Path(run_dir) / "features")
            head, _ = head_from_checkpoint(load_checkpoint(sub))
            cms = {t: np.zeros((len(names), len(names) + 1), np.int64) for t in bg_thresholds}
            for i, e in enumerate(entries):
                if gts[i] is None:
                    continue
                scores, _ = cam_scores_for_image(head, feats[i].astype(np.float32), gts[i].shape[:2],
                                                 None if tags is None else tags[i])
                for t in bg_thresholds:
                    lab = labels_from_scores(scores, t, label_space, depths[i], refine_band)
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
    summary = []
    for w in deal_weights:
        for t in bg_thresholds:
            v = np.array([r["mIoU"] for r in rows if r["deal_weight"] == w and r["bg_threshold"] == t])
            summary.append({"deal_weight": float(w), "bg_threshold": float(t), "mIoU_mean": float(v.mean()),
                            "mIoU_std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                            "mIoU_min": float(v.min()), "mIoU_max": float(v.max()), "n_seeds": int(len(v))})
    result = {"split": split, "train_split": meta.get("split"), "label_space": label_space,
              "depth_subdir": depth_subdir, "refine_depth_subdir": refine_depth_subdir,
              "tags": "ground truth" if tags_from_gt else (str(tags_file) if tags_file else "predicted"),
              "train_tags": train_tags, "backbone": meta.get("backbone"), "epochs": cfg["epochs"],
              "seeds": seeds, "deal_weights": [float(w) for w in deal_weights],
              "bg_thresholds": [float(t) for t in bg_thresholds], "results": rows, "summary": summary,
              "best": max(summary, key=lambda r: r["mIoU_mean"]), "seconds": round(time.time() - t0, 1),
              "uses_ground_truth": bool(train_tags == "ground truth" or tags_from_gt)}
    out_json = Path(out_json) if out_json else Path(run_dir) / "cam_sweep.json"
    write_json(out_json, result)
    with open(out_json.with_suffix(".csv"), "w", newline="") as f:
        wr = csv.writer(f)
        keys = ["deal_weight", "seed", "bg_threshold", "mIoU", "mIoU_labelled", "coverage", "pixel_accuracy", "n_images"]
        wr.writerow(keys)
        for r in rows:
            wr.writerow([r[k] for k in keys])
    return result


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
               help=f"normalised CAM score at or below which a pixel is background (default {defaults.CAM_BG_THRESHOLD})")
    src = parser.add_mutually_exclusive_group()
    add_option(src, "--tags", metavar="FILE", help="restrict each image to its tags from this file")
    add_option(src, "--tags-from-gt", action="store_true", help="restrict each image to its GT classes (uses GT)")
    add_option(parser, "--refine-depth-subdir", default=None,
               help="snap boundaries to depth edges: .npy folder under the root, or 'disparity'")
    add_option(parser, "--refine-band", type=int, default=defaults.CAM_REFINE_BAND,
               help="px a boundary may move when snapping to depth edges")
    add_option(parser, "--device", choices=("cpu", "cuda"), default="cpu")
    add_option(parser, "--sweep-deal-weights", type=_floats, default=None, metavar="W1,W2",
               help="run the sweep over these DEAL weights (trains one head per weight x seed)")
    add_option(parser, "--sweep-bg-thresholds", type=_floats, default=list(defaults.SWEEP_CAM_BG_THRESHOLDS),
               metavar="T1,T2")
    add_option(parser, "--sweep-seeds", type=lambda s: [int(v) for v in _floats(s)], default=None, metavar="S1,S2")
    add_option(parser, "--depth-subdir", default=None, help="sweep: depth for DEAL (default: the base run's)")
    add_option(parser, "--sweep-out", default=None, help="sweep JSON (default RUN/cam_sweep.json)")


def run(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        print(f"generate-cam-pseudolabels: {msg}", file=sys.stderr)

    if args.sweep_deal_weights:
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
                                    refine_band=args.refine_band, device=args.device, log=log)
    msg = f"wrote {res['n_images']} label maps to {Path(args.cityscapes_root) / args.output_subdir}"
    if "mIoU" in res:
        msg += f"; mIoU {res['mIoU']:.2f} (labelled pixels {res['mIoU_labelled']:.2f}, coverage {res['coverage']:.1f}%)"
    print(msg)
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.generate_cam_pseudolabels"))
