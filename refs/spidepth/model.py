"""SPIdepth (Lavreniuk, 2024) depth network, written here so the official checkpoints load.

Architecture (as in the SPIdepth / SQLdepth code; our own implementation):

- ``encoder``: a U-Net whose encoder is a timm ``features_only`` backbone (ConvNeXt /
  ConvNeXtV2, 4 levels at strides 4..32) and whose decoder has one block per entry of
  ``decoder_channels`` (upsample bilinearly to the next skip, concatenate, two
  conv3x3-BN-ReLU), the last block upsampling x2 without skip, then a 1x1 conv to
  ``model_dim`` channels. Output: (B, model_dim, H/2, W/2).
- ``depth_decoder``: the query-based depth head: patch embedding (conv, kernel = stride
  = ``patch_size``) + learned positional encodings (500 slots) -> 4-layer transformer
  encoder (post-norm, ReLU, feed-forward 1024, ``num_heads`` heads, sequence-first);
  the first ``query_nums`` tokens are the queries; a 3x3 conv of the features is dotted
  with each query (energy maps), softmax over pixels gives per-query summaries, an MLP
  regresses ``dim_out`` adaptive bin widths over [min_depth, max_depth], a 1x1 conv +
  softmax over the energy maps gives per-pixel bin probabilities, and the output is the
  probability-weighted bin centre. Output: (B, 1, H/2, W/2), values in
  [min_depth, max_depth] (self-supervised: up to an unknown global scale).

State-dict keys are those of SPIdepth's ``SQLdepth`` module: ``encoder.*`` (saved as
``encoder.pth``, possibly with extra ``height``/``width`` entries) and
``depth_decoder.*`` (saved as ``depth.pth``, no prefix). Input: RGB in [0, 1], no mean/std
normalisation.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

#: the released Cityscapes model (README: args_cvnXt_H_cityscapes_finetune_eval.txt, and
#: tools/evaluate_depth_cityscapes_config.py hard-codes the backbone)
CITYSCAPES_BACKBONE = "convnextv2_huge"
CITYSCAPES_INPUT_SIZE = (320, 1024)
POSITIONAL_SLOTS = 500


@dataclass
class SPIdepthConfig:
    """Hyper-parameters; defaults are the released Cityscapes model's."""

    backbone: str = CITYSCAPES_BACKBONE  # timm architecture name (built with pretrained=False)
    decoder_channels: tuple[int, ...] = (1024, 512, 256, 128)
    model_dim: int = 32
    patch_size: int = 32
    query_nums: int = 64
    dim_out: int = 64
    num_heads: int = 4
    transformer_layers: int = 4
    dim_feedforward: int = 1024
    min_depth: float = 0.01
    max_depth: float = 80.0
    input_size: tuple[int, int] = field(default=CITYSCAPES_INPUT_SIZE)  # (H, W) the network was trained at

    def to_dict(self) -> dict:
        d = asdict(self)
        d["decoder_channels"] = list(self.decoder_channels)
        d["input_size"] = list(self.input_size)
        return d


