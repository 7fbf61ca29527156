"""Evaluate panoptic predictions (PQ/SQ/RQ, all / things / stuff / per class) and optionally mIoU.

Ground truth and prediction are COCO/Cityscapes panoptic (JSON + PNG folder), paired by
``image_id``. Protocol ``standard`` equals cityscapesscripts at the ground truth's size
(predictions of another size are nearest-resized to it); ``reference`` reproduces the
reference repository's arithmetic at 512x1024 (see ``evaluation.panoptic``); ``cups`` is CUPS'
metric (``evaluation.cups``: GT from ``--cityscapes-root``'s gtFine instanceIds, pseudo-classes
matched per split, ``--num-classes 27|19``, ``--resolution full|640x1280``, ``--one-to-one``);
``stego-miou`` scores ``--pred-semantic-dir`` with the STEGO-style 320x320 crop mIoU. With
``--gt-semantic-dir`` and ``--pred-semantic-dir`` the trainId PNGs found under them are
paired by Cityscapes stem and scored with mIoU too. The result JSON names its protocol
and the engine that computed it.

Engines (``--engine``): ``hotcoco`` reads and scores the PNGs in Rust (``hotcoco.panoptic``,
standard protocol only; ``--workers`` = its threads); ``numpy`` is ours (``--workers``
processes through the shared runner, Ray with ``--executor ray``); ``auto`` (default) is
hotcoco where it is installed and can do the request, else numpy. Both give the same
numbers, equal to cityscapesscripts. The work is :func:`pseudo_labels.stages.outputs.scoring.evaluate_folders`.
"""

from __future__ import annotations

import argparse
import sys

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.datasets import DATASET_MODULES
from pseudo_labels.stages.outputs.scoring import ENGINES, PROTOCOLS, EvaluateConfig, evaluate_folders, format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--gt-json", help="ground-truth panoptic JSON (e.g. gtFine/cityscapes_panoptic_val.json); "
               "standard and reference protocols")
    add_option(parser, "--gt-folder", help="folder of ground-truth panoptic PNGs (standard and reference protocols)")
    add_option(parser, "--pred-json", help="predicted panoptic JSON")
    add_option(parser, "--pred-folder", help="folder of predicted panoptic PNGs")
    add_option(parser, "--protocol", choices=PROTOCOLS, default=defaults.PROTOCOL,
               help="standard: = cityscapesscripts at the GT's size (default); reference: the reference "
                    "repository's arithmetic at 512x1024; cups: CUPS' metric (pseudo-classes matched to classes "
                    "per split, GT from gtFine instanceIds); stego-miou: semantic PNGs, 320x320 crop mIoU")
    add_option(parser, "--cityscapes-root", help="cups / stego-miou: the Cityscapes root (gtFine/<split>/ is read)")
    add_option(parser, "--split", default="val", help="cups / stego-miou: split under gtFine (default %(default)s)")
    add_option(parser, "--num-classes", type=int, choices=(27, 19), default=27,
               help="cups / stego-miou: 27 (labelIds 7..33, CUPS' default) or 19 (trainIds) classes")
    add_option(parser, "--resolution", default="full",
               help="cups: full (the GT's size, CUPS' val_cityscapes.yaml; default) or HxW, e.g. 640x1280 "
                    "(CUPS' training-time validation; GT resized as CUPS does)")
    add_option(parser, "--one-to-one", action="store_true",
               help="cups: pseudo-classes left over by the Hungarian matching become void (default: argmax class)")
    add_option(parser, "--no-thing-stuff-split", dest="thing_stuff_split", action="store_false",
               help="cups: match all pseudo-classes to all classes at once (default: things and stuff apart)")
    add_option(parser, "--also-protocols", nargs="+", choices=PROTOCOLS, default=(),
               help="also score the same files under these protocols (results under 'also' in the JSON)")
    add_option(parser, "--crop-resize", choices=("torch", "pil"), default="torch",
               help="stego-miou / cups crop: nearest resize as CUPS (torch tensors, default) or STEGO's loader (PIL)")
    add_option(parser, "--engine", choices=ENGINES, default="auto",
               help="hotcoco: Rust reader/scorer (standard protocol only, --workers threads); numpy: ours "
                    "(--workers processes, or Ray); auto (default): hotcoco when installed and the request is "
                    "one it can do (standard protocol, local executor), else numpy. Same numbers either way")
    add_option(parser, "--allow-missing", action="store_true",
               help="score GT images without a prediction as all false negatives (default: error)")
    add_option(parser, "--gt-semantic-dir", default=None,
               help="optional: GT folder for mIoU (gtFine/<split>: *_labelTrainIds.png, else *_gtFine_labelIds.png)")
    add_option(parser, "--pred-semantic-dir", default=None,
               help="optional: folder of predicted trainId PNGs for mIoU (stego-miou: the prediction)")
    add_option(parser, "--dataset", choices=sorted(DATASET_MODULES), default="cityscapes",
               help="label table of the semantic PNGs for mIoU (default %(default)s)")
    add_option(parser, "--instances", action="store_true",
               help="also instance AP/AR of the thing classes (score = segment area; ties by category, id)")
    add_option(parser, "--instance-protocol", choices=("coco", "cityscapes", "reference"), default="coco",
               help="coco: AP, AP50, AP75, AR@100 per class and class-agnostic (= pycocotools COCOeval segm, "
                    "default); cityscapes: AP, AP50 (= cityscapesscripts); reference: the reference's "
                    "evaluate_cascade_pseudolabels.py (AR@100, AP@50, AP@75 at 512x1024, class-agnostic)")
    add_option(parser, "--out", required=True, help="result JSON to write")
    add_option(parser, "--quiet", action="store_true", help="do not print the table")
    add_runner_arguments(parser, workers=1, shard=False, overwrite=False)


def config_from_args(args: argparse.Namespace) -> EvaluateConfig:
    return EvaluateConfig(
        gt_json=args.gt_json, gt_folder=args.gt_folder, pred_json=args.pred_json, pred_folder=args.pred_folder,
        out=args.out, protocol=args.protocol, engine=args.engine, allow_missing=args.allow_missing,
        gt_semantic_dir=args.gt_semantic_dir, pred_semantic_dir=args.pred_semantic_dir, dataset=args.dataset,
        progress=not args.quiet, instances=args.instances, instance_protocol=args.instance_protocol,
        cityscapes_root=args.cityscapes_root, split=args.split, num_classes=args.num_classes,
        resolution=args.resolution, one_to_one=args.one_to_one, thing_stuff_split=args.thing_stuff_split,
        crop_resize=args.crop_resize, also_protocols=tuple(args.also_protocols),
    )


def run(args: argparse.Namespace) -> int:
    result = evaluate_folders(config_from_args(args), runner_options(args))
    if not args.quiet:
        print(format_table(result))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.evaluate"))
