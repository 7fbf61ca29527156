"""Write a synthetic RGB-thermal set in the MFNet layout (day + night frames, 9-class labels).

The generator lives in :mod:`pseudo_labels.datasets.synthetic_rgbt`.
"""

from __future__ import annotations

import argparse

from pseudo_labels.core.arguments import add_option
from pseudo_labels.commands import module_main
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.datasets.synthetic_rgbt import (
    DEFAULT_NIGHT_FRACTION, DEFAULT_SIZE, DEFAULT_SPLIT, write_synthetic_rgbt,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--out", required=True, help="data-set root to write (MFNet layout)")
    add_option(parser, "--n", type=int, default=8, help="number of frames (default 8)")
    add_option(parser, "--seed", type=int, default=0, help="random seed (default 0)")
    add_option(parser, "--size", type=int, nargs=2, metavar=("H", "W"), default=list(DEFAULT_SIZE),
               help=f"frame size in pixels (default {DEFAULT_SIZE[0]} {DEFAULT_SIZE[1]}; MFNet is 480 640)")
    add_option(parser, "--split", default=DEFAULT_SPLIT, help=f"split name, written to <split>.txt "
               f"(default {DEFAULT_SPLIT}); run once per split into one root")
    add_option(parser, "--night-fraction", type=float, default=DEFAULT_NIGHT_FRACTION, metavar="F",
               help=f"fraction of night frames, rounded up (default {DEFAULT_NIGHT_FRACTION})")
    add_option(parser, "--workers", type=int, default=1, help="parallel processes (default 1)")


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise PseudoLabelsError(f"--n {args.n}: need at least one frame")
    h, w = args.size
    if h < 64 or w < 128:
        raise PseudoLabelsError(f"--size {h} {w}: need at least 64 128")
    if not 0.0 <= args.night_fraction <= 1.0:
        raise PseudoLabelsError(f"--night-fraction {args.night_fraction}: need 0 <= F <= 1")
    if not args.split or any(c in args.split for c in "/\\ ") or args.split.startswith("."):
        raise PseudoLabelsError(f"--split {args.split!r}: need a plain name such as train, val or test")
    names = write_synthetic_rgbt(args.out, args.n, seed=args.seed, size=(h, w), split=args.split,
                                 night_fraction=args.night_fraction, workers=args.workers)
    nights = sum(n.endswith("N") for n in names)
    print(f"wrote {len(names)} RGB-T frames ({nights} night, {h}x{w}, split {args.split}) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.synth_rgbt"))
