"""Importers of the NIH Pancreas-CT dataset into :class:`~semiseg.data.store.Case`\\ s: the TCIA
release (DICOM series + NIfTI labels) under the two conventions of the literature (layouts
``pancreas_raw`` and ``pancreas_coranet_raw``), and the h5 copies MC-Net's code reads (layout
``pancreas``).

The release (Roth et al., "DeepOrgan", MICCAI 2015; data: The Cancer Imaging Archive,
doi:10.7937/K9/TCIA.2016.tNB1kqBU) has 82 contrast-enhanced abdominal CTs, one DICOM series per
patient, and the labels as NIfTI files, distributed apart::

    Pancreas-CT/PANCREAS_0001/<study UID>/<series UID>/1-001.dcm ...   (the image, 512 x 512)
    TCIA_pancreas_labels-02-05-2017/label0001.nii.gz ...                 (0 background, 1 pancreas)

Both folders are looked for anywhere below the layout's root (the patient folders by their name
``PANCREAS_NNNN``, the labels by ``labelNNNN.nii.gz``). Case ids are ``imageNNNN``, as MC-Net's
lists name them. The DICOM series is read by SimpleITK, which applies each file's rescale slope
and intercept, so voxels are Hounsfield units; a series with a missing slice (an uneven step of
the slice positions) is refused (:func:`semiseg.data.volumes.read_dicom_series`). The label file
must lie on the series' voxel grid: the same voxel centres in patient space (it may order its
axes differently, as a NIfTI writer may flip the slice axis: the image is then re-ordered onto
the label's grid, exactly); any other difference is refused as mismatched geometry.

Cases #25 and #70 of the release duplicate other cases (MC-Net's issue #6); the two conventions
differ in what they do about it:

- ``pancreas_raw`` (MC-Net, and SGRS-Net, CRLN, TraCoCo after it): all 82 cases, MC-Net's
  ``data/Pancreas/train.list`` (62) / ``test.list`` (20), shipped in
  ``config/datasets/pancreas_splits/``; the duplicate #25 is a test case. Preprocessing
  (:func:`preprocess_mcnet`, MC-Net's ``Pre-processing.ipynb``): resample to 1 mm (B-spline
  image, nearest-neighbour label; the new size is the old extent in mm rounded down, and the
  spacing is the old extent over that size, as the notebook computes it); clip to [-125, 275] HU
  and scale to [0, 1]; crop the two in-plane axes to the label's box widened by half of what it
  lacks to reach 96, plus 25 voxels on each side (clipped at the volume's edge; the slice axis is
  not cropped); z-score over the crop.
- ``pancreas_coranet_raw`` (CoraNet, used by BCP): the 80 cases without #25 and #70, CoraNet's
  ``data_lists/pancreas/`` lists (train = ``train_lab.txt`` then ``train_unlab.txt``, 12 + 50;
  test 18), shipped as ``config/datasets/pancreas_coranet_splits/``. Preprocessing
  (:func:`preprocess_coranet`): the same 1 mm resampling; clip to [-125, 275]; min-max to [0, 1]
  over the resampled volume, no z-score; crop all three axes to the label's box plus 25 voxels
  on each side, widened to 96 where the volume allows. CoraNet's own script reslices the slice
  axis as if its spacing were the in-plane one and zero-pads crops smaller than 96; neither is
  reproduced (the trainer pads patches itself), so this is an equivalent copy, not CoraNet's.

Every case keeps its geometry: the 1 mm grid's spacing and direction, and the origin moved to
the crop's first voxel, so predictions lie on the scan. Put back on the release's label grid
(:func:`semiseg.data.volumes.to_source_grid`), a prediction differs from one made on the native
grid only near label boundaries: the 1 mm resampling is not invertible.

The h5 copies (layout ``pancreas``): ``Pancreas_h5/imageNNNN_norm.h5`` (or ``imageNNNN_norm.h5`` at
the root), keys ``image`` (float32, MC-Net's preprocessing) and ``label``, stored ``(X, Y, Z)`` as
the notebook transposed them; read back to the store's ``(Z, Y, X)``, with unit spacing (the
copies are at 1 mm), origin 0 and the identity direction.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from semiseg.errors import DataError
from semiseg.data.la import crop_box
from semiseg.data.layouts import Patients, read_case_lists
from semiseg.data.store import Case
from semiseg.data.volumes import check_label_values, crop_geometry, read_dicom_series, read_h5_copies, read_volume

__all__ = ["HU_WINDOW", "MARGIN", "MIN_EXTENT", "preprocess_coranet", "preprocess_mcnet", "read_pancreas_coranet_raw",
           "read_pancreas_h5", "read_pancreas_raw", "resample_1mm", "same_voxel_centres"]

#: The CT window of both conventions (HU).
HU_WINDOW = (-125.0, 275.0)
#: Voxels added on each side of the label box.
MARGIN = 25
#: Extent (voxels) a crop is widened towards: the patch's 96.
MIN_EXTENT = 96

_ROLES = ("train", "val", "test")
_CASE = re.compile(r"^image(\d{4})$")
_TOLERANCE_MM = 1e-2


def resample_1mm(img: sitk.Image, *, label: bool) -> sitk.Image:
    """MC-Net's ``ImageResample``: to about 1 mm, the new size the old extent in mm rounded down,
    the spacing that extent over the new size; origin and direction kept; B-spline for an image
    (as float32), nearest neighbour for a label."""
    size, spacing = np.array(img.GetSize()), np.array(img.GetSpacing())
    new_size = [int(s) for s in size * spacing]
    new_spacing = [float(s) for s in size * spacing / np.array(new_size)]
    source = img if label else sitk.Cast(img, sitk.sitkFloat32)
    return sitk.Resample(source, new_size, sitk.Transform(), sitk.sitkNearestNeighbor if label else sitk.sitkBSpline,
                         img.GetOrigin(), new_spacing, img.GetDirection(), 0,
                         img.GetPixelID() if label else sitk.sitkFloat32)


def _window(image: np.ndarray) -> np.ndarray:
    lo, hi = HU_WINDOW
    return (np.clip(image.astype(np.float64), lo, hi) - lo) / (hi - lo)


def _label_box(label: np.ndarray) -> list[tuple[int, int]]:
    where = np.nonzero(label)
    if not where[0].size:
        raise ValueError("the label has no pancreas voxel (there is no box to crop to)")
    return [(int(w.min()), int(w.max())) for w in where]


def preprocess_mcnet(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """MC-Net's steps after resampling, on ``(Z, Y, X)`` HU and label arrays: ``(image, label,
    start)`` (see the module docstring)."""
    box = _label_box(label)
    crop = (slice(None),) + tuple(crop_box(lo, hi, label.shape[a], margin=MARGIN, min_extent=MIN_EXTENT)
                                  for a, (lo, hi) in ((1, box[1]), (2, box[2])))
    scaled = _window(image)[crop]
    std = scaled.std()
    if not std > 0:
        raise ValueError("the cropped image is constant inside the CT window; it cannot be z-scored")
    out = ((scaled - scaled.mean()) / std).astype(np.float32)
    return (np.ascontiguousarray(out), np.ascontiguousarray(label[crop].astype(np.uint8)),
            (0, crop[1].start, crop[2].start))


def _widen(lo: int, hi: int, size: int) -> slice:
    """CoraNet's box of one axis: ``lo..hi`` (inclusive) plus the margin, widened to 96 where the
    volume allows (centred, then shifted inside it)."""
    a, b = max(lo - MARGIN, 0), min(hi + 1 + MARGIN, size)
    lack = MIN_EXTENT - (b - a)
    if lack > 0:
        a, b = a - lack // 2, b + lack - lack // 2
        if a < 0:
            a, b = 0, b - a
        if b > size:
            a, b = max(a - (b - size), 0), size
    return slice(a, b)


def preprocess_coranet(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """CoraNet's steps after resampling (see the module docstring): ``(image, label, start)``."""
    box = _label_box(label)
    scaled = _window(image)
    lo, hi = scaled.min(), scaled.max()
    if not hi > lo:
        raise ValueError("the image is constant inside the CT window; it cannot be scaled to [0, 1]")
    scaled = (scaled - lo) / (hi - lo)
    crop = tuple(_widen(a, b, label.shape[axis]) for axis, (a, b) in enumerate(box))
    return (np.ascontiguousarray(scaled[crop].astype(np.float32)), np.ascontiguousarray(label[crop].astype(np.uint8)),
            tuple(s.start for s in crop))


