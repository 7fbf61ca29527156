"""Instance segmentation metrics (AP / AR) for thing classes, three protocols.

Images are given in the panoptic convention used by :mod:`evaluation.panoptic`: an
(H, W) integer segment map plus a segment list ``[{"id", "category_id", "iscrowd"}]``
for ground truth, and an (H, W) segment map plus ``[{"id", "category_id"[, "score"]}]``
for the prediction. GT pixels whose id is 0 or not listed are void. Only segments whose
category is one of the ``thing_ids`` take part; everything else is ignored (except as
void / stuff pixels where a protocol says so).

Pseudo-labels carry no confidence, so the **score of a predicted instance is its area**
(pixel count at the resolution it is scored at) unless the segment has a ``score``.
**Ties** (equal scores) are broken by category id, then segment id (both ascending), then
image order: the order of :func:`order_predictions`, applied before any stable sort, so
results do not depend on the order segments are listed in.

``coco``
    The numbers of ``pycocotools`` ``COCOeval(iouType="segm")`` with its default
    parameters (IoU thresholds 0.50:0.05:0.95, 101 recall points, area range "all",
    100 detections per image): AP, AP50, AP75, AR@100, per class (``useCats=1``) and
    class-agnostic (``useCats=0``). A crowd GT segment (``iscrowd``) is an ignore region:
    IoU with it is intersection / prediction area; it can absorb any number of
    predictions. GT areas are pixel counts. Images enter in the order given (COCO's
    sorted image ids correspond to that order). Void pixels play no role.
``cityscapes``
    The arithmetic of ``cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling``
    (without distance thresholds): AP (mean over overlaps 0.50:0.05:0.95) and AP50 per
    class and averaged over classes with ground truth (nan-mean). GT instances < 100 px
    and crowd ("group") regions are not matched; an unmatched prediction is a false
    positive unless more than the overlap threshold of it lies on void pixels, crowd
    regions or those small instances of its class. Overlap = IoU > threshold (strict).
    Where cityscapesscripts would crash (predictions and GT exist for a class but none is
    matched nor a false positive) the class AP is 0.
``reference``
    The reference repository's ``evaluation/evaluate_cascade_pseudolabels.py``
    (qbit-glitch/monocular_ups): maps resized to 512x1024 (PIL nearest, bit-exact:
    :func:`resize_nearest`), class-agnostic;
    GT = non-crowd thing instances with >= 10 px after resizing; per image, IoU in float32
    ``inter / (union + 1e-8)``, AR@100 = fraction of GT whose best IoU >= 0.5 (not
    one-to-one), AP@50 / AP@75 = VOC all-point AP of a greedy score-ordered matching;
    averaged over images with GT (an image with GT and no prediction scores 0); images
    without GT are skipped (their predictions count only in ``avg_pred_instances``).

All metrics are percentages (0-100), unrounded. This module imports nothing from
``pseudo_labels``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from evaluation.pq_stats import EvaluationError
from evaluation.resize import resize_nearest

PROTOCOLS = ("coco", "cityscapes", "reference")
SCORE_DEFINITION = ("area: pixel count of the predicted segment at the evaluated resolution (a segment's own "
                    "'score' when given); ties broken by category id, then segment id, then image order")
#: pycocotools' default parameters (``Params.setDetParams``): exactly these float values
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
COCO_MAX_DETECTIONS = 100
#: cityscapesscripts' defaults (``args.overlaps``, ``args.minRegionSizes[0]``)
CITYSCAPES_OVERLAPS = np.arange(0.5, 1.0, 0.05)
CITYSCAPES_MIN_REGION_SIZE = 100
#: reference constants (evaluate_cascade_pseudolabels.py)
REFERENCE_SIZE = (512, 1024)
REFERENCE_GT_MIN_AREA = 10
REFERENCE_EPS = 1e-8


@dataclass
class InstanceImage:
    """One image. ``gt_map`` / ``pred_map``: (H, W) integer segment ids (same shape);
    ``pred_map`` None = no prediction (every GT instance is missed)."""

    image_id: Any
    gt_map: np.ndarray
    gt_segments: Sequence[Mapping]
    pred_map: np.ndarray | None
    pred_segments: Sequence[Mapping] = field(default_factory=list)


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown instance protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")


# --------------------------------------------------------------------------- overlaps
@dataclass
class _Overlaps:
    """Pixel counts of one image: ``inter`` (P, G), ``gt_area`` (G,), ``pred_area`` (P,),
    ``pred_void`` (P,) predicted pixels on GT void (ids 0 / unlisted)."""

    inter: np.ndarray
    gt_area: np.ndarray
    pred_area: np.ndarray
    pred_void: np.ndarray


def _compact(seg_map: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Segment map -> index into ``ids`` (sorted unique), ``len(ids)`` for pixels not listed."""
    flat = seg_map.ravel()
    if len(ids) == 0:
        return np.zeros(flat.shape, np.int64)
    pos = np.searchsorted(ids, flat)
    pos = np.minimum(pos, len(ids) - 1)
    return np.where(ids[pos] == flat, pos, len(ids)).astype(np.int64)


