"""CRM student: a segmentation network trained on (pseudo-)labels with complementary random masking.

After "Complementary Random Masking for RGB-Thermal Semantic Segmentation" (Shin et al., 2023,
arXiv 2303.17386; code UkcheolShin/CRM_RGBTSeg). Facts taken from that code: one backbone per
modality; the features of the two backbones are fused by an element-wise maximum at every scale;
masking replaces the patch embeddings (stride-4 tokens) of hidden patches by a learnable mask
token; the released MFNet setting masks 32 px patches at ratio 0.5; the training loss is
``L_sup(RGB-T) + w_mws (L_sup(RGB) + L_sup(T)) + L_sup(masked RGB-T) + w_sdc L_SDC + w_sdn L_SDN``
with ``L_SDC = |clean.detach() - masked RGB-T|_1`` and ``L_SDN = sum over modalities of
|clean.detach() - masked single modality|_1`` (mean absolute difference), all weights 1 there.
Compared with UkcheolShin/CRM_RGBTSeg at commit a79102381678e4009b60fc2aa24eba67cb073539
(``dataloaders/augmentation.py`` ``MaskGenerator``, ``configs/*/Base-*.yaml``, ``util/util.py``).

Which settings are the release's and which are ours (RGB-T data sets):

- the release's: masking ``random-complementary`` (``INPUT.MASK.STRATEGY: 'rand_comp'`` in the
  MFNet, KP and PST900 configs; the default here), 32 px patches, ratio 0.5, w_mws 1; the mIoU
  of ``generate-crm-pseudolabels`` under ``--miou-convention official`` (RTFNet's
  ``compute_results``: a class without GT or prediction scores IoU 0, mean over all classes);
- ours: w_sdc = w_sdn = 0.1 (our SD losses compare per-pixel logits; at the release's 1 they
  hurt on the synthetic RGB-T set, see reports/rgbt_crm.md), the tiny CNN / FPN student below,
  and the ``present`` mIoU convention (absent classes left out of the mean).

Model (:class:`CRMStudent`), lighter than the paper's Mask2Former:

- encoders: :class:`TinyEncoder` (builtin, three conv stages at strides 4 / 8 / 16, for tests
  and CPU) or any ``timm`` CNN with ``features_only`` (random init or a local weights file);
- fusion: element-wise max of the modalities' features per scale (no fusion for RGB-only data);
- decoder (:class:`LightDecoder`): an FPN-style per-pixel head (1x1 laterals, top-down sum,
  one 3x3 conv, 1x1 classifier at stride 4, bilinear upsampling). Mask2Former's query-based
  mask classification with Hungarian matching and its deformable-attention pixel decoder are
  left out: on CPU-sized data they cost most of the time, and the CRM losses do not depend on
  them. Our losses are per-pixel cross-entropy (void 255 ignored) and the SD losses are the mean
  absolute difference of per-pixel logits (CRM compares the queries' class logits).

Masks: (B, 1, H, W) float tensors, 1 = hidden. Patches are squares of ``patch_size`` pixels on a
grid anchored at the top-left corner (the last row / column may be cut by the image border).
Modes (:data:`MASKINGS`): ``none``; ``random`` (each modality hides its own random ``ratio`` of
the patches: a patch may be hidden in both); ``complementary`` (RGB hides ``ratio`` of the
patches, thermal hides exactly the others: every patch is seen by exactly one modality);
``random-complementary`` (the released code's ``rand_comp``: per image one of {RGB clean +
thermal complementary-masked, RGB masked + thermal clean, both complementary}, equally likely).

Training is seeded: weights from ``torch.manual_seed(seed)``, the epoch's image order, flips and
masks from ``numpy.random.default_rng([seed, epoch, ...])``, so a run resumed from its last
checkpoint equals an uninterrupted run (on CPU; CUDA kernels may differ in the last bits).
Checkpoint ``RUN/checkpoint.pt`` after every epoch; log ``RUN/train_log.json``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pseudo_labels.stages.instance.maps import resize_semantic
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError

from pseudo_labels.core.defaults import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from pseudo_labels.core.defaults import (  # noqa: E402
    CRM_MASKING, CRM_MASK_PATCH, CRM_MASK_RATIO, CRM_SDC_WEIGHT, CRM_SDN_WEIGHT, CRM_MWS_WEIGHT, CRM_BACKBONE, CRM_WIDTH, CRM_DECODER_DIM, CRM_EPOCHS, CRM_BATCH_SIZE, CRM_LR, CRM_WEIGHT_DECAY, CRM_POLY_POWER, CRM_SEED,
)

MASKINGS = ("none", "random", "complementary", "random-complementary")
MODALITY_CHANNELS = {"rgb": 3, "thermal": 1}
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.json"
IGNORE = 255
THERMAL_MEAN, THERMAL_STD = 0.5, 0.25


# --------------------------------------------------------------------------- masks
def patch_grid_mask(height: int, width: int, patch_size: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """(gh, gw) bool: ``ceil(ratio * gh * gw)`` patches drawn without replacement are True (hidden)."""
    gh, gw = -(-height // patch_size), -(-width // patch_size)
    n = gh * gw
    hidden = np.zeros(n, bool)
    hidden[rng.permutation(n)[: int(math.ceil(ratio * n - 1e-9))]] = True
    return hidden.reshape(gh, gw)


def expand_grid(grid: np.ndarray, height: int, width: int, patch_size: int) -> np.ndarray:
    """(gh, gw) patch grid -> (height, width) pixel map (patches of ``patch_size``, cut at the border)."""
    return np.repeat(np.repeat(grid, patch_size, 0), patch_size, 1)[:height, :width]


def modality_masks(batch: int, height: int, width: int, *, mode: str, patch_size: int, ratio: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(rgb, thermal) masks, each (B, 1, H, W) float32 with 1 = hidden; see the module docstring.

    ``complementary``: ``thermal == 1 - rgb`` exactly, on every pixel of every image.
    """
    if mode not in MASKINGS or mode == "none":
        raise PseudoLabelsError(f"masking {mode!r}: choose one of {', '.join(m for m in MASKINGS if m != 'none')}")
    if patch_size < 1 or not 0.0 <= ratio <= 1.0:
        raise PseudoLabelsError(f"mask patch size {patch_size} / ratio {ratio}: need patch >= 1 and 0 <= ratio <= 1")
    rgb = np.zeros((batch, 1, height, width), np.float32)
    thermal = np.zeros_like(rgb)
    for b in range(batch):
        m = expand_grid(patch_grid_mask(height, width, patch_size, ratio, rng), height, width, patch_size)
        if mode == "random":
            rgb[b, 0] = m
            thermal[b, 0] = expand_grid(patch_grid_mask(height, width, patch_size, ratio, rng), height, width,
                                        patch_size)
            continue
        rgb[b, 0], thermal[b, 0] = m, ~m
        if mode == "random-complementary":
            choice = int(rng.integers(3))
            if choice == 0:
                rgb[b, 0] = 0.0
            elif choice == 1:
                thermal[b, 0] = 0.0
    return rgb, thermal


