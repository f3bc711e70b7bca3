"""Shared fixtures: a tiny copy of the workflow in a temporary directory, and the real data."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path | None:
    """../shared/data beside the checkout (or $SEMISEG_SHARED_DATA), if present."""
    env = os.environ.get("SEMISEG_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


def missing_data(reason: str) -> NoReturn:
    """Skip a test whose real data is absent; fail it instead under SEMISEG_REQUIRE_DATA=1 (set by
    .ci/run, where the data must be there: a skip would hide that the data tests did not run)."""
    if os.environ.get("SEMISEG_REQUIRE_DATA") == "1":
        pytest.fail(f"SEMISEG_REQUIRE_DATA=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def needs_file(path: Path, reason: str) -> pytest.MarkDecorator:
    """Mark a test that reads ``path``: where it is absent the test skips saying ``reason``, or
    fails under SEMISEG_REQUIRE_DATA=1 (:func:`missing_data`, in :func:`pytest_runtest_setup`)."""
    return pytest.mark.needs_file(path, reason=reason)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_file(path, reason): needs that file of ../shared/data")
    config.addinivalue_line("markers", "xdist_group(name): runs on the pytest-xdist worker of its group")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs_file"):
        if not Path(mark.args[0]).is_file():
            missing_data(mark.kwargs["reason"])


# The session builds, most expensive first: under pytest-xdist each is made once, on one worker.
BUILDS = ("la_smoke", "acdc_smoke", "la_ablation_smoke")
# Module- or session-wide fixtures cheap enough to make again on a second worker.
CHEAP = {"cfg", "shared_data_dir", "one_torch_thread"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the marks into the test ids
def pytest_collection_modifyitems(config, items):
    """Group the suite for pytest-xdist (scripts/test.sh runs one worker per core, `--dist
    loadgroup --no-loadscope-reorder`): a test that uses a session build runs on the worker that
    made it, a test that uses another module-wide fixture beside the rest of its module (a fixture
    that starts a SLURM cluster or builds a workflow is made once), any other test on whichever
    worker is free. The builds' groups go first, then the modules', so the longest work starts
    first and the small tests fill the gaps. Without xdist the marks change nothing but the order."""
    def rank(item) -> tuple[int, str | None]:
        for i, build in enumerate(BUILDS):
            if build in item.fixturenames:
                return i, build
        for name, defs in item._fixtureinfo.name2fixturedefs.items():
            if (name not in CHEAP and defs and defs[-1].scope in ("module", "package", "session")
                    and Path(inspect.getfile(defs[-1].func)).is_relative_to(REPO / "tests")):  # not pytest's own
                return len(BUILDS), item.module.__name__
        return len(BUILDS) + 1, None

    ranks = {}
    for item in items:
        ranks[item.nodeid], group = rank(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: ranks[item.nodeid])  # stable: each group keeps its tests' order


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests use tiny tensors: one thread avoids oversubscribing a shared 2-core machine."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cfg() -> dict:
    """The checkout's own configuration (config/), loaded once per test module."""
    from semiseg.config import load_config

    return load_config(root=REPO)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    d = shared_data()
    if d is None:
        missing_data("real data not found: ../shared/data is absent beside the checkout (set SEMISEG_SHARED_DATA)")
    return d


