"""CAUSE-27 semantic pseudo-labels and their 27 -> 19 remap (the reference's
``generate_semantic_pseudolabels_cause.py`` and ``remap_cause27_to_trainid.py``).

Semantics: DINOv2 ViT-B/14 tokens -> CAUSE Segment_TR EMA head (90-d, averaged with the
horizontally flipped crop) -> cluster probe log-probabilities ``log_softmax(3 cos)`` (27 x h x w
per crop), on the sliding windows of the semantic stage (crop 322, stride 161, last window
flush, bilinear upsampling to the crop, overlaps averaged: :func:`pseudo_labels.stages.semantic.features.sliding_window_dense`)
of the image resized so its short side is the crop (both sides floored to a multiple of 14);
argmax -> cluster; the Hungarian mapping names the clusters with the 27 CAUSE classes
(Cityscapes labelIds 7..33 -> 0..26); nearest-resized to the image size; uint8 PNG
``<output_dir>/<split>/<city>/<stem>.png``. No CRF (the reference's ``--skip_crf``).

Hungarian mode (reads labels; recorded): each image of the naming split resized (nearest) so
its short side is the crop, centre-cropped to crop x crop, one window; the 27 x 27 histogram
cluster x (labelId - 7) over all images, ``linear_sum_assignment`` (maximise), written to
``<output_dir>/hungarian_mapping.json`` with the reference's keys.
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.core.validate import validate_config

STAGE = "cause27-semantics"
REMAP_STAGE = "remap-cause27"
MODES = ("hungarian", "generate", "all")
SPLITS = ("train", "val", "both")
MAPPING_FILE = "hungarian_mapping.json"
DEFAULT_SUBDIR = "pseudo_semantic_cause"
N_CLASSES = 27


def _splits(split: str) -> list[str]:
    if split not in SPLITS:
        raise PseudoLabelsError(f"--split {split!r}: choose from {', '.join(SPLITS)}")
    return ["train", "val"] if split == "both" else [split]


# --------------------------------------------------------------------------- 27 -> 19 remap
@dataclass
class RemapConfig:
    """``input_dir`` / ``output_dir``: folders with ``<split>/<city>/*.png`` CAUSE class ids (0..26, 255 void)."""

    input_dir: str
    output_dir: str
    split: str = "both"
    table: str = "reference"

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)


def remap_cause27_image(src: str, dst: str, table: str) -> int:
    """Remap one PNG of CAUSE class ids to trainIds (atomic write); returns its pixel count.

    Ids 27..254 are not CAUSE classes: error naming the file (255 stays void).
    """
    from pseudo_labels.core.io import read_png, write_png
    from pseudo_labels.datasets.cityscapes import cause27_to_train_id_lut

    arr = read_png(src)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise InputFileError(src, f"expected a single-channel 8-bit PNG of CAUSE class ids, got {arr.shape} {arr.dtype}")
    bad = np.unique(arr[(arr >= N_CLASSES) & (arr != 255)])
    if bad.size:
        raise InputFileError(src, f"class ids {bad[:8].tolist()} are not CAUSE classes (0..26, 255 void)")
    write_png(dst, cause27_to_train_id_lut(table)[arr])
    return int(arr.size)


def _remap_job(job: tuple[str, str], table: str) -> int:
    return remap_cause27_image(job[0], job[1], table)


def remap_cause27_folder(config: RemapConfig, options=None):
    """Remap every ``<input_dir>/<split>/<city>/*.png`` to ``<output_dir>/<split>/<city>/`` (same names).

    A split folder that is missing is skipped when ``split="both"`` (as the reference),
    an error otherwise. Resume / atomic outputs / manifest as every stage; the manifest
    inherits ``uses_ground_truth`` from the input folder's (Hungarian-named CAUSE labels).
    Returns the runner's ``RunSummary``.
    """
    from pseudo_labels.core.io import is_up_to_date, prepare_output_dir, read_manifest, write_manifest
    from pseudo_labels.core.runner import RunOptions, run_per_image
    from pseudo_labels.datasets.cityscapes import CAUSE27_TABLES

    options = options or RunOptions()
    if config.table not in CAUSE27_TABLES:
        raise PseudoLabelsError(f"--table {config.table!r}: choose from {', '.join(CAUSE27_TABLES)}")
    src_root, dst_root = Path(config.input_dir), Path(config.output_dir)
    jobs, skipped_splits = [], []
    for split in _splits(config.split):
        folder = src_root / split
        if not folder.is_dir():
            if config.split != "both":
                raise InputFileError(folder, "no such folder (expected <input-dir>/<split>/<city>/*.png)")
            skipped_splits.append(split)
            continue
        jobs += [(str(p), str(dst_root / p.relative_to(src_root))) for p in sorted(folder.glob("*/*.png"))]
    if not jobs:
        raise InputFileError(src_root, f"no PNGs in <split>/<city>/ for split {config.split!r}")
    jobs = options.select(jobs)
    parameters = {"table": config.table, "split": config.split}
    resume = prepare_output_dir(dst_root, REMAP_STAGE, parameters, overwrite=options.overwrite)
    summary = run_per_image(functools.partial(_remap_job, table=config.table), jobs, options=options,
                            desc="remap 27->19", name_of=lambda j: Path(j[0]).name,
                            is_done=(lambda j: is_up_to_date(j[1], j[0])) if resume else None)
    upstream = read_manifest(src_root) or {}
    gt = ({"inherited": f"{src_root} was made with ground truth: {upstream.get('ground_truth_use') or 'yes'}"}
          if upstream.get("uses_ground_truth") else False)
    write_manifest(dst_root, REMAP_STAGE, parameters, uses_ground_truth=gt,
                   inputs={"input_dir": str(src_root)},
                   counts={"images": len(jobs), "done": summary.done, "skipped": summary.skipped,
                           "failed": len(summary.failed), "splits_not_found": skipped_splits})
    summary.raise_if_failed("PNGs")
    summary.skipped_splits = skipped_splits
    summary.uses_ground_truth = bool(gt)
    return summary


