"""Evaluation-only rows: a table row that names a folder of another tool's predictions
(``{predictions, label, ratio}``) is scored like a run and shown beside the runs, and
``semiseg audit`` follows its cell to the folder.

The stages are run here through the command line, as the workflow's rules run them (fast: no
training), the report page's among them; one tiny Snakemake build, marked slow, puts a
predictions row beside a trained row, on the table and on its report page.
The scoring's own refusals (a missing or an extra case, a geometry mismatch) are tested in
tests/test_nnunet.py.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import SimpleITK as sitk

from conftest import make_workflow, snakemake, tiny_table
from test_report import _report_results
from semiseg import paths
from semiseg.cli import main
from semiseg.config import ConfigError, dataset_source, load_config, table_externals, table_fingerprint, table_runs
from semiseg.config import table_spec
from semiseg.data.store import Store
from semiseg.metrics.csv_io import read_metrics_csv
from semiseg.metrics.summary import summarise
from semiseg.reporting.audit import MISMATCH, OK, audit, format_audit
from semiseg.reporting.audit.chain import _parse_table
from semiseg.reporting.tables import format_cell
from semiseg.table_config import external_key

LABEL = "nnU-Net (labeled only)"
KEY = "external_nnu_net_labeled_only"


def _table(folder, *, method_row=True) -> dict:
    table = tiny_table(methods=("supervised",) if method_row else ())
    table["tiny"]["rows"].append({"predictions": str(folder), "label": LABEL, "ratio": 25})
    return table


def test_a_predictions_row_is_keyed_and_no_run(tmp_path):
    root = make_workflow(tmp_path / "wf", tables=_table("preds"))
    cfg = load_config(root=root)
    row = cfg["tables"]["tiny"]["rows"][1]
    assert row["method"] == KEY == external_key(LABEL) and row["ratios"] == [25]
    assert row["predictions"] == str(root / "preds")  # a relative folder is the workflow directory's
    assert table_runs(cfg, "tiny") == [("tiny2d", "supervised", 25, 0)]
    assert table_externals(cfg, "tiny") == [(KEY, 25, str(root / "preds"))]
    # the folder is part of what the table was built from
    other = load_config(root=make_workflow(tmp_path / "wf2", tables=_table("other_preds")))
    assert table_fingerprint(cfg, "tiny") != table_fingerprint(other, "tiny")
    assert "sliding_window" not in table_spec(cfg, "tiny")


@pytest.mark.parametrize("row, words", [
    ({"predictions": "p", "label": "x"}, "ratio"),  # schema: a predictions row needs its ratio
    ({"predictions": "p", "label": "x", "ratio": 25, "method": "supervised"}, "method"),
    ({"predictions": "p", "label": "x", "ratio": 30}, "ratio 30"),  # not a ratio of the dataset
    ({"predictions": "p", "label": "U-Net!", "ratio": 25}, "rows.2.label"),  # the key of rows.1's label
])
def test_a_bad_predictions_row_names_its_field(tmp_path, row, words):
    table = _table("preds")
    table["tiny"]["rows"][1]["label"] = "U-Net"
    table["tiny"]["rows"].append(row)
    with pytest.raises(ConfigError) as err:
        load_config(root=make_workflow(tmp_path / "wf", tables=table))
    assert "tiny.yaml" in str(err.value) and words in str(err.value), err.value


def test_no_row_compares_with_a_predictions_row(tmp_path):
    table = _table("preds")
    table["tiny"]["rows"][0]["compare_to"] = KEY  # no seeds to pair the supervised runs with
    with pytest.raises(ConfigError, match=rf"tiny\.rows\.0\.compare_to: '{KEY}' is no other row"):
        load_config(root=make_workflow(tmp_path / "wf", tables=table))


def test_a_key_that_names_a_method_is_refused(tmp_path):
    methods = {KEY: {"algorithm": "supervised", "description": "a method whose name a row's key takes"}}
    root = make_workflow(tmp_path / "wf", tables=_table("preds"), methods_extra=methods)
    with pytest.raises(ConfigError, match=r"tiny\.rows\.1\.label: its key 'external_nnu_net_labeled_only' is a method"):
        load_config(root=root)


# -- the stages, run as the rules run them -----------------------------------------------------------------
def _data_stages(root: Path) -> dict:
    """fetch, preprocess and split (ratio 25) of tiny2d under ``root``/results, with their records."""
    cfg = load_config(root=root)
    ds = cfg["datasets"]["tiny2d"]
    res = Path("results")
    raw, store, desc = res / paths.raw_dir("tiny2d"), res / paths.store("tiny2d"), res / paths.descriptor("tiny2d")
    split = res / paths.split("tiny2d", 25)
    for argv in (["fetch", "--dataset", "tiny2d", "--source", json.dumps(dataset_source(cfg, "tiny2d")), "--out",
                  str(raw)],
                 ["preprocess", "--dataset", "tiny2d", "--layout", ds["source"]["layout"], "--raw", str(raw),
                  "--labels", json.dumps(ds["labels"]), "--dims", "2", "--params", "{}", "--store", str(store),
                  "--descriptor", str(desc)],
                 ["split", "--descriptor", str(desc), "--ratio", "25", "--labeled-patients", "1", "--out", str(split)]):
        assert main(["--rule", argv[0], *argv]) == 0
    return {"cfg": cfg, "store": root / store, "descriptor": root / desc, "split": root / split}


def _write_predictions(store_path: Path, split_path: Path, folder: Path) -> None:
    """Each test case's labels, one voxel of each changed, on the case's grid, as another tool writes them."""
    folder.mkdir(parents=True)
    with Store(store_path) as store:
        for i, case in enumerate(json.loads(split_path.read_text())["cases"]["test"]):
            label = store.read(case)[1].copy()
            label[0, 10 + i, 10] = (label[0, 10 + i, 10] + 1) % 4
            img = sitk.GetImageFromArray(label)
            geometry = store.geometry(case)
            img.SetSpacing(geometry["spacing"])
            img.SetOrigin(geometry["origin"])
            img.SetDirection(geometry["direction"])
            sitk.WriteImage(img, str(folder / f"{case}.nii.gz"))


def _change_a_voxel(folder: Path) -> None:
    """Edit the first prediction of ``folder`` after it was scored (background <-> class 1 at a corner)."""
    path = sorted(folder.glob("*.nii.gz"))[0]
    img = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(img)
    array[0, 0, 0] = 1 - min(int(array[0, 0, 0]), 1)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(path))


def _cell_of(table_path: Path, label: str) -> str:
    rows, _ = _parse_table(table_path.read_text())
    return next(r for r in rows if r["name"] == label)["cells"]["Dice↑ (%)"]


def _expected_dice(folder, store, split, out) -> str:
    """What `semiseg evaluate-external` scores the folder at, as the table prints one value."""
    assert main(["evaluate-external", "--predictions", str(folder), "--store", str(store), "--split", str(split),
                 "--out", str(out)]) == 0
    return format_cell([summarise(read_metrics_csv(out))["dice"] * 100])


@pytest.fixture
def stages(tmp_path, monkeypatch):
    """A table of one predictions row, built by the stages' command lines in a tiny workflow copy."""
    folder = tmp_path / "nnunet_preds"
    root = make_workflow(tmp_path / "wf", tables=_table(folder, method_row=False))
    monkeypatch.chdir(root)
    data = _data_stages(root)
    _write_predictions(data["store"], data["split"], folder)
    metrics = Path("results") / paths.external_file("tiny", KEY)
    assert main(["--rule", "evaluate_external", "evaluate-external", "--predictions", str(folder), "--store",
                 os.path.relpath(data["store"]), "--split", os.path.relpath(data["split"]), "--out",
                 str(metrics)]) == 0
    table = Path("results") / paths.table("tiny")
    assert main(["--rule", "table", "table", "--spec", json.dumps(table_spec(data["cfg"], "tiny")), "--descriptor",
                 os.path.relpath(data["descriptor"]), "--metrics", str(metrics), "--out", str(table)]) == 0
    return {**data, "root": root, "folder": folder, "table": root / table, "tmp": tmp_path}


