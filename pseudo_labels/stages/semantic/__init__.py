"""Semantic pseudo-labels: images -> ViT patch features -> k-means clusters -> classes.

- :mod:`.features` -- dense patch features (builtin, DINOv2, CAUSE-TR), device choice, feature files
- :mod:`.dinov2` -- DINOv2 ViT built with ``timm`` from a local checkpoint
- :mod:`.cause` -- the CAUSE Segment_TR head and its modularity codebook
- :mod:`.cause27` -- the reference's CAUSE-27 path (cluster probe, 27 -> 19 trainIds)
- :mod:`.clustering` -- k-means fit on a sample, per-pixel assignment to centroids
- :mod:`.centroids` -- the centroids file (``kmeans_centroids.npz``, the reference's ``.b64``)
- :mod:`.mapping` -- cluster -> class (majority, Hungarian, none)
- :mod:`.semantics` -- ``generate_semantics(SemanticConfig)``: the folder-level stage
"""
