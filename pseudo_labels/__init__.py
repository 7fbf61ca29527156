"""pseudo_labels: panoptic and weakly-supervised pseudo-labels without human labels.

One module per stage (pure functions on numpy arrays) plus a thin CLI module per
stage; ``pseudo-labels <command>`` dispatches to them (see :mod:`pseudo_labels.cli`).
"""

__version__ = "0.1.0"
