"""Ground truth made by cityscapesscripts into a cache (pseudo_labels.datasets.cityscapes_gt, prepare-gt)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.core.io import read_json, read_png, rgb_to_id
from pseudo_labels.datasets import cityscapes_gt as cg
from pseudo_labels.datasets.cityscapes import label_id_to_train_id_lut, list_images, panoptic_gt


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def official(synth_city_official, tmp_path) -> Path:
    """A private copy of the official-layout city (tests may touch its files)."""
    root = tmp_path / "cityscapes"
    shutil.copytree(synth_city_official, root)
    return root


def test_prepare_makes_both_kinds_into_the_cache_only(official, synth_city, tmp_path):
    before = _snapshot(official)
    lines: list[str] = []
    cache = tmp_path / "out" / "gt_cache"
    prep = cg.prepare_ground_truth(official, "val", cache, log=lines.append)
    assert _snapshot(official) == before  # the dataset is never written
    assert prep.status == {"panoptic": "made", "trainIds": "made"} and prep.counts == {"panoptic": 3, "trainIds": 3}
    assert len(lines) == 2 and all(str(cache) in x and "cityscapesscripts" in x for x in lines)
    # the same files as cityscapesscripts writes next to the data (the extended fixture: same scenes)
    j, folder = prep.panoptic
    assert j == cache / "gtFine" / "cityscapes_panoptic_val.json"
    ref_j, ref_folder = panoptic_gt(synth_city, "val")
    assert read_json(j) == read_json(ref_j)
    for ann in read_json(j)["annotations"]:
        assert np.array_equal(rgb_to_id(read_png(folder / ann["file_name"])),
                              rgb_to_id(read_png(ref_folder / ann["file_name"])))
    lut = label_id_to_train_id_lut()
    for e in list_images(official, "val"):
        tr = read_png(prep.train_ids(e.stem))
        assert prep.train_ids(e.stem) == cache / "gtFine" / "val" / e.city / f"{e.stem}_gtFine_labelTrainIds.png"
        assert tr.dtype == np.uint8
        labels = read_png(official / "gtFine" / "val" / e.city / f"{e.stem}_gtFine_labelIds.png")
        assert np.array_equal(tr, lut[labels])
    man = read_json(cache / cg.CACHE_MANIFEST)
    assert man["stage"] == "prepare-gt" and man["uses_ground_truth"] is True
    assert set(man["parameters"]["entries"]) == {"panoptic:val", "trainIds:val"}
    assert prep.describe()["panoptic"]["status"] == "made"


def test_cache_is_reused_and_remade_when_the_sources_change(official, tmp_path):
    cache = tmp_path / "cache"
    cg.prepare_ground_truth(official, "val", cache)
    made = _snapshot(cache)
    lines: list[str] = []
    prep = cg.prepare_ground_truth(official, "val", cache, log=lines.append)
    assert prep.status == {"panoptic": "reused", "trainIds": "reused"}
    assert _snapshot(cache) == made and all(x.startswith("reusing") for x in lines)
    # an instanceIds file changed (newer mtime): the panoptic GT is made again, the trainIds kept
    inst = next(official.rglob("*_gtFine_instanceIds.png"))
    st = inst.stat()
    os.utime(inst, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    prep = cg.prepare_ground_truth(official, "val", cache, ("panoptic", "trainIds"))
    assert prep.status == {"panoptic": "made", "trainIds": "reused"}


def test_dataset_that_holds_them_is_used_as_is(synth_city, tmp_path):
    cache = tmp_path / "cache"
    lines: list[str] = []
    prep = cg.prepare_ground_truth(synth_city, "val", cache, log=lines.append)
    assert prep.status == {"panoptic": "dataset", "trainIds": "dataset"} and not lines
    assert prep.panoptic == panoptic_gt(synth_city, "val") and not cache.exists()
    j, folder, _ = cg.panoptic_ground_truth(synth_city, "val", cache)
    assert (j, folder) == panoptic_gt(synth_city, "val")


def test_refuses_a_cache_in_the_dataset_and_names_missing_sources(official, tmp_path):
    for bad in (official, official / "gtFine" / "cache"):
        with pytest.raises(PseudoLabelsError, match="never written"):
            cg.prepare_ground_truth(official, "val", bad)
    shutil.rmtree(official / "gtFine")
    with pytest.raises(InputFileError, match=r"_gtFine_instanceIds\.png.*gtFine_trainvaltest\.zip"):
        cg.prepare_ground_truth(official, "val", tmp_path / "c", ("panoptic",))
    with pytest.raises(PseudoLabelsError, match="unknown ground-truth kind"):
        cg.prepare_ground_truth(official, "val", tmp_path / "c", ("labelIds",))


def test_cli(official, tmp_path, capsys):
    from pseudo_labels.cli import main

    cache = tmp_path / "cache"
    assert main(["prepare-gt", "--cityscapes_root", str(official), "--split", "val", "--out", str(cache)]) == 0
    out = capsys.readouterr().out
    assert out.count("made ") == 2 and (cache / "gtFine" / "cityscapes_panoptic_val.json").is_file()
    assert main(["prepare-gt", "--cityscapes-root", str(official), "--out", str(cache), "--kinds", "panoptic"]) == 0
    assert "reusing panoptic" in capsys.readouterr().out
    assert main(["prepare-gt", "--cityscapes-root", str(official), "--split", "train", "--out", str(cache)]) == 2
    assert "gtFine_trainvaltest.zip" in capsys.readouterr().err


def test_parallel_panoptic_equals_one_call(official, tmp_path):
    """workers > 1 (convert2panoptic on chunks of the files, joined): byte-identical JSON and PNGs."""
    one = cg.make_panoptic(official, "val", tmp_path / "one")
    many = cg.make_panoptic(official, "val", tmp_path / "many", workers=2)
    assert one[0].read_bytes() == many[0].read_bytes()
    names = sorted(p.name for p in one[1].iterdir())
    assert len(names) == 3 and names == sorted(p.name for p in many[1].iterdir())
    for n in names:
        assert (one[1] / n).read_bytes() == (many[1] / n).read_bytes()
    for d in ("one", "many"):  # the scratch folders removed
        assert sorted(p.name for p in (tmp_path / d / "gtFine").iterdir()) == ["cityscapes_panoptic_val",
                                                                               "cityscapes_panoptic_val.json"]


def test_panoptic_goes_through_the_write_layer(official, tmp_path):
    """make_panoptic's files are cityscapesscripts' own bytes (convert2panoptic run directly), put in place
    by core.io: the umask's modes, a rerun replacing the folder, a parent that is a file -> one line."""
    import stat

    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    ref = tmp_path / "ref"
    ref.mkdir()
    cg._silenced(convert2panoptic, cityscapesPath=str(official / "gtFine"), outputFolder=str(ref), setNames=["val"])
    old = os.umask(0o027)
    try:
        for workers in (1, 2, 1):  # the last: a rerun over the first's folder
            j, folder = cg.make_panoptic(official, "val", tmp_path / "c", workers=workers)
            assert j.read_bytes() == (ref / j.name).read_bytes()
            names = sorted(p.name for p in folder.iterdir())
            assert len(names) == 3 and names == sorted(p.name for p in (ref / folder.name).iterdir())
            assert all((folder / n).read_bytes() == (ref / folder.name / n).read_bytes() for n in names)
            assert stat.S_IMODE(j.stat().st_mode) == 0o640 and stat.S_IMODE(folder.stat().st_mode) == 0o750
            assert [oct(stat.S_IMODE((folder / n).stat().st_mode)) for n in names] == ["0o640"] * 3, workers
    finally:
        os.umask(old)
    (tmp_path / "f").write_text("a file where the cache should be")
    with pytest.raises(PseudoLabelsError) as err:
        cg.make_panoptic(official, "val", tmp_path / "f")
    assert "\n" not in str(err.value) and re.search(r"(Not a directory|File exists)\)$", str(err.value))
