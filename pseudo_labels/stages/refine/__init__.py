"""Refinement of semantic pseudo-labels.

- :mod:`.dynaseg` -- DynaSeg: per-image unsupervised segments (SCF / FSF variants)
- :mod:`.refine_semantics` -- majority label inside DynaSeg segments, or a dense CRF

Uses the semantic family's feature extractors and k-means (DynaSeg's FSF variant).
"""