# --------------------------------------------------------------------------- model
def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(4, cout), nn.ReLU(inplace=True))


class TinyEncoder(nn.Module):
    """Builtin CNN: (B, in_ch, H, W) -> features at strides 4, 8, 16 with ``width`` x (1, 2, 4) channels.

    A mask (B, 1, H, W) replaces the stride-4 tokens of hidden patches by a learnable mask token
    (as CRM does after Swin's patch embedding); patch sizes should be multiples of 4.
    """

    stride = 4

    def __init__(self, in_ch: int, width: int = CRM_WIDTH):
        super().__init__()
        w = int(width)
        if w < 4 or w % 4:
            raise PseudoLabelsError(f"tiny encoder width {w}: need a multiple of 4")
        self.stem = nn.Sequential(_conv(in_ch, w, 2), _conv(w, w, 2))
        self.mask_token = nn.Parameter(torch.zeros(1, w, 1, 1))
        self.stage2 = nn.Sequential(_conv(w, 2 * w, 2), _conv(2 * w, 2 * w))
        self.stage3 = nn.Sequential(_conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w))
        self.widths = (w, 2 * w, 4 * w)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        f1 = self.stem(x)
        if mask is not None:
            m = F.interpolate(mask, size=f1.shape[-2:], mode="nearest").to(f1.dtype)
            f1 = f1 * (1 - m) + self.mask_token.to(f1.dtype) * m
        f2 = self.stage2(f1)
        return [f1, f2, self.stage3(f2)]


class TimmEncoder(nn.Module):
    """A ``timm`` CNN (``features_only``, its last three feature levels), random init or local weights.

    Masking happens at the input: hidden pixels take a learnable per-channel value (timm
    models do not expose their patch embedding uniformly). Weights are never downloaded.
    """

    def __init__(self, name: str, in_ch: int, weights: str | None = None):
        super().__init__()
        import timm

        try:
            self.net = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_ch)
        except Exception as exc:  # unknown name or a model without features_only
            raise PseudoLabelsError(f"--backbone {name}: not a timm CNN with features_only ({exc})") from None
        n = len(self.net.feature_info.channels())
        self.keep = list(range(max(0, n - 3), n))
        self.widths = tuple(self.net.feature_info.channels()[i] for i in self.keep)
        self.mask_token = nn.Parameter(torch.zeros(1, in_ch, 1, 1))
        if weights:
            _load_backbone_weights(self.net, weights, in_ch)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        if mask is not None:
            x = x * (1 - mask) + self.mask_token.to(x.dtype) * mask
        feats = self.net(x)
        return [feats[i] for i in self.keep]


