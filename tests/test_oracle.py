"""The test-selection oracle (a table's ``oracle: {every: K}``): the replay of a run with its
snapshots, the best-of selection and the table's column by hand, the config's errors, and its
separation from the honest pipeline (the same honest jobs with and without it; the audit of an
honest cell never reaches an oracle file)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import make_workflow, snakemake, tiny_table
from helpers import run_spec, tiny_store
from semiseg import paths
from semiseg.config import ConfigError, load_config
from semiseg.engine.loop import train
from semiseg.engine.oracle import oracle_train, snapshot_iterations
from semiseg.inference.run import infer
from semiseg.metrics.csv_io import read_metrics_csv, write_metrics_csv
from semiseg.metrics.evaluate import evaluate
from semiseg.metrics.oracle import best_snapshot, oracle_evaluate
from semiseg.metrics.summary import summarise
from semiseg.reporting.build import _oracle_bests
from semiseg.reporting.oracle import ORACLE_TITLE
from semiseg.reporting.tables import build_table


def _rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]


# ----------------------------------------------------------------------------- the replay
def test_snapshots_are_every_kth_iteration_and_the_last():
    assert snapshot_iterations(4, 3) == [3, 4]
    assert snapshot_iterations(4, 2) == [2, 4]
    assert snapshot_iterations(4, 1) == [1, 2, 3, 4]
    assert snapshot_iterations(4, 9) == [4]


def test_the_replay_on_cpu_ends_with_the_honest_runs_weights_and_scores_each_snapshot(tmp_path):
    store, split = tiny_store(tmp_path / "store.h5")
    # no val case: the honest run keeps its last weights, which the replay's last snapshot must equal
    cases = json.loads(split.read_text())
    cases["cases"]["val"] = []
    split.write_text(json.dumps(cases))
    spec = run_spec("mean_teacher", iterations=4)
    honest, oracle = tmp_path / "runs" / "run", tmp_path / "oracle" / "run"
    train(spec, store, split, honest, progress=False)
    summary = oracle_train(spec, store, split, oracle, every=3, progress=False, checkpoint_interval=2)

    assert summary["snapshots"] == [3, 4] and not (oracle / "checkpoints").exists()
    assert sorted(p.name for p in (oracle / "snapshots").iterdir()) == ["iter3", "iter4"]
    last = torch.load(oracle / "snapshots" / "iter4" / "model.pt", weights_only=True)
    final = torch.load(honest / "model.pt", weights_only=True)
    assert last.keys() == final.keys() and all(torch.equal(last[k], final[k]) for k in final)
    earlier = torch.load(oracle / "snapshots" / "iter3" / "model.pt", weights_only=True)
    assert any(not torch.equal(earlier[k], final[k]) for k in final)
    # the replay's loss terms are the honest run's
    assert (oracle / "train.csv").read_text() == (honest / "train.csv").read_text()

    scored = oracle_evaluate(oracle / "snapshots", store, split, oracle / "test", oracle / paths.ORACLE_SUMMARY)
    assert [s["iteration"] for s in scored["snapshots"]] == [3, 4]
    assert scored["best"] == max(scored["snapshots"], key=lambda s: (s["dice"], -s["iteration"]))
    assert json.loads((oracle / paths.ORACLE_SUMMARY).read_text())["best_iteration"] == scored["best_iteration"]
    # the last snapshot is scored exactly as the honest pipeline scores the run
    infer(honest, store, split, honest / "predictions", device="cpu")
    evaluate(honest / "predictions", store, honest / "metrics.csv")
    assert (oracle / "test" / "iter4" / "metrics.csv").read_bytes() == (honest / "metrics.csv").read_bytes()


# ----------------------------------------------------------------------------- the selection and the column
def _metrics(path, dice: list[float]):
    """A metrics.csv of cases c0, c1 with one class whose Dice are `dice` (the other metrics 1.0)."""
    write_metrics_csv([{"case": f"c{i}", "class": 1, "class_name": "fg", "dice": d, "jaccard": d, "hd95": 1.0,
                        "asd": 1.0, "pred_empty": False, "gt_empty": False} for i, d in enumerate(dice)], path)
    return summarise(read_metrics_csv(path))


def test_the_best_snapshot_is_the_highest_test_dice_and_the_earliest_of_a_tie(tmp_path):
    scores = [{"iteration": it, **_metrics(tmp_path / f"{it}.csv", dice)}
              for it, dice in ((1, [0.5, 0.7]), (2, [0.9, 0.6]), (3, [0.8, 0.7]), (4, [0.7, 0.8]))]
    # means 0.60, 0.75, 0.75, 0.75: the tie goes to iteration 2
    assert [round(s["dice"], 10) for s in scores] == [0.6, 0.75, 0.75, 0.75]
    assert best_snapshot(scores)["iteration"] == 2
    assert best_snapshot(scores[2:])["iteration"] == 3
    with pytest.raises(ValueError, match="no snapshot"):
        best_snapshot([])


def _spec(**extra) -> dict:
    return {"title": "T", "dataset": "tiny2d", "seeds": [0, 1], "oracle": {"every": 1000},
            "rows": [{"method": "supervised", "ratios": [10], "label": "U-Net"},
                     {"method": "mean_teacher", "ratios": [10], "label": "MT"}], **extra}


def _summary(dice: float) -> dict:
    return {"dice": dice, "jaccard": dice - 0.1, "hd95": 2.0, "asd": 1.0}


def test_the_oracle_column_stands_beside_the_honest_dice_with_hand_computed_values():
    results = {("supervised", 10, 0): _summary(0.60), ("supervised", 10, 1): _summary(0.62),
               ("mean_teacher", 10, 0): _summary(0.70), ("mean_teacher", 10, 1): None}
    oracle = {("supervised", 10, 0): {"dice": 0.63, "iteration": 3000},
              ("supervised", 10, 1): {"dice": 0.66, "iteration": 5000},
              ("mean_teacher", 10, 0): {"dice": 0.70, "iteration": 6000}}
    info = {"train_patients": 10, "labeled_patients": {10: 1}}
    text = build_table(_spec(), dataset_info=info, results=results, footer={}, oracle=oracle)
    rows = _rows(text)
    assert rows[0] == ["Method", "Labeled", "Unlabeled", "Dice↑ (%)", ORACLE_TITLE, "Jaccard↑ (%)", "95HD↓", "ASD↓"]
    assert ORACLE_TITLE == "Dice↑ (%) best on test — leaks the test set"
    # U-Net: best 63 and 66 -> 64.50 ± sqrt(4.5) = 2.12; gains 3 and 4 points -> +3.50
    assert rows[2][3:5] == ["61.00 ± 1.41", "64.50 ± 2.12 (+3.50 over honest; iterations 3000, 5000)"]
    # MT: one seed finished; its best snapshot is its honest value
    assert rows[3][0] == "MT (1/2 seeds)" and rows[3][3:5] == ["70.00", "70.00 (+0.00 over honest; iteration 6000)"]
    assert any("leaks the test set" in line and "every 1000 iterations" in line for line in text.splitlines())
    # a finished run without its oracle says so; a table without `oracle` has no such column
    text = build_table(_spec(), dataset_info=info, results=results, footer={},
                       oracle={k: v for k, v in oracle.items() if k[2] == 0})
    assert _rows(text)[2][4] == "63.00 (+3.00 over honest; iteration 3000) (1 of 2 runs without oracle)"
    plain = build_table({k: v for k, v in _spec().items() if k != "oracle"}, dataset_info=info, results=results,
                        footer={})
    assert ORACLE_TITLE not in plain and "leaks" not in plain


def test_a_table_reads_only_oracle_summaries_of_its_own_setting(tmp_path):
    table = _spec()
    good = tmp_path / paths.oracle_file(1000, "tiny2d", "mean_teacher", 10, 1, paths.ORACLE_SUMMARY)
    good.parent.mkdir(parents=True)
    good.write_text(json.dumps({"best_iteration": 2000, "best": {"iteration": 2000, "dice": 0.5}}))
    assert _oracle_bests(table, [good]) == {("mean_teacher", 10, 1): {"iteration": 2000, "dice": 0.5}}
    # a run at a table's own test stride: its oracle's folder carries the run's stride tag
    strided = paths.oracle_file(1000, "tiny2d", "mean_teacher", 10, 1, paths.ORACLE_SUMMARY, stride=[16, 16, 16])
    assert strided.endswith("/seed1-stride16x16x16/oracle.json")
    assert paths.parse_oracle_path(strided) == (1000, "tiny2d", "mean_teacher", 10, 1)
    other = tmp_path / paths.oracle_file(500, "tiny2d", "mean_teacher", 10, 1, paths.ORACLE_SUMMARY)
    with pytest.raises(ValueError, match="every 500 iterations .* the table asks for every 1000"):
        _oracle_bests(table, [other])
    with pytest.raises(ValueError, match="not an oracle summary"):
        _oracle_bests(table, [tmp_path / "runs/tiny2d/supervised/10/seed0/metrics.csv"])
    good.write_text(json.dumps({"best_iteration": 2000}))
    with pytest.raises(ValueError, match=re.escape(f"{good}: not an oracle summary")):
        _oracle_bests(table, [good])


# ----------------------------------------------------------------------------- the config
@pytest.mark.parametrize("oracle, columns, message", [
    ({"every": 0}, None, r"tables/tiny\.yaml: invalid configuration\n  tiny\.oracle\.every: 0 is less than the "
                         r"minimum of 1"),
    ({"every": 2, "best": "val"}, None, r"tables/tiny\.yaml: invalid configuration\n  tiny\.oracle\.best: unknown "
                                        r"field; allowed: every"),
    ({}, None, r"tables/tiny\.yaml: invalid configuration\n  tiny\.oracle: .*every"),
    ({"every": 2}, ["jaccard", "asd"], r"tables/tiny\.yaml: tiny\.oracle: its best-on-test column stands beside "
                                       r"the Dice column, which columns leaves out"),
])
def test_a_bad_oracle_entry_is_a_config_error_naming_file_and_field(tmp_path, oracle, columns, message):
    tables = tiny_table()
    tables["tiny"]["oracle"] = oracle
    if columns:
        tables["tiny"]["columns"] = columns
    root = make_workflow(tmp_path / "wf", tables=tables)
    with pytest.raises(ConfigError, match=message):
        load_config(root=root)


# ----------------------------------------------------------------------------- apart from the honest pipeline
def _dry_run(root) -> dict[str, list[str]]:
    """rule -> the shell commands of its jobs in a dry run (sorted)."""
    proc = snakemake(root, "--dry-run", "--printshellcmds", "--forceall")
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if m:
            shell = [re.sub(r"^Shell command: ", "", line.strip()) for line in block.splitlines()]
            jobs.setdefault(m.group(1), []).extend(line for line in shell if line.startswith("semiseg "))
    return {rule: sorted(cmds) for rule, cmds in jobs.items()}


def test_the_honest_jobs_are_the_same_with_and_without_the_oracle(tmp_path):
    plain = _dry_run(make_workflow(tmp_path / "plain"))
    tables = tiny_table()
    tables["tiny"]["oracle"] = {"every": 2}
    with_oracle = _dry_run(make_workflow(tmp_path / "oracle", tables=tables))
    honest = set(plain) - {"table", "table_report", "all"}  # the table and its page show the new column
    assert {"train", "infer", "evaluate"} <= honest and not any(r.startswith("oracle") for r in plain)
    assert all(len(plain[r]) == 2 for r in ("train", "infer", "evaluate"))  # supervised and mean_teacher
    assert {r: with_oracle[r] for r in honest} == {r: plain[r] for r in honest}
    assert set(with_oracle) - set(plain) == {"oracle_train", "oracle_evaluate"}
    # one replay and one scoring per run, with the run's very spec, into results/oracle/ only
    assert len(with_oracle["oracle_train"]) == len(plain["train"]) == 2
    spec = re.compile(r"--spec '([^']*)'")
    assert sorted(spec.search(c)[1] for c in with_oracle["oracle_train"]) == sorted(
        spec.search(c)[1] for c in plain["train"])
    oracle_outputs = " ".join(with_oracle["oracle_train"] + with_oracle["oracle_evaluate"])
    assert "results/oracle/every2/" in oracle_outputs and "results/runs/" not in oracle_outputs


def _assert_honest_audit(report: dict, run: str) -> None:
    """The audit of an honest cell followed the run's chain and checked no oracle file: the oracle's
    summaries appear only where the audit prints the table record's own arguments."""
    assert report["status"] == "ok" and all(r["run_dir"].endswith(run) for r in report["runs"])
    table_step = report["steps"][report["chain"][0]["made_by"]]
    assert table_step["args"]["oracle"] and all("/oracle/every" in p for p in table_step["args"]["oracle"])
    table_step["args"].pop("oracle")
    assert "oracle/every" not in json.dumps(report)  # results/oracle/every<k>/...: no link, no record of it


