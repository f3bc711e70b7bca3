"""The preprocess stage: a fetched source layout → one h5 store + its ``dataset.json``."""

from __future__ import annotations

from pathlib import Path

from semiseg.data.abdomenct1k import read_abdomenct1k_raw
from semiseg.data.acdc import read_acdc_raw
from semiseg.data.brats import read_brats_h5, read_brats_raw
from semiseg.errors import DataError
from semiseg.data.la import read_la_raw
from semiseg.data.layouts import read_la_layout, read_slices_layout
from semiseg.data.nnunet import read_nnunet_raw
from semiseg.data.pancreas import read_pancreas_coranet_raw, read_pancreas_h5, read_pancreas_raw
from semiseg.data.registry import LAYOUTS
from semiseg.data.store import describe, write_store

__all__ = ["preprocess", "READERS"]

# layout name (catalogue `source.layout`) -> reader of the fetched directory
READERS = {
    "synthetic2d": read_slices_layout,
    "slices": read_slices_layout,
    "synthetic3d": read_la_layout,
    "la": read_la_layout,
    "la_raw": read_la_raw,
    "acdc_raw": read_acdc_raw,
    "brats_raw": read_brats_raw,
    "brats": read_brats_h5,
    "pancreas_raw": read_pancreas_raw,
    "pancreas_coranet_raw": read_pancreas_coranet_raw,
    "pancreas": read_pancreas_h5,
    "abdomenct1k_raw": read_abdomenct1k_raw,
    "nnunet": read_nnunet_raw,
}


def preprocess(dataset: str, layout: str, raw_dir: Path, *, labels: dict[str, int], dims: int,
               store_path: Path, params: dict | None = None) -> dict:
    """Import `raw_dir` (in `layout`) into a store at `store_path`; return the descriptor.

    `params` (the source's) are the reader's keyword arguments for a layout marked
    ``reader_params`` in :mod:`semiseg.data.registry`, which also gets the catalogue's `labels`
    to check them against its files."""
    if layout not in READERS:
        raise DataError(raw_dir, f"no importer for layout {layout!r}; known: {', '.join(sorted(READERS))}")
    if LAYOUTS[layout].reader_params:
        cases, patients = READERS[layout](raw_dir, dataset, labels=labels, **(params or {}))
    else:
        cases, patients = READERS[layout](raw_dir, dataset)
    write_store(store_path, name=dataset, dims=dims, labels=labels, cases=cases)
    return describe(store_path, patients=patients)
