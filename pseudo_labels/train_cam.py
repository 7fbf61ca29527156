"""Train a CAM tag classifier on frozen backbone features, optionally with DEAL (depth edge alignment).

Tags come from ``--tags FILE`` (.json / .csv) or ``--tags-from-gt`` (classes with at least
``--tags-min-pixels`` pixels in gtFine labelTrainIds; recorded as ground-truth use).
Backbone features are extracted once per image and cached (float16) under
``RUN_DIR/features/<split>/<city>/<stem>.npy``; the checkpoint ``RUN_DIR/checkpoint.pt``
is written after every epoch and a rerun with the same settings resumes from it.

Depth (for DEAL): ``--depth-subdir D`` reads ``.npy`` maps under ``<root>/D`` (paired by
stem); ``--depth-subdir disparity`` computes metric depth from the Cityscapes disparity PNG
and camera JSON of each image (:func:`pseudo_labels.stages.depth.depth_from_disparity`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option, module_main
from pseudo_labels.core.errors import PseudoLabelsError

DEPTH_TRANSFORMS = ("none", "log", "inverse")


# --------------------------------------------------------------------------- inputs (shared with generate-cam-pseudolabels)
def load_tags(root, entries, *, tags_file=None, tags_from_gt: bool = False,
              label_space: str = defaults.CAM_LABEL_SPACE,
              min_pixels: int = defaults.CAM_TAGS_MIN_PIXELS) -> np.ndarray:
    """(N, C) float32 multi-hot tags of ``entries`` from a tags file or from gtFine labelTrainIds.

    With ``tags_from_gt`` the GT file is read as Cityscapes trainIds (``cityscapes``) or as
    VOC ids (``voc``: 0 background, 1..20, 255 ignore). Errors name the image.
    """
    from pseudo_labels.stages.weak.tags import read_tags_file, tags_for_images, tags_from_label_map

    if (tags_file is None) == (not tags_from_gt):
        raise PseudoLabelsError("give exactly one of --tags FILE or --tags-from-gt")
    if tags_file is not None:
        return tags_for_images([e.stem for e in entries], read_tags_file(tags_file), label_space)
    from pseudo_labels.datasets.cityscapes import gt_path
    from pseudo_labels.core.io import read_png

    out = []
    for e in entries:
        p = gt_path(root, e, "labelTrainIds")
        if not p.exists():
            raise PseudoLabelsError(f"image {e.stem}: --tags-from-gt needs {p} (ground truth not found)")
        out.append(tags_from_label_map(read_png(p), label_space, min_pixels, image=e.stem))
    return np.stack(out).astype(np.float32)


def load_depth(root, entry, depth_subdir: str, index: dict | None = None) -> np.ndarray:
    """(H, W) float32 depth of one image from ``<root>/<depth_subdir>`` (.npy) or ``disparity``.

    ``index``: optional stem -> path cache of the .npy folder. Missing depth raises
    :class:`PseudoLabelsError` naming the image.
    """
    from pseudo_labels.stages import depth as depth_mod
    from pseudo_labels.datasets.cityscapes import camera_path, disparity_path

    if depth_subdir == "disparity":
        dp, cp = disparity_path(root, entry), camera_path(root, entry)
        for p in (dp, cp):
            if not Path(p).exists():
                raise PseudoLabelsError(f"image {entry.stem}: no depth ({p} not found)")
        from pseudo_labels.core.io import read_png

        return depth_mod.depth_from_disparity(read_png(dp), depth_mod.read_camera(cp))
    if index is None:
        folder = Path(root) / depth_subdir
        index = depth_mod.index_depth_folder(folder) if folder.is_dir() else {}
    if entry.stem not in index:
        raise PseudoLabelsError(
            f"image {entry.stem}: no depth map under {Path(root) / depth_subdir} "
            "(expected <split>/<city>/<stem>.npy; or use --depth-subdir disparity)")
    return depth_mod.read_depth_npy(index[entry.stem])


def transform_depth(depth: np.ndarray, mode: str = "none") -> np.ndarray:
    """Depth (H, W) -> the map whose edges DEAL aligns to: as is, log(depth), or 1/depth."""
    d = np.asarray(depth, np.float32)
    if mode == "none":
        return d
    d = np.maximum(d, 1e-3)
    if mode == "log":
        return np.log(d)
    if mode == "inverse":
        return 1.0 / d
    raise PseudoLabelsError(f"--depth-transform {mode!r}: choose from {', '.join(DEPTH_TRANSFORMS)}")


def depth_edges_for(root, entries, depth_subdir: str, grid: tuple[int, int], mu: float = defaults.DEAL_MU,
                    transform: str = "none") -> np.ndarray:
    """(N, 1, h, w) float32 sharpened depth edge activations (DEAL's d') at the feature grid."""
    import torch

    from pseudo_labels.stages import depth as depth_mod
    from pseudo_labels.stages.weak.deal import depth_edge_activations

    index = None
    if depth_subdir != "disparity":
        folder = Path(root) / depth_subdir
        index = depth_mod.index_depth_folder(folder) if folder.is_dir() else {}
    out = []
    for e in entries:
        d = transform_depth(load_depth(root, e, depth_subdir, index), transform)
        t = torch.from_numpy(np.ascontiguousarray(d))[None]
        out.append(depth_edge_activations(t, grid, mu)[0].numpy())
    return np.stack(out).astype(np.float32)


def ensure_cached_features(entries, extractor, cache_dir, log: Callable[[str], None] | None = None) -> list[Path]:
    """Extract the backbone features of the ``entries`` missing from ``cache_dir``; return every entry's path.

    Files: ``<cache_dir>/<split>/<city>/<stem>.npy`` (float16). The cache folder's manifest
    records the extractor; a different extractor is an error. Cached files are not read.
    """
    from pseudo_labels.stages.features import feature_path, save_features
    from pseudo_labels.core.io import read_manifest, write_manifest

    cache_dir = Path(cache_dir)
    desc = {k: (list(v) if isinstance(v, tuple) else v) for k, v in extractor.describe().items()}
    man = read_manifest(cache_dir)
    if man is not None and man.get("parameters") != desc:
        raise PseudoLabelsError(
            f"{cache_dir}: feature cache made with another backbone {man.get('parameters')} (use another --out)")
    paths = [feature_path(cache_dir, e) for e in entries]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    if todo:
        from pseudo_labels.core.io import read_image_rgb

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


def cached_features(entries, extractor, cache_dir, log: Callable[[str], None] | None = None) -> np.ndarray:
    """(N, D, h, w) float16 backbone features, extracted once per image and cached as ``.npy``
    (:func:`ensure_cached_features`); all images must give one feature grid size."""
    from pseudo_labels.stages.features import load_features

    feats = [load_features(p).astype(np.float16) for p in ensure_cached_features(entries, extractor, cache_dir, log)]
    shapes = {f.shape for f in feats}
    if len(shapes) != 1:
        raise PseudoLabelsError(f"images give feature maps of different sizes {sorted(shapes)}; "
                                "use images of one size (or one --input-size)")
    return np.stack(feats)


# --------------------------------------------------------------------------- library entry point
def train_cam_run(
    root,
    split: str,
    out,
    *,
    tags_file=None,
    tags_from_gt: bool = False,
    label_space: str = defaults.CAM_LABEL_SPACE,
    tags_min_pixels: int = defaults.CAM_TAGS_MIN_PIXELS,
    backbone: str = "builtin",
    weights=None,
    input_size: Sequence[int] = defaults.FEATURE_INPUT_SIZE,
    depth_subdir: str | None = None,
    depth_transform: str = "none",
    deal_weight: float = defaults.CAM_DEAL_WEIGHT,
    epochs: int = defaults.CAM_EPOCHS,
    seed: int = defaults.SEED,
    lr: float = defaults.CAM_LR,
    batch_size: int = defaults.CAM_BATCH_SIZE,
    hidden: int = defaults.CAM_HIDDEN,
    pooling: str = defaults.CAM_POOLING,
    device: str = "cpu",
    restart: bool = False,
    feature_cache=None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train (or resume) a CAM head; writes ``out/checkpoint.pt`` and ``out/manifest.json``.

    Returns ``{"run_dir", "epochs", "history", "n_images", "seconds"}``.
    ``feature_cache``: folder of cached features (default ``out/features``; share one
    between runs on the same images and backbone).
    """
    from pseudo_labels.datasets.cityscapes import list_images
    from pseudo_labels.stages.features import build_extractor
    from pseudo_labels.core.io import fingerprint_files, write_manifest
    from pseudo_labels.stages.weak.cam import CHECKPOINT_NAME, CamTrainConfig, train_cam_head
    from pseudo_labels.stages.weak.tags import class_names

    t0 = time.time()
    out = Path(out)
    if deal_weight < 0:
        raise PseudoLabelsError("--deal-weight must be >= 0")
    if deal_weight > 0 and not depth_subdir:
        raise PseudoLabelsError("--deal-weight > 0 needs depth: give --depth-subdir D (or --depth-subdir disparity)")
    entries = list_images(root, split)
    names = class_names(label_space)
    tags = load_tags(root, entries, tags_file=tags_file, tags_from_gt=tags_from_gt,
                     label_space=label_space, min_pixels=tags_min_pixels)
    if restart and (out / CHECKPOINT_NAME).exists():
        (out / CHECKPOINT_NAME).unlink()
    extractor = build_extractor(backbone, weights=weights, device=device, input_size=tuple(input_size))
    feats = cached_features(entries, extractor, feature_cache or out / "features", log)
    grid = tuple(feats.shape[-2:])
    edges = None
    if deal_weight > 0:
        edges = depth_edges_for(root, entries, depth_subdir, grid, transform=depth_transform)
    config = CamTrainConfig(num_classes=len(names), in_dim=int(feats.shape[1]), epochs=int(epochs), lr=float(lr),
                            batch_size=int(batch_size), hidden=int(hidden), pooling=pooling, deal_weight=float(deal_weight),
                            seed=int(seed))
    meta = {"backbone": backbone, "weights": str(weights) if weights else None, "input_size": list(input_size),
            "label_space": label_space, "class_names": list(names), "split": split,
            "tags": "ground truth" if tags_from_gt else str(tags_file), "tags_min_pixels": tags_min_pixels,
            "depth_subdir": depth_subdir, "depth_transform": depth_transform, "feature_grid": list(grid),
            "stems": [e.stem for e in entries]}
    head, history = train_cam_head(feats, tags, config, depth_edges=edges, run_dir=out, resume=True,
                                   device=device, meta=meta, log=log)
    params = {"cityscapes_root": str(root), **meta, **config.to_dict()}
    params.pop("stems")
    gt_use = {"tags": f"image tags from gtFine labelTrainIds (classes with >= {tags_min_pixels} px)"} \
        if tags_from_gt else False
    write_manifest(out, "train-cam", params, uses_ground_truth=gt_use,
                   inputs={"images": fingerprint_files(e.image_path for e in entries),
                           "tags_file": str(tags_file) if tags_file else None},
                   counts={"n_images": len(entries), "epochs": len(history),
                           "final_loss": history[-1]["loss"] if history else None})
    return {"run_dir": str(out), "epochs": len(history), "history": history, "n_images": len(entries),
            "seconds": time.time() - t0}


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--cityscapes-root", required=True, help="dataset root in the Cityscapes layout")
    add_option(parser, "--split", default="train", help="split to train on (default: train)")
    src = parser.add_mutually_exclusive_group(required=True)
    add_option(src, "--tags", metavar="FILE", help="image tags: .json {image: [classes]} or .csv image,classes (; or |)")
    add_option(src, "--tags-from-gt", action="store_true",
               help="derive tags from gtFine labelTrainIds (uses ground truth; recorded in the manifest)")
    add_option(parser, "--tags-min-pixels", type=int, default=defaults.CAM_TAGS_MIN_PIXELS,
               help=f"--tags-from-gt: minimum pixels of a class to be a tag (default {defaults.CAM_TAGS_MIN_PIXELS})")
    add_option(parser, "--label-space", choices=("cityscapes", "voc"), default=defaults.CAM_LABEL_SPACE,
               help="class names of the tags: Cityscapes train classes or PASCAL VOC")
    add_option(parser, "--backbone", default="builtin", help="frozen feature backbone (builtin, dinov2_vits14, ...)")
    add_option(parser, "--weights", default=None, help="local backbone checkpoint (DINOv2)")
    add_option(parser, "--input-size", type=int, nargs=2, default=list(defaults.FEATURE_INPUT_SIZE),
               metavar=("H", "W"), help="backbone input size (multiples of 14)")
    add_option(parser, "--depth-subdir", default=None,
               help="depth for DEAL: folder of .npy maps under the root, or 'disparity' (from disparity + camera)")
    add_option(parser, "--depth-transform", choices=DEPTH_TRANSFORMS, default="none",
               help="map whose edges DEAL uses: depth as is (default), log depth, or inverse depth")
    add_option(parser, "--deal-weight", type=float, default=defaults.CAM_DEAL_WEIGHT,
               help="weight of the depth edge alignment loss (0: off)")
    add_option(parser, "--epochs", type=int, default=defaults.CAM_EPOCHS)
    add_option(parser, "--seed", type=int, default=defaults.SEED)
    add_option(parser, "--lr", type=float, default=defaults.CAM_LR)
    add_option(parser, "--batch-size", type=int, default=defaults.CAM_BATCH_SIZE)
    add_option(parser, "--hidden", type=int, default=defaults.CAM_HIDDEN,
               help="0: linear 1x1 conv head; N: 1x1 conv (N) - ReLU - 1x1 conv")
    add_option(parser, "--pooling", choices=("gap", "lse"), default=defaults.CAM_POOLING,
               help="image logit from the class maps: global average or smooth max (log-mean-exp)")
    add_option(parser, "--device", choices=("cpu", "cuda"), default="cpu")
    add_option(parser, "--out", required=True, help="run folder (checkpoint.pt, manifest.json, feature cache)")
    add_option(parser, "--restart", action="store_true", help="discard an existing checkpoint instead of resuming")


def run(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        print(f"train-cam: {msg}", file=sys.stderr)

    res = train_cam_run(
        args.cityscapes_root, args.split, args.out, tags_file=args.tags, tags_from_gt=args.tags_from_gt,
        label_space=args.label_space, tags_min_pixels=args.tags_min_pixels, backbone=args.backbone,
        weights=args.weights, input_size=args.input_size, depth_subdir=args.depth_subdir,
        depth_transform=args.depth_transform, deal_weight=args.deal_weight, epochs=args.epochs, seed=args.seed,
        lr=args.lr, batch_size=args.batch_size, hidden=args.hidden, pooling=args.pooling, device=args.device, restart=args.restart, log=log)
    last = res["history"][-1] if res["history"] else {}
    print(f"trained {res['epochs']} epochs on {res['n_images']} images in {res['seconds']:.1f}s; "
          f"final loss {last.get('loss', float('nan')):.4f}; checkpoint {Path(res['run_dir']) / 'checkpoint.pt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.train_cam"))
