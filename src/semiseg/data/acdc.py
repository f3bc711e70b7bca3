"""Importer of the official ACDC release (raw NIfTI) into :class:`~semiseg.data.store.Case`\\ s.

The release (https://www.creatis.insa-lyon.fr/Challenge/acdc/, MICCAI 2017; cite Bernard et al.,
IEEE TMI 37(11), 2018) unpacks to ``database/training/patientNNN/`` for the 100 training patients
(and ``database/testing/`` for 50 more that the semi-supervised protocol does not use)::

    patient001/Info.cfg                      ED: 1, ES: 12, Group, Height, NbFrame, Weight
    patient001/patient001_frame01.nii.gz     end-diastole (ED) short-axis stack
    patient001/patient001_frame01_gt.nii.gz  its labels: 0 background, 1 RV, 2 Myo, 3 LV
    patient001/patient001_frame12.nii.gz     end-systole (ES), and its _gt
    patient001/patient001_4d.nii.gz          the whole cine sequence (not used)

The semi-supervised literature (SSL4MIS's ``acdc_data_processing.py``, then UA-MT, BCP and the
rest) builds its copy of ACDC from exactly these files: the ED and ES frames of each patient, each
volume min-max scaled to [0, 1] on its own, labels unchanged, and no resampling (distances are
reported in voxels of this native grid). This importer does the same, and names the cases as that
copy does, so that stores and splits made from either source have the same case ids:
``patientNNN_frame01`` is the ED frame and ``patientNNN_frame02`` the ES frame, whatever their
frame numbers in the release (patient001's ES frame is ``frame12``). The voxel spacing of the
NIfTI header is kept in the store (z, y, x, mm), and so are its origin and direction (the
image's place in patient space), which the infer stage writes onto every prediction.

The release has no train/val/test split. The protocol's split (70 / 10 / 20 patients, the lists
of the common preprocessed copy, in their order) is read from ``train.list``, ``val.list`` and
``test.list`` at the layout's root: one patient id per line. The fetch stage copies them there
from ``config/datasets/acdc_splits/`` (see :data:`semiseg.data.registry.LAYOUTS`).

The layout's root is the unpacked release: the patient folders are looked for in ``training/``,
``database/training/`` or the root itself.

Example::

    cases, patients = read_acdc_raw("results/raw/acdc", "acdc")
    write_store("results/preprocessed/acdc/store.h5", name="acdc", dims=2, labels=..., cases=cases)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from semiseg.errors import DataError
from semiseg.data.store import Case
from semiseg.io import read_text

__all__ = ["PHASES", "find_patient_dir", "read_acdc_raw", "read_info_cfg"]

#: Case suffix -> the Info.cfg key of the frame it holds.
PHASES = (("frame01", "ED"), ("frame02", "ES"))

_ROLES = ("train", "val", "test")
_PATIENT = re.compile(r"^patient\d{3}$")
_PATIENT_DIRS = ("training", "database/training", ".")


def read_info_cfg(path: Path) -> dict[str, str]:
    """The ``Key: value`` lines of a patient's ``Info.cfg``; ``ED`` and ``ES`` must be integers."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "Info.cfg does not exist (it names the patient's ED and ES frames)")
    info: dict[str, str] = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise DataError(path, f"line {number}: {line!r} is not 'Key: value'")
        info[key.strip()] = value.strip()
    for key in ("ED", "ES"):
        if key not in info:
            raise DataError(path, f"no '{key}:' line (the {key} frame number)")
        if not re.fullmatch(r"\d+", info[key]):
            raise DataError(path, f"{key} is {info[key]!r}, not a frame number")
    if int(info["ED"]) == int(info["ES"]):
        raise DataError(path, f"ED and ES are the same frame ({info['ED']})")
    return info


def find_patient_dir(src: Path) -> Path:
    """The folder holding the ``patientNNN`` folders: ``training/``, ``database/training/`` or `src`."""
    for rel in _PATIENT_DIRS:
        cand = (src / rel) if rel != "." else src
        if cand.is_dir() and any(p.is_dir() and _PATIENT.match(p.name) for p in cand.iterdir()):
            return cand
    raise DataError(src, "no patientNNN folders here, in training/ or in database/training/; "
                         "is this the unpacked official ACDC release?")


def _read_patient_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(path, "split list does not exist (one patient id per line; the fetch stage copies "
                              "the protocol's lists from config/datasets/acdc_splits/)")
    ids: list[str] = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        item = line.strip()
        if not item:
            continue
        if not _PATIENT.match(item):
            raise DataError(path, f"line {number}: {item!r} is not a patient id (patientNNN)")
        if item in ids:
            raise DataError(path, f"line {number}: {item!r} is listed twice")
        ids.append(item)
    return ids


