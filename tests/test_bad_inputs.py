"""The bad-input suite (issue 24): every command against a shared set of bad inputs.

For each case: exit status 2, exactly one line on stderr naming the problem and no traceback,
every input byte-identical afterwards, and nothing written outside the case's output folder.
Bad inputs: truncated / zero-byte / wrong-format images, NaN maps, wrong sizes, ``../`` names,
absolute JSON paths, output = input, an output folder whose parent is a file, read-only and
full output folders (a read-only / 64 KiB tmpfs in a user namespace; skipped where
``unshare`` cannot mount one), crafted pickle checkpoints (a marker file proves nothing ran),
non-finite and out-of-range numbers. Numeric parameters of the typed configs also go through
``hypothesis``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pseudo_labels.cli import main
from pseudo_labels.core import io
from pseudo_labels.datasets import cityscapes

SIZE = (64, 128)
MARKER_NAME = "CHECKPOINT_CODE_RAN"


# --------------------------------------------------------------------------- the shared inputs
class _Evil:
    """Unpickling this object would create the marker file: proof that code from a checkpoint ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Valid inputs of every command, built once: a 2-image synthetic city (64x128) with semantic
    maps, depth, instances, panoptic PNG + JSON; a synthetic RGB-T set with features and a DARTS run;
    and the bad files (crafted checkpoint, truncated / zero-byte / non-PNG images, NaN depth)."""
    from pseudo_labels.datasets.synthetic_city import write_synthetic_city
    from tests.rgbt_fixtures import small_darts_run

    torch.set_num_threads(1)
    w = tmp_path_factory.mktemp("bad_inputs_world")
    r = w / "city"
    write_synthetic_city(r, 2, seed=0, size=SIZE, split="val")
    for e in cityscapes.list_images(r, "val"):
        io.write_png(r / "sem" / "val" / e.city / f"{e.stem}.png", cityscapes.read_gt_train_ids(r, e))
    ok = [main(a + ["--workers", "1"]) for a in (
        ["generate-depth", "--cityscapes-root", str(r), "--source", "disparity", "--output-subdir", "depth"],
        ["generate-depth-guided-instances", "--semantic-dir", str(r / "sem/val"), "--depth-dir", str(r / "depth/val"),
         "--output-dir", str(w / "inst"), "--resolution", "64", "128", "--min-area", "20"],
        ["generate-panoptic", "--semantic-dir", str(r / "sem/val"), "--instance-dir", str(w / "inst"),
         "--out-json", str(w / "pan.json"), "--out-folder", str(w / "pan")])]
    assert ok == [0, 0, 0]
    assert main(["sweep", "--cityscapes-root", str(r), "--semantic-subdir", "sem", "--depth-subdir", "depth",
                 "--grad-thresholds", "0.1", "--min-areas", "20", "--resolution", "64", "128",
                 "--out", str(w / "sweep" / "sweep.json")]) == 0
    mf = w / "rgbt"
    small_darts_run(mf, SIZE, n=2, input_size=(28, 56), steps=1, width=8, code_dim=4)
    bad = w / "bad"
    bad.mkdir()
    torch.save({"head": _Evil(str(w / MARKER_NAME)), "config": {}}, bad / "evil.pt")
    shutil.copytree(mf / "run", bad / "evil_darts_run")
    shutil.copy(bad / "evil.pt", bad / "evil_darts_run" / "darts_head.pt")
    (bad / "evil_cause").mkdir()
    for n in ("dinov2_vitb14_pretrain.pth", "segment_tr.pth", "cluster_tr.pth", "modular.npy"):
        shutil.copy(bad / "evil.pt", bad / "evil_cause" / n)
    np.save(bad / "nan_depth.npy", np.full(SIZE, np.nan, np.float32))
    (bad / "sweep_wrong_types.json").write_text(json.dumps({"split": "val", "results": [{"PQ": "high", "grad_threshold": []}]}))
    (bad / "not_json.json").write_text("{not json")
    assert main(["extract-features", "--cityscapes-root", str(r), "--out", str(w / "feats"), "--workers", "1",
                 "--input-size", "28", "56"]) == 0
    return w


def _nan_first_npy(folder: Path) -> Path:
    f = sorted(folder.rglob("*.npy"))[0]
    a = np.load(f)
    a.flat[7] = np.nan
    np.save(f, a)
    return folder


def _nan_features_semantics(world: Path, case: Path) -> list[str]:
    r = _city_copy(world, case)
    feats = case / "feats"
    shutil.copytree(world / "feats", feats)
    _nan_first_npy(feats)
    return ["generate-overclustered-semantics", "--cityscapes-root", str(r), "--features-dir", str(feats),
            "--k", "3", "--output-subdir", "s", "--workers", "1"]


def _images(root: Path) -> list[Path]:
    return sorted((root / "leftImg8bit").rglob("*.png"))


def _city_copy(world: Path, case: Path, damage: str | None = None) -> Path:
    """A copy of the city for cases that damage it: ``truncated`` / ``zero`` / ``notpng`` first image,
    ``nan_depth`` / ``small_sem`` (32x64 semantic map beside 64x128 depth) / ``sem_200`` (class id 200)."""
    r = case / "city"
    shutil.copytree(world / "city", r)
    first = _images(r)[0]
    stem = cityscapes.stem_of(first)
    if damage == "truncated":
        first.write_bytes(first.read_bytes()[:60])
    elif damage == "zero":
        first.write_bytes(b"")
    elif damage == "notpng":
        first.write_bytes(b"GIF89a this is not a PNG at all")
    elif damage == "nan_depth":
        d = next((r / "depth" / "val").rglob(f"{stem}*.npy"))
        a = np.load(d)
        a[3, 5] = np.nan
        np.save(d, a)
    elif damage in ("small_sem", "sem_200"):
        s = next((r / "sem" / "val").rglob(f"{stem}*.png"))
        if damage == "small_sem":
            io.write_png(s, np.zeros((32, 64), np.uint8))
        else:
            a = io.read_png(s)
            a[0, 0] = 200
            io.write_png(s, a)
    return r


def _json_with_absolute_file_name(world: Path, case: Path) -> Path:
    data = json.loads((world / "pan.json").read_text())
    outside = case / "elsewhere.png"
    shutil.copy(next((world / "pan").rglob("*.png")), outside)
    data["annotations"][0]["file_name"] = str(outside)
    p = case / "abs.json"
    p.write_text(json.dumps(data))
    return p


# --------------------------------------------------------------------------- the cases
# (id, argv builder (world, case folder) -> argv, regex the error line must match); the output
# folder of each case is ``case / "out"`` (or a file inside it), the only place writes may go.
def _gt(w):
    j, f = cityscapes.panoptic_gt(w / "city", "val")
    return ["--gt-json", str(j), "--gt-folder", str(f)]


def _pred(w):
    return ["--pred-json", str(w / "pan.json"), "--pred-folder", str(w / "pan")]


def _inst(w, c, extra=(), sem=None, depth=None):
    return ["generate-depth-guided-instances", "--semantic-dir", str(sem or w / "city/sem/val"),
            "--depth-dir", str(depth or w / "city/depth/val"), "--output-dir", str(c / "out"),
            "--resolution", "64", "128", *extra]


def _sweep(w, c, extra=(), root=None):
    return ["sweep", "--cityscapes-root", str(root or w / "city"), "--semantic-subdir", "sem", "--depth-subdir", "depth",
            "--resolution", "64", "128", "--min-areas", "20", "--out", str(c / "out" / "s.json"), *extra]


def _cam(w, c, extra=()):
    return ["generate-cam-pseudolabels", "--run", str(w / "bad/evil.pt"), "--cityscapes-root", str(w / "city"),
            "--split", "val", "--output-subdir", "cam_out", *extra]


def _features(w, c, extra=(), root=None):
    return ["extract-features", "--cityscapes-root", str(root or w / "city"), "--out", str(c / "out"), "--workers", "1",
            "--input-size", "28", "56", *extra]


def _rgbt(w):
    return ["--data-root", str(w / "rgbt/data"), "--split", "test"]


CASES = [
    # --- crafted pickle checkpoints, through every loader
    ("ckpt-cam", lambda w, c: _cam(w, c), r"evil.pt: CAM checkpoint refused: it names Python objects"),
    ("ckpt-crm", lambda w, c: ["generate-crm-pseudolabels", "--run", str(w / "bad/evil.pt"), "--output-dir", str(c / "out")],
     r"evil.pt: CRM checkpoint refused"),
    ("ckpt-darts", lambda w, c: ["generate-darts-semantics", *_rgbt(w), "--run", str(w / "bad/evil_darts_run"),
                                 "--features", str(w / "rgbt/feats"), "--out", str(c / "out")],
     r"darts_head.pt: DARTS checkpoint refused"),
    ("ckpt-dinov2", lambda w, c: _features(w, c, ["--backbone", "dinov2_vits14", "--weights", str(w / "bad/evil.pt")]),
     r"evil.pt: .*checkpoint refused"),
    ("ckpt-cause", lambda w, c: ["generate-semantic-pseudolabels-cause", "--cityscapes-root", str(w / "city"),
                                 "--checkpoint-dir", str(w / "bad/evil_cause"), "--output-dir", str(c / "out"),
                                 "--split", "val"], r"evil_cause/.*\.pth: .*(refused|not a readable)"),
    ("ckpt-crm-backbone", lambda w, c: ["train-crm", *_rgbt(w), "--dataset", "mfnet", "--labels", "gt",
                                        "--backbone", "resnet18", "--backbone-weights", str(w / "bad/evil.pt"),
                                        "--out", str(c / "out"), "--epochs", "1"], r"evil.pt: .*refused"),
    # --- output = input (and inside / containing the input)
    ("same-dynaseg", lambda w, c: ["generate-dynaseg-segments", "--images", str(w / "city/leftImg8bit/val"),
                                   "--out", str(w / "city/leftImg8bit/val")], r"inputs are never written"),
    ("same-remap", lambda w, c: ["remap-cause27-to-trainid", "--input-dir", str(w / "city/sem"),
                                 "--output-dir", str(w / "city/sem")], r"inputs are never written"),
    ("inside-instances", lambda w, c: _inst(w, c)[:5] + ["--output-dir", str(w / "city/sem/val/inst")],
     r"lies inside the input folder"),
    ("contains-panoptic", lambda w, c: ["generate-panoptic", "--semantic-dir", str(w / "city/sem/val"), "--instance-dir",
                                        str(w / "inst"), "--out-json", str(c / "out/p.json"), "--out-folder", str(w)],
     r"contains the input"),
    ("same-refine", lambda w, c: ["refine-semantics", "--semantic-dir", str(w / "city/sem/val"), "--method", "crf",
                                  "--images-dir", str(w / "city/leftImg8bit/val"), "--output-dir", str(w / "city/sem/val")],
     r"inputs are never written"),
    ("same-features", lambda w, c: ["extract-features", "--cityscapes-root", str(w / "city"), "--out", str(w / "city")],
     r"is the data root"),
    ("datafolder-depth", lambda w, c: ["generate-depth", "--cityscapes-root", str(w / "city"), "--source", "disparity",
                                       "--output-dir", str(w / "city/leftImg8bit/x")], r"lies inside the data folder"),
    ("same-cups", lambda w, c: ["convert-to-cups-format", "--panoptic-dir", str(w / "pan"), "--out", str(w / "pan")],
     r"inputs are never written"),
    ("same-coco", lambda w, c: ["export-coco", "--panoptic-dir", str(w / "pan"), "--out", str(w / "pan")],
     r"inputs are never written"),
    ("same-visualize", lambda w, c: ["visualize", "--cityscapes-root", str(w / "city"), "--panoptic-dir", str(w / "pan"),
                                     "--out", str(w / "pan")], r"inputs are never written"),
    ("same-evaluate", lambda w, c: ["evaluate", *_gt(w), *_pred(w), "--out", str(w / "pan.json")], r"is an input file"),
    ("same-report", lambda w, c: ["report", str(w / "sweep/sweep.json"), "--out", str(w / "sweep/sweep.json")],
     r"is an input file"),
    ("same-classify", lambda w, c: ["classify-stuff-things", "--semantic-dir", str(w / "city/sem/val"), "--depth-dir",
                                    str(w / "city/depth/val"), "--output-path", str(w / "city/sem/val")],
     r"(is an input|inputs are never)"),
    ("same-rgbt-features", lambda w, c: ["extract-rgbt-features", *_rgbt(w), "--out", str(w / "rgbt/data/images")],
     r"lies inside the data folder"),
    ("same-train-darts", lambda w, c: ["train-darts", *_rgbt(w), "--features", str(w / "rgbt/feats"),
                                       "--out", str(w / "rgbt/feats")], r"inputs are never written"),
    ("same-darts-sem", lambda w, c: ["generate-darts-semantics", *_rgbt(w), "--run", str(w / "rgbt/run"),
                                     "--features", str(w / "rgbt/feats"), "--out", str(w / "rgbt/feats/x")],
     r"lies inside the input folder"),
    ("same-train-crm", lambda w, c: ["train-crm", *_rgbt(w), "--dataset", "mfnet", "--labels", "gt",
                                     "--out", str(w / "rgbt/data")], r"is the data root"),
    ("same-train-cam", lambda w, c: ["train-cam", "--cityscapes-root", str(w / "city"), "--split", "val",
                                     "--out", str(w / "city/gtFine/run"), "--tags-from-gt"], r"lies inside the data folder"),
    ("synth-size-0", lambda w, c: ["synth", "--out", str(c / "out"), "--n", "1", "--size", "0", "0"], r"size"),
    # --- names that leave their root
    ("escape-semantics-subdir", lambda w, c: ["generate-overclustered-semantics", "--cityscapes-root", str(w / "city"),
                                              "--output-subdir", "../x", "--k", "3"], r"--output-subdir.*'\.\./x'"),
    ("escape-cam-subdir", lambda w, c: _cam(w, c)[:-2] + ["--output-subdir", "../../x"], r"--output-subdir.*\.\./\.\./x"),
    ("escape-crm-subdir", lambda w, c: ["generate-crm-pseudolabels", "--run", str(w / "bad/evil.pt"), "--data-root",
                                        str(w / "rgbt/data"), "--output-subdir", "../x"], r"\.\./x"),
    ("escape-coco-name", lambda w, c: ["export-coco", "--panoptic-dir", str(w / "pan"), "--panoptic-json",
                                       str(w / "pan.json"), "--out", str(c / "out"), "--name", "../../x"],
     r"--name.*\.\./\.\./x"),
    ("escape-depth-subdir", lambda w, c: ["generate-depth", "--cityscapes-root", str(w / "city"), "--source", "disparity",
                                          "--output-subdir", "../d"], r"\.\./d"),
    ("escape-split", lambda w, c: _sweep(w, c, ["--split", "../../etc"]), r"--split.*\.\./\.\./etc"),
    ("escape-sweep-subdir", lambda w, c: _sweep(w, c)[:3] + ["--semantic-subdir", "/abs/sem"] + _sweep(w, c)[5:],
     r"semantic_subdirs.*not an absolute path|absolute"),
    ("escape-split-list", lambda w, c: _split_list_escape(w, c), r"test.txt: entry '\.\./\.\./outside/name'"),
    ("abs-json-evaluate", lambda w, c: ["evaluate", *_gt(w), "--pred-json", str(_json_with_absolute_file_name(w, c)),
                                        "--pred-folder", str(w / "pan"), "--out", str(c / "out/e.json")],
     r"abs.json: file_name .*(absolute|outside)"),
    ("abs-json-coco", lambda w, c: ["export-coco", "--panoptic-dir", str(w / "pan"), "--panoptic-json",
                                    str(_json_with_absolute_file_name(w, c)), "--out", str(c / "out")],
     r"abs.json: file_name"),
    ("abs-json-cups", lambda w, c: ["convert-to-cups-format", "--panoptic-dir", str(w / "pan"), "--panoptic-json",
                                    str(_json_with_absolute_file_name(w, c)), "--out", str(c / "out"),
                                    "--no-image-check"], r"abs.json: file_name"),
    # --- broken images
    *[(f"{kind}-image-{cmd}", (lambda kind, cmd: lambda w, c: _image_case(w, c, kind, cmd))(kind, cmd), r"failed|PNG|image")
      for kind in ("truncated", "zero", "notpng") for cmd in ("features", "dynaseg", "refine-crf")],
    ("truncated-semantic", lambda w, c: _inst(w, c, sem=_broken_file(w, c, "city/sem/val", "truncated")),
     r"failed: .*(corrupt|PNG)"),
    ("notpng-panoptic", lambda w, c: ["export-coco", "--panoptic-dir", str(_broken_file(w, c, "pan", "notpng")),
                                      "--panoptic-json", str(w / "pan.json"), "--out", str(c / "out")], r"not a PNG"),
    ("zero-panoptic-json", lambda w, c: ["evaluate", *_gt(w), "--pred-json", str(_zero(c, "p.json")),
                                         "--pred-folder", str(w / "pan"), "--out", str(c / "out/e.json")],
     r"p.json: malformed JSON"),
    ("notjson-report", lambda w, c: ["report", str(w / "bad/not_json.json"), "--out", str(c / "out/r.md")],
     r"not_json.json: malformed JSON"),
    ("wrong-types-report", lambda w, c: ["report", str(w / "bad/sweep_wrong_types.json"), "--out", str(c / "out/r.md")],
     r"sweep_wrong_types.json"),
    # --- NaN maps, wrong sizes, ids outside the table
    ("nan-depth-instances", lambda w, c: _inst(w, c, depth=_city_copy(w, c, "nan_depth") / "depth/val"),
     r"NaN"),
    ("nan-depth-sweep", lambda w, c: _sweep(w, c, root=_city_copy(w, c, "nan_depth")), r"NaN"),
    ("nan-depth-classify", lambda w, c: ["classify-stuff-things", "--semantic-dir", str(w / "city/sem/val"),
                                         "--depth-dir", str(_city_copy(w, c, "nan_depth") / "depth/val"),
                                         "--output-path", str(c / "out/st.json")], r"NaN"),
    ("small-sem-instances", lambda w, c: _inst(w, c, sem=_city_copy(w, c, "small_sem") / "sem/val"),
     r"32x64|\(32, 64\)|size"),
    ("small-sem-panoptic", lambda w, c: ["generate-panoptic", "--semantic-dir", str(_city_copy(w, c, "small_sem") / "sem/val"),
                                         "--instance-dir", str(w / "inst"), "--out-json", str(c / "out/p.json"),
                                         "--out-folder", str(c / "out/p")], r"size|shape|\(32, 64\)"),
    ("id200-refine", lambda w, c: ["refine-semantics", "--semantic-dir", str(_city_copy(w, c, "sem_200") / "sem/val"),
                                   "--method", "crf", "--images-dir", str(c / "city/leftImg8bit/val"),
                                   "--output-dir", str(c / "out")], r"200"),
    ("nan-features-semantics", _nan_features_semantics, r"feats/.*\.npy: feature map holds \d+ NaN/Inf"),
    ("nan-features-darts", lambda w, c: ["train-darts", *_rgbt(w), "--features", str(_nan_copy(w / "rgbt/feats", c)),
                                         "--out", str(c / "out"), "--steps", "1", "--knn", "1"],
     r"\.npy: feature map holds 1 NaN/Inf"),
    ("nan-features-darts-sem", lambda w, c: ["generate-darts-semantics", *_rgbt(w), "--run", str(w / "rgbt/run"),
                                             "--features", str(_nan_copy(w / "rgbt/feats", c)), "--out", str(c / "out")],
     r"NaN/Inf"),
    # --- numbers: non-finite, out of range, partner flags
    ("nan-grad-threshold", lambda w, c: _inst(w, c, ["--grad-threshold", "nan"]), r"--grad-threshold / grad_threshold nan"),
    ("neg-min-area", lambda w, c: _inst(w, c, ["--min-area", "-5"]), r"min_area -5"),
    ("conn-5", lambda w, c: _inst(w, c, ["--connectivity", "5"]), r"--connectivity: invalid choice: 5"),
    ("sweep-grid-nan", lambda w, c: _sweep(w, c, ["--grad-thresholds", "-1", "nan"]), r"grad_thresholds -1"),
    ("epochs-0-cam", lambda w, c: ["train-cam", "--cityscapes-root", str(w / "city"), "--split", "val", "--tags-from-gt",
                                   "--epochs", "0", "--out", str(c / "out")], r"epochs 0: must be a whole number >= 1"),
    ("epochs-neg-crm", lambda w, c: ["train-crm", *_rgbt(w), "--dataset", "mfnet", "--labels", "gt", "--epochs", "-2",
                                     "--out", str(c / "out")], r"epochs -2"),
    ("lr-nan-crm", lambda w, c: ["train-crm", *_rgbt(w), "--dataset", "mfnet", "--labels", "gt", "--lr", "nan",
                                 "--out", str(c / "out")], r"lr nan"),
    ("lr-neg-darts", lambda w, c: ["train-darts", *_rgbt(w), "--features", str(w / "rgbt/feats"), "--lr", "-1",
                                   "--out", str(c / "out")], r"lr -1"),
    ("bg-threshold-7", lambda w, c: _cam(w, c, ["--bg-threshold", "7"]), r"bg_threshold 7"),
    ("bg-threshold-nan", lambda w, c: _cam(w, c, ["--bg-threshold", "nan"]), r"bg_threshold nan"),
    ("sweep-bg-alone", lambda w, c: _cam(w, c, ["--sweep-bg-thresholds", "0.1"]), r"--sweep-bg-thresholds"),
    ("crf-iterations-neg", lambda w, c: ["refine-semantics", "--semantic-dir", str(w / "city/sem/val"), "--method", "crf",
                                         "--images-dir", str(w / "city/leftImg8bit/val"), "--output-dir", str(c / "out"),
                                         "--crf-iterations", "-1"], r"iterations -1"),
    ("tile-width-0", lambda w, c: ["visualize", "--cityscapes-root", str(w / "city"), "--panoptic-dir", str(w / "pan"),
                                   "--out", str(c / "out"), "--tile-width", "0"], r"tile_width 0"),
    ("cups-threshold-inf", lambda w, c: ["convert-to-cups-format", "--panoptic-dir", str(w / "pan"), "--out", str(c / "out"),
                                         "--thing-stuff-threshold", "inf", "--no-image-check"], r"inf"),
    ("dynaseg-steps-0", lambda w, c: ["generate-dynaseg-segments", "--images", str(w / "city/leftImg8bit/val"),
                                      "--out", str(c / "out"), "--steps", "0"], r"steps 0"),
    ("semantics-k1", lambda w, c: ["generate-overclustered-semantics", "--cityscapes-root", str(w / "city"),
                                   "--output-subdir", "s", "--k", "1"], r"k 1"),
    ("synth-class-dropout", lambda w, c: ["synth", "--out", str(c / "out"), "--n", "1", "--class-dropout", "nan"],
     r"class_dropout nan"),
    ("rgbt-batch-0", lambda w, c: ["extract-rgbt-features", *_rgbt(w), "--out", str(c / "out"), "--batch-size", "0"],
     r"batch"),
    ("darts-sem-k-neg", lambda w, c: ["generate-darts-semantics", *_rgbt(w), "--run", str(w / "rgbt/run"),
                                      "--features", str(w / "rgbt/feats"), "--out", str(c / "out"), "--k", "-3"], r"k -3"),
    ("classify-blur-nan", lambda w, c: ["classify-stuff-things", "--semantic-dir", str(w / "city/sem/val"), "--depth-dir",
                                        str(w / "city/depth/val"), "--output-path", str(c / "out/s.json"),
                                        "--depth-blur", "nan"], r"depth_blur nan"),
    ("demo-n-neg", lambda w, c: ["demo", "--out", str(c / "out"), "--n", "-1"], r"n -1|--n"),
    ("cause-limit-neg", lambda w, c: ["generate-semantic-pseudolabels-cause", "--cityscapes-root", str(w / "city"),
                                      "--checkpoint-dir", str(w / "bad/evil_cause"), "--output-dir", str(c / "out"),
                                      "--limit", "-1"], r"limit -1"),
    ("remap-missing", lambda w, c: ["remap-cause27-to-trainid", "--input-dir", str(c / "none"), "--output-dir",
                                    str(c / "out")], r"none"),
    ("synth-rgbt-night-nan", lambda w, c: ["synth-rgbt", "--out", str(c / "out"), "--n", "1", "--night-fraction", "nan"],
     r"night"),
    ("eval-segments-missing", lambda w, c: ["evaluate-segments", "--segments-dir", str(c / "none"), "--dataset", "bsd500",
                                            "--data-root", str(c / "nothing"), "--split", "val"], r"none|nothing"),
    ("prepare-gt-into-data", lambda w, c: ["prepare-gt", "--cityscapes-root", str(w / "city"), "--out",
                                           str(w / "city/gtFine/cache")], r"lies inside the data folder"),
    ("prepare-gt-escape-split", lambda w, c: ["prepare-gt", "--cityscapes-root", str(w / "city"), "--split", "../x",
                                              "--out", str(c / "out")], r"--split '\.\./x'"),
    ("run-out-in-data-folder", lambda w, c: ["run", "--config", str(_pipeline_toml(w, c, "", out=w / "city/gtFine/run"))],
     r"lies inside a data folder of the root"),
    ("run-escape-subdir", lambda w, c: ["run", "--config", str(_pipeline_toml(w, c, 'semantic_subdir = "../../x"'))],
     r"\.\./\.\./x"),
    ("run-nan-key", lambda w, c: ["run", "--config", str(_pipeline_toml(w, c, "", "[instances]\ngrad_threshold = nan\n"))],
     r"grad_threshold nan"),
    # --- an output folder that cannot be made (its parent is a file); read-only / full: below
    ("parent-file-evaluate", lambda w, c: ["evaluate", *_gt(w), *_pred(w), "--out", str(_file(c, "out") / "e.json")],
     r"(Not a directory|File exists)"),
    ("parent-file-instances", lambda w, c: _inst(w, c)[:-3] + ["--output-dir", str(_file(c, "out") / "i"), "--resolution",
                                                               "64", "128"], r"(Not a directory|File exists)"),
    ("parent-file-sweep", lambda w, c: _sweep(w, c)[:-2] + ["--out", str(_file(c, "out") / "s.json")],
     r"(Not a directory|File exists)"),
    ("parent-file-report", lambda w, c: ["report", str(w / "sweep/sweep.json"), "--out", str(_file(c, "out") / "r.md")],
     r"(Not a directory|File exists)"),
    ("parent-file-coco", lambda w, c: ["export-coco", "--panoptic-dir", str(w / "pan"), "--panoptic-json", str(w / "pan.json"),
                                       "--out", str(_file(c, "out") / "coco")], r"(Not a directory|File exists)"),
    # --- an existing file that is not ours (the user's; no manifest or claims record covers it) is never replaced
    ("user-file-evaluate", lambda w, c: ["evaluate", *_gt(w), *_pred(w), "--out", str(_mine(c, "mine.json"))],
     r"mine\.json: exists and is not an output of pseudo_labels.*delete the file"),
    ("user-file-report", lambda w, c: ["report", str(w / "sweep/sweep.json"), "--out", str(_mine(c, "notes.md"))],
     r"notes\.md: exists and is not an output of pseudo_labels"),
    ("user-file-classify", lambda w, c: ["classify-stuff-things", "--semantic-dir", str(w / "city/sem/val"), "--depth-dir",
                                         str(w / "city/depth/val"), "--output-path", str(_mine(c, "st.json"))],
     r"st\.json: exists and is not an output of pseudo_labels"),
    ("gt-cache-in-input-sweep", lambda w, c: _sweep(w, c, ["--gt-cache", str(_no_panoptic(w, c) / "sem" / "cache")],
                                                    root=c / "city"), r"--gt-cache .*lies inside the input folder"),
    ("gt-cache-is-root-sweep", lambda w, c: _sweep(w, c, ["--gt-cache", str(_no_panoptic(w, c))], root=c / "city"),
     r"--gt-cache .*(is the data root|contains the input)"),
    ("user-file-sweep-csv", lambda w, c: _sweep_beside(w, c, "s.csv"), r"s\.csv: exists and is not an output of pseudo_labels"),
    ("user-file-sweep-heatmap", lambda w, c: _sweep_beside(w, c, "s_heatmap.png"),
     r"s_heatmap\.png: exists and is not an output of pseudo_labels"),
]


def _file(case: Path, name: str) -> Path:
    p = case / name
    p.write_text("a file where the output folder's parent should be")
    return p


def _mine(case: Path, name: str) -> Path:
    """A file the user made, where a single-file output is asked for."""
    p = case / name
    p.write_text("the user's own file\n")
    return p


def _no_panoptic(world: Path, case: Path) -> Path:
    """A copy of the city without its panoptic GT (as the official zips): the sweep makes it into its cache."""
    r = _city_copy(world, case)
    for p in (r / "gtFine").glob("cityscapes_panoptic_val*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return r


def _sweep_beside(world: Path, case: Path, companion: str) -> list[str]:
    """sweep --out case/s.json where the user has a file named like one of its companions: refused
    before anything is written (s.json does not appear either)."""
    _mine(case, companion)
    return _sweep(world, case)[:-2] + ["--out", str(case / "s.json"), "--grad-thresholds", "0.1", "--workers", "1"]


def _nan_copy(folder: Path, case: Path) -> Path:
    dst = case / folder.name
    shutil.copytree(folder, dst)
    return _nan_first_npy(dst)


def _zero(case: Path, name: str) -> Path:
    p = case / name
    p.write_bytes(b"")
    return p


def _broken_file(world: Path, case: Path, rel: str, kind: str) -> Path:
    dst = case / "in" / rel
    shutil.copytree(world / rel, dst)
    first = sorted(p for p in dst.rglob("*.png"))[0]
    first.write_bytes(first.read_bytes()[:60] if kind == "truncated" else b"GIF89a not a png")
    return dst


def _image_case(world: Path, case: Path, kind: str, cmd: str) -> list[str]:
    r = _city_copy(world, case, kind)
    if cmd == "features":
        return _features(world, case, root=r)
    if cmd == "dynaseg":
        return ["generate-dynaseg-segments", "--images", str(r / "leftImg8bit/val"), "--out", str(case / "out"),
                "--steps", "1", "--workers", "1", "--work-long-side", "32"]
    return ["refine-semantics", "--semantic-dir", str(r / "sem/val"), "--method", "crf", "--images-dir",
            str(r / "leftImg8bit/val"), "--output-dir", str(case / "out"), "--crf-iterations", "1", "--workers", "1"]


def _split_list_escape(world: Path, case: Path) -> list[str]:
    data = case / "mf"
    shutil.copytree(world / "rgbt/data", data)
    (data / "test.txt").write_text("../../outside/name\n")
    return ["extract-rgbt-features", "--data-root", str(data), "--split", "test", "--out", str(case / "out")]


def _pipeline_toml(world: Path, case: Path, data_extra: str, tables: str = "[instances]\nmin_area = 20\n",
                   out: Path | None = None) -> Path:
    p = case / "pipeline.toml"
    p.write_text(f'[data]\nroot = "{world / "city"}"\nsplit = "val"\nout = "{out or case / "out"}"\n{data_extra}\n{tables}')
    return p


# --------------------------------------------------------------------------- the checks
def _snapshot(root: Path, *skips: Path) -> dict[str, str]:
    """Path -> sha256 of every file under ``root`` except those under ``skips`` (the output folders)."""
    out = {}
    for dirpath, dirnames, files in os.walk(root):
        if any(Path(dirpath) == s or s in Path(dirpath).parents for s in skips):
            dirnames[:] = []
            continue
        for n in files:
            p = Path(dirpath) / n
            if p in skips:
                continue
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "?"
    return out


def _error_line(err: str) -> str:
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith("pseudo-labels: error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.mark.parametrize("case_id,argv_of,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(world, tmp_path, capsys, case_id, argv_of, pattern):
    import re

    case = tmp_path / "case"
    case.mkdir()
    argv = argv_of(world, case)
    out = case / "out"
    outs = (out, case / "city" / "s")  # "s": the --output-subdir of cases that write under a copied root
    before_world = _snapshot(world, world / "nothing")
    before_case = _snapshot(case, *outs)
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # a usage error (argparse): one line too (core.arguments.ArgumentParser)
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, f"{case_id}: exit {rc}\n{err[-2000:]}"
    line = _error_line(err)
    assert re.search(pattern, line), f"{case_id}: {line}"
    assert _snapshot(world, world / "nothing") == before_world, f"{case_id}: an input changed or a file appeared"
    after_case = _snapshot(case, *outs)
    assert after_case == before_case, f"{case_id}: written outside {out}: {set(after_case) ^ set(before_case)}"
    assert not (world / MARKER_NAME).exists(), "code from a checkpoint ran"
    assert not (world.parent / "x").exists() and not (world / "x").exists()


def test_rerun_over_its_own_single_file_outputs_succeeds(world, tmp_path, capsys):
    """Single-file outputs (no manifest) are claimed by name + sha256 beside them: the same command
    run again over its own outputs succeeds; once the user edits one, it is refused (exit 2, unchanged)."""
    from pseudo_labels.core.paths import CLAIMS_NAME

    out = tmp_path / "outs"
    cmds = [["evaluate", *_gt(world), *_pred(world), "--out", str(out / "eval.json")],
            ["classify-stuff-things", "--semantic-dir", str(world / "city/sem/val"), "--depth-dir",
             str(world / "city/depth/val"), "--output-path", str(out / "st.json")],
            _sweep(world, tmp_path)[:-2] + ["--out", str(out / "s.json"), "--grad-thresholds", "0.1", "--workers", "1"],
            ["report", str(out / "s.json"), "--out", str(out / "r.md")]]
    for _ in range(2):
        assert [main(a) for a in cmds] == [0] * len(cmds)
    claimed = json.loads((out / CLAIMS_NAME).read_text())["files"]
    assert {"eval.json", "st.json", "s.json", "s.csv", "s_heatmap.png", "r.md"} <= set(claimed)
    for name, digest in claimed.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name
    (out / "s.csv").write_text("edited by hand\n")
    capsys.readouterr()
    assert main(cmds[2]) == 2
    assert "s.csv: exists and is not an output of pseudo_labels" in _error_line(capsys.readouterr().err)
    assert (out / "s.csv").read_text() == "edited by hand\n"


@pytest.mark.parametrize("command", ["sweep", "report"])
def test_user_file_at_a_default_output_path_is_kept(world, tmp_path, capsys, monkeypatch, command):
    """Without --out, the default path (sweep: ``<root>/sweep_<sem>_<depth>_<split>.json``, as the reference;
    report: ``reports/<sweep name>.md`` in the working folder) is registered as --out is: an existing file
    there that is not ours is refused (exit 2, one line) and kept byte-identical; nothing else is written."""
    case = tmp_path / "case"
    case.mkdir()
    monkeypatch.chdir(case)
    if command == "sweep":
        root = _city_copy(world, case)
        (root / "synth_manifest.json").unlink()  # as a downloaded dataset: no manifest of ours claims its root
        mine = root / "sweep_sem_depth_val.json"
        argv = _sweep(world, case, root=root)[:-2] + ["--grad-thresholds", "0.1", "--workers", "1"]
    else:
        mine = case / "reports" / "sweep.md"
        mine.parent.mkdir()
        argv = ["report", str(world / "sweep/sweep.json")]
    mine.write_text("the user's own file\n")
    before = _snapshot(case)
    capsys.readouterr()
    assert main(argv) == 2
    line = _error_line(capsys.readouterr().err)
    assert f"{mine.name}: exists and is not an output of pseudo_labels" in line, line
    assert _snapshot(case) == before  # the file byte-identical, nothing written (no CSV, no claims record, no cache)
    mine.unlink()  # once the place is free, the default is written there (and claimed)
    assert main(argv) == 0 and mine.is_file()


def test_default_gt_cache_is_a_dedicated_sub_folder_of_the_root(world, tmp_path):
    """sweep without --out on a dataset without panoptic GT: the JSON lands in the root (the reference's
    place), the GT is made into <root>/gt_cache (a dedicated sub-folder, as --output-subdir); no file of the
    dataset changes."""
    from pseudo_labels.core.paths import CLAIMS_NAME

    root = _no_panoptic(world, tmp_path)
    (root / "synth_manifest.json").unlink()
    before = _snapshot(root)
    assert main(_sweep(world, tmp_path, root=root)[:-2] + ["--grad-thresholds", "0.1", "--workers", "1"]) == 0
    after = _snapshot(root, root / "gt_cache")
    new = {Path(p).name for p in set(after) - set(before)}
    assert new == {"sweep_sem_depth_val.json", "sweep_sem_depth_val.csv", "sweep_sem_depth_val_heatmap.png", CLAIMS_NAME}
    assert {p: d for p, d in after.items() if p in before} == before
    assert (root / "gt_cache" / "gtFine" / "cityscapes_panoptic_val.json").is_file()


# --------------------------------------------------------------------------- read-only and full folders
_DRIVER = r"""
import json, sys
from pseudo_labels.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    results.append(main(argv))
print("RESULTS " + json.dumps(results))
"""


def _unshare_ok() -> bool:
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o ro tmpfs /mnt"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(sys.platform != "linux" or not _unshare_ok(),
                    reason="needs unshare to mount a read-only / full tmpfs (root is not stopped by chmod)")
@pytest.mark.parametrize("mode", ["ro", "full"])
def test_read_only_and_full_output_folders(world, tmp_path, mode):
    """One subprocess in a user + mount namespace: the output folder is a read-only tmpfs, or a
    64 KiB one that fills up; every command gets exit 2 and one line naming the path and the cause."""
    out = tmp_path / "mnt"
    out.mkdir()
    big = ["--resolution", "512", "1024"] if mode == "full" else []
    cmds = {
        "evaluate": ["evaluate", *_gt(world), *_pred(world), "--out", str(out / "e" / "eval.json")],
        "sweep": _sweep(world, out)[:-1] + [str(out / "s" / "s.json")],
        "report": ["report", str(world / "sweep/sweep.json"), "--out", str(out / "r" / "r.md")],
        "classify-stuff-things": ["classify-stuff-things", "--semantic-dir", str(world / "city/sem/val"), "--depth-dir",
                                  str(world / "city/depth/val"), "--output-path", str(out / "c" / "st.json")],
        "train-crm": ["train-crm", *_rgbt(world), "--dataset", "mfnet", "--labels", "gt", "--epochs", "1",
                      "--out", str(out / "crm")],
        "generate-depth-guided-instances": _inst(world, out)[:-5] + ["--output-dir", str(out / "i"), *big]
        + (["--resolution", "64", "128"] if not big else []),
    }
    if mode == "full":
        cmds["export-coco"] = ["export-coco", "--panoptic-dir", str(world / "pan"), "--out", str(out / "coco")]
        filler = f"head -c 1000000 /dev/zero > {out}/filler 2>/dev/null; "  # fills the 64 KiB tmpfs
        opts = "size=64k"
    else:
        filler, opts = "", "ro"
    before = _snapshot(world, world / "nothing")
    script = (f"mount -t tmpfs -o {opts} tmpfs {out} && {filler}"
              f"exec {sys.executable} -c '{_DRIVER}' '{json.dumps(list(cmds.values()))}'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1])] + sys.path)}
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert "RESULTS" in r.stdout, r.stderr[-3000:]
    results = json.loads(r.stdout.split("RESULTS ", 1)[1])
    errors = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.startswith("pseudo-labels: error:")]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert results == [2] * len(cmds), dict(zip(cmds, results))
    assert len(errors) == len(cmds), errors
    cause = "Read-only file system" if mode == "ro" else "No space left on device"
    for name, line in zip(cmds, errors):
        assert str(out) in line and cause in line, (name, line)
    assert _snapshot(world, world / "nothing") == before


# --------------------------------------------------------------------------- exports are reproducible
def test_identical_exports_are_byte_identical_and_readable_by_others(world, tmp_path):
    old = os.umask(0o022)
    try:
        for n in ("a", "b"):
            assert main(["convert-to-cups-format", "--panoptic-dir", str(world / "pan"), "--out", str(tmp_path / n),
                         "--no-image-check", "--workers", "1"]) == 0
    finally:
        os.umask(old)
    a = {p.relative_to(tmp_path / "a"): p for p in (tmp_path / "a").rglob("*") if p.is_file()}
    pts = [p for p in a if p.suffix == ".pt"]
    assert pts, "the CUPS export writes .pt class-distribution files"
    for rel, p in a.items():
        assert os.stat(p).st_mode & 0o777 == 0o644, rel
        if rel.name != io.MANIFEST_NAME:  # the manifest holds the creation time
            assert p.read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert io.load_checkpoint(tmp_path / "a" / pts[0]) is not None
    for n in ("c1", "c2"):
        assert main(["export-coco", "--panoptic-dir", str(world / "pan"), "--panoptic-json", str(world / "pan.json"),
                     "--out", str(tmp_path / n)]) == 0
    c1 = {p.relative_to(tmp_path / "c1"): p for p in (tmp_path / "c1").rglob("*") if p.is_file()}
    assert len(c1) > 2
    for rel, p in c1.items():
        if rel.name != io.MANIFEST_NAME:
            assert p.read_bytes() == (tmp_path / "c2" / rel).read_bytes(), rel


# --------------------------------------------------------------------------- hypothesis: numeric parameters
def _configs():
    from pseudo_labels.stages.instance.instances import InstanceConfig
    from pseudo_labels.stages.outputs.sweep import SweepConfig
    from pseudo_labels.stages.rgbt.crm import CRMModelConfig
    from pseudo_labels.stages.rgbt.darts import DartsTrainConfig
    from pseudo_labels.stages.weak.cam import CamHeadConfig
    from pseudo_labels.stages.weak.pseudolabels import CamLabelConfig

    return [
        (InstanceConfig, {"semantic_dir": "s", "depth_dir": "d", "output_dir": "o"},
         {"grad_threshold": float, "min_area": int, "sigma": float, "dilation_iters": int}),
        (SweepConfig, {"cityscapes_root": "r", "semantic_subdirs": ("s",), "out": "o.json"},
         {"grad_thresholds": "floats", "min_areas": "ints"}),
        (CRMModelConfig, {"num_classes": 3}, {"lr": float, "epochs": int, "mask_ratio": float, "weight_decay": float,
                                              "batch_size": int}),
        (DartsTrainConfig, {"data_root": "r", "features": "f", "out": "o"}, {"lr": float, "steps": int, "knn": int}),
        (CamHeadConfig, {"num_classes": 3, "in_dim": 4}, {"lr": float, "epochs": int, "deal_weight": float}),
        (CamLabelConfig, {"run": "r", "cityscapes_root": "c"}, {"bg_threshold": float, "refine_band": int}),
    ]


def test_numeric_parameters_of_typed_configs_hypothesis():
    """Any value is either accepted and in its documented range, or refused with one line naming the
    field; NaN / Inf are always refused. Same check whatever builds the config (flags or TOML)."""
    from hypothesis import strategies as st

    from pseudo_labels.core.validate import RULES

    floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
    ints = st.integers(min_value=-10**6, max_value=10**6)
    for cls, required, fields in _configs():
        for name, kind in fields.items():
            strategy = {float: st.one_of(floats, ints), int: ints, "floats": st.lists(floats, max_size=3).map(tuple),
                        "ints": st.lists(ints, max_size=3).map(tuple)}[kind]
            _check_field(cls, required, name, strategy, getattr(cls, "RANGES", {}).get(name, RULES[name]))


def _check_field(cls, required, name, strategy, rule):
    from hypothesis import given, settings

    from pseudo_labels.core.errors import PseudoLabelsError

    @settings(max_examples=40, deadline=None, database=None)
    @given(value=strategy)
    def check(value):
        values = value if isinstance(value, tuple) else (value,)
        expect_ok = all(rule.ok(v) for v in values) and (len(values) > 0 or not isinstance(value, tuple))
        try:
            cls(**required, **{name: value})
            ok, msg = True, ""
        except PseudoLabelsError as exc:
            ok, msg = False, str(exc)
        assert ok == expect_ok, (cls.__name__, name, value, msg)
        if not ok:
            assert "\n" not in msg and name in msg
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            assert not ok

    check()


def test_pickle_module_is_what_torch_uses():
    """The crafted checkpoint really is a pickle that runs code when loaded without weights_only."""
    marker = Path(os.environ.get("TMPDIR", "/tmp")) / f"bad_inputs_marker_{os.getpid()}"
    torch.save({"x": _Evil(str(marker))}, marker.with_suffix(".pt"), pickle_module=pickle)
    try:
        torch.load(marker.with_suffix(".pt"), weights_only=False)
        assert marker.exists()
    finally:
        marker.unlink(missing_ok=True)
        marker.with_suffix(".pt").unlink(missing_ok=True)


def test_overlap_messages_say_folder_or_file():
    """An output file that is an input folder is named as a folder, and the hint asks for a file."""
    import tempfile

    from pseudo_labels.core.errors import PseudoLabelsError
    from pseudo_labels.core.paths import refuse_overlap

    with tempfile.TemporaryDirectory() as d:
        with pytest.raises(PseudoLabelsError, match=r"is the input folder \(--in\).*choose an output file"):
            refuse_overlap({"--in": d}, {}, output_files={"--out": d}, register=False)
        with pytest.raises(PseudoLabelsError, match=r"is the input folder \(--in\).*choose an output folder"):
            refuse_overlap({"--in": d}, {"--out-dir": d}, register=False)
