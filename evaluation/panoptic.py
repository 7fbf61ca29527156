"""Panoptic quality (PQ, SQ, RQ) on in-memory arrays and on COCO/Cityscapes panoptic folders.

Two protocols, and every result names the one it used:

``standard``
    The COCO / Cityscapes panoptic definition, numerically equal to
    ``cityscapesscripts.evaluation.evalPanopticSemanticLabeling``: a GT and a predicted
    segment of the same category match when IoU > 0.5, the union leaving out the
    predicted pixels on GT void (id 0); crowd GT segments are never matched, and an
    unmatched prediction lying more than half on void plus the crowd region of its
    category is not a false positive; class averages run over the classes with
    TP + FP + FN > 0. The GT segment area is the JSON ``area`` when given (as
    cityscapesscripts does), else the pixel count; the predicted area is always counted.

``reference``
    The arithmetic of the reference repository (qbit-glitch/monocular_ups,
    ``sweep_k50_spidepth.py``): both maps resized to 512x1024 with PIL-style nearest
    sampling; crowd GT segments and GT stuff segments < 64 px / GT thing segments
    < 10 px (at 512x1024) become void; void is *not* removed from the union and
    nothing is ignored, so every unmatched prediction is a false positive; per class
    SQ = IoU_sum / (TP + 1e-8), RQ = TP / (TP + FP/2 + FN/2), PQ = SQ * RQ; overall (and
    stuff / things) PQ is the mean of the per-class PQ over classes with TP+FP+FN > 0,
    while SQ and RQ are pooled over the classes (sums of IoU, TP, FP, FN; + 1e-8 in
    the denominators). The reference rounds to 2 decimals when it prints; we do not.

Segment maps are (H, W) integer arrays of segment ids; id 0 is void in GT and
unlabeled in predictions. Segments are dicts ``{"id", "category_id", "iscrowd"}``
(``iscrowd`` only read from GT; ``area`` optionally from GT). ``categories`` maps
category_id -> ``{"name", "isthing", ...}``. No per-segment mask loops: ids are
remapped to compact indices and one ``np.bincount`` gives the whole GT x prediction
intersection table.

Folders (:func:`evaluate_panoptic_folders`) are scored by one of two engines with the same
numbers: ``numpy`` (this module: pyspng decode, one joint histogram per image, both
protocols) or ``hotcoco`` (:mod:`evaluation.hotcoco_engine`, Rust, standard protocol);
``auto`` picks hotcoco where it can (:func:`resolve_engine`).

This package imports nothing from ``pseudo_labels``.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from evaluation.pq_stats import EvaluationError, PQStats, _where  # noqa: F401  (re-exported)
from evaluation.resize import check_aspect, png_size, resize_nearest

#: OpenCV, an optional accelerator for the joint histogram and RGB -> id (numpy fallbacks otherwise);
#: imported on first use (the hotcoco engine never needs it). ``...``: not imported yet; None: unavailable.
_cv2: Any = ...



def _opencv():
    global _cv2
    if _cv2 is ...:
        try:
            import cv2
        except ImportError:  # without OpenCV: numpy bincount for the joint table, numpy RGB -> id
            cv2 = None
        _cv2 = cv2
    return _cv2


PROTOCOLS = ("standard", "reference")
#: reference protocol constants (qbit-glitch/monocular_ups sweep_k50_spidepth.py)
REFERENCE_SIZE = (512, 1024)
REFERENCE_GT_STUFF_MIN_AREA = 64
REFERENCE_GT_THING_MIN_AREA = 10
REFERENCE_EPS = 1e-8
_LUT_MAX_ID = 1 << 20  # ids above this use a table on the low bits instead of a direct lookup table


# --------------------------------------------------------------------------- helpers
def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {protocol!r} (choose {' or '.join(PROTOCOLS)})")


def normalize_categories(categories: Mapping[int, Mapping] | Sequence[Mapping]) -> dict[int, dict]:
    """Category list (COCO JSON ``categories``) or dict -> {category_id: {"name", "isthing", ...}}."""
    if isinstance(categories, Mapping):
        out = {int(k): dict(v) for k, v in categories.items()}
    else:
        out = {}
        for c in categories:
            try:
                out[int(c["id"])] = dict(c)
            except (KeyError, TypeError, ValueError):
                raise EvaluationError(f"malformed category entry {c!r} (needs an integer 'id')") from None
    for cid, c in out.items():
        c.setdefault("name", str(cid))
        c["isthing"] = 1 if c.get("isthing", 0) else 0
    return out


def _segment_table(segments: Sequence[Mapping], categories: Mapping[int, Any], what: str, image_id: Any,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, category_ids, iscrowd, json_area (-1 if absent), order) of a segment list, sorted by id.

    ``order[k]`` is the position of the k-th sorted segment in the given list.
    """
    n = len(segments)
    ids = np.empty(n, np.int64)
    cats = np.empty(n, np.int64)
    crowd = np.zeros(n, bool)
    area = np.full(n, -1, np.int64)
    for k, s in enumerate(segments):
        try:
            ids[k] = int(s["id"])
            cats[k] = int(s["category_id"])
        except (KeyError, TypeError, ValueError):
            raise EvaluationError(f"{_where(image_id)}malformed {what} segment {s!r} "
                                  "(needs integer 'id' and 'category_id')") from None
        crowd[k] = bool(s.get("iscrowd", 0))
        if "area" in s and s["area"] is not None:
            area[k] = int(s["area"])
        if cats[k] not in categories:
            raise EvaluationError(f"{_where(image_id)}{what} segment {ids[k]} has unknown category_id {cats[k]}")
    if n and ids.min() <= 0:
        raise EvaluationError(f"{_where(image_id)}{what} segment id {int(ids.min())} is not allowed "
                              "(0 means void/unlabeled in the PNG; ids must be positive)")
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if n > 1 and (np.diff(ids) == 0).any():
        dup = int(ids[1:][np.diff(ids) == 0][0])
        raise EvaluationError(f"{_where(image_id)}{what} segment id {dup} is listed twice in the JSON")
    return ids, cats[order], crowd[order], area[order], order


