"""The import rules of the layout (docs/architecture.md), checked from the source.

- import-linter contracts in ``pyproject.toml`` (``[tool.importlinter]``): the library layers
  stages -> datasets -> core never import upwards; ``evaluation`` imports nothing from
  ``pseudo_labels``; ``refs`` imports nothing of ours; no import cycles among siblings.
- Commands (the top-level modules of ``pseudo_labels``, e.g. ``pseudo_labels.commands.generate_panoptic``)
  import no other command and not the ``pseudo-labels`` dispatcher; the library imports no command.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("pseudo_labels.core", "pseudo_labels.datasets", "pseudo_labels.stages")
COMMANDS_PACKAGE = "pseudo_labels.commands"
DISPATCHER = "pseudo_labels.cli"
FAMILIES = {"semantic", "instance", "refine", "rgbt", "weak", "outputs"}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("pseudo_labels", "evaluation", "refs", cache_dir=None)


def command_modules(graph: grimp.ImportGraph) -> set[str]:
    """The modules of ``pseudo_labels.commands`` (one per ``pseudo-labels <command>``)."""
    return set(graph.find_children(COMMANDS_PACKAGE))


def test_import_linter_contracts_hold():
    proc = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()", "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and "KEPT" in proc.stdout


def test_commands_import_no_other_command(graph):
    commands = command_modules(graph)
    assert {"pseudo_labels.commands.generate_panoptic", "pseudo_labels.commands.demo", "pseudo_labels.commands.run"} <= commands
    bad = [f"{c} imports {m}" for c in sorted(commands)
           for m in sorted(graph.find_modules_directly_imported_by(c)) if m in commands or m == DISPATCHER]
    assert not bad, "\n".join(bad)


def test_library_imports_no_command(graph):
    commands = command_modules(graph) | {DISPATCHER}
    library = {d for pkg in LIBRARY for d in graph.find_descendants(pkg)} | set(LIBRARY)
    bad = [f"{m} imports {i}" for m in sorted(library)
           for i in sorted(graph.find_modules_directly_imported_by(m)) if i in commands]
    assert not bad, "\n".join(bad)


def test_every_command_is_registered_and_registered_commands_exist(graph):
    from pseudo_labels.cli import COMMANDS

    registered = {module for module, _ in COMMANDS.values()}
    assert registered <= command_modules(graph), registered - command_modules(graph)
    assert command_modules(graph) <= registered, command_modules(graph) - registered


#: a command longer than this is doing a stage's work (parse flags, build a config, call one function)
COMMAND_MAX_LINES = 150


def test_commands_are_thin(graph):
    long = {}
    for module in sorted(command_modules(graph)):
        path = ROOT / (module.replace(".", "/") + ".py")
        n = len(path.read_text().splitlines())
        if n > COMMAND_MAX_LINES:
            long[module] = n
    assert not long, f"commands over {COMMAND_MAX_LINES} lines (move the work into pseudo_labels/stages): {long}"


def test_the_tree_shows_the_product(graph):
    """Beside the packages only the entry point; inside ``stages`` only families and the pipeline."""
    top = {m.rpartition(".")[2] for m in graph.find_children("pseudo_labels")}
    assert top == {"cli", "commands", "core", "datasets", "stages"}, top
    stages = {m.rpartition(".")[2] for m in graph.find_children("pseudo_labels.stages")}
    assert stages == FAMILIES | {"pipeline"}, stages
    for family in FAMILIES:
        assert graph.find_children(f"pseudo_labels.stages.{family}"), family


def test_old_command_module_names_still_run():
    """``python -m pseudo_labels.<module>`` (the spelling before ``commands/``) runs the command."""
    for old in ("generate_overclustered_semantics", "sweep_cli"):
        proc = subprocess.run([sys.executable, "-m", f"pseudo_labels.{old}", "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "usage: python -m pseudo_labels.commands." in proc.stdout, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "pseudo_labels.no_such_command"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "No module named" in proc.stderr
