"""Benchmark: DARTS fusion head vs single-modality and concatenated features on the synthetic RGB-T set.

For each seed: a synthetic RGB-T set in the MFNet layout (``synth-rgbt``: ``--n-train`` train and
``--n-test`` test frames, at least half night), builtin features of both modalities
(``extract-rgbt-features``), the DARTS head trained on the train split (``train-darts``: the
official variant = the released loss and head layout, and ``--variant ours``, our earlier
choices), and pseudo-labels of the test split (``generate-darts-semantics``) from

* ``rgb``: RGB features only; ``thermal``: thermal features only;
* ``concat``: both L2-normalised feature vectors concatenated (no training);
* ``darts`` / ``darts_ours``: the fused code of the official / ours head;

under three evaluations: ``official_k9`` (DARTS's: a cluster probe of 9 centres fitted on the
train split, applied to the test split with the dense CRF, Hungarian matching on the test
split), ``hungarian_k9`` and ``majority_k<--k-majority>`` (ours: k-means on the test split
itself). Scores over the 9 MFNet classes (class 0 'unlabeled' evaluated), overall / day / night
with one mapping per method fitted on all test frames, under every mIoU convention
(``stego`` = DARTS's released evaluation, ``present`` = ours, ``all-classes``). Ground truth is
read for the mapping and the scores only (evaluation). Every step is timed.

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
from pseudo_labels.stages.rgbt.darts import DartsTrainConfig, train_darts  # noqa: E402
from pseudo_labels.stages.rgbt.darts_semantics import DartsSemanticsConfig, generate_darts_semantics  # noqa: E402
from pseudo_labels.stages.rgbt.features import RGBTFeatureConfig, extract_rgbt_features  # noqa: E402

METHODS = ("rgb", "thermal", "concat", "darts", "darts_ours")
CONVENTIONS = ("mIoU_stego", "mIoU_present", "mIoU_all_classes")


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
    for name, variant in (("darts", "official"), ("darts_ours", "ours")):
        cfg = DartsTrainConfig(data_root=str(data), features=str(feats), out=str(work / f"{name}{seed}"),
                               variant=variant, steps=args.steps, batch_size=args.batch_size, seed=seed,
                               crop=args.crop, progress=False)
        summary = train_darts(cfg)
        timing[f"train_{name}_s_per_step"] = summary["seconds_per_step"]
        timing[f"train_{name}_s"] = summary["seconds"]
        runs[name] = str(work / f"{name}{seed}")
    scores: dict[str, dict] = {}
    evaluations = (("official", 9, "hungarian"), ("on-split", 9, "hungarian"), ("on-split", args.k_majority, "majority"))
    for method in METHODS:
        source = "darts" if method.startswith("darts") else method
        for protocol, k, mapping in evaluations:
            key = f"official_k{k}" if protocol == "official" else f"{mapping}_k{k}"
            cfg = DartsSemanticsConfig(data_root=str(data), out=str(work / f"sem_{method}_{key}_{seed}"),
                                       features=str(feats), split="test", source=source, run=runs.get(method),
                                       k=k, mapping=mapping, seed=seed, protocol=protocol,
                                       probe_steps=args.probe_steps)
            res = generate_darts_semantics(cfg)
            sc = res.scores[mapping]
            row = {"pixel_accuracy": sc["overall"]["pixel_accuracy"]}
            for conv in CONVENTIONS:
                row[conv] = sc["overall"][conv]
                for g in ("day", "night"):
                    row[f"{g}_{conv}"] = sc["groups"][g][conv]
            row["night_per_class"] = sc["groups"]["night"]["per_class"]
            scores.setdefault(method, {})[key] = row
            n = args.n_test
            timing[f"{method}_{key}_vectors_s_per_image"] = res.seconds["vectors"] / n
            timing[f"{method}_{key}_fit_s"] = res.seconds.get("kmeans", res.seconds.get("probe", 0.0))
            timing[f"{method}_{key}_assign_s_per_image"] = res.seconds["assign"] / n
    return {"seed": seed, "scores": scores, "timing": {k: round(v, 5) for k, v in timing.items()}}


def _summary(seeds: list[dict]) -> dict:
    out: dict = {}
    for method in METHODS:
        for key in seeds[0]["scores"][method]:
            for metric in (*CONVENTIONS, *(f"{g}_{c}" for g in ("day", "night") for c in CONVENTIONS),
                           "pixel_accuracy"):
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
    p.add_argument("--probe-steps", type=int, default=1000)
    p.add_argument("--workdir", default=None, help="keep the data and runs here (default: a temporary folder)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_rgbt_darts.json"))
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        seeds = []
        for seed in args.seeds:
            seeds.append(_seed_run(seed, args, work))
            print(json.dumps({"seed": seed, "scores": {
                m: {k: {x: round(v[x], 1) for x in ("mIoU_stego", "day_mIoU_stego", "night_mIoU_stego")}
                    for k, v in s.items()} for m, s in seeds[-1]["scores"].items()}}), flush=True)
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