def _compact_index(pan: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> small-int indices: 0 for id 0, k+1 for ``ids[k]``, len(ids)+1 for unknown ids.

    ``ids`` sorted, positive. Small ids use a direct lookup table; large ids (COCO colours)
    a table on the low bits, verified against the full id; else a sorted search.
    """
    unknown = len(ids) + 1
    dtype = np.uint8 if unknown < 256 else (np.uint16 if unknown < 65536 else np.int64)
    if pan.size == 0:
        return np.zeros(pan.shape, dtype)
    if pan.dtype.kind == "i" and int(pan.min()) < 0:
        return _compact_index_search(pan, ids)
    hi = int(pan.max())
    if hi < _LUT_MAX_ID:
        lut = np.full(hi + 1, unknown, dtype)
        lut[0] = 0
        keep = ids <= hi
        lut[ids[keep]] = (np.arange(len(ids)) + 1)[keep]
        return np.take(lut, pan)
    ext = np.concatenate([[0], ids]).astype(np.int64)
    for bits in (12, 14, 16, 18, 20):
        mask = (1 << bits) - 1
        low = ext & mask
        if len(np.unique(low)) != len(ext):
            continue
        lut = np.full(mask + 1, unknown, dtype)
        lut[low] = np.arange(len(ext))
        key = pan & pan.dtype.type(mask) if pan.dtype.kind == "u" else (pan & mask)
        idx = np.take(lut, key)
        ext_full = np.concatenate([ext, [-1]]).astype(pan.dtype if pan.dtype.kind == "i" else np.int64)
        wrong = ext_full[idx] != pan
        idx[wrong] = unknown
        return idx
    return _compact_index_search(pan, ids)


def _compact_index_search(pan: np.ndarray, ids: np.ndarray) -> np.ndarray:
    flat = pan.reshape(-1).astype(np.int64, copy=False)
    if len(ids) == 0:
        out = np.where(flat == 0, 0, 1)
        return out.reshape(pan.shape).astype(np.intp)
    pos = np.searchsorted(ids, flat)
    np.minimum(pos, len(ids) - 1, out=pos)
    hit = ids[pos] == flat
    out = np.where(hit, pos + 1, np.where(flat == 0, 0, len(ids) + 1))
    return out.reshape(pan.shape).astype(np.intp)


def _ids_not_in(pan: np.ndarray, ids: np.ndarray) -> list[int]:
    known = set(ids.tolist())
    return [int(v) for v in np.unique(pan) if v != 0 and int(v) not in known][:10]


# --------------------------------------------------------------------------- one image
def pq_stats_image(
    gt_pan: np.ndarray,
    gt_segments: Sequence[Mapping],
    pred_pan: np.ndarray,
    pred_segments: Sequence[Mapping],
    categories: Mapping[int, Mapping] | Sequence[Mapping],
    protocol: str = "standard",
    *,
    image_id: Any = None,
    reference_size: tuple[int, int] | None = REFERENCE_SIZE,
) -> PQStats:
    """PQ accumulators of one image.

    gt_pan, pred_pan: (H, W) integer segment-id maps of equal shape (0 = void / unlabeled).
    gt_segments / pred_segments: lists of ``{"id", "category_id", "iscrowd"}`` (GT may give
    ``area``, used by ``standard`` as cityscapesscripts does). categories: id -> {"name",
    "isthing"} or the JSON list. protocol: ``standard`` or ``reference`` (module docstring);
    ``reference_size`` = (h, w) the reference resizes to (None keeps the input size).
    Raises :class:`EvaluationError` on inconsistent input (naming ``image_id``).
    """
    _check_protocol(protocol)
    categories = normalize_categories(categories)
    gt_pan = np.asarray(gt_pan)
    pred_pan = np.asarray(pred_pan)
    if gt_pan.ndim != 2 or pred_pan.ndim != 2:
        raise EvaluationError(f"{_where(image_id)}segment maps must be 2-D id maps, got GT {gt_pan.shape} "
                              f"and prediction {pred_pan.shape}")
    if gt_pan.shape != pred_pan.shape:
        raise EvaluationError(f"{_where(image_id)}prediction size {pred_pan.shape[1]}x{pred_pan.shape[0]} differs "
                              f"from ground truth {gt_pan.shape[1]}x{gt_pan.shape[0]} (W x H)")
    for name, a in (("GT", gt_pan), ("prediction", pred_pan)):
        if not np.issubdtype(a.dtype, np.integer):
            raise EvaluationError(f"{_where(image_id)}{name} segment map must be integer, got {a.dtype}")

    g_ids, g_cat, g_crowd, g_area_json, _ = _segment_table(gt_segments, categories, "GT", image_id)
    p_ids, p_cat, _, _, _ = _segment_table(pred_segments, categories, "predicted", image_id)
    G, P = len(g_ids), len(p_ids)

    g_idx = _compact_index(gt_pan, g_ids)
    p_idx = _compact_index(pred_pan, p_ids)
    n_g, n_p = G + 2, P + 2
    if protocol == "reference":
        full = _joint_table(g_idx, p_idx, n_g, n_p)
        _validate(full, gt_pan, pred_pan, g_ids, p_ids, image_id)
        if reference_size is not None and tuple(gt_pan.shape) != tuple(reference_size):
            g_idx = resize_nearest(g_idx, reference_size)
            p_idx = resize_nearest(p_idx, reference_size)
            table = _joint_table(g_idx, p_idx, n_g, n_p)
        else:
            table = full
    else:
        table = _joint_table(g_idx, p_idx, n_g, n_p)
        _validate(table, gt_pan, pred_pan, g_ids, p_ids, image_id)

    inter = table[1:G + 1, 1:P + 1]  # (G, P)
    p_area = table[:, 1:P + 1].sum(0)
    g_area_pix = table[1:G + 1, :].sum(1)
    void_p = table[0, 1:P + 1]

    cat_ids = np.array(sorted(categories), np.int64)
    stats = PQStats.empty(cat_ids, protocol)
    gci = np.searchsorted(cat_ids, g_cat)
    pci = np.searchsorted(cat_ids, p_cat)
    is_thing_cat = np.array([categories[int(c)]["isthing"] == 1 for c in cat_ids], bool)

    if protocol == "standard":
        g_area = np.where(g_area_json >= 0, g_area_json, g_area_pix)
        g_valid = ~g_crowd
        same = (g_cat[:, None] == p_cat[None, :]) & g_valid[:, None] & (inter > 0)
        union = p_area[None, :] + g_area[:, None] - inter - void_p[None, :]
    else:
        # crowd and small GT segments are void (dropped, not FN); no void removal from the union
        min_area = np.where(is_thing_cat[gci], REFERENCE_GT_THING_MIN_AREA, REFERENCE_GT_STUFF_MIN_AREA)
        g_valid = ~g_crowd & (g_area_pix >= min_area)
        g_area = g_area_pix
        same = (g_cat[:, None] == p_cat[None, :]) & g_valid[:, None] & (inter > 0)
        union = p_area[None, :] + g_area[:, None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(same, inter / np.where(same, union, 1), 0.0)
    match = same & (iou > 0.5)
    gi, pj = np.nonzero(match)
    C = len(cat_ids)
    stats.tp += np.bincount(gci[gi], minlength=C)
    stats.iou += np.bincount(gci[gi], weights=iou[gi, pj], minlength=C)
    g_matched = match.any(1)
    p_matched = match.any(0)
    stats.fn += np.bincount(gci[g_valid & ~g_matched], minlength=C)

    p_unmatched = ~p_matched
    if protocol == "standard":
        # crowd region of a category: the last crowd GT segment of it in list order (as cityscapesscripts)
        crowd_row = np.full(C, -1, np.intp)
        order = np.argsort(_list_positions(gt_segments, g_ids), kind="stable")
        for k in order:
            if g_crowd[k]:
                crowd_row[gci[k]] = k
        ignored = void_p.astype(np.int64)
        cr = crowd_row[pci]
        has = cr >= 0
        ignored[has] += inter[cr[has], np.nonzero(has)[0]]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = ignored / p_area
        p_unmatched &= ~(frac > 0.5)
    else:
        p_unmatched &= p_area > 0  # a segment that vanished in the resize does not exist at 512x1024
    stats.fp += np.bincount(pci[p_unmatched], minlength=C)
    return stats


def _list_positions(segments: Sequence[Mapping], sorted_ids: np.ndarray) -> np.ndarray:
    """Position in the original list of each sorted id."""
    pos = {int(s["id"]): k for k, s in enumerate(segments)}
    return np.array([pos[int(i)] for i in sorted_ids], np.int64)


def _joint_table(g_idx: np.ndarray, p_idx: np.ndarray, n_g: int, n_p: int) -> np.ndarray:
    """(n_g, n_p) int64 pixel counts of every (GT index, prediction index) pair.

    Uses OpenCV's 2-D histogram of two uint8 maps when available (exact below 2^24
    pixels, several times faster than ``np.bincount``), else one ``np.bincount``.
    """
    cv2 = _opencv()
    if (cv2 is not None and g_idx.dtype == np.uint8 and p_idx.dtype == np.uint8 and g_idx.size < (1 << 24)
            and g_idx.ndim == 2):
        hist = cv2.calcHist([np.ascontiguousarray(g_idx), np.ascontiguousarray(p_idx)], [0, 1], None,
                             [n_g, n_p], [0, n_g, 0, n_p])
        return hist.astype(np.int64)
    small = n_g * n_p <= 65536  # uint16 arithmetic is several times faster than intp
    joint = g_idx.reshape(-1).astype(np.uint16 if small else np.intp)
    joint *= n_p
    joint += p_idx.reshape(-1).astype(joint.dtype, copy=False)
    return np.bincount(joint, minlength=n_g * n_p).reshape(n_g, n_p).astype(np.int64, copy=False)


def _validate(table: np.ndarray, gt_pan, pred_pan, g_ids, p_ids, image_id) -> None:
    G, P = len(g_ids), len(p_ids)
    if table[G + 1].sum() > 0:
        raise EvaluationError(f"{_where(image_id)}GT PNG has segment ids {_ids_not_in(gt_pan, g_ids)} "
                              "that are not in the GT JSON")
    if table[:, P + 1].sum() > 0:
        raise EvaluationError(f"{_where(image_id)}segment ids {_ids_not_in(pred_pan, p_ids)} are in the "
                              "prediction PNG but not in the prediction JSON")
    g_pix = table[1:G + 1].sum(1)
    if G and (g_pix == 0).any():
        raise EvaluationError(f"{_where(image_id)}GT segment ids {g_ids[g_pix == 0][:10].tolist()} are in the "
                              "GT JSON but not in the GT PNG")
    p_pix = table[:, 1:P + 1].sum(0)
    if P and (p_pix == 0).any():
        raise EvaluationError(f"{_where(image_id)}segment ids {p_ids[p_pix == 0][:10].tolist()} are in the "
                              "prediction JSON but not in the prediction PNG")


# --------------------------------------------------------------------------- summary
def _group(names_idx: np.ndarray, iou, tp, fp, fn, protocol: str) -> dict:
    iou, tp, fp, fn = iou[names_idx], tp[names_idx], fp[names_idx], fn[names_idx]
    present = (tp + fp + fn) > 0
    n = int(present.sum())
    if n == 0:
        return {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "n": 0}
    denom = tp + 0.5 * fp + 0.5 * fn
    with np.errstate(divide="ignore", invalid="ignore"):
        if protocol == "standard":
            pq_c = np.where(present, iou / np.where(present, denom, 1), 0.0)
            sq_c = np.where(tp > 0, iou / np.maximum(tp, 1), 0.0)
            rq_c = np.where(present, tp / np.where(present, denom, 1), 0.0)
            return {"PQ": 100 * float(pq_c[present].sum() / n), "SQ": 100 * float(sq_c[present].sum() / n),
                    "RQ": 100 * float(rq_c[present].sum() / n), "n": n}
        sq_c = iou / (tp + REFERENCE_EPS)
        rq_c = np.where(present, tp / np.where(present, denom, 1), 0.0)
        pq_c = sq_c * rq_c
    return {
        "PQ": 100 * float(np.mean(pq_c[present])),
        "SQ": 100 * float(iou.sum() / (tp.sum() + REFERENCE_EPS)),
        "RQ": 100 * float(tp.sum() / (tp.sum() + 0.5 * fp.sum() + 0.5 * fn.sum() + REFERENCE_EPS)),
        "n": n,
    }


def per_class_metrics(iou: float, tp: int, fp: int, fn: int, protocol: str = "standard") -> tuple[float, float, float]:
    """(PQ, SQ, RQ) as fractions (0-1) of one class under ``protocol``; all 0 when TP+FP+FN = 0."""
    denom = tp + 0.5 * fp + 0.5 * fn
    if denom == 0:
        return 0.0, 0.0, 0.0
    rq = tp / denom
    if protocol == "standard":
        return iou / denom, (iou / tp if tp else 0.0), rq
    sq = iou / (tp + REFERENCE_EPS)
    return sq * rq, sq, rq


def summarize_pq(stats: PQStats, categories: Mapping[int, Mapping] | Sequence[Mapping],
                 protocol: str | None = None) -> dict:
    """PQ/SQ/RQ (percent, 0-100) overall, stuff, things and per class from accumulated stats.

    Returns ``protocol``, ``PQ, SQ, RQ, PQ_stuff, SQ_stuff, RQ_stuff, PQ_things, SQ_things,
    RQ_things``, ``n_classes, n_stuff, n_things`` (classes with TP+FP+FN > 0, over which
    averages run), ``per_class`` {name: {PQ, SQ, RQ, TP, FP, FN, IoU_sum, category_id,
    isthing}} for every category, and ``note`` when no class has TP+FP+FN > 0 (then all
    metrics are 0 rather than the division by zero of cityscapesscripts).
    """
    protocol = protocol or stats.protocol
    _check_protocol(protocol)
    if protocol != stats.protocol:
        raise EvaluationError(f"stats were accumulated with protocol {stats.protocol!r}, not {protocol!r}")
    categories = normalize_categories(categories)
    cat_ids = np.array(sorted(categories), np.int64)
    vals = np.array([stats.get(int(c)) for c in cat_ids], dtype=object).reshape(len(cat_ids), 4)
    iou = vals[:, 0].astype(np.float64)
    tp, fp, fn = (vals[:, k].astype(np.int64) for k in (1, 2, 3))
    thing = np.array([categories[int(c)]["isthing"] == 1 for c in cat_ids], bool)
    everything = np.arange(len(cat_ids))
    out: dict[str, Any] = {"protocol": protocol}
    groups = {"": everything, "_stuff": everything[~thing], "_things": everything[thing]}
    counts = {}
    for suffix, idx in groups.items():
        r = _group(idx, iou, tp, fp, fn, protocol)
        out["PQ" + suffix], out["SQ" + suffix], out["RQ" + suffix] = r["PQ"], r["SQ"], r["RQ"]
        counts[suffix] = r["n"]
    out["n_classes"], out["n_stuff"], out["n_things"] = counts[""], counts["_stuff"], counts["_things"]
    if counts[""] == 0:
        out["note"] = "no class has TP+FP+FN > 0 (nothing to evaluate): all metrics set to 0"
    per_class = {}
    names = [str(categories[int(c)]["name"]) for c in cat_ids]
    for k, c in enumerate(cat_ids):
        pq, sq, rq = per_class_metrics(float(iou[k]), int(tp[k]), int(fp[k]), int(fn[k]), protocol)
        name = names[k] if names.count(names[k]) == 1 else f"{names[k]} ({int(c)})"
        per_class[name] = {"PQ": 100 * pq, "SQ": 100 * sq, "RQ": 100 * rq, "TP": int(tp[k]), "FP": int(fp[k]),
                           "FN": int(fn[k]), "IoU_sum": float(iou[k]), "category_id": int(c),
                           "isthing": bool(thing[k])}
    out["per_class"] = per_class
    return out


# --------------------------------------------------------------------------- files
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_panoptic_png(path: str | os.PathLike) -> np.ndarray:
    """COCO panoptic PNG -> (H, W) uint32 segment ids ``R + 256 G + 256^2 B``.

    Decoded with pyspng (OpenCV fallback). A single-channel PNG is taken as ids directly.
    Raises :class:`EvaluationError` naming the file when missing, not a PNG or corrupt.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EvaluationError(f"{path}: file not found") from None
    except OSError as exc:
        raise EvaluationError(f"{path}: cannot read ({exc.strerror})") from None
    if not data.startswith(_PNG_MAGIC):
        raise EvaluationError(f"{path}: not a PNG file")
    arr = None
    try:
        import pyspng

        arr = pyspng.load(data)
    except ImportError:  # without pyspng: OpenCV's decoder below reads the file
        pass
    except Exception as exc:
        raise EvaluationError(f"{path}: corrupt PNG ({exc})") from None
    if arr is None:
        import cv2

        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise EvaluationError(f"{path}: corrupt PNG")
        if arr.ndim == 3 and arr.shape[2] >= 3:
            arr = np.concatenate([arr[:, :, 2::-1], arr[:, :, 3:]], axis=2)
    return rgb_to_ids(arr, path)