def test_the_row_shows_what_evaluate_external_scores(stages):
    expected = _expected_dice(stages["folder"], stages["store"], stages["split"], stages["tmp"] / "m.csv")
    assert 90 < float(expected) < 100  # one voxel of each case changed
    assert _cell_of(stages["table"], LABEL) == expected  # one value: no ± over seeds, no (k/n seeds)
    rows, _ = _parse_table(stages["table"].read_text())
    assert rows[0]["cells"]["Unlabeled"] == "—"  # the tool's use of unlabeled cases is not known
    text = stages["table"].read_text()
    assert f"{LABEL}: {stages['folder']} (sha256 " in text


def test_the_row_s_difference_and_cost_cells_say_they_do_not_apply(stages):
    """No seeds to pair by and no training recorded here: ``—`` in both columns, and the footer
    says why (before, the cost cell read "not recorded", as for a run that lost its record)."""
    spec = table_spec(stages["cfg"], "tiny")
    spec["table"] = {**spec["table"], "columns": ["dice", "difference", "cost"],
                     "bootstrap": {"resamples": 100, "confidence": 0.95, "seed": 0}}
    out = stages["tmp"] / "with_columns.md"
    metrics = Path("results") / paths.external_file("tiny", KEY)
    assert main(["table", "--spec", json.dumps(spec), "--descriptor", str(stages["descriptor"]), "--metrics",
                 str(metrics), "--out", str(out)]) == 0
    rows, _ = _parse_table(out.read_text())
    cells = next(r for r in rows if r["name"] == LABEL)["cells"]
    assert cells["ΔDice vs comparator (%)"] == "—" and cells["Cost (device time per run, peak memory)"] == "—"
    assert "ΔDice —: no seeds to pair by; cost —: its training is not recorded here" in out.read_text()


