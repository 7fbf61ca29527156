"""Depth maps per image from stereo disparity, a folder of .npy maps, SPIdepth or Depth Anything V2.

Writes float32 ``<out>/<split>/<city>/<stem>.npy`` (one per image of the split) and a
``manifest.json``. Sources:

- ``disparity``: Cityscapes ``disparity/`` + ``camera/`` files under the root;
  ``depth = baseline * fx / ((p - 1) / 256)`` metres, invalid pixels (p <= 1) take the
  value of the nearest valid pixel.
- ``npy``: an existing folder of depth maps (``--input-dir``), paired by Cityscapes stem
  (flat or ``<split>/<city>/`` layout).
- ``spidepth``: the SPIdepth Cityscapes network (``--weights`` = folder with
  ``encoder.pth`` and ``depth.pth``), see ``refs/spidepth``.
- ``depth-anything``: Depth Anything V2 from a local ``transformers`` folder
  (``--model-dir``); its relative inverse depth is turned into depth as 1 / disparity.

With ``--normalize minmax`` (default, what the reference stores) every map is scaled
to [0, 1] per image; ``--normalize none`` keeps metres (disparity, SPIdepth) or the
network's relative depth units.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.paths import confine
from pseudo_labels.stages.instance.depth import SOURCES, DepthConfig, generate_depth_maps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--cityscapes-root", required=True, help="dataset root in the Cityscapes layout")
    parser.add_argument("--split", default="val", help="split to process (default: val)")
    parser.add_argument("--source", required=True, choices=SOURCES, help="where depth comes from")
    out = parser.add_mutually_exclusive_group(required=True)
    add_option(out, "--output-dir", help="output folder (maps go to <dir>/<split>/<city>/<stem>.npy)")
    add_option(out, "--output-subdir", help="output folder name under --cityscapes-root (e.g. depth_spidepth)")
    add_option(parser, "--input-dir", help="--source npy: folder of <stem>*.npy depth maps (searched recursively)")
    parser.add_argument("--weights", help="--source spidepth: folder with encoder.pth and depth.pth (or one .pth/.pt file)")
    add_option(parser, "--model-dir", help="--source depth-anything: local transformers folder (config.json, weights, preprocessor)")
    parser.add_argument("--normalize", choices=("minmax", "none"), default=defaults.DEPTH_NORMALIZE,
                        help="per-image min-max to [0, 1] (default, as the reference) or none (metres / network units)")
    add_option(parser, "--spidepth-preprocess", choices=("spidepth", "full-frame"), default=defaults.SPIDEPTH_PREPROCESS,
               help="spidepth: 'spidepth' (default, what the network was trained and evaluated on for Cityscapes: "
                    f"cut the bottom {round(defaults.SPIDEPTH_CITYSCAPES_CROP_FRACTION * 100)}%% rows (ego car), "
                    "resize the rest to the network input (encoder.pth height/width, else "
                    f"{defaults.SPIDEPTH_INPUT_SIZE[0]}x{defaults.SPIDEPTH_INPUT_SIZE[1]}), predict, paste back; the cut "
                    "rows repeat the last predicted row); 'full-frame' (the reference's way: the whole image "
                    "resized to the network input, no crop)")
    add_option(parser, "--no-flip", action="store_true",
               help="spidepth: do not average with the prediction of the mirrored image")
    add_option(parser, "--output-size", help="HxW of the written maps (default: the image/disparity size)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="network sources: cpu or cuda")
    add_runner_arguments(parser, workers=1)  # network sources always run in one process


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"HxW"`` (or ``"H,W"``) -> (H, W); None stays None."""
    if text is None:
        return None
    try:
        h, w = (int(x) for x in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise PseudoLabelsError(f"--output-size {text!r}: expected HxW, e.g. 512x1024") from None
    if h <= 0 or w <= 0:
        raise PseudoLabelsError(f"--output-size {text!r}: sides must be positive")
    return h, w


def output_dir_of(args: argparse.Namespace) -> Path:
    if getattr(args, "output_dir", None):
        return Path(args.output_dir)
    return confine(args.cityscapes_root, args.output_subdir, "--output-subdir")  # stays inside the root (issue 24)


def config_from_args(args: argparse.Namespace) -> DepthConfig:
    return DepthConfig(
        cityscapes_root=args.cityscapes_root, source=args.source, output_dir=str(output_dir_of(args)),
        split=args.split, input_dir=args.input_dir, weights=args.weights, model_dir=args.model_dir,
        normalize=args.normalize, output_size=parse_size(args.output_size),
        spidepth_preprocess=args.spidepth_preprocess, flip=not args.no_flip, device=args.device,
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    summary = generate_depth_maps(config, runner_options(args))
    print(f"generate-depth: {output_dir_of(args)}: {summary.line()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.generate_depth"))
