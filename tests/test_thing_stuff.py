"""Label-free thing/stuff decision: agreement with the true split on the synthetic city (floor)."""

from __future__ import annotations

import numpy as np

from pseudo_labels.cityscapes import THING_TRAIN_IDS
from pseudo_labels.thing_stuff import agreement, class_statistics, decide_thing_classes, is_thing


def test_agreement_floor_on_synthetic_scenes():
    from pseudo_labels.depth import normalize_depth
    from pseudo_labels.synth import generate_scene

    scenes = [generate_scene(s, (256, 512)) for s in range(4)]
    sems = [s.train_ids for s in scenes]
    depths = [normalize_depth(s.depth, "minmax") for s in scenes]
    stats = class_statistics(sems, depths)
    decided = decide_thing_classes(sems, depths)
    present = [c for c in stats if c < 19]
    score = agreement(decided, THING_TRAIN_IDS, present)
    # weak unsupervised cue: floor well above "everything stuff" would be cheating-free but low
    assert score >= 0.5, (sorted(decided), score)
    assert all(is_thing(stats[c]) == (c in decided) for c in stats)


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
