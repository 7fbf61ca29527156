"""Exports of panoptic pseudo-labels: CUPS training format and COCO panoptic.

Input everywhere: a Cityscapes-panoptic prediction (PNG folder, segment id =
R + 256 G + 256^2 B, 0 = void; JSON with ``annotations`` [{image_id = stem,
file_name, segments_info}] and ``categories`` with Cityscapes labelIds).

CUPS (visinf/cups) facts this module follows, each checked against the CUPS code:

- folder: flat; ``<stem>_leftImg8bit_semantic.png`` and ``<stem>_leftImg8bit_instance.png``
  (``PseudoLabelDataset.get_cityscapes_paths`` keeps files containing ``_instance.png`` /
  ``_semantic.png`` from ``sorted(os.listdir(root_pseudo))`` and pairs the two lists BY POSITION);
- the image of a pair is ``<root>/leftImg8bit_sequence/<split>/<city>/<name without _instance>.png``,
  split ``train`` for ``DATA.DATASET cityscapes`` and ``val`` for ``cityscapes_val`` (same function);
- labels are read with ``torchvision.io.read_image(mode=RGB)[0]`` (``cups/data/utils.py: load_label``);
  CUPS pins torchvision 0.16, which cannot decode 16-bit PNGs, so labels are 8-bit;
- the image is resized by ``DATA.SCALE`` = 0.625 (bilinear), the labels are NOT resized
  (``PseudoLabelDataset.__getitem__``), so upstream labels are stored at 640x1280 for a
  1024x2048 image (``gen_pseudo_labels.py`` uses ``img_shape = [640, 1280]``);
- semantic values are pseudo-class ids 0..C-1 indexing the class-distribution vectors; any value
  that is no class (255 here) becomes void (``__getitem__``: 256-entry lookup filled with ``void_id``);
- instance 0 is background, ids are renumbered by ``remap_ids``; the class of an instance is the
  MAX semantic value inside its mask (``(semantic * masks).amax``), so masks must be class-pure;
- thing/stuff: every file whose name contains ``.pt`` is ``torch.load``-ed and the tensors
  ``"distribution inside object proposals"`` and ``"distribution all pixels"`` are summed;
  ratio = inside / (all + 1e-6), sorted descending, normalised to sum 1, the first
  ``(p > DATA.THING_STUFF_THRESHOLD).argmin()`` classes are things (``__init__``);
  ``DATA.THING_STUFF_THRESHOLD`` defaults to 0.08 (``cups/config.py``); upstream writes one file
  ``pseudo_classes_split_<subsplit>.pt`` with int64 counts (``gen_pseudo_labels.py``,
  ``thingstuff_split.ThingStuffSplitter``).

The reference fork (qbit-glitch/monocular_ups, ``pseudo_labels/commands/convert_to_cups_format.py`` and
``refs/cups/cups/data/pseudo_label_dataset.py``) stores labels at full resolution with uint16
instances, resizes both labels by ``DATA.SCALE`` (nearest) in the loader, falls back to PIL for
16-bit PNGs in ``load_label`` and writes one float32 ``<stem>_leftImg8bit.pt`` per image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from pseudo_labels.core import io
from pseudo_labels.datasets.cityscapes import CLASS_NAMES, IGNORE, NUM_CLASSES, THING_TRAIN_IDS, city_of, index_by_stem, stem_of
from pseudo_labels.core.defaults import CUPS_SCALE, CUPS_THING_STUFF_THRESHOLD
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.core.paths import confine
from pseudo_labels.core.validate import validate_config

# --------------------------------------------------------------------------- CUPS constants
CUPS_SEMANTIC_SUFFIX = "_leftImg8bit_semantic.png"
CUPS_INSTANCE_SUFFIX = "_leftImg8bit_instance.png"
CUPS_SEQUENCE_FOLDER = "leftImg8bit_sequence"
CUPS_DIST_ALL = "distribution all pixels"
CUPS_DIST_INSIDE = "distribution inside object proposals"
CUPS_DIST_PER_OBJECT = "distribution per object proposal"
CUPS_DEFAULT_SCALE = CUPS_SCALE  # cups/config.py DATA.SCALE
CUPS_DEFAULT_THRESHOLD = CUPS_THING_STUFF_THRESHOLD  # cups/config.py DATA.THING_STUFF_THRESHOLD
CUPS_SPLIT_FILE = "pseudo_classes_split_1.pt"  # gen_pseudo_labels.py, PREPROCESSING_SUBSPLIT 1
CUPS_PRIOR_FILE = "pseudo_classes_absent_things.pt"
CUPS_DATASET_OF_SPLIT = {"train": "cityscapes", "val": "cityscapes_val"}  # PseudoLabelDataset


@dataclass(frozen=True)
class CupsTarget:
    """What one CUPS flavour reads. ``label_scale``: factor from the panoptic PNG to the stored
    labels; ``loader_scale``: factor the loader applies to labels (None: none)."""

    name: str
    instance_dtype: type
    label_scale: float | None
    loader_scale: float | None
    per_image_pt: bool
    pt_dtype: str


CUPS_TARGETS = {
    "cups": CupsTarget("cups", np.uint8, CUPS_DEFAULT_SCALE, None, False, "int64"),
    "cups-fork": CupsTarget("cups-fork", np.uint16, None, CUPS_DEFAULT_SCALE, True, "float32"),
}


# --------------------------------------------------------------------------- panoptic input
@dataclass
class PanopticImage:
    """One image of a panoptic prediction: ``stem``, its PNG and ``segments_info``."""

    stem: str
    png_path: Path
    segments: list
    annotation: dict = field(default_factory=dict)


@dataclass
class PanopticInput:
    json_path: Path
    png_dir: Path
    images: list  # [PanopticImage] sorted by stem
    categories: list  # as in the JSON, with isthing
    cat_to_train: dict  # category_id -> trainId
    cat_isthing: dict  # category_id -> bool
    extra_pngs: int = 0


def default_panoptic_json(panoptic_dir: str | os.PathLike) -> Path:
    """``<dir>.json`` (cityscapesscripts layout), else the only ``*.json`` inside ``dir``."""
    d = Path(panoptic_dir)
    sibling = d.parent / (d.name + ".json")
    if sibling.is_file():
        return sibling
    inside = sorted(p for p in d.glob("*.json") if p.name != io.MANIFEST_NAME)
    if len(inside) == 1:
        return inside[0]
    raise PseudoLabelsError(
        f"{d}: cannot tell which panoptic JSON belongs to this folder "
        f"({'none' if not inside else len(inside)} found next to or inside it); pass --panoptic-json"
    )


def category_tables(categories: Sequence[Mapping]) -> tuple[dict, dict]:
    """(category_id -> trainId, category_id -> isthing) from JSON categories, matched by name.

    Works for labelId and trainId category ids alike; unknown names raise PseudoLabelsError.
    """
    name_to_train = {n: t for t, n in enumerate(CLASS_NAMES)}
    to_train, isthing = {}, {}
    for c in categories:
        name = c.get("name")
        if name not in name_to_train:
            raise PseudoLabelsError(f"panoptic JSON: category {c.get('id')} {name!r} is not one of the 19 Cityscapes classes")
        t = name_to_train[name]
        to_train[int(c["id"])] = t
        isthing[int(c["id"])] = bool(c["isthing"]) if "isthing" in c else t in THING_TRAIN_IDS
    return to_train, isthing


def load_panoptic_input(panoptic_dir: str | os.PathLike, panoptic_json: str | os.PathLike | None = None) -> PanopticInput:
    """Read the JSON, pair every annotation with its PNG (by ``file_name``, else by stem).

    Raises PseudoLabelsError naming the image when a PNG is missing or an annotation has no stem.
    """
    png_dir = Path(panoptic_dir)
    if not png_dir.is_dir():
        raise InputFileError(png_dir, "panoptic PNG folder not found")
    json_path = Path(panoptic_json) if panoptic_json else default_panoptic_json(png_dir)
    data = io.read_json(json_path)
    if not isinstance(data, dict) or "annotations" not in data:
        raise InputFileError(json_path, "not a panoptic JSON (no 'annotations')")
    categories = data.get("categories") or []
    if not categories:
        raise InputFileError(json_path, "panoptic JSON has no 'categories'")
    cat_to_train, cat_isthing = category_tables(categories)
    by_stem = index_by_stem(png_dir, ".png")
    images, seen = [], set()
    for ann in data["annotations"]:
        fname = ann.get("file_name", "")
        stem = stem_of(fname) or stem_of(str(ann.get("image_id", "")))
        if stem is None:
            raise InputFileError(json_path, f"annotation {ann.get('image_id')!r} has no Cityscapes stem in file_name or image_id")
        if stem in seen:
            raise InputFileError(json_path, f"image {stem} appears twice in 'annotations'")
        seen.add(stem)
        direct = confine(png_dir, fname, f"{json_path}: file_name") if fname else None  # stays inside (issue 24)
        png = direct if direct is not None and direct.is_file() else by_stem.get(stem)
        if png is None:
            raise PseudoLabelsError(f"{png_dir}: no PNG for image {stem} (file_name {fname!r} in {json_path.name})")
        for s in ann.get("segments_info", []):
            if int(s["category_id"]) not in cat_to_train:
                raise PseudoLabelsError(
                    f"{json_path}: image {stem} segment {s['id']} has category {s['category_id']} not in 'categories'"
                )
        images.append(PanopticImage(stem, png, list(ann.get("segments_info", [])), ann))
    if not images:
        raise InputFileError(json_path, "no annotations")
    images.sort(key=lambda im: im.stem)
    return PanopticInput(json_path, png_dir, images, categories, cat_to_train, cat_isthing, len(set(by_stem) - seen))


def decode_panoptic(rgb: np.ndarray, segments: Sequence[Mapping], stem: str = "") -> np.ndarray:
    """(H, W, 3) uint8 COCO colour PNG -> (H, W) int64 segment ids, checked against ``segments``.

    Raises PseudoLabelsError naming the image if an id in the PNG has no segment in the JSON or a
    segment of the JSON has no pixel.
    """
    if rgb.ndim != 3:
        raise PseudoLabelsError(f"image {stem}: panoptic PNG must be RGB, got shape {rgb.shape}")
    pan = io.rgb_to_id(rgb)
    in_png = set(np.unique(pan).tolist()) - {0}
    in_json = {int(s["id"]) for s in segments}
    if in_png - in_json:
        raise PseudoLabelsError(
            f"image {stem}: segment ids {sorted(in_png - in_json)[:5]} in the PNG are not in the JSON segments_info"
        )
    if in_json - in_png:
        raise PseudoLabelsError(
            f"image {stem}: segments {sorted(in_json - in_png)[:5]} of the JSON have no pixel in the PNG"
        )
    return pan


def panoptic_to_semantic_instances(
    pan: np.ndarray, segments: Sequence[Mapping], cat_to_train: Mapping[int, int], cat_isthing: Mapping[int, bool]
) -> tuple[np.ndarray, np.ndarray]:
    """Segment-id map -> (semantic (H, W) uint8 trainIds, 255 void; instances (H, W) int32).

    Instances: 0 = none (stuff, void, crowd); 1..N = the non-crowd thing segments in increasing
    segment-id order. Crowd thing segments keep their class with instance 0.
    """
    ids = np.array([0] + [int(s["id"]) for s in segments], np.int64)
    sem_of = np.array([IGNORE] + [cat_to_train[int(s["category_id"])] for s in segments], np.uint8)
    order = np.argsort(ids, kind="stable")
    inst_of = np.zeros(len(ids), np.int32)
    k = 0
    for j in order:
        if j == 0:
            continue
        s = segments[j - 1]
        if cat_isthing[int(s["category_id"])] and not s.get("iscrowd", 0):
            k += 1
            inst_of[j] = k
    sorted_ids = ids[order]
    pos = order[np.searchsorted(sorted_ids, pan)]
    return sem_of[pos], inst_of[pos]


def read_panoptic_image(inp: PanopticInput, im: PanopticImage) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pan ids int64, semantic uint8 trainIds, instances int32) of one image, validated."""
    pan = decode_panoptic(io.read_png(im.png_path), im.segments, im.stem)
    sem, inst = panoptic_to_semantic_instances(pan, im.segments, inp.cat_to_train, inp.cat_isthing)
    return pan, sem, inst


