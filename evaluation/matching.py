"""Cluster -> class matching from a (K, C) confusion matrix (rows clusters, columns classes).

The returned (K,) int64 array is the mapping written into result files by callers;
255 marks a cluster left unmatched.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

UNMATCHED = 255


def _check(confusion: np.ndarray) -> np.ndarray:
    cm = np.asarray(confusion)
    if cm.ndim != 2:
        raise ValueError(f"confusion must be a (K, C) matrix, got shape {cm.shape}")
    return cm


def hungarian_match(confusion: np.ndarray) -> np.ndarray:
    """One-to-one matching maximising the total overlap (scipy ``linear_sum_assignment``).

    confusion: (K, C) pixel counts, rows = clusters, columns = classes. Returns (K,) int64
    class per cluster; when K > C, the K - C clusters left over get 255. Ties are broken
    by scipy's deterministic solver.
    """
    cm = _check(confusion).astype(np.float64)
    out = np.full(cm.shape[0], UNMATCHED, np.int64)
    if cm.size == 0:
        return out
    rows, cols = linear_sum_assignment(cm, maximize=True)
    out[rows] = cols
    return out


def majority_match(confusion: np.ndarray) -> np.ndarray:
    """Each cluster takes the class it overlaps most (argmax of its row; lowest class on ties).

    confusion: (K, C). Returns (K,) int64; rows with no pixels get 255. Many-to-one.
    """
    cm = _check(confusion)
    out = np.full(cm.shape[0], UNMATCHED, np.int64)
    if cm.shape[1] == 0:
        return out
    nonempty = cm.sum(1) > 0
    out[nonempty] = np.argmax(cm[nonempty], axis=1)
    return out


def apply_mapping(labels: np.ndarray, mapping: np.ndarray, void: int = UNMATCHED) -> np.ndarray:
    """Map an integer cluster map through ``mapping`` (K,); ids outside [0, K) -> ``void``. Same shape, int64."""
    labels = np.asarray(labels)
    lut = np.asarray(mapping, np.int64)
    ok = (labels >= 0) & (labels < len(lut))
    return np.where(ok, lut[np.clip(labels, 0, max(len(lut) - 1, 0))] if len(lut) else void, void)


MATCHINGS = ("hungarian", "majority")


def match_clusters(confusion: np.ndarray, method: str, unmatched: int = UNMATCHED) -> np.ndarray:
    """(K,) int64 class per cluster from a (K, C) confusion by ``method`` (hungarian / majority);
    ``unmatched`` for clusters left over, clusters that never overlap a labelled pixel, and
    clusters matched to a class they never overlap (hungarian with K < C)."""
    cm = _check(confusion)
    if method == "hungarian":
        mapping = hungarian_match(cm)
    elif method == "majority":
        mapping = majority_match(cm)
    else:
        raise ValueError(f"unknown matching {method!r} (choose {', '.join(MATCHINGS)})")
    mapping = np.asarray(mapping, np.int64).copy()
    mapping[(mapping < 0) | (mapping >= cm.shape[1])] = unmatched  # the matcher's "unmatched"
    mapping[cm.sum(axis=1) == 0] = unmatched
    rows = np.flatnonzero(mapping != unmatched)
    mapping[rows[cm[rows, mapping[rows]] == 0]] = unmatched
    return mapping


def cluster_class_confusion(clusters: np.ndarray, gt: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """(k, C) int64 pixel confusion of one image: ``clusters`` (H, W) ids (outside 0..k-1 ignored),
    ``gt`` (H, W) class ids (outside 0..C-1, e.g. 255 void, ignored). Sum over images to accumulate."""
    a = np.asarray(clusters).ravel().astype(np.int64)
    b = np.asarray(gt).ravel().astype(np.int64)
    if a.shape != b.shape:
        raise ValueError(f"cluster map and ground truth differ in size: {np.shape(clusters)} vs {np.shape(gt)}")
    ok = (a >= 0) & (a < k) & (b >= 0) & (b < num_classes)
    return np.bincount(a[ok] * num_classes + b[ok], minlength=k * num_classes).reshape(k, num_classes)


def mapped_confusion(confusion: np.ndarray, mapping: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, C) confusion of the mapped prediction (rows GT, columns prediction) and (C,) GT pixels
    whose cluster is unmatched (predicted void), from a (K, C) cluster confusion and a (K,)
    mapping: no image is read again."""
    cm = np.asarray(confusion, np.int64)
    c = cm.shape[1]
    lut = np.asarray(mapping, np.int64)
    out = np.zeros((c, c), np.int64)
    for cls in range(c):
        rows = lut == cls
        if rows.any():
            out[:, cls] = cm[rows].sum(axis=0)
    return out, cm[(lut < 0) | (lut >= c)].sum(axis=0)
