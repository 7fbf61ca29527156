"""Write a synthetic city in the Cityscapes layout (images, gtFine, disparity, camera).

``--layout official`` (default): only what the four official zips hold (leftImg8bit, gtFine
color/labelIds/instanceIds PNGs + polygons JSON, disparity, camera). ``--layout extended``: also
the trainId maps and the panoptic GT, made by cityscapesscripts as its preparation scripts do.
The generator lives in :mod:`pseudo_labels.datasets.synthetic_city`.
"""

from __future__ import annotations

import argparse

from pseudo_labels.core.arguments import add_option
from pseudo_labels.commands import module_main
from pseudo_labels.core.defaults import SYNTH_LAYOUT, SYNTH_LAYOUTS, SYNTH_SIZE, SYNTH_SPLIT
from pseudo_labels.datasets.synthetic_city import SyntheticCityConfig, write_synthetic_city_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--out", required=True, help="dataset root to write (Cityscapes layout)")
    add_option(parser, "--n", type=int, default=3, help="number of images (default 3)")
    add_option(parser, "--seed", type=int, default=0, help="random seed (default 0)")
    add_option(parser, "--size", type=int, nargs=2, metavar=("H", "W"), default=list(SYNTH_SIZE),
               help=f"image size in pixels (default {SYNTH_SIZE[0]} {SYNTH_SIZE[1]})")
    add_option(parser, "--split", default=SYNTH_SPLIT, help=f"split name (default {SYNTH_SPLIT})")
    add_option(parser, "--workers", type=int, default=1, help="parallel processes (default 1)")
    add_option(parser, "--class-dropout", type=float, default=0.0, metavar="P",
               help="leave each class out of each image with probability P (deterministic per seed), so image "
                    "tags vary between images; default 0: every class in every image")
    add_option(parser, "--layout", choices=SYNTH_LAYOUTS, default=SYNTH_LAYOUT,
               help="official (default): only what the four official zips hold; extended: also "
                    "*_gtFine_labelTrainIds.png and gtFine/cityscapes_panoptic_<split>.json + PNGs (made by cityscapesscripts)")


def run(args: argparse.Namespace) -> int:
    h, w = args.size
    config = SyntheticCityConfig(n=args.n, seed=args.seed, size=(h, w), class_dropout=args.class_dropout,
                                 layout=args.layout)
    stems = write_synthetic_city_config(args.out, config, split=args.split, workers=args.workers)
    print(f"wrote {len(stems)} synthetic images ({h}x{w}, split {args.split}, {args.layout} layout) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.synth"))
