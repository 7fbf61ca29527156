"""Train a CAM tag classifier on frozen backbone features, optionally with DEAL (depth edge alignment).

Tags come from ``--tags FILE`` (.json / .csv) or ``--tags-from-gt`` (classes with at least
``--tags-min-pixels`` pixels in gtFine labelTrainIds; recorded as ground-truth use).
Backbone features are extracted once per image and cached (float16) under
``RUN_DIR/features/<split>/<city>/<stem>.npy``; the checkpoint ``RUN_DIR/checkpoint.pt``
is written after every epoch and a rerun with the same settings resumes from it.

Depth (for DEAL): ``--depth-subdir D`` reads ``.npy`` maps under ``<root>/D`` (paired by
stem); ``--depth-subdir disparity`` computes metric depth from the Cityscapes disparity PNG
and camera JSON of each image. The work is :func:`pseudo_labels.stages.weak.training.train_cam`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option
from pseudo_labels.commands import module_main
from pseudo_labels.stages.weak.inputs import DEPTH_TRANSFORMS
from pseudo_labels.stages.weak.training import CamTrainConfig, train_cam


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

    config = CamTrainConfig(
        cityscapes_root=args.cityscapes_root, out=args.out, split=args.split, tags_file=args.tags,
        tags_from_gt=args.tags_from_gt, label_space=args.label_space, tags_min_pixels=args.tags_min_pixels,
        backbone=args.backbone, weights=args.weights, input_size=args.input_size, depth_subdir=args.depth_subdir,
        depth_transform=args.depth_transform, deal_weight=args.deal_weight, epochs=args.epochs, seed=args.seed,
        lr=args.lr, batch_size=args.batch_size, hidden=args.hidden, pooling=args.pooling, device=args.device,
        restart=args.restart)
    res = train_cam(config, log=log)
    last = res["history"][-1] if res["history"] else {}
    print(f"trained {res['epochs']} epochs on {res['n_images']} images in {res['seconds']:.1f}s; "
          f"final loss {last.get('loss', float('nan')):.4f}; checkpoint {Path(res['run_dir']) / 'checkpoint.pt'}")
    if res["uses_ground_truth"]:
        print(f"uses ground truth: {res['uses_ground_truth']['tags']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.train_cam"))
