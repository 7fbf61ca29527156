"""Shared set-up of the RGB-T tests: one torch thread, and a tiny trained DARTS run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pseudo_labels.datasets.synthetic_rgbt import write_synthetic_rgbt
from pseudo_labels.stages.rgbt import darts
from pseudo_labels.stages.rgbt.features import RGBTFeatureConfig, extract_rgbt_features


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: on a shared, busy CPU two spinning OpenMP threads ran training ~30x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_darts_run(root: Path, size: tuple[int, int] = (64, 128), *, n: int = 4,
                    input_size: tuple[int, int] = (56, 112), steps: int = 2, width: int = 16,
                    code_dim: int = 8) -> Path:
    """``n`` synthetic RGB-T test frames under ``root/data``, their features under ``root/feats``
    and a ``steps``-step DARTS run under ``root/run``; returns ``root``."""
    write_synthetic_rgbt(root / "data", n, seed=1, size=size, split="test")
    extract_rgbt_features(RGBTFeatureConfig(data_root=str(root / "data"), out=str(root / "feats"), split="test",
                                            input_size=input_size))
    darts.train_darts(darts.DartsTrainConfig(data_root=str(root / "data"), features=str(root / "feats"),
                                             out=str(root / "run"), split="test", steps=steps, batch_size=2, knn=1,
                                             width=width, code_dim=code_dim, progress=False, threads=1))
    return root
