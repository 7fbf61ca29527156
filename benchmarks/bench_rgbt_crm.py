"""Evidence for issues 17 and 25: a CRM student trained on DARTS pseudo-labels of the synthetic RGB-T set.

Chain: synthetic RGB-T (MFNet layout, day + night) -> builtin frozen features per modality ->
DARTS head (``train-darts`` defaults: the released loss and head layout) -> k-means (k clusters,
``--protocol on-split``) + majority mapping on the train split (reads GT to name the clusters:
recorded) = training pseudo-labels -> CRM student per configuration and seed -> mIoU against GT
on the train split (the refined labels of the training images) and on a held-out test split,
overall / day / night, with both modalities and with one dropped at test time (the other fully
hidden). mIoU under the release's convention (``official``: RTFNet's, absent classes 0, mean
over the 9 classes) and ours (``present``) beside it. Configurations: no masking; random;
complementary; the release's random-complementary (``rand_comp``, the default); with L_SDC +
L_SDN (+ L_MWS) at the release's weights 1 and at ours (SD 0.1); plus reference students
trained on GT labels.

    python benchmarks/bench_rgbt_crm.py                 # 3.5-6 min on 2 shared cores
    python benchmarks/bench_rgbt_crm.py --quick         # smoke run (1 seed, 2 epochs)
    python benchmarks/bench_rgbt_crm.py --cost-only     # s/epoch + peak RSS of train-crm per frame size

Writes ``benchmarks/results/bench_rgbt_crm.json`` (``..._cost.json``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {  # name -> (masking, sdc, sdn, mws); "(w=1)" = the release's loss weights
    "no masking": ("none", 0.0, 0.0, 0.0),
    "random": ("random", 0.0, 0.0, 0.0),
    "complementary": ("complementary", 0.0, 0.0, 0.0),
    "random-complementary (release)": ("random-complementary", 0.0, 0.0, 0.0),
    "complementary + SDC + SDN + MWS (w=1)": ("complementary", 1.0, 1.0, 1.0),
    "complementary + SDC + SDN (w=0.1) + MWS (w=1)": ("complementary", 0.1, 0.1, 1.0),
    "random-complementary + SDC + SDN + MWS (w=1) = the release": ("random-complementary", 1.0, 1.0, 1.0),
    "random-complementary + SDC + SDN (w=0.1) + MWS (w=1) = default": ("random-complementary", 0.1, 0.1, 1.0),
}
GT_CONFIGS = ("no masking", "random-complementary + SDC + SDN (w=0.1) + MWS (w=1) = default")
MODALITIES = ("both", "rgb", "thermal")


def make_pseudo_labels(root: Path, args, timings: dict) -> tuple[Path, dict]:
    """Synthetic set + DARTS pseudo-labels of the train split; returns (labels dir, DARTS manifest)."""
    from pseudo_labels.core.io import read_manifest
    from pseudo_labels.datasets.synthetic_rgbt import write_synthetic_rgbt
    from pseudo_labels.stages.rgbt.darts import DartsTrainConfig, train_darts
    from pseudo_labels.stages.rgbt.darts_semantics import DartsSemanticsConfig, generate_darts_semantics
    from pseudo_labels.stages.rgbt.features import RGBTFeatureConfig, extract_rgbt_features

    t0 = time.time()
    write_synthetic_rgbt(root, args.n_train, seed=0, size=tuple(args.size), split="train")
    write_synthetic_rgbt(root, args.n_test, seed=1, size=tuple(args.size), split="test")
    timings["synth_s"] = round(time.time() - t0, 2)
    t0 = time.time()
    extract_rgbt_features(RGBTFeatureConfig(data_root=str(root), out=str(root / "features"), split="train",
                                            input_size=tuple(args.feature_size)))
    timings["features_s"] = round(time.time() - t0, 2)
    t0 = time.time()
    train_darts(DartsTrainConfig(data_root=str(root), features=str(root / "features"), out=str(root / "darts"),
                                 split="train", steps=args.darts_steps, progress=False, threads=1))
    timings["darts_train_s"] = round(time.time() - t0, 2)
    t0 = time.time()
    out = root / "darts_semantics"
    generate_darts_semantics(DartsSemanticsConfig(data_root=str(root), out=str(out), run=str(root / "darts"),
                                                  features=str(root / "features"), split="train", source="darts",
                                                  k=args.k, mapping="majority", protocol="on-split"))
    timings["darts_semantics_s"] = round(time.time() - t0, 2)
    return out / "labels", read_manifest(out) or {}


def score_folder(root: Path, labels: Path, split: str) -> dict:
    """mIoU overall / day / night of the label PNGs in ``labels`` (``<split>/<name>.png``) vs GT."""
    from pseudo_labels.core.io import read_png
    from pseudo_labels.datasets.mfnet import LABELS
    from pseudo_labels.stages.rgbt import crm

    samples = crm.list_samples(root, "mfnet", split)
    preds = {s.name: read_png(labels / s.relative) for s in samples}
    confs = {s.name: crm.label_confusion(crm.read_ground_truth(s), preds[s.name], 9) for s in samples}
    scores = crm.scores_by_condition(confs, {s.name: s.condition for s in samples}, LABELS.names)
    counts = np.bincount(np.concatenate([p.ravel() for p in preds.values()]), minlength=256)
    return {**_brief(scores), "per_class_iou": _per_class(scores),
            "class_pixel_percent": {n: round(100 * counts[i] / counts.sum(), 2) for i, n in enumerate(LABELS.names)}}


def _per_class(scores: dict) -> dict:
    return {n: (None if v != v else round(v, 2)) for n, v in scores["overall"]["per_class_iou"].items()}


def _brief(scores: dict) -> dict:
    """group -> mIoU (the release's convention) and group_present -> mIoU (ours)."""
    out = {g: round(v["mIoU"], 3) for g, v in scores.items()}
    out.update({f"{g}_present": round(v["mIoU_present"], 3) for g, v in scores.items()})
    return out


def score_student(root: Path, run: Path, split: str) -> dict:
    """modality -> {overall, day, night} mIoU of the student's predictions on ``split``."""
    from pseudo_labels.datasets.mfnet import LABELS
    from pseudo_labels.stages.rgbt import crm

    model, cfg = crm.student_from_checkpoint(crm.load_checkpoint(run))
    samples = crm.list_samples(root, "mfnet", split)
    arrays = {s.name: crm.read_modalities(s, cfg.modalities) for s in samples}
    gts = {s.name: crm.read_ground_truth(s) for s in samples}
    out = {}
    for modality in MODALITIES:
        confs = {s.name: crm.label_confusion(gts[s.name], crm.predict_labels(model, arrays[s.name], cfg, modality), 9)
                 for s in samples}
        scores = crm.scores_by_condition(confs, {s.name: s.condition for s in samples}, LABELS.names)
        out[modality] = _brief(scores)
        if modality == "both":
            out["per_class_iou"] = _per_class(scores)
    return out


def train_one(root: Path, labels: Path | None, name: str, seed: int, args) -> dict:
    from pseudo_labels.stages.rgbt import crm

    masking, sdc, sdn, mws = CONFIGS[name]
    run = root / "runs" / f"{name.replace(' ', '_').replace('+', 'p')}_{'gt' if labels is None else 'pl'}_{seed}"
    cfg = crm.CRMTrainConfig(data_root=str(root), dataset="mfnet", out=str(run),
                             labels_dir=str(labels) if labels else None, labels="pseudo" if labels else "gt",
                             masking=masking, mask_patch_size=args.patch, mask_ratio=0.5, sdc_weight=sdc,
                             sdn_weight=sdn, mws_weight=mws, epochs=args.epochs, lr=args.lr,
                             batch_size=args.batch_size,
                             input_size=tuple(args.input_size),
                             seed=seed, restart=True, progress=False)
    res = crm.train_crm(cfg)
    return {"config": name, "seed": seed, "labels": "gt" if labels is None else "darts",
            "seconds_per_epoch": round(res["seconds_per_epoch"], 3), "peak_rss_mb": res["peak_memory_mb"],
            "final_loss": round(res["history"][-1]["loss"], 4),
            "train": score_student(root, run, "train"), "test": score_student(root, run, "test")}


def measure_cost(work: Path, args) -> list[dict]:
    """Seconds per epoch (second epoch: warm) and peak RSS of ``train-crm`` in its own process
    (OMP_NUM_THREADS=1), at the student input sizes of ``args.cost_sizes``, no masking vs full CRM."""
    import subprocess

    from pseudo_labels.datasets.synthetic_rgbt import write_synthetic_rgbt

    rows = []
    for h, w in args.cost_sizes:
        root = work / f"cost_{h}x{w}"
        write_synthetic_rgbt(root, args.n_train, seed=0, size=(h, w), split="train")
        for name in ("no masking", "random-complementary + SDC + SDN + MWS (w=1) = the release"):
            masking, sdc, sdn, mws = CONFIGS[name]
            run = root / ("run_" + masking)
            cmd = [sys.executable, "-m", "pseudo_labels.commands.train_crm", "--data-root", str(root), "--dataset", "mfnet",
                   "--labels", "gt", "--out", str(run), "--epochs", "2", "--batch-size", str(args.batch_size),
                   "--masking", masking, "--mask-patch-size", "16", "--sdc-weight", str(sdc), "--sdn-weight",
                   str(sdn), "--mws-weight", str(mws), "--restart"]
            subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
            log = json.loads((run / "train_log.json").read_text())["epochs"]
            rows.append({"size": [h, w], "images": args.n_train, "config": name,
                         "seconds_per_epoch": log[-1]["seconds"], "peak_rss_mb": max(e["peak_memory_mb"] for e in log),
                         "command": " ".join(cmd[1:]).replace(str(work), "WORK")})
            print(f"cost {h}x{w} {name}: {rows[-1]['seconds_per_epoch']} s/epoch, {rows[-1]['peak_rss_mb']} MiB",
                  file=sys.stderr)
    return rows


def aggregate(rows: list[dict]) -> dict:
    """config -> split -> modality -> group -> [mean, std] over seeds (+ seconds per epoch)."""
    out: dict = {}
    for name in dict.fromkeys(f"{r['config']} [{r['labels']}]" for r in rows):
        mine = [r for r in rows if f"{r['config']} [{r['labels']}]" == name]
        agg: dict = {"n_seeds": len(mine), "seconds_per_epoch": round(float(np.mean([r["seconds_per_epoch"]
                                                                                     for r in mine])), 3)}
        for split in ("train", "test"):
            agg[split] = {m: {g: [round(float(np.mean([r[split][m][g] for r in mine])), 2),
                                  round(float(np.std([r[split][m][g] for r in mine])), 2)]
                              for g in mine[0][split][m]} for m in MODALITIES}
            agg[split]["per_class_iou_mean"] = {
                n: (None if any(r[split]["per_class_iou"][n] is None for r in mine)
                    else round(float(np.mean([r[split]["per_class_iou"][n] for r in mine])), 2))
                for n in mine[0][split]["per_class_iou"]}
        out[name] = agg
    return out


def markdown(agg: dict, pseudo: dict) -> str:
    def ms(v):
        return f"{v[0]:.1f} ± {v[1]:.1f}"

    lines = []
    for split in ("train", "test"):
        lines += [f"\n**{split} split** (student predictions vs GT, mIoU %, mean ± std over seeds; release's "
                  "convention, ours = present in the last column)\n",
                  "| configuration | overall | day | night | RGB only | thermal only | overall (present) | s/epoch |",
                  "|---|---|---|---|---|---|---|---|"]
        if split == "train":
            lines.append(f"| DARTS pseudo-labels (training labels) | {pseudo['overall']:.1f} | {pseudo['day']:.1f} | "
                         f"{pseudo['night']:.1f} | – | – | {pseudo['overall_present']:.1f} | – |")
        for name, a in agg.items():
            s = a[split]
            lines.append(f"| {name} | {ms(s['both']['overall'])} | {ms(s['both']['day'])} | {ms(s['both']['night'])} "
                         f"| {ms(s['rgb']['overall'])} | {ms(s['thermal']['overall'])} "
                         f"| {ms(s['both']['overall_present'])} | {a['seconds_per_epoch']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-train", type=int, default=24)
    p.add_argument("--n-test", type=int, default=12)
    p.add_argument("--size", type=int, nargs=2, default=[120, 160], help="synthetic frame size H W")
    p.add_argument("--feature-size", type=int, nargs=2, default=[126, 168], help="builtin feature input H W")
    p.add_argument("--input-size", type=int, nargs=2, default=[64, 96], help="student input H W")
    p.add_argument("--patch", type=int, default=8, help="mask patch size at the student input")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--darts-steps", type=int, default=100)
    p.add_argument("--k", type=int, default=80, help="k-means clusters (80: the tool's default K)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--gt-seeds", type=int, nargs="*", default=[0], help="seeds of the GT-trained reference")
    p.add_argument("--cost-sizes", type=int, nargs="+", default=[64, 128, 120, 160, 240, 320],
                   help="--cost-only: H W pairs of synthetic frame sizes to time train-crm at")
    p.add_argument("--cost-only", action="store_true", help="only the cost measurement (writes ..._cost.json)")
    p.add_argument("--quick", action="store_true", help="1 seed, 2 epochs (smoke test)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_rgbt_crm.json"))
    args = p.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.gt_seeds, args.darts_steps = [0], 2, [], 20

    args.cost_sizes = [args.cost_sizes[i:i + 2] for i in range(0, len(args.cost_sizes) - 1, 2)]
    import torch

    torch.set_num_threads(1)  # shared CPU: two spinning OpenMP threads ran ~30x slower (see report)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_rgbt_crm_"))
    root = work / "data"
    timings: dict = {}
    t_all = time.time()
    if args.cost_only:
        cost = measure_cost(work, args)
        out = Path(args.out).with_name(Path(args.out).stem + "_cost.json")
        out.write_text(json.dumps({"command": "python benchmarks/bench_rgbt_crm.py " + " ".join(sys.argv[1:]),
                                   "torch_threads": 1, "cost": cost}, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)
        return 0
    labels, darts_manifest = make_pseudo_labels(root, args, timings)
    pseudo = score_folder(root, labels, "train")
    print(f"DARTS pseudo-labels (train): {pseudo}; {timings}", file=sys.stderr)
    rows = []
    t0 = time.time()
    for name in CONFIGS:
        for seed in args.seeds:
            rows.append(train_one(root, labels, name, seed, args))
            print(f"{name} seed {seed}: train {rows[-1]['train']['both']} test {rows[-1]['test']['both']} "
                  f"({rows[-1]['seconds_per_epoch']} s/epoch)", file=sys.stderr)
    for name in GT_CONFIGS:
        for seed in args.gt_seeds:
            rows.append(train_one(root, None, name, seed, args))
    timings["students_s"] = round(time.time() - t0, 2)
    timings["total_s"] = round(time.time() - t_all, 2)
    agg = aggregate(rows)
    result = {
        "command": "python benchmarks/bench_rgbt_crm.py " + " ".join(sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("workdir", "out")},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads()},
        "pseudo_labels": {"source": "DARTS fused codes, k-means, majority mapping on the train split",
                          "uses_ground_truth": darts_manifest.get("uses_ground_truth"),
                          "ground_truth_use": darts_manifest.get("ground_truth_use"), "train_mIoU": pseudo},
        "timings": timings, "aggregate": agg, "runs": rows,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(agg, pseudo))
    print(f"\nwrote {args.out} in {timings['total_s']:.0f}s", file=sys.stderr)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
