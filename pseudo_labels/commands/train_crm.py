"""Train a CRM student (per-modality encoders, max fusion, light decoder) on pseudo-labels or GT.

Complementary random masking, self-distillation (L_SDC, L_SDN) and modality-wise supervision
(L_MWS) after CRM (arXiv 2303.17386); see :mod:`pseudo_labels.stages.rgbt.crm`. RGB-T data sets
(``mfnet``, ``pst900``) default to the released settings (``random-complementary`` masking = the
release's ``rand_comp``, 32 px patches, ratio 0.5, L_MWS weight 1) except the SD weights (ours:
0.1, the release's 1: see reports/rgbt_crm.md); ``cityscapes`` (RGB only) trains without masking
and SD / MWS losses.
The run folder gets ``checkpoint.pt`` after every epoch (a rerun resumes from it),
``train_log.json`` and ``manifest.json``. ``--labels gt`` trains on ground truth (recorded).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pseudo_labels.core.arguments import add_option
from pseudo_labels.commands import module_main
from pseudo_labels.stages.rgbt import crm


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--data-root", required=True, help="data-set root (MFNet / PST900 / Cityscapes layout)")
    add_option(parser, "--dataset", required=True, choices=("mfnet", "pst900", "cityscapes"))
    add_option(parser, "--split", default="train", help="split to train on (default: train)")
    src = parser.add_mutually_exclusive_group(required=True)
    add_option(src, "--labels-dir", help="folder of pseudo-label PNGs <name>.png (searched recursively; a relative "
                                         "path may also be under --data-root)")
    add_option(src, "--labels", choices=("gt",), help="gt: train on the data set's ground truth (recorded)")
    add_option(parser, "--num-classes", type=int, default=None,
               help="classes of the labels (default: the data set's; e.g. k for raw clusters)")
    add_option(parser, "--out", required=True, help="run folder (checkpoint.pt, train_log.json, manifest.json)")
    g = parser.add_argument_group("CRM")
    add_option(g, "--masking", choices=crm.MASKINGS, default=None,
               help="none | random (independent per modality) | complementary (a patch hidden in RGB is seen in "
                    "thermal and vice versa) | random-complementary (the release's rand_comp: per image RGB "
                    "masked, thermal masked, or both complementary, equally likely); default: "
                    "random-complementary for RGB-T, none for RGB")
    add_option(g, "--mask-patch-size", type=int, default=crm.CRM_MASK_PATCH,
               help=f"mask patch side in pixels (8, 16, 32, 64; default {crm.CRM_MASK_PATCH})")
    add_option(g, "--mask-ratio", type=float, default=crm.CRM_MASK_RATIO,
               help=f"fraction of patches hidden in RGB (default {crm.CRM_MASK_RATIO})")
    for name, default in (("sdc", crm.CRM_SDC_WEIGHT), ("sdn", crm.CRM_SDN_WEIGHT), ("mws", crm.CRM_MWS_WEIGHT)):
        add_option(g, f"--{name}-weight", type=float, default=None,
                   help=f"weight of L_{name.upper()} (0: off; default {default} for RGB-T"
                        f"{' with masking' if name != 'mws' else ''}, 0 otherwise)")
    m = parser.add_argument_group("model and optimisation")
    add_option(m, "--backbone", default=crm.CRM_BACKBONE,
               help="tiny (builtin CNN) or a timm CNN name (e.g. resnet18), random init unless --backbone-weights")
    add_option(m, "--backbone-weights", default=None, help="local weights file of the timm backbone")
    add_option(m, "--width", type=int, default=crm.CRM_WIDTH, help="tiny backbone: channels at stride 4")
    add_option(m, "--decoder-dim", type=int, default=crm.CRM_DECODER_DIM)
    add_option(m, "--epochs", type=int, default=crm.CRM_EPOCHS)
    add_option(m, "--batch-size", type=int, default=crm.CRM_BATCH_SIZE)
    add_option(m, "--lr", type=float, default=crm.CRM_LR)
    add_option(m, "--weight-decay", type=float, default=crm.CRM_WEIGHT_DECAY)
    add_option(m, "--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
               help="train (and predict) at this size (default: the images' size)")
    add_option(m, "--no-flip", action="store_true", help="no random horizontal flips")
    add_option(m, "--seed", type=int, default=crm.CRM_SEED)
    add_option(m, "--device", choices=("cpu", "cuda"), default="cpu")
    add_option(m, "--no-amp", action="store_true", help="CUDA: no mixed precision (float16 autocast is the default)")
    add_option(m, "--restart", action="store_true", help="discard an existing checkpoint instead of resuming")


def config_from_args(args: argparse.Namespace) -> crm.CRMTrainConfig:
    return crm.CRMTrainConfig(
        data_root=args.data_root, dataset=args.dataset, out=args.out, labels_dir=args.labels_dir,
        labels="gt" if args.labels == "gt" else "pseudo", split=args.split, num_classes=args.num_classes,
        masking=args.masking, mask_patch_size=args.mask_patch_size, mask_ratio=args.mask_ratio,
        sdc_weight=args.sdc_weight, sdn_weight=args.sdn_weight, mws_weight=args.mws_weight, backbone=args.backbone,
        backbone_weights=args.backbone_weights, width=args.width, decoder_dim=args.decoder_dim, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        input_size=tuple(args.input_size) if args.input_size else None, hflip=not args.no_flip, seed=args.seed,
        device=args.device, amp=not args.no_amp, restart=args.restart)


def run(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        print(f"train-crm: {msg}", file=sys.stderr)

    res = crm.train_crm(config_from_args(args), log=log)
    last = res["history"][-1] if res["history"] else {}
    print(f"trained {res['epochs']} epochs on {res['n_images']} images in {res['seconds']:.1f}s "
          f"({res['seconds_per_epoch']:.2f}s/epoch, peak memory {res['peak_memory_mb']} MiB); "
          f"final loss {last.get('loss', float('nan')):.4f}; checkpoint {Path(res['run_dir']) / crm.CHECKPOINT_NAME}")
    print(f"uses ground truth: {'yes (training labels)' if res['uses_ground_truth'] else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.train_crm"))
