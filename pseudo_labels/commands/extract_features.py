"""Extract dense self-supervised features for every image of a Cityscapes split.

Writes ``<out>/<split>/<city>/<stem>.npy`` (float16, (D, h, w), L2-normalised over D) and a
manifest. Images whose file exists are skipped, so a killed run resumes. Backbones:
``builtin`` is a deterministic hand-made feature extractor (colour / texture statistics
per 14x14 patch with a little spatial context; not a learned model) for demos and tests;
``dinov2_vits14|vitb14|vitl14`` load a local DINOv2 checkpoint (official key layout, via
timm); ``--head cause`` adds the CAUSE-TR Segment_TR head (90-d, dense sliding windows).
Nothing is downloaded. The work is :func:`pseudo_labels.stages.semantic.features.extract_features_folder`.
"""

from __future__ import annotations

import argparse

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.stages.semantic.features import BACKBONES, HEADS, FeatureConfig, extract_features_folder, input_size_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    add_option(parser, "--batch-size", type=int, default=defaults.BATCH_SIZE,
               help="images per forward pass (one runner task per batch)")
    add_option(parser, "--input-size", type=int, nargs="+", default=list(defaults.FEATURE_INPUT_SIZE),
               metavar="N", help="network input H W (multiples of 14; default 322 644), or one value: "
                                 "short side, both sides floored to a multiple of 14")
    parser.add_argument("--limit", type=int, default=0,
                        help="only the first N images of the split (0: all; applied before --shard)")
    parser.add_argument("--out", required=True, help="output folder")
    add_runner_arguments(parser, workers=1)


def config_of(args: argparse.Namespace) -> FeatureConfig:
    """The flags as a :class:`~pseudo_labels.stages.semantic.features.FeatureConfig`."""
    return FeatureConfig(
        cityscapes_root=args.cityscapes_root, out=args.out, split=args.split, backbone=args.backbone,
        weights=args.weights, head=args.head, head_weights=args.head_weights, codebook=args.codebook,
        device=args.device, batch_size=args.batch_size, input_size=input_size_of(args.input_size), limit=args.limit)


def run(args: argparse.Namespace) -> int:
    options = runner_options(args)
    summary = extract_features_folder(config_of(args), options)
    print(summary.line())
    summary.raise_if_failed()
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.extract_features"))
