"""Panoptic-quality accumulators and the evaluation error type, shared by the numpy
(:mod:`evaluation.panoptic`) and hotcoco (:mod:`evaluation.hotcoco_engine`) engines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np


class EvaluationError(ValueError):
    """Bad evaluation input (names the file / image and what is wrong)."""


# --------------------------------------------------------------------------- statistics
@dataclass
class PQStats:
    """Per-category accumulators: IoU sum (float64), TP / FP / FN counts (int64).

    ``cat_ids`` is sorted; adding stats with other categories merges them. Stats of
    different protocols cannot be added. ``sum(list_of_stats)`` works (0 is neutral).
    """

    cat_ids: np.ndarray
    iou: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    protocol: str = "standard"

    @classmethod
    def empty(cls, cat_ids: Iterable[int], protocol: str = "standard") -> "PQStats":
        ids = np.array(sorted(int(c) for c in cat_ids), np.int64)
        z = np.zeros(len(ids), np.int64)
        return cls(ids, np.zeros(len(ids), np.float64), z.copy(), z.copy(), z.copy(), protocol)

    def copy(self) -> "PQStats":
        return PQStats(self.cat_ids.copy(), self.iou.copy(), self.tp.copy(), self.fp.copy(), self.fn.copy(),
                       self.protocol)

    def _merge_ids(self, ids: np.ndarray) -> None:
        if np.array_equal(ids, self.cat_ids) or np.isin(ids, self.cat_ids).all():
            return
        new = np.union1d(self.cat_ids, ids).astype(np.int64)
        pos = np.searchsorted(new, self.cat_ids)
        for name in ("iou", "tp", "fp", "fn"):
            old = getattr(self, name)
            arr = np.zeros(len(new), old.dtype)
            arr[pos] = old
            setattr(self, name, arr)
        self.cat_ids = new

    def __iadd__(self, other: "PQStats") -> "PQStats":
        if isinstance(other, int) and other == 0:
            return self
        if not isinstance(other, PQStats):
            return NotImplemented
        if other.protocol != self.protocol:
            raise ValueError(f"cannot add PQ stats of protocol {other.protocol!r} to {self.protocol!r}")
        self._merge_ids(other.cat_ids)
        pos = np.searchsorted(self.cat_ids, other.cat_ids)
        self.iou[pos] += other.iou
        self.tp[pos] += other.tp
        self.fp[pos] += other.fp
        self.fn[pos] += other.fn
        return self

    def __add__(self, other: "PQStats") -> "PQStats":
        out = self.copy()
        out += other
        return out

    def __radd__(self, other):
        if isinstance(other, int) and other == 0:
            return self.copy()
        return NotImplemented

    def get(self, cat_id: int) -> tuple[float, int, int, int]:
        """(iou_sum, tp, fp, fn) of one category (zeros when absent)."""
        i = np.searchsorted(self.cat_ids, cat_id)
        if i < len(self.cat_ids) and self.cat_ids[i] == cat_id:
            return float(self.iou[i]), int(self.tp[i]), int(self.fp[i]), int(self.fn[i])
        return 0.0, 0, 0, 0

    def to_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "per_category": {int(c): {"iou": float(self.iou[i]), "tp": int(self.tp[i]), "fp": int(self.fp[i]),
                                      "fn": int(self.fn[i])} for i, c in enumerate(self.cat_ids)},
        }


def _where(image_id: Any) -> str:
    return f"image {image_id}: " if image_id is not None else ""
