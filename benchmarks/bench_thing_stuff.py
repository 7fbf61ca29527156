"""Benchmark of the label-free thing/stuff decision (``--thing-classes auto``) on synthetic cities.

For each seed: a synthetic city (``pseudo-labels synth``, ``--n-images`` at 512x1024), depth
from its stereo disparity, min-max normalised per image (``generate-depth --source
disparity --normalize minmax``, as the reference's depth maps), then the decision of
:func:`pseudo_labels.stages.instance.thing_stuff.decide_thing_classes_from_files` (the code path of
``generate-depth-guided-instances --thing-classes auto``, at 512x1024, tau 0.20) on

* the ground-truth trainId maps (labelTrainIds): agreement = fraction of the train classes
  present whose decision equals the Cityscapes split (things = trainIds 11..18), with the
  chance of reaching it by a fair coin per class and the "everything is stuff" agreement;
* label-free pseudo-classes: raw k-means clusters (``--k``) of the built-in backbone
  (``generate-overclustered-semantics --backbone builtin --raw-clusters``). A cluster's
  true side is the majority of its non-void GT pixels (thing vs stuff trainIds);
  reported: cluster agreement and pixel-balanced accuracy (mean of the fractions of GT
  thing pixels and GT stuff pixels whose cluster is decided on their side; 0.5 for any
  constant decision).

The same cities are also decided by the reference repository's rule
(:mod:`pseudo_labels.stages.instance.thing_stuff_reference`, ``classify-stuff-things``: depth-split
ratio, big-stuff stage, top ``--reference-n-things`` classes; its depth-edge threshold 0.05
on the same min-max depth), scored the same way (``reference_rule`` in each seed and
``summary_reference_rule``).

Ground truth is used for scoring only. Each decision is timed.

    python benchmarks/bench_thing_stuff.py --out benchmarks/results/bench_thing_stuff.json [--seeds 0 1 2 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pseudo_labels.datasets.cityscapes import CLASS_NAMES, THING_TRAIN_IDS, index_by_stem  # noqa: E402
from pseudo_labels.stages.instance.thing_stuff import RULE, agreement, decide_thing_classes_from_files  # noqa: E402
from pseudo_labels.stages.instance.thing_stuff_reference import REFERENCE_DEFAULTS, decide_thing_classes_reference  # noqa: E402

SIZE = (512, 1024)


def quiet_cli(argv: list[str]) -> None:
    from pseudo_labels.cli import main

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        rc = main([str(a) for a in argv])
    if rc != 0:
        raise SystemExit(f"command failed ({rc}): {' '.join(map(str, argv))}")


def make_city(root: Path, n: int, seed: int, k: int) -> None:
    h, w = SIZE
    quiet_cli(["synth", "--out", root, "--n", n, "--seed", seed, "--size", h, w, "--split", "val"])
    quiet_cli(["generate-depth", "--cityscapes-root", root, "--split", "val", "--source", "disparity",
               "--normalize", "minmax", "--output-subdir", "depth_disp", "--workers", 2])
    quiet_cli(["generate-overclustered-semantics", "--cityscapes-root", root, "--split", "val", "--k", k,
               "--backbone", "builtin", "--mapping", "none", "--raw-clusters", "--output-subdir", f"raw_k{k}",
               "--workers", 2])


def p_coin_at_least(score: float, n: int) -> float:
    """P(a fair coin per class agrees on >= score * n of n classes)."""
    m = math.ceil(score * n - 1e-9)
    return sum(math.comb(n, j) for j in range(m, n + 1)) / 2 ** n


def load_module(path: str):
    """A thing_stuff.py (e.g. an earlier version: ``git show <rev>:pseudo_labels/thing_stuff.py``) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pseudo_labels._compared_thing_stuff", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def evaluate_seed(root: Path, k: int, decide=decide_thing_classes_from_files) -> dict:
    from pseudo_labels.core.io import read_png

    gts = index_by_stem(root / "gtFine" / "val", "_gtFine_labelTrainIds.png")
    deps = index_by_stem(root / "depth_disp" / "val", ".npy")
    raws = index_by_stem(root / f"raw_k{k}" / "val", ".png")
    stems = sorted(gts)
    out = {}

    # --- ground-truth classes
    t = time.perf_counter()
    dec = decide([gts[s] for s in stems], [deps[s] for s in stems], SIZE)
    t = time.perf_counter() - t
    present = sorted(int(c) for c in dec["statistics"] if int(c) < 19)
    decided = set(dec["thing_classes"])
    score = agreement(decided, THING_TRAIN_IDS, present)
    out["gt_classes"] = {
        "n_classes": len(present), "agreement": score,
        "p_fair_coin_at_least": p_coin_at_least(score, len(present)),
        "agreement_everything_stuff": agreement(set(), THING_TRAIN_IDS, present),
        "wrong": [CLASS_NAMES[c] for c in present if (c in decided) != (c in THING_TRAIN_IDS)],
        "decided_things": [CLASS_NAMES[c] for c in sorted(decided) if c < 19],
        "decision_s": t,
        "statistics": {CLASS_NAMES[int(c)]: {kk: round(v, 4) for kk, v in s.items()}
                       for c, s in dec["statistics"].items() if int(c) < 19},
    }

    # --- raw k-means clusters (label-free pseudo-classes)
    t = time.perf_counter()
    dec = decide([raws[s] for s in stems], [deps[s] for s in stems], SIZE)
    t = time.perf_counter() - t
    out["kmeans_clusters"] = {"k": k, **score_clusters(set(dec["thing_classes"]), *cluster_sides(root, k, stems)),
                              "decision_s": t}
    return out


