"""Inputs of the CAM stages: image tags, depth maps (and their DEAL edges), cached backbone features.

Shared by :mod:`pseudo_labels.stages.weak.training` and :mod:`pseudo_labels.stages.weak.pseudolabels`.

Depth: ``depth_subdir`` names a folder of ``.npy`` maps under the dataset root (paired with the
images by stem, any ``<split>/<city>/`` layout), or is ``"disparity"``: metric depth computed
from each image's Cityscapes disparity PNG and camera JSON
(:func:`pseudo_labels.stages.instance.depth.depth_from_disparity`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.io import read_image_rgb, read_manifest, read_png, write_manifest
from pseudo_labels.datasets.cityscapes import (ImageEntry, camera_path, disparity_path, gt_path, gt_train_ids_file,
                                           read_train_ids_file)
from pseudo_labels.stages.instance import depth as depth_stage
from pseudo_labels.stages.semantic.features import feature_path, load_features, save_features
from pseudo_labels.stages.weak.tags import read_tags_file, tags_for_images, tags_from_label_map

DEPTH_TRANSFORMS = ("none", "log", "inverse")
DISPARITY = "disparity"  # depth_subdir value: depth from the disparity PNG + camera JSON of each image


# --------------------------------------------------------------------------- tags
def load_tags(root: str | os.PathLike, entries: Sequence[ImageEntry], *, tags_file=None, tags_from_gt: bool = False,
              label_space: str = defaults.CAM_LABEL_SPACE,
              min_pixels: int = defaults.CAM_TAGS_MIN_PIXELS) -> np.ndarray:
    """(N, C) float32 multi-hot tags of ``entries`` from a tags file or from gtFine labelTrainIds.

    With ``tags_from_gt`` the GT file is read as Cityscapes trainIds (``cityscapes``) or as
    VOC ids (``voc``: 0 background, 1..20, 255 ignore); a class is a tag with at least
    ``min_pixels`` pixels. Errors name the image.
    """
    if (tags_file is None) == (not tags_from_gt):
        raise PseudoLabelsError("give exactly one of --tags FILE or --tags-from-gt")
    if tags_file is not None:
        return tags_for_images([e.stem for e in entries], read_tags_file(tags_file), label_space)
    out = []
    for e in entries:
        p = gt_train_ids_file(root, e)
        if p is None:
            raise PseudoLabelsError(f"image {e.stem}: --tags-from-gt needs {gt_path(root, e, 'labelIds')} "
                                    "(ground truth not found; it is in gtFine_trainvaltest.zip)")
        out.append(tags_from_label_map(read_train_ids_file(p), label_space, min_pixels, image=e.stem))
    return np.stack(out).astype(np.float32)


# --------------------------------------------------------------------------- depth
def depth_index(root: str | os.PathLike, depth_subdir: str | None) -> dict[str, Path] | None:
    """stem -> ``.npy`` path of ``<root>/<depth_subdir>`` ({} when the folder is absent); None for no
    depth or ``disparity``."""
    if not depth_subdir or depth_subdir == DISPARITY:
        return None
    folder = Path(root) / depth_subdir
    return depth_stage.index_depth_folder(folder) if folder.is_dir() else {}


def load_depth(root: str | os.PathLike, entry: ImageEntry, depth_subdir: str,
               index: dict | None = None) -> np.ndarray:
    """(H, W) float32 depth of one image from ``<root>/<depth_subdir>`` (.npy) or ``disparity``.

    ``index``: optional stem -> path cache of the .npy folder (:func:`depth_index`). Missing depth
    raises :class:`PseudoLabelsError` naming the image.
    """
    if depth_subdir == DISPARITY:
        dp, cp = disparity_path(root, entry), camera_path(root, entry)
        for p in (dp, cp):
            if not Path(p).exists():
                raise PseudoLabelsError(f"image {entry.stem}: no depth ({p} not found)")
        return depth_stage.depth_from_disparity(read_png(dp), depth_stage.read_camera(cp))
    if index is None:
        index = depth_index(root, depth_subdir)
    if entry.stem not in index:
        raise PseudoLabelsError(
            f"image {entry.stem}: no depth map under {Path(root) / depth_subdir} "
            "(expected <split>/<city>/<stem>.npy; or use --depth-subdir disparity)")
    return depth_stage.read_depth_npy(index[entry.stem])


def transform_depth(depth: np.ndarray, mode: str = "none") -> np.ndarray:
    """Depth (H, W) -> the map whose edges DEAL aligns to: as is, log(depth), or 1/depth (depth
    clipped at 1e-3 first)."""
    d = np.asarray(depth, np.float32)
    if mode == "none":
        return d
    d = np.maximum(d, 1e-3)
    if mode == "log":
        return np.log(d)
    if mode == "inverse":
        return 1.0 / d
    raise PseudoLabelsError(f"--depth-transform {mode!r}: choose from {', '.join(DEPTH_TRANSFORMS)}")


def depth_edges_for(root: str | os.PathLike, entries: Sequence[ImageEntry], depth_subdir: str,
                    grid: tuple[int, int], mu: float = defaults.DEAL_MU, transform: str = "none") -> np.ndarray:
    """(N, 1, h, w) float32 sharpened depth edge activations (DEAL's d') at the feature grid ``grid``."""
    import torch

    from pseudo_labels.stages.weak.deal import depth_edge_activations

    index = depth_index(root, depth_subdir)
    out = []
    for e in entries:
        d = transform_depth(load_depth(root, e, depth_subdir, index), transform)
        t = torch.from_numpy(np.ascontiguousarray(d))[None]
        out.append(depth_edge_activations(t, grid, mu)[0].numpy())
    return np.stack(out).astype(np.float32)


# --------------------------------------------------------------------------- cached backbone features
def ensure_cached_features(entries: Sequence[ImageEntry], extractor, cache_dir: str | os.PathLike,
                           log: Callable[[str], None] | None = None) -> list[Path]:
    """Extract the backbone features of the ``entries`` missing from ``cache_dir``; return every entry's path.

    Files: ``<cache_dir>/<split>/<city>/<stem>.npy`` (float16). The cache folder's manifest
    records the extractor; a different extractor is an error. Cached files are not read.
    """
    cache_dir = Path(cache_dir)
    desc = {k: (list(v) if isinstance(v, tuple) else v) for k, v in extractor.describe().items()}
    man = read_manifest(cache_dir)
    if man is not None and man.get("parameters") != desc:
        raise PseudoLabelsError(
            f"{cache_dir}: feature cache made with another backbone {man.get('parameters')} (use another --out)")
    paths = [feature_path(cache_dir, e) for e in entries]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    if todo:
        if log:
            log(f"extracting {extractor.name} features of {len(todo)} images")
        bs = max(1, extractor.batch_size)
        for j in range(0, len(todo), bs):
            idx = todo[j: j + bs]
            out = extractor.extract([read_image_rgb(entries[i].image_path) for i in idx])
            for i, f in zip(idx, out):
                save_features(paths[i], f)
        write_manifest(cache_dir, "cam-feature-cache", desc, uses_ground_truth=False,
                       counts={"n_images": len(list(cache_dir.rglob("*.npy")))})
    return paths


def cached_features(entries: Sequence[ImageEntry], extractor, cache_dir: str | os.PathLike,
                    log: Callable[[str], None] | None = None) -> np.ndarray:
    """(N, D, h, w) float16 backbone features, extracted once per image and cached as ``.npy``
    (:func:`ensure_cached_features`); all images must give one feature grid size."""
    feats = [load_features(p).astype(np.float16) for p in ensure_cached_features(entries, extractor, cache_dir, log)]
    shapes = {f.shape for f in feats}
    if len(shapes) != 1:
        raise PseudoLabelsError(f"images give feature maps of different sizes {sorted(shapes)}; "
                                "use images of one size (or one --input-size)")
    return np.stack(feats)