def rgb_to_ids(arr: np.ndarray, path: Any = "array") -> np.ndarray:
    """(H, W, 3|4) uint8 RGB(A) -> (H, W) uint32 ids; (H, W) / (H, W, 1) integer maps pass through."""
    if arr.ndim == 3 and arr.shape[2] in (1, 2):
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        if not np.issubdtype(arr.dtype, np.integer):
            raise EvaluationError(f"{path}: segment map must be integer, got {arr.dtype}")
        return arr.astype(np.uint32, copy=False)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
        raise EvaluationError(f"{path}: expected an 8-bit RGB panoptic PNG, got shape {arr.shape} {arr.dtype}")
    h, w = arr.shape[:2]
    cv2 = _opencv()
    if cv2 is not None:
        buf = cv2.cvtColor(np.ascontiguousarray(arr[:, :, :3]), cv2.COLOR_RGB2RGBA)  # alpha 255, masked below
    else:  # pragma: no cover
        buf = np.zeros((h, w, 4), np.uint8)
        buf[:, :, :3] = arr[:, :, :3]
    ids = buf.view("<u4").reshape(h, w)
    np.bitwise_and(ids, np.uint32(0xFFFFFF), out=ids)
    return ids


def _load_json(path: str | os.PathLike, what: str) -> dict:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise EvaluationError(f"{path}: {what} JSON not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{path}: malformed {what} JSON ({exc})") from None
    except OSError as exc:
        raise EvaluationError(f"{path}: cannot read {what} JSON ({exc.strerror})") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise EvaluationError(f"{path}: {what} JSON has no 'annotations' list (COCO panoptic format expected)")
    for a in data["annotations"]:
        if not isinstance(a, dict) or "image_id" not in a or "file_name" not in a \
                or not isinstance(a.get("segments_info"), list):
            raise EvaluationError(f"{path}: malformed annotation {str(a)[:120]} "
                                  "(needs image_id, file_name and a segments_info list)")
    return data


