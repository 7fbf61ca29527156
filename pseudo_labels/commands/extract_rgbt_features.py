"""Extract frozen backbone features of RGB-thermal images, per modality (rgb / thermal).

Writes ``<out>/<modality>/<split>/<stem>.npy`` (float16, (D, h, w), L2-normalised) and one
manifest per modality; thermal is replicated to 3 channels. Backbones as ``extract-features``:
``builtin`` (hand-made, no weights) or ``dinov2_*`` from a local ``--weights`` file. Finished
files are skipped (resume). The work is :func:`pseudo_labels.stages.rgbt.features.extract_rgbt_features`.
"""

from __future__ import annotations

import argparse

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.datasets.rgbt import MODALITIES, RGBT_MODULES
from pseudo_labels.stages.semantic.features import BACKBONES
from pseudo_labels.stages.rgbt.features import RGBT_FEATURE_INPUT_SIZE, RGBTFeatureConfig, extract_rgbt_features


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--data-root", required=True, help="data-set root (MFNet or PST900 layout)")
    parser.add_argument("--dataset", default="mfnet", choices=sorted(RGBT_MODULES),
                        help="layout of --data-root (default mfnet; the synthetic RGB-T set is mfnet)")
    parser.add_argument("--split", default="train", help="split (default train)")
    parser.add_argument("--modality", nargs="+", default=list(MODALITIES), choices=MODALITIES,
                        help="modalities to extract (default: rgb thermal)")
    parser.add_argument("--backbone", default="builtin", choices=BACKBONES,
                        help="builtin: hand-made colour/texture features (no weights); dinov2_*: from --weights")
    parser.add_argument("--weights", help="local DINOv2 checkpoint (.pth, official keys)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    add_option(parser, "--batch-size", type=int, default=defaults.BATCH_SIZE, help="images per forward pass")
    add_option(parser, "--input-size", type=int, nargs="+", default=[RGBT_FEATURE_INPUT_SIZE], metavar="N",
               help=f"network input H W (multiples of 14), or one value: the short side (default "
                    f"{RGBT_FEATURE_INPUT_SIZE})")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    parser.add_argument("--out", required=True, help="features root (one folder per modality)")
    add_runner_arguments(parser, workers=1)


def config_of(args: argparse.Namespace) -> RGBTFeatureConfig:
    size = list(args.input_size)
    if len(size) not in (1, 2):
        raise PseudoLabelsError(f"--input-size {size}: give H W or a single short side")
    return RGBTFeatureConfig(
        data_root=args.data_root, out=args.out, dataset=args.dataset, split=args.split,
        modalities=tuple(dict.fromkeys(args.modality)), backbone=args.backbone, weights=args.weights,
        device=args.device, batch_size=args.batch_size, input_size=size[0] if len(size) == 1 else tuple(size),
        limit=args.limit)


def run(args: argparse.Namespace) -> int:
    summary = extract_rgbt_features(config_of(args), runner_options(args))
    print(summary.line())
    summary.raise_if_failed()
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.extract_rgbt_features"))
