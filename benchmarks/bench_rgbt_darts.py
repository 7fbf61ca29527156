"""Benchmark: DARTS fusion head vs single-modality and concatenated features on the synthetic RGB-T set.

For each seed: a synthetic RGB-T set in the MFNet layout (``synth-rgbt``: ``--n-train`` train and
``--n-test`` test frames, at least half night), builtin features of both modalities
(``extract-rgbt-features``), the DARTS head trained on the train split (``train-darts``; once as
described, once with the per-image RGB reliability weighting, ``--rgb-reliability``), and
pseudo-labels of the test split (``generate-darts-semantics``) from

* ``rgb``: RGB features only; ``thermal``: thermal features only;
* ``concat``: both L2-normalised feature vectors concatenated (no training);
* ``darts`` / ``darts_reliability``: the fused code of the trained head;

each clustered with k = 9 (Hungarian matching, the unsupervised protocol) and k = ``--k-majority``
(majority vote). Scores: mIoU and pixel accuracy over the 9 MFNet classes (class 0 'unlabeled'
evaluated, as RTFNet/CRM), overall / day / night, with one mapping per method fitted on all
test frames. Ground truth is read for the mapping and the scores only (evaluation).
Every step is timed (seconds per image on this machine's CPU; the training per step).

    python benchmarks/bench_rgbt_darts.py --out benchmarks/results/bench_rgbt_darts.json [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pseudo_labels.datasets.synthetic_rgbt import write_synthetic_rgbt  # noqa: E402
from pseudo_labels.stages.rgbt.darts import DartsLossConfig, DartsTrainConfig, train_darts  # noqa: E402
from pseudo_labels.stages.rgbt.darts_semantics import DartsSemanticsConfig, generate_darts_semantics  # noqa: E402
from pseudo_labels.stages.rgbt.features import RGBTFeatureConfig, extract_rgbt_features  # noqa: E402

METHODS = ("rgb", "thermal", "concat", "darts", "darts_reliability")


def _seed_run(seed: int, args: argparse.Namespace, work: Path) -> dict:
    data, feats = work / f"data{seed}", work / f"feats{seed}"
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    write_synthetic_rgbt(data, args.n_train, seed=seed, size=tuple(args.size), split="train")
    write_synthetic_rgbt(data, args.n_test, seed=seed, size=tuple(args.size), split="test")
    n_all = args.n_train + args.n_test
    timing["synth_s_per_image"] = (time.perf_counter() - t0) / n_all
    t0 = time.perf_counter()
    for split in ("train", "test"):
        s = extract_rgbt_features(RGBTFeatureConfig(data_root=str(data), out=str(feats), split=split,
                                                    input_size=tuple(args.input_size)))
        s.raise_if_failed()
    timing["features_s_per_image_and_modality"] = (time.perf_counter() - t0) / (2 * n_all)
    runs = {}
    for name, reliability in (("darts", False), ("darts_reliability", True)):
        cfg = DartsTrainConfig(data_root=str(data), features=str(feats), out=str(work / f"{name}{seed}"),
                               steps=args.steps, batch_size=args.batch_size, seed=seed, crop=args.crop,
                               loss=DartsLossConfig(rgb_reliability=reliability), progress=False)
        summary = train_darts(cfg)
        timing[f"train_{name}_s_per_step"] = summary["seconds_per_step"]
        timing[f"train_{name}_s"] = summary["seconds"]
        runs[name] = str(work / f"{name}{seed}")
    scores: dict[str, dict] = {}
    for method in METHODS:
        source = "darts" if method.startswith("darts") else method
        for k, mapping in ((9, "hungarian"), (args.k_majority, "majority")):
            cfg = DartsSemanticsConfig(data_root=str(data), out=str(work / f"sem_{method}_{k}_{seed}"),
                                       features=str(feats), split="test", source=source, run=runs.get(method),
                                       k=k, mapping=mapping, seed=seed)
            res = generate_darts_semantics(cfg)
            sc = res.scores[mapping]
            key = f"{mapping}_k{k}"
            scores.setdefault(method, {})[key] = {
                "mIoU": sc["overall"]["mIoU"], "pixel_accuracy": sc["overall"]["pixel_accuracy"],
                "day_mIoU": sc["groups"]["day"]["mIoU"], "night_mIoU": sc["groups"]["night"]["mIoU"],
                "night_per_class": sc["groups"]["night"]["per_class"], "day_per_class": sc["groups"]["day"]["per_class"]}
            n = args.n_test
            timing[f"{method}_{key}_vectors_s_per_image"] = res.seconds["vectors"] / n
            timing[f"{method}_{key}_kmeans_s"] = res.seconds["kmeans"]
            timing[f"{method}_{key}_assign_s_per_image"] = res.seconds["assign"] / n
            timing[f"{method}_{key}_map_and_score_s_per_image"] = res.seconds.get("map_and_score", 0.0) / n
    return {"seed": seed, "scores": scores, "timing": {k: round(v, 5) for k, v in timing.items()}}


def _summary(seeds: list[dict]) -> dict:
    out: dict = {}
    for method in METHODS:
        for key in seeds[0]["scores"][method]:
            for metric in ("mIoU", "day_mIoU", "night_mIoU", "pixel_accuracy"):
                vals = [s["scores"][method][key][metric] for s in seeds]
                out.setdefault(method, {}).setdefault(key, {})[metric] = {
                    "mean": round(statistics.fmean(vals), 2),
                    "std": round(statistics.stdev(vals), 2) if len(vals) > 1 else 0.0, "values": [round(v, 2) for v in vals]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-train", type=int, default=24)
    p.add_argument("--n-test", type=int, default=16)
    p.add_argument("--size", type=int, nargs=2, default=[240, 320])
    p.add_argument("--input-size", type=int, nargs=2, default=[224, 294])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=16)
    p.add_argument("--k-majority", type=int, default=54)
    p.add_argument("--workdir", default=None, help="keep the data and runs here (default: a temporary folder)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_rgbt_darts.json"))
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        seeds = []
        for seed in args.seeds:
            seeds.append(_seed_run(seed, args, work))
            print(json.dumps({"seed": seed, "scores": {m: {k: {x: round(v[x], 1) for x in ("mIoU", "day_mIoU", "night_mIoU")}
                                                         for k, v in s.items()} for m, s in seeds[-1]["scores"].items()}}))
    result = {"benchmark": "bench_rgbt_darts", "parameters": vars(args), "summary": _summary(seeds), "seeds": seeds,
              "wall_seconds": round(time.perf_counter() - t0, 1),
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load_average_at_end": os.getloadavg()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
