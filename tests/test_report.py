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
    images = re.findall(r'<img alt="([^"]+)" src="data:image/(?:png|jpeg);base64,', page)
    assert images == ["Dice against labeled ratio", "validation Dice of every row", "learning curves supervised 10, 20",
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
    assert images == ["Dice against labeled ratio", "validation Dice of every row", "learning curves alhvr 25",
                      "overlays 25", "ALHVR regions"]

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

    # the landing page links each table; one click on it shows the page as the menu's result does
    assert "results/report/tiny.html</a>" in report and "javascript:app.setView(" in report
    clicked = screenshot(root / "report.html", tmp_path / "clicked.png", click="results/report/tiny.html",
                         size=(1600, 1000))
    clicked = np.asarray(Image.open(clicked).convert("L"), dtype=float)
    assert np.abs(clicked[:, right] - shown[:, right]).mean() < 1 and np.abs(clicked - menu).mean() > 5


# ----------------------------------------------------------------------------- rows that share a method
TWO_UNETS = {"title": "Two U-Nets", "dataset": "toy", "seeds": [0, 1],
             "rows": [{"method": "supervised", "ratios": [10], "label": "U-Net (labeled only)"},
                      {"method": "mean_teacher", "ratios": [10], "label": "MT"},
                      {"method": "supervised", "ratios": [20], "label": "U-Net (all labeled, upper bound)"}],
             "reference": {"source": "Somebody et al., Table 2",
                           "values": {"supervised": {10: {"dice": 79.0}, 20: {"dice": 91.0}}}}}


def _page_and_figures(spec: dict, **kwargs) -> tuple[str, list]:
    """:func:`table_page`'s page, and every matplotlib figure it drew, in order."""
    from semiseg.reporting import report_figures

    figures = []
    real = report_figures._figure

    def recording(*args, **kw):
        figures.append(real(*args, **kw))
        return figures[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report_figures, "_figure", recording)
        return table_page(spec, **kwargs).read_text(), figures


def test_two_rows_of_one_method_keep_their_own_names(tmp_path, runs):
    """The labeled-only U-Net at 10 % is not called the upper bound, in any part of the page."""
    store = _store(tmp_path / "store.h5")
    (tmp_path / "t.md").write_text(TABLE_MD)
    page, titles = _page_and_figures({"name": "two", "table": TWO_UNETS}, table_md=tmp_path / "t.md",
                                     run_dirs=runs, store_path=store, out=tmp_path / "page.html")
    per_class = re.findall(r"<tr><td>([^<]+)</td><td>(\d+)%</td><td>2</td>", page)
    assert per_class == [("U-Net (labeled only)", "10"), ("MT", "10"), ("U-Net (all labeled, upper bound)", "20")]
    params = re.findall(r"<tr><td>([^<]+)</td><td>(\d+)%</td><td>(\d)</td><td>smoke</td>", page)
    assert params == [("U-Net (labeled only)", "10", "0"), ("U-Net (labeled only)", "10", "1"), ("MT", "10", "0"),
                      ("MT", "10", "1"), ("U-Net (all labeled, upper bound)", "20", "0"),
                      ("U-Net (all labeled, upper bound)", "20", "1")]

    def texts(fig):
        return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]

    dice, val, curves_10, curves_mt, curves_20, overlays_10, overlays_20 = titles
    legend = [t.get_text() for ax in dice.axes for t in (ax.get_legend().get_texts() if ax.get_legend() else [])]
    assert legend == ["U-Net (labeled only)", "MT", "U-Net (all labeled, upper bound)"]
    assert any(t.startswith("U-Net (labeled only): training log") for t in texts(curves_10))
    assert any(t.startswith("U-Net (all labeled, upper bound): training log") for t in texts(curves_20))
    val_legend = [t.get_text() for ax in val.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert val_legend == ["U-Net (labeled only) (2 seeds)", "MT (2 seeds)", "U-Net (all labeled, upper bound) (2 seeds)"]
    heads_10 = " ".join(ax.get_title() for ax in overlays_10.axes).replace("\n", " ")
    heads_20 = " ".join(ax.get_title() for ax in overlays_20.axes).replace("\n", " ")
    assert "U-Net (labeled only) (seed 0)" in heads_10 and "upper bound" not in heads_10
    assert "U-Net (all labeled, upper bound) (seed 0)" in heads_20 and "labeled only" not in heads_20


# ----------------------------------------------------------------------------- a page of ACDC's size
#: The report shows a page as a data: URL in a frame; Chromium loads none over 2 MB (2 * 1024**2
#: characters). The page must stay well under it.
DATA_URL_LIMIT = 2 * 1024 ** 2


def _acdc_table() -> dict:
    """The shipped ACDC table (every row that runs: method x ratio cells of 3 seeds), on the toy
    dataset's runs."""
    import yaml

    with open(os.path.join(os.path.dirname(__file__), "..", "config", "tables", "acdc.yaml")) as fh:
        return {**yaml.safe_load(fh)["acdc"], "dataset": "toy"}


def _acdc_size_runs(root, table, rng) -> tuple[list, object]:
    """Fabricated runs of every run cell of ``table``: ACDC-like slices (20 test cases of 8 x 224 x 192),
    a 3000-iteration train.csv (BCP's with its stage flag), predictions of each cell's first seed."""
    import pandas as pd

    yy, xx = np.mgrid[:224, :192]
    cases = []
    for i in range(20):
        cy, cx = 112 + rng.integers(-20, 20), 96 + rng.integers(-20, 20)
        r = np.hypot(yy - cy, xx - cx)
        label = np.where(r < 18, 3, np.where(r < 26, 2, np.where((r < 40) & (xx < cx - 10), 1, 0))).astype(np.uint8)
        image = 0.3 + 0.2 * label + 0.1 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + rng.normal(0, 0.05, (8, 224, 192))
        cases.append(Case(f"p{i:03d}_frame01", f"p{i:03d}", image.astype(np.float32), np.repeat(label[None], 8, 0)))
    write_store(root / "store.h5", name="toy", dims=2, labels=LABELS, cases=cases)
    store = root / "store.h5"
    dirs = []
    it = np.arange(3000)
    for row in (r for r in table["rows"] if r.get("run", True)):
        for ratio in row["ratios"]:
            for seed in table["seeds"]:
                d = root / "runs" / "toy" / row["method"] / str(ratio) / f"seed{seed}"
                (d / "predictions").mkdir(parents=True)
                dice = min(0.95, 0.6 + ratio / 100 + rng.normal(0, 0.02))
                write_metrics_csv([{"case": c.case_id, "class": v, "class_name": n, "dice": dice, "jaccard": dice / 2,
                                    "hd95": 3.0 * v, "asd": 1.0, "pred_empty": False, "gt_empty": False}
                                   for c in cases for n, v in LABELS.items() if v], d / "metrics.csv")
                (d / "config.json").write_text(json.dumps({"spec": {
                    "schedule": {"name": "smoke", "iterations": 3000}, "method": {"name": row["method"], "params": {}}}}))
                log = {"iteration": it, "lr": 0.01 * (1 - it / 3000) ** 0.9,
                       "total": 1 / (1 + it / 300) + rng.normal(0, 0.05, it.size),
                       "ce": 0.5 / (1 + it / 300) + rng.normal(0, 0.03, it.size),
                       "dice": 0.5 / (1 + it / 500) + rng.normal(0, 0.03, it.size),
                       "consistency": rng.gamma(2, 0.01, it.size),
                       "val_dice": np.where((it + 1) % 200 == 0, dice - 0.3 * np.exp(-it / 800), np.nan)}
                if row["method"] == "bcp":
                    log["stage"] = (it >= 1000).astype(float)
                pd.DataFrame(log).to_csv(d / "train.csv", index=False)
                if seed == table["seeds"][0]:
                    for c in cases[:4]:
                        pred = np.where(rng.random(c.label.shape) < 0.02, 0, c.label).astype(np.uint8)
                        write_label_nifti(pred, {"spacing": (1, 1, 1), "origin": (0, 0, 0),
                                                 "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)},
                                          d / "predictions" / f"{c.case_id}.nii.gz")
                dirs.append(d)
    return dirs, store


@pytest.fixture(scope="module")
def acdc_size_page(tmp_path_factory):
    """The real page generator on an ACDC-size table: (page path, table, runs, store)."""
    root = tmp_path_factory.mktemp("acdc_size")
    table = _acdc_table()
    dirs, store = _acdc_size_runs(root, table, np.random.default_rng(0))
    (root / "acdc.md").write_text(f"# {table['title']}\n\n| Method | Labeled |\n| :--- | :--- |\n| U-Net | 3 (5%) |\n\n"
                                  "- Schedule: smoke\n")
    page, figures = _page_and_figures({"name": "acdc", "table": table}, table_md=root / "acdc.md", run_dirs=dirs,
                                      store_path=store, out=root / "acdc.html")
    return page, figures


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]


def test_an_acdc_size_page_is_well_under_the_report_s_data_url_limit(acdc_size_page):
    """Before: 7.5 MB (PNG figures, one per method x ratio, 3 overlay slices), blank in the report."""
    import base64

    page, _ = acdc_size_page
    data_url = "data:text/html;base64," + base64.b64encode(page.encode()).decode()
    assert len(data_url) < 0.75 * DATA_URL_LIMIT, f"{len(data_url) / 1e6:.2f} MB as the report's data: URL"
    # every row is named by its own label (the U-Net rows share a method)
    per_class = re.findall(r"<tr><td>([^<]+)</td><td>(\d+)%</td><td>3</td>", page)
    assert per_class[:4] == [("U-Net (labeled only)", "5"), ("U-Net (labeled only)", "10"),
                             ("U-Net (labeled only)", "20"), ("U-Net (all labeled, upper bound)", "100")]
    table = _acdc_table()
    assert len(per_class) == sum(len(r["ratios"]) for r in table["rows"] if r.get("run", True))


def test_the_dice_against_ratio_plot_reads_at_acdc_size(acdc_size_page):
    """At most six rows a panel, each its own colour; each row once; nothing outside the figure;
    rows side by side, not on top of each other, at each ratio."""
    from matplotlib.colors import to_hex

    from semiseg.reporting.report_figures import ROWS_PER_PANEL

    _, figures = acdc_size_page
    fig = figures[0]
    assert "Dice against the labeled ratio" in _texts(fig)
    table = _acdc_table()
    named = []
    for ax in (ax for ax in fig.axes if ax.get_visible()):
        legend = ax.get_legend()
        entries = [t.get_text() for t in legend.get_texts()]
        colours = [to_hex(h.get_color()) for h in legend.legend_handles]
        assert 0 < len(entries) <= ROWS_PER_PANEL and len(set(colours)) == len(colours), (entries, colours)
        named += entries
        colours_at = {}  # x -> the colours of the points drawn there
        for line in ax.get_lines():
            for x in line.get_xdata():
                colours_at.setdefault(float(x), set()).add(to_hex(line.get_color()))
        assert all(len(c) == 1 for c in colours_at.values()), "two rows' points at the same x"
    assert named == [r["label"] for r in table["rows"] if r.get("run", True)] + \
        [r["label"] for r in table["rows"] if not r.get("run", True)]
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    drawn, frame = fig.get_tightbbox(renderer), fig.bbox
    assert drawn.x0 >= frame.x0 - 1 and drawn.y0 >= frame.y0 - 1 and drawn.x1 <= frame.x1 + 1 \
        and drawn.y1 <= frame.y1 + 1, (drawn, frame)


def test_bcp_s_stage_flag_is_a_stage_line_not_a_loss_panel(acdc_size_page):
    _, figures = acdc_size_page
    bcp = next(f for f in figures if any(t.startswith("BCP: training log") for t in _texts(f)))
    titles = [ax.get_title() for ax in bcp.axes if ax.get_visible()]
    assert titles == ["total", "ce", "dice", "consistency", "validation Dice (%)"]
    assert "dashed: the next stage starts" in " ".join(_texts(bcp))
    assert all(any(line.get_linestyle() == "--" and line.get_xdata()[0] == 1001 for line in ax.get_lines())
               for ax in bcp.axes if ax.get_visible())


def test_an_acdc_size_page_draws_inside_a_data_url_frame(acdc_size_page, tmp_path):
    """The report shows a page as a data: URL in a frame: Chromium draws it (it leaves the frame
    blank above 2 MB)."""
    import base64

    from semiseg.reporting.browser import find_chromium, screenshot

    if find_chromium() is None:
        if os.environ.get("SEMISEG_REQUIRE_CHROMIUM"):
            pytest.fail("SEMISEG_REQUIRE_CHROMIUM is set but Chromium is not installed (scripts/install_chromium.sh)")
        pytest.skip("Chromium is not installed (apt-get install -y chromium, or scripts/install_chromium.sh)")
    from PIL import Image

    page, _ = acdc_size_page
    data_url = "data:text/html;base64," + base64.b64encode(page.encode()).decode()
    host = tmp_path / "host.html"
    host.write_text(f'<!DOCTYPE html><html><body style="margin:0"><iframe src="{data_url}" '
                    'style="border:0;width:1400px;height:1200px"></iframe></body></html>')
    shot = np.asarray(Image.open(screenshot(host, tmp_path / "host.png", size=(1400, 1200))).convert("L"), float)
    # the title, the table and the first figures: dark text and lines on white, not a blank frame
    assert (shot < 128).mean() > 0.01 and shot.std() > 20


def test_overlay_column_titles_do_not_overlap(acdc_size_page):
    _, figures = acdc_size_page
    overlays = [f for f in figures if any("the same test slices" in t for t in _texts(f))]
    assert len(overlays) == 4  # 5, 10, 20 and 100 %
    for fig in overlays:
        renderer = fig.canvas.get_renderer()
        fig.draw(renderer)
        boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
        assert len(boxes) >= 3
        for left, right in zip(boxes, boxes[1:]):
            assert left.x1 < right.x0, (left, right)


# ----------------------------------------------------------------------------- evaluation-only rows
KEY = "external_nnu_net"


def _with_predictions_row(table: dict, folder) -> dict:
    """``table`` with a predictions row at 10 %, as the config loader completes it."""
    row = {"predictions": str(folder), "label": "nnU-Net", "ratio": 10, "method": KEY, "ratios": [10], "run": True}
    return {**table, "rows": [*table["rows"], row]}


def _predictions_row(root, dice_rv, sha256="ab" * 32):
    """Another tool's folder of predictions of the toy store's cases, and its scoring as the
    evaluate_external rule writes it: metrics.csv (RV Dice ``dice_rv``) and the record naming the
    folder's checksum."""
    folder = root / "nnunet_preds"
    folder.mkdir()
    metrics = root / "external" / "small" / KEY / "metrics.csv"
    metrics.parent.mkdir(parents=True)
    rows = []
    for case in ("p0_frame01", "p1_frame01"):
        label = np.zeros((3, 16, 16), np.uint8)
        label[:, 3:12, 3:12] = 2
        write_label_nifti(label, {"spacing": (1, 1, 1), "origin": (0, 0, 0),
                                  "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}, folder / f"{case}.nii.gz")
        for cls, name, dice in ((1, "RV", dice_rv), (2, "Myo", 0.4), (3, "LV", 0.6)):
            rows.append({"case": case, "class": cls, "class_name": name, "dice": dice, "jaccard": dice / 2,
                         "hd95": 5.0 * cls, "asd": 1.0, "pred_empty": False, "gt_empty": False})
    write_metrics_csv(rows, metrics)
    (metrics.parent / "provenance.evaluate-external.json").write_text(
        json.dumps({"stage": "evaluate-external", "spec": {"predictions": {"sha256": sha256}}}))
    return folder, metrics


def _legend(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_a_predictions_row_is_on_the_page_where_its_result_applies(tmp_path, runs):
    store = _store(tmp_path / "store.h5")
    (tmp_path / "t.md").write_text(TABLE_MD)
    folder, metrics = _predictions_row(tmp_path, dice_rv=0.3)
    table = _with_predictions_row(TABLE, folder)
    page, figures = _page_and_figures({"name": "small", "table": table}, table_md=tmp_path / "t.md", run_dirs=runs,
                                      store_path=store, external=[metrics], out=tmp_path / "page.html")
    # per class: its one value (no ± over seeds), and its seeds cell says why there are none
    row = re.search(r"<tr><td>nnU-Net</td><td>10%</td><td>none: evaluation only</td>(.*?)</tr>", page)[1]
    assert re.findall(r"<td>(.*?)</td>", row) == ["30.00", "40.00", "60.00", "5.00", "10.00", "15.00"]
    # Dice against ratio: one star at 10 % (mean Dice over classes: 43.33), marked in both legends
    dice = figures[0]
    assert _legend(dice) == ["U-Net", "MT", "nnU-Net (evaluation only)"]
    (star,) = [line for ax in dice.axes for line in ax.get_lines() if line.get_marker() == "*"]
    assert star.get_xdata()[0] == pytest.approx(10 * 1.04, rel=1e-6)  # the panel's third row, shifted right
    assert star.get_ydata()[0] == pytest.approx(100 * (0.3 + 0.4 + 0.6) / 3)
    assert any(t == "evaluation only: another tool's predictions" for t in _texts(dice))
    assert any(ax.get_title() == "Run or scored here" for ax in dice.axes)
    # the overlays at 10 % show its folder's predictions beside the runs'; at 20 % it has none
    images = re.findall(r'<img alt="([^"]+)"', page)
    assert images[-2:] == ["overlays 10", "overlays 20"]
    overlay_10, overlay_20 = figures[-2:]
    heads_10 = " ".join(ax.get_title() for ax in overlay_10.axes).replace("\n", " ")
    assert "nnU-Net (evaluation only)" in heads_10 and "nnU-Net" not in " ".join(ax.get_title()
                                                                                 for ax in overlay_20.axes)
    # no job parameters or training log: said by name, with what it scored instead
    assert ("Not here: nnU-Net (10%): evaluation only (another tool&#x27;s predictions), trained outside this "
            "workflow") in page
    assert f"<td><code>{folder}</code></td><td><code>{'ab' * 8}</code></td>" in page
    assert page.count("<td>smoke</td>") == 6  # the runs' parameters only


def test_the_comparison_figures_name_a_predictions_row_they_cannot_show(tmp_path, runs):
    store = _store(tmp_path / "store.h5")
    (tmp_path / "t.md").write_text(TABLE_MD)
    folder, metrics = _predictions_row(tmp_path, dice_rv=0.3)
    for d in runs:  # the runs record a cost and their algorithm, as a training writes them
        config = json.loads((d / "config.json").read_text())
        config["spec"]["method"]["algorithm"] = config["spec"]["method"]["name"]
        config["summary"].update(wall_seconds=36.0, peak_memory_mb=100.0, device="cpu", device_name="X")
        (d / "config.json").write_text(json.dumps(config))
    table = {**_with_predictions_row(TABLE, folder), "columns": ["dice", "difference", "cost"],
             "bootstrap": {"resamples": 100, "confidence": 0.95, "seed": 0}}
    page = table_page({"name": "small", "table": table}, table_md=tmp_path / "t.md", run_dirs=runs, store_path=store,
                      external=[metrics], out=tmp_path / "page.html").read_text()
    assert re.findall(r'<img alt="([^"]+)"', page)[1:3] == ["paired differences", "Dice against cost"]
    differences = page[page.index("<h2>Paired differences</h2>"):page.index("<h2>Dice against cost</h2>")]
    assert "Not in the figure: nnU-Net (10%): evaluation only" in differences and "no paired difference" in differences
    cost = page[page.index("<h2>Dice against cost</h2>"):page.index("<h2>Job parameters")]
    assert "Not in the figure: nnU-Net (10%): evaluation only" in cost and "no device time recorded here" in cost


def test_a_page_of_predictions_rows_only(tmp_path):
    """No run: the page still shows the row's per-class metrics, its point and its predictions."""
    store = _store(tmp_path / "store.h5")
    (tmp_path / "t.md").write_text(TABLE_MD.replace("- Schedule: smoke\n", ""))
    folder, metrics = _predictions_row(tmp_path, dice_rv=0.9, sha256=None)
    table = {**_with_predictions_row(TABLE, folder), "rows": _with_predictions_row(TABLE, folder)["rows"][-1:]}
    page = table_page({"name": "small", "table": table}, table_md=tmp_path / "t.md", run_dirs=[], store_path=store,
                      external=[metrics], out=tmp_path / "page.html").read_text()
    assert re.search(r"<tr><td>nnU-Net</td><td>10%</td><td>none: evaluation only</td><td>90.00</td>", page)
    assert re.findall(r'<img alt="([^"]+)"', page) == ["Dice against labeled ratio", "overlays 10"]
    assert f"<td><code>{folder}</code></td><td><code>–</code></td>" in page  # no record: no checksum to show
    assert "No run trained here: its rows are evaluation only (another tool's predictions)." in page
