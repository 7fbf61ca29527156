"""Semantic pseudo-labels of an RGB-T split from DARTS fused codes (or raw rgb / thermal / concat
features): cluster centres (``--protocol official``: DARTS's cluster probe fitted on the train
split, applied with a dense CRF; ``on-split``: k-means on the labelled split) -> cluster maps ->
majority / Hungarian / no mapping -> label PNGs, centroids, scores overall / day / night (each
mIoU labelled with its convention). The work is
:func:`pseudo_labels.stages.rgbt.darts_semantics.generate_darts_semantics`.
"""

from __future__ import annotations

import argparse

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.datasets.rgbt import RGBT_MODULES, rgbt_label_table
from pseudo_labels.stages.semantic.clustering import BACKENDS
from pseudo_labels.stages.rgbt.darts_semantics import (MIOU_CONVENTIONS, PROTOCOLS, SOURCES, DartsSemanticsConfig,
                                                       generate_darts_semantics)
from pseudo_labels.stages.semantic.mapping import METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--data-root", required=True, help="data-set root (MFNet or PST900 layout)")
    parser.add_argument("--dataset", default="mfnet", choices=sorted(RGBT_MODULES), help="layout (default mfnet)")
    parser.add_argument("--split", default="test", help="split to label (default test)")
    parser.add_argument("--run", help="train-darts run folder (needed for --source darts)")
    parser.add_argument("--features", help="extract-rgbt-features root (default: the run's)")
    parser.add_argument("--source", default="darts", choices=SOURCES,
                        help="vectors to cluster: darts fused code (default), rgb, thermal or concat features")
    parser.add_argument("--k", type=int, default=0, help="clusters (default 0: the number of classes)")
    parser.add_argument("--mapping", default="hungarian", choices=METHODS,
                        help="cluster->class: hungarian (default, reads labels), majority (reads labels), "
                             "none (label-free: cluster ids only)")
    parser.add_argument("--protocol", default="official", choices=PROTOCOLS,
                        help="official (DARTS: cluster probe fitted on --train-split, dense CRF; default) or "
                             "on-split (ours: k-means on the labelled split)")
    add_option(parser, "--train-split", default="train", help="split the official cluster probe is fitted on")
    add_option(parser, "--no-crf", action="store_true", help="official protocol without the dense CRF")
    add_option(parser, "--probe-steps", type=int, default=defaults.DARTS_PROBE_STEPS,
               help=f"cluster-probe Adam steps (default {defaults.DARTS_PROBE_STEPS})")
    add_option(parser, "--probe-batch", type=int, default=defaults.DARTS_PROBE_BATCH,
               help=f"images per cluster-probe step (default {defaults.DARTS_PROBE_BATCH})")
    add_option(parser, "--miou-convention", default="official", choices=MIOU_CONVENTIONS,
               help="mIoU reported as 'mIoU': official (DARTS's: stego), present (ours), stego, all-classes "
                    "(all three are always in scores.json)")
    parser.add_argument("--seed", type=int, default=0, help="k-means / probe seed (default 0)")
    add_option(parser, "--kmeans-backend", default=defaults.KMEANS_BACKEND, choices=BACKENDS)
    add_option(parser, "--max-samples", type=int, default=100_000, help="k-means fit sample over the split")
    add_option(parser, "--load-centroids", help="use these centroids (kmeans_centroids.npz) instead of fitting")
    add_option(parser, "--write-features", action="store_true", help="also write the clustered vectors (.npy)")
    add_option(parser, "--no-evaluate", action="store_true", help="do not score against the labels")
    add_option(parser, "--ignore-unlabeled", action="store_true",
               help="score class 0 (MFNet 'unlabeled', PST900 'background') as void")
    parser.add_argument("--device", default="cpu", help="cpu or cuda for the fusion head (default cpu)")
    parser.add_argument("--out", required=True, help="output folder")
    add_runner_arguments(parser, workers=1)


def config_of(args: argparse.Namespace) -> DartsSemanticsConfig:
    if args.k < 0:
        raise PseudoLabelsError(f"--k {args.k}: need >= 2 (or 0: the number of classes)")
    rgbt_label_table(args.dataset)
    return DartsSemanticsConfig(
        data_root=args.data_root, out=args.out, features=args.features, dataset=args.dataset, split=args.split,
        source=args.source, run=args.run, k=args.k, mapping=args.mapping, seed=args.seed,
        kmeans_backend=args.kmeans_backend, max_samples=args.max_samples, load_centroids=args.load_centroids,
        write_features=args.write_features, evaluate=not args.no_evaluate,
        ignore_classes=(0,) if args.ignore_unlabeled else (), device=args.device, protocol=args.protocol,
        train_split=args.train_split, crf=not args.no_crf, probe_steps=args.probe_steps,
        probe_batch=args.probe_batch, miou_convention=args.miou_convention)


def run(args: argparse.Namespace) -> int:
    result = generate_darts_semantics(config_of(args), runner_options(args))
    print(result.line())
    print(f"uses ground truth: {'yes (' + args.mapping + ' mapping)' if result.uses_ground_truth else 'no'}"
          + ("; scores.json is evaluation against the labels" if result.scores else ""))
    if result.failed:
        names = "; ".join(f"{n}: {m}" for n, m in result.failed[:5])
        raise PseudoLabelsError(f"{len(result.failed)} images failed: {names}; rerun to retry them")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.generate_darts_semantics"))
