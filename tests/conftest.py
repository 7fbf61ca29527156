"""Shared pytest fixtures: small synthetic Cityscapes cities, built once per session.

- ``synth_city``: 3 val images at 256x512, seed 0.
- ``synth_city_train_val``: 4 train + 3 val images at 256x512, seed 1, in one root.

Both are read-only for tests: copy them (``shutil.copytree``) before writing inside.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SYNTH_TEST_SIZE = (256, 512)


@pytest.fixture(scope="session")
def synth_city(tmp_path_factory) -> Path:
    """Root of a synthetic city: ``val`` split, 3 images, 256x512, seed 0."""
    from pseudo_labels.datasets.synthetic_city import write_synthetic_city

    root = tmp_path_factory.mktemp("synth_city")
    write_synthetic_city(root, 3, seed=0, size=SYNTH_TEST_SIZE, split="val")
    return root


@pytest.fixture(scope="session")
def synth_city_official(tmp_path_factory) -> Path:
    """Root of a synthetic city as the official zips unpack (no trainIds, no panoptic GT): ``val``, 3 images,
    256x512, seed 0 (the same scenes as ``synth_city``)."""
    from pseudo_labels.datasets.synthetic_city import write_synthetic_city

    root = tmp_path_factory.mktemp("synth_city_official")
    write_synthetic_city(root, 3, seed=0, size=SYNTH_TEST_SIZE, split="val", layout="official")
    return root


@pytest.fixture(scope="session")
def synth_city_train_val(tmp_path_factory) -> Path:
    """Root of a synthetic city with ``train`` (4 images) and ``val`` (3 images), 256x512, seed 1."""
    from pseudo_labels.datasets.synthetic_city import write_synthetic_city

    root = tmp_path_factory.mktemp("synth_city_train_val")
    write_synthetic_city(root, 4, seed=1, size=SYNTH_TEST_SIZE, split="train")
    write_synthetic_city(root, 3, seed=1, size=SYNTH_TEST_SIZE, split="val")
    return root
