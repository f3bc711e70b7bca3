"""The data layouts a dataset's ``source.layout`` may name, and what the stages need to know of
each: one table, read by the fetch stage, the config loader and the tests.

A layout's *code* lives with its stage, so that each stage's fingerprint holds only what it
runs: its reader in :data:`semiseg.data.preprocess.READERS`, a generator (for layouts the
pipeline writes itself) in :data:`semiseg.data.fetch.GENERATORS`. Everything else about it is
here. ``tests/test_layouts.py`` checks that this table, the readers, the generators and the
``source.layout`` enum of ``workflow/schemas/datasets.schema.yaml`` name the same layouts, so a
new layout is: a reader (and a ``READERS`` entry), a :class:`Layout` here, the schema's enum.
This module imports nothing heavy: the workflow reads it while it builds the DAG.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LAYOUTS", "Layout", "SPLIT_LISTS", "get_layout", "shipped_splits_digest"]

#: The split lists a source may carry.
SPLIT_LISTS = ("train.list", "val.list", "test.list")


@dataclass(frozen=True)
class Layout:
    """One source layout.

    Attributes:
        name: the ``source.layout`` value.
        generated: the pipeline writes it itself (``semiseg.data.fetch.GENERATORS``); its source
            takes ``seed`` and ``params``, never a ``path`` or ``url``.
        shipped_splits: folder (from the workflow root) of the protocol's split lists, copied in
            when the source carries none of its own.
        shipped_lists: which of :data:`SPLIT_LISTS` the protocol has (Left Atrium: no val list).
        prefix_checked: a source's own lists are kept only when each is the shipped list or a
            first part of it (a trimmed copy keeps the protocol's order).
        train_count_param: the generator parameter that is the number of training patients
            (ratios are checked against it when the config loads).
        reader_params: the source's ``params`` are its reader's keyword arguments (a read layout's
            source takes no ``params`` otherwise).
    """

    name: str
    generated: bool = False
    shipped_splits: str | None = None
    shipped_lists: tuple[str, ...] = SPLIT_LISTS
    prefix_checked: bool = False
    train_count_param: str | None = None
    reader_params: bool = False


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("synthetic2d", generated=True, train_count_param="n_train"),
    Layout("synthetic3d", generated=True, train_count_param="n_train"),
    Layout("slices"),
    Layout("acdc_raw", shipped_splits="config/datasets/acdc_splits"),
    Layout("la", shipped_splits="config/datasets/la_splits", shipped_lists=("train.list", "test.list"),
           prefix_checked=True),
    Layout("la_raw", shipped_splits="config/datasets/la_splits", shipped_lists=("train.list", "test.list"),
           prefix_checked=True),
    # BraTS 2019 (semiseg.data.brats): the training release, and its h5 copies
    Layout("brats_raw", shipped_splits="config/datasets/brats_splits"),
    Layout("brats", shipped_splits="config/datasets/brats_splits", prefix_checked=True),
    # Pancreas-CT (semiseg.data.pancreas): the TCIA release under MC-Net's and CoraNet's
    # conventions, and MC-Net's h5 copies
    Layout("pancreas_raw", shipped_splits="config/datasets/pancreas_splits",
           shipped_lists=("train.list", "test.list")),
    Layout("pancreas_coranet_raw", shipped_splits="config/datasets/pancreas_coranet_splits",
           shipped_lists=("train.list", "test.list")),
    Layout("pancreas", shipped_splits="config/datasets/pancreas_splits", shipped_lists=("train.list", "test.list"),
           prefix_checked=True),
    # AbdomenCT-1K (semiseg.data.abdomenct1k): the project's own 30 / 11 split, a source's lists replace it
    Layout("abdomenct1k_raw", shipped_splits="config/datasets/abdomenct1k_splits",
           shipped_lists=("train.list", "test.list")),
    # nnU-Net's raw layout, v2 or Decathlon dataset.json (semiseg.data.nnunet): a user's own data
    Layout("nnunet", reader_params=True),
)}


def get_layout(name: str) -> Layout:
    """The layout called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown layout {name!r}; known: {', '.join(sorted(LAYOUTS))}") from None


def shipped_splits_digest(layout: str | None, root: Path) -> str:
    """sha256 over the split lists a layout without its own takes from ``config/``
    (its :class:`Layout`'s ``shipped_splits``); ``"none"`` for every other layout. The fetch rule carries it as a
    param, so editing a shipped list fetches again (and re-runs what follows)."""
    entry = LAYOUTS.get(layout) if layout else None
    if entry is None or not entry.shipped_splits:
        return "none"
    h = hashlib.sha256()
    for name in entry.shipped_lists:
        f = Path(root) / entry.shipped_splits / name
        h.update(name.encode() + b"\0" + (f.read_bytes() if f.is_file() else b"<missing>") + b"\0")
    return h.hexdigest()[:16]
