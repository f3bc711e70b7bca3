"""Importer of the AbdomenCT-1K release (layout ``abdomenct1k_raw``) into
:class:`~semiseg.data.store.Case`\\ s, for ALHVR's 2D abdominal CT benchmark.

The release (Ma et al., "AbdomenCT-1K: Is Abdominal Organ Segmentation a Solved Problem?",
IEEE TPAMI 44(10), 2022; https://github.com/JunMa11/AbdomenCT-1K) is four archives on Zenodo,
unpacked side by side::

    AbdomenCT-1K-ImagePart1/Case_00001_0000.nii.gz ...   (records 5903099, 5903846, 5903769)
    Mask/Case_00001.nii.gz ...                            (record 5903769, Mask.7z)

The masks label 1 liver, 2 kidney, 3 spleen, 4 pancreas. Images are looked for anywhere below
the layout's root by their name ``Case_NNNNN_0000.nii.gz``, masks as ``Mask/Case_NNNNN.nii.gz``.
Case ids are ``Case_NNNNN``; each case is its own patient.

Preprocessing: the CT window [-125, 275] HU (the abdominal window of the Pancreas-CT protocols;
ALHVR names none), scaled to [0, 1] (HU -125 -> 0, 275 -> 1, the same for every volume); no
resampling, no crop. The scan keeps its spacing, origin and direction, so a prediction lies on
the scan and writes back as the mask file itself. Networks train on the volumes' axial slices
and are evaluated on whole volumes slice by slice (``dims: 2``, ACDC's protocol).

Split: ALHVR's 30 / 11 scans "following BFFC" are not public. The shipped lists
(``config/datasets/abdomenct1k_splits/``) are this project's own choice: the first 41 case
numbers, Case_00001 ... Case_00030 for training and Case_00031 ... Case_00041 for testing; they are
not the paper's, and any ``train.list`` / ``test.list`` of the source replaces them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from semiseg.errors import DataError
from semiseg.data.layouts import Patients, read_case_lists
from semiseg.data.store import Case
from semiseg.data.volumes import check_label_values, check_same_grid, read_volume

__all__ = ["ABDOMEN_LABELS", "HU_WINDOW", "read_abdomenct1k_raw", "window"]

#: The values of an AbdomenCT-1K mask.
ABDOMEN_LABELS = (0, 1, 2, 3, 4)
#: The CT window (HU) scaled to [0, 1].
HU_WINDOW = (-125.0, 275.0)

_ROLES = ("train", "val", "test")
_CASE = re.compile(r"^Case_\d{5}$")


def window(hu: np.ndarray) -> np.ndarray:
    """HU clipped to :data:`HU_WINDOW` and scaled to [0, 1], float32."""
    lo, hi = HU_WINDOW
    return ((np.clip(hu.astype(np.float64), lo, hi) - lo) / (hi - lo)).astype(np.float32)


def _index(src: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for p in sorted(src.rglob("Case_*.nii.gz")):
        m = re.fullmatch(r"(Case_\d{5})(_0000)?\.nii\.gz", p.name)
        if not m:
            continue
        table = images if m[2] else masks
        if not m[2] and p.parent.name != "Mask":
            continue
        if m[1] in table:
            raise DataError(p, f"{m[1]} is also at {table[m[1]]}; each case once")
        table[m[1]] = p
    return images, masks


def read_abdomenct1k_raw(src_dir: str | os.PathLike[str], dataset_name: str) -> tuple[Iterator[Case], Patients]:
    """Import the AbdomenCT-1K release (see the module docstring).

    Raises:
        DataError: up front for a missing or empty train/test list, a case in two lists, a case id
            not ``Case_NNNNN``, a listed case without its image or mask; while iterating for an
            unreadable file, image and mask on different grids, or a mask value outside 0..4.
    """
    src = Path(src_dir)
    files, cases = read_case_lists(src, dataset_name)
    images, masks = _index(src)
    for role in _ROLES:
        for case in cases[role]:
            if not _CASE.match(case):
                raise DataError(files[role], f"case id {case!r} is not Case_NNNNN")
            if case not in images:
                raise DataError(files[role], f"case {case!r} is listed but its image {case}_0000.nii.gz is not "
                                             f"under {src}")
            if case not in masks:
                raise DataError(files[role], f"case {case!r} is listed but its mask Mask/{case}.nii.gz is not "
                                             f"under {src}")

    def load(case: str) -> Case:
        image_path, mask_path = images[case], masks[case]
        img, mask = read_volume(image_path, "CT image"), read_volume(mask_path, "mask")
        check_same_grid(img, mask, image_path, mask_path)
        label = sitk.GetArrayFromImage(mask)
        check_label_values(label, ABDOMEN_LABELS, mask_path)
        return Case(case, case, window(sitk.GetArrayFromImage(img)), label.astype(np.uint8),
                    tuple(float(s) for s in reversed(img.GetSpacing())), os.fspath(image_path),
                    origin=tuple(img.GetOrigin()), direction=tuple(img.GetDirection()))

    def generate() -> Iterator[Case]:
        for role in _ROLES:
            for case in cases[role]:
                yield load(case)

    return generate(), {role: list(cases[role]) for role in _ROLES}
