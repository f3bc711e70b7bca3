"""Reading medical volumes (NIfTI, DICOM series) for the importers of the official releases, with
the checks they share, and the geometry of what the importers cut out of a volume.

Every failure is a :class:`~semiseg.errors.DataError` naming the file at fault:

- :func:`read_volume`: a NIfTI (or any file SimpleITK reads) as a ``sitk.Image``, 3-D;
- :func:`read_dicom_series`: the one DICOM series of a folder, checked for missing slices (the
  slice positions along the slice normal must be evenly spaced) before SimpleITK reads it; pixel
  values come out in the modality's units (for CT, Hounsfield units: SimpleITK applies each
  file's rescale slope and intercept);
- :func:`check_same_grid`: image and label on one voxel grid (size, spacing, origin, direction);
- :func:`check_label_values`: label values within the dataset's classes;
- :func:`crop_geometry`: the geometry of a box cut out of an image (its origin moves to the
  box's first voxel; spacing and direction are kept), so a prediction of the box lies where the
  box lay in the scan;
- :func:`to_source_grid`: a label map on a store's grid (cropped, or resampled) put back on the
  grid of the source file it was made from, by nearest-neighbour sampling at the source's voxel
  centres (0 outside the store's box). Where the store's grid is a sub-grid of the source's (a
  crop), this is exact: a prediction equal to the stored label writes back as the source label.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from semiseg.errors import DataError

__all__ = ["check_label_values", "check_same_grid", "crop_geometry", "dicom_files", "read_dicom_series",
           "read_volume", "to_source_grid"]

#: Physical positions (mm) closer than this are the same.
_TOLERANCE_MM = 1e-3
#: Relative spread of slice gaps tolerated in a DICOM series (positions are printed in 0.001 mm).
_GAP_TOLERANCE = 0.05


def _sitk_reason(exc: RuntimeError) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "unreadable"


def read_volume(path: Path, what: str = "image") -> sitk.Image:
    """The 3-D image in ``path`` (NIfTI or any format SimpleITK reads)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"the {what} file does not exist")
    try:
        img = sitk.ReadImage(os.fspath(path))
    except RuntimeError as exc:
        raise DataError(path, f"cannot read the {what} ({_sitk_reason(exc)})") from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(path, f"the {what} must be a 3-D single-channel volume, got {img.GetDimension()}-D "
                              f"with {img.GetNumberOfComponentsPerPixel()} component(s) per voxel")
    return img


def dicom_files(folder: Path) -> list[str]:
    """The files of the one DICOM series under ``folder`` (searched recursively), ordered along the
    slice normal as GDCM sorts them. Refuses a folder with no series or with several."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "the DICOM folder does not exist")
    found: dict[str, tuple[Path, list[str]]] = {}
    for sub in sorted({folder, *(p for p in folder.rglob("*") if p.is_dir())}):
        if not any(p.is_file() for p in sub.iterdir()):
            continue
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(os.fspath(sub)) or ():
            if uid in found:
                raise DataError(sub, f"DICOM series {uid} is also in {found[uid][0]}; one series, one folder")
            found[uid] = (sub, list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(os.fspath(sub), uid)))
    if not found:
        raise DataError(folder, "no DICOM series here or in its sub-folders")
    if len(found) > 1:
        where = ", ".join(f"{uid} in {sub}" for uid, (sub, _) in sorted(found.items()))
        raise DataError(folder, f"{len(found)} DICOM series ({where}); the case must hold exactly one")
    return next(iter(found.values()))[1]


def _slice_position(path: str) -> tuple[np.ndarray, np.ndarray]:
    """ImagePositionPatient and the slice normal (from ImageOrientationPatient) of one file."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
        ipp = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
        iop = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
    except (RuntimeError, ValueError) as exc:
        raise DataError(path, f"no readable slice position / orientation (tags 0020,0032 and 0020,0037): "
                              f"{exc}") from None
    if len(ipp) != 3 or len(iop) != 6:
        raise DataError(path, f"slice position {ipp} / orientation {iop} must hold 3 / 6 numbers")
    return np.asarray(ipp), np.cross(iop[:3], iop[3:])


def read_dicom_series(folder: Path) -> tuple[sitk.Image, list[str]]:
    """The CT (or other) volume of the one DICOM series under ``folder`` and its files.

    Raises :class:`DataError` naming the folder for a gap in the slice positions (a missing
    slice: one gap about twice the others) or slices at one position, before reading voxels."""
    files = dicom_files(folder)
    if len(files) < 2:
        raise DataError(folder, f"the DICOM series has {len(files)} slice; a volume needs at least 2")
    positions = [_slice_position(f) for f in files]
    normal = positions[0][1]
    along = np.array([float(ipp @ normal) for ipp, _ in positions])
    gaps = np.diff(along)
    if np.any(np.abs(gaps) < _TOLERANCE_MM):
        k = int(np.argmin(np.abs(gaps)))
        raise DataError(folder, f"{Path(files[k]).name} and {Path(files[k + 1]).name} lie at the same slice "
                                f"position ({along[k]:.3f} mm along the slice normal)")
    step = float(np.median(gaps))
    bad = np.nonzero(np.abs(gaps - step) > _GAP_TOLERANCE * abs(step))[0]
    if bad.size:
        k = int(bad[0])
        missing = int(round(gaps[k] / step)) - 1
        what = (f"{missing} slice(s) missing" if missing >= 1 else "uneven slice spacing")
        raise DataError(folder, f"{what} between {Path(files[k]).name} ({along[k]:.3f} mm) and "
                                f"{Path(files[k + 1]).name} ({along[k + 1]:.3f} mm): gap {gaps[k]:.3f} mm where "
                                f"the series steps {step:.3f} mm ({len(files)} files)")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise DataError(folder, f"cannot read the DICOM series ({_sitk_reason(exc)})") from None
    return img, files


