"""Importer of the 2018 Left Atrium challenge's raw release (NRRD) into :class:`~semiseg.data.store.Case`\\ s.

The release (Atrial Segmentation Challenge, STACOM 2018; cite Xiong et al., Medical Image
Analysis 67, 2021) holds, per patient, a late-gadolinium-enhanced MRI and its atrium mask::

    <root>/Training Set/<ID>/lgemri.nrrd     the image (0.625 mm isotropic, 88 slices)
    <root>/Training Set/<ID>/laendo.nrrd     the mask: 255 = left atrium cavity, 0 elsewhere

(the folder may also be ``2018LA_Seg_Training Set/``, as in UA-MT's copy, or the root itself).

The semi-supervised literature's copy (``mri_norm2.h5``, read by
:func:`semiseg.data.layouts.read_la_layout`) was made from these files by UA-MT's
``la_heart_processing.py``; this importer applies the same steps (:func:`preprocess_la`):

1. label = ``laendo == 255`` (uint8 0/1);
2. image z-scored over the whole volume, before cropping (mean, population std), float32;
3. crop the two in-plane axes to the label's bounding box, each side widened by a margin plus
   half of what the box lacks to reach the patch size 112 (so the crop is at least 112 + 2 margins
   wide where the volume allows, clipped at the volume's edges); the slice axis is not cropped.

The one difference: UA-MT draws each side's margin at random in 10..19 voxels and did not record
the draws, so its copy cannot be regenerated bit for bit. Here the margin is fixed
(:data:`MARGIN`, 15 voxels, the middle of that range): a case's crop differs from the copy's by
at most 5 voxels on each in-plane side, its labels are the same voxels of the same scan, its
intensities the same z-score (computed on the uncropped volume either way). Models trained on
either copy see the same anatomy at the same scale; per-case metrics can differ slightly because
the test volume's extent (and so the sliding windows) differs.

Axes: SimpleITK reads arrays as ``(Z, Y, X)``, the store's order (the h5 copy stores ``(X, Y, Z)``
and its importer transposes), so cases from both sources are oriented alike.

The release has no split: ``train.list`` and ``test.list`` (UA-MT's 80 / 20, the lists every LA
paper uses) are at the layout's root, copied there by the fetch stage from
``config/datasets/la_splits/`` (see :data:`semiseg.data.registry.LAYOUTS`). Each case is its
own patient; there is no validation list.

Example::

    cases, patients = read_la_raw("results/raw/la", "la")
    write_store("results/preprocessed/la/store.h5", name="la", dims=3, labels=..., cases=cases)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from semiseg.errors import DataError
from semiseg.data.layouts import read_case_lists
from semiseg.data.store import Case

__all__ = ["IMAGE_FILE", "LABEL_FILE", "MARGIN", "MIN_EXTENT", "crop_box", "preprocess_la", "read_la_raw"]

IMAGE_FILE = "lgemri.nrrd"
LABEL_FILE = "laendo.nrrd"
#: The mask value of the atrium in ``laendo.nrrd``.
ATRIUM = 255
#: Voxels added on each in-plane side of the label box (UA-MT: random in 10..19).
MARGIN = 15
#: In-plane extent the box is widened towards before the margins (the patch's 112).
MIN_EXTENT = 112

_CASE_DIRS = ("Training Set", "2018LA_Seg_Training Set", ".")
_ROLES = ("train", "val", "test")
_UNIT_SPACING = (1.0, 1.0, 1.0)


def crop_box(lo: int, hi: int, size: int, *, margin: int = MARGIN, min_extent: int = MIN_EXTENT) -> slice:
    """The crop of one axis around a label spanning indices ``lo..hi`` (inclusive) of ``size``.

    UA-MT's rule: widen each side by ``margin`` plus ``max(min_extent - (hi - lo), 0) // 2``, then
    clip to ``[0, size)``; the end is exclusive at ``hi + widening`` (as its code slices).
    Worked example: a label at 50..130 of 200 (extent 80) gets ``(112 - 80) // 2 = 16`` more on
    each side: ``50 - 15 - 16 = 19`` to ``130 + 15 + 16 = 161``, 142 voxels.
    """
    pad = max(min_extent - (hi - lo), 0) // 2
    return slice(max(lo - margin - pad, 0), min(hi + margin + pad, size))


def preprocess_la(image: np.ndarray, mask: np.ndarray, *, margin: int = MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """UA-MT's preprocessing of one ``(Z, Y, X)`` volume: ``(image, label)``, z-scored and cropped
    in Y and X (see the module docstring). ``mask`` is the raw ``laendo`` array (255 = atrium).

    Raises:
        ValueError: the mask has no atrium voxel (there is no box to crop to) or the image is
            constant (no z-score).
    """
    label = (mask == ATRIUM).astype(np.uint8)
    where = np.nonzero(label)
    if not where[0].size:
        raise ValueError(f"the mask has no voxel of value {ATRIUM} (the atrium)")
    image = image.astype(np.float64)
    std = image.std()
    if not std > 0:
        raise ValueError("the image is constant; it cannot be z-scored")
    image = ((image - image.mean()) / std).astype(np.float32)
    crop = (slice(None),) + tuple(
        crop_box(int(where[axis].min()), int(where[axis].max()), label.shape[axis], margin=margin)
        for axis in (1, 2)
    )
    return np.ascontiguousarray(image[crop]), np.ascontiguousarray(label[crop])


def _find_case_dir(src: Path) -> Path:
    for name in _CASE_DIRS:
        cand = src / name
        if cand.is_dir() and any(p.is_file() for p in cand.glob(f"*/{IMAGE_FILE}")):
            return cand
    raise DataError(src, f"no <ID>/{IMAGE_FILE} under any of {', '.join(repr(d) for d in _CASE_DIRS)}")


def _read_nrrd(path: Path) -> np.ndarray:
    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as exc:
        raise DataError(path, f"cannot read as NRRD ({str(exc).strip().splitlines()[-1]})") from None


def read_la_raw(src_dir: str | os.PathLike[str], dataset_name: str) -> tuple[Iterator[Case], dict[str, list[str]]]:
    """Import the raw release (see the module docstring); each case is its own patient.

    Returns:
        ``(cases, patients)``: a lazy iterator of ``(Z, Y, X)`` cases (train, then test, each in
        list order) and the ids per list (``val`` empty unless a ``val.list`` is present).

    Raises:
        DataError: up front for a missing or empty train/test list, a case in two lists, a listed
            case without its two files; while iterating for an unreadable file, image and mask of
            different shapes, a mask without atrium or a constant image.
    """
    src = Path(src_dir)
    files, cases = read_case_lists(src, dataset_name)
    case_dir = _find_case_dir(src)
    for role in _ROLES:
        for case in cases[role]:
            for name in (IMAGE_FILE, LABEL_FILE):
                if not (case_dir / case / name).is_file():
                    raise DataError(files[role], f"case {case!r} is listed but {case_dir / case / name} does not exist")

    def generate() -> Iterator[Case]:
        for role in _ROLES:
            for case in cases[role]:
                image_path, mask_path = case_dir / case / IMAGE_FILE, case_dir / case / LABEL_FILE
                image, mask = _read_nrrd(image_path), _read_nrrd(mask_path)
                if image.shape != mask.shape:
                    raise DataError(mask_path, f"shape {mask.shape} differs from {IMAGE_FILE}'s {image.shape}")
                try:
                    image, label = preprocess_la(image, mask)
                except ValueError as exc:
                    raise DataError(mask_path if "mask" in str(exc) else image_path, str(exc)) from None
                yield Case(case, case, image, label, _UNIT_SPACING, os.fspath(image_path))

    return generate(), {role: list(cases[role]) for role in _ROLES}