def _corners(img: sitk.Image) -> np.ndarray:
    size = img.GetSize()
    pts = [img.TransformIndexToPhysicalPoint(tuple(c * (s - 1) for c, s in zip(corner, size)))
           for corner in np.ndindex(2, 2, 2)]
    return np.array(sorted(np.round(np.array(pts), 2).tolist()))


def same_voxel_centres(image: sitk.Image, label: sitk.Image) -> bool:
    """Whether two grids hold the same voxel centres, whatever the order of their axes."""
    return (sorted(image.GetSize()) == sorted(label.GetSize())
            and np.allclose(sorted(image.GetSpacing()), sorted(label.GetSpacing()), rtol=1e-4)
            and np.allclose(_corners(image), _corners(label), atol=_TOLERANCE_MM * 10))


def _on_label_grid(image: sitk.Image, label: sitk.Image, folder: Path, label_path: Path) -> sitk.Image:
    """The image on the label's grid: as it is when the grids are one, re-ordered when they hold
    the same voxel centres in another axis order; else a mismatched-geometry error."""
    same = (image.GetSize() == label.GetSize()
            and np.allclose(image.GetSpacing(), label.GetSpacing(), rtol=1e-4)
            and np.allclose(image.GetOrigin(), label.GetOrigin(), atol=_TOLERANCE_MM)
            and np.allclose(image.GetDirection(), label.GetDirection(), atol=1e-4))
    if same:
        image.CopyInformation(label)
        return image
    if same_voxel_centres(image, label):
        return sitk.Resample(image, label, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())
    raise DataError(label_path, f"its grid (size {label.GetSize()}, spacing "
                                f"{tuple(round(s, 4) for s in label.GetSpacing())}, origin "
                                f"{tuple(round(s, 2) for s in label.GetOrigin())}) does not cover the DICOM series "
                                f"{folder} (size {image.GetSize()}, spacing "
                                f"{tuple(round(s, 4) for s in image.GetSpacing())}, origin "
                                f"{tuple(round(s, 2) for s in image.GetOrigin())}): mismatched geometry")


