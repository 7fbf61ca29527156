"""Image-level multi-label tags: read from files or derived from ground truth.

A tag set is a multi-hot float32 vector of length C (the number of foreground classes of
the label space, see :func:`class_names`). Files:

- JSON ``{"<stem or file name>": ["car", "road", ...], ...}``
- CSV with a header ``image,classes`` (or no header); ``classes`` separated by ``;`` or ``|``.

Image keys are matched by Cityscapes stem (``<city>_<seq>_<frame>``) when the key has
one, otherwise by the file name without extension. Class names are matched
case-insensitively, with ``_``/``-`` treated as spaces (``traffic_light`` = ``traffic light``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError

LABEL_SPACES = ("cityscapes", "voc")

#: the 20 PASCAL VOC object classes; VOC id = index + 1 (0 background, 255 ignore)
VOC_CLASS_NAMES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def class_names(label_space: str = "cityscapes") -> tuple[str, ...]:
    """Foreground class names of a label space (CAM channel order)."""
    if label_space == "cityscapes":
        from pseudo_labels.datasets.cityscapes import CLASS_NAMES

        return tuple(CLASS_NAMES)
    if label_space == "voc":
        return VOC_CLASS_NAMES
    raise PseudoLabelsError(f"unknown label space {label_space!r} (choose {' or '.join(LABEL_SPACES)})")


def _norm_name(name: str) -> str:
    return " ".join(name.strip().lower().replace("_", " ").replace("-", " ").split())


def image_key(name: str) -> str:
    """Key of an image name/path in a tags file: its Cityscapes stem, else its base name without extension."""
    from pseudo_labels.datasets.cityscapes import stem_of

    base = os.path.basename(str(name).strip())
    stem = stem_of(base)
    if stem is not None:
        return stem
    return base.rsplit(".", 1)[0] if "." in base else base


def tags_to_vector(names: Iterable[str], names_table: Sequence[str], image: str) -> np.ndarray:
    """Class names -> (C,) float32 multi-hot over ``names_table``.

    Raises :class:`PseudoLabelsError` naming ``image`` for an unknown class or an empty tag set.
    """
    index = {_norm_name(n): i for i, n in enumerate(names_table)}
    vec = np.zeros(len(names_table), np.float32)
    for n in names:
        if not str(n).strip():
            continue
        i = index.get(_norm_name(str(n)))
        if i is None:
            raise PseudoLabelsError(
                f"image {image}: unknown class {n!r} in its tags (known: {', '.join(names_table)})"
            )
        vec[i] = 1.0
    if vec.sum() == 0:
        raise PseudoLabelsError(f"image {image}: has no tags (every image needs at least one class)")
    return vec


def read_tags_file(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a ``.json`` or ``.csv`` tags file -> {image key: [class names]} (keys via :func:`image_key`)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "tags file not found", "give --tags FILE (.json or .csv) or --tags-from-gt")
    out: dict[str, list[str]] = {}
    if path.suffix.lower() == ".json":
        from pseudo_labels.core.io import read_json

        data = read_json(path)
        if not isinstance(data, Mapping):
            raise InputFileError(path, "expected a JSON object {image: [class names]}")
        for k, v in data.items():
            if isinstance(v, str):
                v = [s for s in v.replace("|", ";").split(";")]
            if not isinstance(v, (list, tuple)):
                raise InputFileError(path, f"image {k}: expected a list of class names, got {type(v).__name__}")
            out[image_key(k)] = [str(s).strip() for s in v if str(s).strip()]
        return out
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"cannot read ({exc})") from None
    for lineno, row in enumerate(rows, 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if lineno == 1 and row[0].strip().lower() in ("image", "file", "filename", "stem"):
            continue
        if len(row) < 2:
            raise InputFileError(path, f"line {lineno}: expected 'image,classes'")
        classes = ",".join(row[1:]).replace("|", ";")
        out[image_key(row[0])] = [s.strip() for s in classes.split(";") if s.strip()]
    return out


def tags_for_images(
    stems: Sequence[str], tags: Mapping[str, Sequence[str]], label_space: str = "cityscapes"
) -> np.ndarray:
    """(N, C) float32 multi-hot tags for ``stems`` (image keys) from a tags mapping.

    Raises :class:`PseudoLabelsError` naming the image when it has no entry, an empty
    entry, or a class unknown to the label space.
    """
    table = class_names(label_space)
    out = np.zeros((len(stems), len(table)), np.float32)
    for i, s in enumerate(stems):
        if s not in tags:
            raise PseudoLabelsError(f"image {s}: has no tags in the tags file (add an entry for it)")
        out[i] = tags_to_vector(tags[s], table, s)
    return out


def tags_from_label_map(
    labels: np.ndarray, label_space: str = "cityscapes", min_pixels: int = 1, image: str = "?"
) -> np.ndarray:
    """(C,) float32 multi-hot of the classes present in a label map with >= ``min_pixels`` pixels.

    ``labels``: (H, W) integer map -- Cityscapes trainIds (0..18, 255 void) or VOC ids
    (0 background, 1..20 classes, 255 ignore). Raises when no class qualifies.
    """
    table = class_names(label_space)
    counts = np.bincount(np.asarray(labels, np.int64).ravel(), minlength=256)
    offset = 1 if label_space == "voc" else 0
    vec = (counts[offset: offset + len(table)] >= max(1, int(min_pixels))).astype(np.float32)
    if vec.sum() == 0:
        raise PseudoLabelsError(
            f"image {image}: no class has >= {min_pixels} pixels in its ground truth, so it has no tags"
        )
    return vec


def vector_to_names(vec: np.ndarray, label_space: str = "cityscapes") -> list[str]:
    """(C,) multi-hot -> class names (for manifests and tag files)."""
    table = class_names(label_space)
    return [table[i] for i in np.flatnonzero(np.asarray(vec) > 0.5)]
