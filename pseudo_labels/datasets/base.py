"""What every data set provides: a label table and image entries paired by stem.

A :class:`LabelTable` lists the evaluated classes of a data set with contiguous ids
``0..C-1`` (Cityscapes: trainIds), their names, RGB colours, thing flags, the id written
as ``category_id`` in panoptic files (Cityscapes: labelIds) and the void id (255).
Stages take a table as an argument instead of assuming 19 Cityscapes classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np


@dataclass(frozen=True)
class LabelClass:
    """One evaluated class: ``id`` in 0..C-1, ``category_id`` as written in panoptic files."""

    id: int
    name: str
    color: tuple[int, int, int]
    is_thing: bool
    category_id: int | None = None

    @property
    def panoptic_id(self) -> int:
        return self.id if self.category_id is None else int(self.category_id)


@dataclass(frozen=True)
class LabelTable:
    """The classes of one data set; ids are 0..C-1 in order, ``void`` marks unlabelled pixels."""

    name: str
    classes: tuple[LabelClass, ...]
    void: int = 255

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise ValueError(f"label table {self.name}: class ids must be 0..{len(ids) - 1} in order, got {ids}")
        if 0 <= self.void < len(ids):
            raise ValueError(f"label table {self.name}: void id {self.void} collides with a class id")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def thing_ids(self) -> tuple[int, ...]:
        return tuple(c.id for c in self.classes if c.is_thing)

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        return tuple(c.id for c in self.classes if not c.is_thing)

    @property
    def colors(self) -> np.ndarray:
        """(C, 3) uint8 RGB colour per class id."""
        return np.array([c.color for c in self.classes], np.uint8).reshape(-1, 3)

    def colorize(self, ids: np.ndarray, void_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
        """(H, W) class ids -> (H, W, 3) uint8 RGB; void and unknown ids get ``void_color``."""
        ids = np.asarray(ids, np.int64)
        lut = np.zeros((self.num_classes + 1, 3), np.uint8)
        lut[: self.num_classes] = self.colors
        lut[self.num_classes] = void_color  # void and every id outside 0..C-1
        return lut[np.where((ids >= 0) & (ids < self.num_classes), ids, self.num_classes)]

    def panoptic_categories(self) -> list[dict]:
        """Categories of a COCO/Cityscapes panoptic JSON (``id`` = each class's ``panoptic_id``)."""
        return [{"id": c.panoptic_id, "name": c.name, "color": list(c.color), "isthing": int(c.is_thing)}
                for c in self.classes]

    def check_ids(self, ids: np.ndarray, what: str = "") -> None:
        """Raise ValueError (``"<what>: ids [...] are not classes of <table> (...)"``, no prefix
        when ``what`` is empty) listing the ids outside 0..C-1 and void."""
        u = np.unique(ids)
        bad = [int(v) for v in u if not (0 <= v < self.num_classes or v == self.void)]
        if bad:
            raise ValueError(f"{what + ': ' if what else ''}ids {bad[:10]} are not classes of {self.name} "
                             f"(0..{self.num_classes - 1}, void {self.void})")


def make_table(name: str, rows: Iterable[tuple[str, tuple[int, int, int], bool]], void: int = 255,
               category_ids: Mapping[int, int] | None = None) -> LabelTable:
    """A table from ``(name, colour, is_thing)`` rows, ids assigned 0..C-1 in order."""
    category_ids = category_ids or {}
    return LabelTable(name, tuple(LabelClass(i, n, tuple(int(v) for v in col), bool(t), category_ids.get(i))
                                  for i, (n, col, t) in enumerate(rows)), void)


@dataclass(frozen=True)
class ImageRecord:
    """One image of a data set and its other files, paired by stem (missing files are None)."""

    stem: str
    split: str
    image_path: Path
    label_path: Path | None = None
    extra: Mapping[str, Path] = field(default_factory=dict)

    def relative(self, suffix: str) -> Path:
        """``<split>/<stem><suffix>``: where a stage writes this image's output."""
        return Path(self.split) / f"{self.stem}{suffix}"


def read_split_list(path: str | os.PathLike) -> list[str]:
    """Names of a split list file (one per line; blank lines and ``#`` comments skipped); every
    name must stay below the folder it is joined to (no ``..`` escape, not absolute: issue 24)."""
    from pseudo_labels.core.errors import InputFileError
    from pseudo_labels.core.io import read_bytes
    from pseudo_labels.core.paths import check_name

    try:
        text = read_bytes(path).decode()
    except UnicodeDecodeError:
        raise InputFileError(path, "split list is not UTF-8 text") from None
    names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for n in names:
        check_name(n, f"{path}: entry")
    return names
