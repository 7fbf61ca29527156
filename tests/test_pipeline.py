"""`pseudo-labels run --config`: same files as the commands typed by hand, resume, config errors."""

import json
from pathlib import Path

import pytest

from pseudo_labels.commands import module_main
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.paths import CLAIMS_NAME
from pseudo_labels.stages import pipeline

N, H, W = 2, 128, 256
K = 12
SUB_SEM, SUB_DEPTH = f"pseudo_semantic_k{K}", "depth_disparity"

CONFIG = f"""
[data]
root = "city"
split = "val"
out = "out"
semantic_subdir = "{SUB_SEM}"
depth_subdir = "{SUB_DEPTH}"

[runner]
workers = 1

[synth]
n = {N}
seed = 3
size = [{H}, {W}]

[features]
backbone = "builtin"

[semantics]
k = {K}
backbone = "builtin"
mapping = "majority"

[depth]
source = "disparity"
normalize = "minmax"

[instances]
grad_threshold = 0.2
min_area = 50
resolution = [{H}, {W}]

[panoptic]
resolution = [{H}, {W}]

[evaluate]
semantic = true

[sweep]
grad_thresholds = [0.1, 0.2]
min_areas = [50, 100]
resolution = [{H}, {W}]

[exports.cups]
overwrite = true

[exports.coco]
overwrite = true

[visualize]
n = 2

[report]
"""


def hand_typed(base: Path) -> None:
    """The same pipeline as CONFIG, one command at a time (what a user would type)."""
    city, out, split = base / "city", base / "out", "val"
    sem, depth = city / SUB_SEM / split, city / SUB_DEPTH / split
    res = [str(H), str(W)]
    steps = [
        ("synth", ["--out", city, "--n", N, "--seed", 3, "--size", *res, "--split", split, "--layout", "extended"]),
        ("extract_features", ["--cityscapes-root", city, "--split", split, "--backbone", "builtin",
                              "--out", city / "features"]),
        ("generate_overclustered_semantics", ["--cityscapes-root", city, "--split", split, "--k", K,
                                              "--features-dir", city / "features", "--mapping", "majority",
                                              "--output-subdir", SUB_SEM]),
        ("generate_depth", ["--cityscapes-root", city, "--split", split, "--source", "disparity", "--normalize",
                            "minmax", "--output-subdir", SUB_DEPTH]),
        ("generate_depth_guided_instances", ["--semantic-dir", sem, "--depth-dir", depth, "--output-dir",
                                             out / "instances", "--grad-threshold", "0.2", "--min-area", 50,
                                             "--resolution", *res, "--workers", 1]),
        ("generate_panoptic", ["--semantic-dir", sem, "--instance-dir", out / "instances", "--out-json",
                               out / "panoptic.json", "--out-folder", out / "panoptic", "--resolution", *res,
                               "--workers", 1]),
        ("evaluate", ["--gt-json", city / "gtFine" / "cityscapes_panoptic_val.json", "--gt-folder",
                      city / "gtFine" / "cityscapes_panoptic_val", "--pred-json", out / "panoptic.json",
                      "--pred-folder", out / "panoptic", "--gt-semantic-dir", city / "gtFine" / split,
                      "--pred-semantic-dir", sem, "--out", out / "evaluation.json", "--quiet"]),
        ("sweep", ["--cityscapes-root", city, "--split", split, "--semantic-subdir", SUB_SEM, "--depth-subdir",
                       SUB_DEPTH, "--grad-thresholds", "0.1", "0.2", "--min-areas", 50, 100, "--resolution", *res,
                       "--out", out / "sweep.json", "--workers", 1]),
        ("convert_to_cups_format", ["--panoptic-dir", out / "panoptic", "--panoptic-json", out / "panoptic.json",
                                    "--cityscapes-root", city, "--split", split, "--out", out / "cups",
                                    "--overwrite"]),
        ("export_coco", ["--panoptic-dir", out / "panoptic", "--panoptic-json", out / "panoptic.json",
                         "--out", out / "coco", "--overwrite"]),
        ("visualize", ["--cityscapes-root", city, "--split", split, "--panoptic-dir", out / "panoptic",
                       "--panoptic-json", out / "panoptic.json", "--depth-dir", city / SUB_DEPTH / split,
                       "--out", out / "overlays", "--n", 2]),
        ("report", [out / "sweep.json", "--out", out / "report" / "report.md", "--overlays", out / "overlays"]),
    ]
    for module, argv in steps:
        if module == "convert_to_cups_format":
            pipeline.link_sequence_folder(city)
        assert module_main(f"pseudo_labels.commands.{module}", [str(a) for a in argv]) == 0, module


