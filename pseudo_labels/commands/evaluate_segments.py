"""Score unsupervised segments (e.g. from ``generate-dynaseg-segments``) against a data set's
ground truth with DynaSeg's protocols: ``hungarian`` (one-to-one matching of segments to
classes, per image or over the data set; COCO-Stuff-27's default) or ``best-overlap`` (each
GT region takes its best-IoU segment; VOC / BSD500's default). ``--average official`` scores each
image with the release's nine metrics and drops an image when any is NaN (ours, the default, drops
it only when its mIoU is NaN). Reads ground truth (evaluation).
The work is :func:`pseudo_labels.stages.refine.dynaseg.score_segments`.
"""

from __future__ import annotations

import argparse
import json

from pseudo_labels.core import io
from pseudo_labels.core.arguments import add_option
from pseudo_labels.commands import module_main
from pseudo_labels.stages.refine.dynaseg import PROTOCOLS, SCORED_DATASETS, score_segments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--segments-dir", required=True, help="segment PNGs named by image id (searched recursively)")
    add_option(parser, "--dataset", required=True, choices=SCORED_DATASETS, help="ground truth layout and classes")
    add_option(parser, "--data-root", required=True, help="root of the data set (COCO-Stuff curated / VOC / BSD500)")
    add_option(parser, "--split", required=True, help="split, e.g. val2017 (COCO-Stuff), val (VOC), test (BSD500)")
    add_option(parser, "--protocol", choices=PROTOCOLS, default=None,
               help="matching (default: hungarian for coco-stuff-27, best-overlap for voc2012 / bsd500)")
    add_option(parser, "--mode", choices=("image", "dataset"), default="image",
               help="hungarian matching per image (DynaSeg's per-image protocol, default) or over the data set")
    add_option(parser, "--average", choices=("ours", "official"), default="ours",
               help="per-image averaging: ours (skip images with a NaN mIoU, default) or official (DynaSeg's: "
                    "skip images with any NaN among aAcc / mIoU / mAcc of all, thing and stuff ids)")
    add_option(parser, "--out", default=None, help="write the result JSON here")


def run(args: argparse.Namespace) -> int:
    result = score_segments(args.segments_dir, args.dataset, args.data_root, args.split,
                            protocol=args.protocol, mode=args.mode, average=args.average)
    if args.out:
        io.write_json(args.out, result)
    average = f", {result['average']} average" if "average" in result else ""
    print(f"mIoU {result['mIoU']:.2f} over {result['n_scored']} of {result['n_images']} images ({result['dataset']}, "
          f"{result['protocol']}{average}){' -> ' + args.out if args.out else ''}")
    print("uses ground truth: the data set's labels (scoring only)")
    if not args.out:
        print(json.dumps({k: v for k, v in result.items() if k != "per_image"}, default=str)[:2000])
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.evaluate_segments"))
