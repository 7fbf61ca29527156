"""The command layer: one module per ``pseudo-labels <command>``.

Each module exposes ``add_arguments(parser)`` and ``run(args) -> int``: it maps its flags to a
typed config, calls one library function (``pseudo_labels.stages``) and prints its summary.
:data:`pseudo_labels.cli.COMMANDS` lists them; each also runs as
``python -m pseudo_labels.commands.<module>`` through :func:`module_main` (and, for the names
used before the commands had their own package, as ``python -m pseudo_labels.<module>``).
"""

from __future__ import annotations

import importlib
from typing import Sequence

from pseudo_labels.core.arguments import ArgumentParser, add_common_arguments, run_guarded


def module_main(module_name: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pseudo_labels.commands.<module>``: parse ``argv``, run guarded."""
    mod = importlib.import_module(module_name)
    parser = ArgumentParser(prog="python -m " + module_name,
                                     description=(mod.__doc__ or "").strip().split("\n\n")[0])
    mod.add_arguments(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    return run_guarded(mod.run, args)
