"""The evaluate stage: NIfTI predictions vs the store's labels → one metrics.csv row per case × class."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from semiseg.errors import DataError
from semiseg.data.store import Store
from semiseg.metrics.binary import case_metrics
from semiseg.metrics.csv_io import write_metrics_csv

__all__ = ["DISTANCE_UNITS", "evaluate"]


#: Distance units a dataset may ask for: voxels of the native grid, or the store's spacing.
DISTANCE_UNITS = ("voxel", "mm")


def evaluate(pred_dir: Path, store_path: Path, out_csv: Path, *, distance_unit: str = "voxel") -> int:
    """Score every ``<case>.nii.gz`` of `pred_dir`.

    ``distance_unit``: ``"voxel"`` measures 95HD and ASD in voxels of the native grid (spacing 1,
    as the semi-supervised papers' evaluation code calls medpy), ``"mm"`` with the store's spacing.
    """
    if distance_unit not in DISTANCE_UNITS:
        raise ValueError(f"distance_unit must be one of {DISTANCE_UNITS}, got {distance_unit!r}")
    files = sorted(Path(pred_dir).glob("*.nii.gz"))
    if not files:
        raise DataError(pred_dir, "no predictions (*.nii.gz) to evaluate")
    rows = []
    with Store(store_path) as store:
        names = {v: k for k, v in store.labels.items()}
        for f in files:
            cid = f.name[: -len(".nii.gz")]
            if cid not in store:
                raise DataError(f, f"case {cid!r} is not in the store {store_path}")
            _, gt = store.read(cid)
            pred = sitk.GetArrayFromImage(sitk.ReadImage(str(f)))
            if pred.shape != gt.shape:
                raise DataError(f, f"prediction shape {pred.shape} differs from the label's {gt.shape}")
            spacing = store.spacing(cid) if distance_unit == "mm" else 1.0
            rows += case_metrics(pred, gt, names, spacing, case=cid)
    write_metrics_csv(rows, out_csv)
    return len(files)
