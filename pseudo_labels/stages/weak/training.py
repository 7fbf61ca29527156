"""Train (or resume) a CAM tag classifier on frozen backbone features, optionally with DEAL.

:func:`train_cam` does what ``pseudo-labels train-cam`` does: list the split, read the tags
(a tags file, or gtFine labelTrainIds: recorded as ground-truth use), extract the backbone
features once per image into a float16 cache (``RUN_DIR/features/<split>/<city>/<stem>.npy``
unless ``feature_cache``), compute the DEAL depth edges at the feature grid when
``deal_weight > 0``, train the head (:func:`pseudo_labels.stages.weak.cam.train_cam_head`;
``RUN_DIR/checkpoint.pt`` after every epoch, resumed on a rerun with the same settings) and
write ``RUN_DIR/manifest.json``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from pseudo_labels.core import defaults
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.io import fingerprint_files, write_manifest
from pseudo_labels.datasets.cityscapes import list_images
from pseudo_labels.stages.semantic.features import build_extractor
from pseudo_labels.stages.weak.cam import CHECKPOINT_NAME, CamHeadConfig, train_cam_head
from pseudo_labels.stages.weak.inputs import cached_features, depth_edges_for, load_tags
from pseudo_labels.stages.weak.tags import class_names
from pseudo_labels.core.validate import validate_config


@dataclass
class CamTrainConfig:
    """Settings of one CAM training run (the flags of ``train-cam``).

    ``cityscapes_root``: dataset root (Cityscapes layout); ``out``: run folder.
    Tags: exactly one of ``tags_file`` (.json / .csv) or ``tags_from_gt`` (classes with at least
    ``tags_min_pixels`` px in gtFine labelTrainIds). ``label_space``: ``cityscapes`` (19 train
    classes) or ``voc`` (20 classes). ``input_size``: backbone input (H, W), multiples of 14.
    ``depth_subdir``: DEAL depth (``.npy`` folder under the root, or ``disparity``), needed when
    ``deal_weight > 0``; ``depth_transform``: ``none``, ``log`` or ``inverse``. ``hidden``: 0 for
    a linear head; ``pooling``: ``gap`` or ``lse``. ``restart`` discards an existing checkpoint.
    ``feature_cache``: folder of cached features (default ``out/features``; runs on the same
    images and backbone may share one).
    """

    cityscapes_root: str | os.PathLike
    out: str | os.PathLike
    split: str = "train"
    tags_file: str | os.PathLike | None = None
    tags_from_gt: bool = False
    label_space: str = defaults.CAM_LABEL_SPACE
    tags_min_pixels: int = defaults.CAM_TAGS_MIN_PIXELS
    backbone: str = "builtin"
    weights: str | os.PathLike | None = None
    input_size: Sequence[int] = defaults.FEATURE_INPUT_SIZE
    depth_subdir: str | None = None
    depth_transform: str = "none"
    deal_weight: float = defaults.CAM_DEAL_WEIGHT
    epochs: int = defaults.CAM_EPOCHS
    seed: int = defaults.SEED
    lr: float = defaults.CAM_LR
    batch_size: int = defaults.CAM_BATCH_SIZE
    hidden: int = defaults.CAM_HIDDEN
    pooling: str = defaults.CAM_POOLING
    device: str = "cpu"
    restart: bool = False
    feature_cache: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)


def _check(config: CamTrainConfig) -> None:
    if config.deal_weight < 0:
        raise PseudoLabelsError("--deal-weight must be >= 0")
    if config.deal_weight > 0 and not config.depth_subdir:
        raise PseudoLabelsError("--deal-weight > 0 needs depth: give --depth-subdir D (or --depth-subdir disparity)")


def _run_meta(config: CamTrainConfig, names: Sequence[str], grid: tuple[int, int], stems: list[str]) -> dict:
    """The metadata stored in the checkpoint (read back by the pseudo-label stage and the sweep)."""
    c = config
    return {"backbone": c.backbone, "weights": str(c.weights) if c.weights else None, "input_size": list(c.input_size),
            "label_space": c.label_space, "class_names": list(names), "split": c.split,
            "tags": "ground truth" if c.tags_from_gt else str(c.tags_file), "tags_min_pixels": c.tags_min_pixels,
            "depth_subdir": c.depth_subdir, "depth_transform": c.depth_transform, "feature_grid": list(grid),
            "stems": stems}


def train_cam(config: CamTrainConfig, log: Callable[[str], None] | None = None) -> dict:
    """Train (or resume) a CAM head; writes ``out/checkpoint.pt`` and ``out/manifest.json``.

    Returns ``{"run_dir", "epochs", "history", "n_images", "seconds", "uses_ground_truth"}``;
    ``history`` has one ``{epoch, loss, cls_loss, deal_loss}`` per epoch, ``uses_ground_truth``
    is False or a description of the ground truth read.
    """
    t0 = time.time()
    c, out = config, Path(config.out)
    _check(c)
    entries = list_images(c.cityscapes_root, c.split)
    names = class_names(c.label_space)
    tags = load_tags(c.cityscapes_root, entries, tags_file=c.tags_file, tags_from_gt=c.tags_from_gt,
                     label_space=c.label_space, min_pixels=c.tags_min_pixels)
    if c.restart and (out / CHECKPOINT_NAME).exists():
        (out / CHECKPOINT_NAME).unlink()
    extractor = build_extractor(c.backbone, weights=c.weights, device=c.device, input_size=tuple(c.input_size))
    feats = cached_features(entries, extractor, c.feature_cache or out / "features", log)
    grid = tuple(feats.shape[-2:])
    edges = None
    if c.deal_weight > 0:
        edges = depth_edges_for(c.cityscapes_root, entries, c.depth_subdir, grid, transform=c.depth_transform)
    head_config = CamHeadConfig(num_classes=len(names), in_dim=int(feats.shape[1]), epochs=int(c.epochs),
                                lr=float(c.lr), batch_size=int(c.batch_size), hidden=int(c.hidden), pooling=c.pooling,
                                deal_weight=float(c.deal_weight), seed=int(c.seed))
    meta = _run_meta(c, names, grid, [e.stem for e in entries])
    _, history = train_cam_head(feats, tags, head_config, depth_edges=edges, run_dir=out, resume=True,
                                device=c.device, meta=meta, log=log)
    params = {"cityscapes_root": str(c.cityscapes_root), **meta, **head_config.to_dict()}
    params.pop("stems")
    gt_use = {"tags": f"image tags from gtFine labelTrainIds (classes with >= {c.tags_min_pixels} px)"} \
        if c.tags_from_gt else False
    write_manifest(out, "train-cam", params, uses_ground_truth=gt_use,
                   inputs={"images": fingerprint_files(e.image_path for e in entries),
                           "tags_file": str(c.tags_file) if c.tags_file else None},
                   counts={"n_images": len(entries), "epochs": len(history),
                           "final_loss": history[-1]["loss"] if history else None})
    return {"run_dir": str(out), "epochs": len(history), "history": history, "n_images": len(entries),
            "seconds": time.time() - t0, "uses_ground_truth": gt_use}


def train_cam_run(root: str | os.PathLike, split: str, out: str | os.PathLike, *,
                  log: Callable[[str], None] | None = None, **settings) -> dict:
    """:func:`train_cam` with the config given as keywords (any :class:`CamTrainConfig` field)."""
    return train_cam(CamTrainConfig(cityscapes_root=root, split=split, out=out, **settings), log=log)