# A dataset small enough that a whole workflow runs in about a minute on 2 CPU cores.
TINY_DATASET = {
    "tiny2d": {
        "description": "A very small synthetic2d for workflow tests.",
        "source": {"layout": "synthetic2d", "seed": 3,
                   "params": {"n_train": 4, "n_val": 1, "n_test": 2, "slices": [3, 4], "size": [48, 48]}},
        "dims": 2,
        "network": "unet",
        "labels": {"background": 0, "RV": 1, "Myo": 2, "LV": 3},
        "ratios": {"25": 1, "50": 2},
        "patch_size": [48, 48],
        "schedule": "smoke",
    }
}
# Its 3D counterpart: one V-Net patch per volume (16^3, the smallest a V-Net's four halvings take).
TINY3D_DATASET = {
    "tiny3d": {
        "description": "A very small synthetic3d for workflow tests.",
        "source": {"layout": "synthetic3d", "seed": 1, "params": {"n_train": 3, "n_test": 1, "shape": [16, 16, 16]}},
        "dims": 3,
        "network": "vnet",
        "labels": {"background": 0, "atrium": 1},
        "ratios": {"50": 1},
        "patch_size": [16, 16, 16],
        "stride": [16, 16, 16],
        "schedule": "smoke",
    }
}
TINY_SCHEDULE = {
    "smoke": {
        "description": "A few iterations: tests that the stages connect.",
        "defaults": {"iterations": 4, "labeled_batch_size": 2, "unlabeled_batch_size": 2, "lr": 0.01,
                     "momentum": 0.9, "weight_decay": 0.0001, "lr_policy": "poly", "val_interval": 2,
                     "checkpoint_interval": 2, "amp": False, "runtime": 10, "mem_mb": 2000},
    },
    # present so that method entries with `schedule: {paper: ...}` overrides validate
    "paper": {
        "description": "Unused by the tiny dataset (it pins smoke).",
        "defaults": {"iterations": 30000, "labeled_batch_size": 12, "unlabeled_batch_size": 12},
    },
}


def shipped_datasets() -> list[str]:
    """The datasets of the repository's catalogue: a tiny catalogue that reuses config/methods/ lists
    them as ``catalogues.other_datasets`` (the methods' per-dataset settings name them)."""
    return sorted(name for f in (REPO / "config" / "datasets").glob("*.yaml") for name in yaml.safe_load(f.read_text()))


def tiny_table(methods=("supervised", "mean_teacher"), ratios=(25,), seeds=(0,), name="tiny"):
    return {name: {"title": f"Tiny table {name}", "dataset": "tiny2d", "seeds": list(seeds),
                   "rows": [{"method": m, "ratios": list(ratios)} for m in methods]}}