# --------------------------------------------------------------------------- small array helpers
def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest resize of (H, W) to ``size`` with ``torch.nn.functional.interpolate(mode="nearest")``
    index rule: source = floor(dst * in / out)."""
    h, w = array.shape[:2]
    oh, ow = size
    if (h, w) == (oh, ow):
        return array
    ys = np.minimum((np.arange(oh) * (h / oh)).astype(np.int64), h - 1)
    xs = np.minimum((np.arange(ow) * (w / ow)).astype(np.int64), w - 1)
    return array[ys[:, None], xs[None, :]]


def scaled_size(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """Output size of ``F.interpolate(scale_factor=scale)``: floor(H*scale), floor(W*scale)."""
    return int(np.floor(shape[0] * scale)), int(np.floor(shape[1] * scale))


def compact_ids(inst: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber ids to 0..N keeping 0 and the order of ids (CUPS ``remap_ids``); returns (ids int64, N)."""
    u, inv = np.unique(inst, return_inverse=True)
    out = inv.reshape(inst.shape).astype(np.int64)
    if u[0] != 0:
        out += 1
    return out, int(len(u) - (1 if u[0] == 0 else 0))


def class_distributions(semantic: np.ndarray, instances: np.ndarray, num_classes: int = NUM_CLASSES) -> dict:
    """Per-class pixel counts as CUPS's ThingStuffSplitter makes them (int64 arrays of length C).

    ``all``: semantic pixels per class; ``inside``: those with instance != 0; ``per_object``: number of
    instances per class (class of the first pixel). Values >= C (void) are not counted.
    """
    s = semantic.reshape(-1).astype(np.int64)
    i = instances.reshape(-1)
    valid = s < num_classes
    all_ = np.bincount(s[valid], minlength=num_classes)[:num_classes]
    inside = np.bincount(s[valid & (i != 0)], minlength=num_classes)[:num_classes]
    per_obj = np.zeros(num_classes, np.int64)
    if (i != 0).any():
        ids, first = np.unique(i, return_index=True)
        for iid, f in zip(ids, first):
            if iid != 0 and s[f] < num_classes:
                per_obj[s[f]] += 1
    return {"all": all_.astype(np.int64), "inside": inside.astype(np.int64), "per_object": per_obj}


