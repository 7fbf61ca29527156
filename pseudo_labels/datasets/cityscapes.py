"""Cityscapes conventions: class tables (from ``cityscapesscripts``), file layout, stems.

Class ids: trainIds 0..18 (stuff 0..10, things 11..18), :data:`IGNORE` = 255 void.
Files of one image are paired by the Cityscapes stem ``<city>_<seq>_<frame>``,
whatever suffix follows; folders are searched recursively, so flat and
``<split>/<city>/`` layouts both work.
"""

from __future__ import annotations

import functools

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.labels import id2label, labels as _CS_LABELS, trainId2label

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.datasets.base import LabelClass, LabelTable

IGNORE = 255
NUM_CLASSES = 19
#: train ids of the 19 evaluated classes, in order
TRAIN_IDS = tuple(range(NUM_CLASSES))
CLASS_NAMES: tuple[str, ...] = tuple(trainId2label[t].name for t in TRAIN_IDS)
THING_TRAIN_IDS: tuple[int, ...] = tuple(t for t in TRAIN_IDS if trainId2label[t].hasInstances)
STUFF_TRAIN_IDS: tuple[int, ...] = tuple(t for t in TRAIN_IDS if not trainId2label[t].hasInstances)
#: labelId (Cityscapes ``id``) of each trainId
TRAIN_ID_TO_LABEL_ID = np.array([trainId2label[t].id for t in TRAIN_IDS], np.int64)
#: RGB colour of each trainId, (19, 3) uint8
TRAIN_ID_COLORS = np.array([trainId2label[t].color for t in TRAIN_IDS], np.uint8)


#: the 19 evaluated Cityscapes classes (ids = trainIds, category_id = labelId), from cityscapesscripts
LABELS = LabelTable("cityscapes", tuple(
    LabelClass(t, trainId2label[t].name, tuple(trainId2label[t].color), bool(trainId2label[t].hasInstances),
               int(trainId2label[t].id)) for t in TRAIN_IDS), IGNORE)


def label_id_to_train_id_lut() -> np.ndarray:
    """(256,) uint8 lookup table labelId -> trainId (255 for ignored / unknown ids); a copy."""
    return _label_id_to_train_id_table().copy()


@functools.lru_cache(maxsize=None)
def _label_id_to_train_id_table() -> np.ndarray:
    """(256,) uint8 lookup table labelId -> trainId (255 for ignored / unknown ids)."""
    lut = np.full(256, IGNORE, np.uint8)
    for lab in _CS_LABELS:
        if 0 <= lab.id < 256 and 0 <= lab.trainId < 255:
            lut[lab.id] = lab.trainId
    return lut


def panoptic_categories(use_train_id: bool = False) -> list[dict]:
    """Categories of the Cityscapes panoptic JSON, as ``createPanopticImgs`` writes them."""
    cats = []
    for lab in _CS_LABELS:
        if lab.ignoreInEval:
            continue
        cats.append(
            {
                "id": int(lab.trainId) if use_train_id else int(lab.id),
                "name": lab.name,
                "color": list(lab.color),
                "supercategory": lab.category,
                "isthing": 1 if lab.hasInstances else 0,
            }
        )
    return cats


# --------------------------------------------------------------------------- stems and files
STEM_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*_\d{6}_\d{6})")


def stem_of(path: str | os.PathLike) -> str | None:
    """Cityscapes stem ``<city>_<seq>_<frame>`` of a file name, or None if it has none."""
    m = STEM_RE.match(Path(path).name)
    return m.group(1) if m else None


def city_of(stem: str) -> str:
    return stem.rsplit("_", 2)[0]