def _load_backbone_weights(net: nn.Module, path: str, in_ch: int) -> None:
    """Load a local (timm / torchvision key layout) state dict; a 3-channel stem is averaged for 1 channel."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "backbone weights not found", "give a local .pth/.safetensors file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputFileError(p, f"unreadable weights ({type(exc).__name__}: {exc})") from None
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    own = net.state_dict()
    loaded = {}
    for k, v in state.items():
        if k in own and own[k].shape == v.shape:
            loaded[k] = v
        elif k in own and v.ndim == 4 and v.shape[1] == 3 and in_ch == 1 and own[k].shape == v[:, :1].shape:
            loaded[k] = v.mean(1, keepdim=True)
    if not loaded:
        raise InputFileError(p, "no tensor matches the backbone's parameters", "is it the right architecture?")
    net.load_state_dict(loaded, strict=False)


class LightDecoder(nn.Module):
    """FPN-style per-pixel head: features (strides s, 2s, 4s) -> (B, C, H, W) logits at ``out_size``."""

    def __init__(self, in_widths: Sequence[int], dim: int, num_classes: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(w, dim, 1) for w in in_widths)
        self.smooth = _conv(dim, dim)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        x = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            x = F.interpolate(x, size=feats[i].shape[-2:], mode="bilinear", align_corners=False)
            x = x + self.lateral[i](feats[i])
        logits = self.classifier(self.smooth(x))
        return F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)


class CRMStudent(nn.Module):
    """One encoder per modality, max fusion, one decoder shared by fused and single-modality features.

    ``forward(inputs, masks, heads)``: ``inputs`` maps modality -> (B, c, H, W) normalised float
    tensor; ``masks`` modality -> (B, 1, H, W) (1 = hidden) or None; ``heads`` a subset of
    ``("fused", *modalities)``. Returns head -> (B, C, H, W) logits.
    """

    def __init__(self, modalities: Sequence[str], num_classes: int, backbone: str = CRM_BACKBONE,
                 width: int = CRM_WIDTH, decoder_dim: int = CRM_DECODER_DIM, backbone_weights: str | None = None):
        super().__init__()
        self.modalities = tuple(modalities)
        enc = {}
        for m in self.modalities:
            c = MODALITY_CHANNELS[m]
            enc[m] = TinyEncoder(c, width) if backbone == "tiny" else TimmEncoder(backbone, c, backbone_weights)
        self.encoders = nn.ModuleDict(enc)
        self.decoder = LightDecoder(enc[self.modalities[0]].widths, decoder_dim, num_classes)

    def encode(self, inputs: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor | None] | None = None
               ) -> dict[str, list[torch.Tensor]]:
        masks = masks or {}
        return {m: self.encoders[m](inputs[m], masks.get(m)) for m in self.modalities}

    @staticmethod
    def fuse(feats: Mapping[str, list[torch.Tensor]]) -> list[torch.Tensor]:
        """Element-wise maximum over modalities at every scale."""
        levels = list(zip(*feats.values()))
        return [torch.stack(lv, 0).amax(0) if len(lv) > 1 else lv[0] for lv in levels]

    def decode(self, feats: Mapping[str, list[torch.Tensor]], head: str, out_size: tuple[int, int]) -> torch.Tensor:
        return self.decoder(self.fuse(feats) if head == "fused" else feats[head], out_size)

    def forward(self, inputs: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor | None] | None = None,
                heads: Sequence[str] = ("fused",)) -> dict[str, torch.Tensor]:
        feats = self.encode(inputs, masks)
        size = tuple(next(iter(inputs.values())).shape[-2:])
        return {h: self.decode(feats, h, size) for h in heads}


# --------------------------------------------------------------------------- configuration
@dataclass
class CRMModelConfig:
    """Architecture and training hyper-parameters (stored in the checkpoint; all must match to
    resume, ``epochs`` too: the poly learning-rate schedule depends on them)."""

    num_classes: int
    modalities: tuple[str, ...] = ("rgb", "thermal")
    backbone: str = CRM_BACKBONE
    backbone_weights: str | None = None
    width: int = CRM_WIDTH
    decoder_dim: int = CRM_DECODER_DIM
    masking: str = CRM_MASKING
    mask_patch_size: int = CRM_MASK_PATCH
    mask_ratio: float = CRM_MASK_RATIO
    sdc_weight: float = CRM_SDC_WEIGHT
    sdn_weight: float = CRM_SDN_WEIGHT
    mws_weight: float = CRM_MWS_WEIGHT
    epochs: int = CRM_EPOCHS
    batch_size: int = CRM_BATCH_SIZE
    lr: float = CRM_LR
    weight_decay: float = CRM_WEIGHT_DECAY
    input_size: tuple[int, int] | None = None
    hflip: bool = True
    seed: int = CRM_SEED

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        self.input_size = tuple(self.input_size) if self.input_size else None
        check_model_config(self)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["modalities"] = list(self.modalities)
        d["input_size"] = list(self.input_size) if self.input_size else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CRMModelConfig":
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


def check_model_config(c: CRMModelConfig) -> None:
    """Raise :class:`PseudoLabelsError` for settings that cannot work together."""
    bad = [m for m in c.modalities if m not in MODALITY_CHANNELS]
    if bad or not c.modalities:
        raise PseudoLabelsError(f"modalities {list(c.modalities)}: choose from {', '.join(MODALITY_CHANNELS)}")
    if c.masking not in MASKINGS:
        raise PseudoLabelsError(f"--masking {c.masking!r}: choose one of {', '.join(MASKINGS)}")
    single = len(c.modalities) < 2
    if single and c.masking != "none":
        raise PseudoLabelsError(f"--masking {c.masking}: masking needs two modalities, this data set has "
                                f"{list(c.modalities)}; use --masking none")
    if single and (c.sdn_weight > 0 or c.mws_weight > 0 or c.sdc_weight > 0):
        raise PseudoLabelsError("--sdc-weight / --sdn-weight / --mws-weight need two modalities (RGB-only data "
                                "set: set them to 0)")
    if c.masking == "none" and (c.sdc_weight > 0 or c.sdn_weight > 0):
        raise PseudoLabelsError("--sdc-weight / --sdn-weight compare clean and masked inputs: they need --masking "
                                "other than none")
    if min(c.sdc_weight, c.sdn_weight, c.mws_weight) < 0:
        raise PseudoLabelsError("loss weights must be >= 0")
    if c.backbone == "tiny" and c.masking != "none" and c.mask_patch_size % TinyEncoder.stride:
        raise PseudoLabelsError(f"--mask-patch-size {c.mask_patch_size}: the tiny backbone masks stride-4 tokens; "
                                "use a multiple of 4 (8, 16, 32, 64)")
    if c.epochs < 1 or c.batch_size < 1 or c.lr <= 0 or c.num_classes < 2:
        raise PseudoLabelsError("need epochs >= 1, batch size >= 1, lr > 0 and at least 2 classes")
    if c.input_size and (len(c.input_size) != 2 or min(c.input_size) < 16):
        raise PseudoLabelsError(f"--input-size {list(c.input_size)}: need H W of at least 16")


def build_student(c: CRMModelConfig) -> CRMStudent:
    return CRMStudent(c.modalities, c.num_classes, c.backbone, c.width, c.decoder_dim, c.backbone_weights)


# --------------------------------------------------------------------------- losses
def crm_losses(model: CRMStudent, inputs: Mapping[str, torch.Tensor], target: torch.Tensor, c: CRMModelConfig,
               masks: Mapping[str, torch.Tensor] | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts for one batch; ``target`` (B, H, W) int64 with 255 void.

    Parts: ``sup`` (fused, clean), ``mws`` (RGB-only + thermal-only, clean), ``masked`` (fused,
    masked), ``sdc`` (L1 clean fused vs masked fused logits, teacher detached), ``sdn`` (sum over
    modalities of L1 clean fused vs masked single-modality logits).
    Total = sup + w_mws mws + masked + w_sdc sdc + w_sdn sdn (parts that are off are absent).
    """
    size = tuple(target.shape[-2:])
    clean = model.encode(inputs)
    fused = model.decode(clean, "fused", size)
    parts = {"sup": F.cross_entropy(fused.float(), target, ignore_index=IGNORE)}
    total = parts["sup"]
    if c.mws_weight > 0:
        parts["mws"] = sum(F.cross_entropy(model.decode(clean, m, size).float(), target, ignore_index=IGNORE)
                           for m in model.modalities)
        total = total + c.mws_weight * parts["mws"]
    if masks is not None:
        masked = model.encode(inputs, masks)
        fused_m = model.decode(masked, "fused", size)
        parts["masked"] = F.cross_entropy(fused_m.float(), target, ignore_index=IGNORE)
        total = total + parts["masked"]
        teacher = fused.detach().float()
        if c.sdc_weight > 0:
            parts["sdc"] = (teacher - fused_m.float()).abs().mean()
            total = total + c.sdc_weight * parts["sdc"]
        if c.sdn_weight > 0:
            parts["sdn"] = sum((teacher - model.decode(masked, m, size).float()).abs().mean()
                               for m in model.modalities)
            total = total + c.sdn_weight * parts["sdn"]
    return total, parts


# --------------------------------------------------------------------------- samples and arrays
@dataclass(frozen=True)
class CRMSample:
    """One image of a data set for training / prediction (picklable).

    ``record``: the data set's own entry (:class:`~pseudo_labels.datasets.base.ImageRecord` for
    RGB-T sets, the Cityscapes ``ImageEntry``); ``label_path``: the training label PNG ((H, W)
    uint8 ids, 255 void) or None; ``gt_path``: the ground-truth label file or None;
    ``relative``: where its output label goes under an output folder; ``condition``:
    ``day`` / ``night`` / ``unknown``.
    """

    name: str
    split: str
    dataset: str
    record: Any
    relative: str
    label_path: str | None = None
    gt_path: str | None = None
    condition: str = "unknown"