@pytest.mark.slow
def test_adding_the_oracle_reruns_no_honest_job_and_the_audit_never_reaches_it(tmp_path):
    root = make_workflow(tmp_path / "wf", tables=tiny_table(methods=("supervised",)))
    proc = snakemake(root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    tables_yaml = root / "config" / "tables" / "tiny.yaml"
    tables = yaml.safe_load(tables_yaml.read_text())
    tables["tiny"]["oracle"] = {"every": 2}
    tables_yaml.write_text(yaml.safe_dump(tables))
    proc = snakemake(root, "--dry-run")
    planned = set(re.findall(r"^(?:local)?rule (\w+):", proc.stdout, re.MULTILINE)) - {"all"}
    # the oracle's own jobs, and the table and its page that show it: no train, infer or evaluate
    assert planned == {"oracle_train", "oracle_evaluate", "table", "table_report"}, proc.stdout[-3000:]
    proc = snakemake(root)
    assert proc.returncode == 0, proc.stderr[-4000:]

    text = (root / "results" / "tables" / "tiny.md").read_text()
    header, _, row = _rows(text)[:3]
    assert header[3:5] == ["Dice↑ (%)", ORACLE_TITLE]
    best = json.loads((root / "results" / paths.oracle_file(2, "tiny2d", "supervised", 25, 0,
                                                            paths.ORACLE_SUMMARY)).read_text())["best"]
    assert row[4].startswith(f"{100 * best['dice']:.2f} (") and f"iteration {best['iteration']})" in row[4]
    audit = subprocess.run([sys.executable, "-m", "semiseg.cli", "audit", "results/tables/tiny.md", "--row",
                            "supervised", "--ratio", "25", "--format", "json"], cwd=root, capture_output=True,
                           text=True)
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]
    _assert_honest_audit(json.loads(audit.stdout), "runs/tiny2d/supervised/25/seed0")
    # the report page shows the table as built, the oracle's column with it
    assert ORACLE_TITLE in (root / "results" / "report" / "tiny.html").read_text()


