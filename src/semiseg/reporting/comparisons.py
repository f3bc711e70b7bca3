"""The paired comparisons of one table: every run row against its comparator at the same ratio.

A row's comparator is the row its ``compare_to`` names (a method of the table, at the same
ratio), else the table's labeled-only row at that ratio (the first row of a method trained on
labeled patients only); a labeled-only row itself, and a row with no comparator at its ratio,
is compared with nothing. The statistics are :mod:`semiseg.metrics.paired`'s, on Dice (the
table's first metric and the one every paper ranks by), in percent; the bootstrap draws are the
table's (``bootstrap`` settings); the p-values of a table are Holm-adjusted together, and a
comparison is *distinguishable* when its adjusted p-value is below ``1 - confidence``.

The table stage prints them in its ``difference`` column, the report page as a forest plot, and
``benchmarks/demo_time.py`` checks the demo's with them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from semiseg.metrics.bootstrap import resample_indices
from semiseg.metrics.paired import EXACT_CASES, PairedComparison, compare, holm
from semiseg.reporting.notes import METRICS_DOC, escape

__all__ = ["Comparison", "comparators", "difference_cell", "difference_footer", "table_comparisons"]

#: The metric compared, and its factor from the summaries' fraction to the printed percent.
METRIC, FACTOR = "dice", 100.0


@dataclass(frozen=True)
class Comparison:
    """A row's comparison: its comparator ``(method, ratio)`` and label, the statistics over the
    ``seeds`` both rows finished, the Holm-adjusted p-value and whether the difference is
    distinguishable from none at the table's level ``1 - confidence``."""

    comparator: tuple[str, int]
    comparator_label: str
    seeds: tuple[int, ...]
    stats: PairedComparison
    holm_p: float
    distinguishable: bool


def comparators(spec: Mapping, supervised_methods: Collection[str]) -> dict[tuple[str, int], tuple[str, int]]:
    """``(method, ratio) -> (comparator method, ratio)`` for every run row of ``spec`` that has
    one, in table order. A ``compare_to`` naming no run row of the table at that ratio is an
    error naming the row."""
    run_rows = [row for row in spec["rows"] if row.get("run", True)]
    at_ratio: dict[int, list[str]] = {}
    for row in run_rows:
        for ratio in row["ratios"]:
            at_ratio.setdefault(int(ratio), []).append(row["method"])
    supervised = set(supervised_methods)
    out: dict[tuple[str, int], tuple[str, int]] = {}
    for i, row in enumerate(spec["rows"]):
        if not row.get("run", True):
            continue
        method, named = row["method"], row.get("compare_to")
        for ratio in (int(r) for r in row["ratios"]):
            if named is not None:
                if named == method or named not in at_ratio.get(ratio, []):
                    raise ValueError(f"table {spec.get('title')!r}, rows.{i}.compare_to: {named!r} is no other row "
                                     f"of the table run at ratio {ratio} (rows there: {at_ratio.get(ratio, [])})")
                out[(method, ratio)] = (named, ratio)
            elif method not in supervised:
                base = next((m for m in at_ratio.get(ratio, []) if m in supervised), None)
                if base is not None:
                    out[(method, ratio)] = (base, ratio)
    return out


def _labels(spec: Mapping) -> dict[tuple[str, int], str]:
    return {(row["method"], int(ratio)): row.get("label") or row["method"]
            for row in spec["rows"] for ratio in row["ratios"]}


