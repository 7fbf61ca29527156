"""DynaSeg segments per image (unsupervised, one small network trained on each image).

Writes ``<out>/<relative path>.png`` (uint16 segment ids 0..q-1) and ``.json`` (q,
silhouette k, steps, seconds) per image, ``dynaseg_run.json`` (all images) and a
``manifest.json``. ``--variant scf`` trains on pixels (w = mu / q); ``--variant fsf`` on
features of the feature stage (w = q / mu; ``--backbone builtin`` or ``dinov2_*`` with
``--weights``, CAUSE with ``--head cause --head-weights``). Every image gets at least the
silhouette k (3..26) segments. Reads no labels.
"""

from __future__ import annotations

import argparse
import sys

from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.stages.refine import dynaseg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    add_option(src, "--images", help="folder of images (jpg/jpeg/png/bmp, searched recursively)")
    add_option(src, "--cityscapes-root", help="data set root in the Cityscapes layout (with --split)")
    parser.add_argument("--split", default="val", help="Cityscapes split (default: val)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--variant", choices=dynaseg.VARIANTS, default="scf",
                        help="scf: network on pixels, w = mu/q (default); fsf: on features, w = q/mu")
    parser.add_argument("--backbone", default="builtin",
                        help="fsf: feature backbone (builtin, dinov2_vits14, dinov2_vitb14, dinov2_vitl14)")
    parser.add_argument("--weights", help="fsf: local DINOv2 checkpoint")
    parser.add_argument("--head", choices=("cause",), help="fsf: CAUSE-TR head on the DINOv2 tokens")
    add_option(parser, "--head-weights", help="fsf: CAUSE segment_tr.pth")
    parser.add_argument("--steps", type=int, default=dynaseg.STEPS, help=f"T, training steps per image (default {dynaseg.STEPS})")
    parser.add_argument("--channels", type=int, default=dynaseg.CHANNELS, help=f"p (default {dynaseg.CHANNELS})")
    add_option(parser, "--n-blocks", type=int, default=dynaseg.N_BLOCKS, help=f"M conv blocks (default {dynaseg.N_BLOCKS})")
    add_option(parser, "--max-labels", type=int, default=dynaseg.MAX_LABELS,
               help=f"output channels = most segments (default {dynaseg.MAX_LABELS})")
    parser.add_argument("--mu", type=float, help="mu of the dynamic weight (default: scf 50, fsf 15)")
    parser.add_argument("--lr", type=float, default=dynaseg.LR, help=f"SGD learning rate (default {dynaseg.LR})")
    parser.add_argument("--continuity", choices=dynaseg.CONTINUITY_MODES, default="gradient",
                        help="gradient (the paper's loss, default) or detached (the reference code: no gradient)")
    add_option(parser, "--k-range", nargs=2, type=int, default=list(dynaseg.K_RANGE), metavar=("LO", "HI"),
               help="silhouette phase k range (default 3 26)")
    add_option(parser, "--silhouette-sample", type=int, default=dynaseg.SILHOUETTE_SAMPLE,
               help=f"pixels scored by the silhouette (default {dynaseg.SILHOUETTE_SAMPLE})")
    add_option(parser, "--work-long-side", type=int, default=dynaseg.WORK_LONG_SIDE,
               help=f"the network trains at this long side (default {dynaseg.WORK_LONG_SIDE})")
    parser.add_argument("--seed", type=int, default=dynaseg.SEED, help="run seed (per image: seed + image name)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per image (default 1)")
    add_runner_arguments(parser, workers=1)


def config_from_args(args: argparse.Namespace) -> dynaseg.DynaSegConfig:
    lo, hi = dynaseg.silhouette_range(args.k_range)
    params = dynaseg.DynaSegParams(
        variant=args.variant, steps=args.steps, n_blocks=args.n_blocks, channels=args.channels,
        max_labels=args.max_labels, mu=args.mu, lr=args.lr, continuity=args.continuity, k_min=lo, k_max=hi,
        silhouette_sample=args.silhouette_sample, work_long_side=args.work_long_side, seed=args.seed,
        threads=args.threads)
    return dynaseg.DynaSegConfig(
        out_dir=args.out, images_dir=args.images, cityscapes_root=args.cityscapes_root, split=args.split,
        params=params, backbone=args.backbone, weights=args.weights, head=args.head, head_weights=args.head_weights)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    result = dynaseg.generate_dynaseg_segments(config, runner_options(args))
    print(f"generate-dynaseg-segments: {args.out}: {result['summary']}; {result['n_images']} images, "
          f"mean {result['mean_seconds'] or 0:.2f} s/image", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.generate_dynaseg_segments"))
