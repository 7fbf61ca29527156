"""Assemble Cityscapes-panoptic PNG + JSON from semantic trainIds and instance maps.

Pairs ``--semantic-dir`` PNGs with ``--instance-dir`` ``*_instance.png`` maps by Cityscapes
stem (recursive). The semantic map is resized (nearest) to the instance map's size, the
panoptic map assembled there (stuff >= ``--stuff-min-area`` px per class at that
resolution, things = instances, rest void), then resized (nearest) to ``--resolution``
(default: the semantic map's own size, e.g. 1024x2048 to match Cityscapes ground truth).
Writes ``<out-folder>/<stem>_panoptic.png`` and ``--out-json`` (categories = Cityscapes
labelIds), which ``pseudo-labels evaluate`` and cityscapesscripts' evaluator read unchanged.
The work is :func:`pseudo_labels.stages.instance.panoptic.generate_panoptic`.
"""

from __future__ import annotations

import argparse
import sys

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.core.runner import default_workers
from pseudo_labels.datasets import DATASET_MODULES
from pseudo_labels.stages.instance.panoptic import PanopticConfig, generate_panoptic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--semantic-dir", required=True, help="semantic PNGs (trainIds, 255 void), recursive")
    add_option(parser, "--instance-dir", required=True, help="instance PNGs (*_instance.png, uint16), recursive")
    add_option(parser, "--out-json", required=True, help="panoptic JSON to write")
    add_option(parser, "--out-folder", required=True, help="folder for <stem>_panoptic.png")
    add_option(parser, "--stuff-min-area", type=int, default=defaults.STUFF_MIN_AREA,
               help="pixels a stuff class needs (at the instance-map resolution) to become a segment")
    add_option(parser, "--resolution", type=int, nargs=2, metavar=("H", "W"), default=None,
               help="output size (default: the semantic map's size)")
    add_option(parser, "--dataset", choices=sorted(DATASET_MODULES), default="cityscapes",
               help="label table of the semantic ids and the JSON categories (default %(default)s)")
    add_option(parser, "--skip-missing", action="store_true", help="skip images without an instance map (counted)")
    add_runner_arguments(parser, workers=default_workers())


def config_from_args(args: argparse.Namespace) -> PanopticConfig:
    return PanopticConfig(
        semantic_dir=args.semantic_dir, instance_dir=args.instance_dir, out_json=args.out_json,
        out_folder=args.out_folder, stuff_min_area=args.stuff_min_area,
        resolution=tuple(args.resolution) if args.resolution else None, skip_missing=args.skip_missing,
        dataset=args.dataset,
    )


def run(args: argparse.Namespace) -> int:
    result = generate_panoptic(config_from_args(args), runner_options(args))
    print(result.line(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.generate_panoptic"))
