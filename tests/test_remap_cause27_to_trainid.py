"""27 -> 19 remap: both tables against their sources, and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.io import read_png, write_png
from pseudo_labels.datasets.cityscapes import CAUSE27_NAMES, cause27_label_id_lut, cause27_to_train_id_lut

#: the table of the reference's remap_cause27_to_trainid.py (qbit-glitch/monocular_ups), as data
REFERENCE_TABLE = {
    0: 0, 1: 1, 2: 255, 3: 255, 4: 2, 5: 3, 6: 4, 7: 255, 8: 255, 9: 255, 10: 5, 11: 5, 12: 6, 13: 7,
    14: 8, 15: 9, 16: 10, 17: 11, 18: 12, 19: 13, 20: 14, 21: 15, 22: 13, 23: 14, 24: 16, 25: 17, 26: 18,
}


def test_reference_table_equals_the_reference():
    lut = cause27_to_train_id_lut("reference")
    assert {c: int(lut[c]) for c in range(27)} == REFERENCE_TABLE
    assert (lut[27:] == 255).all()


def test_cityscapes_table_equals_cityscapesscripts():
    from cityscapesscripts.helpers.labels import id2label

    lut = cause27_to_train_id_lut("cityscapes")
    for c in range(27):
        label = id2label[c + 7]
        assert CAUSE27_NAMES[c] == label.name
        expected = label.trainId if 0 <= label.trainId < 19 else 255
        assert lut[c] == expected, label.name
    diff = {CAUSE27_NAMES[c] for c in range(27) if lut[c] != cause27_to_train_id_lut("reference")[c]}
    assert diff == {"polegroup", "caravan", "trailer"}
    assert list(cause27_label_id_lut()[:27]) == list(range(7, 34))
    with pytest.raises(PseudoLabelsError, match="--table"):
        cause27_to_train_id_lut("coco")


def _cause_folder(root, rng):
    arrays = {}
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        for k in range(2):
            a = rng.integers(0, 27, (12, 20)).astype(np.uint8)
            a[0, 0] = 255
            p = root / split / city / f"{city}_00000{k}_000019.png"
            write_png(p, a)
            arrays[p.relative_to(root)] = a
    return arrays


@pytest.mark.parametrize("table", ["reference", "cityscapes"])
def test_command_remaps_both_splits(tmp_path, table, capsys):
    from pseudo_labels.cli import main

    arrays = _cause_folder(tmp_path / "in", np.random.default_rng(0))
    rc = main(["remap-cause27-to-trainid", "--input_dir", str(tmp_path / "in"), "--output-dir",
               str(tmp_path / "out"), "--table", table])
    assert rc == 0
    lut = cause27_to_train_id_lut(table)
    for rel, a in arrays.items():
        np.testing.assert_array_equal(read_png(tmp_path / "out" / rel), lut[a])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["parameters"]["table"] == table and manifest["uses_ground_truth"] is False
    assert "done 4" in capsys.readouterr().out
    # rerun: resumed, nothing recomputed
    assert main(["remap-cause27-to-trainid", "--input-dir", str(tmp_path / "in"), "--output-dir",
                 str(tmp_path / "out"), "--table", table]) == 0
    assert "skipped 4" in capsys.readouterr().out


def test_inherits_ground_truth_use_and_skips_missing_split(tmp_path, capsys):
    from pseudo_labels.cli import main

    write_png(tmp_path / "in" / "val" / "c" / "c_000000_000019.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "in" / "manifest.json").write_text(json.dumps({"uses_ground_truth": True,
                                                                "ground_truth_use": {"hungarian": "x"}}))
    assert main(["remap-cause27-to-trainid", "--input-dir", str(tmp_path / "in"), "--output-dir",
                 str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "skipping train" in out and "uses ground truth: yes" in out
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["uses_ground_truth"] is True
    assert main(["remap-cause27-to-trainid", "--input-dir", str(tmp_path / "in"), "--output-dir",
                 str(tmp_path / "o2"), "--split", "train"]) == 2
    assert "in/train: no such folder" in capsys.readouterr().err


def test_bad_class_ids_name_the_file(tmp_path, capsys):
    from pseudo_labels.cli import main

    a = np.zeros((4, 4), np.uint8)
    a[1, 1] = 40
    write_png(tmp_path / "in" / "val" / "c" / "c_000000_000019.png", a)
    rc = main(["remap-cause27-to-trainid", "--input-dir", str(tmp_path / "in"), "--output-dir",
               str(tmp_path / "out"), "--split", "val", "--fail-fast"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "c_000000_000019.png" in err and "[40]" in err


def test_help_states_the_difference(capsys):
    from pseudo_labels.cli import main

    with pytest.raises(SystemExit):
        main(["remap-cause27-to-trainid", "--help"])
    text = capsys.readouterr().out
    assert "polegroup->pole" in text and "caravan->car" in text and "void" in text
