"""The per-run summary of a ``metrics.csv``: the number a paper's table reports."""

from __future__ import annotations

import numpy as np
import pandas as pd

from semiseg.metrics.csv_io import METRIC_NAMES

__all__ = ["case_means", "summarise"]


def _checked(df: pd.DataFrame) -> pd.DataFrame:
    """``case``, ``class_name`` and the metrics as floats, checked to be present and finite."""
    required = ["case", "class_name", *METRIC_NAMES]
    missing = [column for column in required if column not in df.columns]
    if missing:
        raise ValueError(f"cannot summarise metrics: missing columns {missing}")
    if df.empty:
        raise ValueError("cannot summarise an empty metrics table")
    values = df[list(METRIC_NAMES)].astype(float)
    if not np.isfinite(values.to_numpy()).all():
        raise ValueError("cannot summarise metrics that are not all finite")
    return pd.concat([df[["case", "class_name"]], values], axis=1)


def case_means(df: pd.DataFrame) -> pd.DataFrame:
    """Each case's mean over its foreground classes: one row per case (index ``case``, sorted),
    one column per metric. :func:`summarise` averages these rows; the tables' bootstrap
    intervals (:mod:`semiseg.metrics.bootstrap`) resample them."""
    return _checked(df).groupby("case", sort=True)[list(METRIC_NAMES)].mean()


def summarise(df: pd.DataFrame) -> dict[str, object]:
    """Summarise one run's metrics: the number a paper's table reports.

    Order of averaging, for each metric: first the mean over the foreground classes of each case,
    then the mean of those per-case values over the cases. This is the "mean of the per-class
    means" papers report; when every case has a row for every class (as :func:`case_metrics`
    writes) it equals the plain mean over all rows, and the order matters only for a frame with
    missing rows (e.g. filtered to recompute another convention), where each case still weighs
    the same.

    Returns
    -------
    dict
        ``dice``, ``jaccard``, ``hd95``, ``asd`` (floats; dice and jaccard as fractions),
        ``n_cases`` (int) and ``per_class``: ``{class_name: {metric: mean over cases}}``.
    """
    frame = _checked(df)
    per_case = frame.groupby("case", sort=True)[list(METRIC_NAMES)].mean()
    overall = per_case.mean()
    per_class = frame.groupby("class_name", sort=False)[list(METRIC_NAMES)].mean()
    return {
        **{metric: float(overall[metric]) for metric in METRIC_NAMES},
        "n_cases": int(len(per_case)),
        "per_class": {
            str(name): {metric: float(per_class.loc[name, metric]) for metric in METRIC_NAMES}
            for name in per_class.index
        },
    }
