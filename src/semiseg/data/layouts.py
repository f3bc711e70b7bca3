"""Importers from the datasets' public on-disk layouts into :class:`~semiseg.data.store.Case`\\ s.

Each importer checks the whole layout up front (lists present, every listed file present, slice
numbering complete, no case or patient in two lists) and raises :class:`DataError` naming the
list file and the case at fault, then returns a lazy iterator that reads one case at a time
(feed it to :func:`~semiseg.data.store.write_store`) and the patient lists in the source's order::

    cases, patients = read_slices_layout("raw/acdc", "acdc")
    write_store("preprocessed/acdc/store.h5", name="acdc", dims=2, labels=..., cases=cases)
    descriptor = describe("preprocessed/acdc/store.h5", patients=patients)

Both layouts store distances in voxels and carry no spacing, so every case gets spacing
``(1, 1, 1)``: distance metrics come out in voxels, as the papers that use these layouts report.
Their files carry no origin or direction either (the distributors dropped the NIfTI header), so
every case gets origin 0 and the identity direction, and a prediction lies in the same voxel grid
as the h5 image, not where the scan was acquired; the official ACDC release (layout
``acdc_raw``, :mod:`semiseg.data.acdc`) keeps them.

Slices layout (ACDC as distributed for semi-supervised work; also what
:func:`~semiseg.data.synthetic.write_synthetic2d` writes)::

    train.list, val.list, test.list   case ids (patientNNN_frameMM), one per line
    train_slices.list                 <case>_slice_<i> for every training slice
    data/<case>.h5                    image, label (Z, Y, X): every val and test case
    data/slices/<case>_slice_<i>.h5   image, label (Y, X): slice z = i - 1 of a train case

Training cases have no volume file in the public ACDC copy (only the 60 val/test volumes are
there), so their volumes are rebuilt by stacking their slice files by slice index, which runs
from 1 to the number of slices: ``slice_1`` is ``z = 0`` (the base). Where a train case also has
a volume file, the rebuilt volume must equal it exactly.

LA layout (the 2018 Left Atrium challenge as distributed by UA-MT; also what
:func:`~semiseg.data.synthetic.write_synthetic3d` writes)::

    train.list, test.list [, val.list]     case ids, one per line
    2018LA_Seg_Training Set/<id>/mri_norm2.h5   image float32, label uint8, stored (X, Y, Z)

The LA files store ``(X, Y, Z)`` (``Z``, 88 slices in the real data, is the acquisition's slice
axis). The store wants ``(Z, Y, X)``, the order SimpleITK's ``GetArrayFromImage`` uses, so the
importer reverses the axes: store axis 0 is the LA's third axis, and an LA patch of
``112 x 112 x 80`` in the papers' ``(X, Y, Z)`` terms is ``80 x 112 x 112`` in the store. The
images are kept as the files hold them (z-scored per volume by the distributors). The LA layout
has no validation list: ``val`` is empty unless a ``val.list`` is present.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from semiseg.errors import DataError
from semiseg.data.layout_names import LA_FILE_NAME, LA_IMAGE_DIR
from semiseg.data.store import Case
from semiseg.io import read_text

__all__ = ["LA_FILE_NAME", "LA_IMAGE_DIR", "Patients", "read_case_lists", "read_la_layout", "read_slices_layout"]

#: ``{"train": [...], "val": [...], "test": [...]}``: patient ids in list order.
Patients = dict[str, list[str]]

_UNIT_SPACING = (1.0, 1.0, 1.0)
_SLICE_ID = re.compile(r"^(?P<case>.+)_slice_(?P<index>\d+)$")
_ROLES = ("train", "val", "test")


def _read_list(path: Path, *, required: bool = True) -> list[str]:
    """Non-blank stripped lines of a list file; duplicates are an error."""
    if not path.is_file():
        if required:
            raise DataError(path, "list file does not exist")
        return []
    items: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        item = line.strip()
        if not item:
            continue
        if item in seen:
            raise DataError(path, f"line {number}: {item!r} is listed twice")
        seen.add(item)
        items.append(item)
    return items


def _read_pair(path: Path, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` and ``label`` of an h5 file, checked for presence, dimensionality and shape."""
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(path, f"cannot read as HDF5 ({exc})") from None
    with h5:
        for key in ("image", "label"):
            if key not in h5 or not isinstance(h5[key], h5py.Dataset):
                raise DataError(path, f"no dataset {key!r} (has {sorted(h5.keys())})")
        image, label = h5["image"][()], h5["label"][()]
    if image.ndim != ndim:
        raise DataError(path, f"image must be {ndim}-D, got shape {image.shape}")
    if image.shape != label.shape:
        raise DataError(path, f"image shape {image.shape} differs from label shape {label.shape}")
    return image, label