def cups_thing_stuff_split(inside: np.ndarray, all_: np.ndarray, threshold: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """CUPS's rule (``PseudoLabelDataset.__init__``): (thing classes, stuff classes).

    ratio = inside / (all + 1e-6), sorted descending (torch.sort), normalised to sum 1;
    the number of things is ``(p > threshold).float().argmin()`` (0 if every p exceeds it).
    """
    import torch

    ratio = torch.as_tensor(np.asarray(inside)).double() / (torch.as_tensor(np.asarray(all_)).double() + 1e-06)
    dist, idx = torch.sort(ratio.float(), descending=True)
    dist = dist / dist.sum()
    n = int((dist > threshold).float().argmin())
    return tuple(idx[:n].tolist()), tuple(idx[n:].tolist())


def cups_threshold_interval(inside: np.ndarray, all_: np.ndarray, things: Iterable[int]) -> tuple[float, float] | None:
    """[lo, hi) of thresholds for which CUPS's rule picks exactly ``things``, or None if none does."""
    ratio = np.asarray(inside, np.float64) / (np.asarray(all_, np.float64) + 1e-6)
    if ratio.sum() <= 0:
        return None
    p = ratio / ratio.sum()
    things = sorted(set(things))
    stuff = [c for c in range(len(p)) if c not in things]
    if not things or not stuff:
        return None
    lo, hi = float(p[stuff].max()), float(p[things].min())
    return (lo, hi) if lo < hi else None


# --------------------------------------------------------------------------- output folder rules
def check_output_folder(out: str | os.PathLike, overwrite: bool) -> None:
    """Refuse a non-empty output folder unless ``overwrite`` (one-line PseudoLabelsError)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PseudoLabelsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        n = sum(1 for _ in out.iterdir())
        raise PseudoLabelsError(f"{out}: output folder is not empty ({n} entries); use another folder or --overwrite")


# --------------------------------------------------------------------------- CUPS export
def cups_file_names(stem: str) -> tuple[str, str]:
    """(semantic, instance) file names of one image in a CUPS folder."""
    return stem + CUPS_SEMANTIC_SUFFIX, stem + CUPS_INSTANCE_SUFFIX


def cups_image_path(cityscapes_root: str | os.PathLike, instance_file: str, split: str = "train") -> Path:
    """The image CUPS pairs with an instance file (``PseudoLabelDataset.get_cityscapes_paths``)."""
    city = instance_file.split("_")[0]
    return Path(cityscapes_root) / CUPS_SEQUENCE_FOLDER / split / city / instance_file.replace("_instance.png", ".png")


def cups_labels(
    semantic: np.ndarray, instances: np.ndarray, target: str = "cups", stem: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution trainIds + instances -> the two arrays stored for ``target``.

    Returns (semantic (h, w) uint8, instances (h, w) uint8|uint16 with 0 = none, 1..N).
    Raises PseudoLabelsError with the count when N exceeds the target dtype.
    """
    t = CUPS_TARGETS[target]
    if t.label_scale is not None:
        size = scaled_size(semantic.shape, t.label_scale)
        semantic = resize_nearest(semantic, size)
        instances = resize_nearest(instances, size)
    inst, n = compact_ids(instances)
    limit = int(np.iinfo(t.instance_dtype).max)
    if n > limit:
        raise PseudoLabelsError(
            f"image {stem}: {n} instances, but the {target} format stores instance ids as "
            f"{np.dtype(t.instance_dtype).name} (at most {limit}); "
            + ("use --target cups-fork (uint16) or fewer instances" if target == "cups" else "reduce the instances")
        )
    return semantic.astype(np.uint8), inst.astype(t.instance_dtype)


def void_unmatched_things(semantic: np.ndarray, instances: np.ndarray, things: Sequence[int] = THING_TRAIN_IDS) -> np.ndarray:
    """Copy of ``semantic`` with thing-class pixels outside every instance (crowd) set to 255.

    CUPS counts such pixels against a class being a thing; voiding them is what its loader does with
    ``ignore_unknown_thing_regions=True`` (``PseudoLabelDataset.__getitem__``).
    """
    out = semantic.copy()
    out[(instances == 0) & np.isin(semantic, list(things))] = IGNORE
    return out


@dataclass(frozen=True)
class CupsJob:
    """Picklable per-image export job."""

    png_path: str
    segments: tuple
    stem: str
    out_dir: str
    target: str
    cat_to_train: tuple
    cat_isthing: tuple
    unmatched_things: str = "void"


def export_cups_image(job: CupsJob) -> dict:
    """Write the two PNGs (and for cups-fork the per-image .pt); return counts and stats."""
    pan = decode_panoptic(io.read_png(job.png_path), job.segments, job.stem)
    sem, inst = panoptic_to_semantic_instances(pan, job.segments, dict(job.cat_to_train), dict(job.cat_isthing))
    if job.unmatched_things == "void":
        sem = void_unmatched_things(sem, inst)
    s, i = cups_labels(sem, inst, job.target, job.stem)
    sem_name, inst_name = cups_file_names(job.stem)
    out = Path(job.out_dir)
    io.write_png(out / sem_name, s)
    io.write_png(out / inst_name, i)
    dist = class_distributions(s, i)
    if CUPS_TARGETS[job.target].per_image_pt:
        _write_pt(out / f"{job.stem}_leftImg8bit.pt", dist["inside"], dist["all"], None, "float32")
    return {"stem": job.stem, "shape": list(pan.shape), "label_shape": list(s.shape),
            "instances": int(i.max()), **{k: v.tolist() for k, v in dist.items()}}


def _write_pt(path: Path, inside, all_, per_object, dtype: str) -> None:
    import torch

    tdt = torch.int64 if dtype == "int64" else torch.float32
    data = {CUPS_DIST_ALL: torch.as_tensor(np.asarray(all_)).to(tdt),
            CUPS_DIST_INSIDE: torch.as_tensor(np.asarray(inside)).to(tdt)}
    if per_object is not None:
        data[CUPS_DIST_PER_OBJECT] = torch.as_tensor(np.asarray(per_object)).to(tdt)
    io.save_checkpoint(path, data)  # byte-identical for identical data


def find_cups_split(cityscapes_root: str | os.PathLike, stems: Sequence[str]) -> str:
    """The Cityscapes split whose ``leftImg8bit[_sequence]/<split>/<city>`` folders hold the stems' cities."""
    root = Path(cityscapes_root)
    cities = {city_of(s) for s in stems}
    found = []
    for split in ("train", "val"):
        for base in (CUPS_SEQUENCE_FOLDER, "leftImg8bit"):
            if all((root / base / split / c).is_dir() for c in cities):
                found.append(split)
                break
    if len(found) != 1:
        raise PseudoLabelsError(
            f"{root}: cannot tell the split of the images (cities {sorted(cities)[:3]}...); pass --split train|val"
        )
    return found[0]


def check_cups_images(cityscapes_root: str | os.PathLike, stems: Sequence[str], split: str,
                      label_shape: tuple[int, int] | None = None) -> None:
    """Check that every image CUPS will open exists (PseudoLabelsError with the count and a fix)."""
    root = Path(cityscapes_root)
    missing = []
    for stem in stems:
        p = cups_image_path(root, stem + CUPS_INSTANCE_SUFFIX, split)
        if not p.is_file():
            missing.append(p)
    if missing:
        keyframes = root / "leftImg8bit" / split
        hint = ("download leftImg8bit_sequence_trainvaltest.zip, or, since the key frames have the same names, "
                f"link them: ln -s leftImg8bit {root / CUPS_SEQUENCE_FOLDER}") if keyframes.is_dir() else \
            "download leftImg8bit_sequence_trainvaltest.zip into the Cityscapes root"
        raise PseudoLabelsError(
            f"{len(missing)} of {len(stems)} images CUPS reads are missing, e.g. {missing[0]} "
            f"(CUPS opens <root>/{CUPS_SEQUENCE_FOLDER}/{split}/<city>/<stem>_leftImg8bit.png; {hint}; "
            "or pass --no-image-check)"
        )


def stale_cups_files(out: str | os.PathLike, keep: Iterable[str]) -> list[Path]:
    """Files in ``out`` that CUPS would read (``_instance.png``, ``_semantic.png``, ``.pt``) but ``keep`` lacks."""
    keep = set(keep)
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.is_file() and p.name not in keep and
                  ("_instance.png" in p.name or "_semantic.png" in p.name or ".pt" in p.name))


