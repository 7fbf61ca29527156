"""Export Cityscapes-panoptic pseudo-labels as a CUPS (visinf/cups) pseudo-label folder.

``--target cups`` writes what upstream CUPS reads: a flat folder of
``<stem>_leftImg8bit_semantic.png`` / ``<stem>_leftImg8bit_instance.png`` (uint8, labels at
DATA.SCALE = 0.625 of the image, i.e. 640x1280) plus ``pseudo_classes_split_1.pt`` (class counts
from which CUPS derives thing/stuff). ``--target cups-fork`` writes the reference fork's variant
(full resolution, uint16 instances, one float32 ``.pt`` per image). Semantic ids are trainIds.
The work is :func:`pseudo_labels.stages.outputs.export.export_cups`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.stages.outputs.export import CUPS_DEFAULT_THRESHOLD, CUPS_TARGETS, CupsExportConfig, export_cups


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--panoptic-dir", required=True, help="folder of panoptic PNGs (searched recursively)")
    add_option(parser, "--panoptic-json", default=None,
               help="panoptic JSON (default: <panoptic-dir>.json, else the only JSON inside the folder)")
    add_option(parser, "--cityscapes-root", default=None,
               help="Cityscapes root; CUPS opens <root>/leftImg8bit_sequence/<split>/<city>/<stem>_leftImg8bit.png")
    parser.add_argument("--out", required=True, help="output folder (CUPS DATA.ROOT_PSEUDO)")
    parser.add_argument("--target", choices=sorted(CUPS_TARGETS), default="cups",
                        help="cups: upstream visinf/cups; cups-fork: the reference repository's fork")
    parser.add_argument("--split", choices=("train", "val"), default=None,
                        help="split CUPS reads images from (train: DATA.DATASET cityscapes; val: cityscapes_val); "
                             "default: found from the cities under --cityscapes-root")
    add_option(parser, "--thing-stuff-threshold", type=float, default=CUPS_DEFAULT_THRESHOLD,
               help="the DATA.THING_STUFF_THRESHOLD of your CUPS config (default %(default)s, CUPS's default); "
                    "the export checks that CUPS's rule then yields the Cityscapes thing/stuff split")
    add_option(parser, "--no-image-check", action="store_true",
               help="do not check that the images CUPS will read exist under --cityscapes-root")
    add_option(parser, "--unmatched-things", choices=("void", "keep"), default="void",
               help="thing pixels outside every instance (crowd regions): void (255, default) or keep their class; "
                    "kept ones count against the class being a thing in CUPS's thing/stuff rule")
    add_option(parser, "--overwrite", action="store_true",
               help="write into a non-empty folder (stale CUPS label/.pt files in it are removed)")
    add_runner_arguments(parser, workers=1, shard=False, overwrite=False)


def config_from_args(args: argparse.Namespace) -> CupsExportConfig:
    return CupsExportConfig(
        panoptic_dir=args.panoptic_dir, out=args.out, panoptic_json=args.panoptic_json, target=args.target,
        cityscapes_root=args.cityscapes_root, split=args.split, threshold=args.thing_stuff_threshold,
        check_images=not args.no_image_check, unmatched_things=args.unmatched_things, overwrite=args.overwrite,
    )


def run(args: argparse.Namespace) -> int:
    result = export_cups(config_from_args(args), runner_options(args))
    c = result["counts"]
    print(f"wrote {c['images']} CUPS pairs ({args.target}, labels {c['label_shape'][0]}x{c['label_shape'][1]}, "
          f"{c['instances']} instances) to {Path(args.out)}; thing classes for CUPS: "
          f"{result['cups_config']['thing_classes']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.convert_to_cups_format"))
