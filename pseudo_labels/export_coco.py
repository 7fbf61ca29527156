"""Export Cityscapes-panoptic pseudo-labels as COCO panoptic (integer image ids, ``isthing``).

Writes ``<out>/panoptic.json`` and ``<out>/panoptic/<stem>.png``; readable by
``panopticapi.evaluation.pq_compute`` and ``hotcoco.panoptic.pq_compute``. Image ids are
1..N in stem order; the Cityscapes stem is kept in ``stem`` and in ``file_name``.
"""

from __future__ import annotations

import argparse

from pseudo_labels.core import io
from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options, module_main
from pseudo_labels.stages.export import export_coco, load_panoptic_input


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--panoptic-dir", required=True, help="folder of panoptic PNGs")
    add_option(parser, "--panoptic-json", default=None,
               help="panoptic JSON (default: <panoptic-dir>.json, else the only JSON inside the folder)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--name", default="panoptic", help="base name of the JSON and PNG folder (default %(default)s)")
    add_option(parser, "--overwrite", action="store_true", help="write into a non-empty folder")

    add_runner_arguments(parser, workers=1, shard=False, overwrite=False)

def run(args: argparse.Namespace) -> int:
    inp = load_panoptic_input(args.panoptic_dir, args.panoptic_json)
    counts = export_coco(inp, args.out, name=args.name, overwrite=args.overwrite, options=runner_options(args))
    io.write_manifest(
        args.out, "export-coco", {"name": args.name}, uses_ground_truth=False,
        inputs={"panoptic_json": str(inp.json_path), "panoptic_dir": str(inp.png_dir),
                "panoptic_pngs": io.fingerprint_files(im.png_path for im in inp.images)},
        counts=counts,
    )
    print(f"wrote COCO panoptic {args.out}/{counts['json']} ({counts['images']} images, {counts['segments']} segments)")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.export_coco"))
