"""Ground truth the official Cityscapes zips do not hold, made by cityscapesscripts into a cache.

``gtFine_trainvaltest.zip`` holds, per image, ``_gtFine_color.png``, ``_gtFine_labelIds.png``,
``_gtFine_instanceIds.png`` and ``_gtFine_polygons.json``. Two derived kinds are made by
cityscapesscripts' own preparation code (github mcordts/cityscapesScripts, as installed):

* ``panoptic``: ``gtFine/cityscapes_panoptic_<split>.json`` + ``gtFine/cityscapes_panoptic_<split>/``
  (COCO panoptic PNGs), by ``cityscapesscripts.preparation.createPanopticImgs.convert2panoptic``
  from the ``*_gtFine_instanceIds.png`` files;
* ``trainIds``: ``gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png`` (uint8, 255 void), by
  ``json2labelImg.createLabelImage(annotation, "trainIds")`` from the ``*_gtFine_polygons.json``
  files, the per-file step of ``createTrainIdLabelImgs``.

cityscapesscripts writes next to the data (``CITYSCAPES_DATASET``); here it reads the dataset
and writes only into a cache folder with the same ``gtFine/`` layout (``<cache>/gtFine/...``),
never into the dataset. The cache's manifest (:data:`CACHE_MANIFEST`) records, per kind and
split, the dataset root and a fingerprint (names, sizes, mtimes) of the source files; a
matching entry is reused. Library: :func:`prepare_ground_truth`, :func:`panoptic_ground_truth`.
Command: ``pseudo-labels prepare-gt`` (:mod:`pseudo_labels.commands.prepare_gt`).
"""

from __future__ import annotations

import contextlib
import io as _io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from pseudo_labels.core import io as plio
from pseudo_labels.core.defaults import GT_CACHE_DIRNAME
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError

PANOPTIC = "panoptic"
TRAIN_IDS = "trainIds"
KINDS = (PANOPTIC, TRAIN_IDS)
CACHE_MANIFEST = "gt_cache_manifest.json"
STAGE = "prepare-gt"
ZIP_HINT = "they come with gtFine_trainvaltest.zip: unpack it into the dataset root"
#: what each kind is made from (suffix of the gtFine file) and by which cityscapesscripts code
SOURCES = {PANOPTIC: "_gtFine_instanceIds.png", TRAIN_IDS: "_gtFine_polygons.json"}
MADE_BY = {PANOPTIC: "cityscapesscripts createPanopticImgs.convert2panoptic",
           TRAIN_IDS: "cityscapesscripts createTrainIdLabelImgs (json2labelImg.createLabelImage, trainIds)"}


def default_cache(out_dir: str | os.PathLike) -> Path:
    """The cache folder of an output folder: ``<out_dir>/gt_cache``."""
    return Path(out_dir) / GT_CACHE_DIRNAME


