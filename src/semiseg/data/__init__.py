"""Datasets: synthetic generators, importers from public layouts, the case store and splits.

The preprocess stage turns a source layout into one store plus its descriptor::

    cases, patients = read_slices_layout(raw_dir, "acdc")          # or read_la_layout
    write_store(store_path, name="acdc", dims=2, labels=labels, cases=cases)
    descriptor = describe(store_path, patients=patients)           # -> dataset.json

and the split stage turns the descriptor into ``splits/{dataset}/{ratio}.json`` with
:func:`make_split`. Every data-validation failure raises :class:`DataError` naming the file.
"""

from semiseg.data.errors import DataError
from semiseg.data.layouts import read_la_layout, read_slices_layout
from semiseg.data.splits import make_split
from semiseg.data.store import Case, Store, describe, sha256_file, write_store
from semiseg.data.synthetic import write_synthetic2d, write_synthetic3d

__all__ = [
    "Case",
    "DataError",
    "Store",
    "describe",
    "make_split",
    "read_la_layout",
    "read_slices_layout",
    "sha256_file",
    "write_store",
    "write_synthetic2d",
    "write_synthetic3d",
]