def _write_class_split_files(out: Path, t: CupsTarget, stems: Sequence[str], inside: np.ndarray, all_: np.ndarray,
                             per_obj: np.ndarray, prior: np.ndarray) -> None:
    """The class-distribution ``.pt`` file(s) of the target (``prior``: one pixel per absent thing
    class), then remove files CUPS would read that are not part of this export."""
    keep = {n for s in stems for n in cups_file_names(s)}
    if t.per_image_pt:
        keep |= {f"{s}_leftImg8bit.pt" for s in stems}
        if prior.any():
            _write_pt(out / CUPS_PRIOR_FILE, prior, prior, None, t.pt_dtype)
            keep.add(CUPS_PRIOR_FILE)
    else:
        _write_pt(out / CUPS_SPLIT_FILE, inside + prior, all_ + prior, per_obj, t.pt_dtype)
        keep.add(CUPS_SPLIT_FILE)
    for p in stale_cups_files(out, keep):
        p.unlink()


def _check_cups_split(out: Path, inside: np.ndarray, all_: np.ndarray, threshold: float,
                      unmatched_things: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[float, float] | None]:
    """(things, stuff, valid threshold interval) under CUPS's rule; raises unless the things are
    the Cityscapes thing classes."""
    things, stuff = cups_thing_stuff_split(inside, all_, threshold)
    interval = cups_threshold_interval(inside, all_, THING_TRAIN_IDS)
    if set(things) != set(THING_TRAIN_IDS):
        where = (f"DATA.THING_STUFF_THRESHOLD in [{interval[0]:.4f}, {interval[1]:.4f}) gives it"
                 if interval else "no threshold gives it (thing classes with few pixels inside instances)")
        if unmatched_things == "keep":
            where += "; --unmatched-things void removes thing pixels outside instances from the counts"
        raise PseudoLabelsError(
            f"{out}: with DATA.THING_STUFF_THRESHOLD {threshold} CUPS would take classes {sorted(things)} as things, "
            f"not {list(THING_TRAIN_IDS)}; {where}; set --thing-stuff-threshold to the value your CUPS config uses"
        )
    return things, stuff, interval