@dataclass
class _Job:
    image_id: Any
    gt_path: str
    gt_segments: list
    pred_path: str | None  # None: missing prediction (all GT segments are false negatives)
    pred_segments: list = field(default_factory=list)


def _eval_job(job: _Job, categories: dict, protocol: str) -> PQStats:
    gt = read_panoptic_png(job.gt_path)
    if job.pred_path is None:
        pred = np.zeros_like(gt)
    else:
        pred = read_panoptic_png(job.pred_path)
        if pred.shape != gt.shape:  # scored at the GT's size (the reference then resizes both to 512x1024)
            check_aspect(pred.shape, gt.shape, job.pred_path)
            pred = resize_nearest(pred, gt.shape)
    return pq_stats_image(gt, job.gt_segments, pred, job.pred_segments, categories, protocol,
                          image_id=job.image_id)


def _resized_predictions(pairs, gt_folder: Path, pred_folder: Path) -> dict:
    """``prediction_resized_from`` (W x H, one size or a list), ``n_predictions_resized``: from PNG headers."""
    sizes, n = set(), 0
    for _, a, p in pairs:
        if p is None:
            continue
        g, q = png_size(gt_folder / a["file_name"]), png_size(pred_folder / p["file_name"])
        if g is not None and q is not None and g != q:
            sizes.add(f"{q[1]}x{q[0]}")
            n += 1
    if not n:
        return {}
    return {"prediction_resized_from": sorted(sizes)[0] if len(sizes) == 1 else sorted(sizes),
            "n_predictions_resized": n,
            "prediction_resize": "nearest (PIL pixel-centre convention) to the ground truth's size"}


