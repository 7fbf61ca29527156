"""File IO at the edges: PNG/JSON/NPY read-write (atomic), manifests and fingerprints.

Every writer goes through :func:`atomic_path`: data is written to a temporary file in
the destination folder and renamed into place, so an interrupted run never leaves a
half-written output behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from pseudo_labels import __version__
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError

MANIFEST_NAME = "manifest.json"


# --------------------------------------------------------------------------- atomic writes
#: temporary files are named ``.<name>.~<host hash>-<pid>~<random>.tmp<suffix>`` so that a
#: resumed run can tell the leftovers of killed writers from files being written right now
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_TEMP_RE = re.compile(r"^\..+\.~([0-9a-f]{8})-(\d+)~[^/]*\.tmp[^/]*$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike) -> int:
    """Delete temporary files left in ``folder`` (recursively) by writers that were killed.

    Only files made on this host by processes that no longer run are removed (shards on
    other machines may be writing into a shared folder). Returns how many were removed.
    """
    removed = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for root, _, files in os.walk(folder):
        for name in files:
            m = _TEMP_RE.match(name)
            if m and m.group(1) == _HOST and not _pid_alive(int(m.group(2))):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(root, name))
                    removed += 1
    return removed


def umask() -> int:
    """The process umask, read without changing it (``/proc/self/status``; elsewhere set and restored)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def os_error(path: str | os.PathLike, exc: OSError, doing: str = "cannot write output") -> PseudoLabelsError:
    """One line for an OS error at ``path``: ``<path>: cannot write output (No space left on device)``."""
    cause = exc.strerror or str(exc)
    where = exc.filename if getattr(exc, "filename", None) else path
    return PseudoLabelsError(f"{where}: {doing} ({cause})")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The one write layer: on any exception the temporary file is removed and nothing appears
    at ``path``; OS errors (read-only or full file system, permission denied, a parent that is
    a file) become one :class:`PseudoLabelsError` naming the path and the cause. Parent folders
    are created. The file gets the mode ``open()`` would give (0o666 minus the umask), not the
    0o600 of the temporary file. Replacing an existing file that is an input of the running
    command, or lies in an input folder unclaimed by our manifests, is refused; so is replacing
    any other existing file that is not ours (:func:`pseudo_labels.core.paths.check_replace`).
    A file written outside the command's output folders and the folders our manifests cover
    is recorded in its folder's claims record (:func:`pseudo_labels.core.paths.claim_update`),
    so that a rerun may replace it.
    """
    from pseudo_labels.core.paths import check_replace, claim_update

    path = Path(path)
    check_replace(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(path.parent, exc, "cannot create output folder") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.~{_HOST}-{os.getpid()}~", suffix=".tmp" + path.suffix,
                                   dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise os_error(path, exc) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~umask())
        os.replace(tmp_path, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise os_error(path, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    claim = claim_update(path)
    if claim is not None:
        write_json(*claim)


@contextlib.contextmanager
def scratch_dir(parent: str | os.PathLike, doing: str = "cannot write output") -> Iterator[Path]:
    """A temporary folder in ``parent`` (created with its parents), removed afterwards, for tools that
    write whole folders themselves (cityscapesscripts): they work there, then :func:`replace_dir` and
    :func:`write_bytes` put the results in place. The folder gets the umask's mode (not mkdtemp's 0o700);
    an OS error while it exists becomes one :class:`PseudoLabelsError` naming the path, ``doing`` and
    the cause."""
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{parent.name}.~{_HOST}-{os.getpid()}~", suffix=".tmp", dir=parent))
        os.chmod(tmp, 0o777 & ~umask())
    except OSError as exc:
        raise os_error(parent, exc, "cannot create output folder") from None
    try:
        yield tmp
    except OSError as exc:
        raise os_error(parent, exc, doing) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(path: str | os.PathLike, finished: str | os.PathLike) -> None:
    """Put the finished folder ``finished`` (made in a :func:`scratch_dir` on the same file system) at
    ``path``, replacing a folder there: the old one is moved aside first and removed only once the new
    one is in place (restored on failure). Refused as :func:`atomic_path` refuses a file
    (:func:`pseudo_labels.core.paths.check_replace`); the folder, its sub-folders and files get the modes
    ``mkdir()`` / ``open()`` give under this process's umask; OS errors -> one line naming ``path`` and
    the cause."""
    from pseudo_labels.core.paths import check_replace

    path, finished = Path(path), Path(finished)
    check_replace(path)
    old = path.with_name(f".{path.name}.~{_HOST}-{os.getpid()}~old.tmp")
    try:
        mask = umask()
        for dirpath, _, names in os.walk(finished):  # whoever wrote them (worker processes, other tools)
            os.chmod(dirpath, 0o777 & ~mask)
            for n in names:
                os.chmod(os.path.join(dirpath, n), 0o666 & ~mask)
        had_old = path.is_dir() and not path.is_symlink()
        if had_old:
            os.replace(path, old)
        try:
            os.replace(finished, path)
        except OSError:
            if had_old:
                os.replace(old, path)
            raise
    except OSError as exc:
        raise os_error(path, exc) from None
    shutil.rmtree(old, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON atomically (numpy scalars/arrays converted)."""
    text = json.dumps(obj, indent=indent, default=_json_default, sort_keys=False)
    write_bytes(path, (text + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"malformed JSON ({exc})") from None
    except OSError as exc:
        raise InputFileError(path, f"cannot read ({exc.strerror or exc})") from None


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def read_npy(path: str | os.PathLike, *, finite: bool = False, what: str = "array") -> np.ndarray:
    """A ``.npy`` array (never unpickled). ``finite``: NaN / Inf is an error naming the file
    (depth maps, features: see :func:`require_finite`)."""
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise InputFileError(path, f"not a readable .npy array ({exc})") from None
    if finite:
        require_finite(array, path, what)
    return array


def require_finite(array: np.ndarray, path: str | os.PathLike, what: str = "array") -> np.ndarray:
    """``array`` if every value is finite; else :class:`InputFileError` naming the file and how
    many values are NaN / Inf. Used for depth maps and features (a NaN there silently changes
    every edge or trains to a NaN loss)."""
    a = np.asarray(array)
    if a.dtype.kind in "fc":
        bad = ~np.isfinite(a)
        if bad.any():
            raise InputFileError(path, f"{what} holds {int(bad.sum())} NaN/Inf value(s) of {a.size}; "
                                       "fix or regenerate the file")
    return array


def check_json_file_names(json_path: str | os.PathLike, folder: str | os.PathLike, key: str = "file_name") -> None:
    """Every ``annotations[*][key]`` of a (COCO / Cityscapes) panoptic JSON must name a file inside
    ``folder`` (:func:`confine`); a JSON of another shape is an error naming the file."""
    from pseudo_labels.core.paths import confine

    if json_path is None or folder is None:
        return
    data = read_json(json_path)
    anns = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
        raise InputFileError(json_path, "not a panoptic JSON (no 'annotations' list of objects)")
    for a in anns:
        name = a.get(key)
        if name is not None:
            confine(folder, str(name), f"{json_path}: {key}")


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` ``obj`` atomically, with bytes that depend on ``obj`` only.

    ``obj`` must load with ``weights_only=True``: tensors, and dicts / lists / tuples of str,
    int, float, bool, None (metadata as plain values or JSON strings, never objects). Saved
    through memory, so the archive's inner folder name does not follow the temporary file's
    random name (identical objects give identical files).
    """
    import io as _io

    import torch

    buf = _io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: nothing in the file runs.

    Every checkpoint the tool reads goes through here. A file that needs arbitrary unpickling
    (a crafted or foreign pickle), a truncated or non-torch file, or a missing one is an
    :class:`InputFileError` naming the file and ``what``.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, f"{what} not found" if not path.exists() else f"{what} is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = " ".join(str(exc).split())
        m = re.search(r"Unsupported global: (GLOBAL \S+)", text)
        if m:
            raise InputFileError(path, f"{what} refused: it names Python objects ({m.group(1)}) that loading "
                                       "would run; only tensors and plain values are loaded") from None
        m = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
        raise InputFileError(path, f"not a readable PyTorch checkpoint ({what}; {(m.group(1) if m else text)[:160]})"
                             ) from None
    except OSError as exc:
        raise InputFileError(path, f"cannot read {what} ({exc.strerror or exc})") from None
    except Exception as exc:  # truncated zip, not a torch file, ...
        text = " ".join(str(exc).split())[:200]
        raise InputFileError(path, f"not a readable PyTorch checkpoint ({what}; {type(exc).__name__}: {text})") from None


# --------------------------------------------------------------------------- PNG
def write_png(path: str | os.PathLike, array: np.ndarray, compression: int = 1) -> None:
    """Write a PNG atomically.

    ``array``: (H, W) uint8/uint16 single channel, or (H, W, 3) uint8 RGB.
    """
    import cv2

    array = np.asarray(array)
    if array.ndim == 3:
        if array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(f"RGB PNG must be (H, W, 3) uint8, got {array.shape} {array.dtype}")
        array = np.ascontiguousarray(array[:, :, ::-1])  # OpenCV stores BGR
    elif array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"single-channel PNG must be (H, W) uint8 or uint16, got {array.shape} {array.dtype}")
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise PseudoLabelsError(f"{path}: PNG encoding failed")
    write_bytes(path, buf.tobytes())


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a file; :class:`InputFileError` naming it when it is missing or unreadable."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except OSError as exc:
        raise InputFileError(path, f"cannot read ({exc.strerror})") from None


def read_png(path: str | os.PathLike, keep_channels: bool = False) -> np.ndarray:
    """Read a PNG as stored: (H, W) uint8/uint16 or (H, W, 3) uint8 RGB (alpha dropped).

    ``keep_channels``: keep a 4th channel too ((H, W, 4), e.g. MFNet's RGB + thermal); a grey
    image with alpha is always (H, W). Raises :class:`InputFileError` naming the file when it
    is missing, not a PNG or corrupt.
    """
    path = Path(path)
    data = read_bytes(path)
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise InputFileError(path, "not a PNG file")
    try:
        import pyspng

        array = pyspng.load(data)
    except ImportError:  # without pyspng: OpenCV's decoder (_decode_png_cv2) reads the file
        array = _decode_png_cv2(data, path)
    except Exception as exc:
        raise InputFileError(path, f"corrupt PNG ({exc})") from None
    if array.ndim == 3:
        if array.shape[2] in (1, 2):  # grey, or grey + alpha
            array = array[:, :, 0]
        elif array.shape[2] == 4 and not keep_channels:
            array = array[:, :, :3]
    return np.ascontiguousarray(array)


def _decode_png_cv2(data: bytes, path: Path) -> np.ndarray:
    import cv2

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise InputFileError(path, "corrupt PNG")
    if array.ndim == 3 and array.shape[2] >= 3:  # BGR(A) -> RGB(A)
        array = np.concatenate([array[:, :, 2::-1], array[:, :, 3:]], axis=2)
    return array


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an 8-bit colour image (PNG or JPEG) as (H, W, 3) uint8 RGB."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        array = read_png(path)
    else:
        import cv2

        array = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if array is None:
            raise InputFileError(path, "missing or not a readable image")
        array = array[:, :, ::-1]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.dtype != np.uint8:
        raise InputFileError(path, f"expected an 8-bit image, got {array.dtype}")
    return np.ascontiguousarray(array)


# --------------------------------------------------------------------------- panoptic id <-> RGB
def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic colour -> segment id: ``R + 256 G + 256^2 B`` as (H, W) int64."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment id (H, W) -> COCO panoptic colour (H, W, 3) uint8."""
    ids = ids.astype(np.int64)
    out = np.empty(ids.shape + (3,), np.uint8)
    out[..., 0] = ids % 256
    out[..., 1] = (ids // 256) % 256
    out[..., 2] = (ids // 65536) % 256
    return out


# --------------------------------------------------------------------------- manifests
def is_up_to_date(output: str | os.PathLike, *inputs: str | os.PathLike) -> bool:
    """True when ``output`` exists and is not older than any of ``inputs`` (make's rule).

    Outputs are written atomically, so an existing file is complete; an input edited after
    the output was made forces a recompute on resume.
    """
    try:
        made = os.stat(output).st_mtime_ns
    except FileNotFoundError:
        return False
    return all(os.stat(p).st_mtime_ns <= made for p in inputs)


def config_hash(parameters: Mapping[str, Any]) -> str:
    """Stable short hash of a parameter dict (JSON with sorted keys)."""
    text = json.dumps(parameters, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint_files(paths: Iterable[str | os.PathLike]) -> dict:
    """Cheap fingerprint of a set of input files: count and a hash of names, sizes, mtimes."""
    h = hashlib.sha256()
    n = 0
    for p in sorted(str(p) for p in paths):
        try:
            st = os.stat(p)
            h.update(f"{os.path.basename(p)}:{st.st_size}:{int(st.st_mtime)}\n".encode())
        except OSError:
            h.update(f"{os.path.basename(p)}:missing\n".encode())
        n += 1
    return {"n_files": n, "sha256": h.hexdigest()[:16]}


def write_manifest(
    out_dir: str | os.PathLike,
    stage: str,
    parameters: Mapping[str, Any],
    *,
    uses_ground_truth: bool | Mapping[str, Any],
    inputs: Mapping[str, Any] | None = None,
    counts: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    name: str = MANIFEST_NAME,
) -> Path:
    """Write the provenance manifest of an output folder (atomically) and return its path.

    ``uses_ground_truth``: ``False``, ``True``, or a dict saying where labels were read
    (e.g. ``{"mapping": "majority vote on gtFine labelTrainIds"}``); stored as
    ``uses_ground_truth`` (bool) plus ``ground_truth_use`` (details).
    """
    gt_details = dict(uses_ground_truth) if isinstance(uses_ground_truth, Mapping) else {}
    manifest = {
        "tool": "pseudo_labels",
        "tool_version": __version__,
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "parameters": dict(parameters),
        "config_hash": config_hash(parameters),
        "uses_ground_truth": bool(uses_ground_truth),
        "ground_truth_use": gt_details,
        "inputs": dict(inputs or {}),
        "counts": dict(counts or {}),
    }
    if extra:
        manifest.update(extra)
    path = Path(out_dir) / name
    write_json(path, manifest)
    return path


def read_manifest(out_dir: str | os.PathLike, name: str = MANIFEST_NAME) -> dict | None:
    path = Path(out_dir) / name
    if not path.exists():
        return None
    return read_json(path)


def prepare_output_dir(
    out_dir: str | os.PathLike,
    stage: str,
    parameters: Mapping[str, Any],
    *,
    overwrite: bool = False,
    name: str = MANIFEST_NAME,
) -> bool:
    """Check an output folder before a run; return True when finished outputs may be reused.

    - no manifest: a new folder (or one from an interrupted first run): reuse what exists;
    - manifest of the same stage with the same configuration hash: resume (True);
    - a different stage or configuration: :class:`PseudoLabelsError` naming the changed
      parameters, unless ``overwrite`` (then False: recompute everything).
    """
    remove_stale_temp_files(out_dir)
    previous = read_manifest(out_dir, name)
    if previous is None:
        return not overwrite
    if overwrite:
        return False
    same_stage = previous.get("stage") == stage
    if same_stage and previous.get("config_hash") == config_hash(parameters):
        return True
    old = previous.get("parameters", {})
    changed = sorted(k for k in set(old) | set(parameters) if old.get(k) != _jsonable(parameters.get(k)))
    what = f"stage {previous.get('stage')!r}" if not same_stage else "parameters " + ", ".join(changed)
    raise PseudoLabelsError(
        f"{out_dir}: holds outputs made with different {what}; "
        "use another output folder, or --overwrite to recompute everything"
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_json_default))


#: plain JSON values (dict / list / str / int / float / bool / None) of ``value``: checkpoint
#: metadata in this form loads with ``weights_only=True``
plain_values = _jsonable