def write_cups_folder(
    inp: PanopticInput,
    out_dir: str | os.PathLike,
    *,
    target: str = "cups",
    cityscapes_root: str | os.PathLike | None = None,
    split: str | None = None,
    threshold: float = CUPS_DEFAULT_THRESHOLD,
    check_images: bool = True,
    unmatched_things: str = "void",
    overwrite: bool = False,
    workers: int = 1,
    options=None,
) -> dict:
    """Export a panoptic prediction as a CUPS pseudo-label folder; return the manifest counts.

    ``unmatched_things``: ``void`` (thing pixels without an instance, e.g. crowd, become 255) or
    ``keep``. Refuses a non-empty ``out_dir`` unless ``overwrite`` (then files CUPS would read that are not
    part of this export are removed, since CUPS reads every such file of the folder).
    """
    from pseudo_labels.core.runner import run_per_image

    if unmatched_things not in ("void", "keep"):
        raise PseudoLabelsError(f"--unmatched-things {unmatched_things!r}: choose void or keep")
    if target not in CUPS_TARGETS:
        raise PseudoLabelsError(f"--target {target!r}: choose one of {', '.join(CUPS_TARGETS)}")
    out = Path(out_dir)
    check_output_folder(out, overwrite)
    stems = [im.stem for im in inp.images]
    if cityscapes_root is not None:
        split = split or find_cups_split(cityscapes_root, stems)
        if check_images:
            check_cups_images(cityscapes_root, stems, split)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [CupsJob(str(im.png_path), tuple(im.segments), im.stem, str(out), target,
                    tuple(inp.cat_to_train.items()), tuple(inp.cat_isthing.items()), unmatched_things)
            for im in inp.images]
    summary = run_per_image(export_cups_image, jobs, workers=workers, options=options, desc="cups export",
                            name_of=lambda j: j.stem)
    summary.raise_if_failed("images")
    results = summary.results
    inside = np.sum([r["inside"] for r in results], axis=0).astype(np.int64)
    all_ = np.sum([r["all"] for r in results], axis=0).astype(np.int64)
    per_obj = np.sum([r["per_object"] for r in results], axis=0).astype(np.int64)
    # a thing class absent from every image would get ratio 0 and become stuff under CUPS's rule:
    # one pixel in both counts keeps it a thing (recorded in the manifest)
    absent = [c for c in THING_TRAIN_IDS if all_[c] == 0]
    prior = np.zeros(NUM_CLASSES, np.int64)
    prior[absent] = 1
    _write_class_split_files(out, CUPS_TARGETS[target], stems, inside, all_, per_obj, prior)
    things, stuff, interval = _check_cups_split(out, inside + prior, all_ + prior, threshold, unmatched_things)
    n_inst = [r["instances"] for r in results]
    counts = {
        "images": len(results),
        "instances": int(sum(n_inst)),
        "max_instances_per_image": int(max(n_inst)),
        "images_without_instances": int(sum(1 for n in n_inst if n == 0)),
        "label_shape": results[0]["label_shape"],
        "input_shape": results[0]["shape"],
        "extra_pngs_ignored": inp.extra_pngs,
    }
    cups_config = {
        "DATA.DATASET": CUPS_DATASET_OF_SPLIT.get(split or "train", "cityscapes"),
        "DATA.ROOT": str(cityscapes_root) if cityscapes_root else None,
        "DATA.ROOT_PSEUDO": str(out),
        "DATA.SCALE": CUPS_DEFAULT_SCALE,
        "DATA.THING_STUFF_THRESHOLD": threshold,
        "valid_threshold_interval": list(interval) if interval else None,
        "thing_classes": list(things), "stuff_classes": list(stuff),
        "absent_thing_classes_given_one_pixel": absent,
        "unmatched_thing_pixels": unmatched_things,
        "note": "semantic ids are Cityscapes trainIds (19 pseudo-classes), 255 void; "
                "CUPS training skips images without instances (only_use_non_empty_samples)",
    }
    return {"counts": counts, "cups_config": cups_config, "split": split}


