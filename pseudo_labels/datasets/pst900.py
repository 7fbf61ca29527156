"""PST900 RGB-thermal scenes (Shivakumar et al. 2020): separate RGB, thermal and label files.

Layout: ``<root>/<split>/{rgb,thermal,labels}/<name>.png`` (the released ``train`` / ``test``
folders), or a flat ``<root>/{rgb,thermal,labels}/`` with a ``<root>/<split>.txt`` list.
RGB (H, W, 3) uint8; thermal one channel, uint8 or uint16 (scaled per image, see
:func:`pseudo_labels.datasets.rgbt.thermal_to_uint8`); labels one channel with ids 0..4.

Classes: 0 background (evaluated, as in the PST900 paper's mIoU), 1 fire_extinguisher,
2 backpack, 3 hand_drill, 4 survivor; void 255. Colours are ours (PST900 has none).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.datasets.base import ImageRecord, make_table
from pseudo_labels.datasets.rgbt import check_label_ids, read_png_as_stored, split_names, thermal_to_uint8

LABELS = make_table("pst900", [
    ("background", (0, 0, 0), False),
    ("fire_extinguisher", (220, 40, 40), True),
    ("backpack", (40, 90, 220), True),
    ("hand_drill", (240, 200, 30), True),
    ("survivor", (40, 200, 80), True),
])
RGB_DIR, THERMAL_DIR, LABEL_DIR = "rgb", "thermal", "labels"


def list_images(root: str | os.PathLike, split: str) -> list[ImageRecord]:
    """Records of one split, sorted by name: ``image_path`` the RGB file, ``extra['thermal']``
    the thermal file, ``label_path`` the label file or None."""
    root = Path(root)
    base = root / split
    if (base / RGB_DIR).is_dir():
        names = sorted(p.stem for p in (base / RGB_DIR).glob("*.png") if not p.name.startswith("."))
        if not names:
            raise PseudoLabelsError(f"{base / RGB_DIR}: no PNG images in split '{split}'")
    elif (root / RGB_DIR).is_dir():
        base = root
        names = split_names(root, split, "PST900")
    else:
        raise PseudoLabelsError(f"{root}: no {split}/{RGB_DIR}/ folder and no {RGB_DIR}/ folder "
                                "(PST900 layout: <root>/<split>/rgb, thermal, labels)")
    records = []
    for name in names:
        rgb, thermal, label = (base / d / f"{name}.png" for d in (RGB_DIR, THERMAL_DIR, LABEL_DIR))
        for path, what in ((rgb, "RGB"), (thermal, "thermal")):
            if not path.is_file():
                raise InputFileError(path, f"{what} image of '{name}' not found",
                                     "PST900 layout: rgb/, thermal/ and labels/ with one <name>.png each")
        records.append(ImageRecord(name, split, rgb, label if label.is_file() else None, {"thermal": thermal}))
    return records


def read_rgbt(record: ImageRecord) -> tuple[np.ndarray, np.ndarray]:
    """(rgb (H, W, 3) uint8, thermal (H, W) uint8); different sizes -> :class:`InputFileError`."""
    rgb = read_png_as_stored(record.image_path)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
        raise InputFileError(record.image_path, f"expected an 8-bit RGB PNG, got shape {rgb.shape} {rgb.dtype}")
    thermal_path = record.extra["thermal"]
    thermal = thermal_to_uint8(read_png_as_stored(thermal_path), thermal_path)
    if thermal.shape != rgb.shape[:2]:
        raise InputFileError(thermal_path, f"thermal image is {thermal.shape[0]}x{thermal.shape[1]} but the RGB "
                             f"image {record.image_path.name} is {rgb.shape[0]}x{rgb.shape[1]}",
                             "RGB and thermal must be registered to the same size")
    return np.ascontiguousarray(rgb[:, :, :3]), thermal


def read_label(record: ImageRecord) -> np.ndarray:
    """(H, W) uint8 class ids 0..4 (checked against :data:`LABELS`)."""
    if record.label_path is None:
        raise PseudoLabelsError(f"{record.image_path}: no label file {LABEL_DIR}/{record.stem}.png for this image")
    return check_label_ids(read_png_as_stored(record.label_path), LABELS, record.label_path)