#: keys that differ between any two runs: times, input fingerprints (file mtimes), hashes of
#: parameters that hold absolute paths (the parameters themselves are compared)
VOLATILE = {"created", "seconds", "elapsed_seconds", "fit_seconds", "inputs", "python", "sha256", "fit_hash",
            "config_hash"}


def normalised_json(path: Path, base: Path):
    return normalised(json.loads(path.read_text()), base)


def normalised(value, base: Path):
    def walk(v):
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items() if k not in VOLATILE}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, str):
            return v.replace(str(base), "<base>")
        return v

    return walk(value)


def npz_equal(a: Path, b: Path, base_a: Path, base_b: Path) -> bool:
    import numpy as np

    with np.load(a) as za, np.load(b) as zb:
        if za.files != zb.files:
            return False
        for k in za.files:
            if k == "metadata":
                ma, mb = (normalised(json.loads(str(z[k])), base) for z, base in ((za, base_a), (zb, base_b)))
                if ma != mb:
                    return False
            elif not np.array_equal(za[k], zb[k]):
                return False
    return True


def torch_load(path: Path):
    import torch

    return torch.load(path, weights_only=True)


def torch_equal(x, y) -> bool:
    import torch

    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(torch_equal(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return type(x) is type(y) and len(x) == len(y) and all(torch_equal(i, j) for i, j in zip(x, y))
    if torch.is_tensor(x):
        return torch.is_tensor(y) and torch.equal(x, y)
    return x == y


def files_of(base: Path) -> dict[str, Path]:
    skip = {pipeline.STATE_NAME, "pipeline.toml", CLAIMS_NAME}  # claims: written by commands, not library calls
    return {str(p.relative_to(base)): p for p in sorted(base.rglob("*")) if p.is_file() and p.name not in skip}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    by_hand = tmp_path_factory.mktemp("by_hand")
    hand_typed(by_hand)
    by_config = tmp_path_factory.mktemp("by_config")
    (by_config / "pipeline.toml").write_text(CONFIG)
    result = pipeline.run_pipeline(pipeline.load_pipeline_config(by_config / "pipeline.toml"), log=lambda s: None)
    return by_hand, by_config, result


def test_run_config_writes_the_same_files_as_the_commands(runs):
    by_hand, by_config, result = runs
    a, b = files_of(by_hand), files_of(by_config)
    assert sorted(a) == sorted(b)
    assert len(a) > 40 and any(k.endswith("_panel.png") for k in a) and "out/report/report.md" in a
    different = []
    for rel in a:
        if rel.endswith(".json"):
            same = normalised_json(a[rel], by_hand) == normalised_json(b[rel], by_config)
        elif rel.endswith(".npz"):  # arrays equal; the metadata JSON equal but for fit time and fingerprints
            same = npz_equal(a[rel], b[rel], by_hand, by_config)
        elif rel.endswith(".pt"):  # torch's zip names its entries after the (random) temporary file
            same = torch_equal(torch_load(a[rel]), torch_load(b[rel]))
        else:
            same = a[rel].read_bytes() == b[rel].read_bytes()
        if not same:
            different.append(rel)
    assert not different
    assert [s.name for s in result.steps] == [n for n in pipeline.STAGE_NAMES if n not in ("cause27", "dynaseg", "refine")]
    assert result.evaluation["PQ"] == json.loads((by_hand / "out" / "evaluation.json").read_text())["PQ"]
    table = pipeline.format_results(result)
    assert f"{result.evaluation['PQ']:6.2f}" in table and f"k={K} majority-mapped" in table


def test_rerun_skips_finished_work(runs):
    _, by_config, _ = runs
    panoptic_png = sorted((by_config / "out" / "panoptic").glob("*.png"))[0]
    report = by_config / "out" / "report" / "report.md"
    before = (panoptic_png.stat().st_mtime_ns, report.stat().st_mtime_ns)
    lines = []
    result = pipeline.run_pipeline(pipeline.load_pipeline_config(by_config / "pipeline.toml"), log=lines.append)
    steps = {s.name: s for s in result.steps}
    for name in ("evaluate", "sweep", "exports.cups", "exports.coco", "visualize", "report"):
        assert steps[name].skipped, name
    for name in ("features", "semantics", "depth", "instances", "panoptic"):  # resumed image by image
        step = steps[name]
        assert not step.skipped and not step.did_work, name
        assert (step.result.done, step.result.skipped) == (0, N), name
    assert not steps["synth"].did_work
    assert any("finished in an earlier run" in line for line in lines)
    assert (panoptic_png.stat().st_mtime_ns, report.stat().st_mtime_ns) == before
    assert result.evaluation["PQ"] == runs[2].evaluation["PQ"]


def test_changed_stage_reruns_it_and_what_follows(runs):
    _, by_config, _ = runs
    text = CONFIG.replace("[visualize]\nn = 2", "[visualize]\nn = 1")
    (by_config / "changed.toml").write_text(text)
    result = pipeline.run_pipeline(pipeline.load_pipeline_config(by_config / "changed.toml"), log=lambda s: None)
    steps = {s.name: s for s in result.steps}
    assert steps["sweep"].skipped and not steps["visualize"].skipped and not steps["report"].skipped
    assert json.loads((by_config / "out" / "overlays" / "manifest.json").read_text())["counts"]["panels"] == 1


def test_changed_per_image_parameter_is_refused_in_run_terms(runs):
    _, by_config, _ = runs
    text = CONFIG.replace("grad_threshold = 0.2\nmin_area = 50", "grad_threshold = 0.3\nmin_area = 50")
    assert text != CONFIG
    (by_config / "tau.toml").write_text(text)
    instances = sorted((by_config / "out" / "instances").rglob("*.png"))
    before = [p.stat().st_mtime_ns for p in instances]
    with pytest.raises(PseudoLabelsError, match=r"stage \[instances\] of .*tau.toml: .*different parameters "
                       r"grad_threshold; .*or overwrite = true in \[runner\] to recompute") as err:
        pipeline.run_pipeline(pipeline.load_pipeline_config(by_config / "tau.toml"), log=lambda s: None)
    assert "--overwrite" not in str(err.value)  # run has no such flag
    assert [p.stat().st_mtime_ns for p in instances] == before


def write(tmp_path, text):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, message", [
    ('[data]\nroot = "c"\n[instances]\nmin_aera = 5\n', "unknown key 'min_aera' in [instances]"),
    ('[data]\nroot = "c"\nfoo = 1\n[report]\n', "unknown key 'foo' in [data]"),
    ('[data]\nroot = "c"\n[segmentation]\n', "unknown table or key 'segmentation'"),
    ('[data]\nroot = "c"\n[exports.png]\n', "unknown table [exports.png]"),
    ('[data]\nroot = "c"\n[instances]\nmin_area = "big"\n', "[instances] min_area: expected an integer"),
    ('[data]\nroot = "c"\n[runner]\nworkers = 0\n[report]\n', "workers 0"),
    ('[data]\nsplit = "val"\n[report]\n', "[data] needs 'root'"),
    ('[data]\nroot = "c"\n', "no stage to run"),
    ('[data\nroot = "c"\n', "not valid TOML"),
])
def test_bad_config_names_the_key_and_the_file(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(PseudoLabelsError) as err:
        pipeline.load_pipeline_config(p)
    assert str(p) in str(err.value) and message in str(err.value)


def test_cli_errors_and_print_config(tmp_path, capsys):
    assert module_main("pseudo_labels.commands.run", ["--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: config file not found" in capsys.readouterr().err
    p = write(tmp_path, '[data]\nroot = "c"\n[sweep]\ngrad_treshold = [0.1]\n')
    assert module_main("pseudo_labels.commands.run", ["--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "grad_treshold" in err and str(p) in err and err.count("\n") == 1
    assert module_main("pseudo_labels.commands.run", ["--config", str(p), "--print-config"]) == 2
    assert "give either --config FILE" in capsys.readouterr().err  # not silently ignored
    assert module_main("pseudo_labels.commands.run", ["--print-config"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "default.toml").write_text(text)
    config = pipeline.load_pipeline_config(tmp_path / "default.toml")
    # the CUPS export stays commented out: the four official zips hold no leftImg8bit_sequence
    assert set(config.stages) == set(pipeline.STAGE_NAMES) - {"synth", "features", "cause27", "dynaseg", "refine",
                                                               "exports.cups"}
    assert config.layout.root == tmp_path / "cityscapes" and config.layout.out == tmp_path / "pipeline_out"
    inst = config.stages["instances"]
    # working resolution and A_min follow each image's size (defaults.work_resolution / scaled_min_area)
    assert (inst.grad_threshold, inst.min_area, inst.resolution) == (0.2, None, None)
    assert config.stages["panoptic"].resolution is None and config.stages["sweep"].resolution is None
    assert inst.output_dir == str(tmp_path / "pipeline_out" / "instances")


def test_values_are_type_checked_and_stage_errors_name_the_stage(tmp_path):
    config = pipeline.parse_pipeline_text(
        '[data]\nroot = "c"\n[instances]\nthing_classes = [11, 13]\nresolution = [64, 128]\n'
        '[sweep]\ngrad_thresholds = [0.1, 1]\n', tmp_path)
    assert config.stages["instances"].thing_classes == (11, 13) and config.stages["instances"].resolution == (64, 128)
    assert config.stages["sweep"].grad_thresholds == (0.1, 1.0)
    with pytest.raises(PseudoLabelsError, match=r"\[instances\] resolution: expected 2 values"):
        pipeline.parse_pipeline_text('[data]\nroot = "c"\n[instances]\nresolution = [1, 2, 3]\n', tmp_path)
    root = tmp_path / "c"  # files that pass the pre-flight (they exist) but cannot be read
    for rel in ("leftImg8bit/val/x/x_000000_000000_leftImg8bit.png", "disparity/val/x/x_000000_000000_disparity.png",
                "camera/val/x/x_000000_000000_camera.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("not an image")
    p = write(tmp_path, '[data]\nroot = "c"\n[depth]\nsource = "disparity"\n')
    with pytest.raises(PseudoLabelsError, match=r"stage \[depth\] of .*bad.toml"):
        pipeline.run_pipeline(pipeline.load_pipeline_config(p), log=lambda s: None)


def test_a_stage_may_have_its_own_worker_count(tmp_path):
    config = pipeline.parse_pipeline_text('[data]\nroot = "c"\n[runner]\nworkers = 3\n[depth]\nsource = "npy"\n'
                                          '[exports.coco]\nworkers = 1\n', tmp_path)
    assert config.options_for("depth").workers == 3 and config.options_for("exports.coco").workers == 1
    with pytest.raises(PseudoLabelsError, match=r"\[depth\] workers 0"):
        pipeline.parse_pipeline_text('[data]\nroot = "c"\n[depth]\nsource = "npy"\nworkers = 0\n', tmp_path)


REFINE_CONFIG = f"""
[data]
root = "city"
out = "out"
semantic_subdir = "{SUB_SEM}"

[synth]
n = 2
seed = 4
size = [{H}, {W}]

[semantics]
k = {K}
backbone = "builtin"
mapping = "majority"

[dynaseg]
params = {{ variant = "scf", steps = 3, work_long_side = 64, k_max = 6, max_labels = 12 }}

[refine]
method = "dynaseg"

[depth]
source = "disparity"

[instances]
min_area = 50
resolution = [{H}, {W}]

[panoptic]
resolution = [{H}, {W}]

[evaluate]
semantic = true
"""


def test_refine_stage_feeds_the_later_stages(tmp_path):
    """[dynaseg] + [refine]: the instances, panoptic and mIoU read the refined semantics."""
    from pseudo_labels.core.io import read_manifest, read_png

    config = pipeline.load_pipeline_config(write(tmp_path, REFINE_CONFIG))
    assert config.stages["dynaseg"].params.steps == 3
    refined = tmp_path / "city" / "pseudo_semantic_refined" / "val"
    assert config.stages["instances"].semantic_dir == str(refined)
    assert config.stages["refine"].semantic_dir == str(tmp_path / "city" / SUB_SEM / "val")
    result = pipeline.run_pipeline(config, log=lambda s: None)
    pngs = sorted(refined.rglob("*.png"))
    assert len(pngs) == 2 and all(read_png(p).ndim == 2 for p in pngs)
    assert read_manifest(refined)["uses_ground_truth"] is False
    assert len(list((tmp_path / "city" / "dynaseg_segments" / "val").rglob("*.png"))) == 2
    assert read_manifest(tmp_path / "out" / "instances")["inputs"]["semantic_dir"] == str(refined.resolve())
    assert result.evaluation is not None and 0 <= result.evaluation["PQ"] <= 100
    with pytest.raises(PseudoLabelsError, match=r"\[dynaseg\] params: unknown key 'stepz'"):
        pipeline.parse_pipeline_text(REFINE_CONFIG.replace("steps = 3", "stepz = 3"), tmp_path)
