"""The paper-style comparison table: one markdown file per ``config/tables/<name>.yaml``.

A table has one row per method x labeled ratio, in the order of the spec, and the columns the
semi-supervised literature prints::

    | Method | Labeled | Unlabeled | Dice↑ (%) | Jaccard↑ (%) | 95HD↓ | ASD↓ |

Each number is the mean ± sample standard deviation (ddof=1) over the spec's seeds of the runs'
summaries (:func:`semiseg.metrics.summarise`), so the spread is between training runs, not
between test cases. A paper's value, where the spec gives one, is printed beside ours::

    81.43 ± 0.52 (paper 80.10)

Worked example: two seeds with Dice 0.80 and 0.82 print as ``81.00 ± 1.41``
(mean 0.81; sample std ``sqrt(((0.80-0.81)**2 + (0.82-0.81)**2) / 1) = 0.01414``; x 100).
"""

from __future__ import annotations

import math
import numbers
import os
import statistics
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from semiseg.config import table_duplicates
from semiseg.io import atomic_write

__all__ = ["COLUMNS", "METRICS_DOC", "build_table", "format_cell", "write_table"]

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

#: Where the metric definitions live, relative to ``results/tables/<name>.md``.
METRICS_DOC = "../../docs/metrics.md"

# (summary key, factor from the summary's unit to the printed one). Dice and Jaccard are
# fractions in the summaries and percentages in the table and in the papers' reference values.
_METRICS: tuple[tuple[str, float], ...] = (
    ("dice", 100.0),
    ("jaccard", 100.0),
    ("hd95", 1.0),
    ("asd", 1.0),
)

_NOT_RUN = "not run"

# Footer keys with a fixed place and wording; any other footer key is listed after them.
_FOOTER_LABELS: tuple[tuple[str, str], ...] = (
    ("schedule", "Schedule"),
    ("code_version", "Code version"),
    ("fingerprint", "Code fingerprint"),
    ("generated", "Generated"),
)


def _escape(text: object) -> str:
    """Make ``text`` safe inside a markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


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


def format_cell(values: Sequence[float], *, reference: float | None = None) -> str:
    """Format one table cell from the per-seed values, already in display units.

    Two or more values print as ``mean ± std`` (sample std, ddof=1), one value as its mean, none
    as ``not run``; a reference value is appended as ``(paper x)``. All numbers have 2 decimals.

    >>> format_cell([81.0, 82.0], reference=80.1)
    '81.50 ± 0.71 (paper 80.10)'
    >>> format_cell([3.456])
    '3.46'
    """
    if not values:
        text = _NOT_RUN
    elif len(values) == 1:
        text = f"{values[0]:.2f}"
    else:
        text = f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"
    if reference is not None:
        text += f" (paper {reference:.2f})"
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


def _reference_values(spec: Mapping, method: str, ratio: int) -> dict[str, float]:
    """The paper's values for one row, or ``{}``."""
    reference = spec.get("reference") or {}
    by_method = (reference.get("values") or {}).get(method)
    if not by_method:
        return {}
    try:
        cell = _lookup(by_method, ratio, f"reference values of {method!r}")
    except KeyError:
        return {}
    out = {}
    for metric, _ in _METRICS:
        value = (cell or {}).get(metric)
        if value is None:
            continue
        if not _is_finite_number(value):
            raise ValueError(
                f"reference value {method}/{ratio}/{metric} must be a finite number, got {value!r}"
            )
        out[metric] = float(value)
    return out


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


def _footer_lines(
    spec: Mapping,
    *,
    dataset_info: Mapping,
    footer: Mapping,
    partial_rows: bool,
) -> list[str]:
    seeds = [int(seed) for seed in spec["seeds"]]
    seed_text = ", ".join(str(seed) for seed in seeds)
    lines = []
    if len(seeds) == 1:
        lines.append(
            f"One seed ({seed_text}): each value is that run's mean; "
            "no standard deviation is shown."
        )
    else:
        lines.append(
            f"Values are mean ± sample standard deviation (ddof=1) over seeds {seed_text} "
            "of each run's test-set summary."
        )
    if partial_rows:
        lines.append(
            "A row marked (k/n seeds) averages only the k runs that finished; with one run it "
            "shows that run's mean alone."
        )
    lines.append(
        "Each run's value is the mean over test cases of the mean over foreground classes. "
        "Empty masks: both empty scores Dice 1 and distances 0; a structure missed or "
        "hallucinated scores Dice 0 and distances equal to the image diagonal (not 0 as in "
        f"SSL4MIS-style code). See [docs/metrics.md]({METRICS_DOC})."
    )
    unit = dataset_info.get("distance_unit")
    if unit:
        lines.append(f"95HD and ASD are in {_escape(unit)}.")
    else:
        lines.append(
            "95HD and ASD are in the units of the stored voxel spacing "
            "(mm, or voxels where the spacing is 1.0)."
        )
    reference = spec.get("reference") or {}
    if reference.get("values"):
        source = reference.get("source") or "source not given"
        lines.append(f"Paper values: {_escape(source)}.")
    for key, label in _FOOTER_LABELS:
        if footer.get(key) not in (None, ""):
            lines.append(f"{label}: {_escape(footer[key])}")
    for key in sorted(set(footer) - {key for key, _ in _FOOTER_LABELS}):
        if footer[key] not in (None, ""):
            lines.append(f"{_escape(key)}: {_escape(footer[key])}")
    return lines


