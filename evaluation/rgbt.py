"""Unsupervised semantic scores over any label table, overall and per group (e.g. day / night).

Input: per-image cluster-by-class pixel confusions ``(K, C)`` int64 (rows: cluster ids
0..K-1 of a prediction, columns: ground-truth class ids 0..C-1, void GT pixels left out),
and a group name per image. One cluster -> class mapping is fitted on the sum over *all*
images (Hungarian one-to-one for K = C, or majority vote for K > C, as in STEGO-style
unsupervised evaluation) and then applied to every group, so day and night are scored with
the same mapping (a mapping per group would flatter each group).

``ignore_classes``: class ids scored as void (their GT pixels are dropped before matching;
e.g. MFNet's class 0 'unlabeled' when only the 8 object classes are evaluated).

Scores: mIoU (percent), per-class IoU, pixel accuracy (percent), computed by
:mod:`evaluation.semantic`; pixels of clusters left unmatched (Hungarian with K > C, or
clusters that never meet a labelled pixel) count as misses of their GT class.

mIoU conventions (:data:`MIOU_CONVENTIONS`; every score carries ``mIoU_present``,
``mIoU_stego``, ``mIoU_all_classes`` and ``convention``; ``mIoU`` and ``per_class`` follow the
chosen one):

- ``present`` (ours): clusters matched to a class they never overlap count as unmatched (their
  pixels are misses of their GT class); mean over classes with GT or predicted pixels.
- ``stego``: the STEGO / DARTS released evaluation (``UnsupervisedMetrics`` in
  smeenapadnekar/DARTS ``src/utils.py``): every cluster keeps its Hungarian class even without
  overlap (its pixels are false positives of that class); ``iou[~isnan(iou)].mean()``, i.e.
  classes with an empty union are left out, a class without GT but with matched pixels scores 0.
- ``all-classes``: RTFNet's ``compute_results`` used by CRM (UkcheolShin/CRM_RGBTSeg
  ``util/util.py``): the same accounting as ``stego``, but a class with an empty union scores
  0 and the mean is over all evaluated classes.

Imports nothing from ``pseudo_labels``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .matching import UNMATCHED, hungarian_match, mapped_confusion, match_clusters
from .semantic import miou_from_confusion

MIOU_CONVENTIONS = ("present", "stego", "all-classes")


def with_conventions(res: dict, official: dict | None, convention: str) -> dict:
    """Add ``mIoU_present`` / ``mIoU_stego`` / ``mIoU_all_classes`` / ``convention`` to ``res``,
    a :func:`evaluation.semantic.miou_from_confusion` result of our accounting; ``official``: the
    same of the official accounting (every cluster keeps its class), None when they coincide.
    ``mIoU`` and ``per_class_iou`` become the chosen convention's (absent classes: NaN, or 0
    under ``all-classes``)."""
    if convention not in MIOU_CONVENTIONS:
        raise ValueError(f"mIoU convention {convention!r}: choose from {MIOU_CONVENTIONS}")
    ours = np.asarray(res["per_class_iou"], np.float64)
    full = np.asarray((official or res)["per_class_iou"], np.float64)
    res["mIoU_present"] = float(np.nanmean(ours)) if np.isfinite(ours).any() else 0.0
    res["mIoU_stego"] = float(np.nanmean(full)) if np.isfinite(full).any() else 0.0
    res["mIoU_all_classes"] = float(np.nan_to_num(full, nan=0.0).mean()) if full.size else 0.0
    key = {"present": "mIoU_present", "stego": "mIoU_stego", "all-classes": "mIoU_all_classes"}[convention]
    res["mIoU"] = res[key]
    if convention != "present":
        res["per_class_iou"] = list(full) if convention == "stego" else list(np.nan_to_num(full, nan=0.0))
        res["pixel_accuracy"] = (official or res)["pixel_accuracy"]
    res["convention"] = convention
    return res


def _scores(confusion: np.ndarray, mapping: np.ndarray, full: np.ndarray, names: Sequence[str],
            convention: str) -> dict:
    cm, misses = mapped_confusion(confusion, mapping)
    res = miou_from_confusion(cm, misses)
    official = None if np.array_equal(mapping, full) else miou_from_confusion(*mapped_confusion(confusion, full))
    res = with_conventions(res, official, convention)
    res["per_class"] = {n: v for n, v in zip(names, res.pop("per_class_iou"))}
    res["pixels"] = int(cm.sum() + misses.sum())
    return res


def evaluate_unsupervised(confusions: Mapping[str, np.ndarray], groups: Mapping[str, str] | None = None,
                          method: str = "hungarian", class_names: Sequence[str] | None = None,
                          ignore_classes: Sequence[int] = (), convention: str = "present") -> dict:
    """Scores of a clustering against ground truth, overall and per group.

    ``confusions``: image name -> (K, C) cluster-by-class confusion. ``groups``: image name ->
    group (e.g. ``day`` / ``night``); images without a group are only in ``overall``.
    Returns ``{"method", "k", "classes" (evaluated names), "mapping" (K ints, class id of the
    full table or 255), "overall": scores, "groups": {name: scores}, "images": {group: count}}``
    with scores ``{"mIoU", "mIoU_present", "mIoU_all_classes", "convention", "per_class" {name: IoU},
    "pixel_accuracy", "n_classes", "pixels"}`` (``convention``: see the module docstring).
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
    full = hungarian_match(total) if method == "hungarian" else mapping  # official: zero-overlap matches kept
    result = {"method": method, "k": int(k), "classes": kept_names,
              "ignored_classes": [names[i] for i in range(c) if i not in keep],
              "mapping": [int(keep[v]) if v != UNMATCHED else UNMATCHED for v in mapping],
              "overall": _scores(total, mapping, full, kept_names, convention), "groups": {}, "images": {"overall": len(mats)}}
    groups = dict(groups or {})
    for g in sorted(set(groups.values())):
        members = [n for n in mats if groups.get(n) == g]
        if members:
            result["groups"][g] = _scores(sum(mats[n] for n in members)[:, keep], mapping, full, kept_names,
                                          convention)
            result["images"][g] = len(members)
    return result