# --------------------------------------------------------------------------- encoder (U-Net)
class ConvBnReLU(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class UpBlock(nn.Module):
    """Upsample (to the skip's size, or x2 without skip), concatenate, two conv-BN-ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = ConvBnReLU(cin, cout)
        self.conv2 = ConvBnReLU(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        if skip is not None:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            x = torch.cat([x, skip], dim=1)
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.conv2(self.conv1(x))


class UnetDecoder(nn.Module):
    def __init__(self, encoder_channels: list[int], decoder_channels: tuple[int, ...], out_channels: int):
        super().__init__()
        # encoder_channels deepest first; block i takes the previous output + skip i
        prev = [encoder_channels[0]] + list(decoder_channels[:-1])
        skips = list(encoder_channels[1:]) + [0]
        ins = [p + s for p, s in zip(prev, skips)]
        if len(ins) < len(decoder_channels):
            ins.append(ins[-1] // 2)
        self.center = nn.Identity()
        self.blocks = nn.ModuleList(UpBlock(i, o) for i, o in zip(ins, decoder_channels))
        self.final_conv = nn.Conv2d(decoder_channels[-1], out_channels, kernel_size=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.center(feats[0])
        skips = feats[1:]
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < len(skips) else None)
        return self.final_conv(x)


class UnetEncoder(nn.Module):
    """timm backbone (features_only) + U-Net decoder: (B,3,H,W) -> (B, model_dim, H/2, W/2)."""

    def __init__(self, backbone: str, decoder_channels: tuple[int, ...], out_channels: int):
        super().__init__()
        import timm

        self.encoder = timm.create_model(backbone, features_only=True, pretrained=False, in_chans=3)
        chans = [info["num_chs"] for info in self.encoder.feature_info][::-1]
        self.decoder = UnetDecoder(chans, tuple(decoder_channels), out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = list(self.encoder(x))[::-1]
        return self.decoder(feats)


# --------------------------------------------------------------------------- query depth head
class QueryDepthHead(nn.Module):
    """Features (B, C, h, w) -> depth (B, 1, h, w) in [min_depth, max_depth]."""

    def __init__(self, in_channels: int, embedding_dim: int, patch_size: int, num_heads: int,
                 query_nums: int, dim_out: int, min_depth: float, max_depth: float,
                 transformer_layers: int = 4, dim_feedforward: int = 1024):
        super().__init__()
        self.embedding_convPxP = nn.Conv2d(in_channels, embedding_dim, kernel_size=patch_size, stride=patch_size)
        self.positional_encodings = nn.Parameter(torch.rand(POSITIONAL_SLOTS, embedding_dim))
        layer = nn.TransformerEncoderLayer(embedding_dim, num_heads, dim_feedforward=dim_feedforward)
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=transformer_layers,
                                                         enable_nested_tensor=False)
        self.conv3x3 = nn.Conv2d(in_channels, embedding_dim, kernel_size=3, padding=1)
        self.bins_regressor = nn.Sequential(
            nn.Linear(embedding_dim * query_nums, 16 * query_nums), nn.LeakyReLU(),
            nn.Linear(16 * query_nums, 16 * 16), nn.LeakyReLU(),
            nn.Linear(16 * 16, dim_out),
        )
        self.convert_to_prob = nn.Sequential(nn.Conv2d(query_nums, dim_out, kernel_size=1), nn.Softmax(dim=1))
        self.query_nums = query_nums
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embedding_convPxP(x).flatten(2)  # (B, E, S)
        n_tokens = tokens.shape[2]
        if n_tokens > POSITIONAL_SLOTS or n_tokens < self.query_nums:
            raise ValueError(
                f"SPIdepth head: {n_tokens} patches at this input size; need {self.query_nums}..{POSITIONAL_SLOTS} "
                "(change the input size)"
            )
        tokens = tokens + self.positional_encodings[:n_tokens].T.unsqueeze(0)
        tokens = self.transformer_encoder(tokens.permute(2, 0, 1))  # (S, B, E)
        queries = tokens[: self.query_nums].permute(1, 0, 2)  # (B, Q, E)

        feats = self.conv3x3(x)  # (B, E, h, w)
        b, e, h, w = feats.shape
        flat = feats.reshape(b, e, h * w).permute(0, 2, 1)  # (B, hw, E)
        energy = torch.matmul(flat, queries.permute(0, 2, 1))  # (B, hw, Q)
        attn = torch.softmax(energy, dim=1)  # over pixels
        summary = torch.matmul(attn.permute(0, 2, 1), flat)  # (B, Q, E)
        energy_maps = energy.permute(0, 2, 1).reshape(b, self.query_nums, h, w)

        widths = torch.relu(self.bins_regressor(summary.reshape(b, -1))) + 0.1
        widths = widths / widths.sum(dim=1, keepdim=True)
        widths = F.pad((self.max_depth - self.min_depth) * widths, (1, 0), value=self.min_depth)
        edges = torch.cumsum(widths, dim=1)
        centres = 0.5 * (edges[:, :-1] + edges[:, 1:])  # (B, dim_out)
        prob = self.convert_to_prob(energy_maps)  # (B, dim_out, h, w)
        return (prob * centres[:, :, None, None]).sum(dim=1, keepdim=True)


class SPIdepth(nn.Module):
    """Image (B, 3, H, W) RGB in [0, 1] -> depth (B, 1, H/2, W/2) in [min_depth, max_depth]."""

    def __init__(self, config: SPIdepthConfig | None = None):
        super().__init__()
        self.config = config = config or SPIdepthConfig()
        self.encoder = UnetEncoder(config.backbone, config.decoder_channels, config.model_dim)
        self.depth_decoder = QueryDepthHead(
            config.model_dim, config.model_dim, config.patch_size, config.num_heads, config.query_nums,
            config.dim_out, config.min_depth, config.max_depth, config.transformer_layers, config.dim_feedforward,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.depth_decoder(self.encoder(x))

    # ------------------------------------------------------------------ official checkpoint layout
    def official_state_dicts(self) -> tuple[dict, dict]:
        """(encoder.pth dict incl. height/width, depth.pth dict) as SPIdepth saves them."""
        enc = {k[len("encoder."):]: v for k, v in self.state_dict().items() if k.startswith("encoder.")}
        dec = {k[len("depth_decoder."):]: v for k, v in self.state_dict().items() if k.startswith("depth_decoder.")}
        enc["height"], enc["width"] = int(self.config.input_size[0]), int(self.config.input_size[1])
        return enc, dec

    def save_official(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        enc, dec = self.official_state_dicts()
        torch.save(enc, folder / "encoder.pth")
        torch.save(dec, folder / "depth.pth")

    def load_official(self, encoder_sd: Mapping, depth_sd: Mapping) -> None:
        """Load ``encoder.pth`` / ``depth.pth`` dicts.

        As SPIdepth's evaluation does, extra encoder entries are ignored (``height``,
        ``width``, ``use_stereo`` and any tensor the U-Net does not have); every parameter
        of the network must be present, and ``depth.pth`` must match exactly.
        """
        missing, unexpected = [], []
        for module, sd, strict in ((self.encoder, encoder_sd, False), (self.depth_decoder, depth_sd, True)):
            own = module.state_dict()
            sd = _match_grn_shapes(_clean(sd), own)
            if not strict:
                sd = {k: v for k, v in sd.items() if k in own}
            r = module.load_state_dict(sd, strict=False)
            missing += list(r.missing_keys)
            unexpected += list(r.unexpected_keys)
        if missing or unexpected:
            raise KeyError(
                f"checkpoint does not match SPIdepth({self.config.backbone}): "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )


# --------------------------------------------------------------------------- config from checkpoints
def _clean(sd: Mapping) -> dict:
    """Tensors only, ``module.`` (DataParallel) prefixes stripped, old GRN names renamed."""
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        if k.startswith("module."):
            k = k[len("module."):]
        k = re.sub(r"\.grn\.gamma$", ".grn.weight", k)  # official ConvNeXt-V2 / older timm naming
        k = re.sub(r"\.grn\.beta$", ".grn.bias", k)
        out[k] = v
    return out


def _match_grn_shapes(sd: dict, own: Mapping) -> dict:
    for k, v in sd.items():
        if k in own and v.shape != own[k].shape and v.numel() == own[k].numel():
            sd[k] = v.reshape(own[k].shape)
    return sd


#: (is ConvNeXt-V2, stem width, blocks in stage 3) -> timm architecture
_CONVNEXT_ARCHS = {
    (True, 40, 6): "convnextv2_atto", (True, 48, 6): "convnextv2_femto", (True, 64, 6): "convnextv2_pico",
    (True, 80, 8): "convnextv2_nano", (True, 96, 9): "convnextv2_tiny", (True, 96, 27): "convnextv2_small",
    (True, 128, 27): "convnextv2_base", (True, 192, 27): "convnextv2_large", (True, 352, 27): "convnextv2_huge",
    (False, 40, 6): "convnext_atto", (False, 48, 6): "convnext_femto", (False, 64, 6): "convnext_pico",
    (False, 80, 8): "convnext_nano", (False, 96, 9): "convnext_tiny", (False, 96, 27): "convnext_small",
    (False, 128, 27): "convnext_base", (False, 192, 27): "convnext_large", (False, 256, 27): "convnext_xlarge",
}


def infer_backbone(encoder_sd: Mapping) -> str:
    """timm ConvNeXt(V2) architecture name from an ``encoder.pth`` dict (stem width, depth, GRN)."""
    sd = _clean(encoder_sd)
    stem = sd.get("encoder.stem_0.weight")
    if stem is None:
        raise KeyError("encoder checkpoint has no 'encoder.stem_0.weight': not a ConvNeXt-based SPIdepth encoder")
    is_v2 = any(".grn." in k for k in sd)
    n_blocks = len({m.group(1) for k in sd if (m := re.match(r"encoder\.stages_2\.blocks\.(\d+)\.", k))})
    key = (is_v2, int(stem.shape[0]), n_blocks)
    if key not in _CONVNEXT_ARCHS:
        raise KeyError(f"unknown ConvNeXt variant (V2={is_v2}, width={key[1]}, stage-3 blocks={n_blocks})")
    return _CONVNEXT_ARCHS[key]


def config_from_state_dicts(encoder_sd: Mapping, depth_sd: Mapping, **overrides) -> SPIdepthConfig:
    """Read every shape hyper-parameter off the two checkpoint dicts.

    ``min_depth``/``max_depth`` are not stored: defaults are the Cityscapes evaluation
    values (0.01, 80); they only shift/scale the output affinely. The input size comes
    from ``encoder.pth``'s ``height``/``width`` entries when present.
    """
    enc, dec = _clean(encoder_sd), _clean(depth_sd)
    blocks = sorted({int(m.group(1)) for k in enc if (m := re.match(r"decoder\.blocks\.(\d+)\.conv1\.conv\.weight$", k))})
    kw = dict(
        backbone=infer_backbone(enc),
        decoder_channels=tuple(int(enc[f"decoder.blocks.{i}.conv1.conv.weight"].shape[0]) for i in blocks),
        model_dim=int(enc["decoder.final_conv.weight"].shape[0]),
        patch_size=int(dec["embedding_convPxP.weight"].shape[-1]),
        query_nums=int(dec["convert_to_prob.0.weight"].shape[1]),
        dim_out=int(dec["convert_to_prob.0.weight"].shape[0]),
        transformer_layers=len({k.split(".")[2] for k in dec if k.startswith("transformer_encoder.layers.")}),
        dim_feedforward=int(dec["transformer_encoder.layers.0.linear1.weight"].shape[0]),
    )
    if "height" in encoder_sd and "width" in encoder_sd:
        kw["input_size"] = (int(encoder_sd["height"]), int(encoder_sd["width"]))
    kw.update(overrides)
    return SPIdepthConfig(**kw)


def _torch_load(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return dict(obj)


def read_checkpoints(weights: str | os.PathLike) -> tuple[dict, dict]:
    """(encoder dict, depth dict) from a folder with ``encoder.pth`` + ``depth.pth`` (the
    official release layout) or from one file holding a whole-model state dict
    (``encoder.*`` and ``depth_decoder.*`` keys, as SPIdepth's ``SQLdepth`` module has)."""
    p = Path(weights)
    if p.is_dir():
        return _torch_load(p / "encoder.pth"), _torch_load(p / "depth.pth")
    sd = _clean(_torch_load(p))
    enc = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    dec = {k[len("depth_decoder."):]: v for k, v in sd.items() if k.startswith("depth_decoder.")}
    if not enc or not dec:
        raise KeyError(f"{p}: expected encoder.* and depth_decoder.* keys (or give the folder with encoder.pth and depth.pth)")
    return enc, dec


def load_spidepth(weights: str | os.PathLike, **overrides) -> SPIdepth:
    """Build the network described by the checkpoint(s) and load them (eval mode, CPU)."""
    enc, dec = read_checkpoints(weights)
    model = SPIdepth(config_from_state_dicts(enc, dec, **overrides))
    model.load_official(enc, dec)
    return model.eval()