def check_same_grid(image: sitk.Image, label: sitk.Image, image_path: Path, label_path: Path) -> None:
    """Raise (naming ``label_path``) unless image and label share size, spacing, origin and direction."""
    if image.GetSize() != label.GetSize():
        raise DataError(label_path, f"size {label.GetSize()} (x, y, z) differs from the image's {image.GetSize()} "
                                    f"({Path(image_path).name})")
    for what, ours, theirs, tol in (("spacing", image.GetSpacing(), label.GetSpacing(), 1e-4),
                                    ("origin", image.GetOrigin(), label.GetOrigin(), _TOLERANCE_MM),
                                    ("direction", image.GetDirection(), label.GetDirection(), 1e-4)):
        if not np.allclose(ours, theirs, atol=tol, rtol=1e-5):
            raise DataError(label_path, f"{what} {tuple(round(v, 4) for v in theirs)} differs from the image's "
                                        f"{tuple(round(v, 4) for v in ours)} ({Path(image_path).name}); image and "
                                        "label must lie on one voxel grid")


def check_label_values(label: np.ndarray, allowed: Iterable[int], path: Path) -> None:
    """Raise (naming ``path``) if ``label`` holds a value outside ``allowed``."""
    allowed = sorted(set(int(v) for v in allowed))
    if not np.issubdtype(label.dtype, np.integer):
        if not np.array_equal(label, np.round(label)):
            raise DataError(path, f"label values are not integers (dtype {label.dtype})")
    values = np.unique(label)
    extra = [v.item() for v in values if int(v) not in allowed]
    if extra:
        raise DataError(path, f"label values {extra} are outside the dataset's classes {allowed}")


def crop_geometry(image: sitk.Image, start_zyx: Iterable[int]) -> dict[str, tuple[float, ...]]:
    """Spacing (z, y, x), origin and direction of the box of ``image`` starting at array index
    ``start_zyx`` (the store's terms: :class:`~semiseg.data.cases.Case`)."""
    z, y, x = (int(v) for v in start_zyx)
    return {"spacing": tuple(float(s) for s in reversed(image.GetSpacing())),
            "origin": tuple(float(v) for v in image.TransformIndexToPhysicalPoint((x, y, z))),
            "direction": tuple(float(v) for v in image.GetDirection())}


def to_source_grid(label: np.ndarray, geometry: dict, reference: sitk.Image) -> sitk.Image:
    """A ``(Z, Y, X)`` label map placed by ``geometry`` (:meth:`semiseg.data.store.Store.geometry`)
    on the voxel grid of ``reference`` (the source file), uint8, nearest neighbour, 0 outside."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(label, dtype=np.uint8))
    img.SetSpacing(tuple(float(s) for s in geometry["spacing"]))
    img.SetOrigin(tuple(float(s) for s in geometry["origin"]))
    img.SetDirection(tuple(float(s) for s in geometry["direction"]))
    out = sitk.Resample(img, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return out


def read_h5_copies(src: Path, dataset_name: str, names: Callable[[Path, str], list[Path]], *,
                   xyz: bool = False):
    """The cases of a directory of h5 copies (keys ``image``, ``label``; binary labels), in the
    order of its train/val/test lists: ``(cases, patients)`` as every reader returns them.

    ``names(src, case)`` lists where a case's file may be, first match wins; ``xyz``: the arrays
    are stored (x, y, z) and are transposed to the store's (z, y, x). Raises :class:`DataError`
    up front for a listed case without its file, and while iterating for a file that is not a
    3-D image/label pair or has a label outside 0/1.
    """
    from semiseg.data.layouts import _read_pair, read_case_lists
    from semiseg.data.store import Case

    files, cases = read_case_lists(src, dataset_name)
    roles = ("train", "val", "test")
    paths: dict[str, Path] = {}
    for role in roles:
        for case in cases[role]:
            cands = names(src, case)
            hit = next((p for p in cands if p.is_file()), None)
            if hit is None:
                raise DataError(files[role], f"case {case!r} is listed but none of {', '.join(map(str, cands))} exists")
            paths[case] = hit

    def generate():
        for role in roles:
            for case in cases[role]:
                image, label = _read_pair(paths[case], ndim=3)
                check_label_values(label, (0, 1), paths[case])
                if xyz:
                    image = np.ascontiguousarray(image.transpose(2, 1, 0))
                    label = np.ascontiguousarray(label.transpose(2, 1, 0))
                yield Case(case, case, image, label.astype(np.uint8), (1.0, 1.0, 1.0), os.fspath(paths[case]))

    return generate(), {role: list(cases[role]) for role in roles}
