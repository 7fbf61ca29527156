"""Remap CAUSE 27-class semantic PNGs (class c = Cityscapes labelId c + 7) to the 19 trainIds.

Reads ``<input-dir>/<split>/<city>/*.png`` and writes the same names under ``--output-dir``
(uint8, 255 void). Two tables (``--table``):

- ``reference`` (default, to reproduce the reference repository's numbers): its
  ``remap_cause27_to_trainid.py`` table, which maps polegroup -> pole, caravan -> car and
  trailer -> truck;
- ``cityscapes``: derived from ``cityscapesscripts.helpers.labels``, where polegroup,
  caravan and trailer have no trainId and become void (255), like parking, rail track,
  guard rail, bridge and tunnel in both tables.
"""

from __future__ import annotations

import argparse

from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.datasets.cityscapes import CAUSE27_TABLES
from pseudo_labels.stages.semantic.cause27 import SPLITS, RemapConfig, remap_cause27_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--input-dir", required=True, help="CAUSE 27-class output folder (<split>/<city>/*.png)")
    add_option(parser, "--output-dir", required=True, help="folder for the trainId PNGs (same layout and names)")
    parser.add_argument("--split", choices=SPLITS, default="both",
                        help="split(s) to remap (default both; a missing split folder is skipped then)")
    parser.add_argument("--table", choices=CAUSE27_TABLES, default="reference",
                        help="reference (default): the reference's table, polegroup->pole, caravan->car, "
                             "trailer->truck; cityscapes: cityscapesscripts' trainIds, those three -> void 255")
    add_runner_arguments(parser, workers=1)


def run(args: argparse.Namespace) -> int:
    config = RemapConfig(input_dir=args.input_dir, output_dir=args.output_dir, split=args.split, table=args.table)
    summary = remap_cause27_folder(config, runner_options(args))
    for split in getattr(summary, "skipped_splits", []):
        print(f"skipping {split}: no {split}/ folder in {args.input_dir}")
    if getattr(summary, "uses_ground_truth", False):
        print("uses ground truth: yes (the input labels were named with ground truth)")
    print(f"remap 27->19 ({args.table} table): {summary.line()} -> {args.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.remap_cause27_to_trainid"))
