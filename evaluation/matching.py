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
