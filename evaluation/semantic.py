"""Semantic segmentation metrics: confusion matrix and mIoU.

Conventions: rows of the confusion matrix are ground truth, columns prediction.
Pixels whose GT equals ``ignore`` are skipped; a prediction outside ``[0, C)`` (e.g. 255,
unmapped) on a valid GT pixel counts as a miss of the GT class (it adds to no column but
the row's total, so it lowers that class's IoU and the pixel accuracy). A class with no
GT pixel and no predicted pixel has IoU NaN and is left out of the mean.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int = 19, ignore: int = 255) -> np.ndarray:
    """(C, C) int64 pixel counts, rows = GT trainId, columns = predicted trainId.

    gt, pred: integer arrays of one shape. GT pixels equal to ``ignore`` (or outside
    [0, C)) are skipped. Predicted values outside [0, C) (e.g. 255 = unmapped) on valid GT
    pixels fall in no column: use :func:`confusion_matrix_with_misses` to keep them as
    misses of the GT class (what the ``evaluate`` CLI does).
    """
    cm, _ = confusion_matrix_with_misses(gt, pred, num_classes, ignore)
    return cm


def confusion_matrix_with_misses(gt: np.ndarray, pred: np.ndarray, num_classes: int = 19, ignore: int = 255,
                                 ) -> tuple[np.ndarray, np.ndarray]:
    """(C, C) int64 confusion (rows GT) and (C,) int64 GT pixels predicted outside [0, C)."""
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"GT shape {gt.shape} and prediction shape {pred.shape} differ")
    C = int(num_classes)
    g = gt.reshape(-1).astype(np.int64)
    p = pred.reshape(-1).astype(np.int64)
    valid = (g != ignore) & (g >= 0) & (g < C)
    g, p = g[valid], p[valid]
    p = np.where((p >= 0) & (p < C), p, C)  # column C: outside the classes
    full = np.bincount(g * (C + 1) + p, minlength=C * (C + 1)).reshape(C, C + 1)
    return full[:, :C].astype(np.int64), full[:, C].astype(np.int64)


def miou_from_confusion(cm: np.ndarray, misses: np.ndarray | None = None) -> dict:
    """mIoU (percent) from a (C, C) confusion matrix (rows GT).

    IoU_c = TP / (GT_c + Pred_c - TP), with GT_c including ``misses`` (GT pixels predicted
    outside the classes) when given. Classes with no GT and no prediction get NaN and are
    excluded from the mean. Returns ``{"mIoU", "per_class_iou" (list of C floats, NaN
    for absent classes), "pixel_accuracy", "n_classes" (classes in the mean)}``; pixel accuracy = trace / valid GT pixels.
    """
    cm = np.asarray(cm, np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got {cm.shape}")
    tp = np.diag(cm).astype(np.float64)
    gt_tot = cm.sum(1).astype(np.float64)
    if misses is not None:
        gt_tot = gt_tot + np.asarray(misses, np.float64)
    pred_tot = cm.sum(0).astype(np.float64)
    union = gt_tot + pred_tot - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    present = ~np.isnan(iou)
    total = gt_tot.sum()
    return {
        "mIoU": float(100 * np.mean(iou[present])) if present.any() else 0.0,
        "per_class_iou": [float(100 * v) for v in iou],
        "pixel_accuracy": float(100 * tp.sum() / total) if total > 0 else 0.0,
        "n_classes": int(present.sum()),
    }
