"""Loading the CAUSE-TR models (Kim et al., "Causal Unsupervised Semantic Segmentation") from
local checkpoint files: the Segment_TR head (``segment_tr.pth``) with its modularity codebook
(``modular.npy``). The model definitions live in :mod:`refs.cause`; this module turns their
plain exceptions into messages that name the file. Nothing is downloaded.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from pseudo_labels.core.errors import InputFileError
from pseudo_labels.stages.features import load_checkpoint
from refs.cause import SegmentTR, config_from_state_dict, find_codebook


def build_segment_tr(head_weights: str | os.PathLike | None, codebook: str | os.PathLike | None = None,
                     dim: int | None = None, seed: int = 0) -> SegmentTR:
    """A :class:`SegmentTR` in eval mode with its codebook set.

    ``head_weights``: CAUSE ``segment_tr.pth`` (architecture read from its shapes, keys must
    match exactly). ``codebook``: ``modular.npy`` (num_codebook x dim); default
    :func:`find_codebook`. ``head_weights`` None: random head and codebook (seeded; for
    benchmarks and tests) of backbone width ``dim``. ``dim`` given with weights: checked.
    Raises :class:`pseudo_labels.core.errors.PseudoLabelsError` naming the file on mismatch.
    """
    if head_weights is None:
        g = torch.Generator().manual_seed(seed)
        model = SegmentTR(dim=dim or 768)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        model.set_codebook(torch.randn(2048, model.dim, generator=g))
        return model.eval()

    state = load_checkpoint(head_weights, "CAUSE Segment_TR head")
    try:
        cfg = config_from_state_dict(state)
    except KeyError as exc:
        raise InputFileError(head_weights, f"not a CAUSE Segment_TR checkpoint (no key {exc.args[0]})",
                             "expected segment_tr.pth from CAUSE-TR training") from None
    model = SegmentTR(**cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise InputFileError(head_weights, "does not fit CAUSE Segment_TR "
                             f"(missing {missing[:4]}, unexpected {unexpected[:4]}, wrong shapes {wrong[:4]})")
    model.load_state_dict(state, strict=True)
    if dim is not None and cfg["dim"] != dim:
        raise InputFileError(head_weights, f"head expects {cfg['dim']}-d backbone tokens, the backbone gives {dim}",
                             "the official CAUSE-TR head goes with --backbone dinov2_vitb14")
    cb_path = codebook if codebook is not None else find_codebook(head_weights)
    if cb_path is None:
        raise InputFileError(head_weights, "no modularity codebook found for this head (modular.npy next to it "
                             "or in CAUSE/<dataset>/modularity/<backbone>/<n>/)", "pass --codebook PATH")
    try:
        cb = np.load(cb_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputFileError(cb_path, f"not a readable .npy codebook ({exc})") from None
    if cb.ndim != 2 or cb.shape[1] != cfg["dim"]:
        raise InputFileError(cb_path, f"codebook must be (n, {cfg['dim']}), got {cb.shape}")
    model.set_codebook(cb)
    return model.eval()
