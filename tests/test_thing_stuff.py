"""Label-free thing/stuff decision: agreement with the true split on the synthetic city (floor)."""

from __future__ import annotations

import numpy as np
import pytest

from pseudo_labels.datasets.cityscapes import THING_TRAIN_IDS
from pseudo_labels.stages.instance.thing_stuff import agreement, class_statistics, decide_thing_classes, is_thing


def test_agreement_floor_on_synthetic_scenes():
    """Ground-truth classes of 4 synthetic scenes: the label-free decision matches the true split.

    18 train classes occur; "everything stuff" agrees on 11 (0.61) and a fair coin per class
    reaches 16 of 18 with probability 172 / 2^18 < 0.1 %. The benchmark
    (benchmarks/bench_thing_stuff.py) measures 8 cities at 512x1024 and k-means clusters.
    """
    import math

    from pseudo_labels.stages.instance.depth import normalize_depth
    from pseudo_labels.datasets.synthetic_city import generate_scene

    scenes = [generate_scene(s, (256, 512)) for s in range(4)]
    sems = [s.train_ids for s in scenes]
    depths = [normalize_depth(s.depth, "minmax") for s in scenes]
    stats = class_statistics(sems, depths)
    decided = decide_thing_classes(sems, depths)
    present = [c for c in stats if c < 19]
    assert len(present) >= 17
    score = agreement(decided, THING_TRAIN_IDS, present)
    n, hits = len(present), round(score * len(present))
    p_coin = sum(math.comb(n, j) for j in range(hits, n + 1)) / 2 ** n
    assert score >= 0.85 and p_coin < 0.01, (sorted(decided), score, p_coin)
    assert score > agreement(set(), THING_TRAIN_IDS, present) + 0.2
    assert all(is_thing(stats[c]) == (c in decided) for c in stats)


def test_statistics_ignore_depth_units():
    """Spreads are relative to the image's depth range: an affine change of units changes nothing
    (the edge threshold is scaled with it)."""
    from pseudo_labels.stages.instance.depth import normalize_depth
    from pseudo_labels.datasets.synthetic_city import generate_scene

    scenes = [generate_scene(s, (128, 256)) for s in (7, 8)]
    sems = [s.train_ids for s in scenes]
    depths = [normalize_depth(s.depth, "minmax") for s in scenes]
    a = class_statistics(sems, depths, grad_threshold=0.2)
    b = class_statistics(sems, [d.astype(np.float64) * 40.0 + 3.0 for d in depths], grad_threshold=0.2 * 40.0)
    assert a.keys() == b.keys()
    for c in a:
        for k in a[c]:
            assert a[c][k] == pytest.approx(b[c][k], rel=1e-4, abs=1e-6), (c, k)


def test_big_road_is_stuff_small_blobs_are_things():
    rng = np.random.default_rng(0)
    sems, depths = [], []
    for _ in range(3):
        sem = np.zeros((128, 256), np.uint8)  # class 0 "road": bottom half, depth near->far
        sem[:64] = 10  # class 10: sky, far
        depth = np.ones((128, 256), np.float32)
        depth[64:] = np.linspace(0.6, 0.0, 64)[:, None]
        for _ in range(4):  # class 13: compact blobs at one depth each
            y, x = int(rng.integers(50, 90)), int(rng.integers(0, 220))
            sem[y:y + 15, x:x + 20] = 13
            depth[y:y + 15, x:x + 20] = rng.uniform(0.2, 0.5)
        sems.append(sem)
        depths.append(depth)
    decided = decide_thing_classes(sems, depths)
    assert 13 in decided and 0 not in decided and 10 not in decided