def table_comparisons(spec: Mapping, case_values: Mapping[tuple[str, int, int], object],
                      supervised_methods: Collection[str] = ("supervised",)) -> dict[tuple[str, int], Comparison]:
    """The comparisons of a table (``spec`` validated, with ``bootstrap``): ``(method, ratio)``
    -> :class:`Comparison`, for each row with a comparator and at least one seed finished in
    both. ``case_values``: ``(method, ratio, seed)`` -> the run's per-case frame
    (:func:`semiseg.metrics.summary.case_means`), for the finished runs; both rows of a
    comparison must have scored the same cases."""
    bootstrap = spec.get("bootstrap")
    if not bootstrap or not {"resamples", "confidence", "seed"} <= set(bootstrap):
        raise ValueError(f"table {spec.get('title')!r}: paired comparisons need bootstrap's resamples, confidence "
                         f"and seed, got {bootstrap!r}")
    confidence, seed = float(bootstrap["confidence"]), int(bootstrap["seed"])
    labels = _labels(spec)
    raw: dict[tuple[str, int], tuple[tuple[str, int], tuple[int, ...], PairedComparison]] = {}
    draws: dict[int, np.ndarray] = {}
    for (method, ratio), other in comparators(spec, supervised_methods).items():
        seeds = tuple(int(s) for s in spec["seeds"]
                      if case_values.get((method, ratio, int(s))) is not None
                      and case_values.get((*other, int(s))) is not None)
        if not seeds:
            continue
        row, base = [], []
        for s in seeds:
            a, b = case_values[(method, ratio, s)], case_values[(*other, s)]
            if [str(c) for c in a.index] != [str(c) for c in b.index]:
                raise ValueError(f"{method} and {other[0]} at ratio {ratio}, seed {s}: scored on different test cases "
                                 f"({len(a.index)} and {len(b.index)}); a paired comparison needs the same cases")
            row.append(np.asarray(a[METRIC], dtype=float) * FACTOR)
            base.append(np.asarray(b[METRIC], dtype=float) * FACTOR)
        n_cases = len(row[0])
        if n_cases not in draws:
            draws[n_cases] = resample_indices(n_cases, int(bootstrap["resamples"]), seed)
        stats = compare(np.stack(row), np.stack(base), draws=draws[n_cases], confidence=confidence, seed=seed)
        raw[(method, ratio)] = (other, seeds, stats)
    adjusted = holm([stats.p_value for _, _, stats in raw.values()]) if raw else []
    return {key: Comparison(comparator=other, comparator_label=labels[other], seeds=seeds, stats=stats,
                            holm_p=p, distinguishable=p < 1 - confidence)
            for (key, (other, seeds, stats)), p in zip(raw.items(), adjusted)}


def _p(value: float) -> str:
    """A p-value with two significant digits: ``0.031``, ``0.22``, ``1``."""
    return f"{value:.2g}"


def difference_cell(comparison: Comparison | None) -> str:
    """A row's ``difference`` cell: ``+3.00 ± 1.41 vs U-Net (95% CI 2.33–3.67; p 0.031, Holm
    0.062)``, the ± the sample std of the per-seed differences (left out with one seed), with
    ``; not distinguishable`` where the Holm-adjusted p-value is not below ``1 - confidence``;
    ``—`` for a row compared with nothing.

    >>> from semiseg.metrics.paired import PairedComparison
    >>> stats = PairedComparison(3.0, (4.0, 2.0), 2.33, 3.67, 0.95, 0.03125, 64, True)
    >>> difference_cell(Comparison(("supervised", 10), "U-Net", (0, 1), stats, 0.0625, False))
    '+3.00 ± 1.41 vs U-Net (95% CI 2.33–3.67; p 0.031, Holm 0.062; not distinguishable)'
    """
    if comparison is None:
        return "—"
    c = comparison.stats
    text = f"{c.estimate:+.2f}"
    if len(c.per_seed) > 1:
        text += f" ± {float(np.std(c.per_seed, ddof=1)):.2f}"
    text += (f" vs {escape(comparison.comparator_label)} ({c.confidence * 100:g}% CI {c.low:.2f}–{c.high:.2f}; "
             f"p {_p(c.p_value)}, Holm {_p(comparison.holm_p)}")
    return text + ("" if comparison.distinguishable else "; not distinguishable") + ")"


def difference_footer(spec: Mapping, comparisons: Mapping[tuple[str, int], Comparison]) -> str:
    """The footer line that says how the ``difference`` column is computed."""
    bootstrap = spec["bootstrap"]
    alpha = 1 - float(bootstrap["confidence"])
    return ("ΔDice vs comparator: each row's Dice minus that of its comparator at the same ratio (the row its "
            "compare_to names, else the labeled-only row), paired by seed and test case: the mean ± the sample "
            "std over seeds of each seed's mean difference; the percentile bootstrap interval of the mean "
            "difference over the test cases (the resampled case sets of the cells' CI); the two-sided p-value of a paired permutation "
            "test over the test cases (the sign of each case's seed-averaged difference flipped: all 2^n "
            f"patterns up to {EXACT_CASES} cases, so with n cases p is at least 2/2^n), Holm-adjusted over the "
            f"table's {len(comparisons)} comparison{'s' if len(comparisons) != 1 else ''}. \"not distinguishable\": "
            f"an adjusted p of {alpha:g} or more. See [docs/metrics.md]({METRICS_DOC}).")