# --------------------------------------------------------------------------- CUPS reader (from the loader's rules)
@dataclass
class CupsSample:
    semantic: np.ndarray  # (h, w) int64 as the loader sees it, before crop / augmentation
    instances: np.ndarray  # (h, w) int64 after remap_ids, 0 = none
    image_path: Path
    semantic_path: Path
    instance_path: Path


def cups_load_label(path: str | os.PathLike) -> np.ndarray:
    """``load_label(path)[0]``: torchvision ``read_image(mode=RGB)`` channel 0 (upstream); 16-bit PNGs
    that torchvision cannot decode are read with PIL (the fork's fallback). (H, W) int64."""
    import warnings

    try:
        from torchvision.io import ImageReadMode, read_image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return read_image(str(path), mode=ImageReadMode.RGB)[0].numpy().astype(np.int64)
    except RuntimeError:
        from PIL import Image

        arr = np.array(Image.open(path))
        return (arr if arr.ndim == 2 else arr[..., 0]).astype(np.int64)


def list_cups_folder(root_pseudo: str | os.PathLike, cityscapes_root: str | os.PathLike = ".", split: str = "train"):
    """(image_paths, instance_paths, semantic_paths) exactly as ``get_cityscapes_paths`` builds them."""
    names = sorted(os.listdir(root_pseudo))
    inst = [f for f in names if "_instance.png" in f]
    sem = [f for f in names if "_semantic.png" in f]
    images = [cups_image_path(cityscapes_root, f, split) for f in inst]
    return images, [Path(root_pseudo) / f for f in inst], [Path(root_pseudo) / f for f in sem]