def _eval_chunk(jobs: list[_Job], categories: dict, protocol: str) -> PQStats:
    total = PQStats.empty(categories, protocol)
    for job in jobs:
        total += _eval_job(job, categories, protocol)
    return total


ENGINES = ("auto", "numpy", "hotcoco")


def resolve_engine(engine: str, protocol: str = "standard", workers: int = 1) -> str:
    """``numpy`` or ``hotcoco``: the engine :func:`evaluate_panoptic_folders` uses for ``engine``.

    ``auto`` is hotcoco when it is importable, the protocol is ``standard`` and hotcoco can
    run with ``workers`` threads in this process (see :mod:`evaluation.hotcoco_engine`),
    else numpy. An explicit ``hotcoco`` that cannot be honoured raises :class:`EvaluationError`.
    """
    if engine not in ENGINES:
        raise EvaluationError(f"unknown engine {engine!r} (choose {', '.join(ENGINES)})")
    if engine == "numpy":
        return "numpy"
    from . import hotcoco_engine

    if engine == "hotcoco":
        if protocol != "standard":
            raise EvaluationError(f"engine hotcoco computes only the standard protocol, not {protocol!r} "
                                  "(use engine numpy or auto)")
        if not hotcoco_engine.available():
            raise EvaluationError("engine hotcoco needs the hotcoco package (pip install hotcoco), "
                                  "which is not importable here")
        return "hotcoco"
    if protocol == "standard" and hotcoco_engine.available() and hotcoco_engine.pool_matches(workers):
        return "hotcoco"
    return "numpy"