# --------------------------------------------------------------------------- the model
class Cause27Model:
    """DINOv2 + Segment_TR + cluster probe: 27 cluster log-probabilities per pixel."""

    def __init__(self, backbone, head, probe, device: str = "cpu", input_size: int | None = None):
        from pseudo_labels.stages.semantic.features import CauseExtractor

        self.extractor = CauseExtractor(backbone, head, "cause27", True, device=device, batch_size=1,
                                        input_size=input_size or head.crop_grid * 14)
        self.probe = probe.to(self.extractor.device).eval()
        self.crop = self.extractor.crop
        self.input_size = int(input_size or self.crop)
        self.n_classes = probe.n_classes

    def crop_log_probs(self, crops):
        """(N, 3, crop, crop) normalised -> (N, 27, g, g): head features averaged with the
        flipped crop's (flipped back), then the probe (as the reference's single-crop forward)."""
        feat = self.extractor.crop_features(crops)
        feat_flip = self.extractor.crop_features(crops.flip(-1)).flip(-1)
        return self.probe((feat + feat_flip) / 2)

    def log_probs(self, image: np.ndarray):
        """(H, W, 3) uint8 -> (27, h, w) float32 torch log-probabilities at the resized size."""
        import torch

        from pseudo_labels.stages.semantic.features import normalize_image, resize_image, resized_shape, sliding_window_dense

        size = resized_shape(image.shape[:2], self.input_size)
        x = normalize_image(resize_image(image, size))[None].to(self.extractor.device)
        with torch.inference_mode():
            out = sliding_window_dense(x, self.crop_log_probs, self.n_classes, crop=self.crop,
                                       stride=self.crop // 2, flip=False)
        return out[0]

    def clusters(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w) int64 cluster ids at the resized size."""
        return self.log_probs(image).argmax(0).cpu().numpy().astype(np.int64)

    def center_crop_clusters(self, image: np.ndarray) -> np.ndarray:
        """Clusters of the reference's Hungarian view: nearest resize (short side = crop), centre crop."""
        import torch
        import torch.nn.functional as F

        from pseudo_labels.stages.semantic.features import normalize_image

        x = normalize_image(center_crop_nearest(image, self.crop))[None].to(self.extractor.device)
        with torch.inference_mode():
            out = F.interpolate(self.crop_log_probs(x).float(), size=(self.crop, self.crop), mode="bilinear",
                                align_corners=False)
        return out[0].argmax(0).cpu().numpy().astype(np.int64)


def center_crop_nearest(array: np.ndarray, crop: int) -> np.ndarray:
    """torchvision ``Resize(crop, NEAREST)`` (short side -> crop, long side truncated) then
    ``CenterCrop(crop)`` of an (H, W[, C]) array, PIL nearest sampling."""
    from evaluation.resize import resize_nearest

    h, w = array.shape[:2]
    size = (crop, int(crop * w / h)) if h <= w else (int(crop * h / w), crop)
    resized = resize_nearest(array, size)
    top, left = int(round((size[0] - crop) / 2.0)), int(round((size[1] - crop) / 2.0))
    return np.ascontiguousarray(resized[top:top + crop, left:left + crop])


_MODELS: dict[tuple, Cause27Model] = {}


def _model(cfg: "Cause27Config") -> Cause27Model:
    from pseudo_labels.stages.semantic.cause import load_cause27_models
    from pseudo_labels.stages.semantic.features import resolve_device

    key = (os.path.abspath(cfg.checkpoint_dir), cfg.backbone, cfg.device, cfg.input_size)
    if key not in _MODELS:
        arch = None if cfg.backbone == "dinov2" else cfg.backbone
        backbone, head, probe = load_cause27_models(cfg.checkpoint_dir, arch)
        _MODELS.clear()
        _MODELS[key] = Cause27Model(backbone, head, probe, resolve_device(cfg.device), cfg.input_size)
    return _MODELS[key]


# --------------------------------------------------------------------------- config
@dataclass
class Cause27Config:
    """``mode``: hungarian (name the 27 clusters with GT labels of ``hungarian_split``),
    generate (PNG per image of ``split``, mapping read from the output folder), all (both).
    ``checkpoint_dir``: flat folder with ``dinov2_vitb14_pretrain.pth``, ``segment_tr.pth``,
    ``cluster_tr.pth``, ``modular.npy``. ``backbone``: ``dinov2_vitb14`` (checked) or
    ``dinov2`` (architecture read from the file). ``input_size``: short side of the network
    input (default: the crop, 322). ``limit``: first N images per split (0 = all).
    """

    cityscapes_root: str
    checkpoint_dir: str
    output_dir: str | None = None
    mode: str = "all"
    split: str = "both"
    hungarian_split: str = "val"
    limit: int = 0
    device: str = "cpu"
    backbone: str = "dinov2_vitb14"
    input_size: int | None = None

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)

    def resolved(self) -> "Cause27Config":
        if self.mode not in MODES:
            raise PseudoLabelsError(f"--mode {self.mode!r}: choose from {', '.join(MODES)}")
        _splits(self.split)
        if self.limit < 0:
            raise PseudoLabelsError(f"--limit {self.limit}: must be >= 0")
        out = self.output_dir or str(Path(self.cityscapes_root) / DEFAULT_SUBDIR)
        return Cause27Config(**{**asdict(self), "output_dir": out})


