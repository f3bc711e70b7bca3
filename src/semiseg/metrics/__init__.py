"""Segmentation metrics with medpy semantics, their per-run CSV and the per-run summary.

See ``docs/metrics.md`` for the definitions, the empty-mask convention and the order of
averaging.
"""

from semiseg.metrics.segmentation import (
    CSV_COLUMNS,
    METRIC_NAMES,
    case_metrics,
    class_metrics,
    read_metrics_csv,
    summarise,
    volume_diagonal,
    write_metrics_csv,
)

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
