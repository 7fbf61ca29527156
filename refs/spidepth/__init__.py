"""SPIdepth (Lavreniuk/SPIdepth) monocular depth network: our implementation, official checkpoint keys."""

from .model import (
    CITYSCAPES_BACKBONE,
    CITYSCAPES_INPUT_SIZE,
    SPIdepth,
    SPIdepthConfig,
    config_from_state_dicts,
    infer_backbone,
    load_spidepth,
    read_checkpoints,
)

__all__ = [
    "CITYSCAPES_BACKBONE",
    "CITYSCAPES_INPUT_SIZE",
    "SPIdepth",
    "SPIdepthConfig",
    "config_from_state_dicts",
    "infer_backbone",
    "load_spidepth",
    "read_checkpoints",
]
