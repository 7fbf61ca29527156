"""Semantic labels from a trained CRM student (``pseudo-labels train-crm``), one PNG per image.

Writes ``<out>/<split>/<name>.png`` (uint8 class ids of the run's label space; Cityscapes:
``<split>/<city>/<stem>.png``) and ``manifest.json``; when every image has ground truth,
``crm_eval.json`` with mIoU overall / day / night (scores only; ``--miou-convention official``,
the default, is the release's: absent classes IoU 0, mean over all classes; ``present`` is ours;
both values are always in the file). ``--modality rgb|thermal``
drops the other modality at test time (all of its patches hidden). Data root, data set and
split default to the run's. Reruns skip finished images (per-image runner: pool, Ray, shards).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.rgbt import crm


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--run", required=True, help="run folder of train-crm (or its checkpoint.pt)")
    add_option(parser, "--data-root", default=None, help="data-set root (default: the run's)")
    add_option(parser, "--dataset", choices=("mfnet", "pst900", "cityscapes"), default=None,
               help="data set (default: the run's)")
    add_option(parser, "--split", default=None, help="split to label (default: the run's training split)")
    out = parser.add_mutually_exclusive_group(required=True)
    add_option(out, "--output-subdir", help="output folder name under the data root")
    add_option(out, "--output-dir", help="output folder")
    add_option(parser, "--modality", choices=crm.MODALITY_CHOICES, default="both",
               help="both (default), or predict from rgb / thermal alone (the other modality dropped)")
    add_option(parser, "--device", choices=("cpu", "cuda"), default="cpu")
    add_option(parser, "--miou-convention", choices=crm.MIOU_CONVENTIONS, default="official",
               help="official (the release's: absent classes 0, mean over all classes; default) or present (ours)")
    add_runner_arguments(parser, workers=1)


def run(args: argparse.Namespace) -> int:
    if args.output_dir:
        out_dir = Path(args.output_dir)
    else:
        root = args.data_root or crm.load_checkpoint(args.run).get("meta", {}).get("data_root")
        if not root:
            raise PseudoLabelsError("--output-subdir needs --data-root (the run does not name its data root)")
        out_dir = Path(root) / args.output_subdir
    config = crm.CRMLabelConfig(run=args.run, output_dir=str(out_dir), data_root=args.data_root,
                                dataset=args.dataset, split=args.split, modality=args.modality, device=args.device,
                                miou_convention=args.miou_convention)
    res = crm.generate_crm_pseudolabels(config, runner_options(args),
                                        log=lambda m: print(f"generate-crm-pseudolabels: {m}", file=sys.stderr))
    print(f"{res['n_images']} images of {res['dataset']}/{res['split']} ({res['modality']}): done {res['done']}, "
          f"skipped {res['skipped_existing']} (already finished) -> {out_dir}")
    if "scores" in res:
        s = res["scores"]
        parts = [f"{k} {v['mIoU']:.2f}" for k, v in s.items()]
        print(f"mIoU against ground truth (scores only, {res['miou_convention']} convention): {', '.join(parts)} "
              f"-> {out_dir / crm.EVAL_NAME}")
    used = "yes (the student was trained with labels that used it)" if res["uses_ground_truth"] else "no"
    print(f"uses ground truth: {used}")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.generate_crm_pseudolabels"))
