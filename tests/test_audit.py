"""`semiseg audit` on a built tiny workflow: every link of a cell's chain, a tampered prediction,
stale code and config (marked slow); and the pieces that need no workflow: config staleness
compared as JSON, reading a cell's value back from the table text.

One workflow run is shared by the module (the expensive part, about two minutes on 2 cores).
It runs with a copy of the package first on PYTHONPATH, so that a code edit can be made to the
copy (never to the checkout) and judged by an audit run in a subprocess with the same PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from conftest import REPO, make_workflow
from semiseg.provenance import path_digest
from semiseg.reporting.audit import MISMATCH, OK, audit, format_audit, run_cli
from semiseg.reporting.audit.chain import _value_part
from semiseg.reporting.audit.links import Auditor, config_diff
from semiseg.reporting.tables import format_cell


# Rows with labels, so that --row can name a row either way.
TABLE = {"tiny": {"title": "Tiny audited table", "dataset": "tiny2d", "seeds": [0],
                  "rows": [{"method": "supervised", "ratios": [25], "label": "U-Net"},
                           {"method": "mean_teacher", "ratios": [25], "label": "Mean Teacher"}]}}
STAGES = {"table", "evaluate", "infer", "train", "split", "preprocess", "fetch"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("audit")
    src = base / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = {**os.environ, "PYTHONPATH": str(src)}
    root = make_workflow(base / "wf", tables=TABLE)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--directory", str(root),
                           "--snakefile", str(root / "Snakefile")],
                          capture_output=True, text=True, timeout=600, cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root, src, env


def run_audit(root, env, *args) -> subprocess.CompletedProcess:
    """`semiseg audit` on the table, with the package copy of `env`: through `python -m semiseg.cli`
    where the CLI has the subcommand, else through the module's own entry point."""
    cli = (Path(env["PYTHONPATH"]) / "semiseg" / "cli.py").read_text()
    entry = ["semiseg.cli", "audit"] if "def cmd_audit" in cli else ["semiseg.reporting.audit"]
    return subprocess.run([sys.executable, "-m", *entry, str(root / "results" / "tables" / "tiny.md"), *args],
                          capture_output=True, text=True, timeout=300, cwd=root, env=env)


def all_links(result):
    return [*result["chain"], *[lk for run in result["runs"] for lk in run["links"]], *result["data"]]


@pytest.mark.slow
def test_every_link_of_a_cell_exists_and_matches_its_checksums(built):
    root, _, _ = built
    table = root / "results" / "tables" / "tiny.md"
    result = audit(table, row="U-Net", ratio=25, root=root)
    assert result["status"] == OK, format_audit(result)
    assert result["row"] == {"method": "supervised", "label": "U-Net"}

    assert [lk["name"] for lk in result["chain"]] == ["table"]
    assert [[lk["name"] for lk in run["links"]] for run in result["runs"]] == [["metrics", "predictions", "model", "config"]]
    assert sorted(lk["name"] for lk in result["data"]) == ["descriptor", "source", "split", "store"]
    for lk in all_links(result):
        assert lk["status"] == OK, lk
        assert lk["sha256"] == path_digest(root / lk["path"])["sha256"]
        roles = {c["role"] for c in lk["checks"]}
        assert roles == ({"wrote"} if lk["name"] == "table" else {"wrote", "read"}), lk
        assert all(c["status"] == OK for c in lk["checks"])
    source = next(lk for lk in result["data"] if lk["name"] == "source")
    assert source["manifest"]["status"] == OK and source["manifest"]["files"] > 0

    steps = result["steps"].values()
    assert {s["stage"] for s in steps} == STAGES and all(s["present"] for s in steps)
    train = next(s for s in steps if s["stage"] == "train")
    assert train["spec"]["method"]["name"] == "supervised" and train["spec"]["seed"] == 0
    assert {"fingerprint", "commit", "dirty"} <= set(train["code"])
    assert train["environment"]["torch"] and train["device"] and "slurm_job_id" in train
    # every record names the workflow job that wrote it
    run_wildcards = {"dataset": "tiny2d", "method": "supervised", "ratio": "25", "seed": "0"}
    for s in steps:
        expected = {"fetch": {"dataset": "tiny2d"}, "preprocess": {"dataset": "tiny2d"},
                    "split": {"dataset": "tiny2d", "ratio": "25"}, "table": {"table": "tiny"}}.get(s["stage"], run_wildcards)
        assert (s["rule"], s["wildcards"]) == (s["stage"], expected), s
    run_dir = root / "results" / "runs" / "tiny2d" / "supervised" / "25" / "seed0"
    train_rec = json.loads((run_dir / "provenance.train.json").read_text())
    assert {Path(o["path"]).name for o in train_rec["outputs"]} == {"model.pt", "models.pt", "train.csv", "config.json"}
    infer_rec = json.loads((run_dir / "provenance.infer.json").read_text())
    assert infer_rec["spec"] == train_rec["spec"]  # the run the predictions come from, seed included

    dice = result["cell"]["metrics"]["dice"]
    assert result["cell"]["status"] == OK and dice["shown"] == dice["recomputed"]
    assert set(result["cell"]["metrics"]) == {"dice", "jaccard", "hd95", "asd"}

    by_method = audit(table, row="supervised", ratio=25, metric="dice")  # root found from the table
    assert by_method["status"] == OK and list(by_method["cell"]["metrics"]) == ["dice"]
    assert [lk["sha256"] for lk in all_links(by_method)] == [lk["sha256"] for lk in all_links(result)]
    text = format_audit(result)
    assert "✗" not in text and "✓ predictions" in text and "status: ok" in text
    with pytest.raises(ValueError, match="no row"):
        audit(table, row="nope", ratio=25, root=root)
    with pytest.raises(ValueError, match="no ratio 50"):
        audit(table, row="U-Net", ratio=50, root=root)


