"""Semantic pseudo-labels from a trained CAM run (train-cam), scored by mIoU when GT exists.

Writes ``<root>/<output-subdir>/<split>/<city>/<stem>.png`` (uint8: Cityscapes trainIds with
255 = background/unlabelled, or VOC ids with 0 = background under ``--label-space voc``,
taken from the run), ``manifest.json`` and ``cam_eval.json`` (mIoU, per-class IoU, coverage).

CAM -> mask (the usual choices of the CAM literature): class maps at the patch grid,
ReLU and division by each class's maximum in the image, bilinear upsampling to the image,
a constant background score ``--bg-threshold``, argmax over background + the image's
tagged classes (:func:`pseudo_labels.stages.weak.masks.cams_to_labels`).

Which classes an image may take: its tags from ``--tags FILE`` or ``--tags-from-gt``
(the usual WSSS setting: pseudo-labels for tagged training images), otherwise the
classifier's own predictions (sigmoid(logit) > 0.5). ``--refine-depth-subdir D`` snaps
label boundaries to depth edges (marker watershed within ``--refine-band`` px).

Images run through the shared runner (``--workers``, ``--executor ray``, ``--shard i/n``,
``--fail-fast``, ``--overwrite``): a rerun skips label maps that are newer than the run's
checkpoint and the image's cached features, and refuses an output folder made with other
parameters unless ``--overwrite``. ``cam_eval.json`` covers the whole split; with
``--shard`` it is written by whichever shard finds every label map done.

Sweep: ``--sweep-deal-weights W1,W2,.. [--sweep-bg-thresholds T1,..] [--sweep-seeds S1,..]``
trains one head per DEAL weight x seed (settings, tags and feature cache of ``--run``; runs in
``RUN/sweep/w<W>_s<S>``, resumed when rerun), scores every background threshold on ``--split``
and writes ``--sweep-out`` (default ``RUN/cam_sweep.json``: ``{split, ..., results: [{deal_weight,
seed, bg_threshold, mIoU, ...}], summary, best, best_per_deal_weight}``) + a CSV + a heatmap PNG
of the mean mIoU over DEAL weight x background threshold, instead of writing label maps.

The work is :func:`pseudo_labels.stages.weak.pseudolabels.generate_cam_pseudolabels`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.weak.pseudolabels import CamLabelConfig, generate_cam_pseudolabels


# --------------------------------------------------------------------------- CLI
def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PseudoLabelsError(f"{text!r}: expected comma-separated numbers") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--run", required=True, help="run folder written by train-cam (checkpoint.pt)")
    add_option(parser, "--cityscapes-root", required=True)
    add_option(parser, "--split", default="train")
    add_option(parser, "--output-subdir", default=None, help="output folder under the root (required unless --sweep-*)")
    add_option(parser, "--bg-threshold", type=float, default=defaults.CAM_BG_THRESHOLD,
               help=f"normalised CAM score at or below which a pixel is background (default {defaults.CAM_BG_THRESHOLD}: "
                    "every pixel takes its best tagged class, right for the Cityscapes label space, which has no "
                    "background; with --label-space voc pick one with --sweep-bg-thresholds)")
    src = parser.add_mutually_exclusive_group()
    add_option(src, "--tags", metavar="FILE", help="restrict each image to its tags from this file")
    add_option(src, "--tags-from-gt", action="store_true", help="restrict each image to its GT classes (uses GT)")
    add_option(parser, "--refine-depth-subdir", default=None,
               help="snap boundaries to depth edges: .npy folder under the root, or 'disparity'")
    add_option(parser, "--refine-band", type=int, default=defaults.CAM_REFINE_BAND,
               help="px a boundary may move when snapping to depth edges")
    add_option(parser, "--device", choices=("cpu", "cuda"), default="cpu")
    add_option(parser, "--sweep-deal-weights", type=_floats, default=None, metavar="W1,W2",
               help="run the sweep over these DEAL weights (trains one head per weight x seed; "
                    "one process: the runner flags other than --device do not apply)")
    add_option(parser, "--sweep-bg-thresholds", type=_floats, default=None, metavar="T1,T2",
               help=f"with --sweep-deal-weights (default {','.join(map(str, defaults.SWEEP_CAM_BG_THRESHOLDS))})")
    add_option(parser, "--sweep-seeds", type=lambda s: [int(v) for v in _floats(s)], default=None, metavar="S1,S2")
    add_option(parser, "--depth-subdir", default=None, help="sweep: depth for DEAL (default: the base run's)")
    add_option(parser, "--sweep-out", default=None, help="sweep JSON (default RUN/cam_sweep.json; CSV and heatmap PNG next to it)")
    add_runner_arguments(parser, workers=1)


def _config(args: argparse.Namespace) -> CamLabelConfig:
    if not args.sweep_deal_weights:  # flags that mean something only in the sweep need their partner
        given = [f for f, v in (("--sweep-bg-thresholds", args.sweep_bg_thresholds), ("--sweep-seeds", args.sweep_seeds),
                                ("--sweep-out", args.sweep_out), ("--depth-subdir", args.depth_subdir)) if v is not None]
        if given:
            raise PseudoLabelsError(f"{' '.join(given)} needs --sweep-deal-weights (the sweep); without it the "
                                    "flag would be ignored")
    if args.sweep_bg_thresholds is None:
        args.sweep_bg_thresholds = list(defaults.SWEEP_CAM_BG_THRESHOLDS)
    return CamLabelConfig(
        run=args.run, cityscapes_root=args.cityscapes_root, split=args.split, output_subdir=args.output_subdir,
        bg_threshold=args.bg_threshold, tags_file=args.tags, tags_from_gt=args.tags_from_gt,
        refine_depth_subdir=args.refine_depth_subdir, refine_band=args.refine_band, device=args.device,
        sweep_deal_weights=args.sweep_deal_weights, sweep_bg_thresholds=args.sweep_bg_thresholds,
        sweep_seeds=args.sweep_seeds, depth_subdir=args.depth_subdir, sweep_out=args.sweep_out)


def run(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        print(f"generate-cam-pseudolabels: {msg}", file=sys.stderr)

    res = generate_cam_pseudolabels(_config(args), runner_options(args), log=log)
    if args.sweep_deal_weights:
        b = res["best"]
        print(f"sweep: best mIoU {b['mIoU_mean']:.2f} +- {b['mIoU_std']:.2f} at DEAL weight {b['deal_weight']:g}, "
              f"bg threshold {b['bg_threshold']:g}; {args.sweep_out or Path(args.run) / 'cam_sweep.json'}")
    else:
        msg = (f"done {res['done']}, skipped {res['skipped_existing']} (already finished) label maps in "
               f"{Path(args.cityscapes_root) / args.output_subdir}")
        if not res.get("complete", True):
            msg += "; other shards unfinished, so no cam_eval.json yet"
        elif "mIoU" in res:
            msg += (f"; mIoU {res['mIoU']:.2f} (labelled pixels {res['mIoU_labelled']:.2f}, "
                    f"coverage {res['coverage']:.1f}%)")
        print(msg)
    if res["ground_truth_use"]:
        print("uses ground truth: " + "; ".join(res["ground_truth_use"].values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.generate_cam_pseudolabels"))
