"""COCO-Stuff-27: the 27 coarse classes of COCO-Stuff (12 thing + 15 stuff super-categories)
on the curated image lists of IIC / PiCIE (what DynaSeg, PiCIE and STEGO evaluate on).

Layout (PiCIE / STEGO)::

    <root>/curated/<split>/Coco164kFull_Stuff_Coarse_7.txt   one image id per line
    <root>/images/<split>/<id>.jpg                          (or <root>/<split>/<id>.jpg)
    <root>/annotations/<split>/<id>.png                     (or <root>/stuffthingmaps/<split>/<id>.png)

``<split>`` is ``train2017`` or ``val2017``. Annotation PNGs hold the fine COCO-Stuff
index (COCO category id - 1: things 0..90, stuff 91..181) and 255 for unlabelled
pixels; :func:`read_label` maps them to the coarse ids 0..26 (things 0..11, stuff
12..26, the order of the reference's ``fine_to_coarse_dict.pickle``) and 255.
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path

import numpy as np

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.datasets.base import ImageRecord, make_table, read_split_list

LIST_NAME = "Coco164kFull_Stuff_Coarse_7.txt"
VOID = 255
NUM_FINE = 182

#: coarse id -> (name, is_thing, fine indices (COCO-Stuff category id - 1))
COARSE_CLASSES: tuple[tuple[str, bool, tuple[int, ...]], ...] = (
    ("electronic", True, tuple(range(71, 77))),
    ("appliance", True, tuple(range(77, 83))),
    ("food-things", True, tuple(range(51, 61))),
    ("furniture-things", True, tuple(range(61, 71))),
    ("indoor", True, tuple(range(83, 91))),
    ("kitchen", True, tuple(range(43, 51))),
    ("accessory", True, tuple(range(25, 33))),
    ("animal", True, tuple(range(15, 25))),
    ("outdoor", True, tuple(range(9, 15))),
    ("person", True, (0,)),
    ("sports", True, tuple(range(33, 43))),
    ("vehicle", True, tuple(range(1, 9))),
    ("ceiling", False, (101, 102)),
    ("floor", False, (100, 113, 114, 115, 116, 117)),
    ("food-stuff", False, (120, 121, 152, 169)),
    ("furniture-stuff", False, (97, 106, 107, 109, 111, 122, 129, 132, 155, 160, 164)),
    ("rawmaterial", False, (99, 131, 138, 142)),
    ("textile", False, (91, 92, 103, 104, 108, 130, 136, 140, 151, 166, 167)),
    ("wall", False, tuple(range(170, 177))),
    ("window", False, (179, 180)),
    ("building", False, (94, 95, 127, 150, 157, 165)),
    ("ground", False, (110, 124, 125, 135, 139, 143, 144, 146, 148, 153, 158)),
    ("plant", False, (93, 96, 118, 123, 128, 133, 141, 162, 168)),
    ("sky", False, (105, 156)),
    ("solid", False, (126, 134, 149, 159, 161, 181)),
    ("structural", False, (98, 112, 137, 145, 163)),
    ("water", False, (119, 147, 154, 177, 178)),
)


def _palette(n: int) -> list[tuple[int, int, int]]:
    """n distinct RGB colours (hues spread by the golden ratio, two lightness levels)."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hls_to_rgb((i * 0.618033988749895) % 1.0, 0.45 if i % 2 else 0.6, 0.75)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return out


LABELS = make_table("coco-stuff-27", [(name, col, thing) for (name, thing, _), col
                                      in zip(COARSE_CLASSES, _palette(len(COARSE_CLASSES)))], void=VOID)


def fine_to_coarse_lut() -> np.ndarray:
    """(256,) uint8: fine COCO-Stuff index -> coarse id; 255 (and unknown 182..254) -> 255."""
    lut = np.full(256, VOID, np.uint8)
    for coarse, (_, _, fine) in enumerate(COARSE_CLASSES):
        lut[list(fine)] = coarse
    return lut


def read_label(path: str | os.PathLike) -> np.ndarray:
    """(H, W) uint8 coarse ids 0..26 / 255 of a fine COCO-Stuff annotation PNG.

    Raises :class:`InputFileError` for values 182..254 (not COCO-Stuff fine indices: the
    file is likely already coarse or a colour PNG).
    """
    from pseudo_labels.core.io import read_png

    fine = read_png(path)
    if fine.ndim != 2:
        raise InputFileError(path, f"expected a single-channel label PNG, got shape {fine.shape}")
    bad = (fine >= NUM_FINE) & (fine != VOID)
    if bad.any():
        raise InputFileError(path, f"values {sorted(set(np.unique(fine[bad]).tolist()))[:5]} are not fine "
                                   "COCO-Stuff indices 0..181 / 255", "expected stuffthingmaps-style annotations")
    return fine_to_coarse_lut()[fine]


def _first_dir(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_dir()), None)


def list_images(root: str | os.PathLike, split: str = "val2017", list_name: str = LIST_NAME) -> list[ImageRecord]:
    """The curated images of ``split`` in list order, with their annotation paths.

    Raises :class:`PseudoLabelsError` naming the missing list / folder / files.
    """
    root = Path(root)
    list_path = root / "curated" / split / list_name
    if not list_path.is_file():
        raise PseudoLabelsError(f"{list_path}: curated image list not found (expected the PiCIE layout "
                                f"<root>/curated/<split>/{list_name})")
    images = _first_dir(root / "images" / split, root / split)
    labels = _first_dir(root / "annotations" / split, root / "stuffthingmaps" / split)
    if images is None or labels is None:
        raise PseudoLabelsError(f"{root}: need images/{split}/ (or {split}/) and annotations/{split}/ "
                                f"(or stuffthingmaps/{split}/)")
    records, missing = [], []
    for image_id in read_split_list(list_path):
        img, lab = images / f"{image_id}.jpg", labels / f"{image_id}.png"
        if not img.is_file():
            missing.append(str(img))
        if not lab.is_file():
            missing.append(str(lab))
        records.append(ImageRecord(image_id, split, img, lab))
    if missing:
        raise PseudoLabelsError(f"{list_path}: {len(missing)} listed file(s) missing, e.g. {', '.join(missing[:3])}")
    if not records:
        raise PseudoLabelsError(f"{list_path}: the list is empty")
    return records
