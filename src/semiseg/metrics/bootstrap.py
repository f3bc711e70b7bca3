"""A bootstrap confidence interval over test cases for one table cell.

A table cell is the mean over seeds of each run's mean over the test cases. Its ± (the sample
std over seeds) says how the value moves with training; this interval says how it moves with
which cases happen to be in the test set.

How seeds and cases combine: every seed's run is scored on the same test cases (checked). One
resample draws ``n`` case indices with replacement, the same draw for every seed, and scores it
as the mean over seeds of each run's mean over the drawn cases; since both are means, that is
the mean over the drawn cases of the seed-averaged per-case values, which is how it is computed.
The interval is the percentile interval of the ``resamples`` resampled values: their
``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles (numpy's default, linear
interpolation). The draws come from ``numpy.random.default_rng(seed)``: the same seed and case
count give the same draws, so every cell of a table (and every metric of a cell) is resampled
with the same case sets, and a cell's interval does not depend on the other rows of its table.

Worked example (``tests/test_bootstrap.py``): per-case values ``[1, 2, 3, 4]`` and the four
draws ``[0,0,0,0]``, ``[0,1,2,3]``, ``[3,3,3,3]``, ``[0,0,1,1]`` give resampled means
``[1, 2.5, 4, 1.5]``; sorted ``[1, 1.5, 2.5, 4]``, the 50 % interval's quantiles 0.25 and 0.75
sit at positions 0.75 and 2.25: ``1 + 0.75 * 0.5 = 1.375`` and ``2.5 + 0.25 * 1.5 = 2.875``;
the std is ``sqrt((1.25² + 0.25² + 1.75² + 0.75²) / 3) = sqrt(1.75) = 1.3229``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["BootstrapInterval", "interval_from_draws", "resample_indices"]


@dataclass(frozen=True)
class BootstrapInterval:
    """``estimate`` (mean over cases of the seed-averaged per-case values), ``low`` and ``high``
    (the percentile interval), ``std`` (sample std, ddof=1, of the resampled values: the
    bootstrap standard error) at ``confidence`` from ``resamples`` draws."""

    estimate: float
    low: float
    high: float
    std: float
    resamples: int
    confidence: float


def resample_indices(n_cases: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, n_cases)`` case indices drawn with replacement by ``default_rng(seed)``."""
    if isinstance(n_cases, bool) or not isinstance(n_cases, (int, np.integer)) or n_cases < 1:
        raise ValueError(f"n_cases must be a positive int, got {n_cases!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 2:
        raise ValueError(f"resamples must be an int >= 2 (a spread needs two), got {resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return np.random.default_rng(int(seed)).integers(0, n_cases, size=(int(resamples), int(n_cases)))


def _check_confidence(confidence: float) -> None:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")


def _per_case(values: ArrayLike) -> np.ndarray:
    """``(n_seeds, n_cases)`` as floats; a 1-D array is one seed."""
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"per-case values must be (n_seeds, n_cases) with both > 0, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("per-case values must all be finite")
    return array


def interval_from_draws(values: ArrayLike, draws: np.ndarray, confidence: float) -> BootstrapInterval:
    """The interval of ``values`` (``(n_seeds, n_cases)``, or ``(n_cases,)`` for one seed) over
    the given case draws (``(resamples, n_cases)`` indices), as the module docstring says."""
    _check_confidence(confidence)
    array = _per_case(values)
    draws = np.asarray(draws)
    if draws.ndim != 2 or draws.shape[0] < 2 or draws.shape[1] != array.shape[1]:
        raise ValueError(f"draws must be (resamples >= 2, n_cases = {array.shape[1]}) indices, got shape {draws.shape}")
    if draws.min() < 0 or draws.max() >= array.shape[1]:
        raise ValueError(f"draws must index the {array.shape[1]} cases")
    per_case = array.mean(axis=0)  # the seed-averaged value of each case
    resampled = per_case[draws].mean(axis=1)
    low, high = np.quantile(resampled, [(1 - confidence) / 2, (1 + confidence) / 2])
    return BootstrapInterval(estimate=float(per_case.mean()), low=float(low), high=float(high),
                             std=float(resampled.std(ddof=1)), resamples=int(draws.shape[0]),
                             confidence=float(confidence))
