"""Instances and panoptic labels: depth maps, depth-edge splitting of thing classes, assembly.

- :mod:`.depth` -- depth maps (stereo disparity, ``.npy`` folders, SPIdepth, Depth Anything)
- :mod:`.maps` -- array helpers shared by the family (depth gradients, nearest/bilinear resizes, class masks)
- :mod:`.thing_stuff`, :mod:`.thing_stuff_reference` -- which classes are things (label-free rules)
- :mod:`.instances` -- depth-guided splitting + connected components (the reference's algorithm)
- :mod:`.panoptic` -- semantic + instances -> Cityscapes/COCO panoptic PNG + JSON

Uses the semantic family's outputs (label maps) and its pixel-centre nearest index.
"""
