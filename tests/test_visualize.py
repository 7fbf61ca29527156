import numpy as np

from pseudo_labels.stages.outputs import visualize
from pseudo_labels.core import io
from pseudo_labels.datasets.cityscapes import TRAIN_ID_COLORS
from pseudo_labels.commands import module_main
from tests.test_convert_to_cups_format import H, W, city_root
from tests.test_export import STEMS, write_panoptic


def test_colorize_semantic_uses_cityscapes_palette():
    t = np.array([[0, 13, 255]], np.uint8)
    rgb = visualize.colorize_semantic(t)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 3, 3)
    assert rgb[0, 0].tolist() == TRAIN_ID_COLORS[0].tolist() == [128, 64, 128]  # road
    assert rgb[0, 1].tolist() == TRAIN_ID_COLORS[13].tolist()
    assert rgb[0, 2].tolist() == [0, 0, 0]


def test_colorize_instances_distinct_and_background_black():
    inst = np.array([[0, 1, 2], [26001, 26001, 0]])
    rgb = visualize.colorize_instances(inst)
    assert (rgb[inst == 0] == 0).all()
    colors = {tuple(rgb[inst == i][0]) for i in (1, 2, 26001)}
    assert len(colors) == 3 and (0, 0, 0) not in colors


def test_make_panel_shape_and_optional_tiles():
    img = np.full((20, 40, 3), 100, np.uint8)
    sem = np.zeros((20, 40), np.uint8)
    inst = np.zeros((20, 40), np.int32)
    inst[5:10, 5:10] = 3
    p3 = visualize.make_panel(img, sem, inst, tile_width=40)
    depth = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (20, 1))
    depth[:, 20:] += 5  # a depth edge
    p5 = visualize.make_panel(img, sem, inst, depth, sem, tile_width=40)
    assert p3.dtype == np.uint8 and p3.ndim == 3 and p5.shape[0] == p3.shape[0]
    assert p5.shape[1] == 5 * 40 + 4 * 4 and p3.shape[1] == 3 * 40 + 2 * 4
    edges = visualize.depth_edges_image(depth)
    assert (edges[:, 19:22] == (255, 40, 40)).all(axis=-1).any() and not (edges[:, :10] == (255, 40, 40)).all(-1).any()


def test_contact_sheet_grid():
    tiles = [np.full((10, 20, 3), k * 20, np.uint8) for k in range(5)]
    sheet = visualize.contact_sheet(tiles, columns=2, pad=2)
    assert sheet.shape == (3 * 10 + 4 * 2, 2 * 20 + 3 * 2, 3)


def test_cli_writes_panels_and_sheet(tmp_path):
    folder, js = write_panoptic(tmp_path)
    root = city_root(tmp_path, split="val", sequence=False)
    city = STEMS[0].split("_")[0]
    io.write_png(root / "gtFine" / "val" / city / f"{STEMS[0]}_gtFine_labelTrainIds.png", np.zeros((H, W), np.uint8))
    io.write_npy(tmp_path / "depth" / f"{STEMS[0]}.npy", np.random.default_rng(0).random((H, W)).astype(np.float32))
    out = tmp_path / "ov"
    rc = module_main("pseudo_labels.commands.visualize", ["--cityscapes-root", str(root), "--split", "val", "--panoptic-dir",
                                                 str(folder), "--depth_dir", str(tmp_path / "depth"), "--out", str(out),
                                                 "--n", "2", "--tile-width", "64"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}_panel.png" for s in STEMS] + ["contact_sheet.png", "manifest.json"])
    p0, p1 = io.read_png(out / f"{STEMS[0]}_panel.png"), io.read_png(out / f"{STEMS[1]}_panel.png")
    assert p0.shape[1] == 5 * 64 + 16 and p1.shape[1] == 3 * 64 + 8  # depth + GT only for the first
    man = io.read_manifest(out)
    assert man["uses_ground_truth"] and man["counts"]["panels_with_gt"] == 1