def overlaps(gt_map: np.ndarray, gt_ids: Sequence[int], pred_map: np.ndarray, pred_ids: Sequence[int]) -> _Overlaps:
    """Pixel counts of the listed GT and predicted segments (one joint histogram), in the
    order of ``gt_ids`` / ``pred_ids`` (each without duplicates)."""
    if gt_map.shape != pred_map.shape:
        raise EvaluationError(f"GT {gt_map.shape} and prediction {pred_map.shape} differ in size")
    g_ids, p_ids = np.asarray(gt_ids, np.int64), np.asarray(pred_ids, np.int64)
    g_sorted, p_sorted = np.sort(g_ids), np.sort(p_ids)
    if np.any(g_sorted[1:] == g_sorted[:-1]) or np.any(p_sorted[1:] == p_sorted[:-1]):
        raise EvaluationError("a segment id is listed twice")
    g_idx = _compact(np.asarray(gt_map).astype(np.int64, copy=False), g_sorted)
    p_idx = _compact(np.asarray(pred_map).astype(np.int64, copy=False), p_sorted)
    n_g, n_p = len(g_ids) + 1, len(p_ids) + 1
    table = np.bincount(p_idx * n_g + g_idx, minlength=n_p * n_g).reshape(n_p, n_g)
    g_rank, p_rank = np.searchsorted(g_sorted, g_ids), np.searchsorted(p_sorted, p_ids)
    return _Overlaps(inter=table[p_rank][:, g_rank], gt_area=table[:, g_rank].sum(0),
                     pred_area=table[p_rank].sum(1), pred_void=table[p_rank, -1])


# --------------------------------------------------------------------------- segment selection
def _gt_things(img: InstanceImage, thing_ids: set[int]) -> list[dict]:
    """GT thing segments ordered by (category, id)."""
    out = [dict(id=int(s["id"]), category_id=int(s["category_id"]), iscrowd=int(bool(s.get("iscrowd", 0))))
           for s in img.gt_segments if int(s["category_id"]) in thing_ids]
    return sorted(out, key=lambda s: (s["category_id"], s["id"]))


def order_predictions(segments: Sequence[Mapping], thing_ids: set[int]) -> list[dict]:
    """Predicted thing segments in the canonical tie-break order (category id, segment id)."""
    out = [dict(s) for s in segments if int(s["category_id"]) in thing_ids and int(s["id"]) != 0]
    return sorted(out, key=lambda s: (int(s["category_id"]), int(s["id"])))


def _scores(preds: Sequence[Mapping], areas: np.ndarray) -> np.ndarray:
    return np.array([float(p["score"]) if p.get("score") is not None else float(a) for p, a in zip(preds, areas)],
                    np.float64)


# --------------------------------------------------------------------------- COCO
def _coco_match(ious: np.ndarray, crowd: np.ndarray, scores: np.ndarray) -> dict:
    """COCOeval.evaluateImg for one (image, category-or-all) group, area 'all', maxDet 100.

    ``ious`` (D, G) with D in tie-break order, GT in (category, id) order; ``crowd`` (G,).
    """
    d_order = np.argsort(-scores, kind="mergesort")[:COCO_MAX_DETECTIONS]
    g_order = np.argsort(crowd.astype(np.int64), kind="mergesort")
    ious = ious[d_order][:, g_order] if ious.size else np.zeros((len(d_order), len(g_order)))
    gt_ignore = crowd[g_order].astype(bool)
    n_t, n_d, n_g = len(COCO_IOU_THRESHOLDS), len(d_order), len(g_order)
    dt_matched = np.zeros((n_t, n_d), bool)
    dt_ignore = np.zeros((n_t, n_d), bool)
    if n_d and n_g:
        for t, thr in enumerate(COCO_IOU_THRESHOLDS):
            gt_taken = np.zeros(n_g, bool)
            for d in range(n_d):
                best, m = min(thr, 1 - 1e-10), -1
                for g in range(n_g):
                    if gt_taken[g] and not gt_ignore[g]:
                        continue
                    if m > -1 and not gt_ignore[m] and gt_ignore[g]:
                        break
                    if ious[d, g] < best:
                        continue
                    best, m = ious[d, g], g
                if m == -1:
                    continue
                dt_ignore[t, d] = gt_ignore[m]
                dt_matched[t, d] = True
                gt_taken[m] = True
    return {"scores": scores[d_order], "matched": dt_matched, "ignored": dt_ignore, "gt_ignore": gt_ignore}