def read_cups_class_split(root_pseudo: str | os.PathLike, threshold: float = CUPS_DEFAULT_THRESHOLD):
    """Sum every ``.pt`` file of the folder and apply CUPS's rule -> (things, stuff, inside, all)."""
    import torch

    files = [p for p in os.listdir(root_pseudo) if ".pt" in p]
    if not files:
        raise PseudoLabelsError(f"{root_pseudo}: no .pt class-distribution file (CUPS needs one)")
    tensors = [io.load_checkpoint(os.path.join(root_pseudo, p), "class-distribution file") for p in sorted(files)]
    inside = torch.stack([t[CUPS_DIST_INSIDE] for t in tensors]).sum(0).numpy()
    all_ = torch.stack([t[CUPS_DIST_ALL] for t in tensors]).sum(0).numpy()
    things, stuff = cups_thing_stuff_split(inside, all_, threshold)
    return things, stuff, inside, all_


def read_cups_pair(semantic_path, instance_path, *, loader_scale: float | None = None,
                   image_path: str | os.PathLike = "") -> CupsSample:
    """Read one pair as CUPS's ``__getitem__`` does before cropping: ``load_label``, optional
    nearest rescale (the fork's loader, ``loader_scale`` = DATA.SCALE), ``remap_ids`` on instances."""
    sem = cups_load_label(semantic_path)
    inst = cups_load_label(instance_path)
    if loader_scale is not None:
        size = scaled_size(sem.shape, loader_scale)
        sem, inst = resize_nearest(sem, size), resize_nearest(inst, size)
    inst, _ = compact_ids(inst)
    return CupsSample(sem, inst, Path(image_path), Path(semantic_path), Path(instance_path))


def cups_detectron_targets(sample: CupsSample, things: Sequence[int], stuff: Sequence[int], void_id: int = 255):
    """The loader's training targets: (sem_seg (h, w) int64: 0 = thing, 1.. = stuff index, void;
    instance classes (N,) = index into ``things``, per instance mask 1..N). Raises if an instance's
    class (max semantic in its mask) is not a thing (CUPS would drop it)."""
    lut = np.full(256, void_id, np.int64)
    lut[list(things)] = 0
    lut[list(stuff)] = np.arange(len(stuff)) + 1
    sem_seg = lut[sample.semantic]
    n = int(sample.instances.max())
    classes = np.zeros(n, np.int64)
    if n:
        cls = np.zeros(n + 1, np.int64)
        np.maximum.at(cls, sample.instances.ravel(), sample.semantic.ravel())
        thing_index = {c: k for k, c in enumerate(things)}
        for k in range(1, n + 1):
            if int(cls[k]) not in thing_index:
                raise PseudoLabelsError(f"{sample.instance_path}: instance {k} has class {int(cls[k])}, not a thing")
            classes[k - 1] = thing_index[int(cls[k])]
    return sem_seg, classes


# --------------------------------------------------------------------------- COCO panoptic export
def segment_stats(pan: np.ndarray) -> dict:
    """segment id -> (area, [x, y, w, h]) of every non-zero id of a (H, W) id map."""
    from scipy import ndimage

    ids, inv = np.unique(pan, return_inverse=True)
    inv = inv.reshape(pan.shape).astype(np.int32) + 1
    areas = np.bincount(inv.ravel(), minlength=len(ids) + 1)
    out = {}
    for k, sl in enumerate(ndimage.find_objects(inv)):
        if sl is None or ids[k] == 0:
            continue
        ys, xs = sl
        out[int(ids[k])] = (int(areas[k + 1]), [int(xs.start), int(ys.start), int(xs.stop - xs.start), int(ys.stop - ys.start)])
    return out


def coco_categories(inp: PanopticInput) -> list[dict]:
    """The input categories with an explicit integer ``isthing``."""
    out = []
    for c in inp.categories:
        d = dict(c)
        d["id"] = int(c["id"])
        d["isthing"] = 1 if inp.cat_isthing[int(c["id"])] else 0
        out.append(d)
    return out


@dataclass(frozen=True)
class CocoJob:
    png_path: str
    segments: tuple
    stem: str
    image_id: int
    out_png: str


def export_coco_image(job: CocoJob) -> dict:
    """Decode, validate and rewrite one PNG; return its ``images`` and ``annotations`` entries."""
    pan = decode_panoptic(io.read_png(job.png_path), job.segments, job.stem)
    io.write_png(job.out_png, io.id_to_rgb(pan))
    stats = segment_stats(pan)
    segs = []
    for s in job.segments:
        area, bbox = stats[int(s["id"])]
        segs.append({"id": int(s["id"]), "category_id": int(s["category_id"]),
                     "iscrowd": int(s.get("iscrowd", 0)), "area": area, "bbox": bbox})
    h, w = pan.shape
    image = {"id": job.image_id, "file_name": f"{job.stem}_leftImg8bit.png", "width": w, "height": h,
             "stem": job.stem}
    ann = {"image_id": job.image_id, "file_name": Path(job.out_png).name, "segments_info": segs, "stem": job.stem}
    return {"image": image, "annotation": ann}


