"""``metrics.csv``: one row per case x foreground class, written atomically, read back checked.

Columns (:data:`CSV_COLUMNS`): ``case``, ``class``, ``class_name``, the four metrics of
:mod:`semiseg.metrics.binary` at full float precision, and the ``pred_empty`` / ``gt_empty``
flags that let another empty-mask convention be recomputed (``docs/metrics.md``).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from semiseg.io import atomic_write

__all__ = ["CSV_COLUMNS", "METRIC_NAMES", "read_metrics_csv", "write_metrics_csv"]

#: The four metrics, in the order they are written and reported (the keys :func:`semiseg.metrics.binary.class_metrics` returns).
METRIC_NAMES: tuple[str, ...] = ("dice", "jaccard", "hd95", "asd")

#: Columns of ``metrics.csv``, in file order: one row per case x foreground class.
CSV_COLUMNS: tuple[str, ...] = (
    "case",
    "class",
    "class_name",
    *METRIC_NAMES,
    "pred_empty",
    "gt_empty",
)

_FLAG_COLUMNS = ("pred_empty", "gt_empty")
_TRUE_STRINGS = frozenset({"true", "1"})
_FALSE_STRINGS = frozenset({"false", "0"})



def _format_csv_value(column: str, value: object) -> str:
    if column in _FLAG_COLUMNS:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"column {column!r} must be a bool, got {value!r}")
        return "True" if value else "False"
    if column in METRIC_NAMES:
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            raise ValueError(f"column {column!r} must be finite, got {value!r}")
        return repr(number)  # shortest string that reads back to the same float
    if column in ("case", "class_name"):
        if not isinstance(value, str) or not value:
            raise TypeError(f"column {column!r} must be a non-empty str, got {value!r}")
        return value
    if column == "class":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"column 'class' must be an int, got {value!r}")
        return str(int(value))
    return str(value)


def write_metrics_csv(rows: Iterable[Mapping[str, object]], path: str | os.PathLike) -> None:
    """Write the rows of one run to ``metrics.csv`` atomically.

    Every row must have exactly the keys of :data:`CSV_COLUMNS` (rows of :func:`case_metrics`
    called with ``case=...``). Floats are written at full precision; the file is replaced in one
    step, so a reader never sees a half-written file.
    """
    path = Path(path)
    rows = list(rows)
    if not rows:
        raise ValueError(f"no metric rows to write to {path}")
    expected = set(CSV_COLUMNS)
    seen: set[tuple[str, int]] = set()
    lines: list[list[str]] = []
    for number, row in enumerate(rows):
        keys = set(row)
        if keys != expected:
            missing = sorted(expected - keys)
            extra = sorted(keys - expected)
            raise ValueError(
                f"metric row {number} does not match the CSV columns: missing {missing}, "
                f"unexpected {extra} (did you pass case=... to case_metrics?)"
            )
        line = [_format_csv_value(column, row[column]) for column in CSV_COLUMNS]
        key = (line[0], int(line[1]))
        if key in seen:
            raise ValueError(f"duplicate metric row for case {key[0]!r}, class {key[1]}")
        seen.add(key)
        lines.append(line)

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(lines)
    atomic_write(path, buffer.getvalue())


def _parse_flag(value: object, column: str, path: Path) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE_STRINGS:
        return True
    if text in _FALSE_STRINGS:
        return False
    raise ValueError(f"{path}: column {column!r} holds {value!r}, expected True or False")


def read_metrics_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``metrics.csv`` into a DataFrame with the columns of :data:`CSV_COLUMNS`.

    Types: ``case`` and ``class_name`` str, ``class`` int, the metrics float, the flags bool.
    Raises ``ValueError`` naming the file if it is empty, a column is missing, a metric is not a
    finite number or not a value an evaluation can write (naming the line), or a (case, class)
    pair appears twice.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"case": str, "class_name": str}, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty (not even the header {','.join(CSV_COLUMNS)}); "
                         "the evaluate job that writes it did not finish: delete it and run again") from None
    missing = [column for column in CSV_COLUMNS if column not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {list(CSV_COLUMNS)}")
    df = df.loc[:, list(CSV_COLUMNS)].copy()
    if df.empty:
        raise ValueError(f"{path}: no metric rows")
    try:
        df["class"] = pd.to_numeric(df["class"], errors="raise").astype(int)
        for column in METRIC_NAMES:
            df[column] = pd.to_numeric(df[column], errors="raise").astype(float)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{path}: class must be an integer and every metric a finite number ({error})"
        ) from error
    bad = ~np.isfinite(df[list(METRIC_NAMES)].to_numpy()).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{path}: metrics must be finite; rows {df.index[bad].tolist()} are not"
        )
    for column in _FLAG_COLUMNS:
        df[column] = [_parse_flag(value, column, path) for value in df[column]]
        df[column] = df[column].astype(bool)
    duplicated = df.duplicated(subset=["case", "class"], keep=False)
    if duplicated.any():
        pairs = sorted(set(zip(df.loc[duplicated, "case"], df.loc[duplicated, "class"])))
        raise ValueError(f"{path}: duplicate (case, class) rows {pairs}")
    _check_values(df, path)
    return df.reset_index(drop=True)


def _check_values(df: pd.DataFrame, path: Path) -> None:
    """Refuse a value no evaluation can produce, naming the file and its line: Dice and Jaccard in
    [0, 1], distances >= 0, and for an empty structure the value of ``docs/metrics.md``'s
    convention (both masks empty: 1, 1, 0, 0; one empty: Dice and Jaccard 0, both distances the
    image's diagonal, so equal and positive)."""
    both = df["pred_empty"] & df["gt_empty"]
    one = df["pred_empty"] ^ df["gt_empty"]
    checks = [
        (~df["dice"].between(0, 1), "dice must be in [0, 1]"),
        (~df["jaccard"].between(0, 1), "jaccard must be in [0, 1]"),
        (df["hd95"] < 0, "hd95 must be >= 0"),
        (df["asd"] < 0, "asd must be >= 0"),
        (both & ((df["dice"] != 1) | (df["jaccard"] != 1) | (df["hd95"] != 0) | (df["asd"] != 0)),
         "prediction and reference are both empty, so dice and jaccard must be 1 and hd95 and asd 0"),
        (one & ((df["dice"] != 0) | (df["jaccard"] != 0)),
         "one of prediction and reference is empty, so dice and jaccard must be 0"),
        (one & ((df["hd95"] <= 0) | (df["hd95"] != df["asd"])),
         "one of prediction and reference is empty, so hd95 and asd must both be the image's diagonal"),
    ]
    for bad, rule in checks:
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            row = df.iloc[i]
            values = ", ".join(f"{m} {row[m]!r}" for m in METRIC_NAMES)
            more = f" (and {int(bad.sum()) - 1} more rows)" if bad.sum() > 1 else ""
            raise ValueError(f"{path}: line {i + 2} (case {row['case']!r}, class {row['class']}): {rule}; it holds "
                             f"{values}{more}. No evaluation writes this: was the file edited? Delete it and run "
                             "the evaluate job again")
