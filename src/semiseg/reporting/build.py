"""The table stage: runs' metrics.csv files → ``results/tables/<name>.md``."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from semiseg.metrics.csv_io import read_metrics_csv
from semiseg.metrics.summary import summarise
from semiseg.reporting.tables import build_table, write_table

__all__ = ["table_from_runs", "parse_run_path"]

_RUN = re.compile(r"runs/(?P<dataset>[^/]+)/(?P<method>[^/]+)/(?P<ratio>\d+)/seed(?P<seed>\d+)/metrics\.csv$")


def parse_run_path(path: Path) -> tuple[str, str, int, int]:
    """(dataset, method, ratio, seed) from ``.../runs/<dataset>/<method>/<ratio>/seed<seed>/metrics.csv``."""
    m = _RUN.search(Path(path).as_posix())
    if not m:
        raise ValueError(f"{path}: not a run's metrics file (runs/<dataset>/<method>/<ratio>/seed<seed>/metrics.csv)")
    return m["dataset"], m["method"], int(m["ratio"]), int(m["seed"])


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


def table_from_runs(spec: dict, *, descriptor: Path, metrics: list[Path], out: Path) -> str:
    """Build and write one table.

    `spec` is what the workflow passes: ``table`` (the catalogue entry), ``ratios`` (the
    dataset's percent → labeled patients), ``supervised_methods``, ``schedule`` and
    ``fingerprint`` (of the code and config the table's runs were built from).
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
    for path in metrics:
        dataset, method, ratio, seed = parse_run_path(path)
        if dataset != table["dataset"]:
            raise ValueError(f"{path}: belongs to dataset {dataset!r}, the table is about {table['dataset']!r}")
        results[(method, ratio, seed)] = summarise(read_metrics_csv(path))
    info = {"train_patients": len(desc["patients"]["train"]),
            "labeled_patients": {int(k): v for k, v in spec["ratios"].items()},
            "distance_unit": DISTANCE_WORDS.get(spec.get("distance_unit"))}
    footer = {"schedule": spec.get("schedule"), "code_version": spec.get("code_version") or code_version(),
              "fingerprint": spec.get("fingerprint"),
              "Post-processing": POST_PROCESSING if spec.get("largest_component") else None,
              "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    text = build_table(table, dataset_info=info, results=results, footer={k: v for k, v in footer.items() if v},
                       supervised_methods=spec.get("supervised_methods", ["supervised"]))
    write_table(text, out)
    return text