def _entries(cfg: Cause27Config, split: str) -> list:
    from pseudo_labels.datasets.cityscapes import list_images

    entries = list_images(cfg.cityscapes_root, split)
    return entries[: cfg.limit] if cfg.limit else entries


# --------------------------------------------------------------------------- Hungarian naming
def _hungarian_histogram(entry, cfg: Cause27Config) -> np.ndarray:
    """(27, 27) int64 counts [cluster, labelId - 7] of one image's centre crop."""
    from pseudo_labels.core.io import read_image_rgb, read_png
    from pseudo_labels.datasets.cityscapes import CAUSE27_FIRST_LABEL_ID, gt_path

    model = _model(cfg)
    pred = model.center_crop_clusters(read_image_rgb(entry.image_path))
    path = gt_path(cfg.cityscapes_root, entry, "labelIds")
    gt = read_png(path)
    if gt.ndim != 2:
        raise InputFileError(path, f"expected a single-channel labelIds PNG, got shape {gt.shape}")
    gt = center_crop_nearest(gt, model.crop).astype(np.int64) - CAUSE27_FIRST_LABEL_ID
    ok = (gt >= 0) & (gt < N_CLASSES) & (pred >= 0) & (pred < N_CLASSES)
    return np.bincount(N_CLASSES * pred[ok] + gt[ok], minlength=N_CLASSES * N_CLASSES).reshape(N_CLASSES, N_CLASSES)


