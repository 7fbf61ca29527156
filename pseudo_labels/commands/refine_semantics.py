"""Refine semantic pseudo-labels: majority label inside DynaSeg segments, or a dense CRF.

Every PNG below ``--semantic-dir`` (trainIds, void 255) is written to the same relative
path below ``--output-dir``. ``--method dynaseg`` needs ``--segments-dir`` (from
``generate-dynaseg-segments``), ``--method crf`` needs ``--images-dir`` and the
``pydensecrf2`` package, ``--method none`` copies (baseline). Files of one image are
paired by Cityscapes stem (or by relative path). Reads no labels.
"""

from __future__ import annotations

import argparse
import sys

from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.stages.refine import refine_semantics as refine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--semantic-dir", required=True, help="semantic PNGs (e.g. <root>/pseudo_semantic_k80/val)")
    parser.add_argument("--method", choices=refine.METHODS, required=True,
                        help="dynaseg (majority in segments), crf (dense CRF) or none (copy)")
    add_option(parser, "--segments-dir", help="dynaseg: segment PNGs from generate-dynaseg-segments")
    add_option(parser, "--images-dir", help="crf: RGB images (e.g. <root>/leftImg8bit/val)")
    add_option(parser, "--whole-segments", action="store_true",
               help="dynaseg: one region per segment id (default: each 4-connected piece of a segment)")
    add_option(parser, "--output-dir", required=True, help="where the refined PNGs go")
    add_option(parser, "--num-labels", type=int, default=19, help="crf: number of classes (default 19)")
    g = parser.add_argument_group("dense CRF (defaults: the CAUSE / STEGO scripts)")
    add_option(g, "--crf-iterations", type=int, default=refine.CRF_ITERATIONS)
    add_option(g, "--crf-pos-xy-std", type=float, default=refine.CRF_POS_XY_STD)
    add_option(g, "--crf-pos-weight", type=float, default=refine.CRF_POS_WEIGHT)
    add_option(g, "--crf-bi-xy-std", type=float, default=refine.CRF_BI_XY_STD)
    add_option(g, "--crf-bi-rgb-std", type=float, default=refine.CRF_BI_RGB_STD)
    add_option(g, "--crf-bi-weight", type=float, default=refine.CRF_BI_WEIGHT)
    add_option(g, "--crf-gt-prob", type=float, default=refine.CRF_GT_PROB,
               help="unary: probability of a pixel's own label (default %(default)s)")
    add_runner_arguments(parser, workers=1)


def config_from_args(args: argparse.Namespace) -> refine.RefineConfig:
    crf = refine.CrfParams(iterations=args.crf_iterations, pos_xy_std=args.crf_pos_xy_std,
                           pos_weight=args.crf_pos_weight, bi_xy_std=args.crf_bi_xy_std,
                           bi_rgb_std=args.crf_bi_rgb_std, bi_weight=args.crf_bi_weight, gt_prob=args.crf_gt_prob)
    return refine.RefineConfig(semantic_dir=args.semantic_dir, output_dir=args.output_dir, method=args.method,
                               segments_dir=args.segments_dir, images_dir=args.images_dir,
                               num_labels=args.num_labels, crf=crf, connected=not args.whole_segments)


def run(args: argparse.Namespace) -> int:
    result = refine.refine_semantics(config_from_args(args), runner_options(args))
    print(f"refine-semantics ({args.method}): {args.output_dir}: {result['summary']}; "
          f"{100 * result['changed_pixel_fraction']:.2f}% of pixels changed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.refine_semantics"))
