"""Loading the CAUSE-TR models (Kim et al., "Causal Unsupervised Semantic Segmentation") from
local checkpoint files: the Segment_TR head (``segment_tr.pth``) with its modularity codebook
(``modular.npy``), the cluster probe (``cluster_tr.pth``), and all of them with the DINOv2
ViT-B/14 backbone from one flat checkpoint folder (:func:`load_cause27_models`, the layout of
the reference's ``generate_semantic_pseudolabels_cause.py``). The model definitions live in
:mod:`refs.cause`; this module turns their plain exceptions into messages that name the file.
Nothing is downloaded.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from pseudo_labels.core.errors import InputFileError
from pseudo_labels.stages.semantic.dinov2 import build_dinov2, load_checkpoint
from refs.cause import ClusterProbe, SegmentTR, config_from_state_dict, find_codebook


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


def load_cluster_probe(path: str | os.PathLike, reduced_dim: int | None = None) -> ClusterProbe:
    """The CAUSE cluster probe from ``cluster_tr.pth`` (CAUSE's ``Cluster`` state dict).

    Reads ``cluster_probe`` (n_classes x reduced_dim); ``codebook`` may be present and is
    ignored (CAUSE replaces it by ``modular.npy`` at inference). ``reduced_dim``: the head's
    output width, checked. Raises :class:`InputFileError` naming the file otherwise.
    """
    state = load_checkpoint(path, "CAUSE cluster probe")
    probe = state.get("cluster_probe")
    if probe is None:
        raise InputFileError(path, f"not a CAUSE cluster checkpoint: no key 'cluster_probe' (keys {sorted(state)[:4]})",
                             "expected cluster_tr.pth from CAUSE-TR training")
    if probe.ndim != 2:
        raise InputFileError(path, f"cluster_probe must be (n_classes, reduced_dim), got {tuple(probe.shape)}")
    if reduced_dim is not None and int(probe.shape[1]) != int(reduced_dim):
        raise InputFileError(path, f"cluster_probe has dim {int(probe.shape[1])} but the Segment_TR head gives "
                             f"{int(reduced_dim)}-d features", "use the cluster_tr.pth trained with this segment_tr.pth")
    model = ClusterProbe(int(probe.shape[0]), int(probe.shape[1]))
    with torch.no_grad():
        model.cluster_probe.copy_(probe.float())
    return model.eval()


#: file names of the flat checkpoint folder (the reference's ``--checkpoint_dir``)
CAUSE27_CHECKPOINT_FILES = {
    "backbone": "dinov2_vitb14_pretrain.pth",
    "head": "segment_tr.pth",
    "cluster": "cluster_tr.pth",
    "codebook": "modular.npy",
}


def cause27_checkpoint_paths(checkpoint_dir: str | os.PathLike) -> dict[str, str]:
    """Paths of the four files in ``checkpoint_dir``; a missing one raises an error naming it."""
    from pathlib import Path

    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        raise InputFileError(folder, "checkpoint folder not found",
                             "it must hold " + ", ".join(CAUSE27_CHECKPOINT_FILES.values()))
    paths = {k: folder / name for k, name in CAUSE27_CHECKPOINT_FILES.items()}
    for key, p in paths.items():
        if not p.is_file():
            raise InputFileError(p, "missing from the checkpoint folder",
                                 "place the CAUSE-TR / DINOv2 weights there; nothing is downloaded")
    return {k: str(p) for k, p in paths.items()}


def load_cause27_models(checkpoint_dir: str | os.PathLike, arch: str | None = "dinov2_vitb14"):
    """(backbone, Segment_TR head, cluster probe) from the flat checkpoint folder, CPU, eval mode.

    ``arch``: the DINOv2 architecture the backbone file must have (None: read it from the
    file, for tests with tiny checkpoints). Every mismatch names the file.
    """
    paths = cause27_checkpoint_paths(checkpoint_dir)
    backbone = build_dinov2(paths["backbone"], arch)
    head = build_segment_tr(paths["head"], codebook=paths["codebook"], dim=int(backbone.embed_dim))
    probe = load_cluster_probe(paths["cluster"], reduced_dim=head.reduced_dim)
    return backbone, head, probe
