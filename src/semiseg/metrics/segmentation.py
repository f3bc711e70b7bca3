"""Per-case segmentation metrics with medpy semantics, their CSV file and the per-run summary.

The four metrics are medpy's (``medpy.metric.binary``), computed on whole volumes:

- ``dice``    -- ``dc(pred, gt)``, in [0, 1];
- ``jaccard`` -- ``jc(pred, gt)``, in [0, 1];
- ``hd95``    -- ``hd95(pred, gt, voxelspacing=spacing)``: 95th percentile of the pooled surface
  distances in both directions;
- ``asd``     -- ``asd(pred, gt, voxelspacing=spacing)``: medpy's *directed* average surface
  distance, from the prediction's surface to the reference's (not the symmetric ``assd``), which is
  what the semi-supervised literature's evaluation scripts call.

Distances are in the units of ``spacing`` (mm for a store with physical spacing, voxels where the
spacing is 1.0). Surfaces use medpy's default connectivity 1.

medpy is undefined on empty masks (``hd95``/``asd`` raise ``RuntimeError``; with numpy 2
``dc`` of two empty masks returns ``nan`` with a warning while ``jc`` returns 1.0), so
:func:`class_metrics` decides those cases itself, by one explicit convention:

================  ======  =======  =================  =================
case              dice    jaccard  hd95               asd
================  ======  =======  =================  =================
both empty        1       1        0                  0
exactly one empty 0       0        volume diagonal    volume diagonal
================  ======  =======  =================  =================

The volume diagonal is the largest distance two voxel centres of that image can have, in the
units of ``spacing``. Every row also records ``pred_empty`` and ``gt_empty`` so that other
conventions can be recomputed from ``metrics.csv`` (see ``docs/metrics.md``).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from medpy.metric import binary as medpy_binary

from semiseg.io import atomic_write

__all__ = [
    "CSV_COLUMNS",
    "METRIC_NAMES",
    "case_metrics",
    "class_metrics",
    "read_metrics_csv",
    "summarise",
    "volume_diagonal",
    "write_metrics_csv",
]

#: The four metrics, in the order they are written and reported.
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


def _normalise_spacing(spacing: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    """Return ``spacing`` as ``ndim`` positive finite floats (a scalar applies to every axis)."""
    if np.ndim(spacing) == 0:
        values = (float(spacing),) * ndim  # type: ignore[arg-type]
    else:
        values = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
        if len(values) != ndim:
            raise ValueError(
                f"spacing has {len(values)} values but the masks have {ndim} dimensions; "
                "give one spacing per axis, in array axis order (z, y, x for a volume)"
            )
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be positive and finite, got {values}")
    return values


def volume_diagonal(shape: Sequence[int], spacing: float | Sequence[float]) -> float:
    """The largest distance between two voxel centres of an image, in units of ``spacing``.

    This is ``sqrt(sum(((n_i - 1) * s_i) ** 2))``: no surface distance measured in that image can
    exceed it, which makes it the penalty :func:`class_metrics` gives a missed or hallucinated
    structure. Example: shape ``(10, 256, 256)`` with spacing ``(10, 1.5, 1.5)`` gives
    ``sqrt(90**2 + 382.5**2 + 382.5**2) = 548.46``.
    """
    shape = tuple(int(n) for n in shape)
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"shape must have at least one axis and no empty axis, got {shape}")
    sizes = _normalise_spacing(spacing, len(shape))
    return float(math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(shape, sizes))))


def class_metrics(
    pred: np.ndarray, gt: np.ndarray, spacing: float | Sequence[float]
) -> dict[str, float | bool]:
    """Dice, Jaccard, HD95 and ASD of one binary prediction against its reference.

    Parameters
    ----------
    pred, gt:
        Boolean masks of the same shape (a whole volume, e.g. ``label_map == k``).
    spacing:
        Physical size of a voxel along each array axis (z, y, x for a volume), or one number for
        all axes. Distances are returned in its units.

    Returns
    -------
    dict
        ``dice``, ``jaccard`` (fractions in [0, 1]), ``hd95``, ``asd`` (distances) as floats and
        ``pred_empty``, ``gt_empty`` as bools.

    Notes
    -----
    When both masks are non-empty the values are exactly medpy's ``dc``, ``jc``, ``hd95`` and
    ``asd`` (``asd`` is directed: prediction surface to reference surface; connectivity 1).
    medpy cannot score an empty mask, so this function applies one convention:

    - both empty: dice 1, jaccard 1, hd95 0, asd 0 -- nothing to find and nothing found;
    - exactly one empty: dice 0, jaccard 0, and hd95 = asd = :func:`volume_diagonal` of the
      image, the largest distance possible in it, so that a missed (or hallucinated) structure is
      penalised rather than scored with a perfect distance.

    SSL4MIS-style evaluation code (its widely copied ``calculate_metric_percase`` and 3D
    ``cal_metric``) instead scores the distance of an empty prediction as 0 -- the best possible
    value -- so a network that predicts nothing for a structure improves its mean HD95. We do not
    follow it; ``pred_empty`` and ``gt_empty`` are returned (and written to ``metrics.csv``) so
    that the literature's convention can be recomputed from the file. See ``docs/metrics.md``.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    for name, mask in (("pred", pred), ("gt", gt)):
        if mask.dtype != np.bool_:
            raise TypeError(
                f"{name} must be a boolean mask, got dtype {mask.dtype}; "
                "select one class first, e.g. label_map == k"
            )
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    if pred.ndim == 0 or pred.size == 0:
        raise ValueError(f"masks must have at least one voxel, got shape {pred.shape}")
    sizes = _normalise_spacing(spacing, pred.ndim)

    pred_empty = not pred.any()
    gt_empty = not gt.any()
    if pred_empty and gt_empty:
        dice, jaccard, hd95, asd = 1.0, 1.0, 0.0, 0.0
    elif pred_empty or gt_empty:
        worst = volume_diagonal(pred.shape, sizes)
        dice, jaccard, hd95, asd = 0.0, 0.0, worst, worst
    else:
        dice = float(medpy_binary.dc(pred, gt))
        jaccard = float(medpy_binary.jc(pred, gt))
        hd95 = float(medpy_binary.hd95(pred, gt, voxelspacing=sizes))
        asd = float(medpy_binary.asd(pred, gt, voxelspacing=sizes))
    return {
        "dice": dice,
        "jaccard": jaccard,
        "hd95": hd95,
        "asd": asd,
        "pred_empty": bool(pred_empty),
        "gt_empty": bool(gt_empty),
    }