def _check_disjoint(lists: dict[str, list[str]], files: dict[str, Path], what: str) -> None:
    """Raise if an item of ``what`` (case or patient ids per role) appears under two roles."""
    owner: dict[str, str] = {}
    for role in _ROLES:
        for item in dict.fromkeys(lists[role]):
            if item in owner:
                raise DataError(
                    files[role], f"{what} {item!r} is also in {files[owner[item]].name}"
                )
            owner[item] = role


def read_case_lists(src: Path, dataset_name: str) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """The list files of a layout whose cases are its patients (the LA layouts) and their ids,
    per role: train and test required and non-empty, val optional, no case in two lists."""
    if not src.is_dir():
        raise DataError(src, f"{dataset_name}: source directory does not exist")
    files = {role: src / f"{role}.list" for role in _ROLES}
    cases = {role: _read_list(files[role], required=role != "val") for role in _ROLES}
    for role in ("train", "test"):
        if not cases[role]:
            raise DataError(files[role], f"{dataset_name}: the {role} list is empty")
    _check_disjoint(cases, files, "case")
    return files, cases


def _patient_of(case_id: str, list_file: Path) -> str:
    """``patient003`` for ``patient003_frame01``."""
    patient, sep, _ = case_id.partition("_frame")
    if not sep or not patient:
        raise DataError(
            list_file, f"case id {case_id!r} has no '_frame' part; cannot tell its patient"
        )
    return patient


def read_slices_layout(
    src_dir: str | os.PathLike[str], dataset_name: str
) -> tuple[Iterator[Case], Patients]:
    """Import the ACDC slices layout (see the module docstring).

    Args:
        src_dir: the layout's root (holding ``train.list`` and ``data/``).
        dataset_name: the dataset's name, used in error messages.

    Returns:
        ``(cases, patients)``: a lazy iterator of cases (train, then val, then test, each in list
        order) and the patient ids per list in first-occurrence order.

    Raises:
        DataError: up front for a missing list, a listed case or slice without its file, gaps or
            duplicates in slice numbering, a case or patient in two lists; while iterating for an
            h5 file without ``image``/``label``, with mismatched shapes, or slices of one case
            with different shapes.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise DataError(src, f"{dataset_name}: source directory does not exist")
    files = {role: src / f"{role}.list" for role in _ROLES}
    cases = {role: _read_list(files[role]) for role in _ROLES}
    for role in ("train", "test"):
        if not cases[role]:
            raise DataError(files[role], f"{dataset_name}: the {role} list is empty")
    _check_disjoint(cases, files, "case")
    patient_lists = {
        role: [_patient_of(case, files[role]) for case in cases[role]] for role in _ROLES
    }
    _check_disjoint(patient_lists, files, "patient")
    patients = {role: list(dict.fromkeys(patient_lists[role])) for role in _ROLES}

    data_dir = src / "data"
    for role in ("val", "test"):
        for case in cases[role]:
            if not (data_dir / f"{case}.h5").is_file():
                raise DataError(
                    files[role],
                    f"case {case!r} is listed but {data_dir / f'{case}.h5'} does not exist",
                )
    slices = _train_slices(src, cases["train"], files["train"])

    def generate() -> Iterator[Case]:
        for case in cases["train"]:
            yield _stack_slices(case, _patient_of(case, files["train"]), slices[case], data_dir)
        for role in ("val", "test"):
            for case in cases[role]:
                path = data_dir / f"{case}.h5"
                image, label = _read_pair(path, ndim=3)
                yield Case(case, _patient_of(case, files[role]), image, label, _UNIT_SPACING,
                           os.fspath(path))

    return generate(), patients


def _train_slices(src: Path, train_cases: list[str], train_list: Path) -> dict[str, list[Path]]:
    """Each train case's slice files in slice-index order, checked for completeness."""
    slice_dir = src / "data" / "slices"
    slices_list = src / "train_slices.list"
    indices: dict[str, dict[int, str]] = {case: {} for case in train_cases}
    for slice_id in _read_list(slices_list):
        match = _SLICE_ID.match(slice_id)
        if match is None:
            raise DataError(slices_list, f"{slice_id!r} is not a <case>_slice_<i> id")
        case, index = match["case"], int(match["index"])
        if case not in indices:
            raise DataError(
                slices_list,
                f"slice {slice_id!r} belongs to case {case!r}, not in {train_list.name}",
            )
        if index in indices[case]:
            raise DataError(
                slices_list, f"{slice_id!r} repeats slice {index} of {case!r} "
                f"(also {indices[case][index]!r})"
            )
        indices[case][index] = slice_id

    ordered: dict[str, list[Path]] = {}
    for case in train_cases:
        found = sorted(indices[case])
        if not found:
            raise DataError(slices_list, f"case {case!r} of {train_list.name} has no slices")
        if found != list(range(1, len(found) + 1)):
            missing = sorted(set(range(1, found[-1] + 1)) - set(found))
            raise DataError(
                slices_list,
                f"case {case!r} has slices {found[0]}..{found[-1]} with gaps {missing}; "
                "expected 1..N",
            )
        paths = [slice_dir / f"{indices[case][i]}.h5" for i in found]
        for path in paths:
            if not path.is_file():
                raise DataError(
                    slices_list, f"case {case!r}: slice file {path} does not exist"
                )
        ordered[case] = paths
    return ordered


