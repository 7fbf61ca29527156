"""Benchmark: panoptic evaluation speed against cityscapesscripts and hotcoco, with equality checks.

On N synthetic 1024x2048 Cityscapes-panoptic images (GT + a perturbed prediction) it times,
in one run:

* in memory (PNG decode excluded): cityscapesscripts' per-image computation
  (``pq_compute_single_core`` with ``Image.open`` served from memory; its own ``rgb2id``
  counted in, and reported separately) vs ours (``pq_stats_image`` on decoded id maps);
* from files, each tool with 1 and 2 workers, every measurement in a fresh process
  (imports done before the clock starts, JSON reading inside it), best of ``--repeat``
  runs taken round-robin so that load changes hit every tool alike:
  cityscapesscripts (``pq_compute_single_core``; ``pq_compute_multi_core`` with 2
  processes), hotcoco direct (``hotcoco.panoptic.pq_compute`` on the JSON with integer
  image ids, ``RAYON_NUM_THREADS`` = workers), ours through the command
  (``pseudo-labels evaluate --engine numpy|auto --workers W``; auto = hotcoco here) and
  the numpy engine as a library call (``evaluate_panoptic_folders``, local fork pool).

Every result is checked equal to cityscapesscripts (1e-9 on fractions, per class too).
Writes JSON with seconds per image, ratios and the machine load.

    python benchmarks/bench_evaluation.py --n 12 --out benchmarks/results/bench_evaluation.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.panoptic import (  # noqa: E402
    PQStats,
    normalize_categories,
    pq_stats_image,
    read_panoptic_png,
    summarize_pq,
)

#: (tool, workers) measured from files; each in a fresh process
FILE_RUNS = [(tool, w) for tool in ("cityscapesscripts", "hotcoco_direct", "ours_auto", "ours_numpy",
                                    "ours_numpy_library") for w in (1, 2)]


def make_data(root: Path, n: int, seed: int, size=(1024, 2048)):
    """GT via pseudo_labels.datasets.synthetic_city when available, else the test generator; perturbed predictions."""
    from tests.test_evaluation_panoptic import make_gt, perturb, write_set

    rng = np.random.default_rng(seed)
    gts, preds = [], []
    synth_gt = None
    try:
        from pseudo_labels.datasets.cityscapes import panoptic_gt
        from pseudo_labels.datasets.synthetic_city import write_synthetic_city

        write_synthetic_city(root / "city", n, seed, size=size, split="val")
        synth_gt = panoptic_gt(root / "city", "val")
    except Exception:  # synth not written yet, or a different signature
        synth_gt = None
    if synth_gt is not None and synth_gt[0].exists():
        gj, gf = synth_gt
        gt = json.loads(Path(gj).read_text())
        for a in gt["annotations"]:
            g = read_panoptic_png(Path(gf) / a["file_name"]).astype(np.int64)
            p, ps = perturb(rng, g, a["segments_info"], strength=float(rng.uniform(0.5, 2.0)))
            preds.append((a["image_id"], p, ps))
        pj, pf = write_set(root, preds, "pred")
        return Path(gj), Path(gf), pj, pf, "pseudo_labels.commands.synth"
    for k in range(n):
        stem = f"benchcity_{k:06d}_000019"
        g, gs = make_gt(rng, size, n_things=int(rng.integers(15, 40)), n_crowd=int(rng.integers(0, 3)))
        p, ps = perturb(rng, g, gs, strength=float(rng.uniform(0.5, 2.0)))
        gts.append((stem, g, gs))
        preds.append((stem, p, ps))
    gj, gf = write_set(root, gts, "gt", gt=True)
    pj, pf = write_set(root, preds, "pred")
    return gj, gf, pj, pf, "tests.test_evaluation_panoptic generator"


def cs_results_to_fractions(res: dict) -> dict:
    out = {}
    for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        for m in ("pq", "sq", "rq"):
            out[m.upper() + suffix] = res[group][m]
    return out


def ours_to_fractions(res: dict) -> dict:
    return {k: res[k] / 100 for k in ("PQ", "SQ", "RQ", "PQ_things", "SQ_things", "RQ_things", "PQ_stuff",
                                      "SQ_stuff", "RQ_stuff")}


def max_diff(a: dict, b: dict) -> float:
    return max(abs(a[k] - b[k]) for k in a)


def cs_average(pq_stat, categories) -> dict:
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import average_pq

    return average_pq(pq_stat, categories)


# --------------------------------------------------------------------------- one timed run (child process)
def _child(spec: dict) -> dict:
    """Run one tool once, imports before the clock; returns seconds, fractions and per-class PQ."""
    tool, workers = spec["tool"], int(spec["workers"])
    gj, gf, pj, pf = spec["gt_json"], spec["gt_folder"], spec["pred_json"], spec["pred_folder"]
    if tool == "cityscapesscripts":
        import cityscapesscripts.evaluation.evalPanopticSemanticLabeling as cs

        cs.multiprocessing.cpu_count = lambda: workers  # pq_compute_multi_core uses cpu_count() processes
        sink = io.StringIO()
        t = time.perf_counter()
        with open(gj) as f:
            gt = json.load(f)
        with open(pj) as f:
            pred = json.load(f)
        categories = {c["id"]: c for c in gt["categories"]}
        by_id = {a["image_id"]: a for a in pred["annotations"]}
        pairs = [(a, by_id[a["image_id"]]) for a in gt["annotations"]]
        with contextlib.redirect_stdout(sink):
            if workers == 1:
                stat = cs.pq_compute_single_core(0, pairs, gf, pf, categories)
            else:
                stat = cs.pq_compute_multi_core(pairs, gf, pf, categories)
        res = cs_average(stat, categories)
        dt = time.perf_counter() - t
        return {"seconds": dt, "fractions": cs_results_to_fractions(res),
                "per_class_pq": {str(k): v["pq"] for k, v in res["per_class"].items()}}
    if tool == "hotcoco_direct":
        import hotcoco.panoptic as hp  # RAYON_NUM_THREADS = workers is in this process's environment

        stdout = os.dup(1)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # pq_compute prints its table from Rust
        try:
            t = time.perf_counter()
            res = hp.pq_compute(spec["gt_json_int"], spec["pred_json_int"], gf, pf)
            dt = time.perf_counter() - t
        finally:
            os.dup2(stdout, 1)
        return {"seconds": dt, "fractions": cs_results_to_fractions(res),
                "per_class_pq": {str(k): v["pq"] for k, v in res["per_class"].items()},
                "version": res.get("hotcoco_version")}
    if tool == "interleaved":  # hotcoco direct and our command alternately in one process, K times each
        import hotcoco.panoptic as hp

        import evaluation.hotcoco_engine  # noqa: F401
        import evaluation.panoptic  # noqa: F401
        import pseudo_labels.commands.evaluate  # noqa: F401
        import pseudo_labels.core.io  # noqa: F401
        import pseudo_labels.core.runner  # noqa: F401
        from pseudo_labels.cli import main

        argv = ["evaluate", "--gt-json", gj, "--gt-folder", gf, "--pred-json", pj, "--pred-folder", pf,
                "--out", spec["out"], "--engine", "auto", "--workers", str(workers), "--quiet"]
        devnull, stdout = os.open(os.devnull, os.O_WRONLY), os.dup(1)
        times = {"hotcoco_direct": [], "ours_auto": []}
        for _ in range(int(spec["k"])):
            os.dup2(devnull, 1)
            try:
                t = time.perf_counter()
                hp.pq_compute(spec["gt_json_int"], spec["pred_json_int"], gf, pf)
                times["hotcoco_direct"].append(time.perf_counter() - t)
            finally:
                os.dup2(stdout, 1)
            t = time.perf_counter()
            if main(argv) != 0:
                raise SystemExit("pseudo-labels evaluate failed")
            times["ours_auto"].append(time.perf_counter() - t)
        with open(spec["out"]) as f:
            engine = json.load(f)["engine"]
        return {"seconds": 0.0, "times": times, "engine": engine}
    if tool == "ours_numpy_library":
        from evaluation.panoptic import evaluate_panoptic_folders

        t = time.perf_counter()
        res = evaluate_panoptic_folders(gj, gf, pj, pf, workers=workers, engine="numpy")
        dt = time.perf_counter() - t
    else:  # the command, as a user runs it (result JSON written, table not printed)
        import hotcoco.panoptic  # noqa: F401  imports before the clock, as for hotcoco direct

        import evaluation.hotcoco_engine  # noqa: F401
        import evaluation.panoptic  # noqa: F401
        import pseudo_labels.commands.evaluate  # noqa: F401
        import pseudo_labels.core.io  # noqa: F401
        import pseudo_labels.core.runner  # noqa: F401
        from pseudo_labels.cli import main

        engine = {"ours_auto": "auto", "ours_numpy": "numpy"}[tool]
        out = spec["out"]
        argv = ["evaluate", "--gt-json", gj, "--gt-folder", gf, "--pred-json", pj, "--pred-folder", pf,
                "--out", out, "--engine", engine, "--workers", str(workers), "--quiet"]
        t = time.perf_counter()
        rc = main(argv)
        dt = time.perf_counter() - t
        if rc != 0:
            raise SystemExit(f"pseudo-labels evaluate exited {rc}")
        with open(out) as f:
            res = json.load(f)
    return {"seconds": dt, "fractions": ours_to_fractions(res), "engine": res["engine"],
            "per_class_pq": {str(v["category_id"]): v["PQ"] / 100 for v in res["per_class"].values()}}


def run_child(spec: dict) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(spec["workers"]), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                          env=env, capture_output=True, text=True, cwd=str(ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['tool']} (workers {spec['workers']}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def command_wall(spec: dict, tool: str, workers: int) -> float:
    """Seconds from process start to exit of one command (interpreter start and imports included)."""
    if tool == "hotcoco_command":
        cmd = ["coco", "panoptic", "eval", "--gt", spec["gt_json_int"], "--pred", spec["pred_json_int"],
               "--gt-folder", spec["gt_folder"], "--pred-folder", spec["pred_folder"], "--json"]
    else:
        cmd = [sys.executable, "-m", "pseudo_labels.commands.evaluate", "--gt-json", spec["gt_json"], "--gt-folder",
               spec["gt_folder"], "--pred-json", spec["pred_json"], "--pred-folder", spec["pred_folder"],
               "--out", spec["out"], "--engine", "auto", "--workers", str(workers), "--quiet"]
    env = dict(os.environ, RAYON_NUM_THREADS=str(workers), PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(ROOT))
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timings: best of this many runs")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_evaluation.json"))
    ap.add_argument("--replicate", type=int, default=5,
                    help="also time hotcoco direct and ours (auto) on the N images listed this many times (1: skip)")
    ap.add_argument("--interleave", type=int, default=7,
                    help="also run hotcoco direct and ours (auto) alternately in one process this many times "
                         "each, per worker count (robust to load drift; 0: skip)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(json.loads(args.child))))
        return 0

    import cityscapesscripts.evaluation.evalPanopticSemanticLabeling as cs

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        gj, gf, pj, pf, source = make_data(tmp, args.n, args.seed)
        t_gen = time.perf_counter() - t0
        gt = json.loads(gj.read_text())
        pred = json.loads(pj.read_text())
        categories = {c["id"]: c for c in gt["categories"]}
        pred_by_id = {a["image_id"]: a for a in pred["annotations"]}
        pairs = [(a, pred_by_id[a["image_id"]]) for a in gt["annotations"]]
        n = len(pairs)

        # ---------------------------------------------------------------- in memory
        from PIL import Image

        rgb = {}
        for ga, pa in pairs:
            for folder, ann in ((gf, ga), (pf, pa)):
                p = os.path.join(folder, ann["file_name"])
                rgb[p] = np.array(Image.open(p))
        ids = {p: read_panoptic_png(p) for p in rgb}

        class _FakeImage:  # serves decoded PNGs to cityscapesscripts from memory
            @staticmethod
            def open(path):
                return rgb[path]

        real_image = cs.Image
        cs.Image = _FakeImage
        sink = io.StringIO()
        try:
            best_cs = np.inf
            for _ in range(args.repeat):
                total_cs = cs.PQStat()
                t = time.perf_counter()
                with contextlib.redirect_stdout(sink):
                    for ga, pa in pairs:
                        total_cs += cs.pq_compute_single_core(0, [(ga, pa)], str(gf), str(pf), categories)
                best_cs = min(best_cs, time.perf_counter() - t)
        finally:
            cs.Image = real_image
        best_rgb2id = np.inf
        for _ in range(args.repeat):
            t = time.perf_counter()
            for p in rgb:
                cs.rgb2id(np.array(rgb[p], dtype=np.uint32))
            best_rgb2id = min(best_rgb2id, time.perf_counter() - t)
        cats_norm = normalize_categories(categories)
        best_ours = np.inf
        for _ in range(args.repeat):
            t = time.perf_counter()
            total = PQStats.empty(cats_norm)
            for ga, pa in pairs:
                total += pq_stats_image(ids[os.path.join(gf, ga["file_name"])], ga["segments_info"],
                                        ids[os.path.join(pf, pa["file_name"])], pa["segments_info"], cats_norm)
            best_ours = min(best_ours, time.perf_counter() - t)
        ours_mem = summarize_pq(total, cats_norm, "standard")
        cs_mem = cs_average(total_cs, categories)
        image_size = list(next(iter(ids.values())).shape)
        del rgb, ids

        # ---------------------------------------------------------------- from files
        gt_int, pred_int = json.loads(gj.read_text()), json.loads(pj.read_text())
        num = {a["image_id"]: i + 1 for i, a in enumerate(gt_int["annotations"])}
        for d in (gt_int, pred_int):
            for a in d["annotations"]:
                a["image_id"] = num[a["image_id"]]
            d["images"] = [dict(im, id=num.get(im["id"], im["id"])) for im in d.get("images", [])]
        gi_path, pi_path = tmp / "gt_int.json", tmp / "pred_int.json"
        gi_path.write_text(json.dumps(gt_int))
        pi_path.write_text(json.dumps(pred_int))
        spec0 = {"gt_json": str(gj), "gt_folder": str(gf), "pred_json": str(pj), "pred_folder": str(pf),
                 "gt_json_int": str(gi_path), "pred_json_int": str(pi_path), "out": str(tmp / "result.json")}
        # the same files listed --replicate times under new image ids: per-image cost with the fixed
        # per-run cost (argument parsing, JSON, result writing) spread over more images
        spec_rep = dict(spec0)
        for key, src, ints in (("gt_json", gj, False), ("pred_json", pj, False), ("gt_json_int", gi_path, True),
                               ("pred_json_int", pi_path, True)):
            d = json.loads(Path(src).read_text())
            anns = []
            for r in range(args.replicate):
                for a in d["annotations"]:
                    anns.append(dict(a, image_id=(a["image_id"] + r * n) if ints else f"{a['image_id']}_r{r}"))
            d["annotations"] = anns
            d["images"] = [{"id": a["image_id"], "file_name": a["file_name"]} for a in anns]
            spec_rep[key] = str(tmp / f"rep_{key}.json")
            Path(spec_rep[key]).write_text(json.dumps(d))
        rep_runs = [(tool, w) for tool in ("hotcoco_direct", "ours_auto") for w in (1, 2)]
        best_rep = {run: np.inf for run in rep_runs}
        best = {run: np.inf for run in FILE_RUNS}
        last = {}
        commands = [(tool, w) for tool in ("hotcoco_command", "ours_command") for w in (1, 2)]
        best_cmd = {run: np.inf for run in commands}
        have_coco = shutil.which("coco") is not None
        for _ in range(args.repeat):  # round-robin: a load change hits every tool alike
            for tool, w in FILE_RUNS:
                out = run_child(dict(spec0, tool=tool, workers=w))
                best[tool, w] = min(best[tool, w], out["seconds"])
                last[tool, w] = out
            for tool, w in commands:
                if tool == "ours_command" or have_coco:
                    best_cmd[tool, w] = min(best_cmd[tool, w], command_wall(spec0, tool, w))
            if args.replicate > 1:
                for tool, w in rep_runs:
                    out = run_child(dict(spec_rep, tool=tool, workers=w))
                    best_rep[tool, w] = min(best_rep[tool, w], out["seconds"])
                    last[tool + "_replicated", w] = out
        # alternating calls in one process: load drift hits both alike
        inter = {}
        if args.interleave > 0:
            for w in (1, 2):
                inter[w] = run_child(dict(spec_rep if args.replicate > 1 else spec0, tool="interleaved", workers=w,
                                          k=args.interleave))
    load_after = os.getloadavg()

    ref = last["cityscapesscripts", 1]
    checks = {
        "ours_in_memory_vs_cityscapesscripts": max_diff(ours_to_fractions(ours_mem), ref["fractions"]),
        "cityscapesscripts_in_memory_vs_files": max_diff(cs_results_to_fractions(cs_mem), ref["fractions"]),
    }
    per_class_diff = {}
    for (tool, w), out in last.items():
        checks[f"{tool}_w{w}_vs_cityscapesscripts_w1"] = max_diff(out["fractions"], ref["fractions"])
        if tool.endswith("_replicated"):  # same images repeated: same class averages
            continue
        pc = out["per_class_pq"]
        per_class_diff[f"{tool}_w{w}"] = max(abs(pc[k] - ref["per_class_pq"][k]) for k in ref["per_class_pq"])
    all_equal = all(v < 1e-9 for v in checks.values()) and all(v < 1e-9 for v in per_class_diff.values())
    per = lambda s: s / n  # noqa: E731
    files = {f"{tool}_workers_{w}": per(best[tool, w]) for tool, w in FILE_RUNS}
    ratios = {
        "in_memory_cityscapesscripts_over_ours": best_cs / best_ours,
        "in_memory_cityscapesscripts_without_rgb2id_over_ours": (best_cs - best_rgb2id) / best_ours,
    }
    for w in (1, 2):
        hc = best["hotcoco_direct", w]
        ratios[f"files_hotcoco_over_ours_auto_w{w}"] = hc / best["ours_auto", w]
        ratios[f"files_hotcoco_over_ours_numpy_w{w}"] = hc / best["ours_numpy", w]
        ratios[f"files_hotcoco_over_ours_numpy_library_w{w}"] = hc / best["ours_numpy_library", w]
        ratios[f"files_cityscapesscripts_over_ours_auto_w{w}"] = best["cityscapesscripts", w] / best["ours_auto", w]
        ratios[f"files_cityscapesscripts_over_ours_numpy_w{w}"] = best["cityscapesscripts", w] / best["ours_numpy", w]
    result = {
        "benchmark": "panoptic evaluation, standard protocol",
        "command": "python3 benchmarks/bench_evaluation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "n_images": n,
        "image_size": image_size,
        "data": source,
        "data_generation_s": round(t_gen, 2),
        "segments_per_image": {"gt": float(np.mean([len(a["segments_info"]) for a, _ in pairs])),
                               "pred": float(np.mean([len(b["segments_info"]) for _, b in pairs]))},
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "numpy": np.__version__,
                    "hotcoco": last["hotcoco_direct", 1].get("version"),
                    "load_average_1_5_15_before": [round(x, 2) for x in load_before],
                    "load_average_1_5_15_after": [round(x, 2) for x in load_after]},
        "engines": {f"ours_auto_w{w}": last["ours_auto", w]["engine"] for w in (1, 2)},
        "seconds_per_image": {
            "in_memory": {
                "cityscapesscripts_compute": per(best_cs),
                "cityscapesscripts_rgb2id_part": per(best_rgb2id),
                "cityscapesscripts_compute_without_rgb2id": per(best_cs - best_rgb2id),
                "ours": per(best_ours),
            },
            "from_files": files,
        },
        "ratios": ratios,
        "replicated": None if args.replicate <= 1 else {
            "n_images": n * args.replicate,
            "seconds_per_image": {f"{tool}_workers_{w}": v / (n * args.replicate) for (tool, w), v in best_rep.items()},
            "ratios": {f"hotcoco_over_ours_auto_w{w}": best_rep["hotcoco_direct", w] / best_rep["ours_auto", w]
                       for w in (1, 2)},
            "what": f"the {n} images listed {args.replicate} times under new image ids (same PNG files), so that "
                    "the fixed cost of a run (argument parsing, JSON, writing the result) weighs less per image",
        },
        "interleaved": None if not inter else {
            "n_images": n * max(1, args.replicate),
            "calls_each": args.interleave,
            **{f"workers_{w}": {
                "engine": out["engine"],
                "seconds_per_image_min": {k: min(v) / (n * max(1, args.replicate)) for k, v in out["times"].items()},
                "seconds_per_image_median": {k: float(np.median(v)) / (n * max(1, args.replicate))
                                             for k, v in out["times"].items()},
                "hotcoco_over_ours_auto_min": min(out["times"]["hotcoco_direct"]) / min(out["times"]["ours_auto"]),
                "hotcoco_over_ours_auto_median": float(np.median(out["times"]["hotcoco_direct"])
                                                       / np.median(out["times"]["ours_auto"])),
            } for w, out in inter.items()},
            "what": "hotcoco.panoptic.pq_compute and `pseudo-labels evaluate --engine auto` (main(argv), result "
                    "JSON written) called alternately in one process (RAYON_NUM_THREADS = workers), on the "
                    "replicated list; the comparison least affected by other jobs on the machine",
        },
        "command_wall_seconds_per_run": {
            **{f"{tool}_workers_{w}": (None if not np.isfinite(v) else v) for (tool, w), v in best_cmd.items()},
            "what": "process start to exit, best of --repeat: `coco panoptic eval --gt --pred --gt-folder "
                    "--pred-folder --json` (hotcoco's command, integer-id JSON, RAYON_NUM_THREADS = workers) vs "
                    "`python -m pseudo_labels.commands.evaluate ... --engine auto --workers W --quiet`; includes interpreter "
                    "start and imports, a fixed cost per run that per-image numbers leave out",
        },
        "max_abs_difference_fractions": checks,
        "max_abs_difference_per_class_pq": per_class_diff,
        "all_numbers_equal_1e-9": bool(all_equal),
        "PQ": 100 * ref["fractions"]["PQ"], "SQ": 100 * ref["fractions"]["SQ"], "RQ": 100 * ref["fractions"]["RQ"],
        "notes": "best of --repeat; from-files runs are fresh processes timed inside (imports before the clock, "
                 "JSON reading and, for ours, writing the result inside); hotcoco direct and ours' hotcoco engine "
                 "run with RAYON_NUM_THREADS = workers; cityscapesscripts with 2 workers is its "
                 "pq_compute_multi_core with 2 processes; ours_numpy goes through the shared runner (forkserver "
                 "pool for 2 workers), ours_numpy_library through evaluate_panoptic_folders' fork pool. "
                 "ratios > 1: ours faster. The machine is shared (2 cores, other jobs running): see the load.",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("seconds_per_image", "ratios", "replicated", "interleaved",
                                             "command_wall_seconds_per_run",
                                             "all_numbers_equal_1e-9", "machine")},
                     indent=2))
    return 0 if all_equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
