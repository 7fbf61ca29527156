"""DINOv2 ViT/14 backbones (Oquab et al. 2023) built with ``timm`` from a local checkpoint in the
official key layout (``dinov2_vit{s,b,l}14_pretrain.pth``), and their patch tokens. Nothing is
downloaded. Shared by the feature stage and the CAUSE loaders.
"""

from __future__ import annotations

import math
import os
import re
from typing import Mapping

from pathlib import Path

from pseudo_labels.core.errors import InputFileError

#: backbone name -> (embed_dim, depth, num_heads); all DINOv2 ViT/14, mlp ratio 4, layer scale
DINOV2_ARCHS: dict[str, tuple[int, int, int]] = {
    "dinov2_vits14": (384, 12, 6),
    "dinov2_vitb14": (768, 12, 12),
    "dinov2_vitl14": (1024, 24, 16),
}

# --------------------------------------------------------------------------- DINOv2 checkpoints
def load_checkpoint(path: str | os.PathLike, what: str) -> dict:
    """torch-load a state dict from a local file (tensors only); unwrap common containers."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, f"{what} checkpoint not found", "give the local path of the .pth file")
    from pseudo_labels.core.io import load_checkpoint as load_tensors_only

    obj = load_tensors_only(path, f"{what} checkpoint")
    for key in ("model", "state_dict", "teacher"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputFileError(path, f"not a state dict of tensors (expected {what})")
    out = {}
    for k, v in obj.items():
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def infer_dinov2_config(state: Mapping, path: str | os.PathLike = "") -> dict:
    """Architecture of an official-layout DINOv2 state dict, read from its tensor shapes.

    Returns ``embed_dim, depth, num_heads (embed_dim // 64, as in every DINOv2 model),
    mlp_ratio, patch_size, pos_grid`` (side of the square position-embedding grid).
    """
    need = ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise InputFileError(path, f"not a DINOv2 ViT checkpoint: missing keys {missing}",
                             "expected the official facebookresearch/dinov2 key layout")
    if any(".mlp.w12." in k for k in state):
        raise InputFileError(path, "SwiGLU (ViT-g/14) DINOv2 checkpoints are not supported",
                             "use ViT-S/14, B/14 or L/14")
    embed = int(state["cls_token"].shape[-1])
    depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    if depth <= 0:
        raise InputFileError(path, "not a DINOv2 ViT checkpoint: no blocks.N.* keys "
                             "(chunked 'blocks.C.N.' layouts are not supported)")
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    mlp_ratio = float(fc1.shape[0]) / embed if fc1 is not None else 4.0
    n_pos = int(state["pos_embed"].shape[1]) - 1
    grid = int(round(math.sqrt(n_pos)))
    if grid * grid != n_pos:
        raise InputFileError(path, f"pos_embed has {n_pos} patch positions, not a square grid")
    return dict(embed_dim=embed, depth=depth, num_heads=max(1, embed // 64), mlp_ratio=mlp_ratio,
                patch_size=int(state["patch_embed.proj.weight"].shape[-1]), pos_grid=grid)


def official_pos_embed(pos_embed, grid_hw: tuple[int, int]):
    """DINOv2's position-embedding interpolation (bicubic, scale (n + 0.1) / sqrt(N), no antialias).

    ``pos_embed`` (1, 1 + N, D) -> (1, 1 + h*w, D). Same arithmetic as
    ``interpolate_pos_encoding`` of facebookresearch/dinov2 (and CAUSE's copy of it).
    """
    import torch
    import torch.nn.functional as F

    n = pos_embed.shape[1] - 1
    h, w = grid_hw
    if n == h * w and h == w:
        return pos_embed
    side = int(round(math.sqrt(n)))
    cls_pos, patch_pos = pos_embed[:, :1].float(), pos_embed[:, 1:].float()
    d = patch_pos.shape[-1]
    patch_pos = patch_pos.reshape(1, side, side, d).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, scale_factor=((h + 0.1) / side, (w + 0.1) / side), mode="bicubic")
    assert patch_pos.shape[-2:] == (h, w), patch_pos.shape
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, d)
    return torch.cat([cls_pos, patch_pos], 1).to(pos_embed.dtype)


def build_dinov2(weights: str | os.PathLike | None, arch: str | None = "dinov2_vitb14",
                 config: Mapping | None = None):
    """A timm ViT in the DINOv2 configuration, loaded from an official-layout checkpoint.

    ``arch`` one of :data:`DINOV2_ARCHS` (the checkpoint must match it), or None: the
    architecture is read from the checkpoint (:func:`infer_dinov2_config`). ``weights``
    None builds random weights (benchmarks, tests), then ``config`` or ``arch`` gives the
    size. Returns the timm model in eval mode (CPU, float32).
    """
    import timm.models.vision_transformer as tvit
    import torch

    state = None
    if weights is not None:
        state = load_checkpoint(weights, f"DINOv2 {arch or 'ViT'}")
        cfg = infer_dinov2_config(state, weights)
        if arch is not None:
            e, d, h = DINOV2_ARCHS[arch]
            if (cfg["embed_dim"], cfg["depth"], cfg["patch_size"]) != (e, d, 14):
                raise InputFileError(
                    weights,
                    f"checkpoint is a ViT with embed dim {cfg['embed_dim']}, depth {cfg['depth']}, "
                    f"patch {cfg['patch_size']}, but {arch} expects embed dim {e}, depth {d}, patch 14",
                    "pass the matching --backbone or the right --weights file")
            cfg["num_heads"] = h
    elif config is not None:
        cfg = dict(config)
    else:
        e, d, h = DINOV2_ARCHS[arch or "dinov2_vitb14"]
        cfg = dict(embed_dim=e, depth=d, num_heads=h, mlp_ratio=4.0, patch_size=14, pos_grid=37)
    p = cfg["patch_size"]
    model = tvit.VisionTransformer(
        img_size=cfg["pos_grid"] * p, patch_size=p, embed_dim=cfg["embed_dim"], depth=cfg["depth"],
        num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"], init_values=1e-5, num_classes=0,
        dynamic_img_size=True, weight_init="skip" if state is not None else "",
    )
    if state is not None:
        state = {k: v for k, v in state.items() if k != "mask_token"}  # used only in DINOv2 training
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
        if missing or unexpected or wrong:
            parts = []
            if missing:
                parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
            if wrong:
                parts.append("wrong shapes " + ", ".join(
                    f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in wrong[:3]))
            raise InputFileError(weights, f"does not fit DINOv2 {arch or 'ViT'} "
                                 f"(embed {cfg['embed_dim']}, depth {cfg['depth']}): " + "; ".join(parts),
                                 "expected the official facebookresearch/dinov2 key layout")
        with torch.no_grad():
            model.load_state_dict(state, strict=True)
    model.eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    return model


def dinov2_patch_tokens(model, x):
    """Patch tokens after the final norm: (B, 3, H, W) -> (B, h, w, D), h = H / patch.

    Follows DINOv2's forward (cls token + interpolated position embedding, blocks, norm),
    with the position embedding resampled the official way (:func:`official_pos_embed`).
    """
    import torch

    b = x.shape[0]
    t = model.patch_embed(x)  # (B, h, w, D) with dynamic_img_size
    h, w, d = t.shape[1], t.shape[2], t.shape[3]
    cache = model.__dict__.setdefault("_pl_pos_cache", {})
    key = (h, w, t.device, t.dtype)
    if key not in cache:
        cache[key] = official_pos_embed(model.pos_embed, (h, w)).to(device=t.device)
    pos = cache[key]
    t = torch.cat([model.cls_token.expand(b, -1, -1).to(t.dtype), t.reshape(b, h * w, d)], 1)
    t = t + pos.to(t.dtype)
    t = model.norm_pre(t)
    t = model.blocks(t)
    t = model.norm(t)
    return t[:, 1:].reshape(b, h, w, d)
