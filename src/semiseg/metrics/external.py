"""Predictions made by another tool (nnU-Net, a vendor's software, a reader's contours), scored
like the pipeline's own: a folder of ``<case>.nii.gz`` label maps, one per test case of a split.

:func:`match_predictions` maps the folder's files to the split's test cases by id and checks each
against the store: every test case has its file, no file is of another case, each file lies on
the case's voxel grid (size, spacing, origin, direction, as the store holds them: the scan's own
for the NIfTI readers, so a prediction made on the scan by another tool matches) and holds only
the dataset's label values. Each problem raises :class:`DataError` naming the file (or, for a
missing case, the file expected). :func:`evaluate_external` scores the folder with
:func:`semiseg.metrics.binary.case_metrics`, exactly as the evaluate stage scores a run, and
returns the folder's checksum (:func:`semiseg.provenance.path_digest`, as every stage's record
names its inputs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from semiseg.data.store import Store
from semiseg.data.volumes import check_label_values
from semiseg.errors import DataError
from semiseg.metrics.binary import case_metrics
from semiseg.metrics.csv_io import write_metrics_csv
from semiseg.provenance import path_digest

__all__ = ["PREDICTION_ENDING", "evaluate_external", "match_predictions"]

PREDICTION_ENDING = ".nii.gz"

_TOLERANCE = {"spacing": 1e-4, "origin": 1e-3, "direction": 1e-4}


def match_predictions(pred_dir: Path, store: Store, test_cases: list[str]) -> dict[str, Path]:
    """``{case: file}`` for every test case, checked (see the module docstring)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(pred_dir, "the predictions folder does not exist")
    files = {p.name[: -len(PREDICTION_ENDING)]: p for p in sorted(pred_dir.glob(f"*{PREDICTION_ENDING}"))}
    for case in test_cases:
        if case not in files:
            raise DataError(pred_dir / f"{case}{PREDICTION_ENDING}",
                            f"missing: test case {case!r} has no prediction in the folder")
    for case, path in files.items():
        if case not in test_cases:
            raise DataError(path, f"extra: {case!r} is not a test case of the split "
                                  f"({len(test_cases)} test cases); remove it or predict the split's test set")
    return {case: files[case] for case in test_cases}


def _read_checked(path: Path, case: str, store: Store) -> np.ndarray:
    try:
        img = sitk.ReadImage(os.fspath(path))
    except RuntimeError as exc:
        raise DataError(path, f"cannot read the prediction ({str(exc).strip().splitlines()[-1]})") from None
    shape = store.shape(case)
    size = tuple(reversed(shape))
    if img.GetDimension() != 3 or img.GetSize() != size:
        raise DataError(path, f"size {img.GetSize()} (x, y, z) differs from test case {case!r}'s {size}")
    geometry = store.geometry(case)
    for what, theirs in (("spacing", img.GetSpacing()), ("origin", img.GetOrigin()),
                         ("direction", img.GetDirection())):
        if not np.allclose(theirs, geometry[what], atol=_TOLERANCE[what], rtol=1e-5):
            raise DataError(path, f"{what} {tuple(round(v, 4) for v in theirs)} differs from test case {case!r}'s "
                                  f"{tuple(round(v, 4) for v in geometry[what])}; the prediction must lie on the "
                                  "case's voxel grid")
    label = sitk.GetArrayFromImage(img)
    check_label_values(label, store.labels.values(), path)
    return label.astype(np.uint8)


def evaluate_external(pred_dir: Path, store_path: Path, split_path: Path, out_csv: Path, *,
                      distance_unit: str = "voxel") -> dict:
    """Score the folder's predictions of the split's test cases into ``out_csv`` (the evaluate
    stage's ``metrics.csv``); returns ``{"folder", "sha256", "cases"}``, the row's provenance."""
    split = json.loads(Path(split_path).read_text())
    test_cases = list(split["cases"]["test"])
    rows = []
    with Store(store_path) as store:
        matched = match_predictions(pred_dir, store, test_cases)
        names = {v: k for k, v in store.labels.items()}
        for case, path in matched.items():
            pred = _read_checked(path, case, store)
            _, gt = store.read(case)
            spacing = store.spacing(case) if distance_unit == "mm" else 1.0
            rows += case_metrics(pred, gt, names, spacing, case=case)
    write_metrics_csv(rows, out_csv)
    return {"folder": os.fspath(Path(pred_dir).resolve()), "sha256": path_digest(Path(pred_dir))["sha256"],
            "cases": len(matched)}
