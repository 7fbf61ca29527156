"""The ``hotcoco`` engine of :func:`evaluation.panoptic.evaluate_panoptic_folders` (standard protocol).

hotcoco (``hotcoco.panoptic``, Rust) reads and scores COCO panoptic PNG folders with the
panopticapi / cityscapesscripts arithmetic: GT ``area`` from the JSON when given, void
(id 0) removed from the union, crowd regions, unmatched predictions mostly on void plus
the crowd region of their category not counted as FP. It refuses the Cityscapes JSON as
is (string image ids), so the JSON is adapted in memory: integer image ids 1..N (mapped
back to the Cityscapes names in error messages), clean segment dicts, categories with
``isthing``. Its per-category sums (IoU, TP, FP, FN) become a :class:`PQStats` that is
summarized by :func:`evaluation.panoptic.summarize_pq`, so both engines share one schema
and one set of class averages.

Threads: hotcoco runs on rayon's global pool, which reads ``RAYON_NUM_THREADS`` once, when
its first parallel job starts, and keeps that size for the life of the process. The first
run in a process therefore sets ``RAYON_NUM_THREADS`` to ``workers`` (and restores the
environment after); :func:`pool_matches` tells whether a later run can have ``workers``
threads in this process. If not, :func:`score` runs hotcoco in a child process with the
right pool (JSON written to a temporary folder, removed after). Should hotcoco have been
used in this process before this module first ran it, its pool has whatever size it was
started with (nothing in hotcoco's API tells).

What this engine does not do that the numpy engine does: check that every GT PNG id is
in the GT JSON and every GT JSON segment is in the PNG (cityscapesscripts and hotcoco
score such GT silently; the numpy engine refuses it). Predictions are checked by both.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any, Mapping, Sequence

import numpy as np

from evaluation.pq_stats import EvaluationError, PQStats, _where

#: RAYON pool size hotcoco was started with in this process by :func:`score` (None: not yet)
_POOL_THREADS: int | None = None

_CHILD = r"""
import json, sys, traceback
args = json.loads(sys.argv[1])
try:
    import hotcoco.panoptic as hp
    ev = hp.PanopticEval(args["gt"], args["pred"], gt_folder=args["gt_folder"], pred_folder=args["pred_folder"])
    ev.evaluate()
    out = {"per_class": ev.results()["per_class"]}
except Exception as exc:
    out = {"error": str(exc), "type": type(exc).__name__}
with open(args["out"], "w") as f:
    json.dump(out, f)
"""


def available() -> bool:
    """hotcoco importable (with ``hotcoco.panoptic.PanopticEval``)."""
    try:
        import hotcoco.panoptic as hp  # noqa: F401

        return hasattr(hp, "PanopticEval")
    except Exception:  # ImportError, or a broken binary wheel
        return False


def version() -> str | None:
    try:
        import hotcoco

        return str(getattr(hotcoco, "__version__", "unknown"))
    except Exception:
        return None


def pool_matches(workers: int) -> bool:
    """Can hotcoco run with ``workers`` threads in this process (pool not started, or started so)?"""
    return _POOL_THREADS is None or _POOL_THREADS == int(workers)


def clean_segments(segments: Sequence[Mapping], categories: Mapping[int, Any], what: str, image_id: Any,
                   gt: bool) -> list[dict]:
    """Checked, normalized copies of a segment list for hotcoco, in list order.

    The same checks and messages as :func:`evaluation.panoptic._segment_table` (integer
    ``id`` / ``category_id``, known category, positive and unique ids) in one pure-Python
    pass, without the numpy tables the hotcoco engine does not need. GT segments keep
    ``iscrowd`` (0/1) and ``area`` when given; predictions get ``iscrowd`` 0.
    """
    where = _where(image_id)
    out = []
    for s in segments:
        try:
            sid, cat = int(s["id"]), int(s["category_id"])
        except (KeyError, TypeError, ValueError):
            raise EvaluationError(f"{where}malformed {what} segment {s!r} "
                                  "(needs integer 'id' and 'category_id')") from None
        seg = {"id": sid, "category_id": cat, "iscrowd": int(bool(s.get("iscrowd", 0))) if gt else 0}
        if gt and s.get("area") is not None:
            seg["area"] = int(s["area"])
        if cat not in categories:
            raise EvaluationError(f"{where}{what} segment {sid} has unknown category_id {cat}")
        out.append(seg)
    if out:
        ids = [seg["id"] for seg in out]
        if min(ids) <= 0:
            raise EvaluationError(f"{where}{what} segment id {min(ids)} is not allowed "
                                  "(0 means void/unlabeled in the PNG; ids must be positive)")
        if len(set(ids)) != len(ids):
            ids.sort()
            dup = next(a for a, b in zip(ids, ids[1:]) if a == b)
            raise EvaluationError(f"{where}{what} segment id {dup} is listed twice in the JSON")
    return out


def build_inputs(pairs: Sequence[tuple[Any, str, list, str, list]], categories: Mapping[int, Mapping]
                 ) -> tuple[dict, dict, dict[int, Any]]:
    """hotcoco GT and prediction dicts from ``(image_id, gt_file, gt_segments, pred_file, pred_segments)``.

    Segments as :func:`clean_segments` gives them, in list order (the crowd region of a
    category is its last crowd segment in that order, as cityscapesscripts). Image ids
    become 1..N (``names`` maps them back).
    """
    cats = [{"id": int(cid), "name": str(c.get("name", cid)), "isthing": int(c["isthing"]),
             "supercategory": str(c.get("supercategory", ""))} for cid, c in sorted(categories.items())]
    gt_anns, pred_anns, images, names = [], [], [], {}
    for k, (image_id, gt_file, gsegs, pred_file, psegs) in enumerate(pairs, start=1):
        names[k] = image_id
        gt_anns.append({"image_id": k, "file_name": str(gt_file), "segments_info": gsegs})
        pred_anns.append({"image_id": k, "file_name": str(pred_file), "segments_info": psegs})
        images.append({"id": k, "file_name": str(gt_file)})
    gt = {"images": images, "annotations": gt_anns, "categories": cats}
    pred = {"images": images, "annotations": pred_anns, "categories": cats}
    return gt, pred, names


_IMAGE_REF = re.compile(r"\b(image(?: with id)?) (\d+)\b")


def translate_message(message: str, names: Mapping[int, Any]) -> str:
    """hotcoco's ``image 3`` -> ``image <Cityscapes image id>`` in an error message."""
    def sub(m: re.Match) -> str:
        k = int(m.group(2))
        return f"{m.group(1)} {names[k]}" if k in names else m.group(0)

    return _IMAGE_REF.sub(sub, message)