def test_the_audit_reaches_the_folder(stages):
    result = audit(stages["table"], row=LABEL, ratio=25, root=stages["root"])
    assert result["status"] == OK, format_audit(result)
    (run,) = result["runs"]
    folder_link = next(lk for lk in run["links"] if lk["name"] == "predictions")
    assert Path(stages["root"], folder_link["path"]).resolve() == stages["folder"].resolve()
    assert [(c["stage"], c["role"], c["status"]) for c in folder_link["checks"]] == [("evaluate-external", "read", OK)]
    assert {s["stage"] for s in result["steps"].values()} == {"table", "evaluate-external", "split", "preprocess",
                                                                "fetch"}
    assert "predictions row" in format_audit(result)
    # a prediction changed after the row was scored: the folder no longer matches its record
    _change_a_voxel(stages["folder"])
    tampered = audit(stages["table"], row=KEY, ratio=25, root=stages["root"])
    folder_link = next(lk for lk in tampered["runs"][0]["links"] if lk["name"] == "predictions")
    assert tampered["status"] == MISMATCH and folder_link["status"] == MISMATCH


def test_the_report_page_shows_the_row_as_evaluate_external_scored_it(stages):
    """The report stage, as rule table_report runs it: the row's per-class values are its
    metrics.csv's, and the page names the folder with the checksum its scoring recorded."""
    metrics = Path("results") / paths.external_file("tiny", KEY)
    page = Path("results") / paths.report_page("tiny")
    cfg = stages["cfg"]
    spec = {"name": "tiny", "table": cfg["tables"]["tiny"]}
    assert main(["--rule", "table_report", "report", "--spec", json.dumps(spec), "--table", str(stages["table"]),
                 "--store", str(stages["store"]), "--runs", "--external", str(metrics), "--out", str(page)]) == 0
    html = page.read_text()
    per_class = summarise(read_metrics_csv(metrics))["per_class"]
    row = re.search(rf"<tr><td>{re.escape(LABEL)}</td><td>25%</td><td>none: evaluation only</td>(.*?)</tr>", html)
    assert re.findall(r"<td>(.*?)</td>", row[1]) == [f"{100 * per_class[c]['dice']:.2f}" for c in per_class] + \
        [f"{per_class[c]['hd95']:.2f}" for c in per_class]
    record = json.loads((metrics.parent / "provenance.evaluate-external.json").read_text())
    sha = record["spec"]["predictions"]["sha256"]
    assert f"<td><code>{stages['folder']}</code></td><td><code>{sha[:16]}</code></td>" in html
    assert re.findall(r'<img alt="([^"]+)"', html) == ["Dice against labeled ratio", "overlays 25"]
    # the page's record names the metrics it read: `semiseg audit` and a rerun see what it shows
    report_record = json.loads(page.with_suffix(".provenance.json").read_text())
    assert str(metrics) in json.dumps(report_record["inputs"])


