"""Small stand-ins for the official releases of BraTS 2019, Pancreas-CT and AbdomenCT-1K, written in
their formats (NIfTI, DICOM series) with the releases' kind of geometry (spacing, origin,
direction), for the readers' tests, the smoke tables and ``benchmarks/preprocess_3d.py``.

They are stand-ins: synthetic anatomy (an ellipsoid "brain" with a nested tumour, a CT body with
a "pancreas", abdominal organs), tiny volumes; no number computed on them is a result.
"""

from __future__ import annotations

import hashlib
import locale
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


# Pancreas-CT: 512 x 512 slices of about 0.7-0.9 mm, 1.5-2.5 mm apart, stored with rescale
# intercept -1024 (these: 40 x 44 slices of 0.78 mm, 1.5 mm apart, origin as a TCIA series').
PANCREAS_GEOMETRY = {"spacing": (0.78125, 0.78125, 1.5), "origin": (-172.5, -180.0, -412.0),
                     "direction": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)}


def pancreas_case(seed: int, shape=(24, 44, 40)) -> tuple[np.ndarray, np.ndarray]:
    """``(hu, label)`` of one stand-in case, ``(Z, Y, X)``: int16 HU of a body (soft tissue ~40 HU,
    air -1000 outside) with a brighter "pancreas" ellipsoid (label 1)."""
    rng = np.random.default_rng(100 + seed)
    z, y, x = shape
    body = _ellipsoid(shape, (z / 2, y / 2, x / 2), (z, y / 2 - 2, x / 2 - 2))
    centre = (z / 2 + rng.integers(-2, 3), y / 2 + rng.integers(-3, 4), x / 2 + rng.integers(-3, 4))
    label = (_ellipsoid(shape, centre, (4 + rng.integers(0, 2), 5, 7)) & body).astype(np.uint8)
    hu = np.where(body, rng.normal(40, 15, shape), -1000.0)
    hu[label > 0] += 80
    return np.round(hu).astype(np.int16), label


def write_dicom_series(hu: np.ndarray, geometry: dict, folder: Path, *, intercept: int = -1024,
                       skip: tuple[int, ...] = ()) -> Path:
    """One CT series, a file per slice, as a scanner writes it: stored values ``hu - intercept``
    (SimpleITK's writer applies the inverse rescale), ImagePositionPatient per slice, instance
    numbers, one series UID. ``skip``: slice indices left out (a series with a missing slice)."""
    folder.mkdir(parents=True, exist_ok=True)
    # ITK's DICOM writer switches the process to the C locale and leaves it there (Python's
    # default text encoding becomes ASCII for every later test): put the locale back
    categories = [getattr(locale, c) for c in ("LC_CTYPE", "LC_NUMERIC", "LC_COLLATE", "LC_TIME", "LC_MONETARY",
                                               "LC_MESSAGES") if hasattr(locale, c)]
    saved = {c: locale.setlocale(c) for c in categories}
    try:
        _write_slices(hu, geometry, folder, intercept, skip)
    finally:
        for category, value in saved.items():
            locale.setlocale(category, value)
    return folder


def _write_slices(hu: np.ndarray, geometry: dict, folder: Path, intercept: int, skip: tuple[int, ...]) -> None:
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    sx, sy, sz = geometry["spacing"]
    d = np.asarray(geometry["direction"]).reshape(3, 3)
    series = f"1.2.826.0.1.3680043.2.1125.{int(hashlib.sha1(str(folder).encode()).hexdigest()[:10], 16)}"
    for k in range(hu.shape[0]):
        if k in skip:
            continue
        sl = sitk.GetImageFromArray(hu[k:k + 1])
        sl.SetSpacing((sx, sy, sz))
        pos = np.asarray(geometry["origin"]) + d[:, 2] * sz * k
        tags = {"0008|0060": "CT", "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{series}.{k + 1}",
                "0020|000d": f"{series}.0", "0020|000e": series, "0020|0013": str(k + 1),
                "0020|0032": "\\".join(f"{v:.4f}" for v in pos),
                "0020|0037": "\\".join(f"{v:.6f}" for v in (*d[:, 0], *d[:, 1])),
                "0018|0050": f"{sz}", "0028|1052": str(intercept), "0028|1053": "1"}
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(os.fspath(folder / f"1-{k + 1:03d}.dcm"))
        writer.Execute(sl)