def evaluate_panoptic_folders(
    gt_json: str | os.PathLike,
    gt_folder: str | os.PathLike,
    pred_json: str | os.PathLike,
    pred_folder: str | os.PathLike,
    protocol: str = "standard",
    workers: int = 1,
    allow_missing: bool = False,
    engine: str = "auto",
    map_fn: Callable[[Callable, list], list] | None = None,
) -> dict:
    """Evaluate a COCO/Cityscapes panoptic prediction (JSON + PNG folder) against ground truth.

    Images are paired by ``image_id``; categories come from the GT JSON. A prediction of
    another size than its GT (same aspect ratio within 2%) is resized to the GT's size with
    PIL's pixel-centre nearest (:mod:`evaluation.resize`) before scoring, by the numpy engine;
    the result records ``prediction_resized_from``. A GT image with
    no prediction is an error unless ``allow_missing`` (then all its segments are false
    negatives and it is counted in ``n_missing`` / listed in ``missing``). Predictions for
    images not in the GT are ignored (``n_extra_predictions``).

    ``engine``: ``numpy`` (ours: PNG decode with pyspng, one joint histogram per image),
    ``hotcoco`` (``hotcoco.panoptic``, standard protocol only, see
    :mod:`evaluation.hotcoco_engine`) or ``auto`` (:func:`resolve_engine`; if hotcoco refuses
    the input, auto scores it again with numpy, whose messages name our checks, and says so
    in ``engine_note``). Both give the same numbers (equal to cityscapesscripts). One
    difference in what is accepted: numpy refuses GT whose PNG and JSON disagree (an id in
    one and not the other); hotcoco, like cityscapesscripts, scores it.
    ``workers``: numpy: processes (a local process pool); hotcoco: threads.
    ``map_fn(func, items) -> results`` (optional) runs the numpy engine's per-image work
    instead of the local pool (``pseudo_labels`` passes its runner: Ray, failure reports);
    ``func`` and the items are picklable.
    Returns :func:`summarize_pq` plus ``n_images``, ``n_missing``, ``n_extra_predictions``,
    ``engine`` (and ``engine_version`` for hotcoco).
    Raises :class:`EvaluationError` naming the file / image on bad input.
    """
    _check_protocol(protocol)
    workers = max(1, int(workers or 1))
    chosen = resolve_engine(engine, protocol, workers)
    gt_folder, pred_folder = Path(gt_folder), Path(pred_folder)
    gt = _load_json(gt_json, "ground-truth")
    pred = _load_json(pred_json, "prediction")
    if not isinstance(gt.get("categories"), list) or not gt["categories"]:
        raise EvaluationError(f"{gt_json}: ground-truth JSON has no 'categories' list")
    categories = normalize_categories(gt["categories"])
    for folder, what in ((gt_folder, "ground-truth"), (pred_folder, "prediction")):
        if not folder.is_dir():
            raise EvaluationError(f"{folder}: {what} PNG folder not found")
    preds: dict[Any, dict] = {}
    for a in pred["annotations"]:
        if a["image_id"] in preds:
            raise EvaluationError(f"{pred_json}: image {a['image_id']} has two prediction annotations")
        preds[a["image_id"]] = a
    pairs, missing, seen = [], [], set()  # pairs: (image_id, gt annotation, pred annotation or None)
    for a in gt["annotations"]:
        image_id = a["image_id"]
        if image_id in seen:
            raise EvaluationError(f"{gt_json}: image {image_id} has two ground-truth annotations")
        seen.add(image_id)
        p = preds.get(image_id)
        if p is None:
            if not allow_missing:
                raise EvaluationError(f"no prediction for image {image_id} in {pred_json} "
                                      "(use --allow-missing to count its segments as false negatives)")
            missing.append(image_id)
        pairs.append((image_id, a, p))
    n_extra = len(set(preds) - seen)

    note = None
    total = None
    resized = _resized_predictions(pairs, gt_folder, pred_folder)
    if resized and chosen == "hotcoco":  # hotcoco compares maps of one size: ours resizes first
        if engine == "hotcoco":
            raise EvaluationError(f"engine hotcoco cannot score predictions of another size than the ground truth "
                                  f"({resized['prediction_resized_from']}); use engine numpy or auto")
        chosen, note = "numpy", ("predictions differ in size from the ground truth: scored with the numpy engine, "
                                 "which resizes them")
    if chosen == "hotcoco":
        try:
            total = _score_hotcoco(pairs, gt_folder, pred_folder, categories, workers)
        except EvaluationError as exc:
            if engine != "auto":
                raise
            chosen, note = "numpy", f"hotcoco refused the input ({exc}); scored with the numpy engine"
        except Exception as exc:  # an unexpected hotcoco failure: auto still has an answer
            if engine != "auto":
                raise EvaluationError(f"hotcoco failed: {type(exc).__name__}: {exc}") from None
            chosen, note = "numpy", f"hotcoco failed ({type(exc).__name__}: {exc}); scored with the numpy engine"
    if chosen == "numpy":
        total = _score_numpy(pairs, gt_folder, pred_folder, categories, protocol, workers, map_fn)
    result = summarize_pq(total, categories, protocol)
    result["n_images"] = len(pairs)
    result["n_missing"] = len(missing)
    if missing:
        result["missing"] = [str(m) for m in missing]
    result["n_extra_predictions"] = n_extra
    result.update(resized)
    result["engine"] = chosen
    if chosen == "hotcoco":
        from . import hotcoco_engine

        result["engine_version"] = hotcoco_engine.version()
    if note:
        result["engine_note"] = note
    return result


