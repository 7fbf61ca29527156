"""The pipeline's stages: one module per stage, pure functions on numpy arrays with typed
signatures, plus the stage's folder-level function that the command, the sweep, ``run`` and
the demo all call. Imports ``pseudo_labels.core``, ``pseudo_labels.datasets``,
``evaluation`` and ``refs``, never a command module.
"""
