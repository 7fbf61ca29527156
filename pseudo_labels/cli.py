"""The ``pseudo-labels`` command: one subcommand per stage.

Each stage has a CLI module ``pseudo_labels.<module>`` exposing
``add_arguments(parser)`` and ``run(args) -> int``; the same module runs as
``python -m pseudo_labels.<module>`` through :func:`module_main`. Only the chosen
subcommand's module is imported, so ``pseudo-labels --help`` is quick.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import Callable, Sequence

from .errors import PseudoLabelsError

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pseudo_labels.demo", "run the whole pipeline on a built-in synthetic city"),
    "synth": ("pseudo_labels.synth", "write a synthetic city in the Cityscapes layout (with GT, disparity, camera)"),
    "extract-features": ("pseudo_labels.extract_features", "dense self-supervised ViT patch features per image"),
    "generate-overclustered-semantics": (
        "pseudo_labels.generate_overclustered_semantics",
        "features -> k-means over-clustering -> cluster-to-class semantic pseudo-labels",
    ),
    "generate-depth": ("pseudo_labels.generate_depth", "depth maps from disparity, .npy folders or a monocular network"),
    "generate-depth-guided-instances": (
        "pseudo_labels.generate_depth_guided_instances",
        "split thing classes into instances with depth edges + connected components",
    ),
    "generate-panoptic": ("pseudo_labels.generate_panoptic", "assemble Cityscapes-panoptic PNG + JSON"),
    "evaluate": ("pseudo_labels.evaluate", "PQ/SQ/RQ (and mIoU) against Cityscapes panoptic ground truth"),
    "sweep": ("pseudo_labels.sweep_cli", "grid over k x tau x A_min (x sigma), JSON/CSV/heatmap"),
    "convert-to-cups-format": ("pseudo_labels.convert_to_cups_format", "export panoptic pseudo-labels for CUPS training"),
    "export-coco": ("pseudo_labels.export_coco", "export panoptic pseudo-labels as COCO panoptic"),
    "visualize": ("pseudo_labels.visualize", "per-image overlay panels and a contact sheet"),
    "report": ("pseudo_labels.report", "markdown report from a sweep JSON"),
    "train-cam": ("pseudo_labels.train_cam", "train a tag classifier (CAMs) with the depth edge alignment loss"),
    "generate-cam-pseudolabels": ("pseudo_labels.generate_cam_pseudolabels", "semantic pseudo-labels from CAMs"),
}


def add_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, *more: str, **kwargs):
    """``parser.add_argument`` that also accepts the underscore spelling of ``--a-b`` (``--a_b``)."""
    names = [flag, *more]
    for n in (flag, *more):
        if n.startswith("--") and "-" in n[2:]:
            alt = "--" + n[2:].replace("-", "_")
            if alt not in names:
                names.append(alt)
    return parser.add_argument(*names, **kwargs)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise PseudoLabelsError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise PseudoLabelsError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def add_runner_arguments(parser: argparse.ArgumentParser, *, workers: int = 1, shard: bool = True,
                         overwrite: bool = True) -> None:
    """The flags every per-image stage shares (see :class:`pseudo_labels.runner.RunOptions`).

    ``workers`` is the stage's default worker count; ``shard``/``overwrite`` False leave those
    flags out for stages where they mean nothing (a whole-split score has no shards).
    """
    g = parser.add_argument_group("running (local pool, Ray, shards, resume)")
    add_option(g, "--workers", type=int, default=workers,
               help=f"worker processes (local pool) or Ray tasks in flight per CPU (default {workers})")
    add_option(g, "--executor", choices=("local", "ray"), default="local",
               help="local process pool (default) or Ray")
    add_option(g, "--ray-address", default=None,
               help="address of a running Ray cluster (with --executor ray; default: start a local instance)")
    if shard:
        add_option(g, "--shard", default=None, metavar="I/N",
                   help="process only shard I of N (0-based) of the sorted image list; shards write into "
                        "the same output folder and together equal an unsharded run")
    add_option(g, "--fail-fast", action="store_true",
               help="stop at the first failed image (default: go on, name failures in the summary, exit 2)")
    if overwrite:
        add_option(g, "--overwrite", action="store_true",
                   help="recompute finished outputs and replace outputs made with other parameters")


def runner_options(args: argparse.Namespace):
    """:class:`~pseudo_labels.runner.RunOptions` from the flags of :func:`add_runner_arguments`."""
    from .runner import RunOptions

    workers = int(getattr(args, "workers", 1))
    if workers < 1:
        raise PseudoLabelsError(f"--workers {workers}: need at least 1")
    executor = getattr(args, "executor", "local")
    if getattr(args, "ray_address", None) and executor != "ray":
        raise PseudoLabelsError("--ray-address needs --executor ray")
    return RunOptions(
        workers=workers,
        executor=executor,
        ray_address=getattr(args, "ray_address", None),
        shard=parse_shard(getattr(args, "shard", None)),
        fail_fast=bool(getattr(args, "fail_fast", False)),
        overwrite=bool(getattr(args, "overwrite", False)),
    )


def _run_guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    show_tb = getattr(args, "traceback", False) or os.environ.get("PSEUDO_LABELS_TRACEBACK") == "1"
    try:
        return int(run(args) or 0)
    except PseudoLabelsError as exc:
        if show_tb:
            traceback.print_exc()
        print(f"pseudo-labels: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pseudo-labels: interrupted; finished outputs are kept, rerun to resume", file=sys.stderr)
        return 130


def module_main(module_name: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pseudo_labels.<module>``."""
    mod = importlib.import_module(module_name)
    prog = "python -m " + module_name
    parser = argparse.ArgumentParser(prog=prog, description=(mod.__doc__ or "").strip().split("\n\n")[0])
    mod.add_arguments(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    return _run_guarded(mod.run, args)


def build_parser(command: str | None) -> argparse.ArgumentParser:
    from . import __version__

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
    return _run_guarded(args._run, args)


if __name__ == "__main__":
    sys.exit(main())
