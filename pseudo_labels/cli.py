"""The ``pseudo-labels`` command: one subcommand per stage.

Each command is a module ``pseudo_labels.commands.<module>`` exposing ``add_arguments(parser)``
and ``run(args) -> int``; the same module runs as ``python -m pseudo_labels.commands.<module>``
through :func:`pseudo_labels.commands.module_main`. Only the chosen
subcommand's module is imported, so ``pseudo-labels --help`` is quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from pseudo_labels.core.arguments import add_common_arguments, run_guarded

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pseudo_labels.commands.demo", "run the whole pipeline on a built-in synthetic city"),
    "synth": ("pseudo_labels.commands.synth", "write a synthetic city in the Cityscapes layout (with GT, disparity, camera)"),
    "prepare-gt": ("pseudo_labels.commands.prepare_gt", "make panoptic GT and trainId maps from gtFine with cityscapesscripts, into a cache"),
    "extract-features": ("pseudo_labels.commands.extract_features", "dense self-supervised ViT patch features per image"),
    "generate-overclustered-semantics": (
        "pseudo_labels.commands.generate_overclustered_semantics",
        "features -> k-means over-clustering -> cluster-to-class semantic pseudo-labels",
    ),
    "generate-depth": ("pseudo_labels.commands.generate_depth", "depth maps from disparity, .npy folders or a monocular network"),
    "generate-depth-guided-instances": (
        "pseudo_labels.commands.generate_depth_guided_instances",
        "split thing classes into instances with depth edges + connected components",
    ),
    "generate-panoptic": ("pseudo_labels.commands.generate_panoptic", "assemble Cityscapes-panoptic PNG + JSON"),
    "evaluate": ("pseudo_labels.commands.evaluate", "PQ/SQ/RQ (and mIoU) against Cityscapes panoptic ground truth"),
    "sweep": ("pseudo_labels.commands.sweep", "grid over k x tau x A_min (x sigma), JSON/CSV/heatmap"),
    "convert-to-cups-format": ("pseudo_labels.commands.convert_to_cups_format", "export panoptic pseudo-labels for CUPS training"),
    "export-coco": ("pseudo_labels.commands.export_coco", "export panoptic pseudo-labels as COCO panoptic"),
    "visualize": ("pseudo_labels.commands.visualize", "per-image overlay panels and a contact sheet"),
    "report": ("pseudo_labels.commands.report", "markdown report from a sweep JSON"),
    "train-cam": ("pseudo_labels.commands.train_cam", "train a tag classifier (CAMs) with the depth edge alignment loss"),
    "generate-cam-pseudolabels": ("pseudo_labels.commands.generate_cam_pseudolabels", "semantic pseudo-labels from CAMs"),
    "synth-rgbt": ("pseudo_labels.commands.synth_rgbt", "write a synthetic RGB-thermal set in the MFNet layout (day + night)"),
    "run": ("pseudo_labels.commands.run", "run the whole pipeline from one TOML config (resumable)"),
    "extract-rgbt-features": ("pseudo_labels.commands.extract_rgbt_features", "backbone features of RGB-T images, per modality"),
    "train-crm": ("pseudo_labels.commands.train_crm", "train a CRM student (complementary random masking) on pseudo-labels"),
    "generate-crm-pseudolabels": ("pseudo_labels.commands.generate_crm_pseudolabels", "semantic labels from a trained CRM student"),
    "generate-dynaseg-segments": ("pseudo_labels.commands.generate_dynaseg_segments", "unsupervised DynaSeg segments per image"),
    "evaluate-segments": ("pseudo_labels.commands.evaluate_segments", "score unsupervised segments against COCO-Stuff-27 / VOC / BSD500 ground truth (DynaSeg protocols)"),
    "refine-semantics": ("pseudo_labels.commands.refine_semantics", "refine semantic pseudo-labels (DynaSeg segments, dense CRF)"),
    "generate-semantic-pseudolabels-cause": (
        "pseudo_labels.commands.generate_semantic_pseudolabels_cause",
        "CAUSE-27 semantic pseudo-labels (DINOv2 + Segment_TR + cluster probe, Hungarian-named)",
    ),
    "remap-cause27-to-trainid": ("pseudo_labels.commands.remap_cause27_to_trainid", "remap CAUSE 27-class PNGs to 19 trainIds"),
    "classify-stuff-things": ("pseudo_labels.commands.classify_stuff_things", "the reference's depth-split stuff/things rule -> stuff_things.json"),
    "train-darts": ("pseudo_labels.commands.train_darts", "train the DARTS RGB-thermal fusion head on frozen features"),
    "generate-darts-semantics": (
        "pseudo_labels.commands.generate_darts_semantics",
        "DARTS fused codes (or rgb/thermal/concat features) -> k-means -> semantic pseudo-labels, day/night scores",
    ),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    from pseudo_labels import __version__

    parser = argparse.ArgumentParser(
        prog="pseudo-labels",
        description="Pseudo-labels for panoptic / semantic segmentation without human labels.",
    )
    parser.add_argument("--version", action="version", version=f"pseudo_labels {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            mod = importlib.import_module(module)
            if mod.__doc__:
                p.description = mod.__doc__.strip().split("\n\n")[0]
            mod.add_arguments(p)
            add_common_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is not None and command not in COMMANDS:
        command = None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return run_guarded(args._run, args)


if __name__ == "__main__":
    sys.exit(main())
