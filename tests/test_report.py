"""The report page of a table: the table as HTML, per-class metrics, the figures, job parameters."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from semiseg.data.store import Case, write_store
from semiseg.inference.export import write_label_nifti
from semiseg.metrics.csv_io import write_metrics_csv
from semiseg.reporting.report import check_schedule, markdown_to_html, reference_points, table_page

LABELS = {"background": 0, "RV": 1, "Myo": 2, "LV": 3}
TABLE = {"title": "Small table", "dataset": "toy", "seeds": [0, 1],
         "rows": [{"method": "supervised", "ratios": [10, 20], "label": "U-Net"},
                  {"method": "mean_teacher", "ratios": [10], "label": "MT"}],
         "reference": {"source": "Somebody et al., Table 2",
                       "values": {"mean_teacher": {10: {"dice": 83.65}}, "supervised": {"20": {"dice": 85.0}}}}}

TABLE_MD = """# Small table

Dataset `toy`: 4 training patients; metrics on the test set.

| Method | Labeled | Dice↑ (%) |
| :--- | :--- | ---: |
| U-Net | 1 (10%) | 80.00 ± 1.00 (paper 79.41) |
| a \\| b | 2 (20%) | not run |

- Values are mean ± sample standard deviation; see [docs/metrics.md](../../docs/metrics.md).
- Schedule: smoke
"""


def _store(path):
    cases = []
    for i in range(2):
        label = np.zeros((3, 16, 16), np.uint8)
        label[:, 2:10, 2:10] = 1
        label[:, 4:8, 4:8] = 2
        label[1, 10:14, 10:14] = 3  # the most foreground is on slice 1
        cases.append(Case(f"p{i}_frame01", f"p{i}", label / 3.0, label))
    write_store(path, name="toy", dims=2, labels=LABELS, cases=cases)
    return path


def _run(root, method, ratio, seed, dice_rv, schedule="smoke"):
    """A finished run's files, made by hand: metrics with the given RV Dice, a train log, predictions."""
    d = root / "runs" / "toy" / method / str(ratio) / f"seed{seed}"
    (d / "predictions").mkdir(parents=True)
    rows = []
    for case in ("p0_frame01", "p1_frame01"):
        for cls, name, dice in ((1, "RV", dice_rv), (2, "Myo", 0.5), (3, "LV", 0.7)):
            rows.append({"case": case, "class": cls, "class_name": name, "dice": dice, "jaccard": dice / 2,
                         "hd95": 4.0 * cls, "asd": 1.0, "pred_empty": False, "gt_empty": False})
        label = np.zeros((3, 16, 16), np.uint8)
        label[:, 2:9, 2:9] = 1
        write_label_nifti(label, {"spacing": (1, 1, 1), "origin": (0, 0, 0),
                                  "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}, d / "predictions" / f"{case}.nii.gz")
    write_metrics_csv(rows, d / "metrics.csv")
    (d / "config.json").write_text(json.dumps({
        "spec": {"schedule": {"name": schedule, "iterations": 4, "labeled_batch_size": 2, "lr": 0.01},
                 "method": {"name": method, "params": {"ema_decay": 0.99} if method == "mean_teacher" else {}}},
        "summary": {"best_val_dice": 0.5, "best_iteration": 4}}))
    terms = "ce,dice,consistency" if method == "mean_teacher" else "ce,dice"
    lines = [f"iteration,lr,total,{terms},val_dice"]
    for it in range(4):
        vals = ",".join(f"{1.0 / (it + 1):.3f}" for _ in terms.split(","))
        lines.append(f"{it},0.01,{2.0 / (it + 1):.3f},{vals},{'0.4' if it % 2 else ''}")
    (d / "train.csv").write_text("\n".join(lines) + "\n")
    return d


@pytest.fixture
def runs(tmp_path):
    dirs = [_run(tmp_path, "supervised", 10, 0, 0.8), _run(tmp_path, "supervised", 10, 1, 0.9),
            _run(tmp_path, "supervised", 20, 0, 0.85), _run(tmp_path, "supervised", 20, 1, 0.85),
            _run(tmp_path, "mean_teacher", 10, 0, 0.9), _run(tmp_path, "mean_teacher", 10, 1, 0.9)]
    return dirs


def test_markdown_tables_become_html_tables():
    out = markdown_to_html(TABLE_MD)
    assert "<h1>Small table</h1>" in out
    assert '<th style="text-align:right">Dice↑ (%)</th>' in out
    assert '<td style="text-align:right">80.00 ± 1.00 (paper 79.41)</td>' in out
    assert "<td style=\"text-align:left\">a | b</td>" in out  # an escaped bar stays in its cell
    assert '<a href="../../docs/metrics.md">docs/metrics.md</a>' in out and "<code>toy</code>" in out
    assert out.count("<tr>") == 3 and out.count("<li>") == 2
    assert "<script>" not in markdown_to_html("a <script> b")


def test_reference_points_from_one_or_several_sources():
    pts = reference_points(TABLE)
    assert {(p["method"], p["ratio"], p["value"]) for p in pts} == {("mean_teacher", 10, 83.65),
                                                                    ("supervised", 20, 85.0)}
    two = {"reference": [{"source": "A", "values": {"mt": {10: {"dice": 79.65}}}},
                         {"source": "B", "values": {"mt": {10: {"dice": 83.65}}}}]}
    assert sorted((p["source"], p["value"]) for p in reference_points(two)) == [("A", 79.65), ("B", 83.65)]


def test_the_page_shows_table_per_class_metrics_parameters_and_figures(tmp_path, runs):
    store = _store(tmp_path / "store.h5")
    (tmp_path / "t.md").write_text(TABLE_MD)
    out = table_page({"name": "small", "table": TABLE}, table_md=tmp_path / "t.md", run_dirs=runs,
                     store_path=store, out=tmp_path / "page.html")
    page = out.read_text()
    assert "<title>Small table</title>" in page and page.count("<h1>") == 1  # the .md's title is not repeated
    assert '<td style="text-align:right">80.00 ± 1.00 (paper 79.41)</td>' in page
    # per class: U-Net at 10 % has RV Dice 0.8 and 0.9 over its seeds: 85.00 ± 7.07 (sample std)
    row = re.search(r"<tr><td>U-Net</td><td>10%</td><td>2</td>(.*?)</tr>", page)[1]
    assert re.findall(r"<td>(.*?)</td>", row) == ["85.00 ± 7.07", "50.00 ± 0.00", "70.00 ± 0.00",
                                                  "4.00 ± 0.00", "8.00 ± 0.00", "12.00 ± 0.00"]
    # job parameters are each run's own
    assert page.count("<td>smoke</td>") == 6 and "ema_decay" in page and "50.00 @ 4" in page
    # dice-vs-ratio, learning curves of the 3 (method, ratio) pairs, overlays at ratios 10 and 20
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert images == ["Dice against labeled ratio", "learning curves supervised 10", "learning curves supervised 20",
                      "learning curves mean_teacher 10", "overlays 10", "overlays 20"]
    assert "Somebody et al., Table 2" in page


def test_a_page_is_not_written_beside_a_table_of_another_schedule(tmp_path, runs):
    store = _store(tmp_path / "store.h5")
    (tmp_path / "t.md").write_text(TABLE_MD.replace("Schedule: smoke", "Schedule: paper"))
    with pytest.raises(ValueError, match="the table says schedule 'paper' but its runs were trained with 'smoke'"):
        table_page({"name": "small", "table": TABLE}, table_md=tmp_path / "t.md", run_dirs=runs,
                   store_path=store, out=tmp_path / "page.html")
    assert not (tmp_path / "page.html").exists()
    mixed = {1: {"config": {"spec": {"schedule": {"name": "smoke"}}}},
             2: {"config": {"spec": {"schedule": {"name": "paper"}}}}}
    with pytest.raises(ValueError, match="different schedules"):
        check_schedule("", mixed)


# ----------------------------------------------------------------------------- the workflow's report
def _report_results(report_html: str) -> dict:
    """The report's results (path -> entry with params, caption, data_uri), as its page embeds them."""
    start = report_html.index("var results = {") + len("var results = ")
    return json.JSONDecoder().raw_decode(report_html[start:])[0]


@pytest.mark.slow
def test_snakemake_report_shows_the_page_with_the_table_s_own_parameters(tmp_path):
    """Built with --config schedule=smoke, reported without it: nothing in the report says paper."""
    import base64
    import copy

    from conftest import TINY_DATASET, TINY_SCHEDULE, make_workflow, snakemake, tiny_table, write_yaml
    from semiseg.reporting.browser import find_chromium, screenshot

    schedule = copy.deepcopy(TINY_SCHEDULE)
    schedule["paper"]["defaults"] = {**schedule["smoke"]["defaults"], "iterations": 30000}
    root = make_workflow(tmp_path / "wf", schedule=schedule,
                         tables=tiny_table(methods=("alhvr",), ratios=(25,), seeds=(0,)))  # one run: a minute
    dataset = copy.deepcopy(TINY_DATASET)
    del dataset["tiny2d"]["schedule"]  # the schedule comes from config.schedule (default: paper)
    write_yaml(root / "config" / "datasets" / "tiny.yaml", dataset)
    built = snakemake(root, "--config", "schedule=smoke")
    assert built.returncode == 0, built.stderr[-4000:]
    made = snakemake(root, "--report", "report.html")
    assert made.returncode == 0, made.stderr[-4000:]

    report = (root / "report.html").read_text()
    results = _report_results(report)
    assert set(results) == {"results/report/tiny.html"}
    item = results["results/report/tiny.html"]
    job = str(item["job_properties"])  # the rule, wildcards and params the report shows beside the page
    assert "table_report" in job and "paper" not in job and "schedule" not in job, job
    assert "Tiny table tiny" in item["caption"] and "results/runs/tiny2d/alhvr/25/seed0" in item["caption"]
    page = base64.b64decode(item["data_uri"].split(",", 1)[1]).decode()
    assert page == (root / "results" / "report" / "tiny.html").read_text()
    assert "Schedule: smoke" in page and page.count("<td>smoke</td>") == 1  # the run's own schedule
    images = re.findall(r'<img alt="([^"]+)"', page)
    assert images == ["Dice against labeled ratio", "learning curves alhvr 25", "overlays 25", "ALHVR regions"]

    if find_chromium() is None:
        if os.environ.get("SEMISEG_REQUIRE_CHROMIUM"):
            pytest.fail("SEMISEG_REQUIRE_CHROMIUM is set but Chromium is not installed (scripts/install_chromium.sh)")
        pytest.skip("Chromium is not installed: the report was checked as HTML, not drawn in a browser "
                    "(apt-get install -y chromium, or scripts/install_chromium.sh)")
    from PIL import Image

    png = screenshot(root / "report.html", tmp_path / "report.png", show="report/tiny.html", size=(1600, 1000))
    menu_only = screenshot(root / "report.html", tmp_path / "menu.png", size=(1600, 1000))
    shown, menu = (np.asarray(Image.open(p).convert("L"), dtype=float) for p in (png, menu_only))
    right = slice(shown.shape[1] // 2 + 50, None)
    # the page is drawn in the report's frame: the right half has text and a table, not the menu's blank
    assert (shown[:, right] < 128).mean() > 0.01
    assert np.abs(shown[:, right] - menu[:, right]).mean() > 5