def _find_sources(src: Path, cases: list[str], files: dict[str, Path], role_of: dict[str, str]
                  ) -> dict[str, tuple[Path, Path]]:
    """The DICOM folder and label file of every listed case."""
    folders: dict[str, Path] = {}
    for p in sorted(src.rglob("PANCREAS_*")):
        if p.is_dir() and re.fullmatch(r"PANCREAS_\d{4}", p.name):
            key = p.name[-4:]
            if key in folders:
                raise DataError(p, f"patient folder {p.name} is also at {folders[key]}")
            folders[key] = p
    labels: dict[str, Path] = {}
    for p in sorted(src.rglob("label*.nii.gz")):
        m = re.fullmatch(r"label(\d{4})\.nii\.gz", p.name)
        if m:
            if m[1] in labels:
                raise DataError(p, f"label file {p.name} is also at {labels[m[1]]}")
            labels[m[1]] = p
    out = {}
    for case in cases:
        m = _CASE.match(case)
        list_file = files[role_of[case]]
        if not m:
            raise DataError(list_file, f"case id {case!r} is not imageNNNN (the release's patient number)")
        if m[1] not in folders:
            raise DataError(list_file, f"case {case!r} is listed but no DICOM folder PANCREAS_{m[1]} is under {src}")
        if m[1] not in labels:
            raise DataError(list_file, f"case {case!r} is listed but its label file label{m[1]}.nii.gz is not "
                                       f"under {src}")
        out[case] = (folders[m[1]], labels[m[1]])
    return out


def _read_release(src_dir, dataset_name: str, recipe: Callable) -> tuple[Iterator[Case], Patients]:
    src = Path(src_dir)
    files, cases = read_case_lists(src, dataset_name)
    role_of = {c: role for role in _ROLES for c in cases[role]}
    sources = _find_sources(src, list(role_of), files, role_of)

    def load(case: str) -> Case:
        folder, label_path = sources[case]
        image, _ = read_dicom_series(folder)
        label = read_volume(label_path, "label")
        check_label_values(sitk.GetArrayViewFromImage(label), (0, 1), label_path)
        image = _on_label_grid(image, label, folder, label_path)
        image_1mm, label_1mm = resample_1mm(image, label=False), resample_1mm(label, label=True)
        try:
            arr, lab, start = recipe(sitk.GetArrayFromImage(image_1mm), sitk.GetArrayFromImage(label_1mm))
        except ValueError as exc:
            raise DataError(label_path if "label" in str(exc) else folder, str(exc)) from None
        geometry = crop_geometry(image_1mm, start)
        return Case(case, case, arr, lab, geometry["spacing"], os.fspath(folder),
                    origin=geometry["origin"], direction=geometry["direction"])

    def generate() -> Iterator[Case]:
        for role in _ROLES:
            for case in cases[role]:
                yield load(case)

    return generate(), {role: list(cases[role]) for role in _ROLES}


def read_pancreas_raw(src_dir: str | os.PathLike[str], dataset_name: str) -> tuple[Iterator[Case], Patients]:
    """The TCIA release under MC-Net's convention (see the module docstring).

    Raises:
        DataError: up front for a missing or empty list, a case in two lists, a case id that is
            not ``imageNNNN``, a listed case without its DICOM folder or label file; while
            iterating for a folder without exactly one DICOM series, a series with a missing
            slice, a label off the series' grid, a label value other than 0 and 1, or a label
            without pancreas.
    """
    return _read_release(src_dir, dataset_name, preprocess_mcnet)


def read_pancreas_coranet_raw(src_dir: str | os.PathLike[str], dataset_name: str
                              ) -> tuple[Iterator[Case], Patients]:
    """The TCIA release under CoraNet's convention (see the module docstring); raises as
    :func:`read_pancreas_raw`."""
    return _read_release(src_dir, dataset_name, preprocess_coranet)


def read_pancreas_h5(src_dir: str | os.PathLike[str], dataset_name: str) -> tuple[Iterator[Case], Patients]:
    """MC-Net's h5 copies (``Pancreas_h5/imageNNNN_norm.h5``; see the module docstring)."""
    return read_h5_copies(Path(src_dir), dataset_name,
                          lambda src, case: [src / "Pancreas_h5" / f"{case}_norm.h5", src / f"{case}_norm.h5"], xyz=True)
