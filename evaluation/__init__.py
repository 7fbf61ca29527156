"""Metrics only: panoptic quality (``evaluation.panoptic``), mIoU (``evaluation.semantic``) and
cluster-to-class matching (``evaluation.matching``). Depends on numpy / scipy only and imports
nothing from ``pseudo_labels``; category tables come from the panoptic JSON."""

from .panoptic import (  # noqa: F401
    PROTOCOLS,
    EvaluationError,
    PQStats,
    evaluate_panoptic_folders,
    pq_stats_image,
    summarize_pq,
)
