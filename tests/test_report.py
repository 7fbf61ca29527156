import json

import numpy as np
import pytest

from pseudo_labels.stages.outputs import report
from pseudo_labels.core import io
from pseudo_labels.commands import module_main
from pseudo_labels.core.errors import PseudoLabelsError


def sweep(tmp_path, with_best=False):
    results = []
    for tau in (0.1, 0.2):
        for a in (500, 1000):
            pq = 20 + 10 * tau + a / 1000 + 0.123456
            results.append({"grad_threshold": tau, "min_area": a, "PQ": pq, "PQ_stuff": 30.5, "PQ_things": pq - 5,
                            "SQ": 70.0, "RQ": 30.0, "avg_instances": 4.25, "n_images": 3, "per_class": {"car": {}}})
    data = {"split": "val", "k": 80, "eval_resolution": [512, 1024], "depth_subdir": "depth_spidepth",
            "protocol": "standard", "results": results}
    if with_best:
        data["best"] = results[0]
    p = tmp_path / "sweep_k80.json"
    io.write_json(p, data)
    return p, data


def test_best_result_and_table():
    rows = [{"grad_threshold": 0.1, "min_area": 5, "PQ": 1.0}, {"grad_threshold": 0.2, "min_area": 5, "PQ": 3.0},
            {"grad_threshold": 0.3, "min_area": 5, "PQ": 3.0}]
    assert report.best_result(rows)["grad_threshold"] == 0.2
    table = report.results_table(rows, rows[1])
    assert table.splitlines()[0] == "| grad_threshold | min_area | PQ |"
    assert "| **0.2** | **5** | **3.00** |" in table and len(table.splitlines()) == 5


def test_heatmap_grid():
    rows = [{"grad_threshold": 0.1, "min_area": 5, "PQ": 1.0}, {"grad_threshold": 0.2, "min_area": 9, "PQ": 2.0}]
    rv, cv, g = report.heatmap_grid(rows)
    assert rv == [0.1, 0.2] and cv == [5, 9] and g[0, 0] == 1 and np.isnan(g[0, 1]) and g[1, 1] == 2


def test_report_cli_numbers_from_json(tmp_path):
    p, data = sweep(tmp_path)
    ov = tmp_path / "ov"
    io.write_png(ov / "contact_sheet.png", np.zeros((4, 4, 3), np.uint8))
    io.write_png(ov / "aachen_000000_000019_panel.png", np.zeros((4, 4, 3), np.uint8))
    out = tmp_path / "reports" / "r.md"
    assert module_main("pseudo_labels.commands.report", [str(p), "--out", str(out), "--overlays", str(ov)]) == 0
    text = out.read_text()
    best = max(data["results"], key=lambda r: r["PQ"])
    assert f"{best['PQ']:.2f}" in text and "highest PQ" in text
    for r in data["results"]:  # every row of the sweep is in the table
        assert f"| {r['grad_threshold']} | {r['min_area']} | " in text.replace("**", "")
    assert "per_class" not in text
    heat = tmp_path / "reports" / "r_heatmap_PQ.png"
    assert heat.is_file() and io.read_png(heat).ndim == 3
    assert "](r_heatmap_PQ.png)" in text and "](../ov/contact_sheet.png)" in text
    assert "](../ov/aachen_000000_000019_panel.png)" in text
    assert "- **protocol**: standard" in text


def test_existing_heatmap_and_best_are_used(tmp_path):
    p, data = sweep(tmp_path, with_best=True)
    io.write_png(tmp_path / "sweep_k80_heatmap.png", np.zeros((4, 4, 3), np.uint8))
    res = report.build_report(p, tmp_path / "r.md")
    assert not res["heatmap_generated"] and res["best"] == json.loads(p.read_text())["best"]
    assert "](sweep_k80_heatmap.png)" in (tmp_path / "r.md").read_text()


def test_bad_sweep_json_names_the_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"results": []}')
    with pytest.raises(PseudoLabelsError, match="bad.json"):
        report.build_report(p, tmp_path / "r.md")