def _stack_slices(case: str, patient: str, paths: list[Path], data_dir: Path) -> Case:
    """Rebuild a train case's volume from its slices; check it against a volume file if any."""
    images, labels = [], []
    for path in paths:
        image, label = _read_pair(path, ndim=2)
        if images and image.shape != images[0].shape:
            raise DataError(
                path, f"slice shape {image.shape} differs from {paths[0].name}'s {images[0].shape}"
            )
        images.append(image)
        labels.append(label)
    volume, label_volume = np.stack(images), np.stack(labels)
    source = os.fspath(paths[0].with_name(f"{case}_slice_{{1..{len(paths)}}}.h5"))
    volume_path = data_dir / f"{case}.h5"
    if volume_path.is_file():
        ref_image, ref_label = _read_pair(volume_path, ndim=3)
        if not (np.array_equal(ref_image, volume) and np.array_equal(ref_label, label_volume)):
            raise DataError(
                volume_path,
                f"differs from the volume rebuilt from its {len(paths)} slice files",
            )
    return Case(case, patient, volume, label_volume, _UNIT_SPACING, source)


def read_la_layout(
    src_dir: str | os.PathLike[str], dataset_name: str
) -> tuple[Iterator[Case], Patients]:
    """Import the LA layout (see the module docstring); each case is its own patient.

    Args:
        src_dir: the layout's root (holding ``train.list`` and ``2018LA_Seg_Training Set/``).
        dataset_name: the dataset's name, used in error messages.

    Returns:
        ``(cases, patients)``: a lazy iterator of ``(Z, Y, X)`` cases (train, val, test, each in
        list order) and the ids per list; ``val`` is empty without a ``val.list``.

    Raises:
        DataError: up front for a missing train/test list, an empty one, a listed case without its
            file or a case in two lists; while iterating for an h5 file without
            ``image``/``label``, not 3-D, with mismatched shapes, an all-zero label or a constant
            image (as the raw release's importer, :func:`semiseg.data.la.read_la_raw`).
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise DataError(src, f"{dataset_name}: source directory does not exist")
    image_dir = src / LA_IMAGE_DIR
    if not image_dir.is_dir():
        raise DataError(image_dir, f"{dataset_name}: image directory does not exist")
    files, cases = read_case_lists(src, dataset_name)
    for role in _ROLES:
        for case in cases[role]:
            path = image_dir / case / LA_FILE_NAME
            if not path.is_file():
                raise DataError(files[role], f"case {case!r} is listed but {path} does not exist")

    def generate() -> Iterator[Case]:
        for role in _ROLES:
            for case in cases[role]:
                path = image_dir / case / LA_FILE_NAME
                image, label = _read_pair(path, ndim=3)
                # what the raw release's importer refuses (semiseg.data.la.preprocess_la), refused here too
                if not label.any():
                    raise DataError(path, "the label has no atrium voxel (it is all 0); every LA case has one")
                if not image.std() > 0:
                    raise DataError(path, "the image is constant; a scan has contrast")
                yield Case(
                    case, case,
                    np.ascontiguousarray(image.transpose(2, 1, 0)),
                    np.ascontiguousarray(label.transpose(2, 1, 0)),
                    _UNIT_SPACING, os.fspath(path),
                )

    return generate(), {role: list(cases[role]) for role in _ROLES}
