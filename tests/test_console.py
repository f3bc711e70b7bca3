"""What the console shows when a run stops: the failed job's log, and the list of tables for a
target that names none."""

from __future__ import annotations

import shutil

from conftest import REPO, make_workflow, snakemake


def test_a_mistyped_table_target_gets_the_list_of_tables(tmp_path):
    root = make_workflow(tmp_path / "wf")
    for target in ("results/tables/tinyy.md", "results/report/tin.html"):
        run = snakemake(root, "-n", target)
        console = run.stdout + run.stderr
        assert run.returncode != 0, console[-3000:]
        assert "MissingRuleException" not in console and "No rule to produce" not in console, console[-3000:]
        name = target.rsplit("/", 1)[1].split(".")[0]
        assert f"there is no table {name!r}; the tables (config/tables/*.yaml) are: tiny" in console, console[-3000:]
    # a table of the catalogue is still made by its own rules
    run = snakemake(root, "-n", "results/tables/tiny.md", "results/report/tiny.html")
    assert run.returncode == 0 and "unknown_table" not in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]


def test_a_failed_job_s_log_is_printed_on_the_console(tmp_path):
    """With the checkout's workflow profile (profiles/default, loaded by itself), a failed job's
    error is on the console, not only in its log file."""
    root = make_workflow(tmp_path / "wf")
    shutil.copytree(REPO / "profiles", root / "profiles")
    with open(root / "Snakefile", "a") as fh:  # the error is upper-cased so that the command does not hold it
        fh.write('\n\nrule fails:\n    log:\n        "results/logs/fails.log",\n    shell:\n'
                 '        "(seq 1 200; echo \'valueerror: change this\' | tr a-z A-Z) > {log}; exit 1"\n')
    run = snakemake(root, "fails")
    console = run.stdout + run.stderr
    assert run.returncode != 0
    assert "VALUEERROR: CHANGE THIS" in console, console[-3000:]
