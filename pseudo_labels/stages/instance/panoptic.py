"""Panoptic assembly: semantic trainIds + instance map -> Cityscapes-panoptic ids and segments.

Ids follow the Cityscapes panoptic convention (what ``createPanopticImgs`` writes):

* stuff segment of trainId ``c``: id = ``labelId(c)``, one per class with >= ``stuff_min_area`` px;
* thing instance: id = ``labelId * 1000 + k`` (k = 0, 1, ... per class, in instance-map order);
* 0 = void (unassigned thing pixels, small stuff classes, 255 pixels).

``category_id`` = Cityscapes labelId; ``categories`` = :func:`cityscapes.panoptic_categories`.
Other data sets: every function takes a ``labels`` :class:`~pseudo_labels.datasets.base.LabelTable`
(class ids 0..C-1, void, thing flags); ``labelId`` is then :func:`panoptic_ids` (the table's
``panoptic_id``, or class id + 1 where those include 0).
Files: a flat folder of ``<stem>_panoptic.png`` (RGB, id = R + 256 G + 256^2 B) and one
JSON with ``images`` (id = stem), ``annotations`` (``image_id`` = stem, ``file_name``,
``segments_info``) and ``categories``, readable unchanged by
``cityscapesscripts.evaluation.evalPanopticSemanticLabeling``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from scipy import ndimage

from pseudo_labels.datasets import cityscapes
from pseudo_labels.datasets.base import LabelTable
from pseudo_labels.core.defaults import STUFF_MIN_AREA
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.core.runner import RunOptions, RunSummary, run_per_image
from pseudo_labels.stages.instance.instances import resize_semantic
from pseudo_labels.core.io import id_to_rgb, write_json, write_png

PANOPTIC_SUFFIX = "_panoptic.png"
#: a panoptic id >= this is a thing instance (labelId * 1000 + k)
INSTANCE_OFFSET = 1000


def assemble_panoptic(
    semantic: np.ndarray,
    instances: np.ndarray,
    stuff_min_area: int = STUFF_MIN_AREA,
    thing_classes: Iterable[int] | None = None,
    labels: LabelTable = cityscapes.LABELS,
) -> tuple[np.ndarray, list[dict]]:
    """(pan_ids (H, W) int32, segments) from class ids (H, W) and an instance map (H, W) int.

    ``semantic``: ids 0..C-1 of ``labels`` (Cityscapes: trainIds), anything else void.
    Stuff first (classes not in ``thing_classes`` (default: the table's things), >=
    ``stuff_min_area`` px), then each instance takes its pixels not already stuff, with the
    thing class most of its pixels have (in the normal pipeline every instance lies inside
    one thing class). Ids: ``panoptic_id`` (stuff), ``panoptic_id * 1000 + k`` (things).
    Segments: ``{"id", "category_id", "iscrowd": 0, "area", "bbox": [x, y, w, h]}`` by id.
    """
    semantic = np.asarray(semantic)
    instances = np.asarray(instances)
    if semantic.shape != instances.shape:
        raise PseudoLabelsError(
            f"semantic {semantic.shape} and instance map {instances.shape} differ in size (resize first)"
        )
    C = labels.num_classes
    label_of = panoptic_ids(labels)
    things = {int(c) for c in (labels.thing_ids if thing_classes is None else thing_classes)}
    sem = semantic.astype(np.int64, copy=False)
    valid = (sem >= 0) & (sem < C)
    counts = np.bincount(sem[valid], minlength=C)
    lut = np.zeros(C + 1, np.int32)  # last entry: void
    for c in range(C):
        if c not in things and counts[c] >= stuff_min_area:
            lut[c] = label_of[c]
    pan = lut[np.where(valid, sem, C)]

    inst = instances.astype(np.int64, copy=False)
    free = (inst > 0) & (pan == 0)
    if free.any():
        pan[free] = _instance_ids(inst[free], sem[free], things, label_of, C)
    return pan.astype(np.int32, copy=False), panoptic_segments(pan)


def _instance_ids(ids_free: np.ndarray, cls_free: np.ndarray, things: set[int], label_of: np.ndarray,
                  num_classes: int) -> np.ndarray:
    """Panoptic id of each free instance pixel: its instance's majority thing class, k-th of that class."""
    n = int(ids_free.max())
    is_thing = np.isin(cls_free, list(things)) & (cls_free >= 0) & (cls_free < num_classes)
    pair = np.bincount(ids_free[is_thing] * num_classes + cls_free[is_thing],
                       minlength=(n + 1) * num_classes).reshape(n + 1, num_classes)
    has = pair.sum(1) > 0
    cls_of = pair.argmax(1)
    inst_lut = np.zeros(n + 1, np.int64)
    per_class: dict[int, int] = {}
    for i in np.flatnonzero(has):
        c = int(cls_of[i])
        k = per_class.get(c, 0)
        if k >= INSTANCE_OFFSET:
            raise PseudoLabelsError(f"more than {INSTANCE_OFFSET} instances of class {c} in one image")
        per_class[c] = k + 1
        inst_lut[i] = label_of[c] * INSTANCE_OFFSET + k
    return inst_lut[ids_free]


def panoptic_ids(labels: LabelTable = cityscapes.LABELS) -> np.ndarray:
    """(C,) int64: the panoptic ``category_id`` of each class id (Cityscapes: trainId -> labelId).

    The table's ``panoptic_id`` when those are distinct and in 1..999; otherwise (e.g. tables
    whose class 0 has panoptic id 0) class id + 1 for every class: id 0 is void in a panoptic
    map, and a thing of category 0 would get instance ids 0..999 that collide with stuff ids.
    """
    ids = np.array([c.panoptic_id for c in labels.classes], np.int64)
    if ids.size and (ids.min() < 1 or ids.max() >= INSTANCE_OFFSET or len(set(ids.tolist())) != ids.size):
        ids = np.arange(1, ids.size + 1, dtype=np.int64)
    return ids


def panoptic_categories(labels: LabelTable = cityscapes.LABELS) -> list[dict]:
    """``categories`` of the panoptic JSON (``id`` = :func:`panoptic_ids`). Cityscapes: exactly what
    ``createPanopticImgs`` writes (with ``supercategory``)."""
    if labels == cityscapes.LABELS:
        return cityscapes.panoptic_categories()
    return [{"id": int(i), "name": c.name, "color": list(c.color), "isthing": int(c.is_thing)}
            for i, c in zip(panoptic_ids(labels).tolist(), labels.classes)]


def category_of(segment_id: int) -> int:
    """Category id (Cityscapes: labelId) of a panoptic id (``id`` if < 1000 else ``id // 1000``)."""
    return int(segment_id) if segment_id < INSTANCE_OFFSET else int(segment_id) // INSTANCE_OFFSET


def _segment_index(pan: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids sorted, labels (H, W) int32 = 1 + index of each pixel's id in ``ids``, pixel count
    per id), as ``np.unique(pan, return_inverse=True)`` gives them, by counting (no sort) when
    the ids are non-negative integers below a few times the pixel count (panoptic ids are)."""
    flat = np.asarray(pan).ravel()
    if flat.size and flat.dtype.kind in "iu" and flat.min() >= 0 and flat.max() < 4 * flat.size + 65536:
        counts = np.bincount(flat)
        ids = np.flatnonzero(counts)
        lut = np.zeros(counts.size, np.int32)
        lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
        return ids, lut[pan], counts[ids]
    ids, inverse = np.unique(pan, return_inverse=True)
    inverse = inverse.reshape(pan.shape)
    return ids, (inverse + 1).astype(np.int32), np.bincount(inverse.ravel(), minlength=len(ids))


def panoptic_segments(pan: np.ndarray) -> list[dict]:
    """``segments_info`` of a Cityscapes-convention id map (H, W): id, category, area, bbox."""
    ids, labels, areas = _segment_index(pan)
    return _segment_dicts(ids, areas, ndimage.find_objects(labels))


def resized_segments(pan: np.ndarray, size: tuple[int, int]) -> list[dict]:
    """``panoptic_segments(resize_panoptic(pan, size))`` computed at the size of ``pan``.

    Nearest resizing sends source row r to the output rows that take it (a run, maybe empty;
    likewise columns), so a segment's area is the sum over its source pixels of row-run x
    column-run lengths, and its box runs from the first output row of its first source row to
    the last output row of its last (columns alike): exact, without the resized map."""
    from pseudo_labels.stages.semantic.clustering import nearest_indices

    pan = np.asarray(pan, np.int32)
    ys, xs = nearest_indices(size[0], pan.shape[0]), nearest_indices(size[1], pan.shape[1])
    ny, nx = np.bincount(ys, minlength=pan.shape[0]), np.bincount(xs, minlength=pan.shape[1])
    rows, cols = np.flatnonzero(ny), np.flatnonzero(nx)  # source rows / columns that appear
    ids, labels, _ = _segment_index(pan[np.ix_(rows, cols)])
    areas = np.bincount(labels.ravel(), weights=np.outer(ny[rows], nx[cols]).ravel(), minlength=ids.size + 1)[1:]
    y0, y1 = np.searchsorted(ys, rows, "left"), np.searchsorted(ys, rows, "right")
    x0, x1 = np.searchsorted(xs, cols, "left"), np.searchsorted(xs, cols, "right")
    boxes = [(slice(y0[r.start], y1[r.stop - 1]), slice(x0[c.start], x1[c.stop - 1]))
             for r, c in ndimage.find_objects(labels)]
    return _segment_dicts(ids, np.rint(areas).astype(np.int64), boxes)


def _segment_dicts(ids: np.ndarray, areas: np.ndarray, boxes: list) -> list[dict]:
    """Segment dicts of the non-zero ``ids``; ``boxes``: (row slice, column slice) per id."""
    segs = []
    for j, sid in enumerate(ids):
        if sid == 0:
            continue
        rs, cs = boxes[j]
        segs.append({
            "id": int(sid),
            "category_id": category_of(int(sid)),
            "iscrowd": 0,
            "area": int(areas[j]),
            "bbox": [int(cs.start), int(rs.start), int(cs.stop - cs.start), int(rs.stop - rs.start)],
        })
    return segs


def resize_panoptic(pan: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest resize of an id map to ``size`` = (H, W) (PIL pixel-centre convention)."""
    return resize_semantic(np.asarray(pan, np.int32), size)


def panoptic_file_name(stem: str) -> str:
    return f"{stem}{PANOPTIC_SUFFIX}"


def write_panoptic_png(path: str | os.PathLike, pan: np.ndarray) -> None:
    """COCO-panoptic RGB PNG of an id map (id = R + 256 G + 256^2 B)."""
    write_png(path, id_to_rgb(pan))


def image_entry(stem: str, shape: tuple[int, int]) -> dict:
    """``images`` entry as createPanopticImgs writes it."""
    return {"id": stem, "width": int(shape[1]), "height": int(shape[0]), "file_name": f"{stem}_leftImg8bit.png"}


def annotation_entry(stem: str, segments: list[dict]) -> dict:
    return {"image_id": stem, "file_name": panoptic_file_name(stem), "segments_info": segments}


def write_panoptic_json(path: str | os.PathLike, images: list[dict], annotations: list[dict],
                        labels: LabelTable = cityscapes.LABELS) -> None:
    """The Cityscapes/COCO panoptic JSON (categories = :func:`panoptic_categories` of ``labels``)."""
    write_json(path, {"images": images, "annotations": annotations, "categories": panoptic_categories(labels)},
               indent=None)


# --------------------------------------------------------------------------- folder level (generate-panoptic)
STAGE = "generate-panoptic"


@dataclass(frozen=True)
class PanopticConfig:
    """What ``generate-panoptic`` writes: ``<out_folder>/<stem>_panoptic.png`` and ``out_json``.

    ``semantic_dir``: class-id PNGs (the ``dataset``'s table, void 255); ``instance_dir``:
    ``*_instance.png`` (uint16); both recursive, paired by Cityscapes stem. The panoptic map is
    assembled at the instance map's size (stuff needs ``stuff_min_area`` px there) and resized
    (nearest) to ``resolution`` (H, W) (default: the semantic map's size).
    """

    semantic_dir: str
    instance_dir: str
    out_json: str
    out_folder: str
    stuff_min_area: int = STUFF_MIN_AREA
    resolution: tuple[int, int] | None = None
    skip_missing: bool = False
    dataset: str = "cityscapes"


@dataclass
class PanopticRun(RunSummary):
    """The runner's summary plus: images without instances, whether the JSON was written (a shard
    writes it only once every shard's PNGs exist)."""

    out_json: str = ""
    json_written: bool = True
    missing_instances: int = 0
    shard: tuple[int, int] | None = None

    def line(self) -> str:
        if not self.json_written:
            i, n = self.shard
            return (f"{super().line()}; shard {i}/{n} finished, the JSON is written once every shard is done "
                    "(or rerun without --shard)")
        msg = f"{super().line()}; wrote {self.out_json}"
        if self.missing_instances:
            msg += f"; {self.missing_instances} image(s) without instances skipped"
        return msg


@dataclass(frozen=True)
class PanopticJob:
    stem: str
    semantic_path: str
    instance_path: str  # "" when the image has no instance map


def panoptic_for_image(sem: np.ndarray, inst: np.ndarray, stuff_min_area: int, out_size: tuple[int, int] | None,
                       labels: LabelTable = cityscapes.LABELS) -> tuple[np.ndarray, list[dict]]:
    """The library path shared with the sweep: semantic -> instance size, assemble, resize to
    ``out_size`` (default: the semantic map's size). Returns (pan ids (H, W) int32, segments)."""
    sem_small = resize_semantic(sem, inst.shape)
    pan, segs = assemble_panoptic(sem_small, inst, stuff_min_area, labels=labels)
    size = tuple(out_size) if out_size is not None else sem.shape
    if pan.shape != size:  # segments from the small map (exact, see resized_segments)
        segs = resized_segments(pan, size)
        pan = resize_panoptic(pan, size)
    return pan, segs


def process_panoptic_job(job: PanopticJob, stuff_min_area: int, resolution, out_folder: str,
                         labels: LabelTable = cityscapes.LABELS) -> dict:
    """Read, assemble and write one image's panoptic PNG; returns its ``images`` / ``annotations`` entries."""
    from pseudo_labels.core.io import read_png
    from pseudo_labels.stages.instance.instances import check_semantic_ids, expected_ids_text

    sem = read_png(job.semantic_path)
    if sem.ndim != 2:
        raise InputFileError(job.semantic_path, f"expected a single-channel class-id map, got shape {sem.shape}")
    bad = check_semantic_ids(sem, labels=labels)
    if bad:
        raise InputFileError(job.semantic_path, f"unknown class ids {bad[:10]} (expected {expected_ids_text(labels)})")
    inst = read_png(job.instance_path)
    if inst.ndim != 2:
        raise InputFileError(job.instance_path, f"expected a single-channel instance map, got shape {inst.shape}")
    pan, segs = panoptic_for_image(sem, inst, stuff_min_area, resolution, labels)
    write_panoptic_png(Path(out_folder) / panoptic_file_name(job.stem), pan)
    return {"image": image_entry(job.stem, pan.shape), "annotation": annotation_entry(job.stem, segs)}


def _entries_of_finished(job: PanopticJob, out_folder: str) -> dict:
    """JSON entries of a panoptic PNG written by an earlier run or another shard."""
    from pseudo_labels.core.io import read_png, rgb_to_id

    pan = rgb_to_id(read_png(Path(out_folder) / panoptic_file_name(job.stem)))
    return {"image": image_entry(job.stem, pan.shape), "annotation": annotation_entry(job.stem, panoptic_segments(pan))}


class _PanopticDone:
    """Resume test (picklable): the PNG exists and is newer than both inputs."""

    def __init__(self, out_folder: str):
        self.out_folder = out_folder

    def __call__(self, job: PanopticJob) -> bool:
        from pseudo_labels.core.io import is_up_to_date

        return is_up_to_date(Path(self.out_folder) / panoptic_file_name(job.stem), job.semantic_path, job.instance_path)


def _panoptic_jobs(cfg: PanopticConfig, options: RunOptions) -> tuple[list[PanopticJob], set, list[str]]:
    """(a job per semantic map, this shard's stems, this shard's stems without an instance map)."""
    sems = cityscapes.index_by_stem(cfg.semantic_dir, ".png")
    insts = cityscapes.index_by_stem(cfg.instance_dir, "_instance.png")
    if not sems:
        raise PseudoLabelsError(f"{cfg.semantic_dir}: no semantic PNGs with a Cityscapes stem")
    mine = set(options.select(sorted(sems)))  # --shard: this shard's images (by sorted stem)
    missing = [s for s in sems if s not in insts and s in mine]
    if missing and not cfg.skip_missing:
        raise PseudoLabelsError(
            f"{cfg.instance_dir}: no instance map for {len(missing)} image(s), e.g. {missing[0]} "
            f"(expected {missing[0]}*_instance.png; pass --skip-missing to skip them)"
        )
    jobs = [PanopticJob(s, str(sems[s]), str(insts[s]) if s in insts else "") for s in sems]
    return jobs, mine, missing


def generate_panoptic(config: PanopticConfig, options: RunOptions | None = None) -> PanopticRun:
    """Assemble every image's panoptic PNG, then the JSON over all images (folder level, resumable).

    With a shard (``options.shard``) the JSON is written by whichever shard finds every PNG done.
    Returns a :class:`PanopticRun`; raises :class:`PseudoLabelsError` when an image failed.
    """
    from pseudo_labels.core.io import prepare_output_dir, write_manifest
    from pseudo_labels.datasets import label_table

    cfg, options = config, options or RunOptions()
    labels = label_table(cfg.dataset)
    jobs, mine_stems, missing = _panoptic_jobs(cfg, options)
    out_folder = str(cfg.out_folder)
    resolution = tuple(cfg.resolution) if cfg.resolution else None
    worker = functools.partial(process_panoptic_job, stuff_min_area=cfg.stuff_min_area, resolution=resolution,
                               out_folder=out_folder, labels=labels)
    params = {"stuff_min_area": cfg.stuff_min_area, "resolution": list(resolution) if resolution else None}
    if cfg.dataset != "cityscapes":
        params["dataset"] = cfg.dataset
    resume = prepare_output_dir(out_folder, STAGE, params, overwrite=options.overwrite)
    mine = [j for j in jobs if j.stem in mine_stems and j.instance_path]
    summary = run_per_image(worker, mine, options=options, desc="panoptic", name_of=lambda j: j.stem,
                            is_done=_PanopticDone(out_folder) if resume else None)
    summary.raise_if_failed()
    run = PanopticRun(**vars(summary), out_json=str(cfg.out_json), missing_instances=len(missing),
                      shard=options.shard)
    if options.shard is None:
        jobs = [j for j in jobs if j.instance_path]  # skip_missing drops images without instances
    if not all((Path(out_folder) / panoptic_file_name(j.stem)).exists() for j in jobs):
        run.json_written = False
        return run
    fresh = {j.stem: r for j, r in zip(mine, summary.results) if r is not None}
    entries = [fresh.get(j.stem) or _entries_of_finished(j, out_folder) for j in jobs]
    anns = [e["annotation"] for e in entries]
    write_panoptic_json(cfg.out_json, [e["image"] for e in entries], anns, labels)
    write_manifest(out_folder, STAGE, params, uses_ground_truth=False,
                   inputs={"semantic_dir": str(cfg.semantic_dir), "instance_dir": str(cfg.instance_dir)},
                   counts={"images": len(jobs), "done": summary.done, "skipped_existing": summary.skipped,
                           "missing_instances": len(missing),
                           "segments": sum(len(a["segments_info"]) for a in anns)},
                   extra={"json": str(cfg.out_json), **options.describe()})
    return run