def dataset_modalities(dataset: str) -> tuple[str, ...]:
    """``("rgb", "thermal")`` for RGB-T data sets, ``("rgb",)`` for Cityscapes."""
    from pseudo_labels.datasets.rgbt import RGBT_MODULES

    if dataset in RGBT_MODULES:
        return ("rgb", "thermal")
    if dataset == "cityscapes":
        return ("rgb",)
    raise PseudoLabelsError(f"--dataset {dataset!r}: choose cityscapes or {', '.join(sorted(RGBT_MODULES))}")


def list_samples(root: str | os.PathLike, dataset: str, split: str) -> list[CRMSample]:
    """Every image of one split through the data set's own lister (GT paths filled where they exist)."""
    from pseudo_labels.datasets.rgbt import RGBT_MODULES, condition_of, list_rgbt_images

    if dataset in RGBT_MODULES:
        return [CRMSample(r.stem, split, dataset, r, str(r.relative(".png")), None,
                          str(r.label_path) if r.label_path else None, condition_of(r.stem))
                for r in list_rgbt_images(dataset, root, split)]
    dataset_modalities(dataset)
    from pseudo_labels.datasets.cityscapes import gt_train_ids_file, list_images

    out = []
    for e in list_images(root, split):
        g = gt_train_ids_file(root, e)  # labelTrainIds, or the official zip's labelIds
        out.append(CRMSample(e.stem, split, dataset, e, str(e.relative(".png")), None,
                             str(g) if g is not None else None))
    return out


def read_modalities(sample: CRMSample, modalities: Sequence[str]) -> dict[str, np.ndarray]:
    """modality -> (H, W, c) uint8 array of one sample (RGB 3 channels, thermal 1)."""
    from pseudo_labels.datasets.rgbt import RGBT_MODULES, read_rgbt_pair

    if sample.dataset in RGBT_MODULES:
        rgb, thermal = read_rgbt_pair(sample.dataset, sample.record)
        out = {"rgb": rgb, "thermal": thermal[:, :, None]}
    else:
        from pseudo_labels.core.io import read_image_rgb

        out = {"rgb": read_image_rgb(sample.record.image_path)}
    missing = [m for m in modalities if m not in out]
    if missing:
        raise PseudoLabelsError(f"{sample.name}: data set {sample.dataset} has no {missing[0]} images")
    return {m: out[m] for m in modalities}


def read_ground_truth(sample: CRMSample) -> np.ndarray | None:
    """(H, W) uint8 ground-truth ids of one sample (void 255), None when it has none."""
    from pseudo_labels.datasets.rgbt import RGBT_MODULES, read_rgbt_label

    if sample.gt_path is None:
        return None
    if sample.dataset in RGBT_MODULES:
        return read_rgbt_label(sample.dataset, sample.record)
    from pseudo_labels.datasets.cityscapes import read_train_ids_file

    return read_train_ids_file(sample.gt_path)


def read_label(path: str, num_classes: int) -> np.ndarray:
    """(H, W) uint8 label ids (255 void); ids >= ``num_classes`` other than 255 are an error.
    A Cityscapes ``_gtFine_labelIds.png`` (``--labels gt`` on the official layout) is read as trainIds."""
    from pseudo_labels.datasets.cityscapes import read_train_ids_file

    lab = read_train_ids_file(path)
    if lab.ndim != 2:
        raise InputFileError(path, f"expected a single-channel label PNG, got shape {lab.shape}")
    bad = np.unique(lab[(lab >= num_classes) & (lab != IGNORE)])
    if bad.size:
        raise InputFileError(path, f"label ids {bad[:8].tolist()} are not classes 0..{num_classes - 1} or 255",
                             "give --num-classes, or labels mapped to the data set's classes")
    return lab.astype(np.uint8)


