"""Where the tool may read and write: one helper for each rule.

- :func:`confine`: every path built from a user-given name (a sub-folder name, ``--name``,
  a split-list entry, a JSON ``file_name``, a config key) is resolved (``..`` and symlinks)
  and must stay inside its root; the offending value is named otherwise.
- :func:`check_name`: the same rule before the root exists (config validation): a relative
  name that does not climb out (``a/b`` yes; ``../x``, ``/x``, ``a/../../x`` no).
- :func:`refuse_overlap`: an output folder that equals, contains or lies inside an input
  folder is refused, unless the input is a *data root* and the output is a dedicated
  sub-folder of it that holds none of the root's input folders (``<root>/pseudo_sem`` beside
  ``<root>/leftImg8bit``). The input folders are then registered with the write layer.
- :func:`check_replace`: the write layer (:func:`pseudo_labels.core.io.atomic_path`) refuses
  to replace an existing file that is a registered input, or that lies inside a registered
  input folder (a plain input, or a data folder of a data root) and is claimed by no manifest of ours;
  in the folder of a single output file the command names (``evaluate --out x.json``; sweep's CSV
  and heatmaps beside its JSON), outside its output folders, it also refuses to replace an existing
  file that is not ours: covered by no manifest of ours (in its folder or above) and not recorded,
  with the bytes it has now, in the claims record of its folder (:data:`CLAIMS_NAME`).
- :func:`claim_update`: after the write layer writes such a single file, its name and sha256 go
  into that claims record; a rerun of the same command may then replace it, a file the user made
  or edited since may not.

Every refusal is a :class:`~pseudo_labels.core.errors.PseudoLabelsError` (one line, exit 2).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from pseudo_labels.core.errors import PseudoLabelsError

#: folders of a data root that hold inputs (Cityscapes, MFNet / PST900, COCO-Stuff, image
#: folders); an output folder must not be, contain or lie inside one of them
DATA_FOLDERS = ("leftImg8bit", "gtFine", "gtCoarse", "disparity", "camera", "images", "labels", "thermal",
                "annotations", "train", "val", "test")

#: the environment variable that carries the registered inputs into worker processes
_ENV = "PSEUDO_LABELS_PROTECTED_INPUTS"
_ENV_OWN = "PSEUDO_LABELS_OWN_OUTPUTS"

#: the claims record of a folder: the single files pseudo_labels wrote there (name -> sha256)
CLAIMS_NAME = ".pseudo_labels_claims.json"


# --------------------------------------------------------------------------- names inside roots
def check_name(name: str | os.PathLike, what: str) -> str:
    """``name`` if it is a relative path that stays below where it is joined, else an error.

    Lexical check (no file system): absolute paths, and ``..`` parts that climb above the
    start (``../x``, ``a/../../x``) are refused, naming ``what`` (e.g. ``--output-subdir``).
    """
    text = os.fspath(name)
    if text == "" or "\x00" in text:
        raise PseudoLabelsError(f"{what} {text!r}: not a valid name")
    if os.path.isabs(text) or text.startswith("~"):
        raise PseudoLabelsError(f"{what} {text!r}: must be a name relative to its folder, not an absolute path")
    depth = 0
    for part in Path(text).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                raise PseudoLabelsError(f"{what} {text!r}: leaves its folder ('..'); give a name inside it")
        elif part not in (".", ""):
            depth += 1
    return text


def confine(root: str | os.PathLike, name: str | os.PathLike, what: str) -> Path:
    """``root / name``, refused unless it stays inside ``root`` after resolving ``..`` and symlinks.

    ``name`` comes from the user (a flag, a config key, a list or JSON entry); ``what`` names
    that source in the error, e.g. ``"split list val.txt entry"``. Returns the joined path as
    given (not resolved), so messages and manifests keep the user's spelling.
    """
    check_name(name, what)
    joined = Path(root) / name
    real_root = os.path.realpath(root)
    real = os.path.realpath(joined)
    if not _is_within(real, real_root):
        raise PseudoLabelsError(f"{what} {os.fspath(name)!r}: resolves to {real}, outside {root}")
    return joined


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# --------------------------------------------------------------------------- inputs vs outputs
def refuse_overlap(
    inputs: Mapping[str, str | os.PathLike | None],
    outputs: Mapping[str, str | os.PathLike | None],
    *,
    roots: Mapping[str, str | os.PathLike | None] = (),
    output_files: Mapping[str, str | os.PathLike | None] = (),
    register: bool = True,
) -> None:
    """Refuse outputs that could overwrite inputs; ``None`` entries are ignored.

    ``inputs``: plain input folders or files (label name -> path), searched as a whole.
    ``roots``: data roots (Cityscapes / MFNet layouts): an output strictly inside one is allowed
    when the first folder below the root is none of :data:`DATA_FOLDERS` and no other input lies
    in it (outputs in a dedicated sub-folder cannot collide with input files).
    ``outputs``: output folders; ``output_files``: single output files (refused when they are an
    input file or lie in a data folder of a root; beside plain inputs a named file collides with
    nothing new, and the write layer refuses to replace an existing input there).
    The labels (flag or key names) appear in the error. Registers the inputs with
    :func:`check_replace` unless ``register`` is false; then an existing output file that is not
    ours is refused here too, before any work.
    """
    ins = {k: _real(v) for k, v in dict(inputs).items() if v is not None}
    rts = {k: _real(v) for k, v in dict(roots or {}).items() if v is not None}
    outs = {k: _real(v) for k, v in dict(outputs).items() if v is not None}
    files = {k: _real(v) for k, v in dict(output_files or {}).items() if v is not None}
    for ok, o in outs.items():
        for ik, i in ins.items():
            if o == i:
                _overlap(ok, o, ik, "is the input folder")
            if _is_within(i, o):
                _overlap(ok, o, ik, f"contains the input {i}")
            if _is_within(o, i) and os.path.isdir(i):
                _overlap(ok, o, ik, f"lies inside the input folder {i}")
        for rk, r in rts.items():
            if o == r:
                _overlap(ok, o, rk, "is the data root")
            if _is_within(r, o):
                _overlap(ok, o, rk, f"contains the data root {r}")
            if _is_within(o, r):
                first = os.path.relpath(o, r).split(os.sep)[0]
                if first in DATA_FOLDERS:
                    _overlap(ok, o, rk, f"lies inside the data folder {os.path.join(r, first)}; "
                                        "use a dedicated sub-folder of the root")
    for fk, f in files.items():  # a named file beside inputs collides only with a file of its name
        for ik, i in list(ins.items()) + list(rts.items()):
            if f == i:
                _overlap(fk, f, ik, "is the input folder" if os.path.isdir(i) else "is an input file",
                         target="an output file")
        for rk, r in rts.items():
            if _is_within(f, r) and os.path.relpath(f, r).split(os.sep)[0] in DATA_FOLDERS:
                _overlap(fk, f, rk, "lies inside a data folder of the root", target="an output file")
    if register:  # plain inputs as a whole; of a data root, its data folders (outputs may sit beside them)
        protect(list(ins.values()) + [os.path.join(r, d) for r in rts.values() for d in DATA_FOLDERS],
                outputs=list(outs.values()) + list(files.values()))
        for f in files.values():  # a named output file that is not ours: refused before any work
            if os.path.isfile(f):
                check_replace(f)


def _overlap(out_label: str, out: str, in_label: str, why: str, target: str = "an output folder") -> None:
    raise PseudoLabelsError(f"{out_label} {out}: {why} ({in_label}); inputs are never written, "
                            f"choose {target} outside the inputs")


def _real(p: str | os.PathLike) -> str:
    return os.path.realpath(os.path.expanduser(os.fspath(p)))


# --------------------------------------------------------------------------- the write layer's guard
@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """The scope of one command (:func:`pseudo_labels.core.arguments.run_guarded`): inputs that
    :func:`refuse_overlap` sees inside it are registered, and the write layer refuses to replace
    them; on exit the registry is restored. Outside any scope (library calls) nothing is registered."""
    before = {v: os.environ.get(v) for v in (_ENV, _ENV_OWN)}
    os.environ.setdefault(_ENV, "")
    try:
        yield
    finally:
        for var, value in before.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def protect(paths: Iterable[str | os.PathLike], outputs: Iterable[str | os.PathLike] = ()) -> None:
    """Register input files / folders of this run, and its own outputs (a later stage of ``run``
    reads what an earlier one writes: those stay writable); also for worker processes started
    later. A no-op outside :func:`guarded`."""
    if _ENV not in os.environ:
        return
    for var, items in ((_ENV, paths), (_ENV_OWN, outputs)):
        known = _registered(var)
        new = [p for p in (_real(p) for p in items) if p not in known]
        if new:
            os.environ[var] = os.pathsep.join(list(known) + new)


def protected() -> tuple[str, ...]:
    """The registered inputs (real paths)."""
    return _registered(_ENV)


def _registered(var: str) -> tuple[str, ...]:
    return tuple(p for p in os.environ.get(var, "").split(os.pathsep) if p)


def check_replace(path: str | os.PathLike) -> None:
    """While a command runs (:func:`guarded`), refuse to replace the existing file ``path`` when it
    is a registered input, or lies in a registered input folder, or beside a named output file of
    this run (its folder), and is not ours: claimed by no manifest of ours (``manifest.json`` or
    ``*_manifest.json`` with ``"tool": "pseudo_labels"``) in its folder or above, and not recorded
    with its present sha256 in the folder's claims record. Files inside output folders of the run
    are never refused here (their folder's manifest and ``--overwrite`` govern them).
    New files (``path`` absent) and calls outside :func:`guarded` are always allowed."""
    if not os.path.lexists(path) or _ENV not in os.environ:
        return
    real = _real(path)
    if _in_own_folder(real):
        return
    if os.path.basename(real) == CLAIMS_NAME and _read_claims(os.path.dirname(real)) is not None:
        return  # the claims record itself
    for p in () if real in _registered(_ENV_OWN) else protected():  # a named output of this run may be
        if real == p:                                                # read by a later stage of `run`
            raise PseudoLabelsError(f"{path}: is an input of this run; inputs are never overwritten")
        if _is_within(real, p) and not _ours(real, p):
            raise PseudoLabelsError(f"{path}: exists inside the input folder {p} and is not an output of "
                                    "pseudo_labels (no manifest claims it); refusing to replace it")
    if _beside_named_output(real) and not _ours(real, os.sep):
        raise PseudoLabelsError(f"{path}: exists and is not an output of pseudo_labels (or was changed since it "
                                "wrote it); refusing to replace it: choose another output path, or delete the file")


def claim_update(path: str | os.PathLike) -> tuple[str, dict] | None:
    """After ``path`` was written (inside :func:`guarded`): its folder's claims record with
    ``path``'s name and sha256 added, as ``(record path, record)`` for the write layer to write;
    ``None`` unless ``path`` lies beside a named output file of this run, outside its output
    folders and the folders our manifests cover."""
    if _ENV not in os.environ or os.path.basename(path) == CLAIMS_NAME:
        return None
    real = _real(path)
    folder = os.path.dirname(real)
    if _in_own_folder(real) or not _beside_named_output(real) or _claimed(folder, os.sep):
        return None
    record = _read_claims(folder) or {"tool": "pseudo_labels", "files": {}}
    record["note"] = ("files pseudo_labels wrote in this folder (name -> sha256): a rerun may replace a file "
                      "whose bytes still match; any other existing file is never replaced")
    record["files"][os.path.basename(real)] = _sha256(real)
    return os.path.join(folder, CLAIMS_NAME), record


def _in_own_folder(real: str) -> bool:
    """``real`` lies strictly inside an output path registered for this run (an output folder;
    a registered single output file is the path itself and still has to be ours)."""
    return any(real != o and _is_within(real, o) for o in _registered(_ENV_OWN))


def _beside_named_output(real: str) -> bool:
    """``real`` lies in the folder of an output path registered for this run: a named single
    output file (``--out x.json``) or a companion written beside it (``x.csv``, ``x_heatmap.png``)."""
    return any(os.path.dirname(real) == os.path.dirname(o) for o in _registered(_ENV_OWN))


def _read_claims(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, CLAIMS_NAME), "rb") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and record.get("tool") == "pseudo_labels" and isinstance(record.get("files"), dict)
    return record if ok else None


def _ours(real: str, stop: str) -> bool:
    """``real`` is claimed by a manifest of ours in its folder or above (up to ``stop``), or is
    recorded with its present bytes in its folder's claims record."""
    if _claimed(os.path.dirname(real), stop):
        return True
    record = _read_claims(os.path.dirname(real))
    return record is not None and record["files"].get(os.path.basename(real)) == _sha256(real)


def _sha256(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _claimed(folder: str, stop: str) -> bool:
    """True when ``folder`` or a parent up to ``stop`` (inclusive) holds a manifest of ours."""
    while _is_within(folder, stop):
        if _has_manifest(folder):
            return True
        if folder == stop:
            break
        folder = os.path.dirname(folder)
    return False


@functools.lru_cache(maxsize=4096)
def _has_manifest_cached(folder: str, stamp: float) -> bool:
    try:
        names = [n for n in os.listdir(folder) if n == "manifest.json" or n.endswith("_manifest.json")]
    except OSError:
        return False
    for n in names:
        try:
            with open(os.path.join(folder, n), "rb") as f:
                if json.load(f).get("tool") == "pseudo_labels":
                    return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def _has_manifest(folder: str) -> bool:
    try:
        stamp = os.stat(folder).st_mtime
    except OSError:
        return False
    return _has_manifest_cached(folder, stamp)

