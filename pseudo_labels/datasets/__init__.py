"""Data sets: one label table (ids, names, colours, thing flags, void) and one file lister
per data set (pairs an image with its other files by stem). Cityscapes' table comes from
``cityscapesscripts.helpers.labels``; the synthetic city writes the Cityscapes layout.

:func:`label_table` gives a data set's table by name; each data-set module defines
``LABELS`` (its :class:`~pseudo_labels.datasets.base.LabelTable`) and its lister.
Imports ``pseudo_labels.core`` only.
"""

from __future__ import annotations

import importlib

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.datasets.base import ImageRecord, LabelClass, LabelTable  # noqa: F401

#: data-set name -> module defining ``LABELS`` (and its lister); new data sets add a row
DATASET_MODULES: dict[str, str] = {
    "cityscapes": "pseudo_labels.datasets.cityscapes",
    "synthetic-city": "pseudo_labels.datasets.synthetic_city",
    "mfnet": "pseudo_labels.datasets.mfnet",
    "pst900": "pseudo_labels.datasets.pst900",
    "coco-stuff-27": "pseudo_labels.datasets.coco_stuff",
    "voc2012": "pseudo_labels.datasets.image_folders",
}


def label_table(name: str) -> LabelTable:
    """The :class:`LabelTable` of a data set by name (``cityscapes``, ...)."""
    try:
        module = DATASET_MODULES[name]
    except KeyError:
        raise PseudoLabelsError(f"unknown data set {name!r} (known: {', '.join(sorted(DATASET_MODULES))})") from None
    return importlib.import_module(module).LABELS
