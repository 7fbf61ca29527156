"""Evidence for issue 8: does DEAL help CAM pseudo-labels on the synthetic city?

For every seed s: writes a synthetic city (train split, seed s) with the opt-in class
dropout (each class left out of each image with probability P, so image tags vary),
trains the CAM head on builtin-backbone features with tags from GT and depth from the
synthetic disparity (training seed s), and sweeps DEAL weight x background threshold
with :func:`pseudo_labels.stages.weak.sweep.sweep_cam`. The rows of all seeds
are summarised together (mean and sample std over seeds, each DEAL weight at its best
background threshold) and written to ``reports/weak_deal.json`` (+ ``.csv``, heatmap PNG)
and ``reports/weak_deal.md``. ``--compare-dropout 0`` repeats the sweep on the city
without class dropout (every class in every image: the earlier, tag-poor setting).

    python benchmarks/deal_evidence.py [--images 48] [--seeds 0,1,2] [--class-dropout 0.5]

Torch runs single-threaded (``--threads``): the model is tiny and on a shared 2-core
machine more threads only wait on each other.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pseudo_labels.core import defaults  # noqa: E402


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def tag_statistics(tags: np.ndarray, names) -> dict:
    """Share of images tagged with each class and tags per image, for (N, C) multi-hot tags."""
    frac = tags.mean(axis=0)
    return {"images": int(tags.shape[0]), "tags_per_image": float(tags.sum(1).mean()),
            "share_tagged": {n: float(f) for n, f in zip(names, frac)},
            "classes_in_every_image": [n for n, f in zip(names, frac) if f == 1.0],
            "classes_never_tagged": [n for n, f in zip(names, frac) if f == 0.0]}


def edge_statistics(gts, depths, depth_edges, step: float = 0.05) -> dict:
    """How DEAL's depth edges relate to the GT class boundaries.

    ``coplanar_boundary_share``: at full resolution, the share of 4-neighbour pixel pairs with two
    different (non-void) GT classes whose depths differ by less than ``step`` (relative): class
    boundaries without a depth step, which DEAL cannot see. At the CAM grid (GT nearest-downsampled;
    a cell is a boundary when a 4-neighbour has another non-void class): ``edge_share_boundary`` /
    ``edge_share_interior``, the share of boundary / interior cells that are depth edges (d' > 0;
    with mu = 2.5 any gradient above ~7.6 % of the image's largest counts). DEAL asks the class maps
    to have edges wherever d' > 0, so interior depth edges pull the other way.
    """
    import cv2

    def boundary(g):
        b = np.zeros(g.shape, bool)
        pairs = []
        for a, c, sl_a, sl_c in ((g[:, 1:], g[:, :-1], np.s_[:, 1:], np.s_[:, :-1]),
                                 (g[1:, :], g[:-1, :], np.s_[1:, :], np.s_[:-1, :])):
            diff = (a != c) & (a != 255) & (c != 255)
            b[sl_a] |= diff
            b[sl_c] |= diff
            pairs.append((diff, sl_a, sl_c))
        return b, pairs

    coplanar, eb, ei = [], [], []
    for gt, depth, d in zip(gts, depths, depth_edges):
        g = gt.astype(np.int32)
        _, pairs = boundary(g)
        n = flat = 0
        for diff, sl_a, sl_c in pairs:
            za, zc = depth[sl_a][diff], depth[sl_c][diff]
            rel = np.abs(za - zc) / np.maximum(np.minimum(za, zc), 1e-6)
            n += diff.sum()
            flat += int((rel < step).sum())
        coplanar.append(flat / max(n, 1))
        h, w = d.shape[-2:]
        gg = cv2.resize(gt, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int32)
        b, _ = boundary(gg)
        valid = gg != 255
        e = d.reshape(h, w) > 0
        eb.append(float((e & b).sum() / max(b.sum(), 1)))
        ei.append(float((e & ~b & valid).sum() / max((~b & valid).sum(), 1)))
    return {"coplanar_boundary_share": float(np.mean(coplanar)), "edge_share_boundary": float(np.mean(eb)),
            "edge_share_interior": float(np.mean(ei)), "relative_depth_step": step}


def run_setting(args, class_dropout: float, tags_min_pixels: int, tmp: Path, log) -> dict:
    """Sweep of one setting (class dropout, tag threshold) over all seeds; rows of every seed + summary +
    diagnostics."""
    from pseudo_labels.datasets.cityscapes import gt_path, list_images
    from pseudo_labels.stages.weak.sweep import summarize_cam_sweep, sweep_cam
    from pseudo_labels.core.io import read_png
    from pseudo_labels.datasets.synthetic_city import write_synthetic_city
    from pseudo_labels.stages.weak.inputs import depth_edges_for, load_depth, load_tags
    from pseudo_labels.stages.weak.training import train_cam_run
    from pseudo_labels.stages.weak.tags import class_names

    names = class_names("cityscapes")
    rows, tags_all, edges = [], [], []
    sweeps = []
    for s in args.seed_list:
        root = tmp / f"city_p{class_dropout:g}_s{s}"  # the city does not depend on the tag threshold
        write_synthetic_city(root, args.images, seed=s, size=tuple(args.size), split="train",
                             class_dropout=class_dropout)
        run = tmp / f"run_p{class_dropout:g}_t{tags_min_pixels}_s{s}"
        train_cam_run(root, "train", run, tags_from_gt=True, tags_min_pixels=tags_min_pixels,
                      backbone="builtin", input_size=tuple(args.input_size), depth_subdir="disparity",
                      depth_transform=args.depth_transform, deal_weight=0.0, epochs=args.epochs, lr=args.lr,
                      hidden=args.hidden, pooling=args.pooling, batch_size=args.batch_size, seed=s)
        res = sweep_cam(run, root, "train", deal_weights=args.weight_list, bg_thresholds=args.threshold_list,
                        seeds=[s], tags_from_gt=True, depth_subdir="disparity", out_json=run / "cam_sweep.json",
                        log=lambda m, s=s: log(f"class dropout {class_dropout:g}, tags >= {tags_min_pixels} px, "
                                               f"city {s}: {m}"))
        rows += res["results"]
        sweeps.append(res)
        entries = list_images(root, "train")
        tags_all.append(load_tags(root, entries, tags_from_gt=True, min_pixels=tags_min_pixels))
        gts = [read_png(gt_path(root, e, "labelTrainIds")) for e in entries]
        grid = tuple(res["feature_grid"])
        edges.append(edge_statistics(gts, [load_depth(root, e, "disparity") for e in entries],
                                     depth_edges_for(root, entries, "disparity", grid, transform=args.depth_transform)))
    out = {"class_dropout": class_dropout, "tags_min_pixels": tags_min_pixels, "results": rows,
           **summarize_cam_sweep(rows),
           "tag_statistics": tag_statistics(np.concatenate(tags_all), names),
           "depth_edge_statistics": {k: float(np.mean([e[k] for e in edges])) for k in edges[0]},
           "sweep_meta": {k: sweeps[0][k] for k in ("label_space", "depth_subdir", "depth_transform", "backbone",
                                                    "input_size", "feature_grid", "train_config", "tags_min_pixels")}}
    return out


def per_seed_best(rows, weight: float) -> dict:
    """{seed: row} of ``weight`` at the background threshold that is best on average for that weight."""
    ts = sorted({r["bg_threshold"] for r in rows})
    mean = {t: np.mean([r["mIoU"] for r in rows if r["deal_weight"] == weight and r["bg_threshold"] == t]) for t in ts}
    t_best = max(ts, key=lambda t: mean[t])
    return {r["seed"]: r for r in rows if r["deal_weight"] == weight and r["bg_threshold"] == t_best}


def compare(setting: dict) -> dict:
    """DEAL off vs the best DEAL weight > 0 (each at its best background threshold): means, per-seed differences."""
    per_w = setting["best_per_deal_weight"]
    off = per_w.get("0")
    on_candidates = [v for k, v in per_w.items() if float(k) > 0]
    if off is None or not on_candidates:
        return {}
    on = max(on_candidates, key=lambda r: r["mIoU_mean"])
    a = per_seed_best(setting["results"], 0.0)
    b = per_seed_best(setting["results"], on["deal_weight"])
    diffs = {int(s): b[s]["mIoU"] - a[s]["mIoU"] for s in sorted(a) if s in b}
    d = np.array(list(diffs.values()))
    spread = max(off["mIoU_std"], on["mIoU_std"])
    mean_diff = float(on["mIoU_mean"] - off["mIoU_mean"])
    if mean_diff > spread and (d > 0).all():
        verdict = "DEAL helps here"
    elif mean_diff < -spread and (d < 0).all():
        verdict = "DEAL hurts here"
    else:
        verdict = "no clear effect of DEAL here (difference within the seed spread, or not the same sign for every seed)"
    return {"off": off, "best_on": on, "difference": mean_diff, "per_seed_difference": diffs,
            "spread": spread, "verdict": verdict}


def per_class_table(setting: dict, cmp: dict, names) -> list[str]:
    def mean_iou(weight):
        rows = per_seed_best(setting["results"], weight).values()
        out = {}
        for n in names:
            v = [r.get("per_class_iou", {}).get(n) for r in rows]
            v = [x for x in v if x is not None]
            out[n] = float(np.mean(v)) if v else None
        return out

    a, b = mean_iou(0.0), mean_iou(cmp["best_on"]["deal_weight"])
    share = setting["tag_statistics"]["share_tagged"]
    lines = [f"| class | share of images tagged | IoU, DEAL off | IoU, DEAL {cmp['best_on']['deal_weight']:g} |",
             "|---|---|---|---|"]
    fmt = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
    for n in names:
        if a[n] is None and b[n] is None:
            continue
        lines.append(f"| {n} | {share[n]:.2f} | {fmt(a[n])} | {fmt(b[n])} |")
    return lines


def render_markdown(result: dict) -> str:
    """The report (markdown) from the benchmark's JSON result; every number is read from ``result``."""
    from pseudo_labels.stages.weak.tags import class_names

    names = class_names("cityscapes")
    st = result["setup"]
    weights, thresholds = result["deal_weights"], result["bg_thresholds"]
    main_setting = result
    cmp_main = result.get("comparison_deal") or {}
    others = result.get("comparison_settings", [])
    main_label = f"class dropout {st['class_dropout']:g}, tags >= {st['tags_min_pixels']} px"

    def best_table(setting):
        lines = ["| DEAL weight | best bg threshold | mIoU mean | std (seeds) | min | max | per seed |",
                 "|---|---|---|---|---|---|---|"]
        for w in sorted(setting["best_per_deal_weight"], key=float):
            srow = setting["best_per_deal_weight"][w]
            per_seed = per_seed_best(setting["results"], float(w))
            seeds = ", ".join(f"{per_seed[k]['mIoU']:.1f}" for k in sorted(per_seed))
            lines.append(f"| {float(w):g} | {srow['bg_threshold']:g} | {srow['mIoU_mean']:.2f} | "
                         f"{srow['mIoU_std']:.2f} | {srow['mIoU_min']:.2f} | {srow['mIoU_max']:.2f} | {seeds} |")
        return lines

    def grid_table(setting):
        lines = ["| DEAL weight \\ bg threshold | " + " | ".join(f"{t:g}" for t in thresholds) + " |",
                 "|---|" + "---|" * len(thresholds)]
        for w in weights:
            cells = []
            for t in thresholds:
                c = next((x for x in setting["summary"] if x["deal_weight"] == w and x["bg_threshold"] == t), None)
                cells.append("-" if c is None else f"{c['mIoU_mean']:.2f} ± {c['mIoU_std']:.2f}")
            lines.append(f"| {w:g} | " + " | ".join(cells) + " |")
        return lines

    def per_seed_text(c):
        return ", ".join(f"{v:+.2f}" for _, v in sorted((int(k), v) for k, v in c["per_seed_difference"].items()))

    def verdict_line(c):
        if not c:
            return "No DEAL weight > 0 in the sweep."
        return (f"Best DEAL weight {c['best_on']['deal_weight']:g} (bg threshold {c['best_on']['bg_threshold']:g}) "
                f"gives {c['best_on']['mIoU_mean']:.2f} ± {c['best_on']['mIoU_std']:.2f} vs "
                f"{c['off']['mIoU_mean']:.2f} ± {c['off']['mIoU_std']:.2f} without DEAL (bg threshold "
                f"{c['off']['bg_threshold']:g}): difference {c['difference']:+.2f} (per seed {per_seed_text(c)}); "
                f"{c['verdict']}.")

    settings = [(main_label + " (main)", main_setting)] + [
        (f"class dropout {o['class_dropout']:g}, tags >= {o['tags_min_pixels']} px", o) for o in others]
    summary_lines = ["| setting | DEAL off (mIoU, bg thr.) | best DEAL (weight: mIoU, bg thr.) | difference | "
                     "per seed | verdict |", "|---|---|---|---|---|---|"]
    verdicts = []
    for lab, sett in settings:
        c = sett.get("comparison_deal") or {}
        if not c:
            continue
        verdicts.append(c["verdict"])
        summary_lines.append(
            f"| {lab} | {c['off']['mIoU_mean']:.2f} ± {c['off']['mIoU_std']:.2f} ({c['off']['bg_threshold']:g}) | "
            f"{c['best_on']['deal_weight']:g}: {c['best_on']['mIoU_mean']:.2f} ± {c['best_on']['mIoU_std']:.2f} "
            f"({c['best_on']['bg_threshold']:g}) | {c['difference']:+.2f} | {per_seed_text(c)} | {c['verdict']} |")
    informative = [sett["comparison_deal"] for _, sett in settings
                   if sett.get("comparison_deal") and sett["class_dropout"] > 0]
    if len(set(verdicts)) > 1:
        overall = "The verdict differs between settings, so the effect of DEAL measured here is not robust to the setting."
        if len(informative) > 1:
            offs = [c["off"]["mIoU_mean"] for c in informative]
            ons = [c["best_on"]["mIoU_mean"] for c in informative]
            overall += (f" With informative tags (class dropout > 0) the DEAL-off mIoU ranges from {min(offs):.2f} to "
                        f"{max(offs):.2f} over the settings and the best DEAL-on mIoU from {min(ons):.2f} to "
                        f"{max(ons):.2f}.")
    elif verdicts:
        overall = f"The verdict is the same in every setting measured: {verdicts[0]}."
    else:
        overall = ""

    ts_main = main_setting["tag_statistics"]
    es = main_setting["depth_edge_statistics"]
    grid = result.get("feature_grid") or ["?", "?"]
    heat = Path(result["heatmap"]).name if result.get("heatmap") else "-"
    lines = [
        "# Weakly-supervised CAM pseudo-labels: does DEAL help? (issue 8)",
        "",
        "Generated by `benchmarks/deal_evidence.py`; every number below comes from its output "
        f"(`weak_deal.json`, `weak_deal.csv`, `{heat}`).",
        "",
        "## Summary",
        "",
        f"mIoU (%) of CAM pseudo-labels against GT, mean ± sample std over {len(result['seeds'])} seeds; each DEAL "
        "weight at its best "
        "background threshold; \"best DEAL\" = the best weight > 0.",
        "",
        *summary_lines,
        "",
        overall,
        "",
        "## Setup",
        "",
        f"- Data: for each seed s, a synthetic city of {st['images_per_city']} train images at "
        f"{st['image_size'][0]}x{st['image_size'][1]} (`pseudo-labels synth --seed s --class-dropout "
        f"{st['class_dropout']:g}`): each class is left out of each image with probability {st['class_dropout']:g}, "
        f"so image tags vary ({ts_main['tags_per_image']:.1f} tags per image on average).",
        f"- Tags from GT (classes with >= {st['tags_min_pixels']} px): uses ground truth, recorded in every manifest. "
        "Pseudo-labels are made for the same tagged training images (the usual WSSS protocol) and scored against "
        "gtFine trainIds; background (CAM score <= threshold) is void and counts as a miss.",
        f"- CAM model: frozen builtin backbone at {st['input_size'][0]}x{st['input_size'][1]} "
        f"({grid[0]}x{grid[1]} patch grid), head 1x1 conv ({st['hidden']}) - ReLU - 1x1 conv, "
        f"{st['pooling']} pooling, multi-label soft margin, AdamW lr {st['lr']:g}, {st['epochs']} epochs, batch "
        f"{st['batch_size']}. CAMs: ReLU, per-image per-class max normalisation, bilinear upsampling, "
        "background score = threshold, argmax over the image's tags.",
        f"- DEAL: the paper's loss (mu = {st['deal_mu']:g}) on the class maps against {st['depth']}, "
        f"weights {', '.join(f'{w:g}' for w in weights)}.",
        f"- Seeds {', '.join(map(str, result['seeds']))}: {st['seed_meaning']}, so the spread includes the data. "
        "std = sample standard deviation over seeds. Each DEAL weight is shown at the background threshold that is "
        "best for it on average.",
        "",
        f"Command: `{result['command']}` ({result['seconds_total']:.0f} s on CPU, torch threads "
        f"{st['torch_threads']}, a shared 2-core machine).",
        "",
        f"## Main setting: {main_label}",
        "",
        *best_table(main_setting),
        "",
        verdict_line(cmp_main),
        "",
        "Mean ± std over seeds for every cell:",
        "",
        *grid_table(main_setting),
        "",
    ]
    for o in others:
        to = o["tag_statistics"]
        lines += [
            f"## Same pipeline, {o['label']}",
            "",
            f"Class dropout {o['class_dropout']:g}, tags = classes with >= {o['tags_min_pixels']} px: "
            f"{to['tags_per_image']:.1f} tags per image; classes in every image: "
            f"{', '.join(to['classes_in_every_image']) or 'none'}; never tagged: "
            f"{', '.join(to['classes_never_tagged']) or 'none'}.",
            "",
            *best_table(o),
            "",
            verdict_line(o["comparison_deal"]),
            "",
        ]
    if cmp_main:
        lines += [f"## Per class ({main_label}, mean over seeds)", "",
                  *per_class_table(main_setting, cmp_main, names), ""]
    lines += ["## Why", ""]
    no_drop = next((o for o in others if o["class_dropout"] == 0 and o["tags_min_pixels"] == st["tags_min_pixels"]
                    and o["comparison_deal"]), None)
    if no_drop and cmp_main:
        lines += [
            f"- Tags: without class dropout the DEAL-off mIoU is {no_drop['comparison_deal']['off']['mIoU_mean']:.2f}, "
            f"with class dropout {st['class_dropout']:g} it is {cmp_main['off']['mIoU_mean']:.2f}, same pipeline. "
            "When a class is in every image its tag carries no localisation: the classifier meets it with a map that "
            "is positive everywhere, and after the per-class max normalisation such flat maps win the argmax by "
            "noise. That, not the normalisation, background rule or upsampling, was the cause of the earlier "
            "near-zero mIoU.",
        ]
    lines += [
        f"- Depth edges vs class boundaries ({main_label}): "
        f"{100 * es['coplanar_boundary_share']:.0f} % of GT class-boundary pixel pairs have no depth step "
        f"(< {100 * es['relative_depth_step']:.0f} % relative: road | sidewalk | terrain, objects against the ground "
        "at their foot, facades and the walls and fences along them), so DEAL cannot place those boundaries. At "
        f"the CAM grid {100 * es['edge_share_boundary']:.0f} % of class-boundary cells but also "
        f"{100 * es['edge_share_interior']:.0f} % of the cells inside a class region are depth edges (d' > 0: the "
        "ground plane and the facades receding along the street have a depth gradient), and DEAL asks every "
        "tagged class map to have edges there too. Both limit what DEAL can contribute on street scenes.",
        "- Caveats: synthetic scenes and a hand-made (not learned) backbone; the best DEAL weight is picked on the "
        "same runs it is scored on (a small optimistic bias for DEAL), and the CAM head settings (hidden width, "
        "pooling, lr, image count, class dropout) were chosen during development by DEAL-off mIoU on these same "
        "seeds; the comparison settings show how much the verdict depends on such choices. This measures DEAL's "
        "effect here, not a Cityscapes number.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=48, help="images per synthetic city (default 48)")
    ap.add_argument("--size", type=int, nargs=2, default=[256, 512], metavar=("H", "W"))
    ap.add_argument("--input-size", type=int, nargs=2, default=[322, 644], metavar=("H", "W"),
                    help="builtin backbone input size (default 322 644: a 23x46 CAM grid)")
    ap.add_argument("--class-dropout", type=float, default=0.5)
    ap.add_argument("--compare-dropout", type=float, default=None,
                    help="also run this class dropout (e.g. 0: every class in every image)")
    ap.add_argument("--compare-tags-min-pixels", type=int, default=None,
                    help="also run the main class dropout with this tag threshold (sensitivity of the result)")
    ap.add_argument("--epochs", type=int, default=defaults.CAM_EPOCHS)
    ap.add_argument("--lr", type=float, default=defaults.CAM_LR)
    ap.add_argument("--hidden", type=int, default=defaults.CAM_HIDDEN)
    ap.add_argument("--pooling", default=defaults.CAM_POOLING)
    ap.add_argument("--batch-size", type=int, default=defaults.CAM_BATCH_SIZE)
    ap.add_argument("--seeds", default="0,1,2", help="seed s = synthetic city seed s and training seed s")
    ap.add_argument("--deal-weights", default=",".join(f"{w:g}" for w in defaults.SWEEP_DEAL_WEIGHTS))
    ap.add_argument("--bg-thresholds", default=",".join(f"{t:g}" for t in defaults.SWEEP_CAM_BG_THRESHOLDS))
    ap.add_argument("--tags-min-pixels", type=int, default=defaults.CAM_TAGS_MIN_PIXELS)
    ap.add_argument("--depth-transform", default="none", choices=("none", "log", "inverse"))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--out-json", default=str(ROOT / "reports" / "weak_deal.json"))
    ap.add_argument("--out-md", default=str(ROOT / "reports" / "weak_deal.md"))
    ap.add_argument("--render-only", action="store_true",
                    help="only rewrite --out-md from the existing --out-json (no runs)")
    args = ap.parse_args(argv)
    if args.render_only:
        import json

        text = render_markdown(json.loads(Path(args.out_json).read_text()))
        Path(args.out_md).write_text(text)
        print(text)
        return 0
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    args.weight_list = _floats(args.deal_weights)
    args.threshold_list = _floats(args.bg_thresholds)

    import torch

    torch.set_num_threads(max(1, args.threads))
    from pseudo_labels.stages.weak.sweep import write_cam_sweep

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    command = "python benchmarks/deal_evidence.py" + "".join(
        " " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    t0 = time.time()
    variants = []  # (label, class dropout, tags min pixels) of the comparison settings
    if args.compare_dropout is not None:
        variants.append((f"class dropout {args.compare_dropout:g}", args.compare_dropout, args.tags_min_pixels))
    if args.compare_tags_min_pixels is not None:
        variants.append((f"tags >= {args.compare_tags_min_pixels} px", args.class_dropout,
                         args.compare_tags_min_pixels))
    with tempfile.TemporaryDirectory() as tmp:
        main_setting = run_setting(args, args.class_dropout, args.tags_min_pixels, Path(tmp), log)
        others = [{"label": lab, **run_setting(args, p, t, Path(tmp), log)} for lab, p, t in variants]
    seconds = round(time.time() - t0, 1)
    cmp_main = compare(main_setting)
    meta = main_setting.pop("sweep_meta")
    for o in others:
        o.pop("sweep_meta")
        o["comparison_deal"] = compare(o)
        for r in o["results"]:  # per-class IoU is kept for the main setting's rows only
            r.pop("per_class_iou", None)
    result = {
        "what": "mIoU of CAM pseudo-labels on the synthetic city, DEAL weight x background threshold, over seeds",
        "command": command, "seconds_total": seconds,
        "split": "train", "tags": "ground truth", "train_tags": "ground truth", "uses_ground_truth": True,
        "seeds": args.seed_list, "deal_weights": args.weight_list, "bg_thresholds": args.threshold_list,
        **meta,
        "setup": {"images_per_city": args.images, "image_size": args.size, "input_size": args.input_size,
                  "class_dropout": args.class_dropout, "epochs": args.epochs, "lr": args.lr, "hidden": args.hidden,
                  "pooling": args.pooling, "batch_size": args.batch_size, "tags_min_pixels": args.tags_min_pixels,
                  "depth": "synthetic disparity -> metric depth (transform: " + args.depth_transform + ")",
                  "deal_mu": 2.5, "seed_meaning": "seed s = synthetic city seed s and training seed s",
                  "torch_threads": args.threads, "python": platform.python_version(),
                  "torch": torch.__version__},
        **main_setting,
        "comparison_deal": cmp_main,
        "comparison_settings": others,
    }
    result = write_cam_sweep(result, args.out_json)

    text = render_markdown(result)
    Path(args.out_md).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