@pytest.mark.slow
def test_command_line_json_for_an_unchanged_checkout_is_ok_and_current(built):
    root, _, env = built
    proc = run_audit(root, env, "--row", "Mean Teacher", "--ratio", "25", "--format", "json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["status"] == OK and result["stale"] == [], result["stale"]


@pytest.mark.slow
def test_a_code_edit_is_reported_stale(built):
    root, src, env = built
    method = src / "semiseg" / "methods" / "mean_teacher.py"
    original = method.read_text()
    try:
        method.write_text(original + "\n# an edit\n")
        proc = run_audit(root, env, "--row", "mean_teacher", "--ratio", "25", "--format", "json")
    finally:
        method.write_text(original)
    assert proc.returncode == 0, proc.stderr[-3000:]  # stale is not a broken link
    result = json.loads(proc.stdout)
    stale = {(s["stage"], s["reason"]) for s in result["stale"]}
    assert ("train", "stale: code changed") in stale
    assert {stage for stage, _ in stale} <= {"train", "table"}  # the table's fingerprint covers train code


@pytest.mark.slow
def test_a_config_edit_is_reported_stale(built):
    root, _, _ = built
    methods = root / "config" / "methods" / "baselines.yaml"
    original = methods.read_text()
    entries = yaml.safe_load(original)
    entries["mean_teacher"]["params"]["consistency"] = 0.2
    try:
        methods.write_text(yaml.safe_dump(entries))
        result = audit(root / "results" / "tables" / "tiny.md", row="mean_teacher", ratio=25, root=root)
    finally:
        methods.write_text(original)
    assert result["status"] == OK
    changed = [s for s in result["stale"] if s["reason"] == "stale: config changed"]
    assert [s["stage"] for s in changed] == ["train"] and "method.params.consistency" in changed[0]["detail"]


@pytest.mark.slow
def test_a_tampered_prediction_is_reported_as_not_matching(built):
    root, _, env = built
    pred_dir = root / "results" / "runs" / "tiny2d" / "supervised" / "25" / "seed0" / "predictions"
    victim = sorted(pred_dir.glob("*.nii.gz"))[0]
    original = victim.read_bytes()
    try:
        image = sitk.ReadImage(str(victim))
        labels = sitk.GetArrayFromImage(image)
        labels[..., :4, :4] = np.where(labels[..., :4, :4] == 1, 2, 1)  # changed voxels, same geometry
        tampered = sitk.GetImageFromArray(labels)
        tampered.CopyInformation(image)
        sitk.WriteImage(tampered, str(victim))

        result = audit(root / "results" / "tables" / "tiny.md", row="supervised", ratio=25, root=root)
        proc = run_audit(root, env, "--row", "supervised", "--ratio", "25")
    finally:
        victim.write_bytes(original)
    assert result["status"] == MISMATCH
    statuses = {lk["name"]: lk["status"] for lk in all_links(result)}
    assert statuses.pop("predictions") == MISMATCH
    assert set(statuses.values()) == {OK}  # the metrics were computed before the edit and still match
    pred = next(lk for lk in result["runs"][0]["links"] if lk["name"] == "predictions")
    assert {(c["stage"], c["status"]) for c in pred["checks"]} == {("infer", MISMATCH), ("evaluate", MISMATCH)}
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "✗ predictions" in proc.stdout and "status: MISMATCH" in proc.stdout

    restored = argparse.Namespace(table=str(root / "results" / "tables" / "tiny.md"), row="supervised", ratio=25,
                                  metric="dice", format="text", root=str(root))
    assert run_cli(restored) == 0  # the exit status of the command line, in-process


@pytest.mark.slow
def test_the_html_report_shows_each_table_with_links_to_its_runs(built):
    root, _, env = built
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--directory", str(root),
                           "--snakefile", str(root / "Snakefile"), "--report", "report.html"],
                          capture_output=True, text=True, timeout=600, cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    html = (root / "report.html").read_text()
    for method in ("supervised", "mean_teacher"):
        assert f"results/runs/tiny2d/{method}/25/seed0/" in html, method
    assert "semiseg audit" in html and "Tiny audited table" in html


