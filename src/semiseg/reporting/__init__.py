"""Reports built from the runs' outputs: the paper-style markdown tables."""

from semiseg.reporting.tables import COLUMNS, build_table, format_cell, write_table

__all__ = ["COLUMNS", "build_table", "format_cell", "write_table"]
