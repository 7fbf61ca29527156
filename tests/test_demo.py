import json

from pseudo_labels import cli


def test_demo_runs_every_stage_and_prints_results(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--n", "4", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "Results on the synthetic city" in printed and "[11/11] report" in printed
    for rel in ("evaluation.json", "sweep.json", "sweep.csv", "panoptic.json", "report/report.md",
                "overlays/contact_sheet.png", "cups/manifest.json", "coco/panoptic.json"):
        assert (out / rel).exists(), rel
    ev = json.loads((out / "evaluation.json").read_text())
    sweep = json.loads((out / "sweep.json").read_text())
    # the sweep cell of the pipeline's configuration equals the pipeline's evaluation
    cell = next(r for r in sweep["results"] if r.get("grad_threshold") == 0.2 and r.get("min_area") == 1000)
    assert abs(cell["PQ"] - ev["PQ"]) < 1e-9 and abs(cell["PQ_things"] - ev["PQ_things"]) < 1e-9
    assert 0 < ev["PQ"] < 100
    # standard, reference and CUPS' protocol side by side, on the same files
    assert ev["also"]["reference"]["protocol"] == "reference" and ev["also"]["cups"]["protocol"] == "cups"
    rows = {line.split()[-1] for line in printed.splitlines() if line.startswith("ours at tau=0.20")}
    assert rows == {"standard", "reference", "cups"} and "ours at tau=0.20 (27 classes)" in printed
    # the published rows beside ours, each with its protocol
    assert any(line.startswith("published: k=80 + depth") and line.endswith("reference") for line in printed.splitlines())
    assert any(line.startswith("published: CUPS") and line.endswith("cups") for line in printed.splitlines())
    manifest = json.loads((out / "city" / "pseudo_semantic_k80" / "val" / "manifest.json").read_text())
    assert manifest["uses_ground_truth"] is True  # majority mapping reads labels, and says so
    # a rerun resumes: every stage finds its outputs and the numbers do not change
    assert cli.main(["demo", "--out", str(out), "--n", "4", "--workers", "1"]) == 0
    assert json.loads((out / "evaluation.json").read_text())["PQ"] == ev["PQ"]
