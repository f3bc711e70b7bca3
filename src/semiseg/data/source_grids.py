"""Where a stored case came from, for putting a prediction back on its source's voxel grid
(``semiseg export --source-dir``): per layout, the file of a fetched source (``results/raw/<dataset>``)
whose grid a case was cut or resampled from.

Only the layouts whose readers crop or resample a scan are here (BraTS, Pancreas-CT) and those
that keep it whole but are read from the official release (AbdomenCT-1K); on the others a
prediction written by the infer stage already lies on the source's grid, or the source has no
grid (the h5 copies). The layout of a fetched source is read from its ``.fetched.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from semiseg.errors import DataError

__all__ = ["SOURCE_GRIDS", "source_grid_files"]


def _brats(raw: Path, cases: list[str]) -> dict[str, Path]:
    from semiseg.data.brats import _case_dirs, source_label_file

    dirs = _case_dirs(raw, set(cases))
    return {c: source_label_file(dirs[c], c) for c in cases if c in dirs}


def _pancreas(raw: Path, cases: list[str]) -> dict[str, Path]:
    found = {p.name[len("label"):len("label") + 4]: p for p in raw.rglob("label*.nii.gz")}
    return {c: found[c[-4:]] for c in cases if c[-4:] in found}


def _abdomen(raw: Path, cases: list[str]) -> dict[str, Path]:
    found = {p.name[:-len(".nii.gz")]: p for p in raw.rglob("Mask/Case_*.nii.gz")}
    return {c: found[c] for c in cases if c in found}


#: layout -> (fetched source, case ids) -> the label file of each case found there.
SOURCE_GRIDS: dict[str, Callable[[Path, list[str]], dict[str, Path]]] = {
    "brats_raw": _brats,
    "pancreas_raw": _pancreas,
    "pancreas_coranet_raw": _pancreas,
    "abdomenct1k_raw": _abdomen,
}


def source_grid_files(raw_dir: Path, cases: list[str]) -> dict[str, Path]:
    """The source label file of every case in ``cases``; :class:`DataError` naming what is missing."""
    raw_dir = Path(raw_dir)
    manifest = raw_dir / ".fetched.json"
    if not manifest.is_file():
        raise DataError(raw_dir, "no .fetched.json: not a fetched source (results/raw/<dataset>)")
    layout = json.loads(manifest.read_text()).get("layout")
    if layout not in SOURCE_GRIDS:
        raise DataError(manifest, f"layout {layout!r} has no source grid to write back to; layouts with one: "
                                  f"{', '.join(sorted(SOURCE_GRIDS))}")
    files = SOURCE_GRIDS[layout](raw_dir, list(cases))
    missing = [c for c in cases if c not in files or not files[c].is_file()]
    if missing:
        raise DataError(raw_dir, f"no source label file of {missing} in this {layout} source")
    return files
