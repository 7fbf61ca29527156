"""mIoU of unsupervised segments (ids with no class meaning) against ground-truth classes.

The protocols of DynaSeg (RyersonMultimediaLab/DynaSeg):

- ``hungarian`` (``Dynamicsegnet/core/evaluators/cluster_mIoU_evaluator.py``): a (C, K)
  confusion of GT classes x segment ids, a one-to-one Hungarian matching maximising the
  matched pixels, then per-class IoU ``TP / (GT_c + Pred_s - TP)`` of each class c with
  its segment s and the mean over classes (NaN classes left out). ``mode="image"``
  matches every image on its own and averages the per-image mIoU (the COCO per-image runs);
  ``average="ours"`` skips an image only when its mIoU is NaN, ``average="official"``
  scores each image exactly as ``ClusterIoUEvaluator`` does (:func:`official_image_metrics`:
  aAcc / mIoU / mAcc overall, and for the first ``num_thing_classes`` matched ids and the
  rest) and drops an image when *any* of those metrics is NaN, as
  ``Dynamicsegnet/utils/metrics_utils.calculate_metrics_average`` does (compared with
  RyersonMultimediaLab/DynaSeg at commit afc0f39debf0c953318ade5c284b4562bf61c0ef). The
  release's validation hook also keeps, per image, the epoch with the best mIoU against the
  ground truth (``engine/hooks/validate_hook.py``): an oracle choice, not done here;
  ``mode="dataset"`` pools one confusion over all images and matches once (segment ids
  must then mean the same thing in every image, e.g. clusters of one k-means).
  ``absent="match"`` (the reference): all C classes take part, so a class without GT
  pixels that is matched to a non-empty segment scores IoU 0; ``absent="skip"``: only
  classes with GT pixels are matched. Pixels of unmatched segments are misses of their GT
  class. The reference code needs K == C; any K works here.
- ``best_overlap`` (``tools/calculate_mIOU.py``, BSD500 / VOC): for every GT annotation
  of an image and every label in it, the best IoU over all segments (many-to-one); the
  mean over all (annotation, label) pairs of all images.

Percent values, like :mod:`evaluation.semantic`. Arrays: GT (H, W) integer class ids,
``ignore`` for unlabelled pixels; segments (H, W) non-negative integer ids.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .matching import hungarian_match
from .semantic import miou_from_confusion

MODES = ("image", "dataset")
ABSENT = ("match", "skip")
AVERAGES = ("ours", "official")
OFFICIAL_METRICS = ("aAcc", "mIoU", "mAcc")


def _official_result_metrics(hist: np.ndarray) -> dict:
    """aAcc, mIoU, mAcc (percent, NaN where undefined) of a reordered (C, C) histogram, as
    DynaSeg's ``get_result_metrics``: IoU = tp / (tp + fp + fn), means with NaN left out."""
    tp = np.diag(hist).astype(np.float64)
    fp, fn = hist.sum(0) - tp, hist.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, acc, a_acc = tp / (tp + fp + fn), tp / (tp + fn), tp.sum() / hist.sum()
    finite = lambda v: float(100 * np.mean(v[~np.isnan(v)])) if (~np.isnan(v)).any() else float("nan")  # noqa: E731
    return {"aAcc": float(100 * a_acc), "mIoU": finite(iou), "mAcc": finite(acc)}


def official_image_metrics(gt: np.ndarray, segments: np.ndarray, num_classes: int,
                           num_thing_classes: int | None = None) -> dict:
    """DynaSeg's ``ClusterIoUEvaluator`` on one image (percent; NaN where undefined).

    The (C, C) histogram of GT (rows; pixels outside [0, C) left out) by segment id; the
    Hungarian matching on ``max - hist``; row ``hist[c]`` moved to the row of its matched
    segment id; aAcc / mIoU / mAcc of that histogram and, with ``num_thing_classes`` t, of its
    first t x t block (``*_th``) and the rest (``*_st``) - the block split is by matched segment
    id, as the release does. Segment ids must be < C: larger ids land in wrong cells or, when
    ``C * gt + id`` reaches C^2, make the release's ``bincount(...).reshape`` fail, which it
    swallows, leaving the histogram empty (every metric NaN): both reproduced here.
    """
    from scipy.optimize import linear_sum_assignment

    c = int(num_classes)
    g = np.asarray(gt).reshape(-1).astype(np.int64)
    s = np.asarray(segments).reshape(-1).astype(np.int64)
    if g.shape != s.shape:
        raise ValueError(f"GT of {g.size} pixels vs segments of {s.size}")
    keep = (g >= 0) & (g < c)
    index = c * g[keep] + s[keep]
    if index.size and (index.max() >= c * c or index.min() < 0):
        hist = np.zeros((c, c), np.int64)
    else:
        hist = np.bincount(index, minlength=c * c).reshape(c, c)
    rows, cols = linear_sum_assignment(hist.max() - hist)
    new = np.zeros((c, c), np.int64)
    for r, col in zip(rows, cols):
        new[col] = hist[r]
    out = _official_result_metrics(new)
    if num_thing_classes is not None:
        t = int(num_thing_classes)
        for suffix, block in (("_th", new[:t, :t]), ("_st", new[t:, t:])):
            out.update({k + suffix: v for k, v in _official_result_metrics(block).items()})
    return out


