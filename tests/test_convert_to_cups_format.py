"""CUPS export: every fact below was checked in the CUPS code (visinf/cups) or the reference fork
(qbit-glitch/monocular_ups); the comment on each assertion names the file and function."""

import os

import numpy as np
import pytest
import torch

from pseudo_labels.core import io
from pseudo_labels.stages.outputs import export
from pseudo_labels.commands import module_main
from pseudo_labels.datasets.cityscapes import THING_TRAIN_IDS, panoptic_categories
from pseudo_labels.core.errors import PseudoLabelsError
from tests.test_export import STEMS, scene, write_panoptic

H, W = 32, 64


def city_root(tmp_path, stems=STEMS, split="train", sequence=True):
    root = tmp_path / "cs"
    for s in stems:
        city = s.split("_")[0]
        img = np.zeros((H, W, 3), np.uint8)
        io.write_png(root / "leftImg8bit" / split / city / f"{s}_leftImg8bit.png", img)
        if sequence:
            io.write_png(root / "leftImg8bit_sequence" / split / city / f"{s}_leftImg8bit.png", img)
    return root


def convert(*argv):
    return module_main("pseudo_labels.commands.convert_to_cups_format", [str(a) for a in argv])


def expected(stem_index, unmatched="void"):
    pan, segs = scene(seed=stem_index)
    to_train, isthing = export.category_tables(panoptic_categories())
    sem, inst = export.panoptic_to_semantic_instances(pan, segs, to_train, isthing)
    return (export.void_unmatched_things(sem, inst) if unmatched == "void" else sem), inst


def same_partition(a, b):
    """Instance maps equal up to renumbering, 0 kept as background."""
    pairs = set(zip(a.ravel().tolist(), b.ravel().tolist()))
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs}) and all(
        (x == 0) == (y == 0) for x, y in pairs)


def test_upstream_cups_export_reads_back(tmp_path, capsys):
    folder, js = write_panoptic(tmp_path)
    root = city_root(tmp_path)
    out = tmp_path / "cups"
    assert convert("--panoptic-dir", folder, "--panoptic_json", js, "--cityscapes-root", root, "--out", out,
                   "--target", "cups") == 0
    names = sorted(os.listdir(out))
    # flat folder: <stem>_leftImg8bit_semantic.png / _instance.png, one .pt
    # (cups/data/pseudo_label_dataset.py get_cityscapes_paths; cups/pseudo_labels/gen_pseudo_labels.py main)
    assert names == sorted([f"{s}_leftImg8bit_semantic.png" for s in STEMS] + [f"{s}_leftImg8bit_instance.png"
                                                                                for s in STEMS]
                           + ["pseudo_classes_split_1.pt", "manifest.json"])
    images, inst_paths, sem_paths = export.list_cups_folder(out, root, "train")
    # the loader pairs sorted lists by position and builds the image path from the instance name:
    # <root>/leftImg8bit_sequence/train/<city>/<stem>_leftImg8bit.png (get_cityscapes_paths)
    assert all(p.is_file() for p in images)
    assert images[0] == root / "leftImg8bit_sequence" / "train" / "aachen" / f"{STEMS[0]}_leftImg8bit.png"
    for k, (ip, sp) in enumerate(zip(inst_paths, sem_paths)):
        assert ip.name.replace("_instance", "") == sp.name.replace("_semantic", "")
        # 8-bit single channel: CUPS pins torchvision 0.16 (README) whose read_image cannot decode
        # 16-bit PNGs; gen_pseudo_labels.py saves np.uint8 via PIL
        for p in (ip, sp):
            arr = io.read_png(p)
            assert arr.ndim == 2 and arr.dtype == np.uint8
        # labels stored at DATA.SCALE (0.625) of the image: __getitem__ scales only the image,
        # gen_pseudo_labels.py writes 640x1280 for 1024x2048 frames
        sample = export.read_cups_pair(sp, ip, image_path=images[k])
        assert sample.semantic.shape == export.scaled_size((H, W), 0.625) == (20, 40)
        sem, inst = expected(k)
        assert np.array_equal(sample.semantic, export.resize_nearest(sem, (20, 40)))
        assert same_partition(sample.instances, export.resize_nearest(inst, (20, 40)))
    # thing/stuff from the .pt (PseudoLabelDataset.__init__) = Cityscapes things at CUPS's default 0.08
    # (cups/config.py DATA.THING_STUFF_THRESHOLD)
    pt = torch.load(out / "pseudo_classes_split_1.pt")
    assert set(pt) == {"distribution all pixels", "distribution inside object proposals",
                       "distribution per object proposal"}
    assert all(t.dtype == torch.int64 and t.shape == (19,) for t in pt.values())  # ThingStuffSplitter int64
    things, stuff, _, _ = export.read_cups_class_split(out, 0.08)
    assert sorted(things) == list(THING_TRAIN_IDS) and sorted(stuff) == list(range(11))
    # detectron2 targets: every instance's class (max semantic in its mask) is a thing (__getitem__)
    sem_seg, classes = export.cups_detectron_targets(sample, things, stuff)
    assert len(classes) == sample.instances.max() > 0
    assert (sem_seg[sample.semantic == 255] == 255).all()
    man = io.read_manifest(out)
    assert man["stage"] == "convert-to-cups-format" and man["cups_config"]["DATA.DATASET"] == "cityscapes"
    assert man["counts"]["label_shape"] == [20, 40]
    assert "thing classes" in capsys.readouterr().out


