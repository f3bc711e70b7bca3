"""Where every stage's output lives under the results directory: the one spelling of the layout.

The workflow's rules, the table builder and ``semiseg audit`` all build and read paths here, so
the layout is written once. Each function returns a path relative to the results directory
(join it with ``config.results``) and accepts Snakemake wildcard patterns as values
(``run_dir("{dataset}", "{method}", "{ratio}", "{seed}", "{stride}")`` is the rule pattern).

======================================  ===========================================
``raw/{dataset}``                       the fetched source (+ ``.fetched.json``)
``preprocessed/{dataset}/store.h5``     the case store; ``dataset.json`` its descriptor
``splits/{dataset}/{ratio}.json``       patient ids per role
``runs/{dataset}/{method}/{ratio}/seed{seed}/``  model.pt, models.pt, train.csv, config.json,
                                        predictions/, metrics.csv; ``seed{seed}-stride{z}x{y}x{x}/``
                                        a run at a table's own test stride
``external/{table}/{key}/``             a predictions row's metrics.csv (another tool's
                                        predictions, scored for one table)
``oracle/every{k}/{dataset}/{method}/{ratio}/seed{seed}/``  the test-selection oracle of a run
                                        (a table's ``oracle: {every: k}``; the run's stride tag
                                        after ``seed{seed}`` as below ``runs/``): snapshots/,
                                        train.csv, config.json, test/, oracle.json; never
                                        read by the honest rules nor by ``semiseg audit``
``tables/{name}.md``                    a table
``figures/{figure}_{dataset}_{ratio}.png``  a figure drawn from one run (``{dataset}-stride...``:
                                        from a run at a table's own test stride)
``report/{name}.html``                  a table's report page
``logs/{stage}/{key}.log``              a job's log: ``key`` its dataset, table or run
======================================  ===========================================
"""

from __future__ import annotations

import re
from pathlib import PurePath, PurePosixPath

__all__ = ["DESCRIPTOR_NAME", "ORACLE_SUMMARY", "STORE_NAME", "descriptor", "external_file", "external_key", "figure",
           "log", "oracle_file", "oracle_key", "oracle_snapshot", "parse_external_path", "parse_oracle_path",
           "parse_run", "parse_run_path", "parse_stride_tag", "raw_dir", "report_page", "results_root", "run_dir", "run_file",
           "run_key", "split", "store", "stride_tag", "table"]


def raw_dir(dataset: str) -> str:
    return f"raw/{dataset}"


#: The file names of a dataset's case store and its descriptor, side by side in one folder.
STORE_NAME, DESCRIPTOR_NAME = "store.h5", "dataset.json"


def store(dataset: str) -> str:
    return f"preprocessed/{dataset}/{STORE_NAME}"


def descriptor(dataset: str) -> str:
    return f"preprocessed/{dataset}/{DESCRIPTOR_NAME}"


def split(dataset: str, ratio) -> str:
    return f"splits/{dataset}/{ratio}.json"


def stride_tag(stride) -> str:
    """What a run's name gains from its test stride: nothing at its dataset's own (``None``),
    ``-stride<z>x<y>x<x>`` at a table's own (the stride also scores the validation that picks the
    checkpoint, so such a run is a run of its own). A string is a rule pattern, kept as it is
    (``"{stride}"``: the wildcard holds the whole tag, empty for the dataset's own).

    >>> stride_tag([16, 16, 16]), stride_tag(None), stride_tag("{stride}")
    ('-stride16x16x16', '', '{stride}')
    """
    if stride is None or isinstance(stride, str):
        return stride or ""
    return "-stride" + "x".join(str(int(v)) for v in stride)


_STRIDE_TAG = r"-stride(?P<stride>\d+x\d+x\d+)"


def parse_stride_tag(tag: str) -> list[int] | None:
    """The stride a :func:`stride_tag` names (None for ``""``, the dataset's own).

    >>> parse_stride_tag("-stride16x16x16"), parse_stride_tag("")
    ([16, 16, 16], None)
    """
    if not tag:
        return None
    m = re.fullmatch(_STRIDE_TAG, tag)
    if not m:
        raise ValueError(f"{tag!r}: not a run's stride tag (-stride<z>x<y>x<x>)")
    return [int(v) for v in m["stride"].split("x")]


def run_key(dataset: str, method: str, ratio, seed, stride=None) -> str:
    """What names one run below ``runs/`` (and below a stage's ``logs/``); ``stride`` a table's own
    test stride (:func:`stride_tag`), None for the dataset's."""
    return f"{dataset}/{method}/{ratio}/seed{seed}{stride_tag(stride)}"


def run_dir(dataset: str, method: str, ratio, seed, stride=None) -> str:
    return f"runs/{run_key(dataset, method, ratio, seed, stride)}"


def run_file(dataset: str, method: str, ratio, seed, name: str = "", stride=None) -> str:
    """A file (or, with ``name=""``, the directory) inside one run's directory."""
    folder = run_dir(dataset, method, ratio, seed, stride)
    return str(PurePosixPath(folder) / name) if name else folder


def external_key(table: str, key: str) -> str:
    """What names one predictions row's scoring below ``external/`` (and below its ``logs/``):
    ``key`` is the row's key (:func:`semiseg.table_config.external_key`)."""
    return f"{table}/{key}"


