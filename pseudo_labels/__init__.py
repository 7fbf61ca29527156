"""pseudo_labels: panoptic and weakly-supervised pseudo-labels without human labels.

- :mod:`pseudo_labels.cli` -- the ``pseudo-labels`` entry point (its ``COMMANDS`` table)
- :mod:`pseudo_labels.commands` -- one thin module per command (flags -> config -> one library call)
- :mod:`pseudo_labels.stages` -- the library, one sub-package per family of stages
- :mod:`pseudo_labels.datasets` -- label tables and file listers of each data set, synthetic sets
- :mod:`pseudo_labels.core` -- errors, file IO, defaults, the per-image runner, flag helpers
"""

import importlib.abc
import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"

#: command modules whose file name changed when the commands moved to ``pseudo_labels.commands``
_RENAMED_COMMANDS = {"sweep_cli": "sweep",
                     # the reference repository's script names (qbit-glitch/monocular_ups pseudo_labels/)
                     "sweep_k50_spidepth": "sweep", "generate_panoptic_pseudolabels": "generate_panoptic"}


class _CommandAlias(importlib.abc.MetaPathFinder):
    """Keeps ``python -m pseudo_labels.<command_module>`` (the spelling before the commands
    had their own package) running ``pseudo_labels.commands.<command_module>``."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package != __name__ or not name or "." in name or name.startswith("_"):
            return None
        file = Path(__file__).parent / "commands" / f"{_RENAMED_COMMANDS.get(name, name)}.py"
        return importlib.util.spec_from_file_location(fullname, file) if file.is_file() else None


sys.meta_path.append(_CommandAlias())
