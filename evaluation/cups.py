"""CUPS' panoptic and semantic metric (``cups`` protocol) and the STEGO-style semantic protocol.

Rebuilt from the code of visinf/cups (commit 78fc2739345eead1cf3cb9e6695be69dd7f71745:
``cups/metrics/panoptic_quality.py`` ``PanopticQualitySemanticMatching``, ``cups/data/cityscapes.py``
``load_panoptic_cityscapes_labels`` / ``get_class_mapping`` / ``CityscapesPanopticValidation``,
``cups/pl_model_pseudo.py`` ``validation_step``, ``configs/val_cityscapes.yaml``) and of the
``torchmetrics`` 1.3.1 ``PanopticQuality`` it subclasses (Lightning-AI/torchmetrics tag v1.3.1,
``functional/detection/_panoptic_quality_common.py``). Our own numpy code; no torch here.

Rules (each one tested in ``tests/test_evaluation_cups.py``):

* GT from ``*_gtFine_instanceIds.png``: raw ``v > 1000`` gives labelId ``v // 1000``, else ``v``;
  27 classes = labelIds 7..33 -> 0..26, 19 classes = trainIds (``ignoreInEval`` classes void);
  everything else void (255). Instance = ``v - 23999`` where ``v >= 24000``, else 0.
  Things: classes with ``hasInstances`` (27: 17..26, caravan and trailer included; 19: 11..18).
* Prediction: pseudo-class per pixel (0..k-1, void 255) and instance id (0 = none).
* Matching over the whole split: a (k x C) table of pixel co-occurrences (pixels with valid GT and
  valid prediction). With the thing/stuff split (CUPS' default ``ADHERE_THING_STUFF``) thing
  pseudo-classes are matched to thing classes and stuff to stuff, each group by
  ``linear_sum_assignment(maximize=True)``; leftovers (more pseudo-classes than classes in the
  group) take the argmax class of their row within the group (an all-zero row: the group's first
  class), or void with ``one_to_one``. Group order is Python's ``list(set(...))`` order, as in CUPS.
* After remapping, classes outside things and stuff are void and stuff instances are reset to 0
  (pseudo-classes mapped to one stuff class merge into one segment); thing pixels without an
  instance are one segment per class.
* Per image (torchmetrics): same-class segments match when IoU > 0.5, the union leaving out the
  predicted segment's pixels on GT void and the GT segment's pixels predicted void; an unmatched GT
  segment is a FN unless more than half of it is predicted void; an unmatched predicted segment
  is a FP unless more than half of it lies on GT void. No crowd regions. IoU is a float32 ratio
  (torch divides two int64 tensors), summed in float64.
* PQ = IoU_sum / (TP + FP/2 + FN/2), SQ = IoU_sum / TP (0 without TP), RQ = TP / (TP + FP/2 + FN/2)
  per class; each mean runs over the classes with TP + FP + FN > 0 (things, stuff, all).
* mIoU / accuracy: a second assignment on the same table without the thing/stuff split; IoU =
  TP / (TP + FP + FN) over pixels with valid GT and a mapped prediction (predicted void is not
  counted), mean over classes where it is defined; accuracy = matched pixels / counted pixels.
* Resolution: ``configs/val_cityscapes.yaml`` scores at the GT's 1024x2048; training-time
  validation at 640x1280 (GT nearest-resized with torch's legacy ``nearest``:
  :func:`torch_nearest_indices`). Our predictions are brought to the GT size with PIL's
  pixel-centre nearest (:mod:`evaluation.resize`).
* STEGO-style semantic protocol (CUPS' ``VALIDATION.SEMSEG_CENTER_CROP_SIZE = 320``): prediction
  and GT class maps resized so the short side is 320 (torchvision ``Resize`` on tensors, legacy
  nearest) and centre-cropped to 320x320 (torchvision ``CenterCrop``), then the mIoU above.
  STEGO's own loader resizes PIL label images (pixel-centre nearest): ``resize="pil"``.

Known differences from CUPS, all documented in the result: CUPS accumulates the matching table and
the matched confusion in float32 torch tensors (inexact above 2^24 pixels per cell, and then
dependent on the image order it lists); we count in int64. CUPS returns NaN for a mean over no
class; we return 0 with the count of classes 0. CUPS asserts k >= C; we also match k < C (each
pseudo-class then takes a distinct class), so class-id predictions can be scored. With
``one_to_one`` and the thing/stuff split, CUPS' code fails (IndexError) as soon as a group has
leftovers; we make them void, as it does without the split.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from evaluation.matching import cluster_class_confusion
from evaluation.pq_stats import EvaluationError
from evaluation.resize import check_aspect, resize_nearest

VOID = 255
CLASS_COUNTS = (27, 19)
#: raw instanceIds at or above this are thing instances (labelId 24 = person, instance 0)
INSTANCE_START = 24000
#: CUPS' ``CROP_RESOLUTION`` of training-time validation (H, W)
TRAINING_RESOLUTION = (640, 1280)
SEMSEG_CROP = 320
RESIZES = ("torch", "pil")
#: void in our pseudo-class maps (k may exceed 255)
PRED_VOID = -1


# --------------------------------------------------------------------------- class tables
@dataclass(frozen=True)
class CupsClasses:
    """The C classes of one CUPS setting: names, things / stuffs (in CUPS' set order), labelId LUT."""

    num_classes: int
    names: tuple[str, ...]
    things: tuple[int, ...]
    stuffs: tuple[int, ...]
    lut: np.ndarray = field(repr=False)  # (256,) uint8 labelId -> class, 255 void

    def is_thing(self, c: int) -> bool:
        return c in self.things


@functools.lru_cache(maxsize=None)
def cups_classes(num_classes: int = 27) -> CupsClasses:
    """Class table of CUPS' ``get_class_mapping`` for 27 (labelIds 7..33) or 19 (trainIds) classes.

    Built from ``cityscapesscripts.helpers.labels`` (the same table as torchvision's
    ``Cityscapes.classes`` that CUPS reads). Things / stuffs are ordered as ``list(set(...))``
    of CUPS' set comprehensions, which fixes the column order of the matching.
    """
    from cityscapesscripts.helpers.labels import labels

    lut = np.full(256, VOID, np.uint8)
    if num_classes == 27:
        for lab in labels:
            if 7 <= lab.id <= 33:
                lut[lab.id] = lab.id - 7
        names = tuple(lab.name for lab in labels if lab.id > 6)
        things = {lab.id - 7 for lab in labels if lab.hasInstances and lab.id > 6}
        stuffs = {lab.id - 7 for lab in labels if not lab.hasInstances and lab.id > 6}
    elif num_classes == 19:
        for lab in labels:
            if 0 <= lab.id < 256 and not lab.ignoreInEval:
                lut[lab.id] = lab.trainId
        names = tuple(lab.name for lab in labels if not lab.ignoreInEval)
        things = {lab.trainId for lab in labels if lab.hasInstances and not lab.ignoreInEval}
        stuffs = {lab.trainId for lab in labels if not lab.hasInstances and not lab.ignoreInEval}
    else:
        raise EvaluationError(f"CUPS' protocol has 27 or 19 Cityscapes classes, not {num_classes}")
    return CupsClasses(num_classes, names, tuple(set(things)), tuple(set(stuffs)), lut)


def gt_from_instance_ids(raw: np.ndarray, num_classes: int = 27) -> tuple[np.ndarray, np.ndarray]:
    """(class (H, W) uint8, 255 void; instance (H, W) int32, 0 none) from a gtFine instanceIds map.

    ``raw``: the ``*_gtFine_instanceIds.png`` values (labelId, or labelId * 1000 + k for thing
    instances). A labelIds map gives the same classes (and no instances).
    """
    raw = np.asarray(raw).astype(np.int64, copy=False)
    label_id = np.where(raw > 1000, raw // 1000, raw)
    lut = cups_classes(num_classes).lut
    cls = np.where((label_id >= 0) & (label_id < 256), lut[np.clip(label_id, 0, 255)], VOID).astype(np.uint8)
    inst = np.where(raw >= INSTANCE_START, raw - (INSTANCE_START - 1), 0).astype(np.int32)
    return cls, inst


# --------------------------------------------------------------------------- resizing
def torch_nearest_indices(n_in: int, n_out: int, scale: float | None = None) -> np.ndarray:
    """Source indices of torch's legacy ``interpolate(mode="nearest")`` along one axis, bit-exact.

    torch: identity when sizes agree, ``i >> 1`` when ``n_out == 2 n_in``, else
    ``min(floor(i * s), n_in - 1)`` in float32 with ``s = float32(n_in) / n_out`` (or
    ``float32(1 / scale)`` when a scale factor was given).
    """
    if n_out == n_in:
        return np.arange(n_out, dtype=np.intp)
    if n_out == 2 * n_in:
        return np.arange(n_out, dtype=np.intp) >> 1
    s = np.float32(1.0 / scale) if scale else np.float32(n_in) / np.float32(n_out)
    idx = np.floor(np.arange(n_out, dtype=np.float32) * s).astype(np.intp)
    return np.minimum(idx, n_in - 1)


def resize_torch_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) map resized to ``size`` = (h, w) as torch's legacy nearest does."""
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    return array[torch_nearest_indices(array.shape[0], h)[:, None], torch_nearest_indices(array.shape[1], w)[None, :]]


def semseg_crop(array: np.ndarray, size: int = SEMSEG_CROP, resize: str = "torch") -> np.ndarray:
    """Short side resized to ``size`` (nearest), then the centred ``size`` x ``size`` crop.

    As torchvision ``Resize(size, NEAREST)`` + ``CenterCrop(size)``: the long side becomes
    ``int(size * long / short)``; the crop starts at ``int(round((L - size) / 2))``.
    ``resize``: ``torch`` (tensors, CUPS) or ``pil`` (PIL images, STEGO's loader).
    """
    if resize not in RESIZES:
        raise EvaluationError(f"unknown resize {resize!r} (choose {' or '.join(RESIZES)})")
    h, w = array.shape[:2]
    if h <= w:
        nh, nw = size, int(size * w / h)
    else:
        nh, nw = int(size * h / w), size
    out = resize_torch_nearest(array, (nh, nw)) if resize == "torch" else resize_nearest(array, (nh, nw))
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return out[top:top + size, left:left + size]


# --------------------------------------------------------------------------- predictions
def prediction_maps(pan: np.ndarray, segments: Sequence[Mapping], category_index: Mapping[int, int],
                    *, image_id: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(pseudo-class (H, W) int32, -1 void; instance (H, W) int32) of a panoptic id map.

    ``segments``: ``{"id", "category_id"}``; ``category_index``: category_id -> (index 0..k-1,
    isthing) pairs. Thing segments get instances 1..N in id order, stuff segments 0; id 0 and
    pixels of no listed segment are void (CUPS' ``prediction_to_standard_format``).
    """
    ids = np.array([int(s["id"]) for s in segments], np.int64)
    if len(set(ids.tolist())) != len(ids):
        raise EvaluationError(f"image {image_id}: a segment id is listed twice in the prediction JSON")
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    cls = np.empty(len(ids) + 1, np.int32)
    inst = np.zeros(len(ids) + 1, np.int32)
    cls[-1] = PRED_VOID
    n_inst = 0
    for j, k in enumerate(order):
        cat = int(segments[k]["category_id"])
        if cat not in category_index:
            raise EvaluationError(f"image {image_id}: segment {ids[j]} has unknown category_id {cat}")
        cls[j], thing = category_index[cat]
        if thing:
            n_inst += 1
            inst[j] = n_inst
    flat = pan.reshape(-1).astype(np.int64, copy=False)
    pos = np.searchsorted(ids, flat) if len(ids) else np.zeros(flat.shape, np.intp)
    pos = np.minimum(pos, max(len(ids) - 1, 0))
    hit = (ids[pos] == flat) if len(ids) else np.zeros(flat.shape, bool)
    unknown = ~hit & (flat != 0)
    if unknown.any():
        raise EvaluationError(f"image {image_id}: segment ids {np.unique(flat[unknown])[:10].tolist()} are in the "
                              "prediction PNG but not in the prediction JSON")
    pos = np.where(hit, pos, len(ids))
    return cls[pos].reshape(pan.shape), inst[pos].reshape(pan.shape)


# --------------------------------------------------------------------------- matching
def _matching_core(cost: np.ndarray, one_to_one: bool) -> np.ndarray:
    """(k,) column per row of a (k, c) table: Hungarian, leftovers by row argmax (or 255 with one_to_one)."""
    k, c = cost.shape
    out = np.full(k, -1, np.int64)
    if k == 0:
        return out
    if c == 0:
        return np.full(k, VOID, np.int64)
    rows, cols = linear_sum_assignment(cost.astype(np.float64), maximize=True)
    out[rows] = cols
    left = out < 0
    out[left] = VOID if one_to_one else np.argmax(cost[left], axis=1)
    return out


def cups_assignment(cost: np.ndarray, things: Sequence[int], stuffs: Sequence[int],
                    thing_protos: Sequence[int] | None, stuff_protos: Sequence[int] | None,
                    one_to_one: bool = False) -> np.ndarray:
    """(k,) int64 class per pseudo-class from the (k, C) co-occurrence table (rows pseudo-classes).

    ``thing_protos`` / ``stuff_protos`` (both or neither): the pseudo-classes of each kind; given,
    each kind is matched within its classes (``things`` / ``stuffs``, in this column order);
    None: one matching over all classes (CUPS' mIoU assignment). 255 = void (``one_to_one``).
    """
    cost = np.asarray(cost)
    if thing_protos is None or stuff_protos is None:
        return _matching_core(cost, one_to_one)
    out = np.full(cost.shape[0], VOID, np.int64)
    for protos, classes in ((list(thing_protos), list(things)), (list(stuff_protos), list(stuffs))):
        if not protos:
            continue
        sub = cost[np.array(protos)][:, np.array(classes, np.int64)] if classes else np.zeros((len(protos), 0))
        local = _matching_core(sub, one_to_one)
        cls = np.array(classes + [VOID], np.int64)
        out[np.array(protos)] = cls[np.where(local == VOID, len(classes), local)]
    return out


def set_order(values) -> list[int]:
    """``list(set(values).copy())``: the order CUPS iterates its pseudo-class sets in."""
    return list(set(int(v) for v in values).copy())


# --------------------------------------------------------------------------- per-image PQ
def _segment_keys(cls: np.ndarray, inst: np.ndarray, classes: CupsClasses, span: int) -> np.ndarray:
    """torchmetrics' preprocessing as one int64 key per pixel: -1 void, else class * span + instance."""
    c = cls.astype(np.int64, copy=False)
    known = (c >= 0) & (c < classes.num_classes)
    is_stuff = np.zeros(classes.num_classes + 1, bool)
    is_stuff[list(classes.stuffs)] = True
    stuff = is_stuff[np.where(known, c, classes.num_classes)]
    return np.where(known, c * span + np.where(stuff, 0, inst.astype(np.int64, copy=False)), -1)


def _unique_inverse(keys: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)`` for keys in -1..n_keys-1, by a table (no sort) when small."""
    if n_keys > (1 << 24):
        return np.unique(keys, return_inverse=True)
    shifted = keys + 1
    present = np.flatnonzero(np.bincount(shifted, minlength=n_keys + 1))
    lut = np.zeros(n_keys + 1, np.intp)
    lut[present] = np.arange(len(present))
    return present - 1, lut[shifted]


def pq_stats_cups(pred_cls: np.ndarray, pred_inst: np.ndarray, gt_cls: np.ndarray, gt_inst: np.ndarray,
                  classes: CupsClasses) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(IoU sum float64, TP, FP, FN int64), each (C,), of one image under torchmetrics' rules.

    All maps (H, W); classes 0..C-1 (anything else void), instances >= 0. ``pred_cls`` is the
    prediction after the pseudo-class -> class assignment.
    """
    if pred_cls.shape != gt_cls.shape:
        raise EvaluationError(f"prediction {pred_cls.shape} and ground truth {gt_cls.shape} differ in size")
    C = classes.num_classes
    span = int(max(int(pred_inst.max(initial=0)), int(gt_inst.max(initial=0)))) + 1
    pk = _segment_keys(pred_cls, pred_inst, classes, span).reshape(-1)
    gk = _segment_keys(gt_cls, gt_inst, classes, span).reshape(-1)
    pu, pinv = _unique_inverse(pk, C * span)
    gu, ginv = _unique_inverse(gk, C * span)
    joint = np.bincount(ginv.reshape(-1) * len(pu) + pinv.reshape(-1), minlength=len(gu) * len(pu))
    inter = joint.reshape(len(gu), len(pu))
    g_area, p_area = inter.sum(1), inter.sum(0)
    g_void = gu == -1
    p_void = pu == -1
    void_in_p = inter[g_void].sum(0)  # predicted segment's pixels on GT void
    void_in_g = inter[:, p_void].sum(1)  # GT segment's pixels predicted void
    g_cls = np.where(g_void, -1, gu // span)
    p_cls = np.where(p_void, -2, pu // span)

    iou_sum = np.zeros(C, np.float64)
    tp, fp, fn = (np.zeros(C, np.int64) for _ in range(3))
    gi, pj = np.nonzero((inter > 0) & (g_cls[:, None] == p_cls[None, :]))
    union = p_area[pj] - void_in_p[pj] + g_area[gi] - void_in_g[gi] - inter[gi, pj]
    iou = inter[gi, pj].astype(np.float32) / union.astype(np.float32)
    hit = iou > np.float32(0.5)
    np.add.at(iou_sum, g_cls[gi[hit]], iou[hit].astype(np.float64))
    tp += np.bincount(g_cls[gi[hit]], minlength=C)
    g_matched = np.zeros(len(gu), bool)
    p_matched = np.zeros(len(pu), bool)
    g_matched[gi[hit]] = True
    p_matched[pj[hit]] = True
    half = np.float32(0.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        g_fn = ~g_void & ~g_matched & (void_in_g.astype(np.float32) / g_area.astype(np.float32) <= half)
        p_fp = ~p_void & ~p_matched & (void_in_p.astype(np.float32) / p_area.astype(np.float32) <= half)
    fn += np.bincount(g_cls[g_fn], minlength=C)
    fp += np.bincount(p_cls[p_fp], minlength=C)
    return iou_sum, tp, fp, fn


# --------------------------------------------------------------------------- summaries
def summarize_cups(iou: np.ndarray, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray,
                   classes: CupsClasses) -> dict:
    """PQ/SQ/RQ (percent) overall, things, stuff and per class from summed accumulators (C,)."""
    iou, tp, fp, fn = (np.asarray(a) for a in (iou, tp, fp, fn))
    denom = tp + 0.5 * fp + 0.5 * fn
    with np.errstate(divide="ignore", invalid="ignore"):
        sq = np.where(tp > 0, iou / np.maximum(tp, 1), 0.0)
        rq = np.where(denom > 0, tp / np.where(denom > 0, denom, 1), 0.0)
        pq = np.where(denom > 0, iou / np.where(denom > 0, denom, 1), 0.0)
    out: dict[str, Any] = {}
    groups = (("", list(range(classes.num_classes)), "n_classes"), ("_things", list(classes.things), "n_things"),
              ("_stuff", list(classes.stuffs), "n_stuff"))
    for suffix, idx, count in groups:
        idx = np.array(idx, np.int64)
        present = idx[denom[idx] > 0]
        n = len(present)
        for name, arr in (("PQ", pq), ("SQ", sq), ("RQ", rq)):
            out[name + suffix] = 100 * float(np.mean(arr[present])) if n else 0.0
        out[count] = int(n)
    out["per_class"] = {
        classes.names[c]: {"PQ": 100 * float(pq[c]), "SQ": 100 * float(sq[c]), "RQ": 100 * float(rq[c]),
                           "TP": int(tp[c]), "FP": int(fp[c]), "FN": int(fn[c]), "IoU_sum": float(iou[c]),
                           "class_id": c, "isthing": classes.is_thing(c)}
        for c in range(classes.num_classes)}
    return out


def miou_cups(cost: np.ndarray, assignment: np.ndarray) -> dict:
    """CUPS' ``_miou_compute`` (percent) of the (k, C) table under an assignment (k,) (255 void).

    Rows mapped to one class are summed; rows mapped to void drop out. IoU = TP / (TP + FP + FN)
    where defined; accuracy = TP / counted pixels.
    """
    cost = np.asarray(cost, np.int64)
    C = cost.shape[1]
    matched = np.zeros((C, C), np.int64)  # rows predicted class, columns GT class
    a = np.asarray(assignment, np.int64)
    for c in range(C):
        if (a == c).any():
            matched[c] = cost[a == c].sum(0)
    tp = np.diag(matched).astype(np.float64)
    fp, fn = matched.sum(1) - tp, matched.sum(0) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (tp + fp + fn)
    ok = ~np.isnan(iou)
    total = matched.sum()
    return {"mIoU": 100 * float(np.mean(iou[ok])) if ok.any() else 0.0,
            "accuracy": 100 * float(tp.sum() / total) if total else 0.0,
            "per_class_iou": [None if np.isnan(v) else 100 * float(v) for v in iou],
            "n_classes": int(ok.sum())}


# --------------------------------------------------------------------------- files
def read_label_png(path: str | Path) -> np.ndarray:
    """A single-channel PNG as stored (uint8 / uint16 / int32), or :class:`EvaluationError`."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.array(im)
    except FileNotFoundError:
        raise EvaluationError(f"{path}: file not found") from None
    except OSError as exc:
        raise EvaluationError(f"{path}: cannot read as PNG ({exc})") from None
    if arr.ndim != 2:
        raise EvaluationError(f"{path}: expected a single-channel label PNG, got shape {arr.shape}")
    return arr


def load_gt(path: str | Path, num_classes: int, resolution: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """(class, instance) maps of a gtFine instanceIds PNG, at ``resolution`` (None: as stored)."""
    cls, inst = gt_from_instance_ids(read_label_png(path), num_classes)
    if resolution is not None:
        cls, inst = resize_torch_nearest(cls, resolution), resize_torch_nearest(inst, resolution)
    return cls, inst


def parse_resolution(resolution: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``full`` / None -> None (the GT's size); ``HxW`` or (H, W) -> (H, W)."""
    if resolution is None or resolution == "full":
        return None
    if isinstance(resolution, str):
        try:
            h, w = (int(v) for v in resolution.lower().split("x"))
        except ValueError:
            raise EvaluationError(f"resolution {resolution!r}: use 'full' or HxW such as 640x1280") from None
    else:
        h, w = (int(v) for v in resolution)
    if h < 1 or w < 1:
        raise EvaluationError(f"resolution {resolution!r}: both sides must be positive")
    return h, w


def _size_text(shape) -> str:
    return f"{shape[1]}x{shape[0]}"


@dataclass
class CupsJob:
    """One image: GT instanceIds PNG and the prediction (panoptic PNG + segments, or a class-id PNG)."""

    image_id: Any
    gt_path: str
    pred_path: str
    pred_segments: list | None = None  # None: ``pred_path`` is a semantic (class-id) PNG


def semantic_void(dtype: np.dtype) -> int:
    """Void value of a class-id / cluster PNG: 255 in uint8 maps, 65535 in uint16 maps (k > 255)."""
    return VOID if np.dtype(dtype).itemsize == 1 else 65535


def _read_semantic(path: str) -> np.ndarray:
    raw = read_label_png(path)
    void = semantic_void(raw.dtype)
    raw = raw.astype(np.int64)
    return np.where((raw == void) | (raw < 0), PRED_VOID, raw)


def _read_pred(job: CupsJob, category_index: Mapping[int, tuple[int, bool]] | None):
    if job.pred_segments is None:
        cls = _read_semantic(job.pred_path)
        return cls, np.zeros(cls.shape, np.int32)
    from evaluation.panoptic import read_panoptic_png

    return prediction_maps(read_panoptic_png(job.pred_path), job.pred_segments, category_index,
                           image_id=job.image_id)


def _prepared(job: CupsJob, num_classes: int, resolution, category_index):
    gt_cls, gt_inst = load_gt(job.gt_path, num_classes, resolution)
    pred_cls, pred_inst = _read_pred(job, category_index)
    resized_from = None
    if pred_cls.shape != gt_cls.shape:
        check_aspect(pred_cls.shape, gt_cls.shape, job.pred_path)
        resized_from = _size_text(pred_cls.shape)
        pred_cls, pred_inst = resize_nearest(pred_cls, gt_cls.shape), resize_nearest(pred_inst, gt_cls.shape)
    return gt_cls, gt_inst, pred_cls, pred_inst, resized_from


def _pass_cost(job: CupsJob, num_classes: int, resolution, category_index, k: int, crop: int | None,
               crop_resize: str):
    """Per image: (k, C) table at the evaluation resolution, (k, C) table of the crop, resized-from."""
    gt_cls, _, pred_cls, _, resized_from = _prepared(job, num_classes, resolution, category_index)
    cost = cluster_class_confusion(pred_cls, gt_cls, k, num_classes)
    crop_cost = None
    if crop:
        crop_cost = cluster_class_confusion(semseg_crop(pred_cls, crop, crop_resize),
                                            semseg_crop(gt_cls, crop, crop_resize), k, num_classes)
    return cost, crop_cost, resized_from


def _pass_pq(job: CupsJob, num_classes: int, resolution, category_index, assignment: np.ndarray):
    gt_cls, gt_inst, pred_cls, pred_inst, _ = _prepared(job, num_classes, resolution, category_index)
    ok = (pred_cls >= 0) & (pred_cls < len(assignment))
    mapped = np.where(ok, np.asarray(assignment)[np.where(ok, pred_cls, 0)], VOID)
    return pq_stats_cups(mapped, pred_inst, gt_cls, gt_inst, cups_classes(num_classes))


def _default_map(workers: int):
    def map_fn(func, jobs):
        if workers <= 1 or len(jobs) <= 1:
            return [func(j) for j in jobs]
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(func, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    return map_fn


def _resized_summary(sizes: list[str | None], resolution) -> dict:
    done = sorted({s for s in sizes if s})
    if not done:
        return {}
    return {"prediction_resized_from": done[0] if len(done) == 1 else done,
            "n_predictions_resized": sum(1 for s in sizes if s),
            "prediction_resize": "nearest, PIL pixel-centre convention, to the ground truth's size"
                                 + ("" if resolution is None else " at the evaluation resolution")}


def _assignment_table(assignment: np.ndarray, proto_ids: Sequence[Any], classes: CupsClasses) -> list[dict]:
    return [{"pseudo_class": p, "class_id": int(a), "class": classes.names[int(a)] if a != VOID else "void"}
            for p, a in zip(proto_ids, assignment.tolist())]


def evaluate_cups(jobs: Sequence[CupsJob], categories: Sequence[Mapping] | None, *, num_classes: int = 27,
                  resolution: str | Sequence[int] | None = None, one_to_one: bool = False,
                  thing_stuff_split: bool = True, crop: int | None = SEMSEG_CROP, crop_resize: str = "torch",
                  num_clusters: int | None = None, workers: int = 1,
                  map_fn: Callable[[Callable, list], list] | None = None) -> dict:
    """CUPS' metric over a split: matching, PQ/SQ/RQ, mIoU / accuracy (and the 320-crop semantic scores).

    ``jobs``: one :class:`CupsJob` per GT image. ``categories``: the prediction JSON's categories
    (``id``, ``isthing``, ``name``): each is a pseudo-class (index = rank of its id); None for
    semantic PNG predictions (pseudo-classes = the PNG values 0..``num_clusters``-1, 255 / 65535
    void; no PQ). ``resolution``: None / ``full`` (the GT's size) or (H, W) (GT resized as CUPS'
    validation does). ``crop``: also the STEGO-style crop (None: skip). ``map_fn(func, jobs)``
    runs the per-image work (default: ``workers`` processes). Returns the result dict (percent).
    """
    if num_classes not in CLASS_COUNTS:
        raise EvaluationError(f"num_classes {num_classes}: CUPS' protocol has 27 or 19 classes")
    if not jobs:
        raise EvaluationError("no ground-truth images to score")
    classes = cups_classes(num_classes)
    res = parse_resolution(resolution)
    map_fn = map_fn or _default_map(max(1, int(workers or 1)))
    panoptic = categories is not None
    if panoptic:
        cats = sorted(((int(c["id"]), bool(c.get("isthing", 0)), str(c.get("name", c["id"]))) for c in categories))
        if not cats:
            raise EvaluationError("the prediction JSON has no categories")
        category_index = {cid: (j, thing) for j, (cid, thing, _) in enumerate(cats)}
        proto_ids: list[Any] = [cid for cid, _, _ in cats]
        k = len(cats)
    else:
        category_index = None
        k = num_clusters
    if k is None:  # semantic PNGs: pseudo-classes 0..max seen
        k = max(map_fn(_max_cluster, list(jobs))) + 1
        if k == 0:
            raise EvaluationError("every predicted pixel is void")
    if not panoptic:
        proto_ids = list(range(k))
    first = map_fn(functools.partial(_pass_cost, num_classes=num_classes, resolution=res,
                                     category_index=category_index, k=k, crop=crop, crop_resize=crop_resize),
                 list(jobs))
    cost = sum((r[0] for r in first), np.zeros((k, num_classes), np.int64))
    out: dict[str, Any] = {"protocol": "cups" if panoptic else "stego-miou", "num_classes": num_classes,
                           "resolution": "full (the ground truth's size)" if res is None else f"{res[0]}x{res[1]}",
                           "n_images": len(jobs), "num_pseudo_classes": k}
    out.update(_resized_summary([r[2] for r in first], res))
    miou_assign = cups_assignment(cost, classes.things, classes.stuffs, None, None, one_to_one)
    if panoptic:
        is_thing = [thing for _, thing, _ in cats]
        thing_protos = set_order(j for j in range(k) if is_thing[j]) if thing_stuff_split else None
        stuff_protos = set_order(j for j in range(k) if not is_thing[j]) if thing_stuff_split else None
        assignment = cups_assignment(cost, classes.things, classes.stuffs, thing_protos, stuff_protos, one_to_one)
        stats = map_fn(functools.partial(_pass_pq, num_classes=num_classes, resolution=res,
                                         category_index=category_index, assignment=assignment), list(jobs))
        iou = sum((s[0] for s in stats), np.zeros(num_classes))
        tp, fp, fn = (sum((s[i] for s in stats), np.zeros(num_classes, np.int64)) for i in (1, 2, 3))
        out.update(summarize_cups(iou, tp, fp, fn, classes))
        out["assignment"] = _assignment_table(assignment, proto_ids, classes)
        out["matching"] = ("Hungarian per split, things and stuff separately" if thing_stuff_split else
                           "Hungarian per split over all classes") + (
            "; leftover pseudo-classes void" if one_to_one else "; leftover pseudo-classes take their argmax class")
    sem = miou_cups(cost, miou_assign)
    out["mIoU"], out["accuracy"] = sem["mIoU"], sem["accuracy"]
    out["matched_semantic"] = {"mIoU": sem["mIoU"], "accuracy": sem["accuracy"], "n_classes": sem["n_classes"],
                       "per_class_iou": dict(zip(classes.names, sem["per_class_iou"])),
                       "assignment": _assignment_table(miou_assign, proto_ids, classes),
                       "what": "CUPS' compute(): Hungarian over all classes (no thing/stuff split) at the "
                               "evaluation resolution; predicted void not counted"}
    if crop:
        crop_cost = sum((r[1] for r in first), np.zeros((k, num_classes), np.int64))
        crop_assign = cups_assignment(crop_cost, classes.things, classes.stuffs, None, None, one_to_one)
        c = miou_cups(crop_cost, crop_assign)
        out["semantic_crop"] = {"mIoU": c["mIoU"], "accuracy": c["accuracy"], "n_classes": c["n_classes"],
                                "per_class_iou": dict(zip(classes.names, c["per_class_iou"])),
                                "assignment": _assignment_table(crop_assign, proto_ids, classes),
                                "crop": crop, "resize": crop_resize,
                                "what": f"short side resized to {crop} (nearest, {crop_resize} convention), centre "
                                        f"{crop}x{crop} crop, Hungarian over all classes (STEGO's protocol; CUPS' "
                                        "SEMSEG_CENTER_CROP_SIZE)"}
        if not panoptic:
            out["mIoU"], out["accuracy"] = c["mIoU"], c["accuracy"]
    out["differences_from_cups"] = ("counts in int64 (CUPS: float32 tensors, inexact beyond 2^24 pixels per cell); "
                                    "a mean over no class is 0 here (CUPS: NaN); fewer pseudo-classes than classes "
                                    "are matched (CUPS asserts k >= C); one-to-one leftovers under the thing/stuff "
                                    "split are void (CUPS' code raises IndexError)")
    return out


def _max_cluster(job: CupsJob) -> int:
    """Largest non-void value of a semantic prediction PNG (-1 if all void)."""
    return int(_read_semantic(job.pred_path).max(initial=PRED_VOID))