def external_file(table: str, key: str, name: str = "metrics.csv") -> str:
    """A file of one predictions row's folder: its ``metrics.csv`` and the record beside it."""
    return f"external/{external_key(table, key)}/{name}"


_EXTERNAL = re.compile(r"external/(?P<table>[^/]+)/(?P<key>[^/]+)/metrics\.csv$")


def parse_external_path(path) -> tuple[str, str] | None:
    """``(table, key)`` of a predictions row's ``metrics.csv``; None for another path.

    >>> parse_external_path("results/external/acdc/external_nnu_net/metrics.csv")
    ('acdc', 'external_nnu_net')
    """
    m = _EXTERNAL.search(PurePosixPath(str(path)).as_posix())
    return (m["table"], m["key"]) if m else None


def oracle_key(every, dataset: str, method: str, ratio, seed, stride=None) -> str:
    """What names the test-selection oracle of one run (``stride``: :func:`run_key`'s), snapshots
    every ``every`` iterations, below ``oracle/`` (and below its stages' ``logs/``). Not below
    ``runs/``: no pattern of the honest run's files (:func:`parse_run_path`) matches it."""
    return f"every{every}/{run_key(dataset, method, ratio, seed, stride)}"


def oracle_file(every, dataset: str, method: str, ratio, seed, name: str = "", stride=None) -> str:
    """A file (or, with ``name=""``, the directory) of one run's oracle: its ``snapshots/``,
    ``train.csv`` and ``config.json`` (the replayed training), its ``test/`` (each snapshot's
    predictions and metrics) and :data:`ORACLE_SUMMARY`."""
    folder = PurePosixPath("oracle") / oracle_key(every, dataset, method, ratio, seed, stride)
    return str(folder / name) if name else str(folder)


#: The oracle's summary of one run: every snapshot's scores on the test set and the best one.
ORACLE_SUMMARY = "oracle.json"


def oracle_snapshot(iteration) -> str:
    """A snapshot's folder below an oracle's ``snapshots/`` (its weights and spec, laid out as a
    run's ``model.pt`` and ``config.json``) and below its ``test/`` (predictions, metrics)."""
    return f"iter{iteration}"


_ORACLE = re.compile(r"oracle/every(?P<every>\d+)/(?P<dataset>[^/]+)/(?P<method>[^/]+)/(?P<ratio>\d+)/"
                     rf"seed(?P<seed>\d+)(?:{_STRIDE_TAG})?/oracle\.json$")


def parse_oracle_path(path) -> tuple[int, str, str, int, int] | None:
    """``(every, dataset, method, ratio, seed)`` of an oracle's summary (of a run at any stride);
    None for another path.

    >>> parse_oracle_path("results/oracle/every1000/la/mean_teacher/10/seed0/oracle.json")
    (1000, 'la', 'mean_teacher', 10, 0)
    """
    m = _ORACLE.search(PurePosixPath(str(path)).as_posix())
    return (int(m["every"]), m["dataset"], m["method"], int(m["ratio"]), int(m["seed"])) if m else None


def table(name: str) -> str:
    return f"tables/{name}.md"


def figure(name: str, dataset: str, ratio, stride=None) -> str:
    """The figure ``name`` drawn from a run of ``dataset`` at ``ratio`` (and at ``stride``, a
    table's own test stride: :func:`stride_tag`)."""
    return f"figures/{name}_{dataset}{stride_tag(stride)}_{ratio}.png"


def report_page(name: str) -> str:
    return f"report/{name}.html"


def log(stage: str, key: str) -> str:
    """The log of one job of ``stage``; ``key`` names the job: ``"{dataset}"``, ``"{dataset}/{ratio}"``,
    a table, a figure or a :func:`run_key`."""
    return f"logs/{stage}/{key}.log"


def results_root(path: PurePath, relative: str) -> PurePath:
    """The results directory of ``path``, a file laid out as ``relative`` (one of this module's
    paths) in it: ``results_root(Path("out/splits/acdc/10.json"), split("acdc", 10))`` is ``out``.
    Only the depth of ``relative`` counts, so a recorded path under other names is placed alike."""
    return path.parents[len(PurePosixPath(relative).parts) - 1]


_RUN = re.compile(r"runs/(?P<dataset>[^/]+)/(?P<method>[^/]+)/(?P<ratio>\d+)/seed(?P<seed>\d+)"
                  rf"(?P<tag>{_STRIDE_TAG})?(?:/|$)")


def parse_run(path) -> tuple[str, str, int, int, list[int] | None]:
    """``(dataset, method, ratio, seed, stride)`` of a path inside (or of) a run directory;
    ``stride`` a table's own test stride, None for the dataset's.

    >>> parse_run("results/runs/brats/crln/10/seed0-stride16x16x16/metrics.csv")
    ('brats', 'crln', 10, 0, [16, 16, 16])
    """
    m = _RUN.search(PurePosixPath(str(path)).as_posix())
    if not m:
        raise ValueError(f"{path}: not inside a run directory (runs/<dataset>/<method>/<ratio>/seed<seed>/, "
                         "seed<seed>-stride<z>x<y>x<x>/ at a table's own test stride)")
    return m["dataset"], m["method"], int(m["ratio"]), int(m["seed"]), parse_stride_tag(m["tag"])


def parse_run_path(path) -> tuple[str, str, int, int]:
    """``(dataset, method, ratio, seed)`` of a path inside (or of) a run directory (its stride too:
    :func:`parse_run`)."""
    return parse_run(path)[:4]
