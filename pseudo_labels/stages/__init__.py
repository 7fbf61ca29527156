"""The library: one sub-package per family of stages, plus :mod:`.pipeline` that composes them.

- :mod:`.semantic` -- features, k-means, cluster -> class mapping, CAUSE-27
- :mod:`.instance` -- depth, depth-guided instances, thing/stuff rules, panoptic assembly
- :mod:`.refine` -- DynaSeg segments and semantic refinement (dense CRF)
- :mod:`.rgbt` -- RGB-thermal features, DARTS, CRM
- :mod:`.weak` -- weakly-supervised labels from image tags + depth (CAM with DEAL)
- :mod:`.outputs` -- scoring, sweep, exports, visualisation, reports

Stages are pure functions on numpy arrays with typed signatures, plus each stage's
folder-level function that the command, the sweep, ``run`` and the demo all call. They import
``pseudo_labels.core``, ``pseudo_labels.datasets``, ``evaluation`` and ``refs``, never a command;
families import each other only along the data flow (``pyproject.toml``, ``[tool.importlinter]``).
"""