def coco_image_record(img: InstanceImage, thing_ids: Sequence[int]) -> dict:
    """Per-image COCO matching: ``{"per_class": {cat: group}, "agnostic": group or None}``
    (a group is None where the image has neither GT nor predictions for it)."""
    things = set(int(c) for c in thing_ids)
    gts = _gt_things(img, things)
    preds = order_predictions(img.pred_segments, things) if img.pred_map is not None else []
    pred_map = img.pred_map if img.pred_map is not None else np.zeros_like(img.gt_map)
    ov = overlaps(img.gt_map, [g["id"] for g in gts], pred_map, [p["id"] for p in preds])
    crowd = np.array([g["iscrowd"] for g in gts], bool)
    union = ov.pred_area[:, None] + ov.gt_area[None, :] - ov.inter
    denom = np.where(crowd[None, :], ov.pred_area[:, None], union).astype(np.float64)
    ious = np.divide(ov.inter, denom, out=np.zeros(denom.shape), where=denom > 0)
    scores = _scores(preds, ov.pred_area)
    g_cat = np.array([g["category_id"] for g in gts], np.int64)
    p_cat = np.array([p["category_id"] for p in preds], np.int64)
    per_class = {}
    for c in sorted(things):
        gi, pi = np.flatnonzero(g_cat == c), np.flatnonzero(p_cat == c)
        per_class[c] = None if not len(gi) and not len(pi) else _coco_match(ious[pi][:, gi], crowd[gi], scores[pi])
    agnostic = None if not gts and not preds else _coco_match(ious, crowd, scores)
    return {"image_id": img.image_id, "per_class": per_class, "agnostic": agnostic}