def cluster_sides(root: Path, k: int, stems: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: GT thing pixels and GT stuff pixels (k,) each, at :data:`SIZE`."""
    from pseudo_labels.core.io import read_png
    from pseudo_labels.stages.instance.maps import resize_semantic

    gts = index_by_stem(root / "gtFine" / "val", "_gtFine_labelTrainIds.png")
    raws = index_by_stem(root / f"raw_k{k}" / "val", ".png")
    th = np.zeros(k, np.int64)
    st = np.zeros(k, np.int64)
    for s in stems:
        raw = resize_semantic(read_png(raws[s]), SIZE).astype(np.int64).ravel()
        gt = resize_semantic(read_png(gts[s]), SIZE).ravel()
        ok = raw < k
        th += np.bincount(raw[ok & (gt >= 11) & (gt <= 18)], minlength=k)
        st += np.bincount(raw[ok & (gt < 11)], minlength=k)
    return th, st


def score_clusters(decided: set[int], th: np.ndarray, st: np.ndarray) -> dict:
    """Cluster agreement (true side = majority of its GT pixels) and pixel-balanced accuracy."""
    k = len(th)
    clusters = [c for c in range(k) if th[c] + st[c] > 0]
    truth = {c for c in clusters if th[c] > st[c]}
    is_dec = np.array([c in decided for c in range(k)])
    thing_recall = float(th[is_dec].sum() / max(th.sum(), 1))
    stuff_recall = float(st[~is_dec].sum() / max(st.sum(), 1))
    score = agreement(decided, truth, clusters)
    return {
        "n_clusters_scored": len(clusters), "n_thing_clusters": len(truth),
        "n_decided_things": len(decided & set(clusters)), "agreement": score,
        "agreement_everything_stuff": agreement(set(), truth, clusters),
        "p_fair_coin_at_least": p_coin_at_least(score, len(clusters)),
        "thing_pixel_recall": thing_recall, "stuff_pixel_recall": stuff_recall,
        "pixel_balanced_accuracy": 0.5 * (thing_recall + stuff_recall),
    }


def evaluate_seed_reference(root: Path, k: int, n_things: int) -> dict:
    """The reference's rule on the same maps (GT trainIds with 19 classes; k-means clusters with k)."""
    from pseudo_labels.core.io import read_npy, read_png
    from pseudo_labels.stages.instance.maps import resize_semantic

    gts = index_by_stem(root / "gtFine" / "val", "_gtFine_labelTrainIds.png")
    deps = index_by_stem(root / "depth_disp" / "val", ".npy")
    raws = index_by_stem(root / f"raw_k{k}" / "val", ".png")
    stems = sorted(gts)
    depth = [np.asarray(read_npy(deps[s]), np.float64) for s in stems]
    out = {}
    t = time.perf_counter()
    sems = [resize_semantic(read_png(gts[s]), SIZE) for s in stems]
    decided = decide_thing_classes_reference(sems, depth, 19, n_things=n_things)
    t = time.perf_counter() - t
    present = sorted({int(c) for m in sems for c in np.unique(m) if c < 19})
    score = agreement(decided, THING_TRAIN_IDS, present)
    out["gt_classes"] = {
        "n_classes": len(present), "agreement": score, "p_fair_coin_at_least": p_coin_at_least(score, len(present)),
        "agreement_everything_stuff": agreement(set(), THING_TRAIN_IDS, present),
        "wrong": [CLASS_NAMES[c] for c in present if (c in decided) != (c in THING_TRAIN_IDS)],
        "decided_things": [CLASS_NAMES[c] for c in sorted(decided)], "decision_s": t,
    }
    t = time.perf_counter()
    raw = [resize_semantic(read_png(raws[s]), SIZE) for s in stems]
    decided = decide_thing_classes_reference(raw, depth, k, n_things=n_things)
    t = time.perf_counter() - t
    out["kmeans_clusters"] = {"k": k, **score_clusters(decided, *cluster_sides(root, k, stems)), "decision_s": t}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_thing_stuff.json"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--n-images", type=int, default=12)
    ap.add_argument("--k", type=int, default=40)
    ap.add_argument("--compare-module", default=None,
                    help="another thing_stuff.py to score on the same cities (e.g. the previous version)")
    ap.add_argument("--note", default=None, help="free text stored in the results (e.g. how the rule was chosen)")
    ap.add_argument("--reference-n-things", type=int, default=REFERENCE_DEFAULTS["n_things"],
                    help="n_things of the reference's rule (its default 8)")
    args = ap.parse_args()
    other = load_module(args.compare_module) if args.compare_module else None
    per_seed, per_seed_other = {}, {}
    with tempfile.TemporaryDirectory() as td:
        for seed in args.seeds:
            root = Path(td) / f"city{seed}"
            t = time.perf_counter()
            make_city(root, args.n_images, seed, args.k)
            r = evaluate_seed(root, args.k)
            r["setup_s"] = time.perf_counter() - t
            r["reference_rule"] = evaluate_seed_reference(root, args.k, args.reference_n_things)
            per_seed[str(seed)] = r
            if other is not None:
                o = evaluate_seed(root, args.k, other.decide_thing_classes_from_files)
                for kind in o:
                    o[kind].pop("statistics", None)
                per_seed_other[str(seed)] = o
            g, c = r["gt_classes"], r["kmeans_clusters"]
            print(f"seed {seed}: GT classes {g['agreement']:.3f} ({g['n_classes']}; wrong {g['wrong']}); "
                  f"k-means clusters {c['agreement']:.3f} (all-stuff {c['agreement_everything_stuff']:.3f}), "
                  f"pixel-balanced {c['pixel_balanced_accuracy']:.3f}", flush=True)
            g, c = r["reference_rule"]["gt_classes"], r["reference_rule"]["kmeans_clusters"]
            print(f"   reference rule: GT classes {g['agreement']:.3f} (wrong {g['wrong']}); k-means clusters "
                  f"{c['agreement']:.3f}, pixel-balanced {c['pixel_balanced_accuracy']:.3f}", flush=True)

    def summary(runs):
        def mean(kind, key):
            return float(np.mean([r[kind][key] for r in runs.values()]))

        return {
            "gt_classes_agreement_mean": mean("gt_classes", "agreement"),
            "gt_classes_agreement_min": float(min(r["gt_classes"]["agreement"] for r in runs.values())),
            "gt_classes_everything_stuff_mean": mean("gt_classes", "agreement_everything_stuff"),
            "kmeans_cluster_agreement_mean": mean("kmeans_clusters", "agreement"),
            "kmeans_everything_stuff_mean": mean("kmeans_clusters", "agreement_everything_stuff"),
            "kmeans_pixel_balanced_accuracy_mean": mean("kmeans_clusters", "pixel_balanced_accuracy"),
            "kmeans_thing_pixel_recall_mean": mean("kmeans_clusters", "thing_pixel_recall"),
            "kmeans_stuff_pixel_recall_mean": mean("kmeans_clusters", "stuff_pixel_recall"),
        }

    res = {
        "what": "label-free thing/stuff decision (pseudo_labels.stages.instance.thing_stuff) vs the Cityscapes split",
        "image_size": list(SIZE), "n_images_per_seed": args.n_images, "seeds": args.seeds, "k": args.k,
        "depth": "stereo disparity -> depth, min-max normalised per image", "grad_threshold": 0.2,
        "rule": RULE,
        "note": args.note,
        "summary": summary(per_seed),
        "reference_rule": {"what": "the reference's classify_stuff_things.py rule on the same maps",
                           "parameters": {**REFERENCE_DEFAULTS, "n_things": args.reference_n_things}},
        "summary_reference_rule": summary({s: r["reference_rule"] for s, r in per_seed.items()}),
        "per_seed": per_seed,
        "compared_module": None if other is None else {
            "path": args.compare_module, "rule": getattr(other, "RULE", None), "summary": summary(per_seed_other),
            "per_seed": per_seed_other},
        "machine": {"python": platform.python_version(), "note": "shared 2-core machine"},
        "command": "python benchmarks/bench_thing_stuff.py " + " ".join(sys.argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res["summary"], indent=1))
    print("reference rule:", json.dumps(res["summary_reference_rule"], indent=1))
    if other is not None:
        print("compared module:", json.dumps(res["compared_module"]["summary"], indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