def segment_confusion(gt: np.ndarray, segments: np.ndarray, num_classes: int, ignore: int = 255,
                      num_segments: int | None = None) -> np.ndarray:
    """(C, K) int64 pixel counts, rows GT classes 0..C-1, columns segment ids 0..K-1.

    GT pixels equal to ``ignore`` or outside [0, C) are skipped. ``num_segments``
    defaults to ``segments.max() + 1``; negative segment ids raise ValueError.
    """
    gt = np.asarray(gt)
    segments = np.asarray(segments)
    if gt.shape != segments.shape:
        raise ValueError(f"GT shape {gt.shape} and segments shape {segments.shape} differ")
    g = gt.reshape(-1).astype(np.int64)
    s = segments.reshape(-1).astype(np.int64)
    if s.size and s.min() < 0:
        raise ValueError("segment ids must be non-negative")
    k = int(num_segments if num_segments is not None else (s.max() + 1 if s.size else 0))
    if s.size and s.max() >= k:
        raise ValueError(f"segment id {int(s.max())} >= num_segments {k}")
    c = int(num_classes)
    valid = (g != ignore) & (g >= 0) & (g < c)
    return np.bincount(g[valid] * k + s[valid], minlength=c * k).reshape(c, k).astype(np.int64)


def match_segments(confusion: np.ndarray, absent: str = "match") -> np.ndarray:
    """(C,) int64: the segment matched to each class (Hungarian, maximal overlap), -1 if none."""
    if absent not in ABSENT:
        raise ValueError(f"absent={absent!r}: choose from {ABSENT}")
    cm = np.asarray(confusion, np.int64)
    rows = np.arange(cm.shape[0]) if absent == "match" else np.flatnonzero(cm.sum(1) > 0)
    out = np.full(cm.shape[0], -1, np.int64)
    if len(rows) == 0 or cm.shape[1] == 0:
        return out
    seg_to_row = hungarian_match(cm[rows].T)  # (K,) index into rows, 255 = unmatched
    for seg, r in enumerate(seg_to_row):
        if 0 <= r < len(rows):
            out[rows[r]] = seg
    return out


def matched_miou(confusion: np.ndarray, class_to_segment: np.ndarray) -> dict:
    """mIoU (percent) of classes scored against their matched segments.

    The matched columns form a (C, C) confusion; GT pixels in other segments are misses of
    their class. Returns :func:`evaluation.semantic.miou_from_confusion`'s dict plus
    ``class_to_segment``.
    """
    cm = np.asarray(confusion, np.int64)
    c = cm.shape[0]
    square = np.zeros((c, c), np.int64)
    for cls, seg in enumerate(class_to_segment):
        if seg >= 0:
            square[:, cls] = cm[:, seg]
    misses = cm.sum(1) - square.sum(1)
    result = miou_from_confusion(square, misses)
    result["class_to_segment"] = [int(v) for v in class_to_segment]
    return result


def hungarian_miou(confusion: np.ndarray, absent: str = "match") -> dict:
    """Match (:func:`match_segments`) and score (:func:`matched_miou`) one (C, K) confusion."""
    return matched_miou(confusion, match_segments(confusion, absent))


