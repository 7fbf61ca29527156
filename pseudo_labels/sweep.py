"""Parameter sweep of the depth-guided splitting (tau x A_min x sigma x dilation), sharing work.

Per image (one worker call): the semantic map(s), the depth map and the panoptic ground
truth are read once; the depth gradient is computed once per sigma, the components once
per tau (:func:`pseudo_labels.instances.thing_components`), each component's dilation
once per dilation count, and every A_min is a filter on component sizes
(:func:`~pseudo_labels.instances.candidate_instances`). Every cell is scored with
``evaluation.panoptic.pq_stats_image`` on in-memory arrays, split exactly (no
approximation) into

* the stuff categories, scored once per image (the stuff segments do not depend on the
  splitting parameters), with a prediction holding only the stuff segments, and
* the thing categories, scored per cell on the pixels that can matter to them: every
  pixel of a GT thing/crowd segment plus every pixel the prediction may give a thing
  (thing-class pixels of the semantic map), flattened to a (1, N) map.

Both give per-category statistics identical to scoring the whole panoptic map (matching
is per category; a thing segment's union, void overlap and crowd overlap only involve
pixels of that subset; GT areas come from the JSON (standard) or from full segment
pixel counts (reference)). Cells whose instance maps coincide share one evaluation.

The prediction of a cell is what the single-configuration pipeline writes:
instances at the working resolution -> panoptic assembled there
(:func:`pseudo_labels.panoptic.assemble_panoptic`) -> nearest resize to the semantic
map's size -> (protocol ``reference``) nearest resize to 512x1024 inside the evaluator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import defaults
from .cityscapes import IGNORE, NUM_CLASSES, THING_TRAIN_IDS, TRAIN_ID_TO_LABEL_ID, panoptic_categories
from .errors import InputFileError, PseudoLabelsError
from .instances import (
    candidate_instances,
    check_semantic_ids,
    connected_component_instances,
    depth_gradient_magnitude,
    gradient_margin,
    normalize_depth_map,
    place_instances,
    resize_depth_bilinear,
    resize_semantic,
    thing_box,
    thing_components,
)
from .panoptic import INSTANCE_OFFSET, category_of

METRIC_KEYS = ("PQ", "PQ_stuff", "PQ_things", "SQ", "RQ", "SQ_stuff", "RQ_stuff", "SQ_things", "RQ_things")


@dataclass(frozen=True)
class Grid:
    """The swept values; cells are the cartesian product."""

    grad_thresholds: tuple[float, ...] = defaults.SWEEP_GRAD_THRESHOLDS
    min_areas: tuple[int, ...] = defaults.SWEEP_MIN_AREAS
    sigmas: tuple[float, ...] = (defaults.DEPTH_BLUR_SIGMA,)
    dilation_iters: tuple[int, ...] = (defaults.DILATION_ITERS,)
    cc_baseline: bool = True  # also score one instance per connected component (reference "CC-only")

    def cells(self) -> list[tuple[float, int, float, int]]:
        """(grad_threshold, min_area, sigma, dilation_iters) in output order."""
        return [(t, a, s, d) for s, d, t, a in product(self.sigmas, self.dilation_iters,
                                                       self.grad_thresholds, self.min_areas)]


CC_CELL = ("cc", 0, 0.0, 0)


@dataclass
class SweepSettings:
    """Everything but the grid that the per-image work needs (picklable)."""

    protocol: str = defaults.PROTOCOL
    work_resolution: tuple[int, int] = defaults.WORK_RESOLUTION
    connectivity: int = defaults.CONNECTIVITY
    normalize: str = "none"
    stuff_min_area: int = defaults.STUFF_MIN_AREA
    thing_classes: tuple[int, ...] = THING_TRAIN_IDS
    luts: list = field(default_factory=list)  # per semantic source: cluster -> trainId LUT or None


# --------------------------------------------------------------------------- per-image pieces
def cell_instances(sem_work: np.ndarray, depth_work: np.ndarray | None, grid: Grid, settings: SweepSettings
                   ) -> dict[tuple, tuple[np.ndarray, list[int], int]]:
    """Instance map of every cell: cell -> (map (H, W) int32, class of each id, #candidates).

    Gradients per sigma, components per (sigma, tau), dilations per component: shared.
    """
    out: dict[tuple, tuple[np.ndarray, list[int], int]] = {}
    things = list(settings.thing_classes)
    min_size = min(grid.min_areas)
    pad = max(grid.dilation_iters)
    if depth_work is not None:
        depth = normalize_depth_map(depth_work, settings.normalize)
        for sigma in grid.sigmas:
            # gradient once per sigma, only where thing classes lie (bit-identical there)
            box = thing_box(sem_work, things, gradient_margin(sigma))
            g = None if box is None else depth_gradient_magnitude(depth[box], sigma, dtype=np.float64)
            for tau in grid.grad_thresholds:
                edges = np.zeros(sem_work.shape, bool)
                if box is not None:
                    edges[box] = g > tau
                cc = thing_components(sem_work, edges, things, min_size, settings.connectivity, pad)
                for dil in grid.dilation_iters:
                    for amin in grid.min_areas:
                        inst = candidate_instances(cc, amin, dil)
                        m, cls = place_instances(inst, sem_work.shape, defaults.MIN_NEW_PIXELS)
                        out[(tau, amin, sigma, dil)] = (m, cls, len(inst))
    if grid.cc_baseline:
        m = connected_component_instances(sem_work, things, defaults.MIN_NEW_PIXELS, settings.connectivity)
        out[CC_CELL] = (m, _classes_of(m, sem_work), int(m.max()))
    return out


def _classes_of(inst: np.ndarray, sem: np.ndarray) -> list[int]:
    n = int(inst.max())
    cls = np.zeros(n + 1, np.int64)
    cls[inst.ravel()] = sem.ravel()
    return [int(c) for c in cls[1:]]


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """PIL-style nearest source index along one axis (as resize_semantic / the evaluator)."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def _compose(shapes: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Row / col source indices (into shapes[0]) of a chain of nearest resizes ending at shapes[-1]."""
    rows = np.arange(shapes[-1][0])
    cols = np.arange(shapes[-1][1])
    for a, b in zip(shapes[-2::-1], shapes[:0:-1]):
        rows = _nearest_index(a[0], b[0])[rows]
        cols = _nearest_index(a[1], b[1])[cols]
    return rows, cols


def _stuff_lut(sem_counts: np.ndarray, things: set[int], stuff_min_area: int) -> np.ndarray:
    lut = np.zeros(NUM_CLASSES + 1, np.int64)
    for c in range(NUM_CLASSES):
        if c not in things and sem_counts[c] >= stuff_min_area:
            lut[c] = TRAIN_ID_TO_LABEL_ID[c]
    return lut


def _segments(ids: np.ndarray) -> list[dict]:
    return [{"id": int(i), "category_id": category_of(int(i)), "iscrowd": 0} for i in ids if i != 0]


def _keep_categories(stats, keep: set[int]):
    s = stats.copy()
    drop = ~np.isin(s.cat_ids, list(keep))
    for name in ("iou", "tp", "fp", "fn"):
        getattr(s, name)[drop] = 0
    return s


def evaluate_cells(
    sem_native_shape: tuple[int, int],
    sem_work: np.ndarray,
    cells: dict[tuple, tuple[np.ndarray, list[int], int]],
    gt_pan: np.ndarray,
    gt_segments: list[dict],
    settings: SweepSettings,
    image_id: Any = None,
) -> dict[tuple, tuple[Any, int, int]]:
    """cell -> (PQStats, #candidate instances, #placed instances) for one image.

    ``gt_pan`` (H, W) ids at the GT resolution, ``gt_segments`` its JSON segments.
    """
    from evaluation.panoptic import pq_stats_image, resize_nearest

    protocol = settings.protocol
    cats = {c["id"]: c for c in panoptic_categories()}
    thing_cats = {cid for cid, c in cats.items() if c["isthing"]}
    stuff_cats = set(cats) - thing_cats
    things = set(settings.thing_classes)

    # evaluation frame
    if protocol == "reference":
        eval_shape = tuple(defaults.REFERENCE_EVAL_RESOLUTION)
        gt_eval = resize_nearest(gt_pan, eval_shape)
        chain = [sem_work.shape, sem_native_shape, eval_shape]
    else:
        eval_shape = gt_pan.shape
        gt_eval = gt_pan
        chain = [sem_work.shape, sem_native_shape, eval_shape]
    rows, cols = _compose(chain)
    seg_by_id = {int(s["id"]): s for s in gt_segments}
    gt_ids_present = np.unique(gt_eval)

    json_pos = {int(s["id"]): k for k, s in enumerate(gt_segments)}

    def gt_list(ids):
        out = []
        ids = sorted((int(i) for i in ids), key=lambda i: json_pos.get(i, -1))  # JSON order (crowd lookup)
        for i in ids:
            if i == 0:
                continue
            s = dict(seg_by_id[int(i)]) if int(i) in seg_by_id else None
            if s is None:
                raise PseudoLabelsError(f"image {image_id}: GT PNG has segment id {int(i)} not in the GT JSON")
            if protocol == "reference":
                s.pop("area", None)
            out.append(s)
        return out

    # --- stuff: once per image
    sem_w = sem_work.astype(np.int64)
    valid = sem_w < NUM_CLASSES
    counts = np.bincount(sem_w[valid], minlength=NUM_CLASSES)
    lut = _stuff_lut(counts, things, settings.stuff_min_area)
    stuff_work = lut[np.where(valid, sem_w, NUM_CLASSES)]
    stuff_eval = stuff_work[rows[:, None], cols[None, :]]
    st = pq_stats_image(gt_eval, gt_list(gt_ids_present), stuff_eval, _segments(np.unique(stuff_eval)), cats,
                        protocol, image_id=image_id, reference_size=None)
    st = _keep_categories(st, stuff_cats)

    # --- things: per cell on the subset of pixels that can matter
    thing_work = np.isin(sem_work, list(things)) & (stuff_work == 0)
    gt_thing_ids = np.array([i for i in gt_ids_present if i != 0 and seg_by_id[int(i)]["category_id"] in thing_cats],
                            np.int64)
    subset = thing_work[rows[:, None], cols[None, :]]
    if gt_thing_ids.size:
        subset |= np.isin(gt_eval, gt_thing_ids)
    flat = np.flatnonzero(subset.ravel())
    W_eval = eval_shape[1]
    src = rows[flat // W_eval] * sem_work.shape[1] + cols[flat % W_eval]
    gt_sub = gt_eval.ravel()[flat][None, :]
    gt_sub_segments = gt_list(np.unique(gt_sub))

    out: dict[tuple, tuple[Any, int, int]] = {}
    cache: dict[bytes, Any] = {}
    for cell, (inst, classes, n_cand) in cells.items():
        n = len(classes)
        ids = np.zeros(n + 1, np.int64)
        per_class: dict[int, int] = {}
        for k, c in enumerate(classes, start=1):
            j = per_class.get(c, 0)
            per_class[c] = j + 1
            ids[k] = TRAIN_ID_TO_LABEL_ID[c] * INSTANCE_OFFSET + j
        pred_sub = ids[inst.ravel()[src]]
        key = hashlib.blake2b(pred_sub.tobytes(), digest_size=16).digest()
        th = cache.get(key)
        if th is None:
            present = np.unique(pred_sub)
            th = pq_stats_image(gt_sub, gt_sub_segments, pred_sub[None, :],
                                _segments(present), cats, protocol, image_id=image_id, reference_size=None)
            th = _keep_categories(th, thing_cats)
            cache[key] = th
        total = st.copy()
        total += th
        out[cell] = (total, n_cand, n)
    return out


# --------------------------------------------------------------------------- per-image worker
@dataclass
class ImageJob:
    stem: str
    semantic_paths: list[str]
    depth_path: str | None
    gt_png: str
    gt_segments: list


def read_semantic(path: str, lut: np.ndarray | None) -> np.ndarray:
    """Semantic PNG -> trainIds (H, W) uint8; raw clusters go through ``lut`` (cluster -> trainId)."""
    from .io import read_png

    sem = read_png(path)
    if sem.ndim != 2:
        raise InputFileError(path, f"expected a single-channel class map, got shape {sem.shape}")
    if lut is not None:
        if int(sem.max()) >= len(lut):
            raise InputFileError(path, f"cluster id {int(sem.max())} >= number of clusters {len(lut) - 1}")
        sem = lut[sem]
    else:
        bad = check_semantic_ids(sem)
        if bad:
            raise InputFileError(path, f"unknown class ids {bad[:10]} (expected trainIds 0..18 or 255)")
    return sem.astype(np.uint8, copy=False)


def sweep_image(job: ImageJob, grid: Grid, settings: SweepSettings) -> list[dict[tuple, tuple[Any, int, int]]]:
    """All cells of one image for every semantic source: [source] -> cell -> (PQStats, n_cand, n_placed)."""
    from evaluation.panoptic import read_panoptic_png

    from .depth import read_depth_npy

    gt = read_panoptic_png(job.gt_png).astype(np.int64)
    work = tuple(settings.work_resolution)
    depth_work = None
    if job.depth_path is not None:
        d = read_depth_npy(job.depth_path)
        if not np.isfinite(d).all():
            raise InputFileError(job.depth_path, "depth has NaN/infinite values")
        depth_work = resize_depth_bilinear(d, work)
    results = []
    for k, path in enumerate(job.semantic_paths):
        lut = settings.luts[k] if settings.luts else None
        sem = read_semantic(path, lut)
        sem_work = resize_semantic(sem, work)
        cells = cell_instances(sem_work, depth_work, grid, settings)
        results.append(evaluate_cells(sem.shape, sem_work, cells, gt, job.gt_segments, settings, job.stem))
    return results


# --------------------------------------------------------------------------- summary
def summarize_cells(per_image: list[list[dict]], n_sources: int, categories=None) -> list[dict[tuple, dict]]:
    """Sum per-image stats per (source, cell) and summarise: [source] -> cell -> metrics."""
    from evaluation.panoptic import summarize_pq

    categories = categories or panoptic_categories()
    out = []
    for k in range(n_sources):
        acc: dict[tuple, list] = {}
        for img in per_image:
            for cell, (stats, n_cand, n_placed) in img[k].items():
                a = acc.setdefault(cell, [None, 0, 0, 0])
                if a[0] is None:
                    a[0] = stats.copy()
                else:
                    a[0] += stats
                a[1] += n_cand
                a[2] += n_placed
                a[3] += 1
        res = {}
        for cell, (stats, n_cand, n_placed, n_img) in acc.items():
            m = summarize_pq(stats, categories, stats.protocol)
            m["avg_instances"] = n_cand / max(n_img, 1)
            m["avg_placed_instances"] = n_placed / max(n_img, 1)
            m["n_images"] = n_img
            res[cell] = m
        out.append(res)
    return out


def result_row(cell: tuple, m: dict, digits: int | None = None) -> dict:
    """One ``results`` entry (the reference schema plus sigma, dilation, SQ/RQ splits, per class)."""
    r = (lambda v: round(v, digits)) if digits is not None else (lambda v: v)
    tau, amin, sigma, dil = cell
    row = {"grad_threshold": None if tau == "cc" else tau, "min_area": None if tau == "cc" else amin,
           "sigma": None if tau == "cc" else sigma, "dilation_iters": None if tau == "cc" else dil,
           "mode": "cc-only" if tau == "cc" else "depth-guided"}
    for key in METRIC_KEYS:
        row[key] = r(m[key])
    row["avg_instances"] = r(m["avg_instances"])
    row["avg_placed_instances"] = r(m["avg_placed_instances"])
    row["n_images"] = m["n_images"]
    row["per_class"] = {name: {kk: (r(v) if isinstance(v, float) else v) for kk, v in pc.items()}
                        for name, pc in m["per_class"].items()}
    return row


def best_row(rows: list[dict]) -> dict | None:
    """Highest PQ among the depth-guided rows (first on ties, in grid order)."""
    cands = [r for r in rows if r["mode"] == "depth-guided"]
    if not cands:
        return None
    return max(cands, key=lambda r: r["PQ"])
