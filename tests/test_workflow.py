"""The whole workflow on a tiny config: the table's rows, and exactly-what-changed reruns.

One full run is shared by the checks of this module (it is the expensive part). Code edits are
made to a copy of the package put first on PYTHONPATH, never to the checkout.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
import yaml

from conftest import REPO, make_workflow, snakemake, tiny_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("workflow")
    src = base / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = {"PYTHONPATH": str(src)}
    root = make_workflow(base / "wf", tables={
        **tiny_table(methods=("supervised", "mean_teacher"), ratios=(25,), seeds=(0, 1), name="tiny"),
        **tiny_table(methods=("supervised",), ratios=(25,), seeds=(0,), name="sup_only"),
    })
    cfg = yaml.safe_load((root / "config" / "config.yaml").read_text())
    cfg["tables"] = ["tiny", "sup_only"]
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = run(root, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root, src, env


def run(root, env, *args):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return snakemake(root, *args)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def planned(root, env) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run would execute."""
    proc = run(root, env, "--dry-run")
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return set()
    jobs = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not m or m.group(1) == "all":
            continue
        w = re.search(r"wildcards: (.*)", block)
        # a run at its dataset's own test stride has an empty `stride` wildcard: left out here
        jobs.add((m.group(1), re.sub(r", stride=$", "", w.group(1).strip()) if w else ""))
    return jobs


def test_table_has_one_row_per_method_and_ratio(built):
    root, _, _ = built
    text = (root / "results" / "tables" / "tiny.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["Method", "supervised", "mean_teacher"]
    assert "1 (25%)" in rows[1] and "3 (75%)" in rows[2]
    assert re.search(r"\d+\.\d\d ± \d+\.\d\d", rows[1])  # two seeds: mean ± std
    for run_dir in (root / "results" / "runs" / "tiny2d").glob("*/25/seed*"):
        assert (run_dir / "metrics.csv").exists() and not (run_dir / "checkpoints").exists()


def test_second_run_schedules_nothing(built):
    root, _, env = built
    assert planned(root, env) == set()


def _mt_jobs():
    return {(rule, f"dataset=tiny2d, method=mean_teacher, ratio=25, seed={s}")
            for rule in ("train", "infer", "evaluate") for s in (0, 1)} | {("table", "table=tiny"),
                                                                          ("table_report", "table=tiny")}


def test_editing_a_method_parameter_reruns_only_that_method(built):
    root, _, env = built
    methods = root / "config" / "methods" / "baselines.yaml"
    original = methods.read_text()
    try:
        methods.write_text(original.replace("consistency: 0.1", "consistency: 0.2"))
        assert planned(root, env) == _mt_jobs()
    finally:
        methods.write_text(original)
    assert planned(root, env) == set()


@pytest.mark.parametrize("relative, expected", [
    ("methods/mean_teacher.py", "mean_teacher"),
    ("engine/loop.py", "all_train"),
    ("reporting/tables.py", "tables"),
])
def test_editing_code_reruns_exactly_what_depends_on_it(built, relative, expected):
    root, src, env = built
    path = src / "semiseg" / relative
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        jobs = planned(root, env)
    finally:
        path.write_text(original)
    if expected == "mean_teacher":
        assert jobs == _mt_jobs()
    elif expected == "all_train":
        trains = {w for rule, w in jobs if rule == "train"}
        assert len(trains) == 4  # supervised and mean_teacher, seeds 0 and 1 (sup_only shares a run)
        assert {r for r, _ in jobs} == {"train", "infer", "evaluate", "table", "table_report"}
    else:
        # the report pages show the tables: they are made again with them
        assert jobs == {(rule, f"table={t}") for rule in ("table", "table_report") for t in ("tiny", "sup_only")}
    assert planned(root, env) == set()


def test_a_job_s_time_memory_and_checkpoint_interval_rerun_nothing(built):
    # A run stopped by its time limit is resumed with a longer one: that must neither re-run the
    # finished runs nor change what the stopped one resumes from (semiseg.config.EXECUTION_FIELDS).
    root, _, env = built
    schedules = root / "config" / "schedules.yaml"
    original = schedules.read_text()
    data = yaml.safe_load(original)
    data["smoke"]["defaults"].update(runtime=99, mem_mb=3000, checkpoint_interval=1, infer_runtime=5)
    try:
        schedules.write_text(yaml.safe_dump(data, sort_keys=False))
        assert planned(root, env) == set()
        data["smoke"]["defaults"]["val_interval"] = 1  # a field that changes the result does re-run
        schedules.write_text(yaml.safe_dump(data, sort_keys=False))
        assert {rule for rule, _ in planned(root, env)} == {"train", "infer", "evaluate", "table", "table_report"}
    finally:
        schedules.write_text(original)
