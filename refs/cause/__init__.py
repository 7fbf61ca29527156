"""CAUSE (Kim et al., "Causal Unsupervised Semantic Segmentation") model definitions.

Our own implementation of the Segment_TR head and the cluster probe (model definitions only; the library's
:mod:`pseudo_labels.stages.semantic.cause` loads ``segment_tr.pth`` / ``modular.npy`` from local paths).
Imports nothing from ``pseudo_labels`` or ``evaluation``. See :mod:`refs.cause.segment_tr`.
"""

from __future__ import annotations

from .cluster import ClusterProbe
from .segment_tr import SegmentTR, config_from_state_dict, find_codebook, quantize, tokens_to_map

__all__ = ["ClusterProbe", "SegmentTR", "config_from_state_dict", "find_codebook", "quantize", "tokens_to_map"]
