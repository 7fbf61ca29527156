"""Stage 3: cluster -> class mapping of over-clustered semantics.

Ids: clusters 0..k-1 (anything outside is void); classes 0..C-1 of a
:class:`~pseudo_labels.datasets.base.LabelTable` (default Cityscapes: trainIds 0..18),
the table's void id (255) for void / unmapped.

Methods of :func:`map_clusters`:

- ``majority`` — each cluster takes the ground-truth trainId it overlaps most (the
  reference). **Uses ground-truth labels.**
- ``hungarian`` — one-to-one matching on the confusion (meant for k = 19); clusters
  left without a class, or matched to a class they never overlap, stay 255. **Uses ground-truth labels.**
- ``none`` — label-free: no cluster gets a class (all 255); the cluster ids stay
  pseudo-classes.

The matching itself is :mod:`evaluation.matching` (one implementation for the
pipeline and the evaluator).
"""

from __future__ import annotations

import numpy as np

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.datasets.base import LabelTable
from pseudo_labels.datasets.cityscapes import LABELS

METHODS = ("majority", "hungarian", "none")
USES_GROUND_TRUTH = {"majority": True, "hungarian": True, "none": False}


def _num_classes(num_classes: int | None, labels: LabelTable) -> int:
    return labels.num_classes if num_classes is None else int(num_classes)


def cluster_confusion(clusters: np.ndarray, gt_train_ids: np.ndarray, k: int, num_classes: int | None = None,
                      labels: LabelTable = LABELS) -> np.ndarray:
    """Pixel confusion of one image: (k, C) int64, rows clusters, columns class ids.

    clusters: (H, W) int cluster ids (values outside 0..k-1 are void, ignored).
    gt_train_ids: (H, W) class ids (values outside 0..C-1, e.g. 255, ignored).
    C = ``num_classes``, default ``labels.num_classes`` (Cityscapes: 19).
    Sum the result over images to accumulate.
    """
    num_classes = _num_classes(num_classes, labels)
    clusters = np.asarray(clusters).ravel().astype(np.int64)
    gt = np.asarray(gt_train_ids).ravel().astype(np.int64)
    if clusters.shape != gt.shape:
        raise ValueError(f"cluster map and ground truth differ in size: {np.shape(clusters)} vs {np.shape(gt)}")
    valid = (clusters >= 0) & (clusters < k) & (gt >= 0) & (gt < num_classes)
    idx = clusters[valid] * num_classes + gt[valid]
    return np.bincount(idx, minlength=k * num_classes).reshape(k, num_classes).astype(np.int64)


def map_clusters(confusion: np.ndarray, method: str = "majority", labels: LabelTable = LABELS) -> np.ndarray:
    """Cluster -> class id from a (k, C) confusion (C from its shape); returns (k,) int64,
    ``labels.void`` (255) = unmapped.

    ``majority`` and ``hungarian`` read the confusion with ground truth (they use labels);
    ``none`` returns all void. Clusters that never overlap a labelled pixel stay void.
    """
    void = labels.void
    confusion = np.asarray(confusion)
    if confusion.ndim != 2:
        raise ValueError(f"confusion must be (k, C), got {confusion.shape}")
    k = confusion.shape[0]
    if method == "none":
        return np.full(k, void, np.int64)
    from evaluation import matching

    if method == "majority":
        mapping = np.asarray(matching.majority_match(confusion), np.int64)
    elif method == "hungarian":
        mapping = np.asarray(matching.hungarian_match(confusion), np.int64)
    else:
        raise PseudoLabelsError(f"unknown mapping {method!r} (choose {', '.join(METHODS)})")
    mapping = mapping.copy()
    mapping[(mapping < 0) | (mapping >= confusion.shape[1])] = void  # the matcher's "unmatched"
    mapping[confusion.sum(axis=1) == 0] = void
    # a cluster matched to a class it never overlaps (hungarian with k < C) stays unmapped
    rows = np.flatnonzero(mapping != void)
    mapping[rows[confusion[rows, mapping[rows]] == 0]] = void
    return mapping


def apply_mapping(clusters: np.ndarray, cluster_to_class: np.ndarray, labels: LabelTable = LABELS) -> np.ndarray:
    """(H, W) cluster ids -> (H, W) class ids via ``cluster_to_class`` (k,); void /
    out-of-range cluster ids, and negative ids or ids the dtype cannot hold -> ``labels.void``.
    uint8 when the table's ids and void fit in 0..255 (Cityscapes), else uint16."""
    void = labels.void
    dtype = np.uint8 if max(labels.num_classes - 1, void) <= 255 else np.uint16
    lut = np.asarray(cluster_to_class, np.int64)
    k = lut.shape[0]
    clusters = np.asarray(clusters)
    out = np.full(clusters.shape, void, dtype)
    valid = (clusters >= 0) & (clusters < k)
    known = (lut >= 0) & (lut <= np.iinfo(dtype).max)
    out[valid] = np.where(known, lut, void).astype(dtype)[clusters[valid].astype(np.int64)]
    return out


def class_confusion(cluster_conf: np.ndarray, cluster_to_class: np.ndarray, num_classes: int | None = None,
                    labels: LabelTable = LABELS) -> np.ndarray:
    """Semantic confusion (C x C, rows GT, columns prediction; C = ``num_classes``, default
    ``labels.num_classes``) of the mapped output, from the (k, C) cluster confusion: no
    need to re-read any image.
    Pixels of unmapped clusters (predicted void) appear in no column; count them with
    :func:`void_predicted_pixels`."""
    num_classes = _num_classes(num_classes, labels)
    cluster_conf = np.asarray(cluster_conf, np.int64)
    lut = np.asarray(cluster_to_class, np.int64)
    cm = np.zeros((num_classes, num_classes), np.int64)
    for c in range(num_classes):
        rows = lut == c
        if rows.any():
            cm[:, c] = cluster_conf[rows].sum(axis=0)
    return cm


def void_predicted_pixels(cluster_conf: np.ndarray, cluster_to_class: np.ndarray) -> int:
    """Labelled GT pixels that fall in unmapped clusters (predicted void)."""
    lut = np.asarray(cluster_to_class, np.int64)
    unmapped = (lut < 0) | (lut >= np.asarray(cluster_conf).shape[1])
    return int(np.asarray(cluster_conf, np.int64)[unmapped].sum())