def _coco_accumulate(groups: Sequence[dict | None]) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.accumulate for one category over images: precision (T, R), recall (T,); -1 where no GT."""
    n_t, n_r = len(COCO_IOU_THRESHOLDS), len(COCO_RECALL_THRESHOLDS)
    groups = [g for g in groups if g is not None]
    precision, recall = -np.ones((n_t, n_r)), -np.ones(n_t)
    if not groups:
        return precision, recall
    scores = np.concatenate([g["scores"] for g in groups])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([g["matched"] for g in groups], axis=1)[:, order]
    ignored = np.concatenate([g["ignored"] for g in groups], axis=1)[:, order]
    n_pos = int(np.count_nonzero(~np.concatenate([g["gt_ignore"] for g in groups])))
    if n_pos == 0:
        return precision, recall
    tp_sum = np.cumsum(matched & ~ignored, axis=1).astype(float)
    fp_sum = np.cumsum(~matched & ~ignored, axis=1).astype(float)
    for t in range(n_t):
        tp, fp = tp_sum[t], fp_sum[t]
        nd = len(tp)
        rc = tp / n_pos
        pr = tp / (fp + tp + np.spacing(1))
        recall[t] = rc[-1] if nd else 0
        pr = np.maximum.accumulate(pr[::-1])[::-1] if nd else pr
        q = np.zeros(n_r)
        idx = np.searchsorted(rc, COCO_RECALL_THRESHOLDS, side="left")
        valid = np.flatnonzero(idx >= nd)
        stop = valid[0] if len(valid) else n_r  # pycocotools stops at the first index past the end
        q[:stop] = pr[idx[:stop]]
        precision[t] = q
    return precision, recall


def _coco_summary(precision: np.ndarray, recall: np.ndarray) -> dict:
    """AP, AP50, AP75, AR100 (percent) from precision (T, R, K) and recall (T, K) as COCOeval.summarize."""
    def mean(x):
        x = x[x > -1]
        return float(np.mean(x)) * 100 if x.size else float("nan")

    return {"AP": mean(precision), "AP50": mean(precision[0]), "AP75": mean(precision[5]), "AR100": mean(recall)}


def summarize_coco(records: Sequence[dict], thing_ids: Sequence[int], names: Mapping[int, str] | None = None) -> dict:
    """Per class (``useCats=1``) and class-agnostic (``useCats=0``) COCO numbers from image records."""
    cats = sorted(int(c) for c in thing_ids)
    prec, rec = zip(*[_coco_accumulate([r["per_class"].get(c) for r in records]) for c in cats]) if cats else ((), ())
    precision = np.stack(prec, axis=2) if cats else -np.ones((len(COCO_IOU_THRESHOLDS), len(COCO_RECALL_THRESHOLDS), 0))
    recall = np.stack(rec, axis=1) if cats else -np.ones((len(COCO_IOU_THRESHOLDS), 0))
    out = _coco_summary(precision, recall)
    per_class = {}
    for k, c in enumerate(cats):
        s = _coco_summary(precision[:, :, k:k + 1], recall[:, k:k + 1])
        per_class[_name(names, c)] = {**s, "category_id": c}
    ap, ar = _coco_accumulate([r["agnostic"] for r in records])
    out["class_agnostic"] = _coco_summary(ap[:, :, None], ar[:, None])
    out["per_class"] = per_class
    return out


def _name(names: Mapping[int, str] | None, c: int) -> str:
    return str(names[c]) if names and c in names else str(c)


# --------------------------------------------------------------------------- Cityscapes
def cityscapes_image_record(img: InstanceImage, thing_ids: Sequence[int],
                            min_region_size: int = CITYSCAPES_MIN_REGION_SIZE) -> dict:
    """Per image and class: for each overlap threshold the (y_true, y_score) entries and
    the hard false negatives, plus whether the class has GT / predictions here."""
    things = set(int(c) for c in thing_ids)
    gts = _gt_things(img, things)
    preds = order_predictions(img.pred_segments, things) if img.pred_map is not None else []
    pred_map = img.pred_map if img.pred_map is not None else np.zeros_like(img.gt_map)
    listed = [int(s["id"]) for s in img.gt_segments]
    ov = overlaps(img.gt_map, [g["id"] for g in gts], pred_map, [p["id"] for p in preds])
    # void: GT pixels that are 0 or not listed at all (any category)
    void = overlaps(img.gt_map, listed, pred_map, [p["id"] for p in preds]).pred_void
    scores = _scores(preds, ov.pred_area)
    g_cat = np.array([g["category_id"] for g in gts], np.int64)
    p_cat = np.array([p["category_id"] for p in preds], np.int64)
    crowd = np.array([g["iscrowd"] for g in gts], bool)
    out = {}
    for c in sorted(things):
        gi = np.flatnonzero(g_cat == c)
        pi = np.flatnonzero((p_cat == c) & (ov.pred_area > 0))
        inter = ov.inter[pi][:, gi].astype(np.float64)
        union = ov.pred_area[pi, None] + ov.gt_area[None, gi] - inter
        iou = np.divide(inter, union, out=np.zeros(union.shape), where=union > 0)
        kept = ~crowd[gi] & (ov.gt_area[gi] >= min_region_size)
        # as cityscapesscripts: crowd and small-GT intersections add up separately (a small crowd twice)
        small = ov.gt_area[gi] < min_region_size
        ignore_px = void[pi] + (inter * crowd[gi][None, :]).sum(1) + (inter * small[None, :]).sum(1)
        per_thr = []
        for thr in CITYSCAPES_OVERLAPS:
            y_true, y_score, hard_fn = [], [], 0
            for k in np.flatnonzero(kept):
                hits = np.flatnonzero((inter[:, k] > 0) & (iou[:, k] > thr))
                if not len(hits):
                    hard_fn += 1
                    continue
                s = np.sort(scores[pi][hits])[::-1]
                y_true += [1] + [0] * (len(s) - 1)
                y_score += s.tolist()
            for j in range(len(pi)):
                found = np.any((inter[j] > 0) & (iou[j] > thr))
                if not found and ignore_px[j] / ov.pred_area[pi[j]] <= thr:
                    y_true.append(0)
                    y_score.append(float(scores[pi[j]]))
            per_thr.append((np.array(y_true, float), np.array(y_score, float), hard_fn))
        out[c] = {"have_gt": bool(kept.any()), "have_pred": bool(len(pi)), "per_threshold": per_thr}
    return {"image_id": img.image_id, "per_class": out}


def _cityscapes_ap(y_true: np.ndarray, y_score: np.ndarray, hard_fn: int) -> float:
    """AP of cityscapesscripts' evaluateMatches from the pooled entries of one class and threshold."""
    if len(y_score) == 0:
        return 0.0
    order = np.argsort(y_score)
    y_score_sorted, y_true_sorted = y_score[order], y_true[order]
    cum = np.cumsum(y_true_sorted)
    _, unique_idx = np.unique(y_score_sorted, return_index=True)
    n_pr = len(unique_idx) + 1
    n_examples, n_true = len(y_score_sorted), cum[-1]
    precision, recall = np.zeros(n_pr), np.zeros(n_pr)
    cum = np.append(cum, 0)
    for i, idx in enumerate(unique_idx):
        below = cum[idx - 1]
        tp = n_true - below
        fp = n_examples - idx - tp
        fn = below + hard_fn
        precision[i] = float(tp) / (tp + fp)
        recall[i] = float(tp) / (tp + fn)
    precision[-1], recall[-1] = 1.0, 0.0
    r = np.append(recall[0], recall)
    r = np.append(r, 0.0)
    steps = np.convolve(r, [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, steps))