def hungarian_from_histogram(hist: np.ndarray) -> dict:
    """The reference's ``hungarian_mapping.json`` content from the (27, 27) [cluster, class] histogram.

    ``cluster_to_class`` (27,), ``class_to_cluster`` (the row indices, 0..26), ``miou_27class``
    (percent, over classes whose IoU is defined), ``per_class_iou`` {name: percent or None}.
    """
    from evaluation.matching import hungarian_match
    from pseudo_labels.datasets.cityscapes import CAUSE27_NAMES

    hist = np.asarray(hist, np.float64)
    cluster_to_class = hungarian_match(hist)
    matched = np.zeros_like(hist)
    matched[cluster_to_class] = hist  # row c = the cluster named class c
    tp = np.diag(matched)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (matched.sum(0) + matched.sum(1) - tp)
    valid = ~np.isnan(iou)
    return {
        "cluster_to_class": [int(c) for c in cluster_to_class],
        "class_to_cluster": list(range(len(cluster_to_class))),
        "miou_27class": float(iou[valid].mean() * 100) if valid.any() else float("nan"),
        "per_class_iou": {n: (float(iou[i] * 100) if valid[i] else None) for i, n in enumerate(CAUSE27_NAMES)},
    }


def compute_hungarian(cfg: Cause27Config, options=None) -> dict:
    """Name the clusters with GT of ``cfg.hungarian_split``; write and return the mapping JSON."""
    from dataclasses import replace

    from pseudo_labels.core.io import write_json
    from pseudo_labels.core.runner import RunOptions, run_per_image

    options = replace(options or RunOptions(), workers=1)
    entries = _entries(cfg, cfg.hungarian_split)
    summary = run_per_image(functools.partial(_hungarian_histogram, cfg=cfg), entries, options=options,
                            desc="hungarian (GT)", name_of=lambda e: e.stem)
    summary.raise_if_failed("images")
    mapping = hungarian_from_histogram(sum(summary.results))
    mapping.update(uses_ground_truth=True, n_images=len(entries), split=cfg.hungarian_split,
                   ground_truth_use=f"cluster names by Hungarian matching on gtFine/{cfg.hungarian_split} labelIds "
                                    "(centre crops)")
    write_json(Path(cfg.output_dir) / MAPPING_FILE, mapping)
    return mapping


def load_hungarian(output_dir: str | os.PathLike) -> np.ndarray:
    """(27,) int64 ``cluster_to_class`` of ``<output_dir>/hungarian_mapping.json``."""
    from pseudo_labels.core.io import read_json

    path = Path(output_dir) / MAPPING_FILE
    if not path.is_file():
        raise InputFileError(path, "Hungarian mapping not found", "run with --mode hungarian (or all) first")
    data = read_json(path)
    c2c = np.asarray(data.get("cluster_to_class", []) if isinstance(data, dict) else [], np.int64)
    if c2c.shape != (N_CLASSES,) or c2c.min() < 0 or c2c.max() >= N_CLASSES:
        raise InputFileError(path, f"cluster_to_class must be 27 ids in 0..26, got {c2c.tolist()[:30]}")
    return c2c