def write_pancreas_release(root: Path, numbers: list[int], *, shape=(24, 44, 40), geometry=PANCREAS_GEOMETRY,
                           flip_label: bool = False) -> dict[int, tuple[Path, Path]]:
    """``Pancreas-CT/PANCREAS_NNNN/<study>/<series>/1-NNN.dcm`` and
    ``TCIA_pancreas_labels-02-05-2017/labelNNNN.nii.gz`` for the patient ``numbers``; returns each
    one's DICOM folder and label file. ``flip_label``: the label file stores its slices in the
    reverse order (origin at the last slice, slice axis pointing back), the same voxel centres."""
    out = {}
    for i, n in enumerate(numbers):
        hu, label = pancreas_case(i, shape)
        folder = write_dicom_series(hu, geometry, root / "Pancreas-CT" / f"PANCREAS_{n:04d}" / "1.2.3" / "1.2.3.4")
        lab_path = root / "TCIA_pancreas_labels-02-05-2017" / f"label{n:04d}.nii.gz"
        if flip_label:
            d = np.asarray(geometry["direction"]).reshape(3, 3).copy()
            origin = np.asarray(geometry["origin"]) + d[:, 2] * geometry["spacing"][2] * (shape[0] - 1)
            d[:, 2] *= -1
            write_nifti(label[::-1].copy(), {**geometry, "origin": tuple(origin), "direction": tuple(d.ravel())},
                        lab_path)
        else:
            write_nifti(label, geometry, lab_path)
        out[n] = (folder, lab_path)
    return out


# AbdomenCT-1K: 512 x 512 axial slices of ~0.6-0.9 mm, 1-5 mm apart, origins and directions as
# each source collection wrote them (these: 48 x 40 slices; one case with flipped in-plane axes).
ABDOMEN_GEOMETRIES = (
    {"spacing": (0.77, 0.77, 2.5), "origin": (-196.6, -190.3, -420.0),
     "direction": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)},
    {"spacing": (0.68, 0.68, 1.0), "origin": (174.0, 171.2, -88.5),
     "direction": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)},
)


def abdomen_case(seed: int, shape=(8, 48, 40)) -> tuple[np.ndarray, np.ndarray]:
    """``(hu, mask)`` of one stand-in case, ``(Z, Y, X)``: int16 HU, mask with 1 liver, 2 kidney
    (two), 3 spleen, 4 pancreas as blobs in a body."""
    rng = np.random.default_rng(200 + seed)
    z, y, x = shape
    body = _ellipsoid(shape, (z / 2, y / 2, x / 2), (z, y / 2 - 1, x / 2 - 1))
    mask = np.zeros(shape, np.uint8)
    j = lambda: int(rng.integers(-1, 2))  # noqa: E731
    organs = ((1, (z / 2, y * 0.4 + j(), x * 0.3 + j()), (z, 8, 7)), (2, (z / 2, y * 0.65, x * 0.25 + j()), (z, 4, 3)),
              (2, (z / 2, y * 0.65, x * 0.75 + j()), (z, 4, 3)), (3, (z / 2, y * 0.4 + j(), x * 0.78), (z, 5, 4)),
              (4, (z / 2, y * 0.55 + j(), x * 0.52), (z / 2, 2, 6)))
    for value, centre, radii in organs:
        mask[_ellipsoid(shape, centre, radii) & body] = value
    hu = np.where(body, rng.normal(30, 20, shape), -1000.0)
    for value, mean in ((1, 110), (2, 180), (3, 95), (4, 70)):
        hu[mask == value] += mean
    return np.round(hu).astype(np.int16), mask


def write_abdomen_release(root: Path, numbers: list[int], *, shape=(8, 48, 40)) -> dict[int, tuple[Path, Path]]:
    """``AbdomenCT-1K-ImagePart{1,2}/Case_NNNNN_0000.nii.gz`` and ``Mask/Case_NNNNN.nii.gz``."""
    out = {}
    for i, n in enumerate(numbers):
        hu, mask = abdomen_case(i, shape)
        geometry = ABDOMEN_GEOMETRIES[i % 2]
        image = write_nifti(hu, geometry, root / f"AbdomenCT-1K-ImagePart{1 + i % 2}" / f"Case_{n:05d}_0000.nii.gz")
        out[n] = (image, write_nifti(mask, geometry, root / "Mask" / f"Case_{n:05d}.nii.gz"))
    return out
