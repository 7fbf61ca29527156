"""Scale benchmark: peak memory of the semantic stage vs the number of images, and
throughput of per-image stages under the local process pool vs Ray.

On a synthetic city (``pseudo_labels.datasets.synthetic_city``, 256x512 images to keep it fast, built-in
backbone), each measured command runs in a fresh process (the command runs in-process in a
small measuring script). Memory figures, MiB:

- ``vm_hwm_mib``: the kernel's peak RSS of that process (VmHWM), read when the command has
  returned, before interpreter teardown;
- ``peak_anon_mib``: peak anonymous memory (RssAnon, sampled every 50 ms): the heap, i.e. what
  would grow if data were kept per image (file-backed library pages are not in it);
- ``ru_maxrss_mib``: ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` read by the parent: the
  same peak but including interpreter teardown, where torch's libraries page in another
  ~100 MiB of file-backed memory, differently from run to run (so it is the noisiest).

1. Peak RSS of the whole semantic stage for 100 and 500 images (``--limit``), ``--workers 1``:
   (A) one process doing everything -- features extracted on the fly, fit sample, k-means
   fit (k = 80), assignment, majority mapping -- next to the RSS of a process that only
   imports the same libraries (torch alone is most of it); (B) ``extract-features`` and then
   the semantic stage from ``--features-dir`` with ``--upsample labels`` (no torch import);
   (C) the assignment of all images three times over in one process, anonymous memory after
   every 100 images (the torch path reaches an allocator plateau, it keeps nothing per image).
2. Throughput (images/s) of two per-image stages with ``--workers 2`` (local pool) and with
   ``--executor ray --workers 2`` (a local Ray instance with 2 CPUs, started by the command):
   ``generate-overclustered-semantics --load-centroids`` (extract, assign, map per image) and
   ``generate-depth --source disparity``. Each is run on a small and a large number of images
   (``--limit`` for the first, ``--shard 0/N`` vs the whole city for the second);
   the marginal rate (extra images / extra seconds) removes the fixed start-up cost (imports,
   pool or Ray start), which is reported as well. The outputs of the two executors are
   compared byte for byte.

    python benchmarks/bench_scale.py --out benchmarks/results/bench_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the measured process: runs one ``pseudo-labels`` command in-process (or ``--exec CODE``) while a
#: thread samples RssAnon; prints VmHWM (kernel peak RSS, read before interpreter teardown),
#: the sampled peak of anonymous memory and the wall time
STAGE_WRAPPER = r"""
import sys, threading, time
def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0
peak = [0]
stop = threading.Event()
def watch():
    while not stop.is_set():
        peak[0] = max(peak[0], status("RssAnon"))
        time.sleep(0.05)
threading.Thread(target=watch, daemon=True).start()
t0 = time.perf_counter()
if sys.argv[1] == "--exec":
    exec(sys.argv[2])
    rc = 0
else:
    from pseudo_labels.cli import main
    rc = main(sys.argv[1:])
wall = time.perf_counter() - t0
stop.set()
peak[0] = max(peak[0], status("RssAnon"))
print("MEASURE", rc, status("VmHWM"), peak[0], wall, flush=True)
sys.exit(rc)
"""
#: the parent of the measured process: its peak RSS as the kernel reports it for a child
#: (``getrusage(RUSAGE_CHILDREN).ru_maxrss``; this includes interpreter teardown, where torch's
#: libraries page in another ~100 MiB of file-backed memory)
RUSAGE_WRAPPER = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)\n"
    "line = [l for l in r.stdout.splitlines() if l.startswith('MEASURE ')]\n"
    "if r.returncode or not line:\n"
    "    sys.stderr.write(r.stderr[-3000:])\n"
    "    sys.exit(r.returncode or 1)\n"
    "print(line[-1], resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"  # kB on Linux
)
PLATEAU_LOOP = """
import json, sys
sys.path.insert(0, {repo!r})
from pseudo_labels.datasets.cityscapes import list_images
from pseudo_labels.stages.semantic.semantics import AssignJob, FeatureSource, assign_batch, batches as _batches
def anon():
    return int([l for l in open("/proc/self/status") if l.startswith("RssAnon")][0].split()[1]) / 1024