def summarize_cityscapes(records: Sequence[dict], thing_ids: Sequence[int],
                         names: Mapping[int, str] | None = None) -> dict:
    """AP and AP50 (percent) per class and averaged, as cityscapesscripts' computeAverages."""
    cats = sorted(int(c) for c in thing_ids)
    ap = np.zeros((len(cats), len(CITYSCAPES_OVERLAPS)))
    for k, c in enumerate(cats):
        rs = [r["per_class"][c] for r in records if c in r["per_class"]]
        have_gt = any(r["have_gt"] for r in rs)
        have_pred = any(r["have_pred"] for r in rs)
        for o in range(len(CITYSCAPES_OVERLAPS)):
            if not have_gt:
                ap[k, o] = float("nan")
            elif not have_pred:
                ap[k, o] = 0.0
            else:
                yt = np.concatenate([r["per_threshold"][o][0] for r in rs])
                ys = np.concatenate([r["per_threshold"][o][1] for r in rs])
                ap[k, o] = _cityscapes_ap(yt, ys, sum(r["per_threshold"][o][2] for r in rs))
    o50 = int(np.flatnonzero(np.isclose(CITYSCAPES_OVERLAPS, 0.5))[0])

    def nanmean(x):
        return float(np.nanmean(x)) * 100 if np.any(~np.isnan(x)) else float("nan")

    out = {"AP": nanmean(ap), "AP50": nanmean(ap[:, o50])}
    out["per_class"] = {_name(names, c): {"AP": float(np.average(ap[k])) * 100, "AP50": float(ap[k, o50]) * 100,
                                          "category_id": c} for k, c in enumerate(cats)}
    return out


# --------------------------------------------------------------------------- reference
def _voc_ap(iou: np.ndarray, order: np.ndarray, thr: float, n_gt: int) -> float:
    n_pred = iou.shape[0]
    taken: set[int] = set()
    tp, fp = np.zeros(n_pred), np.zeros(n_pred)
    for rank, i in enumerate(order):
        row = iou[i].copy()
        for j in taken:
            row[j] = 0.0
        j = int(np.argmax(row))
        if row[j] >= thr:
            tp[rank] = 1
            taken.add(j)
        else:
            fp[rank] = 1
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    prec = ctp / (ctp + cfp + REFERENCE_EPS)
    rec = ctp / (n_gt + REFERENCE_EPS)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([1.0], prec, [0.0]))
    for k in range(len(mpre) - 1, 0, -1):
        mpre[k - 1] = max(mpre[k - 1], mpre[k])
    idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mpre[idx]))