def _foreground_classes(
    class_names: Mapping[int, str] | Sequence[str],
) -> list[tuple[int, str]]:
    """``(index, name)`` of every foreground class (index > 0), by index."""
    if isinstance(class_names, Mapping):
        items = []
        for key, name in class_names.items():
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
                raise TypeError(
                    "class_names must map class index (int) to name (str), got key "
                    f"{key!r}; invert a {{name: index}} labels mapping first"
                )
            items.append((int(key), name))
    elif isinstance(class_names, Sequence) and not isinstance(class_names, (str, bytes)):
        items = list(enumerate(class_names))
    else:
        raise TypeError(
            "class_names must be a {index: name} mapping or a list of names indexed by class, "
            f"got {type(class_names).__name__}"
        )
    for index, name in items:
        if not isinstance(name, str) or not name:
            raise TypeError(f"class {index} must have a non-empty str name, got {name!r}")
        if index < 0:
            raise ValueError(f"class indices must be >= 0, got {index}")
    foreground = sorted((index, name) for index, name in items if index != 0)
    if not foreground:
        raise ValueError("class_names lists no foreground class (index > 0)")
    names = [name for _, name in foreground]
    if len(set(names)) != len(names):
        raise ValueError(f"foreground class names must be unique, got {names}")
    return foreground


def case_metrics(
    pred_label: np.ndarray,
    gt_label: np.ndarray,
    class_names: Mapping[int, str] | Sequence[str],
    spacing: float | Sequence[float],
    *,
    case: str | None = None,
) -> list[dict[str, object]]:
    """Metrics of every foreground class of one case.

    Parameters
    ----------
    pred_label, gt_label:
        Integer label maps of the same shape (0 is background).
    class_names:
        ``{index: name}`` or a list of names indexed by class (``["background", "RV", ...]``).
        Index 0 is background and is never scored; every other listed class gets a row, also when
        it is absent from both maps (then it scores as "both empty").
    spacing:
        Voxel size per axis, as for :func:`class_metrics`.
    case:
        Case id; when given each row starts with ``"case"``, as :func:`write_metrics_csv` needs.

    Returns
    -------
    list of dict
        One row per foreground class in index order: ``case`` (if given), ``class``,
        ``class_name`` and the entries of :func:`class_metrics`.

    Raises
    ------
    ValueError
        If either map holds a label that is neither background nor a listed class: that is a
        mismatch between the network's classes and the dataset's, not something to score.
    """
    pred_label = np.asarray(pred_label)
    gt_label = np.asarray(gt_label)
    for name, label in (("pred_label", pred_label), ("gt_label", gt_label)):
        if not np.issubdtype(label.dtype, np.integer):
            raise TypeError(f"{name} must be an integer label map, got dtype {label.dtype}")
    if pred_label.shape != gt_label.shape:
        raise ValueError(
            f"pred_label and gt_label shapes differ: {pred_label.shape} vs {gt_label.shape}"
        )
    classes = _foreground_classes(class_names)
    known = {0, *(index for index, _ in classes)}
    for name, label in (("pred_label", pred_label), ("gt_label", gt_label)):
        unknown = sorted(set(np.unique(label).tolist()) - known)
        if unknown:
            raise ValueError(
                f"{name} contains labels {unknown} that are not in class_names "
                f"(known: {sorted(known)})"
            )

    rows: list[dict[str, object]] = []
    for index, name in classes:
        row: dict[str, object] = {} if case is None else {"case": str(case)}
        row["class"] = index
        row["class_name"] = name
        row.update(class_metrics(pred_label == index, gt_label == index, spacing))
        rows.append(row)
    return rows


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
    Raises ``ValueError`` if a column is missing, a metric is not a finite number, or a
    (case, class) pair appears twice.
    """
    path = Path(path)
    df = pd.read_csv(path, dtype={"case": str, "class_name": str}, keep_default_na=False)
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
    return df.reset_index(drop=True)


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
    required = ["case", "class_name", *METRIC_NAMES]
    missing = [column for column in required if column not in df.columns]
    if missing:
        raise ValueError(f"cannot summarise metrics: missing columns {missing}")
    if df.empty:
        raise ValueError("cannot summarise an empty metrics table")
    values = df[list(METRIC_NAMES)].astype(float)
    if not np.isfinite(values.to_numpy()).all():
        raise ValueError("cannot summarise metrics that are not all finite")

    frame = pd.concat([df[["case", "class_name"]], values], axis=1)
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
