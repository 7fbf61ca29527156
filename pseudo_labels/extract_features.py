"""Extract dense self-supervised features for every image of a Cityscapes split.

Writes ``<out>/<split>/<city>/<stem>.npy`` (float16, (D, h, w), L2-normalised over D) and a
manifest. Images whose file exists are skipped, so a killed run resumes. Backbones:
``builtin`` is a deterministic hand-made feature extractor (colour / texture statistics
per 14x14 patch with a little spatial context; not a learned model) for demos and tests;
``dinov2_vits14|vitb14|vitl14`` load a local DINOv2 checkpoint (official key layout, via
timm); ``--head cause`` adds the CAUSE-TR Segment_TR head (90-d, dense sliding windows).
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import defaults
from .cli import add_option, parse_shard
from .errors import PseudoLabelsError

STAGE = "extract-features"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .features import BACKBONES, HEADS

    add_option(parser, "--cityscapes-root", required=True, help="dataset root (Cityscapes layout)")
    parser.add_argument("--split", default="val", help="split folder under leftImg8bit (default: val)")
    parser.add_argument("--backbone", default="builtin", choices=BACKBONES,
                        help="builtin: deterministic hand-made colour/texture features (no weights, for demos "
                             "and tests; not a learned model); dinov2_*: DINOv2 ViT/14 from --weights")
    parser.add_argument("--weights", help="local DINOv2 checkpoint (.pth, official facebookresearch/dinov2 keys)")
    parser.add_argument("--head", choices=HEADS, help="cause: CAUSE-TR Segment_TR head (90-d, dense output)")
    add_option(parser, "--head-weights", help="CAUSE segment_tr.pth (with --head cause)")
    parser.add_argument("--codebook", help="CAUSE modularity codebook modular.npy (default: found next to "
                                           "--head-weights or in CAUSE's folder layout)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp16 autocast); default cpu")
    add_option(parser, "--batch-size", type=int, default=defaults.BATCH_SIZE, help="images per forward pass")
    add_option(parser, "--input-size", type=int, nargs="+", default=list(defaults.FEATURE_INPUT_SIZE),
               metavar="N", help="network input H W (multiples of 14; default 322 644), or one value: "
                                 "short side, both sides floored to a multiple of 14")
    parser.add_argument("--shard", help="process shard i/n of the split (0-based)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    parser.add_argument("--overwrite", action="store_true", help="recompute images already done")
    parser.add_argument("--out", required=True, help="output folder")


def _input_size(values):
    if len(values) == 1:
        return int(values[0])
    if len(values) == 2:
        return (int(values[0]), int(values[1]))
    raise PseudoLabelsError(f"--input-size {values}: give H W or a single short side")


def parameters_of(args: argparse.Namespace) -> dict:
    """The parameters that determine the output values (the manifest's config hash)."""
    size = _input_size(args.input_size)
    return {
        "split": args.split,
        "backbone": args.backbone,
        "weights": str(Path(args.weights).resolve()) if args.weights else None,
        "head": args.head,
        "head_weights": str(Path(args.head_weights).resolve()) if args.head_weights else None,
        "codebook": str(Path(args.codebook).resolve()) if args.codebook else None,
        "input_size": list(size) if isinstance(size, tuple) else size,
    }


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .cityscapes import list_images, select_shard
    from .features import build_extractor, feature_path, save_features
    from .io import fingerprint_files, prepare_output_dir, read_image_rgb, write_manifest

    out = Path(args.out)
    params = parameters_of(args)
    entries = list_images(args.cityscapes_root, args.split)
    entries = select_shard(entries, parse_shard(args.shard))
    if args.limit and args.limit > 0:
        entries = entries[: args.limit]
    reuse = prepare_output_dir(out, STAGE, params, overwrite=args.overwrite)
    todo = [e for e in entries if not (reuse and feature_path(out, e).exists())]
    skipped = len(entries) - len(todo)

    extractor = build_extractor(
        args.backbone, args.weights, head=args.head, device=args.device, input_size=_input_size(args.input_size),
        head_weights=args.head_weights, codebook=args.codebook, batch_size=args.batch_size,
    )
    t0 = time.time()
    grid = None
    bs = max(1, args.batch_size)
    with tqdm(total=len(todo), desc="features", unit="img", file=sys.stderr, disable=not todo, leave=False) as bar:
        for i in range(0, len(todo), bs):
            batch = todo[i:i + bs]
            images = [read_image_rgb(e.image_path) for e in batch]
            for e, f in zip(batch, extractor.extract(images, batch_size=bs)):
                save_features(feature_path(out, e), f)
                grid = list(f.shape[1:])
            bar.update(len(batch))
    seconds = time.time() - t0
    if grid is None and entries:
        grid = list(extractor.output_grid(read_image_rgb(entries[0].image_path).shape[:2]))
    write_manifest(
        out, STAGE, params, uses_ground_truth=False,
        inputs={"cityscapes_root": str(Path(args.cityscapes_root).resolve()),
                "images": fingerprint_files(e.image_path for e in entries)},
        counts={"images": len(entries), "computed": len(todo), "skipped": skipped},
        extra={"features": {**extractor.describe(), "grid": grid, "dtype": "float16",
                            "layout": "<split>/<city>/<stem>.npy, (D, h, w)"},
               "device": extractor.device, "batch_size": bs, "shard": args.shard,
               "seconds": round(seconds, 3)},
    )
    rate = f", {len(todo) / seconds:.2f} img/s" if todo and seconds > 0 else ""
    print(f"extract-features: {len(todo)} computed, {skipped} skipped (already done){rate} -> {out}")
    return 0


if __name__ == "__main__":
    from .cli import module_main

    raise SystemExit(module_main("pseudo_labels.extract_features"))