def unsupervised_miou(pairs: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int, *, mode: str = "image",
                      absent: str = "match", ignore: int = 255, average: str = "ours",
                      num_thing_classes: int | None = None) -> dict:
    """Hungarian mIoU of segments against GT over images ``(gt, segments)``.

    ``mode="image"``: per-image matching, ``mIoU`` = mean of the per-image mIoUs
    (``per_image`` lists them). ``average="ours"``: images whose mIoU is NaN (e.g. no
    labelled pixel) are skipped and counted in ``n_skipped``; ``average="official"``: the
    release's per-image metrics (:func:`official_image_metrics`) and an image is dropped when
    any of them is NaN; ``averages`` holds the mean of every metric over the kept images.
    ``mode="dataset"``: one pooled confusion, one matching (``per_class_iou``, ``class_to_segment``).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose from {MODES}")
    if average not in AVERAGES:
        raise ValueError(f"average={average!r}: choose from {AVERAGES}")
    if average == "official":
        if mode != "image":
            raise ValueError("average='official' is the per-image protocol (mode='image')")
        kept, skipped = [], 0
        for gt, seg in pairs:
            m = official_image_metrics(gt, seg, num_classes, num_thing_classes)
            if any(np.isnan(v) for v in m.values()):
                skipped += 1
                continue
            kept.append(m)
        averages = {k: float(np.mean([m[k] for m in kept])) for k in (kept[0] if kept else {})}
        return {"mode": mode, "average": average, "mIoU": averages.get("mIoU", float("nan")),
                "averages": averages, "per_image": [m["mIoU"] for m in kept], "n_images": len(kept),
                "n_skipped": skipped, "num_thing_classes": num_thing_classes}
    if mode == "image":
        per_image, skipped = [], 0
        for gt, seg in pairs:
            cm = segment_confusion(gt, seg, num_classes, ignore)
            r = hungarian_miou(cm, absent)
            if r["n_classes"] == 0:
                skipped += 1
                continue
            per_image.append(r["mIoU"])
        return {"mode": mode, "absent": absent, "average": average,
                "mIoU": float(np.mean(per_image)) if per_image else float("nan"),
                "per_image": per_image, "n_images": len(per_image), "n_skipped": skipped}
    confusions = [segment_confusion(gt, seg, num_classes, ignore) for gt, seg in pairs]
    k = max((cm.shape[1] for cm in confusions), default=0)
    total = np.zeros((int(num_classes), k), np.int64)
    for cm in confusions:
        total[:, : cm.shape[1]] += cm
    result = hungarian_miou(total, absent)
    result.update(mode=mode, absent=absent, n_images=len(confusions))
    return result


def best_overlap_miou(annotations: Sequence[Sequence[np.ndarray]], segment_maps: Sequence[np.ndarray],
                      ignore: int | None = None) -> dict:
    """The ``tools/calculate_mIOU.py`` protocol (BSD500 / VOC).

    annotations[i]: the GT annotations of image i (one or several (H, W) label maps, e.g.
    BSD500's human segmentations); segment_maps[i]: (H, W) segments. For each annotation
    and each label in it (``ignore`` excluded; the reference includes every label), the
    best IoU over segments; ``mIoU`` (percent) is the mean over all of them.
    """
    ious: list[float] = []
    for gts, seg in zip(annotations, segment_maps, strict=True):
        seg = np.asarray(seg).reshape(-1).astype(np.int64)
        if seg.size and seg.min() < 0:
            raise ValueError("segment ids must be non-negative")
        seg_sizes = np.bincount(seg)
        for gt in gts:
            g = np.asarray(gt).reshape(-1)
            if g.shape != seg.shape:
                raise ValueError(f"annotation of {g.size} pixels vs segments of {seg.size}")
            labels, g_idx = np.unique(g, return_inverse=True)
            inter = np.bincount(g_idx * len(seg_sizes) + seg, minlength=len(labels) * len(seg_sizes))
            inter = inter.reshape(len(labels), len(seg_sizes))
            gt_sizes = inter.sum(1)
            union = gt_sizes[:, None] + seg_sizes[None, :] - inter
            with np.errstate(divide="ignore", invalid="ignore"):
                best = np.where(union > 0, inter / np.maximum(union, 1), 0.0).max(1)
            for lab, b in zip(labels, best):
                if ignore is None or lab != ignore:
                    ious.append(float(b))
    return {"mIoU": float(100 * np.mean(ious)) if ious else float("nan"), "n_labels": len(ious)}
