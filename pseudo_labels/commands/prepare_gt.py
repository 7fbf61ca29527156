"""Make the ground truth the official Cityscapes zips do not hold, with cityscapesscripts, into a cache.

From ``<root>/gtFine/<split>`` (as ``gtFine_trainvaltest.zip`` unpacks): the panoptic GT
(``cityscapes_panoptic_<split>.json`` + PNGs, by ``createPanopticImgs``) and the trainId maps
(``*_gtFine_labelTrainIds.png``, by ``createTrainIdLabelImgs``), written under ``<out>/gtFine/``
with the dataset's layout, never into the dataset. Kinds the dataset already holds are left
alone; a cache made from the same files is reused. Stages that need them do the same on their
own (``sweep --gt-cache``); this command does it ahead. The work is
:func:`pseudo_labels.datasets.cityscapes_gt.prepare_ground_truth`.
"""

from __future__ import annotations

import argparse

from pseudo_labels.commands import module_main
from pseudo_labels.core.arguments import add_option
from pseudo_labels.core.defaults import GT_CACHE_DIRNAME
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.datasets.cityscapes_gt import KINDS, prepare_ground_truth


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--cityscapes-root", required=True, help="dataset root (the official zips unpacked)")
    add_option(parser, "--split", nargs="+", default=["val"], help="split(s) (default val)")
    add_option(parser, "--out", default=GT_CACHE_DIRNAME,
               help="cache folder to write (default ./%(default)s; pass it to sweep as --gt-cache)")
    add_option(parser, "--kinds", nargs="+", choices=KINDS, default=list(KINDS),
               help="what to make (default: both)")
    add_option(parser, "--workers", type=int, default=1, help="processes for the trainId maps (default 1)")


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise PseudoLabelsError(f"--workers {args.workers}: need at least 1")
    for split in args.split:
        prepared = prepare_ground_truth(args.cityscapes_root, split, args.out, args.kinds, workers=args.workers)
        for kind, status in prepared.status.items():
            where = prepared.gt_root[kind]
            if status == "dataset":
                print(f"{kind} ground truth of split {split}: already in the dataset ({where}/gtFine)")
        for line in prepared.lines():
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.prepare_gt"))
