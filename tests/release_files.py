"""Small stand-ins for the official releases of BraTS 2019, Pancreas-CT and AbdomenCT-1K, written in
their formats (NIfTI, DICOM series) with the releases' kind of geometry (spacing, origin,
direction), for the readers' tests, the smoke tables and ``benchmarks/preprocess_3d.py``.

They are stand-ins: synthetic anatomy (an ellipsoid "brain" with a nested tumour, a CT body with
a "pancreas", abdominal organs), tiny volumes; no number computed on them is a result.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

# BraTS 2019: 1 mm isotropic, origin (0, -239, 0), identity direction (as SimpleITK reads the
# release's headers); the release's volumes are 240 x 240 x 155, these are smaller.
BRATS_GEOMETRY = {"spacing": (1.0, 1.0, 1.0), "origin": (0.0, -239.0, 0.0),
                  "direction": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)}


def _image(array: np.ndarray, geometry: dict) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(geometry["spacing"])
    img.SetOrigin(geometry["origin"])
    img.SetDirection(geometry["direction"])
    return img


def write_nifti(array: np.ndarray, geometry: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(_image(array, geometry), os.fspath(path), useCompression=True)
    return path


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def brats_case(seed: int, shape=(30, 40, 36)) -> tuple[np.ndarray, np.ndarray]:
    """``(flair, seg)`` of one stand-in case, ``(Z, Y, X)``: int16 FLAIR of a brain ellipsoid (0
    outside, as the release's skull-stripped volumes), seg with 2 (oedema) around 1 (core) around 4
    (enhancing)."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    brain = _ellipsoid(shape, (z / 2, y / 2, x / 2), (z / 2 - 3, y / 2 - 3, x / 2 - 4))
    centre = (z / 2 + rng.integers(-2, 3), y / 2 + rng.integers(-3, 4), x / 2 + rng.integers(-3, 4))
    size = 3 + rng.integers(0, 3)
    seg = np.zeros(shape, np.uint8)
    seg[_ellipsoid(shape, centre, (size + 3,) * 3) & brain] = 2
    seg[_ellipsoid(shape, centre, (size + 1,) * 3) & brain] = 1
    seg[_ellipsoid(shape, centre, (size,) * 3) & brain] = 4
    flair = np.where(brain, rng.normal(300, 40, shape), 0)
    flair[seg > 0] += 250  # tumour is bright on FLAIR
    flair[brain] = np.maximum(flair[brain], 1)
    return np.round(flair).astype(np.int16), seg


def write_brats_release(root: Path, cases: list[str], *, shape=(30, 40, 36), geometry=BRATS_GEOMETRY) -> Path:
    """``MICCAI_BraTS_2019_Data_Training/{HGG,LGG}/<ID>/<ID>_{flair,t1,seg}.nii.gz`` for ``cases``
    (alternately HGG and LGG; a T1 volume too, which the readers must ignore)."""
    base = root / "MICCAI_BraTS_2019_Data_Training"
    for i, case in enumerate(cases):
        flair, seg = brats_case(i, shape)
        folder = base / ("HGG" if i % 2 == 0 else "LGG") / case
        write_nifti(flair, geometry, folder / f"{case}_flair.nii.gz")
        write_nifti((flair // 2).astype(np.int16), geometry, folder / f"{case}_t1.nii.gz")
        write_nifti(seg, geometry, folder / f"{case}_seg.nii.gz")
    return base


def write_lists(root: Path, **lists: list[str]) -> None:
    for role, ids in lists.items():
        (root / f"{role}.list").write_text("".join(f"{i}\n" for i in ids))