def panoptic_paths(gt_root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """(JSON, PNG folder) of the panoptic GT of a split under ``<gt_root>/gtFine``."""
    gt = Path(gt_root) / "gtFine"
    return gt / f"cityscapes_panoptic_{split}.json", gt / f"cityscapes_panoptic_{split}"


def train_ids_path(gt_root: str | os.PathLike, split: str, stem: str) -> Path:
    """``<gt_root>/gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png``."""
    return Path(gt_root) / "gtFine" / split / stem.rsplit("_", 2)[0] / f"{stem}_gtFine_labelTrainIds.png"


def source_files(root: str | os.PathLike, split: str, kind: str) -> list[Path]:
    """The gtFine files a kind is made from: ``<root>/gtFine/<split>/<city>/*<suffix>``, sorted
    (the pattern cityscapesscripts globs)."""
    folder = Path(root) / "gtFine" / split
    return sorted(folder.glob(f"*/*{SOURCES[kind]}")) if folder.is_dir() else []


def _in_dataset(root: Path, split: str, kind: str, sources: list[Path]) -> bool:
    if kind == PANOPTIC:
        j, f = panoptic_paths(root, split)
        return j.is_file() and f.is_dir()
    if not sources:  # no polygons: trainId maps written by other tools (or an older synthetic city)
        return any((root / "gtFine" / split).glob("*/*_gtFine_labelTrainIds.png"))
    return all(p.with_name(p.name.replace("_polygons.json", "_labelTrainIds.png")).is_file() for p in sources)


@dataclass
class PreparedGT:
    """Where the ground truth of one split lies after :func:`prepare_ground_truth`.

    ``gt_root`` per kind: the folder whose ``gtFine/`` holds it (the dataset root when the
    dataset already has it, else the cache). ``status`` per kind: ``dataset`` (already
    there), ``made`` (made now), ``reused`` (from the cache); ``counts`` per kind: files.
    """

    root: Path
    split: str
    cache: Path
    gt_root: dict = field(default_factory=dict)
    status: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    @property
    def panoptic(self) -> tuple[Path, Path]:
        """(JSON, PNG folder) of the panoptic GT."""
        return panoptic_paths(self.gt_root[PANOPTIC], self.split)

    def train_ids(self, stem: str) -> Path:
        """The ``_gtFine_labelTrainIds.png`` of an image."""
        return train_ids_path(self.gt_root[TRAIN_IDS], self.split, stem)

    def lines(self) -> list[str]:
        """One line per kind made or reused (nothing for kinds the dataset holds)."""
        out = []
        for kind, status in self.status.items():
            if status == "dataset":
                continue
            what = f"{kind} ground truth of split {self.split} ({self.counts.get(kind, 0)} images)"
            if status == "made":
                out.append(f"made {what} from gtFine {SOURCES[kind]} with {MADE_BY[kind]} into {self.cache} "
                           "(reused next time)")
            else:
                out.append(f"reusing {what} from {self.cache} (made earlier by {MADE_BY[kind]})")
        return out

    def describe(self) -> dict:
        """For manifests: per kind, where it lies, how it was made, its status."""
        return {kind: {"status": st, "gt_root": str(self.gt_root[kind]),
                       "made_by": "the dataset" if st == "dataset" else MADE_BY[kind],
                       "images": self.counts.get(kind, 0)} for kind, st in self.status.items()}


def check_cache_location(root: Path, cache: Path) -> None:
    """The cache must not be the dataset root nor lie inside its ``gtFine`` (the tool never writes there)."""
    r, c = root.resolve(), cache.resolve()
    if c == r or c.is_relative_to(r / "gtFine"):
        raise PseudoLabelsError(f"{cache}: the ground-truth cache must not be the dataset root or lie inside its "
                                "gtFine folder (the dataset is never written); choose another folder")


def _silenced(fn: Callable, *args, **kwargs):
    """Run cityscapesscripts code with its progress prints silenced."""
    with contextlib.redirect_stdout(_io.StringIO()):
        return fn(*args, **kwargs)


def _convert_chunk(job: tuple[list[str], str, str, str]) -> str:
    """``convert2panoptic`` of some ``_instanceIds.png`` files: linked into ``<tmp>/<split>/<city>/``
    (the layout it globs), the PNGs and their JSON go to ``out``."""
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    files, split, tmp, out = job
    for f in files:
        link = Path(tmp) / split / Path(f).parent.name / Path(f).name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f, link)
    Path(out).mkdir(parents=True, exist_ok=True)
    _silenced(convert2panoptic, cityscapesPath=tmp, outputFolder=out, setNames=[split])
    return out


def make_panoptic(root: Path, split: str, dest: Path, workers: int = 1) -> tuple[Path, Path]:
    """``convert2panoptic`` of ``<root>/gtFine/<split>`` into ``<dest>/gtFine``: made in a scratch
    folder, then put in place by the write layer (:func:`pseudo_labels.core.io.replace_dir` for the PNG
    folder, :func:`~pseudo_labels.core.io.write_bytes` for the JSON: the umask's modes, one-line OS
    errors, no replacing of a file that is not ours), so a failure leaves nothing half-made.

    ``workers`` > 1: the files it would convert (its glob, sorted) are cut into contiguous chunks,
    each converted by its own ``convert2panoptic`` call in parallel (on links in the same
    ``<split>/<city>/`` layout), and the JSON lists are joined in order and written as it writes
    them (``json.dump(sort_keys=True, indent=4)``): the same files as one call.
    """
    import glob
    import json

    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    from pseudo_labels.core.runner import run_per_image

    out_json, out_dir = panoptic_paths(dest, split)
    files = sorted(glob.glob(os.path.join(str(root / "gtFine"), split, "*", "*_instanceIds.png")))
    with plio.scratch_dir(out_json.parent, "cannot write the panoptic ground truth") as tmp:
        if workers <= 1 or len(files) < 2:
            _silenced(convert2panoptic, cityscapesPath=str(root / "gtFine"), outputFolder=str(tmp), setNames=[split])
            text = (tmp / out_json.name).read_bytes()
        else:
            n = min(len(files), 4 * workers)
            bounds = [round(i * len(files) / n) for i in range(n + 1)]
            jobs = [([os.path.abspath(f) for f in files[a:b]], split, str(tmp / f"in{i}"), str(tmp / f"out{i}"))
                    for i, (a, b) in enumerate(zip(bounds, bounds[1:])) if b > a]
            run_per_image(_convert_chunk, jobs, workers=workers, desc=f"panoptic {split}", name_of=lambda j: j[0][0],
                          progress=False).raise_if_failed()
            (tmp / out_dir.name).mkdir()
            merged: dict = {"images": [], "annotations": [], "categories": None}
            for _, _, _, out in jobs:  # inside the scratch folder: gathering, not yet output
                part = json.loads((Path(out) / out_json.name).read_text())
                merged["images"] += part["images"]
                merged["annotations"] += part["annotations"]
                merged["categories"] = part["categories"]
                for png in (Path(out) / out_dir.name).iterdir():
                    os.replace(png, tmp / out_dir.name / png.name)
            text = json.dumps(merged, sort_keys=True, indent=4).encode()  # the bytes json.dump writes
        plio.replace_dir(out_dir, tmp / out_dir.name)
        plio.write_bytes(out_json, text)
    return out_json, out_dir