# ----------------------------------------------------------------------------- no workflow needed
def test_config_compared_as_json_holds_no_phantom_change():
    """A record holds the table spec as JSON (ratio keys "10"), the config now as YAML gives it
    (10): the same values must not read as "config changed at reference.values.bcp.10"."""
    now = {"reference": {"values": {"bcp": {10: {"dice": 88.84}}}}, "seeds": [0, 1, 2]}
    recorded = json.loads(json.dumps(now))
    assert recorded != now  # what the old comparison saw
    assert config_diff(recorded, now) == []
    changed = json.loads(json.dumps(now))
    changed["reference"]["values"]["bcp"]["10"]["dice"] = 88.0
    assert config_diff(changed, now) == ["reference.values.bcp.10.dice"]
    assert config_diff({"seeds": [0]}, {"seeds": (0,)}) == []


def test_a_record_whose_config_is_unchanged_is_not_stale(tmp_path):
    auditor = Auditor(tmp_path)  # no config here: only the comparison is exercised
    table = {"reference": {"source": "x", "values": {"bcp": {10: {"dice": 88.84}}}}}
    record = {"code": {}, "spec": json.loads(json.dumps(table))}
    step = auditor.step("table", tmp_path / "provenance.json", record,
                        config_now=(record["spec"], table))
    assert [s for s in step["stale"] if s["reason"] == "stale: config changed"] == []
    edited = {"reference": {"source": "x", "values": {"bcp": {10: {"dice": 90.0}}}}}
    step = auditor.step("table", tmp_path / "provenance.json", record, config_now=(record["spec"], edited))
    details = [s["detail"] for s in step["stale"] if s["reason"] == "stale: config changed"]
    assert details == ["differs from config/config.yaml now at reference.values.bcp.10.dice"]


@pytest.mark.parametrize("cell", [
    format_cell([81.0, 82.0]),
    format_cell([81.0, 82.0], reference=80.1),
    format_cell([81.0, 82.0], references=[("A T1", 79.65), ("B T2", 83.65)]),
    format_cell([81.0, 82.0], mark="smoke: 2 of 40 test volumes, 4 iterations — not a result",
                references=[("A T1", 79.65)]),
])
def test_the_audited_value_of_a_cell_is_the_part_before_its_notes(cell):
    assert _value_part(cell) == "81.50 ± 0.71"
    assert _value_part("not run (paper: A 1.00)") == "not run"
    assert _value_part("-3.25") == "-3.25"


def test_the_build_s_command_line_overrides_are_the_config_staleness_is_judged_against(tmp_path):
    """Every smoke or one-seed build read as "stale: config changed": the audit could not take the
    build's `--config` / `--configfile` overrides. It takes them, merged as Snakemake merges them."""
    from semiseg.cli import build_parser

    root = make_workflow(tmp_path / "wf", tables=TABLE)
    assert Auditor(root).cfg["tables"]["tiny"]["seeds"] == [0]
    assert Auditor(root, overrides=["seeds=[4, 5]"]).cfg["tables"]["tiny"]["seeds"] == [4, 5]
    extra = root / "config" / "one_seed.yaml"
    extra.write_text(yaml.safe_dump({"seeds": [7], "sources": {"tiny2d": {"path": "/data/tiny"}}}))
    by_file = Auditor(root, configfiles=[extra]).cfg
    assert by_file["tables"]["tiny"]["seeds"] == [7] and by_file["settings"]["sources"] == {"tiny2d": {"path": "/data/tiny"}}
    both = Auditor(root, overrides=["seeds=[3]"], configfiles=["config/one_seed.yaml"]).cfg
    assert both["tables"]["tiny"]["seeds"] == [3]  # --config over --configfile over config.yaml, as in Snakemake
    args = build_parser().parse_args(["audit", "t.md", "--row", "U-Net", "--ratio", "25", "--config", "seeds=[0]",
                                      "schedule=smoke", "--configfile", "a.yaml", "b.yaml"])
    assert (args.config, args.configfile) == (["seeds=[0]", "schedule=smoke"], ["a.yaml", "b.yaml"])
    with pytest.raises(ValueError, match=r"--config 'seeds': not KEY=VALUE"):
        audit(root / "results" / "tables" / "tiny.md", row="U-Net", ratio=25, root=root, overrides=["seeds"])


@pytest.mark.slow
def test_an_override_the_build_did_not_have_reads_as_stale_and_the_build_s_own_does_not(built):
    root, src, env = built
    proc = run_audit(root, env, "--row", "U-Net", "--ratio", "25", "--format", "json", "--config", "seeds=[0]")
    result = json.loads(proc.stdout)
    assert result["stale"] == [] and result["config"].endswith("+ --config seeds=[0]"), result["stale"]
    proc = run_audit(root, env, "--row", "U-Net", "--ratio", "25", "--format", "json", "--config", "seeds=[1]")
    stale = json.loads(proc.stdout)["stale"]
    assert ("table", "stale: config changed") in {(s["stage"], s["reason"]) for s in stale}
