"""Frozen backbone features of RGB-thermal images, one cache per modality.

For every image of a split of an RGB-T data set (:mod:`pseudo_labels.datasets.rgbt`: MFNet
layout, PST900 layout, the synthetic RGB-T set) and every requested modality, the features
of :func:`pseudo_labels.stages.semantic.features.build_extractor` (``builtin``, DINOv2 with local
weights) are written to::

    <out>/<modality>/<split>/<stem>.npy    (D, h, w) float16, L2-normalised over D
    <out>/<modality>/<split>/manifest.json  one manifest per modality and split (parameters, counts)

``rgb`` is the RGB image; ``thermal`` is the thermal image replicated to 3 channels (how an
RGB backbone takes it; ImageNet normalisation applies to both). Both go through the same
resize (``input_size``: (H, W), or an int = short side, both sides floored to multiples of
14), so the two modalities of one image have the same grid. Finished files are reused
(resume); the shared runner gives workers, Ray, shards and atomic writes.

Library: :func:`extract_rgbt_features`, :func:`rgbt_feature_path`, :func:`load_rgbt_features`.
Command: ``pseudo-labels extract-rgbt-features``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.runner import RunOptions, RunSummary, batch_name, error_message, run_per_image
from pseudo_labels.datasets.base import ImageRecord
from pseudo_labels.datasets.rgbt import MODALITIES, list_rgbt_images, modality_image, read_rgbt_pair
from pseudo_labels.stages.semantic.features import build_extractor, load_features, save_features
from pseudo_labels.core.validate import validate_config

STAGE = "extract-rgbt-features"
#: default network input: short side 322 (MFNet 480 x 640 -> 322 x 420, a 23 x 30 patch grid)
RGBT_FEATURE_INPUT_SIZE = 322


def rgbt_feature_path(features_root: str | Path, modality: str, record: ImageRecord) -> Path:
    """``<features_root>/<modality>/<split>/<stem>.npy``."""
    return Path(features_root) / modality / record.relative(".npy")


def load_rgbt_features(features_root: str | Path, record: ImageRecord,
                       modalities: Sequence[str] = MODALITIES) -> tuple[np.ndarray, ...]:
    """The cached (D, h, w) float32 features of one image, one array per modality (same grid)."""
    feats = tuple(load_features(rgbt_feature_path(features_root, m, record)) for m in modalities)
    grids = {f.shape[1:] for f in feats}
    if len(grids) > 1:
        raise PseudoLabelsError(f"{features_root}: features of {record.stem} have different grids per modality "
                                f"{sorted(grids)}; extract both modalities with the same --input-size")
    return feats


@dataclass(frozen=True)
class RGBTFeatureConfig:
    """What ``extract-rgbt-features`` computes (see the module docstring)."""

    data_root: str
    out: str
    dataset: str = "mfnet"
    split: str = "train"
    modalities: tuple[str, ...] = MODALITIES
    backbone: str = "builtin"
    weights: str | None = None
    device: str = "cpu"
    batch_size: int = defaults.BATCH_SIZE
    input_size: int | tuple[int, int] = RGBT_FEATURE_INPUT_SIZE
    limit: int = 0  # only the first N images of the split (0: all), before sharding

    def __post_init__(self) -> None:
        if not isinstance(self.input_size, (int, np.integer)):
            object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "modalities", tuple(self.modalities))
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise PseudoLabelsError(f"--modality {' '.join(self.modalities)}: choose from {', '.join(MODALITIES)}")
        validate_config(self)  # one check for flags and TOML (issue 24)

    def parameters(self, modality: str) -> dict:
        """Parameters that determine one modality's outputs (its manifest's config hash)."""
        size = self.input_size
        return {"dataset": self.dataset, "split": self.split, "modality": modality, "backbone": self.backbone,
                "weights": str(Path(self.weights).resolve()) if self.weights else None,
                "input_size": list(size) if isinstance(size, tuple) else size}

    def extractor_key(self) -> tuple:
        return (self.backbone, self.weights, self.device, self.input_size, self.batch_size)


_EXTRACTOR: dict = {}


def _extractor(key: tuple):
    """One extractor per process and configuration."""
    if key not in _EXTRACTOR:
        _EXTRACTOR.clear()
        backbone, weights, device, input_size, batch_size = key
        _EXTRACTOR[key] = build_extractor(backbone, weights, device=device, input_size=input_size,
                                          batch_size=batch_size)
    return _EXTRACTOR[key]


@dataclass(frozen=True)
class _Job:
    dataset: str
    records: tuple  # ImageRecord
    todo: tuple  # per record: the modalities still to compute
    out: str
    key: tuple
    fail_fast: bool


def _extract_job(job: _Job) -> dict:
    """Read one batch, extract every missing modality, write. Unreadable images fail alone."""
    by_modality: dict[str, list] = {m: [] for m in MODALITIES}
    failed = []
    for rec, mods in zip(job.records, job.todo):
        try:
            rgb, thermal = read_rgbt_pair(job.dataset, rec)
        except Exception as exc:  # noqa: BLE001 - reported per image
            msg = error_message(exc)
            if job.fail_fast:
                raise PseudoLabelsError(msg if rec.stem in msg else f"{rec.stem}: {msg}") from None
            failed.append((rec.stem, msg))
            continue
        for m in mods:
            by_modality[m].append((rec, modality_image(rgb, thermal, m)))
    extractor = _extractor(job.key)
    written = 0
    grid = None
    for m, items in by_modality.items():
        if not items:
            continue
        feats = extractor.extract([im for _, im in items])
        for (rec, _), f in zip(items, feats):
            save_features(rgbt_feature_path(job.out, m, rec), f)
            grid = list(f.shape[1:])
            written += 1
    return {"written": written, "failed": failed, "grid": grid}


@dataclass
class RGBTFeatureSummary(RunSummary):
    """``done``: feature files written, ``skipped``: already there, ``failed``: [(stem, message)]."""

    out: str = ""
    seconds: float = 0.0
    n_images: int = 0

    def line(self) -> str:
        per = f", {self.seconds / self.done:.3f} s per image and modality" if self.done else ""
        return (f"{STAGE}: {self.n_images} images, {self.done} feature files written, {self.skipped} skipped "
                f"(already done), {len(self.failed)} failed{per} -> {self.out}")


def extract_rgbt_features(config: RGBTFeatureConfig, options: RunOptions | None = None) -> RGBTFeatureSummary:
    """Features of every image of ``config.split`` (this shard's part) for each modality, with one
    manifest per modality folder; finished files are reused unless ``options.overwrite``."""
    from pseudo_labels.core.io import fingerprint_files, prepare_output_dir, write_manifest

    opts = options or RunOptions()
    out = Path(config.out)
    records = list_rgbt_images(config.dataset, config.data_root, config.split)
    if config.limit > 0:
        records = records[: config.limit]
    records = opts.select(records)
    key = config.extractor_key()
    extractor = _extractor(key)  # bad weights / CUDA fail here, before anything is written
    inputs = {"data_root": str(Path(config.data_root).resolve()),
              "images": fingerprint_files(r.image_path for r in records)}
    info = {**extractor.describe(), "dtype": "float16", "layout": "<split>/<stem>.npy, (D, h, w)"}
    reuse = {}
    for m in config.modalities:
        reuse[m] = prepare_output_dir(out / m / config.split, STAGE, config.parameters(m), overwrite=opts.overwrite)
        write_manifest(out / m / config.split, STAGE, config.parameters(m), uses_ground_truth=False, inputs=inputs,
                       counts={"status": "running", "images": len(records)}, extra={"features": info})
    todo = [tuple(m for m in config.modalities if not (reuse[m] and rgbt_feature_path(out, m, r).exists()))
            for r in records]
    pending = [i for i, t in enumerate(todo) if t]
    jobs = [_Job(config.dataset, tuple(records[i] for i in pending[s:s + config.batch_size]),
                 tuple(todo[i] for i in pending[s:s + config.batch_size]), str(out), key, opts.fail_fast)
            for s in range(0, len(pending), config.batch_size)]
    t0 = time.time()
    runs = run_per_image(_extract_job, jobs, options=opts, desc="rgbt features",
                         name_of=lambda j: batch_name(j.records))
    summary = RGBTFeatureSummary(results=[], failed=list(runs.failed), out=str(out), seconds=time.time() - t0,
                                 n_images=len(records), skipped=sum(len(config.modalities) - len(t) for t in todo))
    grid = None
    for r in runs.results:
        if r is not None:
            summary.done += r["written"]
            summary.failed.extend(r["failed"])
            grid = grid or r["grid"]
    for m in config.modalities:
        write_manifest(out / m / config.split, STAGE, config.parameters(m), uses_ground_truth=False, inputs=inputs,
                       counts={"status": "finished" if not summary.failed else "finished with failures",
                               "images": len(records), "failed": len(summary.failed)},
                       extra={"features": {**info, "grid": grid}, **opts.describe(),
                              "failed": [{"image": n, "error": e} for n, e in summary.failed],
                              "seconds": round(summary.seconds, 3)})
    return summary