def build_table(
    spec: Mapping,
    *,
    dataset_info: Mapping,
    results: Mapping[tuple[str, int, int], Mapping | None],
    footer: Mapping,
    supervised_methods: Collection[str] = ("supervised",),
) -> str:
    """Render a table spec and the runs' summaries as markdown.

    Parameters
    ----------
    spec:
        One entry of ``config/tables/*.yaml`` (already validated): ``title``, ``dataset``,
        ``seeds``, ``rows`` (``method``, ``ratios``, optional ``label`` and ``run``) and an
        optional ``reference`` (``source``, ``values``: method -> ratio -> metric, with Dice and
        Jaccard in percent, as the papers print them).
    dataset_info:
        ``train_patients`` (int) and ``labeled_patients`` (``{ratio: n}``, int or str keys);
        optionally ``distance_unit`` (e.g. ``"mm"``) for the footer.
    results:
        ``(method, ratio, seed)`` -> the run's :func:`semiseg.metrics.summarise` dict (Dice and
        Jaccard as fractions), or ``None`` for a run that was not made. Every combination of a
        row with ``run`` true (the default) must be a key, so that a mistyped key cannot pass
        for a missing run; rows with ``run: false`` need none.
    footer:
        Provenance printed under the table: ``schedule``, ``code_version``, ``fingerprint``,
        ``generated`` (any of them may be absent; further keys are listed after them).
    supervised_methods:
        Methods trained on labeled patients only, whose Unlabeled cell is ``0``: the catalogue
        entries with ``algorithm: supervised``.

    Returns
    -------
    str
        The markdown document: title, one row per method x ratio in spec order, and the footer.
        A row with no finished run keeps its place, shows the paper values if any and says
        ``not run``.
    """
    seeds = [int(seed) for seed in spec["seeds"]]
    if not seeds:
        raise ValueError("table spec lists no seeds")
    if table_duplicates(spec):  # the same run twice would pass for two seeds
        raise ValueError(f"table {spec.get('title')!r}: {'; '.join(table_duplicates(spec))}")
    supervised = set(supervised_methods)

    header = "| " + " | ".join(COLUMNS) + " |"
    rule = "| " + " | ".join([":---", ":---", ":---", *["---:"] * len(_METRICS)]) + " |"
    body = []
    partial_rows = False
    for row in spec["rows"]:
        method = row["method"]
        label = row.get("label") or method
        for ratio in row["ratios"]:
            ratio = int(ratio)
            runs: list[dict[str, float]] = []
            if row.get("run", True):
                for seed in seeds:
                    key = (method, ratio, seed)
                    if key not in results:
                        raise KeyError(
                            f"results has no entry for {key!r}; pass None for a run that was "
                            "not made"
                        )
                    if results[key] is not None:
                        runs.append(_summary_values(results[key], key))
            reference = _reference_values(spec, method, ratio)
            name = _escape(label)
            if runs and len(runs) < len(seeds):
                partial_rows = True
                name += f" ({len(runs)}/{len(seeds)} seeds)"
            labeled_cell, unlabeled_cell = _patient_cells(
                ratio, dataset_info, supervised=method in supervised
            )
            cells = [name, labeled_cell, unlabeled_cell]
            for metric, factor in _METRICS:
                values = [run[metric] * factor for run in runs]
                cells.append(format_cell(values, reference=reference.get(metric)))
            body.append("| " + " | ".join(cells) + " |")

    title = _escape(spec["title"])
    intro = (
        f"Dataset `{_escape(spec['dataset'])}`: {dataset_info['train_patients']} training "
        "patients; metrics on the test set."
    )
    notes = _footer_lines(spec, dataset_info=dataset_info, footer=footer, partial_rows=partial_rows)
    parts = [f"# {title}", "", intro, "", header, rule, *body, "", *[f"- {line}" for line in notes]]
    return "\n".join(parts) + "\n"


def write_table(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` to ``path`` atomically (:func:`semiseg.io.atomic_write`), so a reader (or
    Snakemake) never sees a half-written table."""
    atomic_write(path, text)
