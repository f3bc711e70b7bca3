"""Paired comparisons of a table row with its comparator at the same ratio.

A row's runs and its comparator's runs are paired by seed (the same seed in both rows) and by
test case (every run of both rows scores the same cases, checked): the difference of seed ``s``
on case ``j`` is ``d[s, j] = row[s, j] - comparator[s, j]``. From these:

- the **estimate** is the mean of ``d`` over seeds and cases, which is the difference of the two
  rows' table cells (each the mean over seeds of the runs' means over cases);
- the **per-seed differences** are each seed's mean of ``d`` over the cases; their sample std
  (ddof=1) is how much the difference moves with training;
- the **interval** is the percentile bootstrap interval over test cases of ``d``
  (:func:`semiseg.metrics.bootstrap.interval_from_draws`, the same draws as the table's cells);
- the **p-value** is that of a two-sided paired permutation test over test cases: the test's unit
  is a case's seed-averaged difference ``e[j] = mean_s d[s, j]``, its statistic the mean of ``e``
  (the estimate), and under the null hypothesis (the two rows are exchangeable on each case) the
  sign of every ``e[j]`` is equally likely ``+`` or ``-``. The p-value is the fraction of the
  ``2**n`` sign patterns whose ``|mean|`` is at least the observed one, every pattern enumerated
  for ``n <= EXACT_CASES`` cases (the identity among them, so ``p >= 2 / 2**n``), else
  ``(1 + hits) / (1 + draws)`` over random patterns from ``numpy.random.default_rng(seed)``;
- **Holm's** step-down correction (:func:`holm`) adjusts the p-values of one table together.

Why a permutation test of the mean rather than Wilcoxon's signed-rank test: it tests the very
number the table prints (the mean difference, not a pseudo-median of ranks), needs no table of
critical values nor a normal approximation at small ``n``, and is exact where test sets are small
(8 to 40 cases). The smallest p-value it can give is ``2 / 2**n``: with 4 cases 0.125, so no
paired test on 4 cases can reach 0.05.

Worked example (``tests/test_paired.py``): differences ``e = [0.1, 0.2, -0.05]`` (one seed) have
mean ``0.25 / 3 = 0.0833``; of the 8 sign patterns, those whose ``|sum|`` is at least 0.25 are
``(+, +, -)``, ``(+, +, +)`` (sum 0.35) and their negatives: ``p = 4 / 8 = 0.5``. Holm on
``[0.01, 0.04, 0.03]`` multiplies the sorted ``0.01, 0.03, 0.04`` by 3, 2, 1 (``0.03, 0.06,
0.04``) and carries the running maximum: ``[0.03, 0.06, 0.06]`` in the input's order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from semiseg.metrics.bootstrap import interval_from_draws

__all__ = ["EXACT_CASES", "PairedComparison", "compare", "holm", "paired_differences", "sign_flip_p_value"]

#: Up to this many cases the permutation test enumerates every sign pattern (2**16 = 65,536).
EXACT_CASES = 16


@dataclass(frozen=True)
class PairedComparison:
    """One row against its comparator: ``estimate`` (mean difference over seeds and cases),
    ``per_seed`` (each seed's mean difference over cases), ``low``/``high`` (the percentile
    bootstrap interval at ``confidence``), ``p_value`` (two-sided paired permutation test over
    cases, from ``permutations`` sign patterns, all of them where ``exact``)."""

    estimate: float
    per_seed: tuple[float, ...]
    low: float
    high: float
    confidence: float
    p_value: float
    permutations: int
    exact: bool


def paired_differences(row: ArrayLike, comparator: ArrayLike) -> np.ndarray:
    """``row - comparator`` as ``(n_seeds, n_cases)``: both ``(n_seeds, n_cases)`` arrays with
    the same seeds in the same order and the same cases in the same order."""
    a, b = np.asarray(row, dtype=float), np.asarray(comparator, dtype=float)
    if a.ndim == 1:
        a = a[None, :]
    if b.ndim == 1:
        b = b[None, :]
    if a.shape != b.shape or a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"a paired comparison needs the same (seeds, cases) on both sides, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-case values of a paired comparison must all be finite")
    return a - b


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def sign_flip_p_value(differences: ArrayLike, *, draws: int = 10_000, seed: int = 0) -> tuple[float, int, bool]:
    """Two-sided p-value of the paired permutation test of ``differences`` (one per case):
    ``(p, patterns, exact)``, as the module docstring says. Every pattern up to
    :data:`EXACT_CASES` cases, else ``draws`` random ones from ``default_rng(seed)``.

    >>> sign_flip_p_value([0.1, 0.2, -0.05])
    (0.5, 8, True)
    """
    e = np.asarray(differences, dtype=float)
    if e.ndim != 1 or e.size == 0 or not np.isfinite(e).all():
        raise ValueError(f"differences must be a non-empty 1-D array of finite values, got shape {e.shape}")
    _check_seed(seed)
    observed = abs(e.sum())
    # sums that differ from the observed one only by rounding count as equal (a pattern and its
    # mirror image add the same numbers in another order)
    tolerance = 1e-9 * max(float(np.abs(e).sum()), 1e-300)
    n = e.size
    if n <= EXACT_CASES:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        hits = int((np.abs(signs @ e) >= observed - tolerance).sum())
        return hits / signs.shape[0], int(signs.shape[0]), True
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
        raise ValueError(f"draws must be a positive int, got {draws!r}")
    signs = np.random.default_rng(int(seed)).choice((1.0, -1.0), size=(int(draws), n))
    hits = int((np.abs(signs @ e) >= observed - tolerance).sum())
    return (1 + hits) / (1 + int(draws)), int(draws), False


def holm(p_values: ArrayLike) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: the ``i``-th smallest (from 0)
    of ``m`` times ``m - i``, capped at 1, made non-decreasing in that order.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or ((p < 0) | (p > 1) | ~np.isfinite(p)).any():
        raise ValueError(f"p-values must be a 1-D array of numbers in [0, 1], got {p_values!r}")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return [round(float(x), 15) for x in out]


def compare(row: ArrayLike, comparator: ArrayLike, *, draws: np.ndarray, confidence: float,
            permutations: int = 10_000, seed: int = 0) -> PairedComparison:
    """The paired comparison of ``row`` with ``comparator`` (``(n_seeds, n_cases)`` each, seeds
    and cases in the same order): the bootstrap interval over ``draws`` (``(resamples, n_cases)``
    case indices, :func:`semiseg.metrics.bootstrap.resample_indices`) and the permutation test
    (:func:`sign_flip_p_value`, ``permutations`` random patterns beyond :data:`EXACT_CASES`)."""
    d = paired_differences(row, comparator)
    ci = interval_from_draws(d, draws, confidence)
    p, patterns, exact = sign_flip_p_value(d.mean(axis=0), draws=permutations, seed=seed)
    return PairedComparison(estimate=ci.estimate, per_seed=tuple(float(x) for x in d.mean(axis=1)),
                            low=ci.low, high=ci.high, confidence=ci.confidence, p_value=p,
                            permutations=patterns, exact=exact)