def _jobs(pairs, gt_folder: Path, pred_folder: Path) -> list[_Job]:
    return [_Job(image_id, str(gt_folder / a["file_name"]), a["segments_info"], None, []) if p is None else
            _Job(image_id, str(gt_folder / a["file_name"]), a["segments_info"], str(pred_folder / p["file_name"]),
                 p["segments_info"]) for image_id, a, p in pairs]


def _score_numpy(pairs, gt_folder: Path, pred_folder: Path, categories: dict, protocol: str, workers: int,
                 map_fn) -> PQStats:
    jobs = _jobs(pairs, gt_folder, pred_folder)
    total = PQStats.empty(categories, protocol)
    if map_fn is not None:
        for stats in map_fn(functools.partial(_eval_job, categories=categories, protocol=protocol), jobs):
            total += stats
    elif workers == 1 or len(jobs) <= 1:
        for job in jobs:
            total += _eval_job(job, categories, protocol)
    else:
        n_chunks = min(len(jobs), workers * 4)
        chunks = [jobs[i::n_chunks] for i in range(n_chunks)]
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_eval_chunk, c, categories, protocol) for c in chunks]
            for fut in futures:
                total += fut.result()
    return total


def _score_hotcoco(pairs, gt_folder: Path, pred_folder: Path, categories: dict, workers: int) -> PQStats:
    """Standard-protocol stats by hotcoco; the JSON is checked here first, as the numpy engine does."""
    from . import hotcoco_engine

    present, total = [], PQStats.empty(categories, "standard")
    for image_id, a, p in pairs:
        gsegs = hotcoco_engine.clean_segments(a["segments_info"], categories, "GT", image_id, gt=True)
        if p is None:
            gt_png = gt_folder / a["file_name"]
            if not gt_png.is_file():  # never read: its segments are all false negatives
                raise EvaluationError(f"{gt_png}: file not found")
            total += hotcoco_engine.missing_image_stats(gsegs, categories)
        else:
            psegs = hotcoco_engine.clean_segments(p["segments_info"], categories, "predicted", image_id, gt=False)
            present.append((image_id, a["file_name"], gsegs, p["file_name"], psegs))
    total += hotcoco_engine.score(present, gt_folder, pred_folder, categories, workers)
    return total


def to_fractions(result: Mapping) -> dict:
    """Helper for comparisons: the 9 summary metrics of a result as fractions (percent / 100)."""
    keys = ("PQ", "SQ", "RQ", "PQ_stuff", "SQ_stuff", "RQ_stuff", "PQ_things", "SQ_things", "RQ_things")
    return {k: result[k] / 100.0 for k in keys if k in result and not math.isnan(result[k])}