def test_fork_export_full_resolution_uint16(tmp_path):
    folder, js = write_panoptic(tmp_path)
    root = city_root(tmp_path)
    out = tmp_path / "fork"
    assert convert("--panoptic-dir", folder, "--cityscapes-root", root, "--out", out, "--target", "cups-fork") == 0
    # monocular_ups pseudo_labels/commands/convert_to_cups_format.py main: uint16 instances at full resolution,
    # one <stem>_leftImg8bit.pt per image with float32 "distribution all pixels"/"... inside object proposals"
    for k, s in enumerate(STEMS):
        inst = io.read_png(out / f"{s}_leftImg8bit_instance.png")
        assert inst.dtype == np.uint16 and inst.shape == (H, W)
        pt = torch.load(out / f"{s}_leftImg8bit.pt")
        assert set(pt) == {"distribution all pixels", "distribution inside object proposals"}
        assert pt["distribution all pixels"].dtype == torch.float32
        # refs/cups/cups/data/pseudo_label_dataset.py __getitem__: labels resized by DATA.SCALE, nearest
        sample = export.read_cups_pair(out / f"{s}_leftImg8bit_semantic.png", out / f"{s}_leftImg8bit_instance.png",
                                       loader_scale=0.625)
        sem, ins = expected(k)
        assert np.array_equal(sample.semantic, export.resize_nearest(sem, (20, 40)))
        assert same_partition(sample.instances, export.resize_nearest(ins, (20, 40)))
        full = export.read_cups_pair(out / f"{s}_leftImg8bit_semantic.png", out / f"{s}_leftImg8bit_instance.png")
        assert np.array_equal(full.semantic, sem) and same_partition(full.instances, ins)
    # thing classes absent from the data (only car, person here) get one pixel in a separate .pt
    # so that CUPS's rule still makes them things
    things, _, _, _ = export.read_cups_class_split(out, 0.08)
    assert sorted(things) == list(THING_TRAIN_IDS)


def many_instances(n_side=(16, 32), block=4):
    h, w = n_side[0] * block, n_side[1] * block
    yy, xx = np.indices((h, w))
    pan = 26000 + (yy // block) * n_side[1] + (xx // block)
    segs = [{"id": int(i), "category_id": 26, "iscrowd": 0} for i in np.unique(pan)]
    return pan, segs


def test_too_many_instances_is_an_error_with_the_count(tmp_path):
    folder, js = write_panoptic(tmp_path, stems=STEMS[:1], scenes=[many_instances()])
    inp = export.load_panoptic_input(folder, js)
    with pytest.raises(PseudoLabelsError, match=r"512 instances.*uint8 \(at most 255\)"):
        export.write_cups_folder(inp, tmp_path / "o1", target="cups")
    res = export.write_cups_folder(inp, tmp_path / "o2", target="cups-fork")
    assert res["counts"]["max_instances_per_image"] == 512


def test_missing_sequence_images_are_reported(tmp_path):
    folder, js = write_panoptic(tmp_path)
    root = city_root(tmp_path, sequence=False)
    with pytest.raises(PseudoLabelsError, match="2 of 2 images CUPS reads are missing.*ln -s leftImg8bit"):
        export.write_cups_folder(export.load_panoptic_input(folder, js), tmp_path / "o", cityscapes_root=root)
    assert convert("--panoptic-dir", folder, "--cityscapes-root", root, "--out", tmp_path / "o2",
                   "--no-image-check") == 0


def test_threshold_that_breaks_the_split_is_refused(tmp_path):
    folder, js = write_panoptic(tmp_path)
    # 8 thing classes each get p = 1/8 (ratio 1): a threshold of 0.2 would leave no thing class
    with pytest.raises(PseudoLabelsError, match=r"THING_STUFF_THRESHOLD in \[0.0000, 0.1250\)"):
        export.write_cups_folder(export.load_panoptic_input(folder, js), tmp_path / "o", threshold=0.2)


def test_crowd_pixels_kept_break_the_default_split(tmp_path):
    folder, js = write_panoptic(tmp_path)
    inp = export.load_panoptic_input(folder, js)
    # the crowd person region lowers person's inside/all ratio below CUPS's 0.08 share
    with pytest.raises(PseudoLabelsError, match=r"not \[11, .*--unmatched-things void"):
        export.write_cups_folder(inp, tmp_path / "o", unmatched_things="keep")
    res = export.write_cups_folder(inp, tmp_path / "o2", unmatched_things="keep", threshold=0.05, overwrite=True)
    assert sorted(res["cups_config"]["thing_classes"]) == list(THING_TRAIN_IDS)
    sem, _ = expected(0, "keep")
    back = export.read_cups_pair(tmp_path / "o2" / f"{STEMS[0]}_leftImg8bit_semantic.png",
                                 tmp_path / "o2" / f"{STEMS[0]}_leftImg8bit_instance.png")
    assert np.array_equal(back.semantic, export.resize_nearest(sem, (20, 40)))


def test_non_empty_folder_and_stale_files(tmp_path, capsys):
    folder, js = write_panoptic(tmp_path)
    out = tmp_path / "o"
    out.mkdir()
    stale = out / "zurich_000000_000019_leftImg8bit_instance.png"
    io.write_png(stale, np.zeros((2, 2), np.uint8))
    (out / "notes.txt").write_text("keep me")
    assert convert("--panoptic-dir", folder, "--out", out) == 2
    assert "not empty" in capsys.readouterr().err
    assert convert("--panoptic-dir", folder, "--out", out, "--overwrite") == 0
    # CUPS reads every *_instance.png of the folder: a stale one would shift the positional pairing
    assert not stale.exists() and (out / "notes.txt").exists()
    _, inst_paths, sem_paths = export.list_cups_folder(out)
    assert len(inst_paths) == len(sem_paths) == 2
