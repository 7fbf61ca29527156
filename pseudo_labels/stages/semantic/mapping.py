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
    from evaluation.matching import cluster_class_confusion

    return cluster_class_confusion(clusters, gt_train_ids, k, _num_classes(num_classes, labels)).astype(np.int64)


def map_clusters(confusion: np.ndarray, method: str = "majority", labels: LabelTable = LABELS) -> np.ndarray:
    """Cluster -> class id from a (k, C) confusion (C from its shape); returns (k,) int64,
    ``labels.void`` (255) = unmapped.

    ``majority`` and ``hungarian`` read the confusion with ground truth (they use labels);
    ``none`` returns all void. Clusters that never overlap a labelled pixel stay void.
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2:
        raise ValueError(f"confusion must be (k, C), got {confusion.shape}")
    if method == "none":
        return np.full(confusion.shape[0], labels.void, np.int64)
    if method not in METHODS:
        raise PseudoLabelsError(f"unknown mapping {method!r} (choose {', '.join(METHODS)})")
    from evaluation.matching import match_clusters

    return match_clusters(confusion, method, unmatched=labels.void)


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
    from evaluation.matching import mapped_confusion

    cluster_conf = np.asarray(cluster_conf, np.int64)
    num_classes = _num_classes(num_classes, labels)
    if cluster_conf.shape[1] != num_classes:
        raise ValueError(f"cluster confusion has {cluster_conf.shape[1]} classes, expected {num_classes}")
    return mapped_confusion(cluster_conf, cluster_to_class)[0]


def void_predicted_pixels(cluster_conf: np.ndarray, cluster_to_class: np.ndarray) -> int:
    """Labelled GT pixels that fall in unmapped clusters (predicted void)."""
    lut = np.asarray(cluster_to_class, np.int64)
    unmapped = (lut < 0) | (lut >= np.asarray(cluster_conf).shape[1])
    return int(np.asarray(cluster_conf, np.int64)[unmapped].sum())
