"""What the pipeline hands to people and to training code.

- :mod:`.scoring` -- ``evaluate_folders(EvaluateConfig)``: PQ/SQ/RQ and mIoU of folders (``evaluation``)
- :mod:`.sweep` -- the grid over k x tau x A_min (x sigma x dilation): JSON, CSV, heatmap
- :mod:`.export` -- CUPS training format, COCO panoptic
- :mod:`.visualize` -- per-image panels and contact sheets
- :mod:`.report` -- the markdown report of a sweep

Uses the semantic and instance families (the sweep re-runs the instance split).
"""