def _frame_files(patient_dir: Path, patient: str, info_path: Path) -> list[tuple[str, Path, Path]]:
    """``(case_id, image, label)`` of the ED and ES frames, checked to exist."""
    info = read_info_cfg(info_path)
    out = []
    for suffix, key in PHASES:
        stem = f"{patient}_frame{int(info[key]):02d}"
        image, label = patient_dir / f"{stem}.nii.gz", patient_dir / f"{stem}_gt.nii.gz"
        for f in (image, label):
            if not f.is_file():
                raise DataError(f, f"{patient}: the {key} frame ({key}: {info[key]} in {info_path.name}) "
                                   f"has no file {f.name}")
        out.append((f"{patient}_{suffix}", image, label))
    return out


def _read_nifti(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(os.fspath(path))
    except RuntimeError as exc:
        raise DataError(path, f"cannot read as NIfTI ({str(exc).strip().splitlines()[-1]})") from None


def _load_case(case_id: str, patient: str, image_path: Path, label_path: Path) -> Case:
    img, lab = _read_nifti(image_path), _read_nifti(label_path)
    image = sitk.GetArrayFromImage(img)  # (Z, Y, X)
    label = sitk.GetArrayFromImage(lab)
    if image.ndim != 3:
        raise DataError(image_path, f"expected a 3-D volume, got shape {image.shape}")
    if image.shape != label.shape:
        raise DataError(label_path, f"label shape {label.shape} differs from the image's {image.shape}")
    if not np.allclose(img.GetSpacing(), lab.GetSpacing(), rtol=1e-4):
        raise DataError(label_path, f"spacing {lab.GetSpacing()} differs from the image's {img.GetSpacing()}")
    # per-volume min-max to [0, 1], as the literature's preprocessing (in float64, then float32)
    lo, hi = float(image.min()), float(image.max())
    if not hi > lo:
        raise DataError(image_path, f"the image is constant ({lo}); cannot scale it to [0, 1]")
    scaled = ((image.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)
    if not np.issubdtype(label.dtype, np.integer):
        if not np.array_equal(label, np.round(label)):
            raise DataError(label_path, f"label values are not integers (dtype {label.dtype})")
        label = label.astype(np.int16)
    for what, ours, theirs in (("origin", img.GetOrigin(), lab.GetOrigin()),
                               ("direction", img.GetDirection(), lab.GetDirection())):
        if not np.allclose(ours, theirs, atol=1e-3):
            raise DataError(label_path, f"{what} {theirs} differs from the image's {ours}")
    spacing = tuple(float(s) for s in reversed(img.GetSpacing()))  # SimpleITK: (x, y, z)
    # the place in patient space, kept for the predictions (ITK's terms, as the store holds them)
    return Case(case_id, patient, scaled, label, spacing, os.fspath(image_path),
                origin=tuple(img.GetOrigin()), direction=tuple(img.GetDirection()))


def read_acdc_raw(src_dir: str | os.PathLike[str], dataset_name: str) -> tuple[Iterator[Case], dict[str, list[str]]]:
    """Import the official ACDC release (see the module docstring).

    Returns ``(cases, patients)``: a lazy iterator of cases (train, val, test patients in list
    order, ED before ES) and the patient ids per list. Everything that can be checked without
    reading voxels (lists, Info.cfg, frame files) is checked up front, naming the file at fault.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise DataError(src, f"{dataset_name}: source directory does not exist")
    lists = {role: src / f"{role}.list" for role in _ROLES}
    patients = {role: _read_patient_list(lists[role]) for role in _ROLES}
    for role in ("train", "test"):
        if not patients[role]:
            raise DataError(lists[role], f"{dataset_name}: the {role} list is empty")
    owner: dict[str, str] = {}
    for role in _ROLES:
        for p in patients[role]:
            if p in owner:
                raise DataError(lists[role], f"patient {p!r} is also in {lists[owner[p]].name}")
            owner[p] = role
    root = find_patient_dir(src)
    frames: dict[str, list[tuple[str, Path, Path]]] = {}
    for role in _ROLES:
        for p in patients[role]:
            pdir = root / p
            if not pdir.is_dir():
                raise DataError(lists[role], f"patient {p!r} is listed but {pdir} does not exist")
            frames[p] = _frame_files(pdir, p, pdir / "Info.cfg")

    def generate() -> Iterator[Case]:
        for role in _ROLES:
            for p in patients[role]:
                for case_id, image, label in frames[p]:
                    yield _load_case(case_id, p, image, label)

    return generate(), patients
