"""Seconds per image of each stage of the default ``run`` at Cityscapes' 2048x1024, on CPU.

A synthetic city written exactly as the official zips unpack (``synth --layout official``,
1024x2048, ``--n`` images of split val) is run with the printed default config
(``run --print-config``: builtin backbone, k = 80, disparity depth, depth-edge instances at half
the image size, panoptic, evaluation with the ground truth prepared by cityscapesscripts,
sweep, COCO export, overlays, report), one worker, so each stage's time over the images is its
cost per image on one core. Then one DINOv2 ViT-B/14 forward (timm, random weights, no
download) on the reference's inputs: one 322x322 crop (the CAUSE-TR sliding window; the
reference runs 3 windows x 2 flips per image) and the whole 322x644 image. Projections to the
500 val and 2975 train images multiply the per-image seconds (whole-split steps such as the
k-means fit do not grow linearly; they are small here).

    python benchmarks/bench_run_fullres.py --n 4 --out benchmarks/results/bench_run_fullres.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

VAL, TRAIN = 500, 2975


def run_default(n: int, workdir: Path) -> dict:
    from pseudo_labels import cli
    from pseudo_labels.stages import pipeline

    root = workdir / "cityscapes"
    assert cli.main(["synth", "--out", str(root), "--n", str(n), "--size", "1024", "2048", "--split", "val"]) == 0
    text = pipeline.default_config_text().replace('root = "cityscapes"', f'root = "{root}"')
    text = text.replace("workers = 2 ", "workers = 1 ")
    (workdir / "p.toml").write_text(text)
    t0 = time.perf_counter()
    result = pipeline.run_pipeline(pipeline.load_pipeline_config(workdir / "p.toml"), log=lambda s: None)
    total = time.perf_counter() - t0
    stages = {s.name: round(s.seconds / n, 3) for s in result.steps}
    return {"images": n, "size": [1024, 2048], "seconds_per_image": stages,
            "total_seconds_per_image": round(total / n, 3), "PQ": round(result.evaluation["PQ"], 2)}


def vit_forward() -> dict:
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch14_dinov2", pretrained=False, img_size=518, dynamic_img_size=True)
    model.eval()
    out = {}
    for name, (h, w) in {"crop_322x322": (322, 322), "image_322x644": (322, 644)}.items():
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            model.forward_features(x)  # warm-up
            t0 = time.perf_counter()
            reps = 3
            for _ in range(reps):
                model.forward_features(x)
        out[name] = round((time.perf_counter() - t0) / reps, 3)
    out["threads"] = torch.get_num_threads()
    # the reference's CAUSE-TR path per image: 3 windows x (image + flipped image)
    out["cause_windows_per_image"] = round(6 * out["crop_322x322"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4, help="images (default 4)")
    ap.add_argument("--out", default=None, help="JSON with the figures")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = run_default(args.n, Path(tmp))
    res["vit_b14_forward_seconds"] = vit_forward()
    per = dict(res["seconds_per_image"])
    per["ViT-B/14 CAUSE windows (6 forwards)"] = res["vit_b14_forward_seconds"]["cause_windows_per_image"]
    res["projected_hours"] = {name: {"val_500": round(s * VAL / 3600, 2), "train_2975": round(s * TRAIN / 3600, 2)}
                              for name, s in per.items()}
    res["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