def to_input_tensors(arrays: Mapping[str, np.ndarray], size: tuple[int, int] | None = None
                     ) -> dict[str, torch.Tensor]:
    """modality -> (1, c, h, w) float32 normalised tensor, resized (bilinear) to ``size`` when given."""
    import cv2

    out = {}
    for m, a in arrays.items():
        if size is not None and a.shape[:2] != tuple(size):
            a = cv2.resize(a, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            a = a[:, :, None] if a.ndim == 2 else a
        x = a.astype(np.float32) / 255.0
        if m == "rgb":
            x = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
        else:
            x = (x - THERMAL_MEAN) / THERMAL_STD
        out[m] = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    return out


# --------------------------------------------------------------------------- training
def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a torch device (the feature stage's check: error when CUDA is absent)."""
    from pseudo_labels.stages.semantic.features import resolve_device as checked_device

    return torch.device(checked_device(device))


@dataclass
class TrainingData:
    """Decoded training set: per sample modality arrays (H, W, c) uint8 and (H, W) uint8 labels,
    all at the training size."""

    inputs: list[dict[str, np.ndarray]]
    labels: list[np.ndarray]

    @classmethod
    def load(cls, samples: Sequence[CRMSample], c: CRMModelConfig) -> "TrainingData":
        import cv2

        inputs, labels = [], []
        for s in samples:
            arrays = read_modalities(s, c.modalities)
            lab = read_label(s.label_path, c.num_classes)
            if lab.shape != arrays["rgb"].shape[:2]:
                raise InputFileError(s.label_path,
                                     f"label size {lab.shape} differs from image {arrays['rgb'].shape[:2]}")
            if c.input_size:
                arrays = {m: cv2.resize(a, (c.input_size[1], c.input_size[0]), interpolation=cv2.INTER_LINEAR)
                          .reshape(c.input_size[0], c.input_size[1], -1) for m, a in arrays.items()}
                lab = resize_semantic(lab, c.input_size)
            inputs.append(arrays)
            labels.append(lab)
        sizes = {lab.shape for lab in labels}
        if len(sizes) > 1:
            raise PseudoLabelsError(f"training images have different sizes {sorted(sizes)}; give --input-size H W")
        return cls(inputs, labels)

    def batch(self, idx: Sequence[int], flips: Sequence[bool]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        xs: dict[str, list] = {}
        ys = []
        for i, flip in zip(idx, flips):
            for m, t in to_input_tensors(self.inputs[i]).items():
                xs.setdefault(m, []).append(t.flip(-1) if flip else t)
            y = self.labels[i][:, ::-1] if flip else self.labels[i]
            ys.append(torch.from_numpy(np.ascontiguousarray(y).astype(np.int64)))
        return {m: torch.cat(v) for m, v in xs.items()}, torch.stack(ys)


def _poly_lr(c: CRMModelConfig, step: int, total: int) -> float:
    return c.lr * (1.0 - min(step, total - 1) / total) ** CRM_POLY_POWER


def save_checkpoint(path: Path, model: CRMStudent, opt, scaler, epoch: int, c: CRMModelConfig, history: list,
                    meta: Mapping[str, Any]) -> None:
    from pseudo_labels.core.io import atomic_path

    import json

    # metadata as JSON strings: the file loads with torch.load(weights_only=True)
    state = {"format": "pseudo_labels.crm/1", "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "optimizer": opt.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
             "epoch": int(epoch), "config": json.dumps(c.to_dict()), "history": json.dumps(list(history), default=float),
             "meta": json.dumps(dict(meta), default=str)}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(run: str | os.PathLike) -> dict:
    """``RUN/checkpoint.pt`` (or a checkpoint file) as a dict; errors name the file."""
    p = Path(run)
    p = p / CHECKPOINT_NAME if p.is_dir() else p
    if not p.is_file():
        raise PseudoLabelsError(f"{p}: no CRM checkpoint (train one with: pseudo-labels train-crm --out RUN)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputFileError(p, f"unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != "pseudo_labels.crm/1":
        raise InputFileError(p, "not a CRM checkpoint of this tool")
    import json

    for key in ("config", "history", "meta"):  # JSON strings (older files: plain containers)
        if isinstance(state.get(key), str):
            state[key] = json.loads(state[key])
    return state


def student_from_checkpoint(state: Mapping[str, Any], device: str = "cpu") -> tuple[CRMStudent, CRMModelConfig]:
    c = CRMModelConfig.from_dict({**state["config"], "backbone_weights": None})
    model = build_student(c)
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval(), c


def _resume(ckpt: Path, c: CRMModelConfig, model, opt, scaler, restart: bool, log) -> tuple[int, list]:
    if not ckpt.exists():
        return 0, []
    if restart:
        ckpt.unlink()
        return 0, []
    state = load_checkpoint(ckpt)
    old, new = CRMModelConfig.from_dict(state["config"]).to_dict(), c.to_dict()
    if old != new:  # epochs included: the learning-rate schedule depends on them
        diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
        raise PseudoLabelsError(f"{ckpt}: was trained with other settings {diff} (use --restart, or another --out)")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if log:
        log(f"resuming after epoch {state['epoch']} ({ckpt})")
    return int(state["epoch"]), list(state.get("history", []))


def _epoch_masks(c: CRMModelConfig, rng: np.random.Generator, n: int, size: tuple[int, int], dev):
    if c.masking == "none":
        return None
    rgb, thermal = modality_masks(n, size[0], size[1], mode=c.masking, patch_size=c.mask_patch_size,
                                  ratio=c.mask_ratio, rng=rng)
    return {"rgb": torch.from_numpy(rgb).to(dev), "thermal": torch.from_numpy(thermal).to(dev)}


def train_student(data: TrainingData, c: CRMModelConfig, *, run_dir: str | os.PathLike, device: str = "cpu",
                  amp: bool = True, restart: bool = False, meta: Mapping[str, Any] | None = None,
                  progress: bool = True, log: Callable[[str], None] | None = None,
                  on_epoch_end: Callable[[int], None] | None = None) -> tuple[CRMStudent, list[dict]]:
    """Train (or resume) the student; checkpoint + JSON log after every epoch.

    Returns (model in eval mode, history: one dict per epoch with the mean loss parts, seconds
    and peak memory). ``amp``: float16 autocast + gradient scaling, used on CUDA only.
    ``on_epoch_end(epoch)`` runs after the epoch's checkpoint is written (tests interrupt there).
    """
    from tqdm import tqdm

    from pseudo_labels.core.io import write_json

    dev = resolve_device(device)
    run_dir = Path(run_dir)
    torch.manual_seed(c.seed)
    model = build_student(c).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    use_amp = bool(amp) and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    start, history = _resume(run_dir / CHECKPOINT_NAME, c, model, opt, scaler, restart, log)
    n, bs = len(data.labels), c.batch_size
    per_epoch = -(-n // bs)
    size = data.labels[0].shape
    for epoch in range(start, c.epochs):
        t0 = time.time()
        model.train()
        rng = np.random.default_rng([c.seed, epoch])
        order, flips = rng.permutation(n), (rng.random(n) < 0.5) & c.hflip
        sums: dict[str, float] = {}
        bar = tqdm(range(per_epoch), desc=f"crm epoch {epoch + 1}/{c.epochs}", leave=False, file=sys.stderr,
                   disable=not progress, dynamic_ncols=True)
        for b in bar:
            idx = order[b * bs:(b + 1) * bs]
            x, y = data.batch(idx, flips[idx])
            x, y = {m: t.to(dev) for m, t in x.items()}, y.to(dev)
            masks = _epoch_masks(c, np.random.default_rng([c.seed, epoch, b, 1]), len(idx), size, dev)
            for g in opt.param_groups:
                g["lr"] = _poly_lr(c, epoch * per_epoch + b, c.epochs * per_epoch)
            with torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext():
                loss, parts = crm_losses(model, x, y, c, masks)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            for k, v in {"loss": loss, **parts}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        bar.close()
        rec = {"epoch": epoch + 1, **{k: v / per_epoch for k, v in sums.items()},
               "seconds": round(time.time() - t0, 3), "peak_memory_mb": peak_memory_mb(dev)}
        history.append(rec)
        save_checkpoint(run_dir / CHECKPOINT_NAME, model, opt, scaler, epoch + 1, c, history, meta or {})
        write_json(run_dir / LOG_NAME, {"config": c.to_dict(), "epochs": history})
        if log:
            log(f"epoch {epoch + 1}/{c.epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in rec.items()
                                                               if k not in ("epoch",)))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    return model.eval(), history


def peak_memory_mb(dev: torch.device) -> float:
    """Peak CUDA memory allocated (CUDA) or the process's peak resident set size (CPU), in MiB."""
    if dev.type == "cuda":
        return round(torch.cuda.max_memory_allocated(dev) / 2 ** 20, 1)
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(rss / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)


# --------------------------------------------------------------------------- inference
MODALITY_CHOICES = ("both", "rgb", "thermal")


@torch.no_grad()
def predict_logits(model: CRMStudent, arrays: Mapping[str, np.ndarray], c: CRMModelConfig,
                   modality: str = "both") -> torch.Tensor:
    """(C, H, W) float32 logits of one image at its own size.

    ``modality``: ``both``; ``rgb`` / ``thermal``: the other modality is dropped, i.e. fully
    hidden (every token replaced by its mask token) and the fused head predicts as usual.
    """
    if modality not in MODALITY_CHOICES:
        raise PseudoLabelsError(f"--modality {modality!r}: choose one of {', '.join(MODALITY_CHOICES)}")
    if modality != "both" and modality not in model.modalities:
        raise PseudoLabelsError(f"--modality {modality}: the student has no {modality} input")
    dev = next(model.parameters()).device
    h, w = next(iter(arrays.values())).shape[:2]
    x = {m: t.to(dev) for m, t in to_input_tensors(arrays, c.input_size).items()}
    masks = None
    if modality != "both" and len(model.modalities) > 1:
        shape = next(iter(x.values())).shape
        masks = {m: torch.full((1, 1, shape[-2], shape[-1]), float(m != modality), device=dev)
                 for m in model.modalities}
    logits = model(x, masks)["fused"].float()
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0].cpu()


def predict_labels(model: CRMStudent, arrays: Mapping[str, np.ndarray], c: CRMModelConfig,
                   modality: str = "both") -> np.ndarray:
    """(H, W) uint8 class ids (argmax of :func:`predict_logits`)."""
    return predict_logits(model, arrays, c, modality).argmax(0).numpy().astype(np.uint8)


# --------------------------------------------------------------------------- scoring
def label_confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C + 1) int64: confusion (rows GT, void 255 skipped) plus a last column of GT pixels
    predicted outside 0..C-1."""
    from evaluation.semantic import confusion_matrix_with_misses

    cm, misses = confusion_matrix_with_misses(gt, pred, num_classes, IGNORE)
    return np.concatenate([cm, misses[:, None]], 1)


MIOU_CONVENTIONS = ("official", "present", "all-classes")
OFFICIAL_CONVENTION = "all-classes"  # RTFNet's compute_results, used by the CRM release


def scores_by_condition(confusions: Mapping[str, np.ndarray], conditions: Mapping[str, str],
                        class_names: Sequence[str], convention: str = "official") -> dict:
    """mIoU (percent) over all images and per condition (day / night) from per-image confusions.

    ``convention``: ``official`` = ``all-classes`` (the release: a class with neither GT nor
    predicted pixels scores IoU 0 and the mean is over all classes; pixels predicted outside the
    classes are left out, as sklearn's ``confusion_matrix(labels=...)`` does) or ``present``
    (ours: absent classes left out of the mean; such pixels are misses of their GT class).
    Returns ``{"overall": {...}, "day": {...}, "night": {...}}`` (conditions without images are
    left out); each entry: ``mIoU`` (the chosen convention), ``mIoU_present``,
    ``mIoU_all_classes``, ``convention``, ``per_class_iou`` (name -> IoU, NaN for absent classes),
    ``pixel_accuracy``, ``n_images``.
    """
    from evaluation.rgbt import with_conventions
    from evaluation.semantic import miou_from_confusion

    if convention not in MIOU_CONVENTIONS:
        raise PseudoLabelsError(f"--miou-convention {convention!r}: choose {', '.join(MIOU_CONVENTIONS)}")
    resolved = OFFICIAL_CONVENTION if convention == "official" else convention
    groups: dict[str, list[str]] = {"overall": list(confusions)}
    for name in confusions:
        if conditions.get(name) in ("day", "night"):
            groups.setdefault(conditions[name], []).append(name)
    out = {}
    for group, names in groups.items():
        total = sum(confusions[n] for n in names)
        ours = miou_from_confusion(total[:, :-1], total[:, -1])
        release = miou_from_confusion(total[:, :-1]) if total[:, -1].any() else None
        r = with_conventions(ours, release, resolved)
        out[group] = {"mIoU": r["mIoU"], "mIoU_present": r["mIoU_present"], "mIoU_all_classes": r["mIoU_all_classes"],
                      "convention": resolved, "pixel_accuracy": r["pixel_accuracy"], "n_images": len(names),
                      "per_class_iou": dict(zip(class_names, r["per_class_iou"]))}
    return out


# --------------------------------------------------------------------------- train-crm (folder level)
@dataclass
class CRMTrainConfig:
    """Everything ``pseudo-labels train-crm`` does. ``None`` loss weights / masking take the
    data set's default: for RGB-T the release's masking (``random-complementary``) and w_mws 1
    with our SD weights (0.1; the release: 1), see the module docstring; off for RGB."""

    data_root: str
    dataset: str
    out: str
    labels_dir: str | None = None
    labels: str = "pseudo"  # "pseudo" (labels_dir) or "gt" (the data set's ground truth, recorded)
    split: str = "train"
    num_classes: int | None = None
    masking: str | None = None
    mask_patch_size: int = CRM_MASK_PATCH
    mask_ratio: float = CRM_MASK_RATIO
    sdc_weight: float | None = None
    sdn_weight: float | None = None
    mws_weight: float | None = None
    backbone: str = CRM_BACKBONE
    backbone_weights: str | None = None
    width: int = CRM_WIDTH
    decoder_dim: int = CRM_DECODER_DIM
    epochs: int = CRM_EPOCHS
    batch_size: int = CRM_BATCH_SIZE
    lr: float = CRM_LR
    weight_decay: float = CRM_WEIGHT_DECAY
    input_size: tuple[int, int] | None = None
    hflip: bool = True
    seed: int = CRM_SEED
    device: str = "cpu"
    amp: bool = True
    restart: bool = False
    progress: bool = True

    def model_config(self, num_classes: int) -> CRMModelConfig:
        modalities = dataset_modalities(self.dataset)
        rgbt = len(modalities) > 1
        masking = self.masking if self.masking is not None else (CRM_MASKING if rgbt else "none")
        on = 1.0 if masking != "none" else 0.0

        def weight(value: float | None, default: float) -> float:
            return float(default if value is None else value)

        return CRMModelConfig(
            num_classes=num_classes, modalities=modalities, backbone=self.backbone,
            backbone_weights=str(self.backbone_weights) if self.backbone_weights else None, width=self.width,
            decoder_dim=self.decoder_dim, masking=masking, mask_patch_size=self.mask_patch_size,
            mask_ratio=self.mask_ratio, sdc_weight=weight(self.sdc_weight, CRM_SDC_WEIGHT * on),
            sdn_weight=weight(self.sdn_weight, CRM_SDN_WEIGHT * on),
            mws_weight=weight(self.mws_weight, CRM_MWS_WEIGHT if rgbt else 0.0), epochs=self.epochs,
            batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay, input_size=self.input_size,
            hflip=self.hflip, seed=self.seed)


def resolve_labels_dir(data_root: str | os.PathLike, labels_dir: str | os.PathLike) -> Path:
    """``labels_dir`` as given, or under the data root when only that exists."""
    p = Path(labels_dir)
    if p.is_dir():
        return p
    if not p.is_absolute() and (Path(data_root) / p).is_dir():
        return Path(data_root) / p
    raise PseudoLabelsError(f"{labels_dir}: labels folder not found (also not under {data_root})")


def attach_labels(samples: Sequence[CRMSample], folder: Path) -> list[CRMSample]:
    """Pair every sample with ``<folder>/**/<name>.png`` (Cityscapes: any ``<stem>*.png``).

    Two files for one name: the one under a ``<split>/`` folder wins, else an error naming both.
    Missing labels -> :class:`PseudoLabelsError` naming the first few images.
    """
    from pseudo_labels.datasets.cityscapes import stem_of

    found: dict[str, list[Path]] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.endswith(".png") and not f.startswith("."):
                key = Path(f).stem
                if samples and samples[0].dataset == "cityscapes":
                    key = stem_of(f) or key
                found.setdefault(key, []).append(Path(root) / f)
    out, missing = [], []
    for s in samples:
        paths = found.get(s.name, [])
        if len(paths) > 1:
            paths = [p for p in paths if s.split in p.relative_to(folder).parts[:-1]] or paths
            if len(paths) > 1:
                raise PseudoLabelsError(f"{folder}: two label files for image {s.name}: {paths[0]} and {paths[1]}")
        if not paths:
            missing.append(s.name)
            continue
        out.append(dataclasses.replace(s, label_path=str(paths[0])))
    if missing:
        raise PseudoLabelsError(f"{folder}: no label PNG for {len(missing)} of {len(samples)} images of split "
                                f"'{samples[0].split}' ({', '.join(missing[:5])}); expected <labels-dir>/**/<name>.png")
    return out


def _label_provenance(c: CRMTrainConfig, folder: Path | None) -> tuple[dict | bool, dict]:
    """(uses_ground_truth details or False, manifest of the labels folder or {}).

    The manifest is looked for in the labels folder and its two parents (stages write labels
    into ``<out>/labels/`` next to their manifest)."""
    from pseudo_labels.core.io import read_manifest

    if c.labels == "gt":
        return {"training_labels": f"ground-truth labels of split '{c.split}' ({c.dataset})"}, {}
    man = next((m for m in (read_manifest(d) for d in (folder, folder.parent, folder.parent.parent)) if m), {})
    if man.get("uses_ground_truth"):
        return {"training_labels": f"pseudo-labels {folder} were made with ground truth: "
                                   f"{man.get('ground_truth_use') or 'see its manifest'}"}, man
    return False, man


def train_crm(c: CRMTrainConfig, log: Callable[[str], None] | None = None,
              on_epoch_end: Callable[[int], None] | None = None) -> dict:
    """List the split, pair the labels, train (or resume) the student, write the run manifest.

    Run folder ``c.out``: ``checkpoint.pt`` (after every epoch), ``train_log.json``,
    ``manifest.json``. Returns ``{"run_dir", "epochs", "history", "n_images", "seconds",
    "seconds_per_epoch", "peak_memory_mb", "uses_ground_truth"}``.
    """
    from pseudo_labels.core.io import fingerprint_files, write_manifest
    from pseudo_labels.datasets import label_table

    t0 = time.time()
    if c.labels not in ("pseudo", "gt"):
        raise PseudoLabelsError(f"--labels {c.labels!r}: choose pseudo (with --labels-dir) or gt")
    if (c.labels == "gt") == bool(c.labels_dir):
        raise PseudoLabelsError("give exactly one of --labels-dir D (pseudo-labels) or --labels gt")
    table = label_table(c.dataset)
    model_cfg = c.model_config(int(c.num_classes or table.num_classes))
    samples = list_samples(c.data_root, c.dataset, c.split)
    folder = resolve_labels_dir(c.data_root, c.labels_dir) if c.labels == "pseudo" else None
    if folder is not None:
        samples = attach_labels(samples, folder)
    else:
        lacking = [s.name for s in samples if s.gt_path is None]
        if lacking:
            raise PseudoLabelsError(f"--labels gt: no ground truth for {len(lacking)} images "
                                    f"({', '.join(lacking[:5])})")
        samples = [dataclasses.replace(s, label_path=s.gt_path) for s in samples]
    gt_use, label_manifest = _label_provenance(c, folder)
    if log:
        log(f"{len(samples)} images of {c.dataset}/{c.split}, labels: {folder or 'ground truth'}; "
            f"masking {model_cfg.masking}, sdc {model_cfg.sdc_weight}, sdn {model_cfg.sdn_weight}, "
            f"mws {model_cfg.mws_weight}")
    data = TrainingData.load(samples, model_cfg)
    meta = {"data_root": str(Path(c.data_root).resolve()), "dataset": c.dataset, "split": c.split,
            "labels": c.labels, "labels_dir": str(folder.resolve()) if folder else None,
            "class_names": list(table.names) if model_cfg.num_classes == table.num_classes else None,
            "uses_ground_truth": gt_use}
    _, history = train_student(data, model_cfg, run_dir=c.out, device=c.device, amp=c.amp, restart=c.restart,
                               meta=meta, progress=c.progress, log=log, on_epoch_end=on_epoch_end)
    params = {**{k: v for k, v in meta.items() if k != "uses_ground_truth"}, **model_cfg.to_dict(),
              "device": c.device, "amp": bool(c.amp and c.device == "cuda")}
    write_manifest(c.out, "train-crm", params, uses_ground_truth=gt_use,
                   inputs={"images": fingerprint_files(s.record.image_path for s in samples),
                           "labels": fingerprint_files(s.label_path for s in samples),
                           "labels_manifest_stage": label_manifest.get("stage")},
                   counts={"n_images": len(samples), "epochs": len(history),
                           "final_loss": history[-1]["loss"] if history else None})
    secs = [h["seconds"] for h in history]
    return {"run_dir": str(c.out), "epochs": len(history), "history": history, "n_images": len(samples),
            "seconds": round(time.time() - t0, 2), "seconds_per_epoch": float(np.median(secs)) if secs else None,
            "peak_memory_mb": max((h["peak_memory_mb"] for h in history), default=None),
            "uses_ground_truth": bool(gt_use)}


# --------------------------------------------------------------------------- generate-crm-pseudolabels
STAGE_LABELS = "generate-crm-pseudolabels"
EVAL_NAME = "crm_eval.json"
_STUDENTS: dict = {}


@dataclass
class CRMLabelConfig:
    """Everything ``pseudo-labels generate-crm-pseudolabels`` does; ``None`` fields take the run's value."""

    run: str
    output_dir: str
    data_root: str | None = None
    dataset: str | None = None
    split: str | None = None
    modality: str = "both"
    device: str = "cpu"
    miou_convention: str = "official"


def _student(checkpoint: str, device: str):
    key = (checkpoint, os.path.getmtime(checkpoint), device)
    if key not in _STUDENTS:
        _STUDENTS.clear()
        _STUDENTS[key] = student_from_checkpoint(load_checkpoint(checkpoint), device)
    return _STUDENTS[key]


def _label_image(item: tuple[CRMSample, str], params: Mapping[str, Any]) -> np.ndarray | None:
    """Predict, write the PNG atomically; return the (C, C+1) confusion against GT or None."""
    from pseudo_labels.core.io import write_png

    sample, out_path = item
    model, c = _student(params["checkpoint"], params["device"])
    labels = predict_labels(model, read_modalities(sample, c.modalities), c, params["modality"])
    write_png(out_path, labels)
    return _confusion_of(sample, labels, c.num_classes)


def _confusion_of(sample: CRMSample, labels: np.ndarray, num_classes: int) -> np.ndarray | None:
    gt = read_ground_truth(sample)
    if gt is None:
        return None
    if gt.shape != labels.shape:
        raise InputFileError(sample.gt_path, f"ground truth {gt.shape} and prediction {labels.shape} differ in size")
    return label_confusion(gt, labels, num_classes)


def generate_crm_pseudolabels(c: CRMLabelConfig, options=None, log: Callable[[str], None] | None = None) -> dict:
    """Write the student's label PNGs (``<output_dir>/<split>/<name>.png``, uint8 class ids), the
    manifest and, once every image of the split is done and has ground truth, ``crm_eval.json``
    (mIoU overall / day / night). Resumes: finished PNGs newer than the checkpoint are kept."""
    from pseudo_labels.core.io import is_up_to_date, prepare_output_dir, read_png, write_json, write_manifest
    from pseudo_labels.core.runner import RunOptions, run_per_image

    t0 = time.time()
    opts = options or RunOptions()
    ckpt = Path(c.run) / CHECKPOINT_NAME if Path(c.run).is_dir() else Path(c.run)
    state = load_checkpoint(ckpt)
    meta, model_cfg = state.get("meta", {}), CRMModelConfig.from_dict(state["config"])
    root, dataset = c.data_root or meta.get("data_root"), c.dataset or meta.get("dataset")
    split = c.split or meta.get("split", "train")
    if not root or not dataset:
        raise PseudoLabelsError(f"{ckpt}: the run does not name its data; give --data-root and --dataset")
    if c.modality != "both" and c.modality not in model_cfg.modalities:
        raise PseudoLabelsError(f"--modality {c.modality}: the student was trained on {list(model_cfg.modalities)}")
    if tuple(dataset_modalities(dataset)) != tuple(model_cfg.modalities):
        raise PseudoLabelsError(f"--dataset {dataset}: the student was trained on {list(model_cfg.modalities)}")
    samples = list_samples(root, dataset, split)
    out_dir = Path(c.output_dir)
    params = {"run": str(ckpt.resolve()), "checkpoint_epoch": int(state["epoch"]), "train_config": state["config"],
              "data_root": str(Path(root).resolve()), "dataset": dataset, "split": split, "modality": c.modality}
    resume = prepare_output_dir(out_dir, STAGE_LABELS, params, overwrite=opts.overwrite)
    items = [(s, str(out_dir / s.relative)) for s in opts.select(samples)]
    work = {"checkpoint": str(ckpt.resolve()), "device": c.device, "modality": c.modality}
    summary = run_per_image(_partial(_label_image, work), items, options=opts, desc="crm labels",
                            name_of=lambda it: it[0].name,
                            is_done=(lambda it: is_up_to_date(it[1], str(ckpt))) if resume else None)
    summary.raise_if_failed()
    result: dict = {"split": split, "dataset": dataset, "modality": c.modality, "n_images": len(samples),
                    "done": summary.done, "skipped_existing": summary.skipped}
    if all((out_dir / s.relative).exists() for s in samples) and all(s.gt_path for s in samples):
        fresh = {it[0].name: r for it, r in zip(items, summary.results) if r is not None}
        confs = {s.name: fresh[s.name] if s.name in fresh else
                 _confusion_of(s, read_png(out_dir / s.relative), model_cfg.num_classes) for s in samples}
        names = meta.get("class_names") or [str(i) for i in range(model_cfg.num_classes)]
        result["scores"] = scores_by_condition(confs, {s.name: s.condition for s in samples}, names,
                                               c.miou_convention)
        result["miou_convention"] = OFFICIAL_CONVENTION if c.miou_convention == "official" else c.miou_convention
        write_json(out_dir / EVAL_NAME, result)
    elif log:
        log(f"{summary.line()}; {EVAL_NAME} is written once every image of the split is labelled and has ground truth")
    gt_use = meta.get("uses_ground_truth") or False
    write_manifest(out_dir, STAGE_LABELS, params, uses_ground_truth=gt_use,
                   inputs={"run_manifest": str(Path(ckpt).parent / "manifest.json")},
                   counts={"n_images": len(samples), "done": summary.done, "skipped_existing": summary.skipped,
                           "seconds": round(time.time() - t0, 2)},
                   extra={"evaluation": "crm_eval.json scores the labels against ground truth (scores only)"
                          if "scores" in result else None, **opts.describe()})
    result["uses_ground_truth"] = bool(gt_use)
    result["output_dir"] = str(out_dir)
    return result


def _partial(func, params):
    import functools

    return functools.partial(func, params=params)