@pytest.mark.slow
def test_a_predictions_row_beside_a_trained_row_in_one_build(tmp_path):
    # the predictions are made on the store the workflow will make (the synthetic source is seeded)
    scratch = make_workflow(tmp_path / "scratch", tables=_table("unused"))
    cwd = os.getcwd()
    os.chdir(scratch)
    try:
        data = _data_stages(scratch)
    finally:
        os.chdir(cwd)
    folder = tmp_path / "nnunet_preds"
    _write_predictions(data["store"], data["split"], folder)

    root = make_workflow(tmp_path / "wf", tables=_table(folder))
    done = snakemake(root)
    assert done.returncode == 0, done.stderr[-3000:]
    results = root / "results"
    assert (results / paths.external_file("tiny", KEY)).is_file()
    assert not (results / "runs" / "tiny2d" / KEY).exists()
    table = results / paths.table("tiny")
    expected = _expected_dice(folder, results / paths.store("tiny2d"), results / paths.split("tiny2d", 25),
                              tmp_path / "m.csv")
    assert _cell_of(table, LABEL) == expected
    assert _cell_of(table, "supervised") != "not run"  # the trained row beside it
    result = audit(table, row=LABEL, ratio=25, root=root)
    assert result["status"] == OK, format_audit(result)
    record = "results/" + paths.external_file("tiny", KEY, "provenance.evaluate-external.json")
    assert result["steps"][record]["rule"] == "evaluate_external"
    # the report page shows both rows' per-class metrics, the predictions row's as evaluation only
    page = (results / paths.report_page("tiny")).read_text()
    assert re.search(r"<tr><td>supervised</td><td>25%</td><td>1</td>", page)
    assert re.search(rf"<tr><td>{re.escape(LABEL)}</td><td>25%</td><td>none: evaluation only</td>", page)
    # the Snakemake report's caption of the page links the row's scoring beside the runs
    made = snakemake(root, "--report", "report.html")
    assert made.returncode == 0, made.stderr[-3000:]
    caption = _report_results((root / "report.html").read_text())["results/report/tiny.html"]["caption"]
    assert "Evaluation-only rows" in caption and f"results/external/{paths.external_key('tiny', KEY)}" in caption
    # a changed file of the folder scores the row again (the folder's checksum is a param): no run retrains,
    # and the page, whose input the row's metrics.csv is, is drawn again from them
    _change_a_voxel(folder)
    again = snakemake(root, "--dry-run", "--printshellcmds")
    assert again.returncode == 0, again.stderr[-3000:]
    out = again.stdout + again.stderr
    rules = set(re.findall(r"^(?:local)?rule (\w+):", out, re.MULTILINE)) - {"all"}
    assert rules == {"evaluate_external", "table", "table_report"}
    assert f"--external results/{paths.external_file('tiny', KEY)} " in out


def test_the_row_s_oracle_cell_says_it_does_not_apply(stages):
    """A table with `oracle`: another tool's training left no snapshots here, ``—`` and the footer says so."""
    from semiseg.reporting.oracle import ORACLE_TITLE

    spec = table_spec(stages["cfg"], "tiny")
    spec["table"] = {**spec["table"], "oracle": {"every": 2}}
    out = stages["tmp"] / "with_oracle.md"
    metrics = Path("results") / paths.external_file("tiny", KEY)
    assert main(["table", "--spec", json.dumps(spec), "--descriptor", str(stages["descriptor"]), "--metrics",
                 str(metrics), "--out", str(out)]) == 0
    rows, _ = _parse_table(out.read_text())
    assert next(r for r in rows if r["name"] == LABEL)["cells"][ORACLE_TITLE] == "—"
    assert "best on test —: no snapshots of its training here" in out.read_text()
