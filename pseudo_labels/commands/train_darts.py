"""Train the DARTS RGB-thermal fusion head on frozen features (no labels read).

Reads the per-modality features of ``extract-rgbt-features`` for one split, trains the dual-modal
ViT block + linear fusion with intra-modal (RGB-RGB, T-T) and inter-modal (RGB-T) STEGO-style
correlation losses (KNN positives, random negatives, shifts), and writes ``<out>/darts_head.pt``,
``darts_config.json``, ``losses.json`` (the loss log) and a manifest. Defaults and the choices the
paper leaves open: :mod:`pseudo_labels.stages.rgbt.darts`.
"""

from __future__ import annotations

import argparse
import json

from pseudo_labels.core.arguments import add_option
from pseudo_labels.commands import module_main
from pseudo_labels.datasets.rgbt import RGBT_MODULES
from pseudo_labels.stages.rgbt.darts import KNN_MODALITIES, DartsLossConfig, DartsTrainConfig, train_darts

_LOSS_FLAGS = {  # flag -> (field, help)
    "--w-rgb": ("w_rgb", "weight of the intra-modal RGB-RGB loss"),
    "--w-thermal": ("w_thermal", "weight of the intra-modal thermal-thermal loss"),
    "--w-cross": ("w_cross", "weight of the inter-modal RGB-thermal loss"),
    "--pos-intra-weight": ("pos_intra_weight", "STEGO weight of image-with-itself pairs"),
    "--pos-inter-weight": ("pos_inter_weight", "STEGO weight of KNN-positive pairs"),
    "--neg-inter-weight": ("neg_inter_weight", "STEGO weight of random-negative pairs"),
    "--pos-intra-shift": ("pos_intra_shift", "STEGO shift of image-with-itself pairs"),
    "--pos-inter-shift": ("pos_inter_shift", "STEGO shift of KNN-positive pairs"),
    "--neg-inter-shift": ("neg_inter_shift", "STEGO shift of random-negative pairs"),
    "--feature-samples": ("feature_samples", "patches sampled per image and side (squared)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--data-root", required=True, help="data-set root (MFNet or PST900 layout)")
    parser.add_argument("--dataset", default="mfnet", choices=sorted(RGBT_MODULES), help="layout (default mfnet)")
    parser.add_argument("--split", default="train", help="training split (default train)")
    parser.add_argument("--features", required=True, help="features root written by extract-rgbt-features")
    parser.add_argument("--out", required=True, help="run folder (checkpoint, config, loss log, manifest)")
    d = DartsTrainConfig("", "", "")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"optimiser steps (default {d.steps})")
    add_option(parser, "--batch-size", type=int, default=d.batch_size, help=f"images per step (default {d.batch_size})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr}, STEGO)")
    parser.add_argument("--knn", type=int, default=d.knn, help=f"nearest neighbours for positives (default {d.knn})")
    add_option(parser, "--knn-modality", default=d.knn_modality, choices=KNN_MODALITIES,
               help="features the KNN positives are found with (default both)")
    parser.add_argument("--width", type=int, default=d.width, help=f"token width of the block (default {d.width})")
    parser.add_argument("--heads", type=int, default=d.heads, help=f"attention heads (default {d.heads})")
    parser.add_argument("--crop", type=int, default=d.crop,
                        help="train on random CROP x CROP windows of the patch grid (default 0: whole grid)")
    add_option(parser, "--code-dim", type=int, default=d.code_dim, help=f"fused code size (default {d.code_dim})")
    lc = DartsLossConfig()
    for flag, (name, text) in _LOSS_FLAGS.items():
        kind = int if name == "feature_samples" else float
        add_option(parser, flag, type=kind, default=getattr(lc, name), help=f"{text} (default {getattr(lc, name)})")
    add_option(parser, "--rgb-reliability", action="store_true",
               help="weight the RGB and RGB-T targets per image by how well RGB agrees with thermal")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: the cores not busy)")
    add_option(parser, "--log-every", type=int, default=d.log_every, help="steps between loss-log rows")
    add_option(parser, "--no-progress", action="store_true", help="no progress bar")


def config_of(args: argparse.Namespace) -> DartsTrainConfig:
    loss = DartsLossConfig(**{name: getattr(args, flag[2:].replace("-", "_")) for flag, (name, _) in _LOSS_FLAGS.items()},
                           rgb_reliability=args.rgb_reliability)
    return DartsTrainConfig(
        data_root=args.data_root, features=args.features, out=args.out, dataset=args.dataset, split=args.split,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, knn=args.knn, knn_modality=args.knn_modality,
        seed=args.seed, device=args.device, width=args.width, heads=args.heads, code_dim=args.code_dim,
        threads=args.threads, crop=args.crop, loss=loss, log_every=args.log_every, progress=not args.no_progress)


def run(args: argparse.Namespace) -> int:
    summary = train_darts(config_of(args))
    print(f"train-darts: {summary['images']} images, {summary['steps']} steps in {summary['seconds']:.1f} s "
          f"({summary['seconds_per_step']:.3f} s/step), final loss {summary['final_loss']:.4f} -> {args.out}")
    print("uses ground truth: no")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.train_darts"))