# ----------------------------------------------------------------------------- on LA-mini
# built by the session fixture `la_smoke` (tests/conftest.py) from tests/smoke_targets.py's LA_ORACLE_TABLES


@pytest.mark.slow
@pytest.mark.data
def test_the_la_mini_oracle_shows_both_columns_and_the_audit_of_the_honest_cell_stays_honest(la_smoke):
    res = la_smoke
    rows = _rows((res / "tables" / "la_oracle.md").read_text())
    assert rows[0][3:5] == ["Dice↑ (%)", ORACLE_TITLE]
    assert [r[0] for r in rows[2:]] == ["V-Net (labeled only)", "MT"]
    for row, method in zip(rows[2:], ("supervised", "mean_teacher")):
        # one iteration, no val split: the one snapshot is the honest run's final weights (CPU replay)
        oracle = res / paths.oracle_file(1, "la", method, 10, 0)
        snapshot = torch.load(oracle / "snapshots" / "iter1" / "model.pt", weights_only=True)
        final = torch.load(res / paths.run_file("la", method, 10, 0, "model.pt"), weights_only=True)
        assert all(torch.equal(snapshot[k], final[k]) for k in final)
        honest = row[3].split(" ")[0]
        assert re.fullmatch(r"\d+\.\d\d", honest) and row[4] == f"{honest} (+0.00 over honest; iteration 1)", row
    audit = subprocess.run([sys.executable, "-m", "semiseg.cli", "audit", "results/tables/la_oracle.md", "--row",
                            "supervised", "--ratio", "10", "--format", "json"], cwd=res.parent, capture_output=True,
                           text=True)
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]
    _assert_honest_audit(json.loads(audit.stdout), "runs/la/supervised/10/seed0")