def write_yaml(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def make_workflow(root: Path, *, tables: dict | None = None, methods_extra: dict | None = None,
                  schedule: dict | None = None) -> Path:
    """Copy the workflow into `root` with a tiny config: dataset tiny2d, the repo's methods."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    shutil.copytree(REPO / "workflow", root / "workflow", dirs_exist_ok=True)
    shutil.copytree(REPO / "config" / "methods", root / "config" / "methods", dirs_exist_ok=True)
    tables = tables or tiny_table()
    write_yaml(root / "config" / "datasets" / "tiny.yaml", TINY_DATASET)
    write_yaml(root / "config" / "tables" / "tiny.yaml", tables)
    write_yaml(root / "config" / "schedules.yaml", schedule or TINY_SCHEDULE)
    if methods_extra:
        write_yaml(root / "config" / "methods" / "extra.yaml", methods_extra)
    write_yaml(root / "config" / "config.yaml", {"tables": list(tables), "schedule": None, "device": "cpu",
                                                  "results": "results", "sources": {},
                                                  "catalogues": {"other_datasets": shipped_datasets()}})
    return root


def snakemake(root: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run snakemake on the workflow copy at `root`; returns the completed process (text)."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--directory", str(root),
           "--snakefile", str(root / "Snakefile"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=root)


@pytest.fixture
def tiny_workflow(tmp_path) -> Path:
    return make_workflow(tmp_path / "wf")


# ----------------------------------------------------------------------------- real-data smoke builds
def real_dataset(name: str) -> Path:
    """../shared/data/<name> (with its train.list), or skip (fail under SEMISEG_REQUIRE_DATA=1)."""
    data = shared_data()
    path = data / name if data else Path("../shared/data") / name
    if not (path / "train.list").is_file():
        missing_data(f"real data not found at {path}")
    return path


def _list_file(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def repo_workflow(root: Path, tables: list[str], sources: dict) -> Path:
    """The repository's workflow and catalogues in `root`: smoke schedule, one seed, CPU."""
    root.mkdir(parents=True)
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    shutil.copytree(REPO / "workflow", root / "workflow")
    shutil.copytree(REPO / "config", root / "config")
    write_yaml(root / "config" / "config.yaml", {
        "tables": list(tables), "schedule": "smoke", "seeds": [0], "device": "cpu", "results": "results",
        "sources": sources})
    return root


def la_mini_workflow(root: Path, la_mini: Path, tables: list[str], patch: list[int] | None = None) -> Path:
    """The repository's workflow on LA-mini. LA-mini holds 20 of the 80 train volumes, so in this
    copy the upper bound (ratio 100) is its 20; every other line of the catalogue is the
    repository's, unless `patch` (Z, Y, X) shrinks the training patch and, to match, the smoke
    schedule's sliding-window stride."""
    repo_workflow(root, tables, {"la": {"path": str(la_mini)}})
    la_yaml = root / "config" / "datasets" / "la.yaml"
    catalogue = yaml.safe_load(la_yaml.read_text())
    catalogue["la"]["ratios"]["100"] = catalogue["la"]["train_patients"] = len(_list_file(la_mini / "train.list"))
    if patch:
        catalogue["la"]["patch_size"] = list(patch)
        schedules_yaml = root / "config" / "schedules.yaml"
        schedules = yaml.safe_load(schedules_yaml.read_text())
        schedules["smoke"]["datasets"]["la"]["test_stride"] = list(patch)
        write_yaml(schedules_yaml, schedules)
    write_yaml(la_yaml, catalogue)
    return root


def edit_tables(root: Path, tables, edit) -> None:
    """In the workflow copy at `root`, call ``edit(name, entry, path)`` on the catalogue entry of
    each table of `tables` (its ``rows`` may be changed in place or replaced) and write the files back."""
    for path in (root / "config" / "tables").glob("*.yaml"):
        catalogue = yaml.safe_load(path.read_text())
        for name in set(catalogue) & set(tables):
            edit(name, catalogue[name], path)
        write_yaml(path, catalogue)


def cut_baselines(root: Path, tables: list[str], ratio: int | None) -> None:
    """In the workflow copy at `root`, the rows of `tables` that run one of the literature's
    baselines (tests/smoke_targets.py's BASELINES) keep only `ratio`; with `ratio` None they do not
    run (the papers' values only, as a `run: false` row)."""
    from smoke_targets import BASELINES

    def edit(name, entry, path):
        for row in entry["rows"]:
            if row["method"] in BASELINES and row.get("run", True):
                if ratio is None:
                    row["run"] = False
                else:
                    row["ratios"] = [ratio]

    edit_tables(root, tables, edit)


def cut_ratios(root: Path, tables: list[str], keep: dict[int, list[str]]) -> None:
    """In the workflow copy at `root`, the rows of `tables` that run leave out each ratio of `keep`
    unless their method is listed there (a row that shows the papers' values only keeps all)."""
    def edit(name, entry, path):
        for row in entry["rows"]:
            if row.get("run", True):
                row["ratios"] = [r for r in row["ratios"] if r not in keep or row["method"] in keep[r]]
                assert row["ratios"], (path, name, row)

    edit_tables(root, tables, edit)


def cut_sweeps(root: Path, keep: dict[str, list[str]]) -> None:
    """In the workflow copy at `root`, the rows of each table in `keep` whose method it does not
    list show the papers' values only (a `run: false` row)."""
    def edit(name, entry, path):
        assert set(keep[name]) <= {row.get("method") for row in entry["rows"]}, (path, keep[name])
        for row in entry["rows"]:
            if row.get("method") not in keep[name]:
                row["run"] = False

    edit_tables(root, keep, edit)


def _build(root: Path, targets: list[str], what: str) -> Path:
    import time

    t0 = time.time()
    # one thread per job, two jobs at a time on CI's 2 cores: no OpenMP threads fighting for a core
    # (an oracle's replay as many as its run: CPU sums are then in the same order, the weights the same)
    proc = snakemake(root, "--set-threads", "train=1", "infer=1", "oracle_train=1", "oracle_evaluate=1", "--",
                     *targets, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"\nsmoke build of {what}: {time.time() - t0:.0f} s")
    return root / "results"


@pytest.fixture(scope="session")
def acdc_smoke(tmp_path_factory) -> Path:
    """Every table and figure of tests/smoke_targets.py's ACDC lists, built on the real ACDC set
    in one Snakemake call (smoke schedule at ACDC_ITERATIONS iterations, seed 0), the literature's
    baselines with their papers' values only (ACDC_BASELINE_RATIO), of each sweep the rows of
    ACDC_SWEEP_ROWS, at 3 and 14 labeled the rows of ACDC_RATIO_ROWS: the results directory."""
    from smoke_targets import (ACDC_BASELINE_RATIO, ACDC_FIGURES, ACDC_ITERATIONS, ACDC_RATIO_ROWS, ACDC_SWEEP_ROWS,
                               ACDC_TABLES)

    acdc = real_dataset("ACDC")
    root = repo_workflow(tmp_path_factory.mktemp("acdc") / "wf", ACDC_TABLES, {"acdc": {"path": str(acdc)}})
    cut_baselines(root, ACDC_TABLES, ACDC_BASELINE_RATIO)
    cut_sweeps(root, ACDC_SWEEP_ROWS)
    cut_ratios(root, ACDC_TABLES, ACDC_RATIO_ROWS)
    schedules_yaml = root / "config" / "schedules.yaml"
    schedules = yaml.safe_load(schedules_yaml.read_text())
    schedules["smoke"]["datasets"]["acdc"].update(iterations=ACDC_ITERATIONS, val_interval=ACDC_ITERATIONS,
                                                  checkpoint_interval=ACDC_ITERATIONS)
    write_yaml(schedules_yaml, schedules)
    targets = [f"results/tables/{t}.md" for t in ACDC_TABLES] + [f"results/{f}" for f in ACDC_FIGURES]
    return _build(root, targets, f"{len(ACDC_TABLES)} ACDC tables")


@pytest.fixture(scope="session")
def la_smoke(tmp_path_factory) -> Path:
    """Every table and figure of tests/smoke_targets.py's LA lists, built on LA-mini in one
    Snakemake call (smoke schedule, seed 0), the baselines' rows that run at LA_BASELINE_RATIO
    only, at 4 and 16 labeled the rows of LA_RATIO_ROWS, and the oracle's table LA_ORACLE_TABLES:
    the results directory."""
    from smoke_targets import LA_BASELINE_RATIO, LA_FIGURES, LA_ORACLE_TABLES, LA_RATIO_ROWS, LA_TABLES

    root = la_mini_workflow(tmp_path_factory.mktemp("la") / "wf", real_dataset("LA-mini"), LA_TABLES)
    cut_baselines(root, LA_TABLES, LA_BASELINE_RATIO)
    cut_ratios(root, LA_TABLES, LA_RATIO_ROWS)
    write_yaml(root / "config" / "tables" / "la_oracle.yaml", LA_ORACLE_TABLES)
    targets = [f"results/tables/{t}.md" for t in [*LA_TABLES, *LA_ORACLE_TABLES]] + [f"results/{f}" for f in LA_FIGURES]
    return _build(root, targets, f"{len(LA_TABLES)} LA tables on LA-mini")


@pytest.fixture(scope="session")
def la_ablation_smoke(tmp_path_factory) -> Path:
    """The LA ablation tables of tests/smoke_targets.py (LA_ABLATION_TABLES), built on LA-mini in
    one Snakemake call with the smoke schedule and seed 0, on patches of LA_ABLATION_PATCH: the
    results directory, each table at the one ratio LA_ABLATION_RATIO gives it, with the rows
    LA_ABLATION_ROWS keeps."""
    from smoke_targets import LA_ABLATION_PATCH, LA_ABLATION_RATIO, LA_ABLATION_ROWS, LA_ABLATION_TABLES

    root = la_mini_workflow(tmp_path_factory.mktemp("la_ablation") / "wf", real_dataset("LA-mini"),
                            LA_ABLATION_TABLES, patch=LA_ABLATION_PATCH)
    def one_ratio(name, entry, path):
        if name in LA_ABLATION_ROWS:
            entry["rows"] = [r for r in entry["rows"] if r["method"] in LA_ABLATION_ROWS[name]]
        for row in entry["rows"]:
            row["ratios"] = [LA_ABLATION_RATIO[name]]

    edit_tables(root, LA_ABLATION_TABLES, one_ratio)
    targets = [f"results/tables/{t}.md" for t in LA_ABLATION_TABLES]
    return _build(root, targets, f"{len(LA_ABLATION_TABLES)} LA ablation tables on LA-mini")
