"""Overlays of panoptic pseudo-labels: per-image panels and a contact sheet.

Panel: image | semantics (Cityscapes palette over the image) | instances | depth edges |
ground-truth semantics (when present). The contact sheet shows the panoptic overlay of many
images in a grid. The drawing lives in :mod:`pseudo_labels.stages.outputs.visualize`.
"""

from __future__ import annotations

import argparse

from pseudo_labels.core.arguments import add_option
from pseudo_labels.commands import module_main
from pseudo_labels.core.defaults import GRAD_THRESHOLD, VIS_N_PANELS, VIS_SHEET_MAX_IMAGES, VIS_TILE_WIDTH
from pseudo_labels.stages.outputs.visualize import VisualizeConfig, write_overlays


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--cityscapes-root", required=True, help="Cityscapes root (images, optional gtFine)")
    parser.add_argument("--split", default="val", help="split (default %(default)s)")
    add_option(parser, "--panoptic-dir", required=True, help="folder of panoptic PNGs")
    add_option(parser, "--panoptic-json", default=None, help="panoptic JSON (default: <panoptic-dir>.json)")
    add_option(parser, "--depth-dir", default=None, help="folder of depth .npy maps (searched recursively by stem)")
    parser.add_argument("--out", default="overlays", help="output folder (default %(default)s)")
    parser.add_argument("--n", type=int, default=VIS_N_PANELS, help="number of per-image panels (default %(default)s)")
    add_option(parser, "--sheet-n", type=int, default=VIS_SHEET_MAX_IMAGES,
               help="images in the contact sheet (default %(default)s)")
    add_option(parser, "--tile-width", type=int, default=VIS_TILE_WIDTH, help="width of one tile in pixels")
    add_option(parser, "--grad-threshold", type=float, default=GRAD_THRESHOLD, help="depth edge threshold tau")
    parser.add_argument("--no-gt", action="store_true", help="do not show ground truth even when present")


def run(args: argparse.Namespace) -> int:
    config = VisualizeConfig(
        cityscapes_root=args.cityscapes_root, panoptic_dir=args.panoptic_dir, out=args.out, split=args.split,
        panoptic_json=args.panoptic_json, depth_dir=args.depth_dir, n=args.n, sheet_n=args.sheet_n,
        tile_width=args.tile_width, grad_threshold=args.grad_threshold, show_gt=not args.no_gt)
    res = write_overlays(config)
    print(f"wrote {res['panels']} panels and a contact sheet of {res['contact_sheet_images']} images to {res['out']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.visualize"))
