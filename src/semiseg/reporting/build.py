"""The table stage: runs' metrics.csv files → ``results/tables/<name>.md``."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from semiseg.metrics.segmentation import read_metrics_csv, summarise
from semiseg.reporting.tables import build_table, write_table

__all__ = ["table_from_runs", "parse_run_path"]

_RUN = re.compile(r"runs/(?P<dataset>[^/]+)/(?P<method>[^/]+)/(?P<ratio>\d+)/seed(?P<seed>\d+)/metrics\.csv$")


def parse_run_path(path: Path) -> tuple[str, str, int, int]:
    """(dataset, method, ratio, seed) from ``.../runs/<dataset>/<method>/<ratio>/seed<seed>/metrics.csv``."""
    m = _RUN.search(Path(path).as_posix())
    if not m:
        raise ValueError(f"{path}: not a run's metrics file (runs/<dataset>/<method>/<ratio>/seed<seed>/metrics.csv)")
    return m["dataset"], m["method"], int(m["ratio"]), int(m["seed"])


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
            "labeled_patients": {int(k): v for k, v in spec["ratios"].items()}}
    footer = {"schedule": spec.get("schedule"), "code_version": spec.get("code_version"),
              "fingerprint": spec.get("fingerprint"),
              "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    text = build_table(table, dataset_info=info, results=results, footer={k: v for k, v in footer.items() if v},
                       supervised_methods=spec.get("supervised_methods", ["supervised"]))
    write_table(text, out)
    return text
