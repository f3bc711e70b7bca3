"""The table stage: runs' metrics.csv files → ``results/tables/<name>.md``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from semiseg import paths
from semiseg.metrics.csv_io import read_metrics_csv
from semiseg.metrics.summary import case_means, summarise
from semiseg.reporting.cost import run_cost
from semiseg.reporting.oracle import read_oracle
from semiseg.reporting.tables import build_table, write_table
from semiseg.table_config import is_external

__all__ = ["table_from_runs", "parse_run_path", "result_key"]

def parse_run_path(path: Path) -> tuple[str, str, int, int]:
    """(dataset, method, ratio, seed) from ``.../runs/<dataset>/<method>/<ratio>/seed<seed>/metrics.csv``
    (``seed<seed>-stride<z>x<y>x<x>/``: a run at a table's own test stride)."""
    problem = ValueError(f"{path}: not a run's metrics file (runs/<dataset>/<method>/<ratio>/seed<seed>/metrics.csv)")
    try:
        *run, stride = paths.parse_run(path)
    except ValueError:
        raise problem from None
    if not Path(path).as_posix().endswith(paths.run_file(*run, "metrics.csv", stride=stride)):
        raise problem
    return tuple(run)


def result_key(path: Path, table: dict) -> tuple[str, int, int | None]:
    """The key of a metrics.csv among a table's results: ``(method, ratio, seed)`` of a run's
    (checked to be of the table's dataset), ``(key, ratio, None)`` of a predictions row's
    (``external/<table>/<key>/metrics.csv``: one folder, no seed)."""
    external = paths.parse_external_path(path)
    if external is not None:
        row = next((r for r in table["rows"] if is_external(r) and r["method"] == external[1]), None)
        if row is None:
            raise ValueError(f"{path}: the table has no predictions row {external[1]!r}")
        return row["method"], int(row["ratio"]), None
    dataset, method, ratio, seed = parse_run_path(path)
    if dataset != table["dataset"]:
        raise ValueError(f"{path}: belongs to dataset {dataset!r}, the table is about {table['dataset']!r}")
    return method, ratio, seed


def _predictions_note(table: dict, metrics: list[Path]) -> str | None:
    """The footer's words for the table's predictions rows: each row's folder and the checksum its
    scoring recorded (``semiseg audit`` checks the folder against it)."""
    from semiseg.provenance import read_record

    where = {paths.parse_external_path(p)[1]: Path(p) for p in metrics if paths.parse_external_path(p)}
    parts = []
    for row in table["rows"]:
        if is_external(row) and row["method"] in where:
            record = read_record("evaluate-external", where[row["method"]]) or {}
            sha = (record.get("spec") or {}).get("predictions", {}).get("sha256")
            parts.append(f"{row['label']}: {row['predictions']}" + (f" (sha256 {sha[:16]})" if sha else ""))
    if not parts:
        return None
    columns = table.get("columns") or ()
    dashes = [w for c, w in (("difference", "ΔDice —: no seeds to pair by"),
                             ("cost", "cost —: its training is not recorded here")) if c in columns]
    if table.get("oracle"):
        dashes.append("best on test —: no snapshots of its training here")
    return ("another tool's predictions of the test cases, scored here with the same metrics (one value: no "
            "seeds; Unlabeled —: the tool's own use of unlabeled cases is not known here"
            + "".join(f"; {w}" for w in dashes) + "): " + "; ".join(parts))


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


def _oracle_bests(table: dict, oracle: list[Path]) -> dict:
    """``(method, ratio, seed)`` -> the best snapshot of each run's ``oracle.json`` (checked to be of
    the table's dataset and oracle setting)."""
    every = (table.get("oracle") or {}).get("every")
    bests = {}
    for path in oracle:
        parsed = paths.parse_oracle_path(path)
        if parsed is None:
            raise ValueError(f"{path}: not an oracle summary (oracle/every<k>/<dataset>/<method>/<ratio>/seed<seed>/"
                             f"{paths.ORACLE_SUMMARY})")
        k, dataset, method, ratio, seed = parsed
        if every is None or k != int(every) or dataset != table["dataset"]:
            raise ValueError(f"{path}: an oracle every {k} iterations of dataset {dataset!r}; the table asks for "
                             f"{'no oracle' if every is None else f'every {every}'} on {table['dataset']!r}")
        bests[(method, ratio, seed)] = read_oracle(path)
    return bests


def table_from_runs(spec: dict, *, descriptor: Path, metrics: list[Path], out: Path,
                    oracle: list[Path] = ()) -> str:
    """Build and write one table.

    `spec` is what the workflow passes: ``table`` (the catalogue entry), ``ratios`` (the
    dataset's percent → labeled patients), ``supervised_methods``, ``schedule``,
    ``own_schedule`` (the dataset's schedule without overrides: a smoke run on a dataset whose
    own schedule is another is marked as no result) and ``fingerprint`` (of the code and
    config the table's runs were built from). `oracle`: the ``oracle.json`` of each run of a
    table with ``oracle`` (:mod:`semiseg.metrics.oracle`).
    """
    table = spec["table"]
    with open(descriptor) as fh:
        desc = json.load(fh)
    results: dict = {}
    for row in table["rows"]:
        if is_external(row):
            results[(row["method"], int(row["ratio"]), None)] = None
        elif row.get("run", True):
            for ratio in row["ratios"]:
                for seed in table["seeds"]:
                    results[(row["method"], int(ratio), int(seed))] = None
    run_info: dict = {}
    case_values: dict = {}  # per-case values, for a table with a bootstrap interval
    for path in metrics:
        key = result_key(Path(path), table)
        rows = read_metrics_csv(path)
        results[key] = summarise(rows)
        if table.get("bootstrap"):  # the intervals and the paired comparisons
            case_values[key] = case_means(rows)
        run_info[key] = _run_info(Path(path), rows)
    info = {"train_patients": len(desc["patients"]["train"]),
            "labeled_patients": {int(k): v for k, v in spec["ratios"].items()},
            "distance_unit": DISTANCE_WORDS.get(spec.get("distance_unit")),
            "test_cases": _test_cases(desc), "own_schedule": spec.get("own_schedule")}
    footer = {"schedule": spec.get("schedule"), "code_version": spec.get("code_version") or code_version(),
              "fingerprint": spec.get("fingerprint"),
              "Post-processing": POST_PROCESSING if spec.get("largest_component") else None,
              "Sliding window": spec.get("sliding_window"),
              "Predictions rows": _predictions_note(table, metrics),
              "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    text = build_table(table, dataset_info=info, results=results, footer={k: v for k, v in footer.items() if v},
                       supervised_methods=spec.get("supervised_methods", ["supervised"]), run_info=run_info,
                       case_values=case_values, oracle=_oracle_bests(table, list(oracle)))
    write_table(text, out)
    return text