def _run_here(gt: dict, pred: dict, gt_folder: str, pred_folder: str, workers: int) -> dict:
    global _POOL_THREADS
    import hotcoco.panoptic as hp

    ev = hp.PanopticEval(gt, pred, gt_folder=gt_folder, pred_folder=pred_folder)
    if _POOL_THREADS is None:
        before = os.environ.get("RAYON_NUM_THREADS")
        os.environ["RAYON_NUM_THREADS"] = str(int(workers))
        try:
            ev.evaluate()  # starts rayon's global pool with RAYON_NUM_THREADS threads
        finally:
            _POOL_THREADS = int(workers)  # started (or maybe started) now: never change it again
            if before is None:
                os.environ.pop("RAYON_NUM_THREADS", None)
            else:
                os.environ["RAYON_NUM_THREADS"] = before
    else:
        ev.evaluate()
    return ev.results()["per_class"]


def _run_child(gt: dict, pred: dict, gt_folder: str, pred_folder: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="hotcoco_") as tmp:
        paths = {name: os.path.join(tmp, name + ".json") for name in ("gt", "pred", "out")}
        for name, data in (("gt", gt), ("pred", pred)):
            with open(paths[name], "w") as f:
                json.dump(data, f)
        args = json.dumps({"gt": paths["gt"], "pred": paths["pred"], "gt_folder": gt_folder,
                           "pred_folder": pred_folder, "out": paths["out"]})
        env = dict(os.environ, RAYON_NUM_THREADS=str(int(workers)))
        proc = subprocess.run([sys.executable, "-c", _CHILD, args], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        try:
            with open(paths["out"]) as f:
                out = json.load(f)
        except (OSError, ValueError):
            raise RuntimeError(f"hotcoco child process failed (exit {proc.returncode}): "
                               f"{proc.stderr.strip()[-500:]}") from None
    if "error" in out:
        exc_type = {"FileNotFoundError": FileNotFoundError, "ValueError": ValueError}.get(out["type"], RuntimeError)
        raise exc_type(out["error"])
    return out["per_class"]


def score(pairs: Sequence[tuple[Any, Mapping, Mapping]], gt_folder: str | os.PathLike,
          pred_folder: str | os.PathLike, categories: Mapping[int, Mapping], workers: int = 1) -> PQStats:
    """Standard-protocol :class:`PQStats` of the given image pairs, computed by hotcoco.

    ``pairs``: ``(image_id, gt_file, gt_segments, pred_file, pred_segments)``, segments from
    :func:`clean_segments`. hotcoco's
    exceptions are re-raised as :class:`EvaluationError` with the image ids translated back;
    anything it returns that does not fit raises :class:`EvaluationError` too.
    """
    stats = PQStats.empty(categories, "standard")
    if not pairs:
        return stats
    gt, pred, names = build_inputs(pairs, categories)
    run = _run_here if pool_matches(workers) else _run_child
    try:
        per_class = run(gt, pred, str(gt_folder), str(pred_folder), workers)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as exc:
        raise EvaluationError(translate_message(str(exc), names)) from None
    except BaseException as exc:  # a Rust panic (pyo3's PanicException is a BaseException)
        if type(exc).__name__ != "PanicException":
            raise
        raise EvaluationError(f"hotcoco panicked: {translate_message(str(exc), names)}") from None
    try:
        for cid_text, r in per_class.items():
            cid = int(cid_text)
            if cid not in categories:
                raise KeyError(cid)
            i = int(np.searchsorted(stats.cat_ids, cid))
            stats.iou[i] = float(r["iou"])
            stats.tp[i], stats.fp[i], stats.fn[i] = int(r["tp"]), int(r["fp"]), int(r["fn"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EvaluationError(f"hotcoco {version()}: unexpected per-class result ({exc!r})") from None
    return stats


def missing_image_stats(gt_segments: Sequence[Mapping], categories: Mapping[int, Mapping]) -> PQStats:
    """An image without prediction: every non-crowd GT segment (cleaned) is a false negative."""
    stats = PQStats.empty(categories, "standard")
    keep = [s["category_id"] for s in gt_segments if not s["iscrowd"]]
    if keep:
        pos = np.searchsorted(stats.cat_ids, np.array(keep, np.int64))
        stats.fn += np.bincount(pos, minlength=len(stats.cat_ids))
    return stats


__all__ = ["available", "version", "pool_matches", "clean_segments", "build_inputs", "translate_message", "score",
           "missing_image_stats"]
