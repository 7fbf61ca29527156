"""Every third-party package that the code imports is declared, and the reverse.

Runs deptry (https://deptry.com) over ``pseudo_labels/``, ``evaluation/`` and ``refs/`` with
the configuration in ``pyproject.toml`` (``[tool.deptry]``): the declared packages are
``requirements-torch.txt`` (the torch pair setup.sh installs first) + ``requirements.txt``
(read through ``[tool.setuptools.dynamic]``); ``requirements-test.txt`` holds test-only
packages. An import of an undeclared package fails (with the package and the importing
file); a declared package that nothing imports is a warning.

Check a machine's install with ``python3 -m pytest -q tests/test_dependencies.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("pseudo_labels", "evaluation", "refs")
#: deptry codes that mean "imported but not declared" (DEP003: installed only as another package's
#: dependency; DEP004: declared only as a test dependency) -> a fresh machine may miss the package
UNDECLARED = {"DEP001", "DEP003", "DEP004"}

def run_deptry(root: Path, tmp_path: Path) -> list[dict]:
    """deptry's findings for the project at ``root``: dicts with code, module, file, line."""
    out = tmp_path / "deptry.json"
    proc = subprocess.run([sys.executable, "-m", "deptry", ".", "--json-output", str(out)], cwd=root,
                          capture_output=True, text=True, timeout=300)
    if not out.exists():
        pytest.fail(f"deptry did not run (exit {proc.returncode}; bash setup.sh installs it from "
                    f"requirements-test.txt): {proc.stderr[-2000:]}")
    return [{"code": v["error"]["code"], "module": v["module"], "message": v["error"]["message"],
             "file": v["location"]["file"], "line": v["location"]["line"]} for v in json.loads(out.read_text())]


def undeclared_messages(findings: list[dict]) -> list[str]:
    return [f"{f['file']}:{f['line']}: imports {f['module']!r}, which no requirements file declares "
            f"({f['code']}: {f['message']}); add it to requirements.txt with a lower bound"
            for f in findings if f["code"] in UNDECLARED]


def test_every_imported_package_is_declared(tmp_path):
    findings = run_deptry(ROOT, tmp_path)
    problems = undeclared_messages(findings)
    assert not problems, "\n".join(problems)
    unused = sorted({f["module"] for f in findings if f["code"] == "DEP002"})
    if unused:
        warnings.warn(f"declared but never imported by {', '.join(SCANNED)}: {', '.join(unused)}")


def test_a_removed_requirement_is_named_with_its_importing_file(tmp_path):
    """The check above can fail: drop scikit-image from a copy of the project and it is caught."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in SCANNED:
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt", "requirements-torch.txt", "requirements-test.txt"):
        shutil.copy(ROOT / name, copy / name)
    req = copy / "requirements.txt"
    lines = req.read_text().splitlines()
    kept = [ln for ln in lines if not ln.startswith("scikit-image")]
    assert len(kept) == len(lines) - 1, "requirements.txt should declare scikit-image"
    req.write_text("\n".join(kept) + "\n")
    problems = undeclared_messages(run_deptry(copy, tmp_path))
    assert any("'skimage'" in p and "pseudo_labels/stages/weak/masks.py" in p for p in problems), problems


def test_declared_packages_that_nothing_imports_are_reported(tmp_path):
    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copytree(ROOT / "refs", copy / "refs", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt", "requirements-torch.txt", "requirements-test.txt"):
        shutil.copy(ROOT / name, copy / name)
    unused = {f["module"] for f in run_deptry(copy, tmp_path) if f["code"] == "DEP002"}
    assert {"cityscapesscripts", "faiss-cpu", "hotcoco"} <= unused  # refs/ alone imports none of them
