"""CAUSE-27 semantic pseudo-labels: DINOv2 ViT-B/14 + CAUSE-TR Segment_TR + cluster probe.

27 classes per pixel (uint8 0..26 = Cityscapes labelIds 7..33), written to
``<output-dir>/<split>/<city>/<stem>.png`` with ``<split>/stats.json``; on the same sliding
windows as the semantic stage (crop 322, stride 161, flip-averaged head features, window
log-probabilities averaged). Modes (as the reference's script):

- ``hungarian``: names the 27 clusters with the ground truth of ``--hungarian-split``
  (centre crops; recorded as ground-truth use) -> ``<output-dir>/hungarian_mapping.json``;
- ``generate``: labels for ``--split`` with that mapping;
- ``all`` (default): both.

Weights come only from ``--checkpoint-dir``: ``dinov2_vitb14_pretrain.pth``,
``segment_tr.pth``, ``cluster_tr.pth``, ``modular.npy`` (nothing is downloaded). No CRF is
applied (``--skip-crf`` is accepted and is the behaviour). Remap to trainIds with
``pseudo-labels remap-cause27-to-trainid``.
"""

from __future__ import annotations

import argparse

from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.paths import confine
from pseudo_labels.stages.semantic.cause27 import MODES, SPLITS, Cause27Config, generate_cause27_semantics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=MODES, default="all", help="hungarian, generate or all (default)")
    add_option(parser, "--cityscapes-root", required=True, help="dataset root in the Cityscapes layout")
    add_option(parser, "--output-dir", default=None, help="output folder (default <root>/pseudo_semantic_cause)")
    add_option(parser, "--output-subdir", default=None, help="output folder name under --cityscapes-root instead")
    add_option(parser, "--checkpoint-dir", default="checkpoints",
               help="flat folder with dinov2_vitb14_pretrain.pth, segment_tr.pth, cluster_tr.pth, modular.npy "
                    "(default ./checkpoints)")
    parser.add_argument("--split", choices=SPLITS, default="both", help="split(s) to label (default both)")
    add_option(parser, "--hungarian-split", default="val", help="split whose GT names the clusters (default val)")
    parser.add_argument("--limit", type=int, default=0, help="first N images per split (0 = all)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"),
                        help="cpu (default), cuda, or auto (cuda when available); mps is not supported")
    parser.add_argument("--gpu", type=int, default=0, help="CUDA device index (with --device cuda/auto)")
    parser.add_argument("--backbone", choices=("dinov2_vitb14", "dinov2"), default="dinov2_vitb14",
                        help="dinov2_vitb14 (checked, default) or dinov2 (architecture read from the file)")
    add_option(parser, "--input-size", type=int, default=None,
               help="short side of the network input (default: the crop, 322)")
    add_option(parser, "--skip-crf", action="store_true", help="accepted for compatibility: no CRF is ever applied")
    add_option(parser, "--batch-size", type=int, default=1, help="accepted for compatibility (one image at a time)")
    add_option(parser, "--num-workers", type=int, default=0, help="accepted for compatibility (no effect)")
    add_runner_arguments(parser, workers=1)


def _device(args: argparse.Namespace) -> str:
    import torch

    if args.device == "mps":
        raise PseudoLabelsError("--device mps is not supported; use cpu or cuda")
    if args.device == "auto":
        return f"cuda:{args.gpu}" if torch.cuda.is_available() else "cpu"
    return f"cuda:{args.gpu}" if args.device == "cuda" else "cpu"


def run(args: argparse.Namespace) -> int:
    output_dir = args.output_dir
    if args.output_subdir:
        output_dir = str(confine(args.cityscapes_root, args.output_subdir, "--output-subdir"))  # issue 24
    config = Cause27Config(cityscapes_root=args.cityscapes_root, checkpoint_dir=args.checkpoint_dir,
                           output_dir=output_dir, mode=args.mode, split=args.split,
                           hungarian_split=args.hungarian_split, limit=args.limit, device=_device(args),
                           backbone=args.backbone, input_size=args.input_size)
    result = generate_cause27_semantics(config, runner_options(args))
    mapping = result["mapping"]
    if mapping is not None:
        print(f"hungarian ({mapping['split']}, {mapping['n_images']} images): mIoU(27) {mapping['miou_27class']:.2f}; "
              f"cluster->class {mapping['cluster_to_class']}")
    for split, summary in result["summaries"].items():
        print(f"CAUSE-27 {split}: {summary.line()}")
    print("uses ground truth: yes (cluster names from Hungarian matching on gtFine labelIds)")
    print(f"output: {result['output_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.generate_semantic_pseudolabels_cause"))
