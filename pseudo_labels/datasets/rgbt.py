"""RGB-thermal data sets: one interface over MFNet, PST900 and the synthetic RGB-T set.

Every RGB-T data-set module (``mfnet``, ``pst900``) defines ``LABELS``, ``list_images(root,
split) -> list[ImageRecord]``, ``read_rgbt(record) -> (rgb, thermal)`` and
``read_label(record) -> ids``; this module dispatches on the data-set name so stages
and commands take ``--dataset mfnet|pst900``.

Conventions (all readers):

- ``rgb``: (H, W, 3) uint8 RGB; ``thermal``: (H, W) uint8 (a 16-bit thermal image is
  scaled per image from its 1st..99th percentile to 0..255, see :func:`thermal_to_uint8`).
  RGB and thermal of one image always have the same size (else :class:`InputFileError`).
- labels: (H, W) uint8 class ids of the data set's :class:`LabelTable` (0..C-1, void 255);
  ids outside the table raise :class:`InputFileError` naming the file.
- day / night: :func:`condition_of` (MFNet names end in ``D`` day / ``N`` night; other
  names are ``unknown``).

Imports ``pseudo_labels.core`` and sibling data-set modules only.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import numpy as np

from pseudo_labels.core import io
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.datasets.base import ImageRecord, LabelTable, read_split_list

#: RGB-T data-set name -> module (each defines LABELS, list_images, read_rgbt, read_label)
RGBT_MODULES: dict[str, str] = {
    "mfnet": "pseudo_labels.datasets.mfnet",
    "pst900": "pseudo_labels.datasets.pst900",
}
MODALITIES = ("rgb", "thermal")


def rgbt_module(dataset: str) -> ModuleType:
    """The module of an RGB-T data set by name (``mfnet``, ``pst900``)."""
    try:
        return importlib.import_module(RGBT_MODULES[dataset])
    except KeyError:
        raise PseudoLabelsError(f"--dataset {dataset!r}: not an RGB-T data set "
                                f"(choose {', '.join(sorted(RGBT_MODULES))})") from None


def list_rgbt_images(dataset: str, root: str | os.PathLike, split: str) -> list[ImageRecord]:
    """Sorted records of one split of an RGB-T data set (see the data-set module)."""
    return rgbt_module(dataset).list_images(root, split)


def read_rgbt_pair(dataset: str, record: ImageRecord) -> tuple[np.ndarray, np.ndarray]:
    """(rgb (H, W, 3) uint8, thermal (H, W) uint8) of one record."""
    return rgbt_module(dataset).read_rgbt(record)


def read_rgbt_label(dataset: str, record: ImageRecord) -> np.ndarray:
    """(H, W) uint8 class ids of one record (void 255); error when it has no label file."""
    return rgbt_module(dataset).read_label(record)


def rgbt_label_table(dataset: str) -> LabelTable:
    return rgbt_module(dataset).LABELS


def condition_of(stem: str) -> str:
    """``day`` / ``night`` from an MFNet-style name (last character ``D`` / ``N``), else ``unknown``."""
    if stem.endswith("D"):
        return "day"
    if stem.endswith("N"):
        return "night"
    return "unknown"


def modality_image(rgb: np.ndarray, thermal: np.ndarray, modality: str) -> np.ndarray:
    """The (H, W, 3) uint8 network input of one modality: the RGB image, or the thermal
    image replicated to three channels (how RGB backbones take thermal input)."""
    if modality == "rgb":
        return rgb
    if modality == "thermal":
        return np.repeat(np.asarray(thermal, np.uint8)[:, :, None], 3, axis=2)
    raise PseudoLabelsError(f"--modality {modality!r}: choose {' or '.join(MODALITIES)}")


# --------------------------------------------------------------------------- readers shared by the layouts
def read_png_as_stored(path: str | os.PathLike) -> np.ndarray:
    """Decode a PNG with every channel kept: (H, W) or (H, W, C) (RGB(A) order), uint8/uint16
    (a grey image with alpha, as 16-bit thermal PNGs decode, gives (H, W))."""
    return io.read_png(path, keep_channels=True)


def thermal_to_uint8(thermal: np.ndarray, path: str | os.PathLike = "") -> np.ndarray:
    """A single-channel thermal image as (H, W) uint8.

    uint8 is returned as it is; uint16 (raw radiometric counts) is scaled per image so that
    its 1st..99th percentile spans 0..255 (clipped). A 3-channel thermal image whose channels
    are equal (thermal saved as grey RGB) gives its first channel; anything else is an error.
    """
    t = np.asarray(thermal)
    if t.ndim == 3:
        if t.shape[2] >= 3 and np.array_equal(t[:, :, 0], t[:, :, 1]) and np.array_equal(t[:, :, 0], t[:, :, 2]):
            t = t[:, :, 0]
        else:
            raise InputFileError(path, f"thermal image has {t.shape[2]} different channels, expected one",
                                 "store thermal as a single-channel (grey) PNG")
    if t.dtype == np.uint8:
        return np.ascontiguousarray(t)
    if t.dtype == np.uint16:
        lo, hi = np.percentile(t, (1.0, 99.0))
        scaled = (t.astype(np.float32) - lo) * (255.0 / max(float(hi - lo), 1.0))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    raise InputFileError(path, f"thermal image has dtype {t.dtype}, expected uint8 or uint16")


def check_label_ids(ids: np.ndarray, table: LabelTable, path: str | os.PathLike) -> np.ndarray:
    """``ids`` as (H, W) uint8 after checking every value is a class of ``table`` or void."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise InputFileError(path, f"label image has shape {ids.shape}, expected a single-channel (H, W) PNG")
    try:
        table.check_ids(ids)
    except ValueError as exc:
        raise InputFileError(path, f"label {exc}", "labels must hold class indices, not colours") from None
    return ids.astype(np.uint8)


def split_names(root: Path, split: str, layout: str) -> list[str]:
    """Names of ``<root>/<split>.txt``; clear error when the list is missing or empty."""
    path = root / f"{split}.txt"
    if not path.is_file():
        have = sorted(p.stem for p in root.glob("*.txt")) if root.is_dir() else []
        raise InputFileError(path, f"split list not found ({layout} layout: <root>/{split}.txt, one name per line)",
                             f"lists present: {', '.join(have) or 'none'}")
    names = read_split_list(path)
    if not names:
        raise InputFileError(path, "split list is empty")
    return names


def read_rgbt_sample(dataset: str, record: ImageRecord, with_label: bool = True
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(rgb, thermal, label or None) of one record; a label of another size than the image
    -> :class:`InputFileError` naming the label file."""
    rgb, thermal = read_rgbt_pair(dataset, record)
    if not with_label:
        return rgb, thermal, None
    label = read_rgbt_label(dataset, record)
    if label.shape != rgb.shape[:2]:
        raise InputFileError(record.label_path, f"label is {label.shape[0]}x{label.shape[1]} but the image is "
                             f"{rgb.shape[0]}x{rgb.shape[1]}", "labels must have the image's size")
    return rgb, thermal, label
