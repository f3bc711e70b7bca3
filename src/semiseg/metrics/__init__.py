"""Segmentation metrics with medpy semantics, their per-run CSV and the per-run summary.

See ``docs/metrics.md`` for the definitions, the empty-mask convention and the order of
averaging.
"""

from semiseg.metrics.binary import case_metrics, class_metrics, union_box, volume_diagonal
from semiseg.metrics.csv_io import CSV_COLUMNS, METRIC_NAMES, read_metrics_csv, write_metrics_csv
from semiseg.metrics.summary import summarise

__all__ = [
    "CSV_COLUMNS",
    "METRIC_NAMES",
    "case_metrics",
    "class_metrics",
    "read_metrics_csv",
    "summarise",
    "union_box",
    "volume_diagonal",
    "write_metrics_csv",
]