def index_by_stem(folder: str | os.PathLike, suffix: str = ".png", contains: str = "") -> dict[str, Path]:
    """Map stem -> file for every file under ``folder`` (recursive) ending in ``suffix``.

    ``contains`` optionally restricts to names containing that text (e.g. ``"_labelTrainIds"``).
    Two files with one stem -> error naming both.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PseudoLabelsError(f"{folder}: folder not found")
    out: dict[str, Path] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.endswith(suffix) or contains not in name:
                continue
            stem = stem_of(name)
            if stem is None:
                continue
            path = Path(root) / name
            if stem in out:
                raise PseudoLabelsError(
                    f"{folder}: two files for image {stem}: {out[stem]} and {path} "
                    "(keep one per image, or narrow the folder)"
                )
            out[stem] = path
    return out


@dataclass(frozen=True)
class ImageEntry:
    """One image of a Cityscapes split."""

    stem: str
    city: str
    split: str
    image_path: Path

    def relative(self, suffix: str) -> Path:
        """``<split>/<city>/<stem><suffix>`` (the reference output layout)."""
        return Path(self.split) / self.city / f"{self.stem}{suffix}"


def list_images(root: str | os.PathLike, split: str) -> list[ImageEntry]:
    """All ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` images, sorted by stem.

    Raises :class:`PseudoLabelsError` when the split folder is missing or empty.
    """
    folder = Path(root) / "leftImg8bit" / split
    if not folder.is_dir():
        raise PseudoLabelsError(
            f"{folder}: no such folder (expected the Cityscapes layout leftImg8bit/<split>/<city>/*_leftImg8bit.png)"
        )
    entries = []
    for stem, path in index_by_stem(folder, "_leftImg8bit.png").items():
        entries.append(ImageEntry(stem, city_of(stem), split, path))
    if not entries:
        raise PseudoLabelsError(f"{folder}: no *_leftImg8bit.png images in split '{split}'")
    return sorted(entries, key=lambda e: e.stem)


def gt_path(root: str | os.PathLike, entry: ImageEntry, kind: str) -> Path:
    """Path of a ground-truth file: kind in labelIds, instanceIds, labelTrainIds, color."""
    return Path(root) / "gtFine" / entry.split / entry.city / f"{entry.stem}_gtFine_{kind}.png"


def gt_train_ids_file(root: str | os.PathLike, entry: ImageEntry) -> Path | None:
    """The gtFine file that gives an image's trainIds: ``_gtFine_labelTrainIds.png`` (prepared) or,
    failing that, ``_gtFine_labelIds.png`` (what the official zip holds); None when neither exists.
    Read it with :func:`read_train_ids_file`."""
    for kind in ("labelTrainIds", "labelIds"):
        p = gt_path(root, entry, kind)
        if p.is_file():
            return p
    return None


def read_train_ids_file(path: str | os.PathLike) -> np.ndarray:
    """(H, W) uint8 trainIds (255 void) of a gtFine file: ``_labelIds`` files are mapped with
    cityscapesscripts' table, any other file is read as trainIds."""
    from pseudo_labels.core.io import read_png

    ids = read_png(path)
    return label_id_to_train_id_lut()[ids] if str(path).endswith("_gtFine_labelIds.png") else ids


def read_gt_train_ids(root: str | os.PathLike, entry: ImageEntry) -> np.ndarray | None:
    """gtFine trainIds (H, W) uint8 of an image: ``labelTrainIds`` or, failing that, ``labelIds``
    mapped with cityscapesscripts' table; None when neither exists."""
    p = gt_train_ids_file(root, entry)
    return None if p is None else read_train_ids_file(p)


def disparity_path(root: str | os.PathLike, entry: ImageEntry) -> Path:
    return Path(root) / "disparity" / entry.split / entry.city / f"{entry.stem}_disparity.png"


def camera_path(root: str | os.PathLike, entry: ImageEntry) -> Path:
    return Path(root) / "camera" / entry.split / entry.city / f"{entry.stem}_camera.json"


def panoptic_gt(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """(json, folder) of the Cityscapes panoptic ground truth of a split, where cityscapesscripts puts it
    next to the data; the official zips do not hold it: :func:`pseudo_labels.datasets.cityscapes_gt.
    panoptic_ground_truth` makes it into a cache when absent."""
    gt = Path(root) / "gtFine"
    return gt / f"cityscapes_panoptic_{split}.json", gt / f"cityscapes_panoptic_{split}"


# --------------------------------------------------------------------------- CAUSE 27-class ids
#: CAUSE-TR's 27 Cityscapes classes are the labelIds 7..33 in order: class c = labelId c + 7
CAUSE27_FIRST_LABEL_ID = 7
CAUSE27_NUM_CLASSES = 27
CAUSE27_NAMES: tuple[str, ...] = tuple(id2label[CAUSE27_FIRST_LABEL_ID + c].name for c in range(CAUSE27_NUM_CLASSES))
#: 27 -> 19 tables: ``cityscapes`` = cityscapesscripts' trainIds (classes without one are void 255);
#: ``reference`` = the reference repository's table, which also merges these three into a trainId class
CAUSE27_REFERENCE_MERGES: dict[str, str] = {"polegroup": "pole", "caravan": "car", "trailer": "truck"}
CAUSE27_TABLES = ("reference", "cityscapes")


def cause27_to_train_id_lut(table: str = "reference") -> np.ndarray:
    """(256,) uint8 lookup table CAUSE class (0..26) -> trainId (0..18, 255 void); ids >= 27 -> 255.

    ``table="cityscapes"``: derived from ``cityscapesscripts.helpers.labels`` (labelId c + 7 ->
    its trainId; parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer
    have none -> 255). ``table="reference"``: the same plus :data:`CAUSE27_REFERENCE_MERGES`
    (polegroup -> pole, caravan -> car, trailer -> truck), as the reference's
    ``remap_cause27_to_trainid.py`` and its evaluator do.
    """
    if table not in CAUSE27_TABLES:
        raise PseudoLabelsError(f"--table {table!r}: choose from {', '.join(CAUSE27_TABLES)}")
    lut = np.full(256, IGNORE, np.uint8)
    name_to_train = {trainId2label[t].name: t for t in TRAIN_IDS}
    for c, name in enumerate(CAUSE27_NAMES):
        train_id = id2label[CAUSE27_FIRST_LABEL_ID + c].trainId
        if 0 <= train_id < NUM_CLASSES:
            lut[c] = train_id
        elif table == "reference" and name in CAUSE27_REFERENCE_MERGES:
            lut[c] = name_to_train[CAUSE27_REFERENCE_MERGES[name]]
    return lut


def cause27_label_id_lut() -> np.ndarray:
    """(256,) uint8 lookup table CAUSE class (0..26) -> Cityscapes labelId (7..33); others -> 0 (unlabeled)."""
    lut = np.zeros(256, np.uint8)
    lut[:CAUSE27_NUM_CLASSES] = np.arange(CAUSE27_NUM_CLASSES) + CAUSE27_FIRST_LABEL_ID
    return lut
