"""Panoptic assembly: semantic trainIds + instance map -> Cityscapes-panoptic ids and segments.

Ids follow the Cityscapes panoptic convention (what ``createPanopticImgs`` writes):

* stuff segment of trainId ``c``: id = ``labelId(c)``, one per class with >= ``stuff_min_area`` px;
* thing instance: id = ``labelId * 1000 + k`` (k = 0, 1, ... per class, in instance-map order);
* 0 = void (unassigned thing pixels, small stuff classes, 255 pixels).

``category_id`` = Cityscapes labelId; ``categories`` = :func:`cityscapes.panoptic_categories`.
Files: a flat folder of ``<stem>_panoptic.png`` (RGB, id = R + 256 G + 256^2 B) and one
JSON with ``images`` (id = stem), ``annotations`` (``image_id`` = stem, ``file_name``,
``segments_info``) and ``categories``, readable unchanged by
``cityscapesscripts.evaluation.evalPanopticSemanticLabeling``.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np
from scipy import ndimage

from pseudo_labels.datasets.cityscapes import NUM_CLASSES, THING_TRAIN_IDS, TRAIN_ID_TO_LABEL_ID, panoptic_categories
from pseudo_labels.core.defaults import STUFF_MIN_AREA
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.instances import resize_semantic
from pseudo_labels.core.io import id_to_rgb, write_json, write_png

PANOPTIC_SUFFIX = "_panoptic.png"
#: a panoptic id >= this is a thing instance (labelId * 1000 + k)
INSTANCE_OFFSET = 1000


def assemble_panoptic(
    semantic: np.ndarray,
    instances: np.ndarray,
    stuff_min_area: int = STUFF_MIN_AREA,
    thing_classes: Iterable[int] = THING_TRAIN_IDS,
) -> tuple[np.ndarray, list[dict]]:
    """(pan_ids (H, W) int32, segments) from trainIds (H, W) and an instance map (H, W) int.

    Stuff first (classes 0..18 not in ``thing_classes``, >= ``stuff_min_area`` px), then
    each instance takes its pixels not already stuff, with the thing class most of its
    pixels have (in the normal pipeline every instance lies inside one thing class).
    Segments: ``{"id", "category_id", "iscrowd": 0, "area", "bbox": [x, y, w, h]}`` by id.
    """
    semantic = np.asarray(semantic)
    instances = np.asarray(instances)
    if semantic.shape != instances.shape:
        raise PseudoLabelsError(
            f"semantic {semantic.shape} and instance map {instances.shape} differ in size (resize first)"
        )
    things = {int(c) for c in thing_classes}
    sem = semantic.astype(np.int64, copy=False)
    valid = sem < NUM_CLASSES
    counts = np.bincount(sem[valid], minlength=NUM_CLASSES)
    lut = np.zeros(NUM_CLASSES + 1, np.int32)  # last entry: void
    for c in range(NUM_CLASSES):
        if c not in things and counts[c] >= stuff_min_area:
            lut[c] = TRAIN_ID_TO_LABEL_ID[c]
    pan = lut[np.where(valid, sem, NUM_CLASSES)]

    inst = instances.astype(np.int64, copy=False)
    free = (inst > 0) & (pan == 0)
    if free.any():
        n = int(inst.max())
        ids_free = inst[free]
        cls_free = sem[free]
        is_thing = np.isin(cls_free, list(things)) & (cls_free < NUM_CLASSES)
        # majority thing class per instance
        pair = np.bincount(ids_free[is_thing] * NUM_CLASSES + cls_free[is_thing],
                           minlength=(n + 1) * NUM_CLASSES).reshape(n + 1, NUM_CLASSES)
        has = pair.sum(1) > 0
        cls_of = pair.argmax(1)
        inst_lut = np.zeros(n + 1, np.int64)
        per_class = {}
        for i in np.flatnonzero(has):
            c = int(cls_of[i])
            k = per_class.get(c, 0)
            if k >= INSTANCE_OFFSET:
                raise PseudoLabelsError(f"more than {INSTANCE_OFFSET} instances of class {c} in one image")
            per_class[c] = k + 1
            inst_lut[i] = TRAIN_ID_TO_LABEL_ID[c] * INSTANCE_OFFSET + k
        pan[free] = inst_lut[ids_free]
    return pan.astype(np.int32, copy=False), panoptic_segments(pan)


def category_of(segment_id: int) -> int:
    """Cityscapes labelId of a panoptic id (``id`` if < 1000 else ``id // 1000``)."""
    return int(segment_id) if segment_id < INSTANCE_OFFSET else int(segment_id) // INSTANCE_OFFSET


def panoptic_segments(pan: np.ndarray) -> list[dict]:
    """``segments_info`` of a Cityscapes-convention id map (H, W): id, category, area, bbox."""
    ids, inverse = np.unique(pan, return_inverse=True)
    inverse = inverse.reshape(pan.shape)
    areas = np.bincount(inverse.ravel(), minlength=len(ids))
    boxes = ndimage.find_objects(inverse + 1)
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


def write_panoptic_json(path: str | os.PathLike, images: list[dict], annotations: list[dict]) -> None:
    """The Cityscapes/COCO panoptic JSON (categories = Cityscapes labelIds)."""
    write_json(path, {"images": images, "annotations": annotations, "categories": panoptic_categories()}, indent=None)
