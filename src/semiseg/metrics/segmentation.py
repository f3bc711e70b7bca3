"""The metrics API in one import (kept for existing callers): the code lives in
:mod:`semiseg.metrics.binary` (per-case metrics), :mod:`semiseg.metrics.csv_io` (``metrics.csv``)
and :mod:`semiseg.metrics.summary` (the per-run summary)."""

from semiseg.metrics.binary import case_metrics, class_metrics, union_box, volume_diagonal
from semiseg.metrics.csv_io import CSV_COLUMNS, METRIC_NAMES, read_metrics_csv, write_metrics_csv
from semiseg.metrics.summary import summarise

__all__ = ["CSV_COLUMNS", "METRIC_NAMES", "case_metrics", "class_metrics", "read_metrics_csv", "summarise",
           "union_box", "volume_diagonal", "write_metrics_csv"]