entries = list_images({city!r}, "val")
entries = [e for e in entries if (__import__("pathlib").Path({feats!r}) / e.relative(".npy")).exists()]
src = FeatureSource({feats!r}, "builtin", None, None, None, "cpu", 4)
samples, done = [], 0
for rep in range({reps}):
    for batch in _batches(entries, 4):
        assign_batch(AssignJob({city!r}, batch, src, {centroids!r}, {raw!r}, "similarity", False, "c"))
        done += len(batch)
        if done % 100 == 0:
            samples.append([done, round(anon(), 1)])
print(json.dumps(samples))
"""
IMPORTS = ("import torch, faiss, cv2, numpy, scipy.optimize, evaluation.matching, "
           "pseudo_labels.stages.semantic.semantics, pseudo_labels.stages.semantic.features")


def measure(args: list) -> dict:
    """Run one command (``pseudo-labels`` arguments, or ``["--exec", CODE]``) in a fresh process;
    its memory (MiB), wall time and the machine's load."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    load0 = os.getloadavg()[0]
    r = subprocess.run([sys.executable, "-c", RUSAGE_WRAPPER, sys.executable, "-c", STAGE_WRAPPER, *map(str, args)],
                       capture_output=True, text=True, env=env, cwd=REPO)
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(map(str, args))}\n{r.stderr}")
    _, rc, hwm, anon, wall, maxrss = r.stdout.split()
    return {"vm_hwm_mib": round(int(hwm) / 1024, 1), "peak_anon_mib": round(int(anon) / 1024, 1),
            "ru_maxrss_mib": round(int(maxrss) / 1024, 1), "wall_s": round(float(wall), 2),
            "load_1min_before": round(load0, 2), "load_1min_after": round(os.getloadavg()[0], 2)}


def pl(*args) -> list[str]:
    """A ``pseudo-labels`` command line (run in-process by the measuring wrapper)."""
    return [*map(str, args)]


