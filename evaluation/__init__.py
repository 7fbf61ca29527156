"""Metrics only: panoptic quality (``evaluation.panoptic``), mIoU (``evaluation.semantic``) and
cluster-to-class matching (``evaluation.matching``). Depends on numpy / scipy (and optionally
hotcoco, OpenCV, pyspng) and imports nothing from ``pseudo_labels``; category tables come from the panoptic JSON."""

from .panoptic import (  # noqa: F401
    ENGINES,
    PROTOCOLS,
    EvaluationError,
    PQStats,
    evaluate_panoptic_folders,
    pq_stats_image,
    resolve_engine,
    summarize_pq,
)