def reference_image_record(img: InstanceImage, thing_ids: Sequence[int], size: tuple[int, int] = REFERENCE_SIZE) -> dict:
    """The reference's per-image numbers (class-agnostic) at ``size``: ``{"n_pred", "n_gt",
    "recall", "ap50", "ap75"}``; recall/ap None when the image has no GT."""
    things = set(int(c) for c in thing_ids)
    gt_map = resize_nearest(np.asarray(img.gt_map), size)
    gts = [g for g in _gt_things(img, things) if not g["iscrowd"]]
    preds = order_predictions(img.pred_segments, things) if img.pred_map is not None else []
    pred_map = resize_nearest(np.asarray(img.pred_map), size) if img.pred_map is not None else np.zeros(size, np.int64)
    ov = overlaps(gt_map, [g["id"] for g in gts], pred_map, [p["id"] for p in preds])
    keep_g = ov.gt_area >= REFERENCE_GT_MIN_AREA
    # every listed prediction is a mask, also one that vanished in the resize (as the reference's npz masks)
    inter = ov.inter[:, keep_g].astype(np.float32)
    gt_area = ov.gt_area[keep_g].astype(np.float32)
    pred_area = ov.pred_area.astype(np.float32)
    scores = _scores(preds, ov.pred_area)
    rec = {"image_id": img.image_id, "n_pred": len(preds), "n_gt": int(keep_g.sum()),
           "recall": None, "ap50": None, "ap75": None}
    if rec["n_gt"] == 0:
        return rec
    if rec["n_pred"] == 0:
        rec.update(recall=0.0, ap50=0.0, ap75=0.0)
        return rec
    iou = inter / (pred_area[:, None] + gt_area[None, :] - inter + np.float32(REFERENCE_EPS))
    order = np.argsort(-scores, kind="stable")
    rec["recall"] = float((iou.max(axis=0) >= 0.5).sum() / rec["n_gt"])
    rec["ap50"] = _voc_ap(iou, order, 0.5, rec["n_gt"])
    rec["ap75"] = _voc_ap(iou, order, 0.75, rec["n_gt"])
    return rec


def summarize_reference(records: Sequence[dict]) -> dict:
    """AR@100, AP@50, AP@75 (percent, unrounded; the reference prints them rounded to 2 decimals)."""
    used = [r for r in records if r["recall"] is not None]

    def mean(key):
        return float(np.mean([r[key] for r in used])) * 100 if used else 0.0

    return {"AR100": mean("recall"), "AP50": mean("ap50"), "AP75": mean("ap75"),
            "avg_pred_instances": float(np.mean([r["n_pred"] for r in records])) if records else 0.0,
            "avg_gt_instances": float(np.mean([r["n_gt"] for r in records])) if records else 0.0,
            "n_images_scored": len(used)}


# --------------------------------------------------------------------------- entry points
def image_record(img: InstanceImage, protocol: str, thing_ids: Sequence[int]) -> dict:
    """The per-image record of ``protocol`` (picklable; feed a list to :func:`summarize`)."""
    _check_protocol(protocol)
    if img.pred_map is not None and np.shape(img.pred_map) != np.shape(img.gt_map):
        raise EvaluationError(f"image {img.image_id}: prediction {np.shape(img.pred_map)} and GT "
                              f"{np.shape(img.gt_map)} differ in size")
    if protocol == "coco":
        return coco_image_record(img, thing_ids)
    if protocol == "cityscapes":
        return cityscapes_image_record(img, thing_ids)
    return reference_image_record(img, thing_ids)


def summarize(records: Sequence[dict], protocol: str, thing_ids: Sequence[int],
              names: Mapping[int, str] | None = None) -> dict:
    """Result dict of ``protocol``: its metrics (percent), ``per_class`` where the protocol has
    classes, ``protocol``, ``score`` (:data:`SCORE_DEFINITION`) and ``n_images``."""
    _check_protocol(protocol)
    if protocol == "coco":
        out = summarize_coco(records, thing_ids, names)
    elif protocol == "cityscapes":
        out = summarize_cityscapes(records, thing_ids, names)
    else:
        out = summarize_reference(records)
    return {"protocol": protocol, "score": SCORE_DEFINITION, "n_images": len(records), **out}


def evaluate_instances(images: Iterable[InstanceImage], protocol: str, thing_ids: Sequence[int],
                       names: Mapping[int, str] | None = None) -> dict:
    """Score ``images`` (in order) with ``protocol``; see the module docstring."""
    return summarize([image_record(im, protocol, thing_ids) for im in images], protocol, thing_ids, names)


