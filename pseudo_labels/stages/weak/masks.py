"""Semantic label maps from CAMs, optional depth-edge snapping, and mIoU scoring.

Label conventions (``label_space``):

- ``cityscapes``: output trainIds 0..18; pixels where no tagged class scores above the
  background threshold become **255 (void)**. Cityscapes has no "background" class (every
  pixel is road, building, sky, ...), so low-confidence pixels are left unlabelled rather than
  forced into a class. Scoring counts void predictions on labelled GT pixels as misses
  (``mIoU``); ``mIoU_labelled`` scores only the pixels that received a label, and
  ``coverage`` is the fraction of GT-labelled pixels that did. Since every GT pixel has a
  class, a background threshold can here only trade wrong labels for misses; its best value
  is usually low (the sweep measures it).
- ``voc``: output VOC ids, 0 background, 1..20 classes (CAM channel c -> id c + 1), 255 ignore
  (never produced). Background is a scored class there.
"""

from __future__ import annotations

import numpy as np

from pseudo_labels.core.defaults import CAM_REFINE_BAND
from pseudo_labels.core.errors import PseudoLabelsError

IGNORE = 255


def upsample_cams(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) float -> (C, H, W) float32, bilinear (align_corners=False)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(cams, np.float32))[None]
    if tuple(t.shape[-2:]) == tuple(size):
        return t[0].numpy().copy()
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[0].numpy()


def cams_to_labels(cams: np.ndarray, bg_threshold: float, label_space: str = "cityscapes",
                   tags: np.ndarray | None = None) -> np.ndarray:
    """Normalised CAMs (C, H, W) in [0, 1] -> (H, W) uint8 label map.

    The standard CAM-to-mask rule of the WSSS literature: a constant background score equal to
    ``bg_threshold`` competes with the (ReLU, per-image per-class max-normalised) CAMs of the
    image's tagged classes, and each pixel takes the argmax. So a pixel takes the tagged class
    with the highest CAM when that score is above ``bg_threshold`` (ties go to background), and
    is background otherwise: 255 (void, unlabelled) for ``cityscapes``, which has no background
    class, and 0 for ``voc``. Only tagged classes can win: with ``tags`` (C,) the other channels
    are ignored here; without, they must already be zero (as
    :func:`pseudo_labels.stages.weak.cam.normalize_cams` leaves them).
    """
    cams = np.asarray(cams, np.float32)
    if tags is not None:
        keep = np.asarray(tags).reshape(-1) > 0.5
        if keep.shape[0] != cams.shape[0]:
            raise ValueError(f"tags have {keep.shape[0]} classes, the CAMs {cams.shape[0]}")
        cams = np.where(keep[:, None, None], cams, np.float32(-1.0))
    best = cams.argmax(axis=0)
    score = np.take_along_axis(cams, best[None], axis=0)[0]
    fg = score > bg_threshold
    if label_space == "cityscapes":
        return np.where(fg, best, IGNORE).astype(np.uint8)
    if label_space == "voc":
        return np.where(fg, best + 1, 0).astype(np.uint8)
    raise PseudoLabelsError(f"unknown label space {label_space!r}")