def tree(folder: Path) -> dict[str, bytes]:
    """Every output file except the run records (manifest: times, workers, executor)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _show(cmd: list, work: Path) -> str:
    return "pseudo-labels " + " ".join(map(str, cmd)).replace(str(work), "$WORK")


def _growth(rows: list[dict]) -> dict:
    """Largest minus smallest run, per memory figure."""
    return {key: round(rows[-1][key] - rows[0][key], 1) for key in ("vm_hwm_mib", "peak_anon_mib", "ru_maxrss_mib")}


def log(obj) -> None:
    print(json.dumps(obj), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/bench_scale.json")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed at the end)")
    p.add_argument("--size", type=int, nargs=2, default=[256, 512], metavar=("H", "W"))
    p.add_argument("--rss-images", type=int, nargs="+", default=[100, 500])
    p.add_argument("--throughput-images", type=int, nargs=2, default=[60, 360], metavar=("SMALL", "LARGE"),
                   help="images of the small and large semantic runs (--limit); generate-depth runs on "
                        "shard 0/(city/SMALL) and on the whole city")
    p.add_argument("--k", type=int, default=80)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_scale_"))
    city = work / "city"
    n_city = max(*args.rss_images, *args.throughput_images)
    t_start = time.time()
    results: dict = {}

    # ---- the synthetic city (resumes if already there)
    t0 = time.perf_counter()
    synth = pl("synth", "--out", city, "--n", n_city, "--size", *args.size, "--seed", 0, "--workers", args.workers)
    subprocess.run([sys.executable, "-m", "pseudo_labels.cli", *synth], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    results["synth"] = {"images": n_city, "size": args.size, "seconds": round(time.perf_counter() - t0, 1)}
    log(results["synth"])

    # ---- 1. peak RSS of the semantic stage vs the number of images
    base = measure(["--exec", IMPORTS])
    log({"imports_only": base})
    rss: dict = {"imports_only": {**base, "what": "a process that only imports torch, faiss, cv2, scipy and the "
                                              "stage modules"}}

    def semantic_row(n: int, sub: str, cmd: list, m: dict, baseline: float | None) -> dict:
        manifest = json.loads((city / sub / "val" / "manifest.json").read_text())
        sampling = manifest["fit_metadata"]["sampling"]
        row = {"n_images": n, **m, "images_per_s": round(n / m["wall_s"], 2), "fit_samples": sampling["n_samples"],
               "fit_budget": sampling["budget"], "per_image_max": sampling["per_image_max"],
               "command": _show(cmd, work)}
        if baseline is not None:
            row["vm_hwm_above_imports_mib"] = round(m["vm_hwm_mib"] - baseline, 1)
        log(row)
        return row

    # A: one process does it all (features on the fly, fit sample, fit, assignment, mapping)
    runs = []
    for n in args.rss_images:
        sub = f"rss_{n}"
        cmd = pl("generate-overclustered-semantics", "--cityscapes-root", city, "--split", "val", "--k", args.k,
                 "--backbone", "builtin", "--mapping", "majority", "--limit", n, "--output-subdir", sub,
                 "--workers", 1, "--overwrite")
        runs.append(semantic_row(n, sub, cmd, measure(cmd), base["vm_hwm_mib"]))
    rss["one_process"] = {
        "what": "generate-overclustered-semantics --backbone builtin: extract on the fly + fit sample + k-means fit "
                "+ assignment (default bilinear similarity upsampling) + majority mapping, --workers 1",
        "runs": runs, "growth_mib": _growth(runs)}

    # B: extract-features, then the semantic stage from the features folder (memory-mapped reads)
    ext, sem = [], []
    for n in args.rss_images:
        cmd = pl("extract-features", "--cityscapes-root", city, "--split", "val", "--backbone", "builtin",
                 "--limit", n, "--out", work / f"feats_{n}", "--workers", 1, "--overwrite")
        m = measure(cmd)
        ext.append({"n_images": n, **m, "images_per_s": round(n / m["wall_s"], 2), "command": _show(cmd, work)})
        log(ext[-1])
    for n in args.rss_images:
        sub = f"rss_feats_{n}"
        cmd = pl("generate-overclustered-semantics", "--cityscapes-root", city, "--split", "val", "--k", args.k,
                 "--features-dir", work / f"feats_{n}", "--upsample", "labels", "--mapping", "majority",
                 "--limit", n, "--output-subdir", sub, "--workers", 1, "--overwrite")
        sem.append(semantic_row(n, sub, cmd, measure(cmd), None))
    rss["from_features_dir"] = {
        "what": "extract-features (one process), then generate-overclustered-semantics --features-dir "
                "--upsample labels (fit sample + fit + assignment + mapping; this path imports no torch)",
        "extract_features": ext, "semantic": sem,
        "growth_mib": {"extract_features": _growth(ext), "semantic": _growth(sem)}}
    # C: the assignment of all images, three times over in one process: anonymous memory after every
    # 100 images (does the torch path keep anything per image, or only reach an allocator plateau?)
    loop = PLATEAU_LOOP.format(repo=str(REPO), city=str(city), feats=str(work / f"feats_{args.rss_images[-1]}"),
                               centroids=str(city / f"rss_{args.rss_images[-1]}" / "kmeans_centroids.npz"),
                               raw=str(work / "plateau_raw"), reps=3)
    r = subprocess.run([sys.executable, "-c", loop], capture_output=True, text=True, check=True, cwd=REPO)
    rss["assignment_loop_anon_mib"] = {
        "what": f"assign_batch (bilinear similarity upsampling, k={args.k}) over the {args.rss_images[-1]} images "
                "three times in one process, results dropped; RssAnon (MiB) after every 100 images",
        "samples": json.loads(r.stdout.strip().splitlines()[-1])}
    log({"assignment_loop_anon_mib": rss["assignment_loop_anon_mib"]["samples"]})
    results["semantic_stage_peak_rss"] = rss

    # ---- 2. throughput: local pool vs Ray (runs interleaved, so that load changes hit both)
    centroids = city / f"rss_{args.rss_images[-1]}" / "kmeans_centroids.npz"
    small, large = args.throughput_images
    depth_shards = max(2, round(n_city / small))
    n_depth_small = len(range(0, n_city, depth_shards))
    stages = {
        # name: ([(n_images, size flags)], command maker, output folder of a run)
        "generate-overclustered-semantics (load centroids: extract + assign + map per image)": (
            [(small, ["--limit", small]), (large, ["--limit", large])],
            lambda sub, flags: pl("generate-overclustered-semantics", "--cityscapes-root", city, "--split", "val",
                                  "--load-centroids", centroids, "--output-subdir", sub, "--batch-size", 1,
                                  "--overwrite", *flags),
            lambda sub: city / sub),
        "generate-depth (disparity -> depth .npy per image)": (
            [(n_depth_small, ["--shard", f"0/{depth_shards}"]), (n_city, [])],
            lambda sub, flags: pl("generate-depth", "--cityscapes-root", city, "--split", "val",
                                  "--source", "disparity", "--output-dir", work / sub, "--overwrite", *flags),
            lambda sub: work / sub),
    }
    executors = {"local pool": ["--workers", args.workers],
                 "ray (local instance)": ["--executor", "ray", "--workers", args.workers]}
    thr = {}
    for si, (stage, (sizes, make, folder)) in enumerate(stages.items()):
        runs: dict = {}
        for n, size_flags in sizes:
            for ei, (ex, flags) in enumerate(executors.items()):
                sub = f"thr_{si}_{ei}_{n}"
                m = measure(make(sub, [*size_flags, *flags]))
                runs[(ex, n)] = {"n_images": n, **m, "images_per_s": round(n / m["wall_s"], 2),
                                 "size_flags": size_flags, "output": folder(sub)}
                log({stage: {ex: {k_: v for k_, v in runs[(ex, n)].items() if k_ != "output"}}})
        rows: dict = {}
        (n_small, _), (n_large, _) = sizes
        for ex, flags in executors.items():
            r_small, r_large = runs[(ex, n_small)], runs[(ex, n_large)]
            dt = r_large["wall_s"] - r_small["wall_s"]
            rows[ex] = {
                "flags": flags,
                "small": {k_: v for k_, v in r_small.items() if k_ != "output"},
                "large": {k_: v for k_, v in r_large.items() if k_ != "output"},
                "marginal_images_per_s": round((n_large - n_small) / dt, 2) if dt > 0 else None,
                "fixed_startup_s_est": (round(r_small["wall_s"] - n_small * dt / (n_large - n_small), 2)
                                        if dt > 0 else None),
            }
        rows["outputs_byte_identical_local_vs_ray"] = all(
            tree(runs[("local pool", n)]["output"]) == tree(runs[("ray (local instance)", n)]["output"])
            for n, _ in sizes)
        rows["command_template"] = _show(make("OUT", ["<size flags>", "<executor flags>"]), work)
        thr[stage] = rows
        log({stage: {"byte_identical": rows["outputs_byte_identical_local_vs_ray"]}})
    thr["notes"] = ("wall_s is the whole command (imports, listing, pool or Ray start, all passes); "
                    "marginal_images_per_s = (large - small) / (wall_large - wall_small) removes the fixed part, "
                    "but is noisy when the per-image work is small against the start-up jitter (generate-depth). "
                    "Memory of a Ray run is the driver's only (Ray's workers are not its children).")
    results["throughput_local_vs_ray"] = thr

    out = {
        "what": __doc__.split("\n\n")[0],
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "note": "2 cores shared with other engineers' jobs during the run (see load_1min_*): "
                            "timings are noisy; memory figures are not affected"},
        "settings": {"image_size": args.size, "k": args.k, "backbone": "builtin", "workers": args.workers,
                     "feature_input": "322x644 (default), 23x46 patches, 37-d builtin features"},
        "results": results,
        "total_seconds": round(time.time() - t_start, 1),
        "command": "python " + " ".join(sys.argv),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print("wrote", args.out)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
