"""Grid over k x tau x A_min (x sigma x dilation) of depth-guided splitting, scored by PQ.

Reads ``<root>/<semantic-subdir>/<split>/**.png`` (trainIds; or raw clusters mapped with
``<root>/<semantic-subdir>/kmeans_centroids.npz`` ``cluster_to_class``, as the reference),
``<root>/<depth-subdir>/<split>/**.npy`` (not with ``--depth none``: connected components only,
the reference's CC-only row) and the Cityscapes panoptic ground truth
(``gtFine/cityscapes_panoptic_<split>.json`` + folder; absent from the official zips, it is made by
cityscapesscripts into ``--gt-cache`` and reused). Writes the JSON (the reference's
schema plus sigma, dilation, SQ/RQ splits and per-class numbers), a CSV next to it, one PQ
heatmap (tau x A_min) per semantic source, and prints the best configuration. The work is
:func:`pseudo_labels.stages.outputs.sweep.run_sweep`.
"""

from __future__ import annotations

import argparse
import sys

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.core.runner import default_workers
from pseudo_labels.datasets import DATASET_MODULES
from pseudo_labels.stages.outputs.sweep import SweepConfig, format_best
from pseudo_labels.stages.outputs.sweep_cups import run_sweep_any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--cityscapes-root", required=True, help="dataset root (Cityscapes layout)")
    parser.add_argument("--split", default="val")
    add_option(parser, "--semantic-subdir", nargs="+", required=True, action="extend",
               help="folder(s) under the root with semantic PNGs (one sweep per folder, e.g. one per k); "
                    "'gtFine' uses the GT labelTrainIds")
    add_option(parser, "--depth-subdir", default="depth_spidepth", help="folder under the root with depth .npy")
    add_option(parser, "--depth", choices=defaults.DEPTH_MODES, default="edges",
               help="edges (default): split things at depth edges over the grid; none: connected components "
                    "only (the reference's CC-only row; no depth files needed)")
    add_option(parser, "--gt-cache", default=None,
               help="where panoptic GT missing from the dataset is made (cityscapesscripts) and reused (default: "
                    "gt_cache beside the output JSON: <folder of --out>/gt_cache, or <root>/gt_cache without --out, a "
                    "dedicated sub-folder of the root as --output-subdir; never the root, a data folder or an input)")
    add_option(parser, "--grad-thresholds", type=float, nargs="+", default=list(defaults.SWEEP_GRAD_THRESHOLDS))
    add_option(parser, "--min-areas", type=int, nargs="+", default=None,
               help=f"A_min values, pixels at the working resolution (default {list(defaults.SWEEP_MIN_AREAS)} at "
                    "512x1024, scaled by the pixel count at other working resolutions)")
    add_option(parser, "--sigmas", "--depth-blur-sigma", type=float, nargs="+", default=[defaults.DEPTH_BLUR_SIGMA])
    add_option(parser, "--dilation-iters", type=int, nargs="+", default=[defaults.DILATION_ITERS])
    add_option(parser, "--connectivity", type=int, choices=(4, 8), default=defaults.CONNECTIVITY)
    add_option(parser, "--normalize", choices=("none", "minmax"), default="none")
    add_option(parser, "--resolution", type=int, nargs=2, metavar=("H", "W"), default=None,
               help="working resolution of the splitting (default: half of each image's size, 512x1024 for Cityscapes)")
    parser.add_argument("--protocol", choices=("standard", "reference", "cups"), default=defaults.PROTOCOL,
                        help="cups: CUPS' metric, matching per cell (two passes), GT from gtFine instanceIds")
    parser.add_argument("--num-classes", type=int, choices=(27, 19), default=27, help="--protocol cups: classes")
    add_option(parser, "--no-cc-baseline", action="store_true", help="skip the connected-components-only row")
    add_option(parser, "--max-images", type=int, default=None, help="first N images only (quick checks)")
    add_option(parser, "--skip-missing", action="store_true", help="skip images without semantics or depth (counted)")
    add_option(parser, "--dataset", choices=sorted(DATASET_MODULES), default="cityscapes",
               help="label table of the semantic ids and the panoptic categories (default %(default)s)")
    add_option(parser, "--ap50", action="store_true",
               help="also an AP50 column: COCO instance AP at IoU 0.5 of the thing classes (score = segment area), "
                    "in the evaluation frame (512x1024 with --protocol reference)")
    parser.add_argument("--out", default=None, help="output JSON, CSV and heatmaps next to it (default, as the "
                        "reference: <root>/sweep_k<k>_<depth>_<split>.json, e.g. sweep_k80_spidepth_val.json); given or "
                        "default, an existing file there that pseudo_labels did not write is never replaced")
    add_runner_arguments(parser, workers=default_workers(), shard=False, overwrite=False)


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    return SweepConfig(
        cityscapes_root=args.cityscapes_root, semantic_subdirs=tuple(args.semantic_subdir), out=args.out,
        split=args.split, depth_subdir=args.depth_subdir, grad_thresholds=tuple(args.grad_thresholds),
        min_areas=tuple(args.min_areas) if args.min_areas else None, sigmas=tuple(args.sigmas),
        dilation_iters=tuple(args.dilation_iters), connectivity=args.connectivity, normalize=args.normalize,
        resolution=tuple(args.resolution) if args.resolution else None,
        protocol=args.protocol, num_classes=args.num_classes, cc_baseline=not args.no_cc_baseline,
        max_images=args.max_images,
        skip_missing=args.skip_missing, dataset=args.dataset, ap50=args.ap50, depth=args.depth,
        gt_cache=args.gt_cache,
    )


def run(args: argparse.Namespace) -> int:
    out = run_sweep_any(config_from_args(args), runner_options(args))  # any protocol (cups: two passes)
    print(format_best(out), file=sys.stdout)
    print(f"wrote {out['out']}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.sweep"))