# --------------------------------------------------------------------------- generation
def _generate_one(entry, cfg: Cause27Config, mapping: tuple[int, ...]) -> int:
    from evaluation.resize import resize_nearest
    from pseudo_labels.core.io import read_image_rgb, write_png

    image = read_image_rgb(entry.image_path)
    labels = np.asarray(mapping, np.uint8)[_model(cfg).clusters(image)]
    write_png(Path(cfg.output_dir) / entry.relative(".png"), resize_nearest(labels, image.shape[:2]))
    return 1


def _split_stats(folder: Path) -> dict:
    """The reference's ``stats.json``: image count and pixels per CAUSE class."""
    from pseudo_labels.core.io import read_png
    from pseudo_labels.datasets.cityscapes import CAUSE27_NAMES

    counts = np.zeros(256, np.int64)
    files = sorted(folder.glob("*/*.png"))
    for p in files:
        counts += np.bincount(read_png(p).ravel(), minlength=256)
    per_class = {i: int(counts[i]) for i in range(N_CLASSES)}
    return {"total": len(files), "per_class": per_class,
            "per_class_names": {str(i): {"name": CAUSE27_NAMES[i], "pixels": per_class[i]} for i in range(N_CLASSES)}}


def generate_cause27_semantics(config: Cause27Config, options=None) -> dict:
    """Run ``config.mode``; returns ``{"mapping": dict or None, "summaries": {split: RunSummary},
    "uses_ground_truth": bool, "output_dir": str}``. Networks run in one process."""
    from dataclasses import replace

    from pseudo_labels.core.io import (fingerprint_files, is_up_to_date, prepare_output_dir, write_json,
                                       write_manifest)
    from pseudo_labels.core.runner import RunOptions, run_per_image
    from pseudo_labels.stages.semantic.cause import cause27_checkpoint_paths

    cfg = config.resolved()
    options = replace(options or RunOptions(), workers=1)
    ckpts = cause27_checkpoint_paths(cfg.checkpoint_dir)
    out = {"mapping": None, "summaries": {}, "uses_ground_truth": True, "output_dir": cfg.output_dir}
    if cfg.mode in ("hungarian", "all"):
        out["mapping"] = compute_hungarian(cfg, options)
    if cfg.mode == "hungarian":
        return out
    mapping = load_hungarian(cfg.output_dir)
    parameters = {"backbone": cfg.backbone, "input_size": cfg.input_size, "cluster_to_class": mapping.tolist(),
                  "checkpoints": fingerprint_files(ckpts.values())}
    resume = prepare_output_dir(cfg.output_dir, STAGE, parameters, overwrite=options.overwrite)
    for split in _splits(cfg.split):
        entries = options.select(_entries(cfg, split))
        done = (lambda e: is_up_to_date(Path(cfg.output_dir) / e.relative(".png"), e.image_path)) if resume else None
        summary = run_per_image(functools.partial(_generate_one, cfg=cfg, mapping=tuple(mapping.tolist())), entries,
                                options=options, desc=f"CAUSE-27 {split}", name_of=lambda e: e.stem, is_done=done)
        out["summaries"][split] = summary
        summary.raise_if_failed("images")
        write_json(Path(cfg.output_dir) / split / "stats.json", _split_stats(Path(cfg.output_dir) / split))
    write_manifest(cfg.output_dir, STAGE, parameters,
                   uses_ground_truth={"hungarian": f"cluster names from {MAPPING_FILE} (Hungarian matching on "
                                                   "ground-truth labelIds)"},
                   inputs={"cityscapes_root": str(cfg.cityscapes_root), "checkpoints": ckpts},
                   counts={s: {"done": r.done, "skipped": r.skipped} for s, r in out["summaries"].items()})
    return out
