"""The test-selection oracle's column of a table (a spec's ``oracle: {every: K}``) and its footer line.

Each run's oracle (:mod:`semiseg.metrics.oracle`) names the snapshot with the best Dice on the
test set. The column, titled as what it is, shows beside the honest Dice the mean ± std over the
row's seeds of those best values, then the mean gain over the honest value of the same seeds
(the inflation a selection on the test set gives) and the iterations chosen, in seed order::

    83.10 ± 0.50 (+1.60 over honest; iterations 3000, 5000)

Worked example: seeds with honest Dice 0.80 and 0.82 whose best snapshots score 0.83 and 0.84
print ``83.50 ± 0.71 (+2.50 over honest; ...)``: mean (0.83 + 0.84) / 2, sample std 0.00707, and
gains 3.00 and 2.00 points, whose mean is 2.50.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from semiseg.reporting.notes import mean_std_text

__all__ = ["ORACLE_TITLE", "oracle_cell", "oracle_footer", "read_oracle"]

#: The column's header: what the numbers are, and what they cost in honesty.
ORACLE_TITLE = "Dice↑ (%) best on test — leaks the test set"


def read_oracle(path: Path) -> dict:
    """The best snapshot (``iteration``, ``dice``, ...) of an ``oracle.json`` as the oracle_evaluate
    stage writes it (:func:`semiseg.metrics.oracle.oracle_evaluate`).

    Raises:
        ValueError: the file names no best snapshot with its Dice and iteration.
    """
    with open(path) as fh:
        summary = json.load(fh)
    best = summary.get("best") if isinstance(summary, dict) else None
    if not isinstance(best, dict) or not {"dice", "iteration"} <= set(best):
        raise ValueError(f"{path}: not an oracle summary (no best snapshot with its dice and iteration); the "
                         "oracle_evaluate job of the run writes it")
    return best


def oracle_cell(honest: Sequence[float | None], best: Sequence[Mapping | None]) -> str:
    """The column's cell of one row: ``best[i]`` the best snapshot of the row's i-th finished seed
    (``dice`` as a fraction, ``iteration``; None where its oracle is missing), ``honest[i]`` that
    seed's honest Dice as a fraction.

    >>> oracle_cell([0.80, 0.82], [{"dice": 0.83, "iteration": 3}, {"dice": 0.84, "iteration": 5}])
    '83.50 ± 0.71 (+2.50 over honest; iterations 3, 5)'
    >>> oracle_cell([0.80], [{"dice": 0.80, "iteration": 1}])
    '80.00 (+0.00 over honest; iteration 1)'
    """
    pairs = [(h, b) for h, b in zip(honest, best) if b is not None]
    if not pairs:
        return "not run"
    values = [100.0 * b["dice"] for _, b in pairs]
    text = mean_std_text(values)
    gains = [100.0 * (b["dice"] - h) for h, b in pairs if h is not None]
    its = ", ".join(str(b["iteration"]) for _, b in pairs)
    parts = [f"{statistics.fmean(gains):+.2f} over honest"] if gains else []
    parts.append(f"iteration{'s' if len(pairs) > 1 else ''} {its}")
    text += f" ({'; '.join(parts)})"
    if len(pairs) < len(best):
        text += f" ({len(best) - len(pairs)} of {len(best)} runs without oracle)"
    return text


def oracle_footer(every: int) -> str:
    """The footer line of a table with an oracle column."""
    return (f"Best on test — leaks the test set: for each run, the best test Dice among snapshots of its training "
            f"every {every} iterations and at the last, chosen ON THE TEST SET (as official codes that select "
            "their checkpoint on the test list do); with the gain over the honest value and the iterations chosen. "
            "Not a result: it measures how much selecting on the test set inflates a number. Each snapshot "
            "comes from a second training of the run's very spec (same seed and data stream) under results/oracle/, "
            "apart from the run's own files (docs/metrics.md).")
