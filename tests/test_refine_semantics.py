"""refine-semantics command: methods, pairing by stem, manifest, resume, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pseudo_labels.commands import module_main
from pseudo_labels.core.io import read_png, write_png

MODULE = "pseudo_labels.commands.refine_semantics"
STEM = "city_000000_000019"


@pytest.fixture()
def folders(tmp_path):
    sem = np.zeros((16, 24), np.uint8)
    sem[:, 14:] = 1
    segs = np.zeros((16, 24), np.uint16)
    segs[:, 12:] = 1
    img = np.zeros((16, 24, 3), np.uint8)
    img[:, 12:] = 255
    write_png(tmp_path / "sem" / "val" / "city" / f"{STEM}.png", sem)
    write_png(tmp_path / "segs" / "val" / "city" / f"{STEM}.png", segs)
    write_png(tmp_path / "img" / "city" / f"{STEM}_leftImg8bit.png", img)
    return tmp_path


def test_dynaseg_method_writes_refined_maps_and_manifest(folders):
    out = folders / "out"
    assert module_main(MODULE, ["--semantic-dir", str(folders / "sem"), "--method", "dynaseg",
                                "--segments-dir", str(folders / "segs"), "--output-dir", str(out)]) == 0
    res = read_png(out / "val" / "city" / f"{STEM}.png")
    assert np.all(res[:, :12] == 0) and np.all(res[:, 12:] == 1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["uses_ground_truth"] is False and manifest["parameters"]["method"] == "dynaseg"
    assert manifest["counts"]["changed_pixel_fraction"] == pytest.approx(32 / (16 * 24), abs=1e-6)


def test_none_copies_and_resume_keeps_outputs(folders, capsys):
    out = folders / "none"
    argv = ["--semantic-dir", str(folders / "sem"), "--method", "none", "--output-dir", str(out)]
    assert module_main(MODULE, argv) == 0
    assert np.array_equal(read_png(out / "val" / "city" / f"{STEM}.png"), read_png(folders / "sem" / "val" / "city" / f"{STEM}.png"))
    assert module_main(MODULE, argv) == 0
    assert "skipped 1" in capsys.readouterr().err


def test_crf_method_pairs_images_by_stem(folders):
    out = folders / "crf"
    assert module_main(MODULE, ["--semantic-dir", str(folders / "sem"), "--method", "crf", "--images-dir",
                                str(folders / "img"), "--num-labels", "2", "--output-dir", str(out)]) == 0
    res = read_png(out / "val" / "city" / f"{STEM}.png")
    assert np.mean(res[:, 12:14] == 1) > 0.9 and np.all(res[:, :10] == 0)


def test_missing_inputs_are_one_line_errors(folders, capsys):
    assert module_main(MODULE, ["--semantic-dir", str(folders / "sem"), "--method", "dynaseg",
                                "--output-dir", str(folders / "o")]) == 2
    assert "--segments-dir" in capsys.readouterr().err
    (folders / "empty").mkdir()
    assert module_main(MODULE, ["--semantic-dir", str(folders / "sem"), "--method", "dynaseg", "--segments-dir",
                                str(folders / "empty"), "--output-dir", str(folders / "o")]) == 2
    assert "no file for 1 semantic map" in capsys.readouterr().err
