"""The paper-style comparison table: one markdown file per ``config/tables/<name>.yaml``.

A table has one row per method x labeled ratio, in the order of the spec, and the columns the
semi-supervised literature prints::

    | Method | Labeled | Unlabeled | Dice↑ (%) | Jaccard↑ (%) | 95HD↓ | ASD↓ |

Each number is the mean ± sample standard deviation (ddof=1) over the spec's seeds of the runs'
summaries (:func:`semiseg.metrics.summarise`), so the spread is between training runs, not
between test cases. A paper's value, where the spec gives one, is printed beside ours::

    81.43 ± 0.52 (paper 80.10)

and where the spec cites several papers (:mod:`semiseg.references`), every value
with its source's tag, identical values once with all their sources::

    not run (paper: BUARL T1 79.65; ALHVR T2 83.65)
    88.12 ± 0.40 (paper: BUARL T1, TraCoCo 88.84)

A table whose spec has ``bootstrap`` (``resamples``, ``confidence``, ``seed``) adds to each
value a percentile bootstrap confidence interval over the test cases
(:mod:`semiseg.metrics.bootstrap`: the cases resampled, each resampled set averaged over the
seeds), explained in the footer::

    81.50 ± 0.71 (95% CI 79.80–83.05) (paper 80.10)

A spec's ``columns`` chooses the columns after Labeled and Unlabeled (default the four
metrics): ``difference`` is each row's paired Dice difference to its comparator
(:mod:`semiseg.reporting.comparisons`; it needs ``bootstrap``), ``cost`` each run's device
time and peak memory (:mod:`semiseg.reporting.cost`)::

    +3.00 ± 1.41 vs U-Net (95% CI 2.33–3.67; p 0.031, Holm 0.062; not distinguishable)
    0.0167 h/run, 412 MB peak (cpu: AMD EPYC 7B13)

A spec's ``oracle`` (``every``) adds, right after the Dice column, the test-selection oracle's
column "Dice↑ (%) best on test — leaks the test set" (:mod:`semiseg.reporting.oracle`): each
run's best snapshot on the test set, with its gain over the honest value::

    83.50 ± 0.71 (+2.50 over honest; iterations 3000, 5000)

A run under the ``smoke`` schedule on a dataset whose own schedule is another, or one scored
on part of the test set, is no result: the title line says so, once, and every cell of it
carries a footnote mark that the notes under the table explain (one mark per kind of run, in
table order: ``†``, ``‡``, ``§``, ``¶``, then ``†5``, ...)::

    # ACDC — smoke: 2 of 40 test volumes, 2 iterations — not a result
    ...
    | MT | 7 (10%) | 63 (90%) | 30.12 ± 1.20 (†) (paper 83.65) | ...
    ...
    - Not a result: † smoke: 2 of 40 test volumes, 2 iterations — not a result. ...

Worked example: two seeds with Dice 0.80 and 0.82 print as ``81.00 ± 1.41``
(mean 0.81; sample std ``sqrt(((0.80-0.81)**2 + (0.82-0.81)**2) / 1) = 0.01414``; x 100).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from semiseg.config import table_duplicates
from semiseg.io import atomic_write
from semiseg.metrics.bootstrap import interval_from_draws, resample_indices
from semiseg.reporting.comparisons import Comparison, difference_cell, difference_footer, table_comparisons
from semiseg.reporting.cost import cost_cell, cost_footer
from semiseg.reporting.notes import METRICS_DOC, escape, footer_lines, mean_std_text, smoke_mark
from semiseg.reporting.oracle import ORACLE_TITLE, oracle_cell, oracle_footer
from semiseg.references import reference_values
from semiseg.table_config import is_external

__all__ = ["COLUMNS", "METRICS_DOC", "TableRow", "TableRuns", "build_table", "compute_table", "footnote_mark",
           "format_cell", "render_table", "write_table"]

#: Table header, in column order.
COLUMNS: tuple[str, ...] = (
    "Method",
    "Labeled",
    "Unlabeled",
    "Dice↑ (%)",
    "Jaccard↑ (%)",
    "95HD↓",
    "ASD↓",
)


# (summary key, factor from the summary's unit to the printed one). Dice and Jaccard are
# fractions in the summaries and percentages in the table and in the papers' reference values.
_METRICS: tuple[tuple[str, float], ...] = (
    ("dice", 100.0),
    ("jaccard", 100.0),
    ("hd95", 1.0),
    ("asd", 1.0),
)

#: The header of each column a spec's ``columns`` may choose (the metrics' are COLUMNS[3:]).
COLUMN_TITLES: dict[str, str] = {
    **{metric: title for (metric, _), title in zip(_METRICS, COLUMNS[3:])},
    "difference": "ΔDice vs comparator (%)",
    "cost": "Cost (device time per run, peak memory)",
    "oracle": ORACLE_TITLE,
}

_NOT_RUN = "not run"

#: Footnote marks of the runs that are no result, one per kind (module docstring).
_FOOTNOTES = ("†", "‡", "§", "¶")


def footnote_mark(index: int) -> str:
    """The ``index``-th footnote mark (0-based): ``†``, ``‡``, ``§``, ``¶``, then ``†5``, ``†6``, ...

    >>> [footnote_mark(k) for k in (0, 1, 4)]
    ['†', '‡', '†5']
    """
    return _FOOTNOTES[index] if index < len(_FOOTNOTES) else f"{_FOOTNOTES[0]}{index + 1}"

def _is_finite_number(value: object) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(value)
    )


def _format_ratio(ratio: float) -> str:
    return f"{ratio:g}"


def _lookup(mapping: Mapping, ratio: int, what: str):
    """``mapping[ratio]``, accepting int or str keys (YAML gives ints, JSON gives strings)."""
    for key in (ratio, str(ratio)):
        if key in mapping:
            return mapping[key]
    raise KeyError(f"{what} has no entry for ratio {ratio} (keys: {sorted(map(str, mapping))})")


def format_references(references: Sequence[tuple[str | None, float]]) -> str:
    """The papers' values of one cell: ``(paper 80.10)`` for an untagged single source, else
    ``(paper: A 79.65; B 83.65)``, a value printed by several sources once with all their tags.

    >>> format_references([("BUARL T1", 79.65), ("ALHVR T2", 83.65), ("TraCoCo", 79.65)])
    '(paper: BUARL T1, TraCoCo 79.65; ALHVR T2 83.65)'
    """
    if not references:
        return ""
    if len(references) == 1 and references[0][0] is None:
        return f"(paper {references[0][1]:.2f})"
    by_value: dict[str, list[str]] = {}
    for tag, value in references:
        by_value.setdefault(f"{value:.2f}", []).append(escape(tag or "paper"))
    return "(paper: " + "; ".join(f"{', '.join(tags)} {value}" for value, tags in by_value.items()) + ")"


def format_cell(values: Sequence[float], *, reference: float | None = None,
                references: Sequence[tuple[str | None, float]] = (), mark: str = "",
                interval: tuple[float, float] | None = None, confidence: float = 0.95) -> str:
    """Format one table cell from the per-seed values, already in display units.

    Two or more values print as ``mean ± std`` (sample std, ddof=1), one value as its mean, none
    as ``not run``; a bootstrap ``interval`` (low, high) at ``confidence`` follows as
    ``(95% CI low–high)``; ``mark`` (e.g. a smoke run's warning) follows in parentheses; then
    the papers' values: ``reference`` as ``(paper x)``, or ``references`` as
    :func:`format_references` prints them. All numbers have 2 decimals.

    >>> format_cell([81.0, 82.0], reference=80.1)
    '81.50 ± 0.71 (paper 80.10)'
    >>> format_cell([81.0, 82.0], interval=(79.8, 83.05), reference=80.1)
    '81.50 ± 0.71 (95% CI 79.80–83.05) (paper 80.10)'
    >>> format_cell([3.456])
    '3.46'
    >>> format_cell([30.0, 31.0], mark="smoke: 2 of 40 test volumes, 4 iterations — not a result")
    '30.50 ± 0.71 (smoke: 2 of 40 test volumes, 4 iterations — not a result)'
    """
    text = mean_std_text(values) if values else _NOT_RUN
    if interval is not None and values:
        text += f" ({confidence * 100:g}% CI {interval[0]:.2f}–{interval[1]:.2f})"
    if mark and values:
        text += f" ({escape(mark)})"
    if reference is not None:
        references = [(None, reference), *references]
    if references:
        text += " " + format_references(references)
    return text


def _summary_values(summary: Mapping, key: tuple) -> dict[str, float]:
    """The four metrics of one run's summary, checked to be finite numbers."""
    if not isinstance(summary, Mapping):
        raise TypeError(f"results[{key!r}] must be a summary dict or None, got {summary!r}")
    values = {}
    for metric, _ in _METRICS:
        if metric not in summary:
            raise ValueError(
                f"results[{key!r}] has no {metric!r} (expected a semiseg.metrics.summarise dict)"
            )
        value = summary[metric]
        if not _is_finite_number(value):
            raise ValueError(f"results[{key!r}][{metric!r}] must be a finite number, got {value!r}")
        values[metric] = float(value)
    return values


def _reference_values(spec: Mapping, method: str, ratio: int) -> dict[str, list[tuple[str | None, float]]]:
    """The papers' values for one row: metric -> [(source tag, value), ...], sources in spec order."""
    out: dict[str, list[tuple[str | None, float]]] = {}
    for tag, cell in reference_values(spec).get(method, {}).get(int(ratio), []):
        for metric, _ in _METRICS:
            value = cell.get(metric)
            if value is None:
                continue
            if not _is_finite_number(value):
                raise ValueError(
                    f"reference value {method}/{ratio}/{metric} must be a finite number, got {value!r}"
                )
            out.setdefault(metric, []).append((tag, float(value)))
    return out


def _case_matrix(case_values: Mapping, keys: Sequence[tuple]) -> tuple[list[str], dict[str, np.ndarray]]:
    """The finished runs' per-case values of one cell: the case ids (every run must have the
    same) and metric -> ``(n_seeds, n_cases)``, in the summaries' units."""
    cases: list[str] | None = None
    rows: dict[str, list[np.ndarray]] = {metric: [] for metric, _ in _METRICS}
    for key in keys:
        if key not in case_values or case_values[key] is None:
            raise KeyError(f"the table asks for a bootstrap interval, but case_values has no per-case values "
                           f"for the run {key!r} (semiseg.metrics.summary.case_means of its metrics.csv)")
        frame = case_values[key]
        these = [str(case) for case in frame.index]
        if cases is None:
            cases = these
        elif these != cases:
            raise ValueError(f"the runs of {key[:2]!r} were scored on different test cases ({key!r}: "
                             f"{len(these)} cases, the first seed's: {len(cases)}); a bootstrap over cases "
                             "needs the same cases in every seed")
        for metric, _ in _METRICS:
            rows[metric].append(np.asarray(frame[metric], dtype=float))  # checked finite where resampled
    return cases or [], {metric: np.stack(columns) for metric, columns in rows.items()}


def _patient_cells(
    ratio: int, dataset_info: Mapping, *, supervised: bool
) -> tuple[str, str]:
    """The Labeled and Unlabeled cells, e.g. ``("7 (10%)", "63 (90%)")``."""
    train = dataset_info["train_patients"]
    labeled = _lookup(dataset_info["labeled_patients"], ratio, "dataset_info['labeled_patients']")
    if isinstance(train, bool) or not isinstance(train, numbers.Integral) or train < 1:
        raise ValueError(f"dataset_info['train_patients'] must be a positive int, got {train!r}")
    if (
        isinstance(labeled, bool)
        or not isinstance(labeled, numbers.Integral)
        or not 0 < labeled <= train
    ):
        raise ValueError(
            f"labeled patients for ratio {ratio} must be an int in 1..{train}, got {labeled!r}"
        )
    labeled_cell = f"{labeled} ({_format_ratio(ratio)}%)"
    unlabeled = train - labeled
    if supervised or unlabeled == 0:
        return labeled_cell, "0"
    return labeled_cell, f"{unlabeled} ({_format_ratio(100 - ratio)}%)"


def build_table(
    spec: Mapping,
    *,
    dataset_info: Mapping,
    results: Mapping[tuple[str, int, int], Mapping | None],
    footer: Mapping,
    supervised_methods: Collection[str] = ("supervised",),
    run_info: Mapping[tuple[str, int, int], Mapping] | None = None,
    case_values: Mapping[tuple[str, int, int], object] | None = None,
    oracle: Mapping[tuple[str, int, int], Mapping] | None = None,
) -> str:
    """Render a table spec and the runs' summaries as markdown.

    Parameters
    ----------
    spec:
        One entry of ``config/tables/*.yaml`` (already validated): ``title``, ``dataset``,
        ``seeds``, ``rows`` (``method``, ``ratios``, optional ``label``, ``run`` and
        ``compare_to``; a predictions row also ``predictions``, as the config loader completes
        it: :func:`semiseg.table_config.add_external_rows`), optional ``columns`` (module docstring) and an
        optional ``reference``: one source or a list of them, each ``source`` (paper and
        table), ``values`` (method -> ratio -> metric, Dice and Jaccard in percent, as the
        papers print them) and, with several sources, a ``tag`` each
        (:mod:`semiseg.references`).
    dataset_info:
        ``train_patients`` (int) and ``labeled_patients`` (``{ratio: n}``, int or str keys);
        optionally ``distance_unit`` (e.g. ``"mm"``) for the footer, ``test_cases`` (the
        number of test volumes) and ``own_schedule`` (the dataset's own schedule), against
        which a run's ``run_info`` is judged.
    results:
        ``(method, ratio, seed)`` -> the run's :func:`semiseg.metrics.summarise` dict (Dice and
        Jaccard as fractions), or ``None`` for a run that was not made. Every combination of a
        row with ``run`` true (the default) must be a key, so that a mistyped key cannot pass
        for a missing run; rows with ``run: false`` need none. A predictions row's one result is
        ``(its key, its ratio, None)``.
    footer:
        Provenance printed under the table: ``schedule``, ``code_version``, ``fingerprint``,
        ``generated`` (any of them may be absent; further keys are listed after them).
    supervised_methods:
        Methods trained on labeled patients only, whose Unlabeled cell is ``0``: the catalogue
        entries with ``algorithm: supervised``.
    run_info:
        ``(method, ratio, seed)`` -> what the run says of itself: ``schedule`` (name),
        ``iterations``, ``test_cases`` (volumes scored). A run under the ``smoke`` schedule on a
        dataset whose ``own_schedule`` is another, or scored on fewer than ``test_cases``
        volumes, is named in the title line as no result and its cells carry a footnote mark
        (:func:`footnote_mark`) that the notes explain; smoke runs that are the dataset's own
        schedule put the schedule and its iterations in the title line.
    case_values:
        ``(method, ratio, seed)`` -> the run's per-case values, a frame as
        :func:`semiseg.metrics.summary.case_means` returns (index: case ids; one column per
        metric, Dice and Jaccard as fractions). Needed, for every finished run, only by a spec
        with ``bootstrap`` (``resamples``, ``confidence``, ``seed``): each cell then shows the
        percentile bootstrap interval over the test cases of its seed-averaged value
        (:mod:`semiseg.metrics.bootstrap`; every seed of a cell must have the same cases).
    oracle:
        ``(method, ratio, seed)`` -> the best snapshot on the test set of the run's oracle
        (``best`` of its ``oracle.json``: :mod:`semiseg.metrics.oracle`), for a spec with
        ``oracle``; a finished run without one shows as such in the column.

    Returns
    -------
    str
        The markdown document: title, one row per method x ratio in spec order, and the footer.
        A row with no finished run keeps its place, shows the paper values if any and says
        ``not run``.
    """
    table = compute_table(spec, dataset_info=dataset_info, results=results, supervised_methods=supervised_methods,
                          run_info=run_info, case_values=case_values, oracle=oracle)
    return render_table(spec, table, dataset_info=dataset_info, footer=footer)


@dataclass
class TableRow:
    """One row of a table (a method at a ratio) as computed from its runs, before any text.

    ``runs``: the finished seeds' summaries (Dice and Jaccard as fractions); ``marks``: why they
    are no result (:func:`semiseg.reporting.notes.smoke_mark`); ``references``: metric -> the
    papers' values; ``intervals``: metric -> the bootstrap interval, in the table's units;
    ``difference``: the paired comparison with its comparator (a ``difference`` column), ``costs``:
    the finished runs' costs (a ``cost`` column, :func:`semiseg.reporting.cost.run_cost`);
    ``external``: a predictions row (another tool's predictions: one result, keyed by seed None);
    ``oracle``: the finished runs' best snapshots on the test set (a spec with ``oracle``)."""

    label: str
    ratio: int
    supervised: bool
    runs: list[dict[str, float]]
    marks: list[str]
    references: dict[str, list[tuple[str | None, float]]]
    intervals: dict[str, tuple[float, float]]
    difference: Comparison | None = None
    costs: list[Mapping | None] = field(default_factory=list)
    external: bool = False
    oracle: list[Mapping | None] = field(default_factory=list)


@dataclass
class TableRuns:
    """A table as computed: its rows in spec order, the seeds asked for, the marks of the runs
    that are no result (table order), the iteration counts of its smoke runs and its paired
    comparisons."""

    rows: list[TableRow]
    n_seeds: int
    marks: list[str] = field(default_factory=list)
    smoke_iterations: set[int] = field(default_factory=set)
    comparisons: dict[tuple[str, int], Comparison] = field(default_factory=dict)


def compute_table(
    spec: Mapping,
    *,
    dataset_info: Mapping,
    results: Mapping[tuple[str, int, int], Mapping | None],
    supervised_methods: Collection[str] = ("supervised",),
    run_info: Mapping[tuple[str, int, int], Mapping] | None = None,
    case_values: Mapping[tuple[str, int, int], object] | None = None,
    oracle: Mapping[tuple[str, int, int], Mapping] | None = None,
) -> TableRuns:
    """The rows of :func:`build_table` (same arguments) from the runs, with no text yet."""
    seeds = [int(seed) for seed in spec["seeds"]]
    if not seeds:
        raise ValueError("table spec lists no seeds")
    if table_duplicates(spec):  # the same run twice would pass for two seeds
        raise ValueError(f"table {spec.get('title')!r}: {'; '.join(table_duplicates(spec))}")
    supervised = set(supervised_methods)
    run_info = run_info or {}
    bootstrap = spec.get("bootstrap")
    if bootstrap and not {"resamples", "confidence", "seed"} <= set(bootstrap):
        raise ValueError(f"table {spec.get('title')!r}: bootstrap needs resamples, confidence and seed, got "
                         f"{dict(bootstrap)!r} (the schema fills in confidence 0.95 and seed 0)")
    draws: dict[int, np.ndarray] = {}  # n_cases -> the resampled case indices, shared by every cell

    table = TableRuns(rows=[], n_seeds=len(seeds))
    if "difference" in (spec.get("columns") or ()):
        table.comparisons = table_comparisons(spec, case_values or {}, supervised)
    for row in spec["rows"]:
        method = row["method"]
        for ratio in row["ratios"]:
            ratio = int(ratio)
            runs: list[dict[str, float]] = []
            finished: list[tuple[str, int, int]] = []
            row_marks: list[str] = []
            if row.get("run", True):  # a predictions row: one folder scored, no seeds
                runs, finished, row_marks = _row_runs(table, method, ratio, [None] if is_external(row) else seeds,
                                                      results, run_info, dataset_info)
            table.marks += [m for m in row_marks if m not in table.marks]
            intervals = _intervals(bootstrap, finished, case_values or {}, draws) if bootstrap and finished else {}
            table.rows.append(TableRow(row.get("label") or method, ratio, method in supervised, runs, row_marks,
                                       _reference_values(spec, method, ratio), intervals,
                                       table.comparisons.get((method, ratio)),
                                       [(run_info.get(key) or {}).get("cost") for key in finished],
                                       is_external(row), [(oracle or {}).get(key) for key in finished]))
    return table


def _row_runs(table: TableRuns, method: str, ratio: int, seeds: list[int], results: Mapping, run_info: Mapping,
              dataset_info: Mapping) -> tuple[list[dict[str, float]], list[tuple[str, int, int]], list[str]]:
    """The summaries and keys of a row's finished seeds, and the marks of those that are no result
    (a smoke run's iterations go into ``table``)."""
    runs, finished, row_marks = [], [], []
    for seed in seeds:
        key = (method, ratio, seed)
        if key not in results:
            raise KeyError(
                f"results has no entry for {key!r}; pass None for a run that was "
                "not made"
            )
        if results[key] is not None:
            runs.append(_summary_values(results[key], key))
            finished.append(key)
            info = run_info.get(key) or {}
            if info.get("schedule") == "smoke" and info.get("iterations") is not None:
                table.smoke_iterations.add(int(info["iterations"]))
            mark = smoke_mark(info, dataset_info)
            if mark and mark not in row_marks:
                row_marks.append(mark)
    return runs, finished, row_marks


def _intervals(bootstrap: Mapping, finished: list[tuple[str, int, int]], case_values: Mapping,
               draws: dict[int, np.ndarray]) -> dict[str, tuple[float, float]]:
    """metric -> the bootstrap interval of a cell over its test cases, in the table's units."""
    intervals: dict[str, tuple[float, float]] = {}
    cases, per_case = _case_matrix(case_values, finished)
    if len(cases) not in draws:
        draws[len(cases)] = resample_indices(len(cases), int(bootstrap["resamples"]), int(bootstrap["seed"]))
    for metric, factor in _METRICS:
        ci = interval_from_draws(per_case[metric] * factor, draws[len(cases)], float(bootstrap["confidence"]))
        intervals[metric] = (ci.low, ci.high)
    return intervals


def render_table(spec: Mapping, table: TableRuns, *, dataset_info: Mapping, footer: Mapping) -> str:
    """The markdown of a computed table (see :func:`build_table`)."""
    bootstrap = spec.get("bootstrap")
    columns = list(spec.get("columns") or [metric for metric, _ in _METRICS])
    if spec.get("oracle"):  # beside the honest Dice (the config loader has checked it is shown)
        columns.insert(columns.index("dice") + 1, "oracle")
    header = "| " + " | ".join([*COLUMNS[:3], *(COLUMN_TITLES[c] for c in columns)]) + " |"
    rule = "| " + " | ".join([":---", ":---", ":---", *["---:"] * len(columns)]) + " |"
    factors = dict(_METRICS)
    body = []
    partial_rows = False
    for row in table.rows:
        footnotes = ", ".join(footnote_mark(k) for k in sorted(table.marks.index(m) for m in row.marks))
        name = escape(row.label)
        if row.runs and not row.external and len(row.runs) < table.n_seeds:
            partial_rows = True
            name += f" ({len(row.runs)}/{table.n_seeds} seeds)"
        labeled_cell, unlabeled_cell = _patient_cells(
            row.ratio, dataset_info, supervised=row.supervised
        )
        if row.external:  # whether another tool used the unlabeled cases is not known here
            unlabeled_cell = "—"
        cells = [name, labeled_cell, unlabeled_cell]
        for column in columns:
            if column == "difference":
                cells.append(difference_cell(row.difference))
            elif column == "cost":  # a predictions row's training was another tool's: not recorded here
                cells.append("—" if row.external else cost_cell(row.costs))
            elif column == "oracle":
                cells.append("—" if row.external else oracle_cell([run["dice"] for run in row.runs], row.oracle))
            else:
                values = [run[column] * factors[column] for run in row.runs]
                cells.append(format_cell(values, references=row.references.get(column, ()), mark=footnotes,
                                         interval=row.intervals.get(column),
                                         confidence=float(bootstrap["confidence"]) if bootstrap else 0.95))
        body.append("| " + " | ".join(cells) + " |")

    marks = table.marks
    title = escape(spec["title"])
    smoke_note = ""
    if marks:
        named = "; ".join(f"{footnote_mark(k)} {m}" for k, m in enumerate(marks))
        title += " — " + marks[0] if len(marks) == 1 else " — not a result: " + named
        smoke_note = ("Not a result: " + named + ". A pipeline check under a short schedule "
                      "or on part of the test set; build the table under its own schedule for numbers.")
    elif table.smoke_iterations:
        its = "/".join(str(n) for n in sorted(table.smoke_iterations))
        title += f" (smoke schedule, {its} iterations)"
    intro = (
        f"Dataset `{escape(spec['dataset'])}`: {dataset_info['train_patients']} training "
        "patients; metrics on the test set."
    )
    notes = footer_lines(spec, dataset_info=dataset_info, footer=footer, partial_rows=partial_rows,
                          smoke_note=smoke_note)
    if "difference" in columns:
        notes.insert(1, difference_footer(spec, table.comparisons))
    if "cost" in columns:
        notes.insert(1, cost_footer([cost for row in table.rows for cost in row.costs]))
    if "oracle" in columns:
        notes.insert(1, oracle_footer(int(spec["oracle"]["every"])))
    parts = [f"# {title}", "", intro, "", header, rule, *body, "", *[f"- {line}" for line in notes]]
    return "\n".join(parts) + "\n"


def write_table(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` to ``path`` atomically (:func:`semiseg.io.atomic_write`), so a reader (or
    Snakemake) never sees a half-written table."""
    atomic_write(path, text)
