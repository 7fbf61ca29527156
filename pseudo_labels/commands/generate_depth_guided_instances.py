"""Split thing classes into instances with depth edges + connected components.

Pairs semantic PNGs (trainIds, 255 void) with depth ``.npy`` maps by Cityscapes stem
(folders searched recursively, flat or ``<split>/<city>/`` layouts), resizes both to the
working resolution (semantic: nearest, PIL pixel-centre convention; depth: PIL bilinear,
as the reference), runs :func:`pseudo_labels.stages.instance.instances.split_instances_by_depth_edges` and
writes ``<out>/<same relative folder>/<semantic file name without .png>_instance.png``
(uint16, 0 none, 1..N, at the working resolution), ``stats.json`` (the reference's
statistics) and ``manifest.json``. ``--depth none``: no depth maps; every connected component of a
thing class is an instance (the reference's "k=300 CC-only" row; ``--min-area`` defaults to 10 there).
The work is :func:`pseudo_labels.stages.instance.instances.generate_instances`.
"""

from __future__ import annotations

import argparse
import sys

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.core.runner import default_workers
from pseudo_labels.datasets import DATASET_MODULES
from pseudo_labels.stages.instance.instances import InstanceConfig, generate_instances


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--semantic-dir", required=True, help="semantic PNGs (trainIds, 255 void), searched recursively")
    add_option(parser, "--depth-dir", default=None,
               help="depth .npy maps (float, any size), searched recursively (not with --depth none)")
    add_option(parser, "--depth", choices=defaults.DEPTH_MODES, default="edges",
               help="edges (default): split things at depth edges; none: connected components only "
                    "(the reference's CC-only row)")
    add_option(parser, "--output-dir", required=True, help="output folder for instance PNGs (uint16)")
    add_option(parser, "--grad-threshold", type=float, default=defaults.GRAD_THRESHOLD,
               help="depth-gradient edge threshold tau (default %(default)s)")
    add_option(parser, "--min-area", type=int, default=None,
               help=f"minimum instance area A_min in pixels at the working resolution (default: {defaults.MIN_AREA} "
                    f"at 512x1024, scaled by the pixel count at other working resolutions; {defaults.CC_MIN_AREA} "
                    "with --depth none)")
    add_option(parser, "--sigma", "--depth-blur", type=float, default=defaults.DEPTH_BLUR_SIGMA,
               help="Gaussian blur sigma before the Sobel gradient (default %(default)s)")
    add_option(parser, "--dilation-iters", type=int, default=defaults.DILATION_ITERS,
               help="boundary reclamation dilations (default %(default)s)")
    add_option(parser, "--connectivity", type=int, choices=(4, 8), default=defaults.CONNECTIVITY)
    add_option(parser, "--normalize", choices=("none", "minmax"), default="none",
               help="depth normalisation before the gradient (default none: reference maps are already min-max)")
    add_option(parser, "--resolution", type=int, nargs=2, metavar=("H", "W"), default=None,
               help="working resolution (default: half of each image's size, 512x1024 for Cityscapes as the reference)")
    add_option(parser, "--thing-classes", default="dataset",
               help="'dataset' (default: the thing classes of --dataset; Cityscapes: trainIds 11..18), 'cityscapes' "
                    "(trainIds 11..18), 'auto' (decided from depth statistics, for pseudo-classes) or a "
                    "comma-separated list of class ids")
    add_option(parser, "--rule", choices=defaults.THING_RULES, default=defaults.THING_RULE,
               help="with --thing-classes auto: 'ours' (default; depth/shape statistics, "
                    "pseudo_labels.stages.instance.thing_stuff) or 'reference' (the reference's classify_stuff_things.py "
                    "depth-split rule, 8 things, tau 0.05, on the maps as stored)")
    add_option(parser, "--dataset", choices=sorted(DATASET_MODULES), default="cityscapes",
               help="label table of the semantic ids (default %(default)s)")
    add_option(parser, "--skip-missing", action="store_true", help="skip images without a depth map (counted)")
    add_runner_arguments(parser, workers=default_workers())


def config_from_args(args: argparse.Namespace) -> InstanceConfig:
    return InstanceConfig(
        semantic_dir=args.semantic_dir, depth_dir=args.depth_dir, output_dir=args.output_dir,
        grad_threshold=args.grad_threshold, min_area=args.min_area, sigma=args.sigma,
        dilation_iters=args.dilation_iters, connectivity=args.connectivity, normalize=args.normalize,
        resolution=tuple(args.resolution) if args.resolution else None, thing_classes=args.thing_classes,
        skip_missing=args.skip_missing, dataset=args.dataset, thing_rule=args.rule, depth=args.depth,
    )


def run(args: argparse.Namespace) -> int:
    result = generate_instances(config_from_args(args), runner_options(args))
    print(result.line(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.generate_depth_guided_instances"))