def train_ids_from_polygons(polygons_json: str | os.PathLike) -> np.ndarray:
    """(H, W) uint8 trainIds (255 void) of a ``_gtFine_polygons.json``, drawn by cityscapesscripts'
    ``createLabelImage(annotation, "trainIds")`` (what ``createTrainIdLabelImgs`` saves)."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2labelImg import createLabelImage

    ann = Annotation()
    try:
        ann.fromJsonFile(str(polygons_json))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(polygons_json, f"not a Cityscapes polygons file ({exc})") from exc
    return np.asarray(_silenced(createLabelImage, ann, "trainIds"), np.uint8)


def _write_train_ids(job: tuple[str, str]) -> str:
    src, dst = job
    plio.write_png(dst, train_ids_from_polygons(src))
    return dst


def _make_train_ids(sources: list[Path], split: str, dest: Path, workers: int) -> None:
    from pseudo_labels.core.runner import run_per_image

    jobs = [(str(p), str(dest / "gtFine" / split / p.parent.name / p.name.replace("_polygons.json",
                                                                                  "_labelTrainIds.png")))
            for p in sources]
    jobs = [j for j in jobs if not plio.is_up_to_date(j[1], j[0])]
    if jobs:
        run_per_image(_write_train_ids, jobs, workers=workers, desc=f"trainIds {split}", name_of=lambda j: j[0],
                      progress=False).raise_if_failed()


def prepare_ground_truth(root: str | os.PathLike, split: str, cache: str | os.PathLike,
                         kinds: Iterable[str] = KINDS, *, workers: int = 1, in_place: bool = False,
                         log: Callable[[str], None] | None = None) -> PreparedGT:
    """Make (or find) the ``kinds`` of derived ground truth of ``<root>/gtFine/<split>``.

    A kind the dataset already holds is used from there; otherwise it is made by
    cityscapesscripts into ``<cache>/gtFine`` (or reused from it when the cache's manifest
    matches the source files) and ``log`` gets one line. ``in_place`` (only for data sets this
    tool writes itself, such as the synthetic city): ``cache`` is the root and the kinds are
    always made. Missing source files -> :class:`InputFileError` naming them and the zip.
    """
    root, cache = Path(root), Path(cache)
    kinds = list(dict.fromkeys(kinds))
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise PseudoLabelsError(f"unknown ground-truth kind {bad[0]!r}: choose from {', '.join(KINDS)}")
    if not in_place:
        check_cache_location(root, cache)
    manifest = (plio.read_manifest(cache, CACHE_MANIFEST) or {}) if not in_place else {}
    entries = dict(manifest.get("parameters", {}).get("entries", {})) if manifest.get("stage") == STAGE else {}
    out = PreparedGT(root, split, cache)
    changed = False
    for kind in kinds:
        sources = source_files(root, split, kind)
        out.counts[kind] = len(sources)
        if not in_place and _in_dataset(root, split, kind, sources):
            out.gt_root[kind], out.status[kind] = root, "dataset"
            continue
        if not sources:
            raise InputFileError(root / "gtFine" / split / f"<city>/*{SOURCES[kind]}", "no such files", ZIP_HINT)
        entry = {"root": str(root.resolve()), "fingerprint": plio.fingerprint_files(sources)}
        key = f"{kind}:{split}"
        out.gt_root[kind] = cache
        if entries.get(key) == entry and _cached(cache, split, kind, sources):
            out.status[kind] = "reused"
            continue
        if kind == PANOPTIC:
            make_panoptic(root, split, cache, workers)
        else:
            _make_train_ids(sources, split, cache, workers)
        entries[key] = entry
        out.status[kind] = "made"
        changed = True
    if changed and not in_place:
        plio.write_manifest(cache, STAGE, {"entries": entries},
                            uses_ground_truth={"prepared": "derived ground truth (scoring and label-reading stages)"},
                            inputs={"root": str(root)}, name=CACHE_MANIFEST)
    for line in out.lines() if log and not in_place else ():
        log(line)
    return out


def _cached(cache: Path, split: str, kind: str, sources: list[Path]) -> bool:
    if kind == PANOPTIC:
        j, f = panoptic_paths(cache, split)
        return j.is_file() and f.is_dir()
    return all(train_ids_path(cache, split, p.name[: -len(SOURCES[kind])]).is_file() for p in sources)


def panoptic_ground_truth(root: str | os.PathLike, split: str, cache: str | os.PathLike, *, workers: int = 1,
                          log: Callable[[str], None] | None = None) -> tuple[Path, Path, PreparedGT]:
    """(JSON, PNG folder, :class:`PreparedGT`) of the panoptic GT of a split: the dataset's own
    ``gtFine/cityscapes_panoptic_<split>.json`` when present, else made (``workers`` processes) /
    reused in ``cache``."""
    prepared = prepare_ground_truth(root, split, cache, (PANOPTIC,), workers=workers, log=log)
    j, f = prepared.panoptic
    return j, f, prepared
