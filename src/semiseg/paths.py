"""Where every stage's output lives under the results directory: the one spelling of the layout.

The workflow's rules, the table builder and ``semiseg audit`` all build and read paths here, so
the layout is written once. Each function returns a path relative to the results directory
(join it with ``config.results``) and accepts Snakemake wildcard patterns as values
(``run_dir("{dataset}", "{method}", "{ratio}", "{seed}")`` is the rule pattern).

======================================  ===========================================
``raw/{dataset}``                       the fetched source (+ ``.fetched.json``)
``preprocessed/{dataset}/store.h5``     the case store; ``dataset.json`` its descriptor
``splits/{dataset}/{ratio}.json``       patient ids per role
``runs/{dataset}/{method}/{ratio}/seed{seed}/``  model.pt, models.pt, train.csv, config.json,
                                        predictions/, metrics.csv
``tables/{name}.md``                    a table
======================================  ===========================================
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

__all__ = ["descriptor", "parse_run_path", "raw_dir", "run_dir", "run_file", "split", "store", "table"]


def raw_dir(dataset: str) -> str:
    return f"raw/{dataset}"


def store(dataset: str) -> str:
    return f"preprocessed/{dataset}/store.h5"


def descriptor(dataset: str) -> str:
    return f"preprocessed/{dataset}/dataset.json"


def split(dataset: str, ratio) -> str:
    return f"splits/{dataset}/{ratio}.json"


def run_dir(dataset: str, method: str, ratio, seed) -> str:
    return f"runs/{dataset}/{method}/{ratio}/seed{seed}"


def run_file(dataset: str, method: str, ratio, seed, name: str = "") -> str:
    """A file (or, with ``name=""``, the directory) inside one run's directory."""
    return str(PurePosixPath(run_dir(dataset, method, ratio, seed)) / name) if name else run_dir(
        dataset, method, ratio, seed)


def table(name: str) -> str:
    return f"tables/{name}.md"


_RUN = re.compile(r"runs/(?P<dataset>[^/]+)/(?P<method>[^/]+)/(?P<ratio>\d+)/seed(?P<seed>\d+)(?:/|$)")


def parse_run_path(path) -> tuple[str, str, int, int]:
    """``(dataset, method, ratio, seed)`` of a path inside (or of) a run directory."""
    m = _RUN.search(PurePosixPath(str(path)).as_posix())
    if not m:
        raise ValueError(f"{path}: not inside a run directory (runs/<dataset>/<method>/<ratio>/seed<seed>/)")
    return m["dataset"], m["method"], int(m["ratio"]), int(m["seed"])
