"""Export Cityscapes-panoptic pseudo-labels as COCO panoptic (integer image ids, ``isthing``).

Writes ``<out>/panoptic.json`` and ``<out>/panoptic/<stem>.png``; readable by
``panopticapi.evaluation.pq_compute`` and ``hotcoco.panoptic.pq_compute``. Image ids are
1..N in stem order; the Cityscapes stem is kept in ``stem`` and in ``file_name``.
The work is :func:`pseudo_labels.stages.outputs.export.export_coco`.
"""

from __future__ import annotations

import argparse

from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.stages.outputs.export import CocoExportConfig, export_coco


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--panoptic-dir", required=True, help="folder of panoptic PNGs")
    add_option(parser, "--panoptic-json", default=None,
               help="panoptic JSON (default: <panoptic-dir>.json, else the only JSON inside the folder)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--name", default="panoptic", help="base name of the JSON and PNG folder (default %(default)s)")
    add_option(parser, "--overwrite", action="store_true", help="write into a non-empty folder")
    add_runner_arguments(parser, workers=1, shard=False, overwrite=False)


def config_from_args(args: argparse.Namespace) -> CocoExportConfig:
    return CocoExportConfig(panoptic_dir=args.panoptic_dir, out=args.out, panoptic_json=args.panoptic_json,
                            name=args.name, overwrite=args.overwrite)


def run(args: argparse.Namespace) -> int:
    counts = export_coco(config_from_args(args), runner_options(args))
    print(f"wrote COCO panoptic {args.out}/{counts['json']} ({counts['images']} images, {counts['segments']} segments)")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.export_coco"))
