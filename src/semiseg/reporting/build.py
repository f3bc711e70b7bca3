"""The table stage: runs' metrics.csv files → ``results/tables/<name>.md``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from semiseg import paths
from semiseg.metrics.csv_io import read_metrics_csv
from semiseg.metrics.summary import case_means, summarise
from semiseg.reporting.cost import run_cost
from semiseg.reporting.tables import build_table, write_table

__all__ = ["table_from_runs", "parse_run_path"]

def parse_run_path(path: Path) -> tuple[str, str, int, int]:
    """(dataset, method, ratio, seed) from ``.../runs/<dataset>/<method>/<ratio>/seed<seed>/metrics.csv``."""
    problem = ValueError(f"{path}: not a run's metrics file (runs/<dataset>/<method>/<ratio>/seed<seed>/metrics.csv)")
    try:
        run = paths.parse_run_path(path)
    except ValueError:
        raise problem from None
    if not Path(path).as_posix().endswith(paths.run_file(*run, "metrics.csv")):
        raise problem
    return run


#: How the footer names a dataset's distance unit.
DISTANCE_WORDS = {"voxel": "voxels of the native grid (as the papers report)", "mm": "mm (the voxel spacing)"}


#: The footer line of a dataset whose protocol keeps the largest connected component.
POST_PROCESSING = ("largest connected component of each foreground class kept in every prediction "
                   "(SS-Net's and BCP's test protocol; UA-MT's and MC-Net's have none)")


def code_version() -> str:
    """The package version and the git commit of its checkout, read when the table is written
    (not a rule param: a commit that changes nothing a table depends on must not rebuild it)."""
    from semiseg import __version__
    from semiseg.provenance import git_state

    git = git_state()
    if not git.get("commit"):
        return __version__
    return f"{__version__} (git {git['commit'][:10]}{', uncommitted changes' if git.get('dirty') else ''})"


def _test_cases(descriptor: dict) -> int | None:
    """The number of test volumes of a dataset descriptor (None where it lists no cases)."""
    cases = descriptor.get("cases")
    if not isinstance(cases, dict):
        return None
    test = set(descriptor["patients"]["test"])
    return sum(1 for case in cases.values() if case.get("patient") in test)


def _run_info(metrics: Path, rows) -> dict:
    """What a run says of itself for the table: the test volumes its metrics.csv scored, and
    the schedule and iterations of the ``config.json`` its training wrote beside it.

    `rows` is the run's metrics.csv as read by :func:`read_metrics_csv` (one row per case x class).
    """
    info: dict = {"test_cases": int(rows["case"].nunique())}
    config = metrics.parent / "config.json"
    if config.is_file():
        with open(config) as fh:
            schedule = json.load(fh).get("spec", {}).get("schedule", {})
        info["schedule"] = schedule.get("name")
        info["iterations"] = schedule.get("iterations")
        if schedule.get("test_stride"):
            info["test_stride"] = schedule["test_stride"]
    info["cost"] = run_cost(metrics.parent)
    return info


def table_from_runs(spec: dict, *, descriptor: Path, metrics: list[Path], out: Path) -> str:
    """Build and write one table.

    `spec` is what the workflow passes: ``table`` (the catalogue entry), ``ratios`` (the
    dataset's percent → labeled patients), ``supervised_methods``, ``schedule``,
    ``own_schedule`` (the dataset's schedule without overrides: a smoke run on a dataset whose
    own schedule is another is marked as no result) and ``fingerprint`` (of the code and
    config the table's runs were built from).
    """
    table = spec["table"]
    with open(descriptor) as fh:
        desc = json.load(fh)
    results: dict = {}
    for row in table["rows"]:
        if row.get("run", True):
            for ratio in row["ratios"]:
                for seed in table["seeds"]:
                    results[(row["method"], int(ratio), int(seed))] = None
    run_info: dict = {}
    case_values: dict = {}  # per-case values, for a table with a bootstrap interval
    for path in metrics:
        dataset, method, ratio, seed = parse_run_path(path)
        if dataset != table["dataset"]:
            raise ValueError(f"{path}: belongs to dataset {dataset!r}, the table is about {table['dataset']!r}")
        rows = read_metrics_csv(path)
        results[(method, ratio, seed)] = summarise(rows)
        if table.get("bootstrap"):  # the intervals and the paired comparisons
            case_values[(method, ratio, seed)] = case_means(rows)
        run_info[(method, ratio, seed)] = _run_info(Path(path), rows)
    info = {"train_patients": len(desc["patients"]["train"]),
            "labeled_patients": {int(k): v for k, v in spec["ratios"].items()},
            "distance_unit": DISTANCE_WORDS.get(spec.get("distance_unit")),
            "test_cases": _test_cases(desc), "own_schedule": spec.get("own_schedule")}
    footer = {"schedule": spec.get("schedule"), "code_version": spec.get("code_version") or code_version(),
              "fingerprint": spec.get("fingerprint"),
              "Post-processing": POST_PROCESSING if spec.get("largest_component") else None,
              "Sliding window": spec.get("sliding_window"),
              "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    text = build_table(table, dataset_info=info, results=results, footer={k: v for k, v in footer.items() if v},
                       supervised_methods=spec.get("supervised_methods", ["supervised"]), run_info=run_info,
                       case_values=case_values)
    write_table(text, out)
    return text