def write_coco_panoptic(inp: PanopticInput, out_dir: str | os.PathLike, *, name: str = "panoptic",
                overwrite: bool = False, workers: int = 1, options=None) -> dict:
    """Write ``<out>/<name>.json`` + ``<out>/<name>/<stem>.png`` (COCO panoptic, integer image ids
    1..N in stem order, the stem kept in ``file_name`` and ``stem``); return counts."""
    from pseudo_labels.core.runner import run_per_image

    out = Path(out_dir)
    check_output_folder(out, overwrite)
    png_dir = out / name
    jobs = [CocoJob(str(im.png_path), tuple(im.segments), im.stem, k + 1, str(png_dir / f"{im.stem}.png"))
            for k, im in enumerate(inp.images)]
    summary = run_per_image(export_coco_image, jobs, workers=workers, options=options, desc="coco export",
                            name_of=lambda j: j.stem)
    summary.raise_if_failed("images")
    data = {
        "info": {"description": "panoptic pseudo-labels exported by pseudo_labels", "source_json": str(inp.json_path)},
        "images": [r["image"] for r in summary.results],
        "annotations": [r["annotation"] for r in summary.results],
        "categories": coco_categories(inp),
    }
    io.write_json(out / f"{name}.json", data)
    return {"images": len(jobs), "segments": sum(len(r["annotation"]["segments_info"]) for r in summary.results),
            "json": f"{name}.json", "png_folder": name}


# --------------------------------------------------------------------------- folder level (the export commands)
@dataclass(frozen=True)
class CupsExportConfig:
    """What ``convert-to-cups-format`` writes: a CUPS pseudo-label folder from a panoptic prediction.

    ``panoptic_dir``: panoptic PNGs (recursive); ``panoptic_json``: its JSON (default:
    ``<panoptic_dir>.json``, else the only JSON inside). ``target``: ``cups`` (upstream
    visinf/cups, labels at 0.625 scale, uint8) or ``cups-fork`` (the reference fork, full
    resolution, uint16 instances). ``cityscapes_root`` / ``split``: where CUPS reads the images
    (checked unless ``check_images`` is False). ``threshold``: the CUPS config's
    DATA.THING_STUFF_THRESHOLD; ``unmatched_things``: ``void`` or ``keep``.
    """

    panoptic_dir: str
    out: str
    panoptic_json: str | None = None
    target: str = "cups"
    cityscapes_root: str | None = None
    split: str | None = None
    threshold: float = CUPS_DEFAULT_THRESHOLD
    check_images: bool = True
    unmatched_things: str = "void"
    overwrite: bool = False

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)


def _input_fingerprint(inp: PanopticInput) -> dict:
    return {"panoptic_json": str(inp.json_path), "panoptic_dir": str(inp.png_dir),
            "panoptic_pngs": io.fingerprint_files(im.png_path for im in inp.images)}


def export_cups(config: CupsExportConfig, options=None) -> dict:
    """Read the panoptic input, write the CUPS folder (:func:`write_cups_folder`) and its manifest.

    Returns ``{"counts", "cups_config", "split"}``; ``options``: a
    :class:`~pseudo_labels.core.runner.RunOptions` (workers / executor).
    """
    cfg = config
    inp = load_panoptic_input(cfg.panoptic_dir, cfg.panoptic_json)
    result = write_cups_folder(
        inp, cfg.out, target=cfg.target, cityscapes_root=cfg.cityscapes_root, split=cfg.split,
        threshold=cfg.threshold, check_images=cfg.check_images, unmatched_things=cfg.unmatched_things,
        overwrite=cfg.overwrite, options=options,
    )
    params = {"target": cfg.target, "split": result["split"], "thing_stuff_threshold": cfg.threshold,
              "unmatched_things": cfg.unmatched_things,
              "image_check": cfg.check_images and cfg.cityscapes_root is not None,
              "cityscapes_root": cfg.cityscapes_root}
    io.write_manifest(cfg.out, "convert-to-cups-format", params, uses_ground_truth=False,
                      inputs=_input_fingerprint(inp), counts=result["counts"],
                      extra={"cups_config": result["cups_config"]})
    return result


@dataclass(frozen=True)
class CocoExportConfig:
    """What ``export-coco`` writes: ``<out>/<name>.json`` + ``<out>/<name>/<stem>.png`` (COCO panoptic,
    integer image ids 1..N in stem order) from ``panoptic_dir`` / ``panoptic_json`` (as for CUPS)."""

    panoptic_dir: str
    out: str
    panoptic_json: str | None = None
    name: str = "panoptic"
    overwrite: bool = False

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)


def export_coco(config: CocoExportConfig, options=None) -> dict:
    """Read the panoptic input, write the COCO panoptic export (:func:`write_coco_panoptic`) and its
    manifest; return the counts (images, segments, json, png_folder)."""
    cfg = config
    inp = load_panoptic_input(cfg.panoptic_dir, cfg.panoptic_json)
    counts = write_coco_panoptic(inp, cfg.out, name=cfg.name, overwrite=cfg.overwrite, options=options)
    io.write_manifest(cfg.out, "export-coco", {"name": cfg.name}, uses_ground_truth=False,
                      inputs=_input_fingerprint(inp), counts=counts)
    return counts