def cam_scores_for_image(head, features: np.ndarray, image_size: tuple[int, int],
                         tags: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised CAMs upsampled to the image: (C, H, W) float32 in [0, 1], and the tags used (C,).

    ``head``: a trained :class:`pseudo_labels.stages.weak.cam.CamHead`; ``features`` (D, h, w);
    ``tags`` (C,) multi-hot or None (predicted from the logits). ReLU + per-class max
    normalisation at the patch grid (:func:`pseudo_labels.stages.weak.cam.normalize_cams`;
    untagged classes 0), then bilinear upsampling to ``image_size`` (H, W).
    """
    from pseudo_labels.stages.weak.cam import compute_cams, normalize_cams, predicted_tags

    raw, logits = compute_cams(head, features)
    used = predicted_tags(logits) if tags is None else np.asarray(tags, np.float32)
    return upsample_cams(normalize_cams(raw, used), image_size), used


def labels_from_scores(scores: np.ndarray, bg_threshold: float, label_space: str,
                       depth: np.ndarray | None = None, band: int = CAM_REFINE_BAND,
                       tags: np.ndarray | None = None) -> np.ndarray:
    """(C, H, W) normalised CAMs -> (H, W) uint8 labels (argmax over background = ``bg_threshold``
    and the tagged classes, :func:`cams_to_labels`); with ``depth`` (h, w), boundaries snapped to
    depth edges within ``band`` px (:func:`snap_to_depth_edges`)."""
    labels = cams_to_labels(scores, bg_threshold, label_space, tags)
    if depth is not None:
        labels = snap_to_depth_edges(labels, depth, band=band)
    return labels


def depth_edge_map(depth: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """(H, W) depth -> (H, W) float32 edge strength in [0, 1]: |Sobel(gaussian(depth, sigma))| / max."""
    from scipy import ndimage

    d = np.asarray(depth, np.float64)
    d = np.where(np.isfinite(d), d, np.nanmax(np.where(np.isfinite(d), d, np.nan)) if np.isfinite(d).any() else 0.0)
    if sigma > 0:
        d = ndimage.gaussian_filter(d, sigma)
    g = np.hypot(ndimage.sobel(d, axis=1), ndimage.sobel(d, axis=0))
    mx = g.max()
    return (g / mx if mx > 0 else g).astype(np.float32)


def _resize(arr: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    import cv2

    if arr.shape[:2] == tuple(size):
        return arr
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(arr, (size[1], size[0]), interpolation=interp)


def snap_to_depth_edges(labels: np.ndarray, depth: np.ndarray, band: int = 8, sigma: float = 1.0) -> np.ndarray:
    """Move label boundaries onto depth edges (marker watershed on the depth edge map).

    ``labels``: (H, W) uint8 (any ids, 255 void treated as one more region).
    ``depth``: (h, w) float, resized bilinearly to (H, W) when needed.
    Pixels farther than ``band`` px from every label boundary keep their label and seed the
    watershed; pixels within the band are re-assigned by flooding the depth edge map
    (:func:`depth_edge_map`), so boundaries settle on the strongest depth edge nearby.
    Returns (H, W) uint8 with the same set of ids.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    labels = np.asarray(labels)
    if band <= 0:
        return labels.copy()
    depth = _resize(np.asarray(depth, np.float32), labels.shape, nearest=False)
    lab = labels.astype(np.int32)
    boundary = np.zeros(lab.shape, bool)
    boundary[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    boundary[:, :-1] |= lab[:, 1:] != lab[:, :-1]
    boundary[1:, :] |= lab[1:, :] != lab[:-1, :]
    boundary[:-1, :] |= lab[1:, :] != lab[:-1, :]
    if not boundary.any():
        return labels.copy()
    dist = ndimage.distance_transform_edt(~boundary)
    markers = np.where(dist > band, lab + 1, 0)
    if not markers.any():
        return labels.copy()
    elevation = depth_edge_map(depth, sigma)
    out = watershed(elevation, markers=markers, connectivity=1)
    return (out - 1).astype(labels.dtype)


# --------------------------------------------------------------------------- scoring
def eval_class_names(label_space: str = "cityscapes") -> tuple[str, ...]:
    """Names of the scored classes: 19 trainIds, or VOC background + 20 classes."""
    from pseudo_labels.stages.weak.tags import class_names

    if label_space == "voc":
        return ("background",) + class_names("voc")
    return class_names(label_space)


def extended_confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore: int = IGNORE) -> np.ndarray:
    """(C, C + 1) int64 confusion: rows GT class, columns predicted class; the last column counts
    GT-labelled pixels predicted as ``ignore`` (void). GT ``ignore`` pixels are skipped.

    Uses :func:`evaluation.semantic.confusion_matrix_with_misses` (misses = the last column).
    """
    from evaluation.semantic import confusion_matrix_with_misses

    cm, misses = confusion_matrix_with_misses(np.asarray(gt), np.asarray(pred), num_classes, ignore=ignore)
    return np.concatenate([cm, misses[:, None]], axis=1).astype(np.int64)


def scores_from_confusion(cm_ext: np.ndarray, names: tuple[str, ...]) -> dict:
    """Scores (percent) from an extended confusion (C, C + 1) of :func:`extended_confusion`.

    ``mIoU``: mean over classes present in GT or prediction of TP / (GT + Pred - TP), void
    predictions counted as misses; ``per_class_iou`` {name: IoU or None}; ``pixel_accuracy``;
    ``coverage`` (share of GT-labelled pixels given a class); ``mIoU_labelled`` (same with
    void-predicted pixels removed). Both via :func:`evaluation.semantic.miou_from_confusion`.
    """
    from evaluation.semantic import miou_from_confusion

    cm = np.asarray(cm_ext, np.int64)
    c = cm.shape[0]
    inner, misses = cm[:, :c], cm[:, c]
    full = miou_from_confusion(inner, misses)
    labelled = miou_from_confusion(inner)
    total = cm.sum()
    return {
        "mIoU": full["mIoU"],
        "mIoU_labelled": labelled["mIoU"],
        "pixel_accuracy": full["pixel_accuracy"],
        "coverage": float(inner.sum() / total * 100) if total else 0.0,
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, full["per_class_iou"])},
        "n_classes": full["n_classes"],
    }
