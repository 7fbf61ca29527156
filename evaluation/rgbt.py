"""Unsupervised semantic scores over any label table, overall and per group (e.g. day / night).

Input: per-image cluster-by-class pixel confusions ``(K, C)`` int64 (rows: cluster ids
0..K-1 of a prediction, columns: ground-truth class ids 0..C-1, void GT pixels left out),
and a group name per image. One cluster -> class mapping is fitted on the sum over *all*
images (Hungarian one-to-one for K = C, or majority vote for K > C, as in STEGO-style
unsupervised evaluation) and then applied to every group, so day and night are scored with
the same mapping (a mapping per group would flatter each group).

``ignore_classes``: class ids scored as void (their GT pixels are dropped before matching;
e.g. MFNet's class 0 'unlabeled' when only the 8 object classes are evaluated).

Scores: mIoU (percent, mean over classes with GT or predicted pixels), per-class IoU,
pixel accuracy (percent), computed by :mod:`evaluation.semantic`; pixels of clusters left
unmatched (Hungarian with K > C, or clusters that never meet a labelled pixel) count as
misses of their GT class. Imports nothing from ``pseudo_labels``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .matching import UNMATCHED, hungarian_match, majority_match
from .semantic import miou_from_confusion

METHODS = ("hungarian", "majority")


def match_clusters(confusion: np.ndarray, method: str) -> np.ndarray:
    """(K,) int64 class per cluster (255 unmatched) from a (K, C) confusion; clusters that
    never overlap a labelled pixel, or are matched to a class they never overlap, stay 255."""
    cm = np.asarray(confusion, np.int64)
    if method == "hungarian":
        mapping = hungarian_match(cm)
    elif method == "majority":
        mapping = majority_match(cm)
    else:
        raise ValueError(f"unknown matching {method!r} (choose {', '.join(METHODS)})")
    mapping = np.asarray(mapping, np.int64).copy()
    rows = np.flatnonzero(mapping != UNMATCHED)
    mapping[rows[cm[rows, mapping[rows]] == 0]] = UNMATCHED
    mapping[cm.sum(axis=1) == 0] = UNMATCHED
    return mapping


def class_confusion(confusion: np.ndarray, mapping: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, C) confusion of the mapped prediction (rows GT) and (C,) GT pixels whose cluster is
    unmatched, from a (K, C) cluster confusion and a (K,) mapping."""
    cm = np.asarray(confusion, np.int64)
    k, c = cm.shape
    out = np.zeros((c, c), np.int64)
    mapping = np.asarray(mapping, np.int64)
    for cls in range(c):
        rows = mapping == cls
        if rows.any():
            out[:, cls] = cm[rows].sum(axis=0)
    unmatched = (mapping < 0) | (mapping >= c)
    return out, cm[unmatched].sum(axis=0)


def _scores(confusion: np.ndarray, mapping: np.ndarray, names: Sequence[str]) -> dict:
    cm, misses = class_confusion(confusion, mapping)
    res = miou_from_confusion(cm, misses)
    res["per_class"] = {n: v for n, v in zip(names, res.pop("per_class_iou"))}
    res["pixels"] = int(cm.sum() + misses.sum())
    return res


def evaluate_unsupervised(confusions: Mapping[str, np.ndarray], groups: Mapping[str, str] | None = None,
                          method: str = "hungarian", class_names: Sequence[str] | None = None,
                          ignore_classes: Sequence[int] = ()) -> dict:
    """Scores of a clustering against ground truth, overall and per group.

    ``confusions``: image name -> (K, C) cluster-by-class confusion. ``groups``: image name ->
    group (e.g. ``day`` / ``night``); images without a group are only in ``overall``.
    Returns ``{"method", "k", "classes" (evaluated names), "mapping" (K ints, class id of the
    full table or 255), "overall": scores, "groups": {name: scores}, "images": {group: count}}``
    with scores ``{"mIoU", "per_class" {name: IoU}, "pixel_accuracy", "n_classes", "pixels"}``.
    """
    if not confusions:
        raise ValueError("no images to evaluate")
    mats = {n: np.asarray(m, np.int64) for n, m in confusions.items()}
    shapes = {m.shape for m in mats.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"confusions must all be (K, C) of one shape, got {sorted(shapes)}")
    k, c = next(iter(shapes))
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for {c} classes")
    keep = [i for i in range(c) if i not in set(int(v) for v in ignore_classes)]
    kept_names = [names[i] for i in keep]
    total = sum(mats.values())[:, keep]
    mapping = match_clusters(total, method)
    result = {"method": method, "k": int(k), "classes": kept_names,
              "ignored_classes": [names[i] for i in range(c) if i not in keep],
              "mapping": [int(keep[v]) if v != UNMATCHED else UNMATCHED for v in mapping],
              "overall": _scores(total, mapping, kept_names), "groups": {}, "images": {"overall": len(mats)}}
    groups = dict(groups or {})
    for g in sorted(set(groups.values())):
        members = [n for n in mats if groups.get(n) == g]
        if members:
            result["groups"][g] = _scores(sum(mats[n] for n in members)[:, keep], mapping, kept_names)
            result["images"][g] = len(members)
    return result


def cluster_class_confusion(clusters: np.ndarray, gt: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """(k, C) int64 pixel confusion of one image: ``clusters`` (H, W) ids (outside 0..k-1 ignored),
    ``gt`` (H, W) class ids (outside 0..C-1, e.g. 255 void, ignored)."""
    a = np.asarray(clusters).ravel().astype(np.int64)
    b = np.asarray(gt).ravel().astype(np.int64)
    if a.shape != b.shape:
        raise ValueError(f"cluster map and ground truth differ in size: {np.shape(clusters)} vs {np.shape(gt)}")
    ok = (a >= 0) & (a < k) & (b >= 0) & (b < num_classes)
    return np.bincount(a[ok] * num_classes + b[ok], minlength=k * num_classes).reshape(k, num_classes)
