"""Refinement of semantic pseudo-labels on the synthetic city, and DynaSeg's speed.

Quality (``--part quality``): per seed, a synthetic city (``synth``), semantics (builtin
features, k-means, majority mapping), depth from disparity, then for each refinement
method (none / DynaSeg SCF / DynaSeg SCF with the reference's detached L_con / DynaSeg FSF
on builtin features / dense CRF) ``refine-semantics`` -> instances -> panoptic ->
``evaluate`` (standard protocol, mIoU from the semantic maps). Every step is the command a
user types (``pseudo_labels.cli.main``). Seconds per image = segments + refinement wall
time / images. Also the Hungarian mIoU (per image, ``evaluation.unsupervised``) of the
DynaSeg segments themselves against the 19 GT classes.

Speed (``--part speed``): per-image DynaSeg time at 512x1024 on one core (one thread),
ours (defaults of :mod:`pseudo_labels.stages.refine.dynaseg`) against the reference's procedure
with the same T, written straightforwardly: sklearn ``KMeans(n_init=10)`` on every pixel
for k = 3..26, ``silhouette_score`` on every pixel, then the reference network
(M=3, p=100, 100 outputs) trained at full resolution. Parts of the reference too slow to
run are measured on a part of the work and scaled, and the JSON says which:
k-means at 5 of the 24 k (linear interpolation over k), the silhouette on 3 pixel subsets
(fitted c * N^2, the cost of an all-pairs distance computation, extrapolated to all
pixels), training for ``--ref-steps`` steps (x T / steps). A second, fully measured
comparison runs everything at 64x128.

    python benchmarks/bench_refinement.py --part quality --seeds 0 1 2
    python benchmarks/bench_refinement.py --part speed --speed-images 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "bench_refinement.json"
FIGURE = ROOT / "reports" / "refinement_crops.png"
METHODS = ("none", "dynaseg-scf", "dynaseg-scf-detached", "dynaseg-fsf", "crf")
SEGMENT_ARGS = {"dynaseg-scf": ["--variant", "scf"],
                "dynaseg-scf-detached": ["--variant", "scf", "--continuity", "detached"],
                "dynaseg-fsf": ["--variant", "fsf", "--backbone", "builtin"]}


def cli(argv: list) -> None:
    from pseudo_labels.cli import main

    argv = [str(a) for a in argv]
    rc = main(argv)
    if rc != 0:
        raise SystemExit(f"command failed ({rc}): pseudo-labels {' '.join(argv)}")


# --------------------------------------------------------------------------- quality
def run_seed(work: Path, seed: int, args) -> dict:
    city = work / f"city_{seed}"
    h, w = args.size
    cli(["synth", "--out", city, "--n", args.n, "--seed", seed, "--size", h, w, "--split", "val"])
    cli(["generate-overclustered-semantics", "--cityscapes-root", city, "--split", "val", "--k", args.k,
         "--backbone", "builtin", "--mapping", "majority", "--output-subdir", "sem", "--workers", 1])
    cli(["generate-depth", "--cityscapes-root", city, "--split", "val", "--source", "disparity",
         "--normalize", "minmax", "--output-subdir", "depth"])
    min_area = max(1, round(1000 * h * w / (512 * 1024)))  # the reference's A_min at 512x1024, scaled
    out = {}
    for method in METHODS:
        mdir = work / f"seed{seed}_{method}"
        t0 = time.perf_counter()
        refine = ["refine-semantics", "--semantic-dir", city / "sem" / "val", "--output-dir", mdir / "sem"]
        seg_stats = None
        if method.startswith("dynaseg"):
            cli(["generate-dynaseg-segments", "--cityscapes-root", city, "--split", "val", "--out", mdir / "segments",
                 "--steps", args.steps, "--work-long-side", args.work_long_side, "--seed", seed,
                 *SEGMENT_ARGS[method]])
            refine += ["--method", "dynaseg", "--segments-dir", mdir / "segments"]
            seg_stats = json.loads((mdir / "segments" / "dynaseg_run.json").read_text())["images"]
        elif method == "crf":
            refine += ["--method", "crf", "--images-dir", city / "leftImg8bit" / "val", "--num-labels", 19]
        else:
            refine += ["--method", "none"]
        cli(refine)
        seconds = (time.perf_counter() - t0) / args.n
        cli(["generate-depth-guided-instances", "--semantic-dir", mdir / "sem", "--depth-dir", city / "depth" / "val",
             "--output-dir", mdir / "instances", "--grad-threshold", "0.20", "--min-area", min_area,
             "--resolution", h, w])
        cli(["generate-panoptic", "--semantic-dir", mdir / "sem", "--instance-dir", mdir / "instances",
             "--out-json", mdir / "panoptic.json", "--out-folder", mdir / "panoptic", "--resolution", h, w])
        gt_json, gt_dir = city / "gtFine" / "cityscapes_panoptic_val.json", city / "gtFine" / "cityscapes_panoptic_val"
        cli(["evaluate", "--gt-json", gt_json, "--gt-folder", gt_dir, "--pred-json", mdir / "panoptic.json",
             "--pred-folder", mdir / "panoptic", "--gt-semantic-dir", city / "gtFine" / "val",
             "--pred-semantic-dir", mdir / "sem", "--out", mdir / "evaluation.json"])
        ev = json.loads((mdir / "evaluation.json").read_text())
        row = {"PQ": ev["PQ"], "PQ_things": ev.get("PQ_things"), "PQ_stuff": ev.get("PQ_stuff"),
               "mIoU": semantic_miou(ev), "seconds_per_image": seconds}
        if seg_stats is not None:
            row["segments_q_mean"] = float(np.mean([s["q"] for s in seg_stats]))
            row["min_q_minus_silhouette_k"] = int(min(s["q"] - s["silhouette_k"] for s in seg_stats))
            row["segment_miou_per_image"] = segment_miou(city, mdir / "segments")
        out[method] = row
        print(f"seed {seed} {method}: {json.dumps(row)}", flush=True)
    return out


def semantic_miou(ev: dict) -> float:
    for key in ("mIoU", "semantic"):
        v = ev.get(key)
        if isinstance(v, dict) and "mIoU" in v:
            return float(v["mIoU"])
        if isinstance(v, (int, float)):
            return float(v)
    raise KeyError(f"no mIoU in evaluation result keys {sorted(ev)}")


def segment_miou(city: Path, seg_dir: Path) -> float:
    """Per-image Hungarian mIoU of the segments against the 19 GT trainIds (classes with GT only)."""
    from evaluation.unsupervised import unsupervised_miou
    from pseudo_labels.core.io import read_png

    pairs = []
    for p in sorted((city / "gtFine" / "val").rglob("*_gtFine_labelTrainIds.png")):
        stem = p.name.replace("_gtFine_labelTrainIds.png", "")
        pairs.append((read_png(p), read_png(next(seg_dir.rglob(f"{stem}.png")))))
    return unsupervised_miou(pairs, 19, mode="image", absent="skip")["mIoU"]


def summarize(per_seed: list[dict]) -> dict:
    table = {}
    for method in METHODS:
        rows = [s[method] for s in per_seed]
        entry = {}
        for key in rows[0]:
            vals = [r[key] for r in rows if r.get(key) is not None]
            if vals and all(isinstance(v, (int, float)) for v in vals):
                entry[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "values": vals}
        table[method] = entry
    return table


def crop_figure(work: Path, args, path: Path) -> None:
    """Image, GT and each method's semantics on one crop of seed 0's first image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pseudo_labels.core.io import read_image_rgb, read_png
    from pseudo_labels.datasets.cityscapes import LABELS

    city = work / f"city_{args.seeds[0]}"
    img_path = sorted((city / "leftImg8bit" / "val").rglob("*.png"))[0]
    stem = img_path.name.replace("_leftImg8bit.png", "")
    h, w = args.size
    ys, xs = slice(h // 3, h // 3 + h // 2), slice(w // 4, w // 4 + w // 2)
    panels = [("image", read_image_rgb(img_path)),
              ("ground truth", LABELS.colorize(read_png(next((city / "gtFine" / "val").rglob(f"{stem}_gtFine_labelTrainIds.png")))))]
    for method in METHODS:
        sem = read_png(next((work / f"seed{args.seeds[0]}_{method}" / "sem").rglob(f"{stem}.png")))
        panels.append((method, LABELS.colorize(sem)))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.2))
    for ax, (title, arr) in zip(axes, panels):
        ax.imshow(arr[ys, xs], interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- speed
def reference_network_seconds(image: np.ndarray, steps: int) -> float:
    """Seconds per training step of the reference network (M=3, p=100, 100 outputs, SCF loss
    with gradient) on the full-resolution image: forward, argmax, loss, backward, SGD step."""
    import torch
    import torch.nn.functional as F

    from pseudo_labels.stages.refine.dynaseg import build_network, continuity_loss, scf_input

    torch.manual_seed(0)
    x = torch.from_numpy(scf_input(image, image.shape[:2]))[None]
    net = build_network(3, 100, 100, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        r = net(x)
        flat = r[0].reshape(100, -1).T
        target = flat.argmax(1)
        q = int(torch.unique(target).numel())
        loss = F.cross_entropy(flat, target) + 50.0 / q * continuity_loss(r)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / max(1, steps)


def reference_silhouette_phase(pixels: np.ndarray, ks, subsample: int | None = None) -> dict:
    """The reference's phase, straightforwardly: KMeans(n_init=10) + silhouette_score on all pixels, per k."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    kmeans_s, sil_s, scores = {}, {}, {}
    for k in ks:
        t0 = time.perf_counter()
        labels = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(pixels)
        kmeans_s[k] = time.perf_counter() - t0
        if subsample is None:
            t0 = time.perf_counter()
            scores[k] = float(silhouette_score(pixels, labels))
            sil_s[k] = time.perf_counter() - t0
    return {"kmeans_seconds": kmeans_s, "silhouette_seconds": sil_s, "scores": scores}


def silhouette_scaling(pixels: np.ndarray, sizes, k: int = 8) -> dict:
    """silhouette_score time on N random pixels for each N (labels from a k-means of them)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(0)
    out = {}
    for n in sizes:
        x = pixels[rng.choice(len(pixels), n, replace=False)]
        labels = KMeans(n_clusters=k, n_init=1, random_state=0).fit_predict(x)
        t0 = time.perf_counter()
        silhouette_score(x, labels)
        out[int(n)] = time.perf_counter() - t0
    return out


def speed_one(image: np.ndarray, steps: int, ref_steps: int, full_reference: bool) -> dict:
    from pseudo_labels.stages.refine import dynaseg as ds

    params = ds.DynaSegParams(steps=steps, threads=1)
    t0 = time.perf_counter()
    x = ds.scf_input(image, ds.work_size(image.shape[:2], params.work_long_side))
    res = ds.dynaseg_segments(x, image.shape[:2], params)
    ours = {"seconds": time.perf_counter() - t0, "seconds_silhouette": res.seconds_silhouette,
            "steps_run": res.steps, "q": res.n_segments, "silhouette_k": res.silhouette_k}
    pixels = ds.scf_input(image, image.shape[:2]).reshape(3, -1).T
    ks = list(range(3, 27))
    ref: dict = {"n_pixels": len(pixels), "T": steps}
    if full_reference:
        phase = reference_silhouette_phase(pixels, ks)
        ref["kmeans_seconds"] = sum(phase["kmeans_seconds"].values())
        ref["silhouette_seconds"] = sum(phase["silhouette_seconds"].values())
        ref["silhouette_k"] = max(phase["scores"], key=phase["scores"].get)
        ref["train_seconds"] = reference_network_seconds(image, steps) * steps
        ref["measured"] = "everything"
    else:
        sampled_k = [3, 9, 15, 21, 26]
        km = reference_silhouette_phase(pixels, sampled_k, subsample=0)["kmeans_seconds"]
        ref["kmeans_seconds"] = float(sum(np.interp(k, sampled_k, [km[s] for s in sampled_k]) for k in ks))
        ref["kmeans_measured_at_k"] = {str(k): v for k, v in km.items()}
        sizes = (4096, 8192, 16384)
        sil = silhouette_scaling(pixels, sizes)
        c = float(np.sum([sil[n] * n ** 2 for n in sizes]) / np.sum([float(n) ** 4 for n in sizes]))
        ref["silhouette_seconds_at_n"] = {str(n): v for n, v in sil.items()}
        ref["silhouette_seconds"] = c * len(pixels) ** 2 * len(ks)
        ref["train_seconds_per_step"] = reference_network_seconds(image, ref_steps)
        ref["train_seconds"] = ref["train_seconds_per_step"] * steps
        ref["measured"] = ("k-means at k in 3, 9, 15, 21, 26 (interpolated over k); silhouette at N = 4096, 8192, "
                           "16384 pixels, c*N^2 fit extrapolated to all pixels x 24 k; training "
                           f"{ref_steps} steps x T/{ref_steps}")
    ref["seconds"] = ref["kmeans_seconds"] + ref["silhouette_seconds"] + ref["train_seconds"]
    return {"ours": ours, "reference": ref, "speedup": ref["seconds"] / ours["seconds"]}


def run_speed(args) -> dict:
    import torch
    from threadpoolctl import threadpool_limits

    from pseudo_labels.core.io import read_image_rgb
    from pseudo_labels.datasets.synthetic_city import write_synthetic_city

    torch.set_num_threads(1)
    warm = np.random.default_rng(0).integers(0, 255, size=(16, 16, 3), dtype=np.uint8)
    speed_one(warm, 2, 1, True)  # imports and first-call set-up are not timed
    out = {}
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        for size, full in (((64, 128), True), ((512, 1024), False)):
            if f"{size[0]}x{size[1]}" not in args.speed_sizes:
                continue
            n = args.speed_images
            root = Path(tmp) / f"city_{size[0]}"
            write_synthetic_city(root, n, seed=11, size=size, split="val")
            rows = []
            for p in sorted((root / "leftImg8bit" / "val").rglob("*.png")):
                rows.append(speed_one(read_image_rgb(p), args.steps_speed, args.ref_steps, full))
                print(f"speed {size}: {json.dumps(rows[-1])}", flush=True)
            out[f"{size[0]}x{size[1]}"] = {
                "images": rows, "fully_measured": full,
                "ours_seconds_mean": float(np.mean([r["ours"]["seconds"] for r in rows])),
                "reference_seconds_mean": float(np.mean([r["reference"]["seconds"] for r in rows])),
                "speedup_mean": float(np.mean([r["speedup"] for r in rows])),
                "speedup_min": float(np.min([r["speedup"] for r in rows]))}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("quality", "speed", "all"), default="all")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=2, help="images per seed")
    ap.add_argument("--size", type=int, nargs=2, default=[256, 512])
    ap.add_argument("--k", type=int, default=40)
    ap.add_argument("--steps", type=int, default=30, help="DynaSeg T in the quality part")
    ap.add_argument("--work-long-side", type=int, default=256)
    ap.add_argument("--speed-images", type=int, default=2)
    ap.add_argument("--speed-sizes", nargs="+", default=["64x128", "512x1024"], choices=("64x128", "512x1024"))
    ap.add_argument("--steps-speed", type=int, default=50, help="T of both procedures in the speed part")
    ap.add_argument("--ref-steps", type=int, default=2, help="reference training steps measured at 512x1024")
    ap.add_argument("--work-dir", help="keep intermediate folders here (default: a temporary folder)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.exists() else {}
    if args.part in ("quality", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(args.work_dir or tmp)
            per_seed = [run_seed(work, s, args) for s in args.seeds]
            crop_figure(work, args, FIGURE)
        result["quality"] = {"command": "python benchmarks/bench_refinement.py " + " ".join(argv or sys.argv[1:]),
                             "settings": {"seeds": args.seeds, "n_images": args.n, "size": args.size, "k": args.k,
                                          "dynaseg_steps": args.steps, "work_long_side": args.work_long_side,
                                          "protocol": "standard"},
                             "per_seed": per_seed, "summary": summarize(per_seed), "figure": str(FIGURE.relative_to(ROOT))}
    if args.part in ("speed", "all"):
        speed = result.get("speed", {})
        for size, entry in run_speed(args).items():
            entry["command"] = "python benchmarks/bench_refinement.py " + " ".join(argv or sys.argv[1:])
            speed[size] = entry
        speed["threads"] = 1
        result["speed"] = speed
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2))
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
