"""MFNet RGB-thermal street scenes (Ha et al. 2017), in the layout RTFNet preprocessed.

Layout under ``root``::

    images/<name>.png    4 channels: R, G, B, thermal (uint8), 480 x 640 in MFNet
    labels/<name>.png    one channel: class ids 0..8 of :data:`LABELS`
    train.txt val.txt test.txt    one <name> per line (no extension)

Names ending in ``D`` are day frames, ``N`` night frames (:func:`condition_of`).

Void decision: MFNet labels every pixel; class 0 ``unlabeled`` (everything that is none of
the 8 object classes: road, buildings, sky, ...) is an ordinary, *evaluated* class here, as
RTFNet and CRM count it (their mIoU averages 9 classes). :data:`LABELS` therefore has 9
classes with ids 0..8 and void 255 (a value MFNet never writes). To score the 8 object
classes only, evaluation can treat class 0 as void (``ignore_classes=(0,)`` of
:func:`evaluation.rgbt.evaluate_unsupervised`, ``--ignore-unlabeled`` of the commands).

Colours: RTFNet's palette. Things (countable): car, person, bike.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.datasets.base import ImageRecord, make_table
from pseudo_labels.datasets.rgbt import (  # noqa: F401  (condition_of: part of this data set's API)
    check_label_ids, condition_of, read_png_as_stored, split_names, thermal_to_uint8,
)

#: the 9 MFNet classes, ids 0..8 in the data set's order (0 'unlabeled' is evaluated, see module doc)
LABELS = make_table("mfnet", [
    ("unlabeled", (0, 0, 0), False),
    ("car", (64, 0, 128), True),
    ("person", (64, 64, 0), True),
    ("bike", (0, 128, 192), True),
    ("curve", (0, 0, 192), False),
    ("car_stop", (128, 128, 0), False),
    ("guardrail", (64, 64, 128), False),
    ("color_cone", (192, 128, 128), False),
    ("bump", (192, 64, 0), False),
])
UNLABELED, CAR, PERSON, BIKE, CURVE, CAR_STOP, GUARDRAIL, COLOR_CONE, BUMP = range(9)
IMAGE_DIR, LABEL_DIR = "images", "labels"
SPLITS = ("train", "val", "test")


def list_images(root: str | os.PathLike, split: str) -> list[ImageRecord]:
    """Records of ``<root>/<split>.txt`` in list order: ``image_path`` the 4-channel PNG,
    ``label_path`` the label PNG or None when absent, ``extra['condition']`` not set (use
    :func:`condition_of` on the stem). Missing list or image -> :class:`InputFileError`."""
    root = Path(root)
    names = split_names(root, split, "MFNet")
    records = []
    for name in names:
        name = name[:-4] if name.endswith(".png") else name
        image = root / IMAGE_DIR / f"{name}.png"
        if not image.is_file():
            raise InputFileError(image, f"image of '{name}' (listed in {split}.txt) not found",
                                 "MFNet layout: images/<name>.png with 4 channels (RGB + thermal)")
        label = root / LABEL_DIR / f"{name}.png"
        records.append(ImageRecord(name, split, image, label if label.is_file() else None))
    return records


def split_channels(array: np.ndarray, path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A decoded MFNet image (H, W, 4) -> (rgb (H, W, 3) uint8, thermal (H, W) uint8)."""
    if array.ndim != 3 or array.shape[2] != 4:
        got = "1 channel" if array.ndim == 2 else f"{array.shape[2]} channels"
        raise InputFileError(path, f"PNG has {got}, expected 4 (R, G, B, thermal)",
                             "MFNet images store thermal as the 4th channel; for separate RGB and thermal "
                             "files use the PST900 layout (--dataset pst900)")
    if array.dtype != np.uint8:
        raise InputFileError(path, f"expected an 8-bit image, got {array.dtype}")
    return np.ascontiguousarray(array[:, :, :3]), thermal_to_uint8(array[:, :, 3], path)


def read_rgbt(record: ImageRecord) -> tuple[np.ndarray, np.ndarray]:
    """(rgb (H, W, 3) uint8, thermal (H, W) uint8) of one record."""
    return split_channels(read_png_as_stored(record.image_path), record.image_path)


def read_label(record: ImageRecord) -> np.ndarray:
    """(H, W) uint8 class ids 0..8 of one record (checked against :data:`LABELS`)."""
    if record.label_path is None:
        raise PseudoLabelsError(f"{record.image_path}: no label file {LABEL_DIR}/{record.stem}.png for this image")
    return check_label_ids(read_png_as_stored(record.label_path), LABELS, record.label_path)


def write_sample(root: str | os.PathLike, name: str, rgb: np.ndarray, thermal: np.ndarray,
                 label: np.ndarray | None = None) -> None:
    """Write one image (and its label) in the MFNet layout, atomically (4-channel PNG)."""
    import cv2

    from pseudo_labels.core import io as plio

    rgb, thermal = np.asarray(rgb, np.uint8), np.asarray(thermal, np.uint8)
    if rgb.shape[:2] != thermal.shape[:2] or rgb.ndim != 3 or thermal.ndim != 2:
        raise ValueError(f"rgb {rgb.shape} and thermal {thermal.shape} must be (H, W, 3) and (H, W)")
    bgra = np.ascontiguousarray(np.dstack([rgb[:, :, ::-1], thermal]))
    ok, buf = cv2.imencode(".png", bgra, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover
        raise PseudoLabelsError(f"{name}: PNG encoding failed")
    plio.write_bytes(Path(root) / IMAGE_DIR / f"{name}.png", buf.tobytes())
    if label is not None:
        LABELS.check_ids(label, f"label of {name}")
        plio.write_png(Path(root) / LABEL_DIR / f"{name}.png", np.asarray(label, np.uint8))
