"""Parameter sweep of the depth-guided splitting (tau x A_min x sigma x dilation), sharing work.

Per image (one worker call): the semantic map(s), the depth map and the panoptic ground
truth are read once; the class masks are computed once, the depth gradient once per
sigma, the components once per tau (:func:`pseudo_labels.stages.instance.instances.thing_components`),
each component's dilation once per dilation count, and every A_min is a filter on
component sizes (:func:`~pseudo_labels.stages.instance.instances.candidate_instances`); each cell's
instance map is placed into one reused buffer and scored at once
(:func:`iter_cell_instances`). The ground truth is turned once per image into compact
segment indices in the evaluation frame (:func:`gt_frame`). Every cell is scored with
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
pixel counts (reference); segment ids are renumbered in increasing order, which changes
no statistic and no summation order). Cells whose instance maps coincide share one
evaluation.

The prediction of a cell is what the single-configuration pipeline writes:
instances at the working resolution -> panoptic assembled there
(:func:`pseudo_labels.stages.instance.panoptic.assemble_panoptic`) -> nearest resize to the semantic
map's size -> (protocol ``reference``) nearest resize to 512x1024 inside the evaluator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.datasets import cityscapes
from pseudo_labels.datasets.base import LabelTable
from pseudo_labels.stages.instance.instances import (
    candidate_instances,
    check_semantic_ids,
    class_masks,
    connected_component_instances,
    depth_gradient_magnitude,
    expected_ids_text,
    gradient_margin,
    normalize_depth_map,
    place_instances,
    resize_depth_bilinear,
    resize_semantic,
    thing_components,
)
from pseudo_labels.stages.semantic.centroids import load_cluster_lut  # noqa: F401  (part of the sweep's interface)
from pseudo_labels.stages.semantic.clustering import nearest_indices
from pseudo_labels.stages.instance.panoptic import panoptic_categories, panoptic_ids
from pseudo_labels.core.validate import COUNT, Range, validate_config

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
    """Everything but the grid that the per-image work needs (picklable).

    ``labels``: the label table of the semantic maps (class ids 0..C-1, void; panoptic ids and
    categories); ``thing_classes`` default to its thing ids.
    """

    protocol: str = defaults.PROTOCOL
    work_resolution: tuple[int, int] | None = defaults.WORK_RESOLUTION  # None: half of each semantic map
    connectivity: int = defaults.CONNECTIVITY
    normalize: str = "none"
    stuff_min_area: int = defaults.STUFF_MIN_AREA
    thing_classes: tuple[int, ...] | None = None
    luts: list = field(default_factory=list)  # per semantic source: cluster -> class-id LUT or None
    labels: LabelTable = cityscapes.LABELS
    ap50: bool = False  # also a COCO instance record per cell (evaluation.instances) for the AP50 column

    def __post_init__(self) -> None:
        if self.thing_classes is None:
            self.thing_classes = tuple(self.labels.thing_ids)


# --------------------------------------------------------------------------- per-image pieces
def _union_box(boxes, margin: int, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """Smallest box holding all ``boxes``, grown by ``margin`` (clipped); None if there are none."""
    if not boxes:
        return None
    H, W = shape
    r0 = min(b[0].start for b in boxes)
    r1 = max(b[0].stop for b in boxes)
    c0 = min(b[1].start for b in boxes)
    c1 = max(b[1].stop for b in boxes)
    return slice(max(r0 - margin, 0), min(r1 + margin, H)), slice(max(c0 - margin, 0), min(c1 + margin, W))


def iter_cell_instances(sem_work: np.ndarray, depth_work: np.ndarray | None, grid: Grid, settings: SweepSettings):
    """Yield (cell, instance map (H, W) int32, class of each id, #candidates) for every cell.

    Class masks once per image, gradients per sigma, components per (sigma, tau),
    dilations per component: shared. The depth-guided maps are one reused buffer, valid
    until the next item (copy it to keep it).
    """
    things = sorted({int(c) for c in settings.thing_classes})
    masks = class_masks(sem_work, things)
    if depth_work is not None and grid.grad_thresholds:
        min_size = min(grid.min_areas)
        pad = max(grid.dilation_iters)
        depth = normalize_depth_map(depth_work, settings.normalize)
        buf = np.zeros(sem_work.shape, np.int32)
        written: list = []
        # classes too small for every A_min never need edges; the gradient is only needed around the others
        needed = [masks.boxes[c] for c in things if masks.area[c] >= min_size]
        for sigma in grid.sigmas:
            # gradient once per sigma, only where thing classes lie (bit-identical there)
            box = _union_box(needed, gradient_margin(sigma), sem_work.shape)
            g = None if box is None else depth_gradient_magnitude(depth[box], sigma, dtype=np.float64)
            for tau in grid.grad_thresholds:
                edges = np.zeros(sem_work.shape, bool)
                if box is not None:
                    np.greater(g, tau, out=edges[box])
                cc = thing_components(sem_work, edges, things, min_size, settings.connectivity, pad, masks=masks)
                for dil in grid.dilation_iters:
                    for amin in grid.min_areas:
                        inst = candidate_instances(cc, amin, dil)
                        for b in written:  # back to all zeros
                            buf[b] = 0
                        m, cls = place_instances(inst, sem_work.shape, defaults.MIN_NEW_PIXELS, out=buf)
                        written = [i.box for i in inst]
                        yield (tau, amin, sigma, dil), m, cls, len(inst)
    if grid.cc_baseline:  # components only: the code of ``depth = "none"`` in generate-depth-guided-instances
        m = connected_component_instances(sem_work, things, defaults.CC_MIN_AREA, settings.connectivity)
        yield CC_CELL, m, _classes_of(m, sem_work), int(m.max())


def cell_instances(sem_work: np.ndarray, depth_work: np.ndarray | None, grid: Grid, settings: SweepSettings
                   ) -> dict[tuple, tuple[np.ndarray, list[int], int]]:
    """Instance map of every cell: cell -> (map (H, W) int32, class of each id, #candidates)."""
    return {cell: (m.copy(), cls, n) for cell, m, cls, n in iter_cell_instances(sem_work, depth_work, grid, settings)}


def _classes_of(inst: np.ndarray, sem: np.ndarray) -> list[int]:
    n = int(inst.max())
    cls = np.zeros(n + 1, np.int64)
    cls[inst.ravel()] = sem.ravel()
    return [int(c) for c in cls[1:]]


def _compose(shapes: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Row / col source indices (into shapes[0]) of a chain of nearest resizes ending at shapes[-1]."""
    rows = np.arange(shapes[-1][0])
    cols = np.arange(shapes[-1][1])
    for a, b in zip(shapes[-2::-1], shapes[:0:-1]):
        rows = nearest_indices(b[0], a[0])[rows]
        cols = nearest_indices(b[1], a[1])[cols]
    return rows, cols


def _resample(a: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``a[rows[:, None], cols[None, :]]`` (two takes: several times faster than the 2-D gather)."""
    if len(rows) == a.shape[0] and len(cols) == a.shape[1] and (rows == np.arange(len(rows))).all() \
            and (cols == np.arange(len(cols))).all():
        return a
    return a.take(rows, axis=0).take(cols, axis=1)


def _histogram(a: np.ndarray, n: int) -> np.ndarray:
    """Counts of the values 0..n-1 of a non-negative integer array (values >= n are not counted)."""
    if a.dtype == np.uint8 and a.ndim == 2 and 0 < a.size < (1 << 24):  # float32 counts are exact below 2^24
        return cv2.calcHist([np.ascontiguousarray(a)], [0], None, [n], [0, n]).ravel().astype(np.int64)
    return np.bincount(a.ravel(), minlength=n)[:n]


def _apply_lut(a: np.ndarray, table: np.ndarray) -> np.ndarray:
    """uint8 ``table[a]`` for a non-negative integer map ``a``; values past the table give 0."""
    if a.dtype == np.uint8 and a.ndim == 2 and a.size:
        t = np.zeros(256, np.uint8)
        t[:min(len(table), 256)] = table[:256]
        return cv2.LUT(a, t)
    t = np.zeros(max(int(a.max(initial=0)) + 1, len(table)), np.uint8)
    t[:len(table)] = table
    return t.take(a)


def _small_uint(n: int):
    """Smallest unsigned dtype holding 0..n."""
    return np.uint8 if n < 256 else (np.uint16 if n < 65536 else np.uint32)


def _stuff_lut(sem_counts: np.ndarray, things: set[int], stuff_min_area: int,
               labels: LabelTable = cityscapes.LABELS) -> np.ndarray:
    """(C + 1,) class id -> stuff segment id (its panoptic id; 0 for things and small classes)."""
    label_of = panoptic_ids(labels)
    if label_of.max(initial=0) > 255:
        raise PseudoLabelsError(f"label table {labels.name}: the sweep keeps stuff ids in uint8, but panoptic "
                                f"ids go up to {int(label_of.max())}")
    lut = np.zeros(labels.num_classes + 1, np.int64)
    for c in range(labels.num_classes):
        if c not in things and sem_counts[c] >= stuff_min_area:
            lut[c] = label_of[c]
    return lut


def _keep_categories(stats, keep: set[int]):
    s = stats.copy()
    drop = ~np.isin(s.cat_ids, list(keep))
    for name in ("iou", "tp", "fp", "fn"):
        getattr(s, name)[drop] = 0
    return s


@dataclass
class GTFrame:
    """The panoptic ground truth of one image in the evaluation frame, as compact indices.

    ``index`` (H, W): 0 void, k for the k-th GT segment id in increasing order (so every
    per-category sum of ``pq_stats_image`` runs in the same order as on the original
    ids); ``segments[k]`` its JSON entry with ``id`` = k (``area`` dropped for the
    reference protocol); ``counts[k]`` its pixels; ``json_pos[k]`` its JSON position.
    """

    shape: tuple[int, int]
    index: np.ndarray
    segments: dict
    counts: np.ndarray
    json_pos: dict


def gt_frame(gt_pan: np.ndarray, gt_segments: list[dict], protocol: str, image_id: Any = None) -> GTFrame:
    """:class:`GTFrame` of a GT panoptic id map (H, W) and its JSON segments."""
    from evaluation.resize import resize_nearest

    gt = resize_nearest(gt_pan, tuple(defaults.REFERENCE_EVAL_RESOLUTION)) if protocol == "reference" else gt_pan
    seg_by_id: dict[int, dict] = {}
    json_pos: dict[int, int] = {}
    for k, s in enumerate(gt_segments):  # as a dict: a repeated id keeps its last entry
        seg_by_id[int(s["id"])] = s
        json_pos[int(s["id"])] = k
    ids = np.array(sorted(i for i in seg_by_id if i > 0), np.int64)
    G = len(ids)
    unknown = G + 1
    dtype = _small_uint(unknown)
    if gt.size == 0:
        index = np.zeros(gt.shape, dtype)
    elif gt.dtype.kind in "ui" and int(gt.min()) >= 0 and int(gt.max()) < (1 << 22):
        lut = np.full(int(gt.max()) + 1, unknown, dtype)
        lut[0] = 0
        keep = ids < len(lut)
        lut[ids[keep]] = (np.arange(G) + 1)[keep]
        index = lut.take(gt)
    else:
        flat = gt.ravel().astype(np.int64)
        pos = np.minimum(np.searchsorted(ids, flat), max(G - 1, 0))
        hit = (ids[pos] == flat) if G else np.zeros(flat.shape, bool)
        index = np.where(hit, pos + 1, np.where(flat == 0, 0, unknown)).astype(dtype).reshape(gt.shape)
    counts = _histogram(index, G + 2)
    if counts[unknown]:
        bad = int(gt.ravel()[np.flatnonzero(index.ravel() == unknown)[0]])
        raise PseudoLabelsError(f"image {image_id}: GT PNG has segment id {bad} not in the GT JSON")
    segments = {}
    pos = {}
    for k, i in enumerate(ids.tolist(), start=1):
        s = dict(seg_by_id[i])
        s["id"] = k
        if protocol == "reference":
            s.pop("area", None)
        segments[k] = s
        pos[k] = json_pos[i]
    return GTFrame(tuple(gt.shape), index, segments, counts[:G + 1], pos)


def _gt_list(frame: GTFrame, present: np.ndarray) -> list[dict]:
    """Segments of the compact indices ``present`` (nonzero), in JSON order (crowd lookup)."""
    ks = sorted((int(k) for k in present if k != 0), key=lambda k: frame.json_pos[k])
    return [frame.segments[k] for k in ks]


def evaluate_cells(
    sem_native_shape: tuple[int, int],
    sem_work: np.ndarray,
    cells,
    gt_pan: np.ndarray | None,
    gt_segments: list[dict] | None,
    settings: SweepSettings,
    image_id: Any = None,
    gt: GTFrame | None = None,
) -> dict[tuple, tuple[Any, int, int]]:
    """cell -> (PQStats, #candidate instances, #placed instances) for one image; with
    ``settings.ap50`` a fourth item, the cell's COCO instance record (:mod:`evaluation.instances`,
    thing categories, score = area) on the same pixel subset, which holds every pixel of every
    GT and predicted thing segment, so the record equals that of the whole map.

    ``cells``: :func:`cell_instances` (a dict) or :func:`iter_cell_instances` (an iterator).
    ``gt_pan`` (H, W) ids at the GT resolution, ``gt_segments`` its JSON segments (or the
    :func:`gt_frame` of them as ``gt``, shared by several semantic sources).
    """
    from evaluation.panoptic import pq_stats_image

    protocol = settings.protocol
    labels = settings.labels
    C = labels.num_classes
    cats = {c["id"]: c for c in panoptic_categories(labels)}
    thing_cats = {cid for cid, c in cats.items() if c["isthing"]}
    stuff_cats = set(cats) - thing_cats
    things = set(settings.thing_classes)
    if gt is None:
        gt = gt_frame(gt_pan, gt_segments, protocol, image_id)

    # evaluation frame: the pipeline's chain of nearest resizes, composed
    eval_shape = gt.shape
    rows, cols = _compose([sem_work.shape, sem_native_shape, eval_shape])
    G = len(gt.segments)

    # --- stuff: once per image (segment id = category id, < 256)
    counts = _histogram(sem_work, C)
    lut = _stuff_lut(counts, things, settings.stuff_min_area, labels)
    stuff_work = _apply_lut(sem_work, lut[:C].astype(np.uint8))
    stuff_eval = _resample(stuff_work, rows, cols)
    present = np.flatnonzero(_histogram(stuff_eval, 256))
    st = pq_stats_image(gt.index, _gt_list(gt, np.flatnonzero(gt.counts)), stuff_eval,
                        [{"id": int(i), "category_id": int(i), "iscrowd": 0} for i in present if i != 0],
                        cats, protocol, image_id=image_id, reference_size=None)
    st = _keep_categories(st, stuff_cats)

    # --- things: per cell on the subset of pixels that can matter
    is_thing_class = np.zeros(max(things, default=0) + 1, np.uint8)
    is_thing_class[[c for c in things if c >= 0]] = 1  # thing classes never have a stuff segment
    thing_work = _apply_lut(sem_work, is_thing_class)
    subset = _resample(thing_work, rows, cols).astype(bool)
    gt_is_thing = np.zeros(G + 1, bool)
    for k, s in gt.segments.items():
        gt_is_thing[k] = s["category_id"] in thing_cats
    if gt_is_thing.any():
        subset = subset | gt_is_thing.take(gt.index)
    flat = np.flatnonzero(subset.ravel())
    W_eval = eval_shape[1]
    src = rows[flat // W_eval] * sem_work.shape[1] + cols[flat % W_eval]
    gt_sub = gt.index.ravel().take(flat)[None, :]
    gt_sub_segments = _gt_list(gt, np.flatnonzero(_histogram(gt_sub, G + 1)))

    out: dict[tuple, tuple[Any, int, int]] = {}
    cache: dict[bytes, Any] = {}
    label_of = panoptic_ids(labels)
    items = ((c, *v) for c, v in cells.items()) if isinstance(cells, dict) else cells
    for cell, inst, classes, n_cand in items:
        n = len(classes)
        # instance k is segment k (ids do not change any per-category statistic)
        pred_sub = inst.ravel().take(src).astype(_small_uint(n + 1), copy=False)
        cls = np.asarray(classes, np.int64)
        key = hashlib.blake2b(pred_sub.tobytes() + cls.tobytes(), digest_size=16).digest()
        hit = cache.get(key)
        if hit is None:
            present = np.flatnonzero(_histogram(pred_sub, n + 1)[1:]) + 1
            segs = [{"id": int(k), "category_id": int(label_of[cls[k - 1]]), "iscrowd": 0} for k in present]
            th = pq_stats_image(gt_sub, gt_sub_segments, pred_sub[None, :], segs, cats, protocol,
                                image_id=image_id, reference_size=None)
            th = _keep_categories(th, thing_cats)
            rec = None
            if settings.ap50:
                from evaluation.instances import InstanceImage, coco_image_record

                rec = coco_image_record(InstanceImage(image_id, gt_sub, gt_sub_segments, pred_sub[None, :], segs),
                                        sorted(thing_cats))
            hit = cache[key] = (th, rec)
        th, rec = hit
        total = st.copy()
        total += th
        out[cell] = (total, n_cand, n, rec) if settings.ap50 else (total, n_cand, n)
    return out


# --------------------------------------------------------------------------- per-image worker
@dataclass
class ImageJob:
    stem: str
    semantic_paths: list[str]
    depth_path: str | None
    gt_png: str
    gt_segments: list


def read_semantic(path: str, lut: np.ndarray | None, labels: LabelTable = cityscapes.LABELS) -> np.ndarray:
    """Semantic PNG -> class ids of ``labels`` (H, W) uint8 (Cityscapes: trainIds); raw clusters go
    through ``lut`` (cluster -> class id)."""
    from pseudo_labels.core.io import read_png

    sem = read_png(path)
    if sem.ndim != 2:
        raise InputFileError(path, f"expected a single-channel class map, got shape {sem.shape}")
    if lut is not None:
        if int(sem.max()) >= len(lut):
            raise InputFileError(path, f"cluster id {int(sem.max())} >= number of clusters {len(lut) - 1}")
        sem = lut[sem]
    else:
        bad = check_semantic_ids(sem, labels=labels)
        if bad:
            raise InputFileError(path, f"unknown class ids {bad[:10]} (expected {expected_ids_text(labels)})")
    return sem.astype(np.uint8, copy=False)


def sweep_image(job: ImageJob, grid: Grid, settings: SweepSettings) -> list[dict[tuple, tuple[Any, int, int]]]:
    """All cells of one image for every semantic source: [source] -> cell -> (PQStats, n_cand, n_placed)."""
    from evaluation.panoptic import read_panoptic_png

    from pseudo_labels.stages.instance.depth import read_depth_npy

    gt = gt_frame(read_panoptic_png(job.gt_png), job.gt_segments, settings.protocol, job.stem)
    d = depth_work = None
    if job.depth_path is not None:
        d = read_depth_npy(job.depth_path)
        if not np.isfinite(d).all():
            raise InputFileError(job.depth_path, "depth has NaN/infinite values")
    results = []
    for k, path in enumerate(job.semantic_paths):
        lut = settings.luts[k] if settings.luts else None
        sem = read_semantic(path, lut, settings.labels)
        work = defaults.work_resolution(sem.shape, settings.work_resolution)
        if d is not None and (depth_work is None or depth_work.shape != work):
            depth_work = resize_depth_bilinear(d, work)
        sem_work = resize_semantic(sem, work)
        cells = iter_cell_instances(sem_work, depth_work, grid, settings)
        results.append(evaluate_cells(sem.shape, sem_work, cells, None, None, settings, job.stem, gt=gt))
    return results


# --------------------------------------------------------------------------- summary
def summarize_cells(per_image: list[list[dict]], n_sources: int, categories=None,
                    labels: LabelTable = cityscapes.LABELS) -> list[dict[tuple, dict]]:
    """Sum per-image stats per (source, cell) and summarise: [source] -> cell -> metrics.

    ``categories``: the panoptic categories (default: those of ``labels``)."""
    from evaluation.panoptic import summarize_pq

    categories = categories or panoptic_categories(labels)
    out = []
    for k in range(n_sources):
        acc: dict[tuple, list] = {}
        for img in per_image:
            for cell, (stats, n_cand, n_placed, *rec) in img[k].items():
                a = acc.setdefault(cell, [None, 0, 0, 0, []])
                if a[0] is None:
                    a[0] = stats.copy()
                else:
                    a[0] += stats
                a[1] += n_cand
                a[2] += n_placed
                a[3] += 1
                a[4] += rec
        res = {}
        for cell, (stats, n_cand, n_placed, n_img, recs) in acc.items():
            m = summarize_pq(stats, categories, stats.protocol)
            m["avg_instances"] = n_cand / max(n_img, 1)
            m["avg_placed_instances"] = n_placed / max(n_img, 1)
            m["n_images"] = n_img
            if recs:  # COCO AP50 (percent, mean over thing classes with GT; evaluation.instances)
                from evaluation.instances import summarize_coco

                things = [int(c["id"]) for c in (categories.values() if isinstance(categories, dict) else categories)
                          if c.get("isthing")]
                m["AP50"] = summarize_coco(recs, things)["AP50"]
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
    if "AP50" in m:
        row["AP50"] = None if np.isnan(m["AP50"]) else r(m["AP50"])
    row["per_class"] = {name: {kk: (r(v) if isinstance(v, float) else v) for kk, v in pc.items()}
                        for name, pc in m["per_class"].items()}
    return row


def best_row(rows: list[dict]) -> dict | None:
    """Highest PQ among the depth-guided rows (first on ties, in grid order); without any (``depth
    none``), the components-only row."""
    cands = [r for r in rows if r["mode"] == "depth-guided"] or [r for r in rows if r["mode"] == "cc-only"]
    if not cands:
        return None
    return max(cands, key=lambda r: r["PQ"])


# --------------------------------------------------------------------------- whole split (pseudo-labels sweep)
@dataclass(frozen=True)
class SweepConfig:
    """What ``sweep`` scores: every grid cell of the splitting on a split of a Cityscapes-layout root.

    Reads ``<root>/<semantic subdir>/<split>/**.png`` for each of ``semantic_subdirs`` (class ids of
    ``dataset``'s table; raw clusters when ``kmeans_centroids.npz`` beside them maps them;
    ``"gtFine"`` uses the GT ``_labelTrainIds`` or, as the official zips hold, ``_labelIds`` mapped
    with cityscapesscripts' table), ``<root>/<depth_subdir>/<split>/**.npy`` (not with
    ``depth="none"``: components only, the reference's CC-only row) and the panoptic ground truth
    of the split (scoring only): the dataset's ``gtFine/cityscapes_panoptic_<split>.json`` or, when
    absent (the official download), made by cityscapesscripts from ``_gtFine_instanceIds.png`` into
    ``gt_cache`` (default ``<folder of out>/gt_cache``, i.e. ``<root>/gt_cache`` without ``out``) and reused.
    ``out``: the result JSON (default, as the reference: ``<root>/sweep_k<k>_<depth>_<split>.json``, e.g.
    ``sweep_k80_spidepth_val.json``); the CSV and heatmap PNGs go next to it. ``resolution`` (H, W):
    working resolution of the splitting (None: half of each semantic map's size, the reference's
    512x1024 on Cityscapes); ``min_areas`` None: the reference grid (250..2000 px at 512x1024) scaled
    to the first image's working resolution (:func:`defaults.scaled_min_area`), explicit values as
    given; ``max_images``: first N images only.
    """

    cityscapes_root: str
    semantic_subdirs: tuple[str, ...]
    out: str | None = None
    split: str = "val"
    depth_subdir: str = "depth_spidepth"
    grad_thresholds: tuple[float, ...] = defaults.SWEEP_GRAD_THRESHOLDS
    min_areas: tuple[int, ...] | None = None
    sigmas: tuple[float, ...] = (defaults.DEPTH_BLUR_SIGMA,)
    dilation_iters: tuple[int, ...] = (defaults.DILATION_ITERS,)
    connectivity: int = defaults.CONNECTIVITY
    normalize: str = "none"
    resolution: tuple[int, int] | None = defaults.WORK_RESOLUTION
    protocol: str = defaults.PROTOCOL
    cc_baseline: bool = True
    max_images: int | None = None
    skip_missing: bool = False
    dataset: str = "cityscapes"
    ap50: bool = False
    depth: str = "edges"
    gt_cache: str | None = None
    num_classes: int = 27  # protocol cups: 27 or 19 classes

    PATH_ROLES = {"out": "output_file"}  # path roles for the overlap check (issue 24)
    RANGES = {"min_areas": COUNT, "depth": Range(choices=defaults.DEPTH_MODES)}  # beside the shared rules

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)


def semantic_source(root: Path, subdir: str, split: str, labels: LabelTable = cityscapes.LABELS
                    ) -> tuple[dict, np.ndarray | None, int | None]:
    """(stem -> PNG, class-id LUT or None, k) of one semantic source.

    ``gtFine``: ``*_gtFine_labelTrainIds.png`` when the split has them, else ``*_gtFine_labelIds.png``
    with cityscapesscripts' labelId -> trainId table as the LUT (equal maps: both are drawn from the
    same polygons). Other folders: every PNG, with :func:`load_cluster_lut`. A missing folder is an
    error naming the command that makes it.
    """
    folder = root / subdir / split
    if subdir.rstrip("/") == "gtFine":
        if not folder.is_dir():
            raise PseudoLabelsError(f"{folder}: no such folder (the gtFine labels come with gtFine_trainvaltest.zip)")
        index = cityscapes.index_by_stem(folder, "_gtFine_labelTrainIds.png")
        if index:
            return index, None, None
        return cityscapes.index_by_stem(folder, "_gtFine_labelIds.png"), cityscapes.label_id_to_train_id_lut(), None
    if not folder.is_dir():
        raise PseudoLabelsError(f"{folder}: no such folder (make the semantic pseudo-labels with "
                                f"'pseudo-labels generate-overclustered-semantics --cityscapes-root {root} "
                                f"--split {split} --output-subdir {subdir} ...')")
    return (cityscapes.index_by_stem(folder, ".png"), *load_cluster_lut(root / subdir, split, labels))


def depth_index(root: Path, subdir: str, split: str) -> dict:
    """Stem -> depth ``.npy`` under ``<root>/<subdir>/<split>``; a missing folder names the command that makes it."""
    folder = root / subdir / split
    if not folder.is_dir():
        raise PseudoLabelsError(f"{folder}: no such folder (make depth maps with 'pseudo-labels generate-depth "
                                f"--cityscapes-root {root} --split {split} --source disparity --output-subdir "
                                f"{subdir}', or pass --depth none for connected components only)")
    return cityscapes.index_by_stem(folder, ".npy")


def out_folder(cfg: SweepConfig) -> Path:
    """The folder of the result JSON: that of ``out``, or the dataset root (the reference's place)."""
    return Path(cfg.out).parent if cfg.out else Path(cfg.cityscapes_root)


def default_out(cfg: SweepConfig, ks: Sequence[int | None]) -> Path:
    """``<root>/sweep_<k80 | semantic folder>_<depth folder without 'depth_' | cc>_<split>.json``: the
    reference's ``sweep_k80_spidepth_val.json`` for its command."""
    k = ks[0] if len(ks) == 1 else None
    tag = f"k{k}" if k is not None else Path(cfg.semantic_subdirs[0]).name
    depth = "cc" if cfg.depth == "none" else Path(cfg.depth_subdir).name.removeprefix("depth_")
    return Path(cfg.cityscapes_root) / f"sweep_{tag}_{depth}_{cfg.split}.json"


def gt_cache_folder(cfg: SweepConfig) -> Path:
    """Where panoptic GT missing from the dataset is made and reused: ``cfg.gt_cache``, or ``gt_cache``
    beside the result JSON (``<folder of out>/gt_cache``; without ``out``, ``<root>/gt_cache``: a
    dedicated sub-folder of the data root, as ``--output-subdir``, never inside one of its data folders)."""
    from pseudo_labels.datasets.cityscapes_gt import default_cache

    return Path(cfg.gt_cache) if cfg.gt_cache else default_cache(out_folder(cfg))


def register_outputs(cfg: SweepConfig, labels: LabelTable = cityscapes.LABELS, gt_cache: bool = True
                     ) -> tuple[Path, list]:
    """(the result JSON, the semantic sources): ``cfg.out``, or :func:`default_out`, registered as an
    explicit ``--out`` is (:func:`pseudo_labels.core.paths.refuse_overlap`), before anything is read at
    length or written; the sources are :func:`semantic_source` of each of ``cfg.semantic_subdirs``
    (listed once here, used by the jobs).

    Registered with it: the GT cache folder (:func:`gt_cache_folder`) as an output folder when the
    dataset lacks the panoptic GT and ``gt_cache`` (protocol cups reads gtFine itself), the semantic and
    depth folders as inputs. So an existing file at the default path that is not ours is refused, and
    so is a cache that is the root, lies in one of its data folders or in an input folder (issue 24).
    """
    from pseudo_labels.core.paths import refuse_overlap
    from pseudo_labels.datasets.cityscapes_gt import panoptic_paths

    root = Path(cfg.cityscapes_root)
    subdirs = list(dict.fromkeys(cfg.semantic_subdirs))
    found = [semantic_source(root, s, cfg.split, labels) for s in subdirs]
    out_path = Path(cfg.out) if cfg.out else default_out(cfg, [f[2] for f in found])
    inputs = {f"--semantic-subdir {s}": root / s for s in subdirs}
    if cfg.depth != "none":
        inputs["--depth-subdir"] = root / cfg.depth_subdir
    gt_json, gt_folder = panoptic_paths(root, cfg.split)
    cache = gt_cache_folder(cfg) if gt_cache and not (gt_json.is_file() and gt_folder.is_dir()) else None
    refuse_overlap(inputs, {"--gt-cache" if cfg.gt_cache else "--gt-cache (default: beside --out)": cache},
                   roots={"--cityscapes-root": root},
                   output_files={"--out" if cfg.out else "--out (default)": out_path})
    return out_path, found


def sweep_ground_truth(cfg: SweepConfig, log=None, workers: int = 1):
    """(panoptic JSON, PNG folder, :class:`~pseudo_labels.datasets.cityscapes_gt.PreparedGT`) of the
    sweep's split: the dataset's own, or made by cityscapesscripts into :func:`gt_cache_folder`."""
    from pseudo_labels.datasets.cityscapes_gt import panoptic_ground_truth

    return panoptic_ground_truth(cfg.cityscapes_root, cfg.split, gt_cache_folder(cfg), workers=workers, log=log)


def _sweep_jobs(cfg: SweepConfig, found: list, gt: tuple[Path, Path]
                ) -> tuple[list[ImageJob], list, list, list[str]]:
    """(one job per image, semantic sources, their LUTs and k, stems skipped for missing inputs);
    ``found``: the semantic sources of :func:`register_outputs`."""
    from pseudo_labels.core.io import read_json

    root = Path(cfg.cityscapes_root)
    gt_json, gt_folder = gt
    anns = {a["image_id"]: a for a in read_json(gt_json).get("annotations", [])}
    if not anns:
        raise PseudoLabelsError(f"{gt_json}: no annotations")
    stems = sorted(anns)
    sources = list(dict.fromkeys(cfg.semantic_subdirs))
    sem_idx = [f[0] for f in found]
    luts_ks = [f[1:] for f in found]
    no_depth = cfg.depth == "none"
    depth_idx = {} if no_depth else depth_index(root, cfg.depth_subdir, cfg.split)
    missing = [s for s in stems if (not no_depth and s not in depth_idx) or any(s not in ix for ix in sem_idx)]
    if missing and not cfg.skip_missing:
        s = missing[0]
        what = "depth map" if s not in depth_idx else "semantic map"
        raise PseudoLabelsError(f"no {what} for {len(missing)} image(s) of {gt_json.name}, e.g. {s} "
                                "(pass --skip-missing to skip them)")
    stems = [s for s in stems if s not in missing]
    if cfg.max_images:
        stems = stems[: cfg.max_images]
    if not stems:
        raise PseudoLabelsError("no image has semantics, depth and ground truth")
    jobs = [ImageJob(s, [str(ix[s]) for ix in sem_idx], None if no_depth else str(depth_idx[s]),
                     str(gt_folder / anns[s]["file_name"]), anns[s]["segments_info"]) for s in stems]
    return jobs, sources, luts_ks, missing


def _sweep_runs(grid: Grid, sources: list, ks: list, per_source: list) -> tuple[list[dict], list[dict]]:
    """(one run per semantic source with its rows and best row, all rows)."""
    runs, all_rows = [], []
    cells = grid.cells() + ([CC_CELL] if grid.cc_baseline else [])
    for src, k, res in zip(sources, ks, per_source):
        rows = []
        for cell in cells:
            row = result_row(cell, res[cell])
            row["semantic_subdir"] = src
            row["k"] = k
            rows.append(row)
        runs.append({"semantic_subdir": src, "k": k, "results": rows, "best": best_row(rows)})
        all_rows.extend(rows)
    return runs, all_rows


def default_min_areas(cfg: SweepConfig, first_semantic: str) -> tuple[tuple[int, int], tuple[int, ...]]:
    """(working resolution of the first image, the A_min grid): ``cfg.min_areas``, or the reference's
    grid at 512x1024 scaled to that working resolution (:func:`defaults.scaled_min_area`)."""
    from pseudo_labels.core.io import read_png

    work0 = defaults.work_resolution(read_png(first_semantic).shape, cfg.resolution)
    return work0, tuple(cfg.min_areas or (defaults.scaled_min_area(work0, a) for a in defaults.SWEEP_MIN_AREAS))


def run_sweep(config: SweepConfig, options=None, log=None) -> dict:
    """Score every cell on every image (shared runner), write the JSON, the CSV and the heatmaps.

    Returns the result written to ``config.out`` (the reference's schema plus sigma,
    dilation, SQ/RQ splits and per-class numbers; ``best`` = highest-PQ depth-guided row, or
    the components-only row with ``depth="none"``). ``log``: gets one line when the panoptic
    GT is made or reused from the cache (default: standard error).
    """
    import functools
    import sys
    import time

    from pseudo_labels.core.runner import RunOptions, run_per_image
    from pseudo_labels.datasets import label_table

    t0 = time.time()
    cfg, options = config, options or RunOptions()
    labels = label_table(cfg.dataset)
    if cfg.protocol == "cups":  # two passes per cell: the command and run call sweep_cups.run_sweep_cups
        raise PseudoLabelsError("protocol cups: use pseudo_labels.stages.outputs.sweep_cups.run_sweep_cups")
    out_path, found = register_outputs(cfg, labels)  # the default path too, before anything is written
    gt_json, gt_folder, prepared = sweep_ground_truth(cfg, log or (lambda line: print(line, file=sys.stderr)),
                                                      workers=options.workers if options.executor == "local" else 1)
    jobs, sources, luts_ks, missing = _sweep_jobs(cfg, found, (gt_json, gt_folder))
    luts, ks = zip(*luts_ks)
    work0, min_areas = default_min_areas(cfg, jobs[0].semantic_paths[0])
    if cfg.depth == "none":  # components only: no depth-guided cells, the CC-only row
        grid = Grid((), tuple(min_areas), (), (), cc_baseline=True)
    else:
        grid = Grid(tuple(cfg.grad_thresholds), tuple(min_areas), tuple(cfg.sigmas), tuple(cfg.dilation_iters),
                    cc_baseline=cfg.cc_baseline)
    settings = SweepSettings(protocol=cfg.protocol, work_resolution=tuple(cfg.resolution) if cfg.resolution else None,
                             connectivity=cfg.connectivity, normalize=cfg.normalize, luts=list(luts), labels=labels,
                             ap50=cfg.ap50)
    worker = functools.partial(sweep_image, grid=grid, settings=settings)
    summary = run_per_image(worker, jobs, options=options, desc="sweep", name_of=lambda j: j.stem)
    summary.raise_if_failed()
    per_source = summarize_cells(summary.results, len(sources), labels=labels)
    eval_res = list(defaults.REFERENCE_EVAL_RESOLUTION) if cfg.protocol == "reference" else None
    if eval_res is None:
        from evaluation.panoptic import read_panoptic_png
        eval_res = list(read_panoptic_png(jobs[0].gt_png).shape)
    runs, all_rows = _sweep_runs(grid, sources, ks, per_source)
    out = {
        "split": cfg.split,
        "k": ks[0] if len(ks) == 1 else list(ks),
        "eval_resolution": eval_res,
        "depth_subdir": None if cfg.depth == "none" else cfg.depth_subdir,
        "depth": cfg.depth,
        "protocol": cfg.protocol,
        "semantic_subdir": sources[0] if len(sources) == 1 else sources,
        "work_resolution": list(work0),  # of the first image (default: half of each image's size)
        "grid": {"grad_thresholds": list(grid.grad_thresholds), "min_areas": list(grid.min_areas),
                 "sigmas": list(grid.sigmas), "dilation_iters": list(grid.dilation_iters),
                 "connectivity": cfg.connectivity, "normalize": cfg.normalize},
        "n_images": len(jobs),
        "n_missing_skipped": len(missing),
        "uses_ground_truth": {"evaluation": "Cityscapes panoptic GT (scoring only)"},
        "ground_truth": {"panoptic_json": str(gt_json), **prepared.describe()},
        "results": all_rows,
        "best": best_row(all_rows),
        "runs": runs if len(runs) > 1 else None,
        "elapsed_seconds": round(time.time() - t0, 2),
    }
    out["out"] = str(out_path)
    write_sweep_outputs(out_path, out, runs, grid)
    return out


def write_sweep_outputs(out_path: Path, out: dict, runs: list[dict], grid: Grid) -> None:
    """The JSON, ``<out>.csv`` and one heatmap per semantic source (``<out>_heatmap[_<tag>].png``)."""
    from pseudo_labels.core.io import write_json
    from pseudo_labels.core.paths import check_replace

    heatmaps = []
    for run_ in runs if grid.grad_thresholds and grid.min_areas else ():  # no heatmap for components only
        tag = f"k{run_['k']}" if run_["k"] is not None else Path(run_["semantic_subdir"]).name
        if len(runs) == 1:
            name = out_path.with_name(out_path.stem + "_heatmap.png")
        else:
            name = out_path.with_name(f"{out_path.stem}_heatmap_{tag}.png")
        heatmaps.append((name, run_, tag))
    for p in [out_path, out_path.with_suffix(".csv")] + [h[0] for h in heatmaps]:
        check_replace(p)  # a companion that is not ours (issue 24): refused before anything is written
    write_json(out_path, out)
    write_csv(out_path.with_suffix(".csv"), out["results"])
    for name, run_, tag in heatmaps:
        write_heatmap(name, run_["results"], grid, run_["best"], title=f"{run_['semantic_subdir']} ({tag})")


def write_csv(path: Path, rows: list[dict]) -> None:
    """One line per row: grid values and the summary metrics (floats with 4 decimals)."""
    import csv
    import io

    from pseudo_labels.core.io import write_bytes

    cols = ["semantic_subdir", "k", "mode", "grad_threshold", "min_area", "sigma", "dilation_iters", "PQ", "PQ_stuff",
            "PQ_things", "SQ", "RQ", "SQ_stuff", "RQ_stuff", "SQ_things", "RQ_things", "avg_instances",
            "avg_placed_instances", "n_images"] + (["AP50"] if any("AP50" in r for r in rows) else [])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for r in rows:
        w.writerow([("" if r.get(c) is None else (f"{r[c]:.4f}" if isinstance(r[c], float) else r[c])) for c in cols])
    write_bytes(path, buf.getvalue().encode())


def write_heatmap(path: Path, rows: list[dict], grid: Grid, best: dict | None, title: str = "") -> None:
    """PQ over tau (rows) x A_min (columns) at the best row's sigma / dilation (PNG)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pseudo_labels.core.io import write_bytes

    sigma = best["sigma"] if best else grid.sigmas[0]
    dil = best["dilation_iters"] if best else grid.dilation_iters[0]
    taus, areas = list(grid.grad_thresholds), list(grid.min_areas)
    pq = np.full((len(taus), len(areas)), np.nan)
    for r in rows:
        if r["mode"] == "depth-guided" and r["sigma"] == sigma and r["dilation_iters"] == dil:
            pq[taus.index(r["grad_threshold"]), areas.index(r["min_area"])] = r["PQ"]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(areas), 1.0 + 0.6 * len(taus)))
    im = ax.imshow(pq, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(areas)), [str(a) for a in areas])
    ax.set_yticks(range(len(taus)), [f"{t:g}" for t in taus])
    ax.set_xlabel("A_min (px)")
    ax.set_ylabel("tau")
    for i in range(len(taus)):
        for j in range(len(areas)):
            if np.isfinite(pq[i, j]):
                ax.text(j, i, f"{pq[i, j]:.1f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_title(f"PQ {title} sigma={sigma:g} dil={dil}", fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def format_best(out: dict) -> str:
    """Two lines: the size of the sweep and its best depth-guided configuration."""
    b = out["best"]
    head = f"{len(out['results'])} rows, {out['n_images']} images, protocol {out['protocol']}"
    if b is None:
        return head + "\nno depth-guided configuration scored"
    if b["mode"] == "cc-only":
        return (head + f"\nbest: {b['semantic_subdir']} connected components only: PQ {b['PQ']:.2f}  "
                f"PQ_st {b['PQ_stuff']:.2f}  PQ_th {b['PQ_things']:.2f}  SQ {b['SQ']:.2f}  RQ {b['RQ']:.2f}  "
                f"inst/img {b['avg_instances']:.1f}")
    return (head + f"\nbest: {b['semantic_subdir']} tau={b['grad_threshold']:g} A_min={b['min_area']} "
            f"sigma={b['sigma']:g} dilation={b['dilation_iters']}: PQ {b['PQ']:.2f}  PQ_st {b['PQ_stuff']:.2f}  "
            f"PQ_th {b['PQ_things']:.2f}  SQ {b['SQ']:.2f}  RQ {b['RQ']:.2f}  inst/img {b['avg_instances']:.1f}")