# --------------------------------------------------------------------------- Cityscapes instanceIds
def segments_from_instance_ids(instance_ids: np.ndarray, void_label_ids: Iterable[int],
                               instance_label_ids: Iterable[int]) -> list[dict]:
    """GT segments of a Cityscapes ``*_instanceIds.png`` array (used as the segment map itself).

    Values >= 1000 are instances (category ``v // 1000``); values < 1000 are class regions:
    void when in ``void_label_ids`` (not listed), crowd (``iscrowd`` 1) when the label has
    instances (a "group"), else a stuff segment. This is how cityscapesscripts reads them.
    """
    void = set(int(v) for v in void_label_ids)
    inst = set(int(v) for v in instance_label_ids)
    out = []
    for v in np.unique(instance_ids).tolist():
        v = int(v)
        if v >= 1000:
            out.append({"id": v, "category_id": v // 1000, "iscrowd": 0})
        elif v not in void:
            out.append({"id": v, "category_id": v, "iscrowd": int(v in inst)})
    return out


# --------------------------------------------------------------------------- panoptic folders
@dataclass
class _InstanceJob:
    image_id: Any
    gt_path: str
    gt_segments: list
    pred_path: str | None  # None: no prediction for this image
    pred_segments: list


def _instance_job_record(job: _InstanceJob, protocol: str, thing_ids: tuple[int, ...]) -> dict:
    from evaluation.panoptic import read_panoptic_png

    gt = read_panoptic_png(job.gt_path)
    pred = read_panoptic_png(job.pred_path) if job.pred_path is not None else None
    if pred is not None and pred.shape != gt.shape:
        raise EvaluationError(f"image {job.image_id}: prediction {job.pred_path} is {pred.shape}, "
                              f"ground truth {job.gt_path} is {gt.shape}")
    return image_record(InstanceImage(job.image_id, gt, job.gt_segments, pred, job.pred_segments), protocol, thing_ids)


def _image_order(image_id: Any):
    return (0, image_id, "") if isinstance(image_id, (int, np.integer)) else (1, 0, str(image_id))


def evaluate_instance_folders(gt_json: str | Any, gt_folder: str | Any, pred_json: str | Any, pred_folder: str | Any,
                              protocol: str = "coco", allow_missing: bool = False,
                              map_fn=None) -> dict:
    """Instance AP/AR of a panoptic prediction (JSON + PNG folder) against panoptic GT.

    Thing classes = GT categories with ``isthing`` (names from the GT JSON); predicted
    segments of other categories are ignored. Images are paired by ``image_id`` and taken
    in image-id order (as COCO sorts its image ids: the cross-image tie-break). A GT image
    without a prediction is an error unless ``allow_missing`` (then all its instances are
    missed). With Cityscapes panoptic GT, caravan / trailer pixels are void (id 0), whereas
    cityscapesscripts' instance evaluation on ``*_instanceIds.png`` sees them as ordinary
    non-void pixels: an unmatched prediction on them may be ignored here and not there.
    ``map_fn(func, items)`` (optional) runs the per-image work (picklable). Returns
    :func:`summarize` plus ``n_missing``.
    """
    import functools
    from pathlib import Path

    from evaluation.panoptic import _load_json, normalize_categories

    _check_protocol(protocol)
    gt = _load_json(gt_json, "ground-truth")
    pred = _load_json(pred_json, "prediction")
    if not isinstance(gt.get("categories"), list) or not gt["categories"]:
        raise EvaluationError(f"{gt_json}: ground-truth JSON has no 'categories' list")
    categories = normalize_categories(gt["categories"])
    things = tuple(sorted(c for c, v in categories.items() if v.get("isthing") == 1))
    names = {c: str(categories[c]["name"]) for c in things}
    preds = {a["image_id"]: a for a in pred["annotations"]}
    jobs, missing = [], []
    for a in sorted(gt["annotations"], key=lambda a: _image_order(a["image_id"])):
        p = preds.get(a["image_id"])
        if p is None:
            if not allow_missing:
                raise EvaluationError(f"no prediction for image {a['image_id']} in {pred_json} "
                                      "(use --allow-missing to count its instances as missed)")
            missing.append(a["image_id"])
        jobs.append(_InstanceJob(a["image_id"], str(Path(gt_folder) / a["file_name"]), a["segments_info"],
                                 None if p is None else str(Path(pred_folder) / p["file_name"]),
                                 [] if p is None else p["segments_info"]))
    func = functools.partial(_instance_job_record, protocol=protocol, thing_ids=things)
    records = list(map_fn(func, jobs)) if map_fn is not None else [func(j) for j in jobs]
    result = summarize(records, protocol, things, names)
    result["n_missing"] = len(missing)
    return result
