"""Train the DARTS RGB-thermal fusion head on frozen features (no labels read).

Reads the per-modality features of ``extract-rgbt-features`` for one split, trains the dual-modal
block + fusion heads with intra-modal (RGB-RGB, T-T) and inter-modal (RGB-T) STEGO-style
correlation losses (KNN positives, random negatives, shifts), and writes ``<out>/darts_head.pt``,
``darts_config.json``, ``losses.json`` (the loss log) and a manifest. ``--variant official``
(default) is the released DARTS code's loss and head layout; ``--variant ours`` our earlier
choices. What each means: :mod:`pseudo_labels.stages.rgbt.darts`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from pseudo_labels.core.arguments import add_option
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.commands import module_main
from pseudo_labels.datasets.rgbt import RGBT_MODULES
from pseudo_labels.stages.rgbt.darts import (CROSS_TARGETS, KNN_MODALITIES, LOSS_PRESETS, NORMALISATIONS, TERMS,
                                             VARIANTS, DartsTrainConfig, TermWeights, default_preset, loss_preset,
                                             train_darts)

_LOSS_FLAGS = {  # flag -> (field, type, help); None: the preset's value
    "--w-rgb": ("w_rgb", float, "multiplier of the RGB-RGB term (official 1)"),
    "--w-thermal": ("w_thermal", float, "multiplier of the thermal-thermal term (official 0.4)"),
    "--w-cross": ("w_cross", float, "multiplier of the RGB-thermal term (official 0.5)"),
    "--neg-samples": ("neg_samples", int, "negative images per anchor and term (official 5, ours 1)"),
    "--feature-samples": ("feature_samples", int, "patches sampled per image and side, squared (11)"),
    "--target-dropout": ("target_dropout", float, "2-D dropout on the frozen target features (official 0.1)"),
    "--normalisation": ("normalisation", str, f"target normalisation: {', '.join(NORMALISATIONS)} (official none)"),
    "--cross-target": ("cross_target", str, f"RGB-T target: {', '.join(CROSS_TARGETS)} (official mean-features)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--data-root", required=True, help="data-set root (MFNet or PST900 layout)")
    parser.add_argument("--dataset", default="mfnet", choices=sorted(RGBT_MODULES), help="layout (default mfnet)")
    parser.add_argument("--split", default="train", help="training split (default train)")
    parser.add_argument("--features", required=True, help="features root written by extract-rgbt-features")
    parser.add_argument("--out", required=True, help="run folder (checkpoint, config, loss log, manifest)")
    parser.add_argument("--variant", default="official", choices=VARIANTS,
                        help="official (the released DARTS code, default) or ours (our earlier choices)")
    add_option(parser, "--loss-preset", default=None, choices=LOSS_PRESETS,
               help="weight/shift blocks: a released block (mfnet, pst900, kp) or ours "
                    "(default: the data set's released block; ours with --variant ours)")
    d = DartsTrainConfig("", "", "")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"optimiser steps (default {d.steps})")
    add_option(parser, "--batch-size", type=int, default=d.batch_size, help=f"images per step (default {d.batch_size})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    parser.add_argument("--knn", type=int, default=d.knn, help=f"nearest neighbours for positives (default {d.knn})")
    add_option(parser, "--knn-modality", default=d.knn_modality, choices=KNN_MODALITIES,
               help="features the KNN positives are found with (default both)")
    parser.add_argument("--width", type=int, default=None, help="token width (official: backbone width; ours 64)")
    parser.add_argument("--heads", type=int, default=None, help="attention heads (official: <= 6 dividing; ours 2)")
    parser.add_argument("--crop", type=int, default=d.crop,
                        help="train on random CROP x CROP windows of the patch grid (default 0: whole grid)")
    add_option(parser, "--code-dim", type=int, default=None, help="fused code size (official 100, ours 64)")
    for flag, (_, kind, text) in _LOSS_FLAGS.items():
        add_option(parser, flag, type=kind, default=None, help=f"{text}; default: the preset's")
    add_option(parser, "--term-weights", nargs=7, action="append", default=[],
               metavar=("TERM", "W_INTRA", "W_INTER", "W_NEG", "S_INTRA", "S_INTER", "S_NEG"),
               help=f"replace one term's weights and shifts (TERM: {', '.join(TERMS)}); repeatable")
    add_option(parser, "--rgb-reliability", action="store_true",
               help="ours: weight the RGB and RGB-T targets per image by how well RGB agrees with thermal")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: the cores not busy)")
    add_option(parser, "--log-every", type=int, default=d.log_every, help="steps between loss-log rows")
    add_option(parser, "--no-progress", action="store_true", help="no progress bar")


def config_of(args: argparse.Namespace) -> DartsTrainConfig:
    loss = loss_preset(args.loss_preset or default_preset(args.variant, args.dataset))
    changes = {name: getattr(args, flag[2:].replace("-", "_")) for flag, (name, _, _) in _LOSS_FLAGS.items()}
    for term, *values in args.term_weights:
        if term not in TERMS:
            raise PseudoLabelsError(f"--term-weights {term}: choose {', '.join(TERMS)}")
        changes[term] = TermWeights(*(float(v) for v in values))
    loss = replace(loss, rgb_reliability=args.rgb_reliability, **{k: v for k, v in changes.items() if v is not None})
    return DartsTrainConfig(
        data_root=args.data_root, features=args.features, out=args.out, dataset=args.dataset, split=args.split,
        variant=args.variant, steps=args.steps, batch_size=args.batch_size, lr=args.lr, knn=args.knn,
        knn_modality=args.knn_modality, seed=args.seed, device=args.device, width=args.width, heads=args.heads,
        code_dim=args.code_dim, threads=args.threads, crop=args.crop, loss=loss, log_every=args.log_every,
        progress=not args.no_progress)


def run(args: argparse.Namespace) -> int:
    summary = train_darts(config_of(args))
    print(f"train-darts: {summary['images']} images, {summary['steps']} steps in {summary['seconds']:.1f} s "
          f"({summary['seconds_per_step']:.3f} s/step), final loss {summary['final_loss']:.4f} -> {args.out}")
    print("uses ground truth: no")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.train_darts"))
