"""Image folders with per-image labels: PASCAL VOC 2012 and BSD500 layouts (DynaSeg's
VOC / BSD benchmarks), and any folder of images paired with label files by name.

VOC 2012::

    <root>/ImageSets/Segmentation/<split>.txt   image ids (train, val, trainval)
    <root>/JPEGImages/<id>.jpg
    <root>/SegmentationClass/<id>.png           palette PNG: class 0..20 (0 background), 255 void

BSD500 (``BSR/BSDS500/data``)::

    <root>/images/<split>/<id>.jpg              split: train, val, test
    <root>/groundTruth/<split>/<id>.mat         MATLAB cell array groundTruth{i}.Segmentation
                                                (several human segmentations, ids 1..n)
    or <root>/groundTruth/<split>/<id>-<i>.csv  the CSV form read by DynaSeg's calculate_mIOU.py

BSD annotations are segmentations without class names: they are scored with
:func:`evaluation.unsupervised.best_overlap_miou`, VOC with either protocol.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.datasets.base import ImageRecord, make_table, read_split_list

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VOC_CLASS_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
                   "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
                   "train", "tvmonitor")
VOC_THINGS = frozenset(range(1, 21))
VOID = 255


def voc_color(index: int) -> tuple[int, int, int]:
    """The VOC palette colour of a class index (bits of the index spread over R, G, B)."""
    r = g = b = 0
    c = int(index)
    for shift in range(7, -1, -1):
        r |= (c & 1) << shift
        g |= ((c >> 1) & 1) << shift
        b |= ((c >> 2) & 1) << shift
        c >>= 3
    return r, g, b


LABELS = make_table("voc2012", [(n, voc_color(i), i in VOC_THINGS) for i, n in enumerate(VOC_CLASS_NAMES)],
                    void=VOID)


def read_voc_label(path: str | os.PathLike) -> np.ndarray:
    """(H, W) uint8 class ids 0..20 / 255 of a VOC ``SegmentationClass`` palette PNG.

    An RGB PNG (colours instead of palette indices) is mapped through the VOC palette;
    unknown colours raise :class:`InputFileError`.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.array(im)
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except OSError as exc:
        raise InputFileError(path, f"not a readable image ({exc})") from None
    if mode in ("P", "L"):
        ids = arr.astype(np.uint8)
    elif mode in ("RGB", "RGBA"):
        codes = {voc_color(i): i for i in range(len(VOC_CLASS_NAMES))} | {(224, 224, 192): VOID}
        flat = arr[..., :3].reshape(-1, 3)
        uniq, inv = np.unique(flat, axis=0, return_inverse=True)
        bad = [tuple(int(v) for v in u) for u in uniq if tuple(int(v) for v in u) not in codes]
        if bad:
            raise InputFileError(path, f"colours {bad[:3]} are not VOC palette colours")
        ids = np.array([codes[tuple(int(v) for v in u)] for u in uniq], np.uint8)[inv.reshape(-1)].reshape(arr.shape[:2])
    else:
        raise InputFileError(path, f"unexpected image mode {mode}", "expected a palette PNG")
    bad = (ids > 20) & (ids != VOID)
    if bad.any():
        raise InputFileError(path, f"ids {sorted(set(np.unique(ids[bad]).tolist()))[:5]} are not VOC classes 0..20 / 255")
    return ids


def list_voc(root: str | os.PathLike, split: str = "val") -> list[ImageRecord]:
    """The images of a VOC 2012 segmentation split, in list order, with label paths."""
    root = Path(root)
    lst = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not lst.is_file():
        raise PseudoLabelsError(f"{lst}: split list not found (expected the VOC2012 layout)")
    records, missing = [], []
    for image_id in read_split_list(lst):
        img, lab = root / "JPEGImages" / f"{image_id}.jpg", root / "SegmentationClass" / f"{image_id}.png"
        missing += [str(p) for p in (img, lab) if not p.is_file()]
        records.append(ImageRecord(image_id, split, img, lab))
    if missing:
        raise PseudoLabelsError(f"{lst}: {len(missing)} listed file(s) missing, e.g. {', '.join(missing[:3])}")
    return records


_CSV_RE = re.compile(r"^(.*)-(\d+)\.csv$")


def list_bsd(root: str | os.PathLike, split: str = "test") -> list[ImageRecord]:
    """BSD500 images of ``split`` (sorted by id); ``label_path`` is the ``.mat`` file, or the
    ground-truth folder when the annotations are ``<id>-<i>.csv`` files (then
    ``extra["csv"]`` lists them in order of i)."""
    root = Path(root)
    img_dir, gt_dir = root / "images" / split, root / "groundTruth" / split
    for d in (img_dir, gt_dir):
        if not d.is_dir():
            raise PseudoLabelsError(f"{d}: folder not found (expected the BSD500 layout images/<split>, groundTruth/<split>)")
    csvs: dict[str, list[tuple[int, Path]]] = {}
    for p in gt_dir.glob("*.csv"):
        m = _CSV_RE.match(p.name)
        if m:
            csvs.setdefault(m.group(1), []).append((int(m.group(2)), p))
    records, missing = [], []
    for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        mat = gt_dir / f"{img.stem}.mat"
        if mat.is_file():
            records.append(ImageRecord(img.stem, split, img, mat))
        elif img.stem in csvs:
            files = tuple(p for _, p in sorted(csvs[img.stem]))
            records.append(ImageRecord(img.stem, split, img, gt_dir, {"csv": files}))
        else:
            missing.append(img.stem)
    if missing:
        raise PseudoLabelsError(f"{gt_dir}: no annotation for {len(missing)} image(s), e.g. {', '.join(missing[:3])}")
    if not records:
        raise PseudoLabelsError(f"{img_dir}: no images")
    return records


def read_bsd_segmentations(record: ImageRecord) -> list[np.ndarray]:
    """The human segmentations of one BSD500 image: list of (H, W) int32 label maps."""
    if "csv" in record.extra:
        out = []
        for p in record.extra["csv"]:
            try:
                out.append(np.loadtxt(p, delimiter=",").astype(np.int32))
            except (OSError, ValueError) as exc:
                raise InputFileError(p, f"not a comma-separated label map ({exc})") from None
        return out
    from scipy.io import loadmat

    path = record.label_path
    try:
        cells = loadmat(str(path))["groundTruth"]
        return [np.asarray(cells[0, i]["Segmentation"][0, 0], np.int32) for i in range(cells.shape[1])]
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise InputFileError(path, f"no groundTruth{{i}}.Segmentation cell array ({exc})") from None


def list_image_folder(images_dir: str | os.PathLike, labels_dir: str | os.PathLike | None = None,
                      label_suffix: str = ".png", split: str = "") -> list[ImageRecord]:
    """Every image below ``images_dir`` (recursive, sorted), paired with
    ``labels_dir/<same relative path, label_suffix>`` when ``labels_dir`` is given."""
    root = Path(images_dir)
    if not root.is_dir():
        raise PseudoLabelsError(f"{root}: images folder not found")
    records, missing = [], []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES or any(s.startswith(".") for s in rel.parts):
            continue
        lab = Path(labels_dir) / rel.with_suffix(label_suffix) if labels_dir is not None else None
        if lab is not None and not lab.is_file():
            missing.append(str(lab))
        records.append(ImageRecord(str(rel.with_suffix("")), split, p, lab))
    if missing:
        raise PseudoLabelsError(f"{labels_dir}: no label file for {len(missing)} image(s), e.g. {', '.join(missing[:3])}")
    if not records:
        raise PseudoLabelsError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return records
