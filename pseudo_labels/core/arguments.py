"""Command-line plumbing shared by every command module: flag spellings, the runner
flags and error handling.

Commands parse flags with these helpers, build a config, call one library function
and print its summary; nothing here knows any stage.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable

from pseudo_labels.core.errors import PseudoLabelsError


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line (``pseudo-labels: error: ...``,
    exit 2) like every other error, instead of the usage text plus a line."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"pseudo-labels: error: {self.prog}: {message} (see {self.prog} --help)\n")


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
    """The flags every per-image stage shares (see :class:`pseudo_labels.core.runner.RunOptions`).

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
    """:class:`~pseudo_labels.core.runner.RunOptions` from the flags of :func:`add_runner_arguments`."""
    from pseudo_labels.core.runner import RunOptions

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


def run_guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command: a :class:`PseudoLabelsError` (or an OS error that escaped the IO layer)
    is one line on stderr and exit 2; inside, the inputs the command's configs name are
    protected from being overwritten (:func:`pseudo_labels.core.paths.guarded`)."""
    from pseudo_labels.core.paths import guarded

    show_tb = getattr(args, "traceback", False) or os.environ.get("PSEUDO_LABELS_TRACEBACK") == "1"
    try:
        with guarded():
            return int(run(args) or 0)
    except OSError as exc:  # the safety net: IO layers turn these into PseudoLabelsError already
        if show_tb:
            traceback.print_exc()
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"pseudo-labels: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except PseudoLabelsError as exc:
        if show_tb:
            traceback.print_exc()
        print("pseudo-labels: error: " + " ".join(str(exc).split("\n")), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pseudo-labels: interrupted; finished outputs are kept, rerun to resume", file=sys.stderr)
        return 130
