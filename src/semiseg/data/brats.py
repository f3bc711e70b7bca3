"""Importers of BraTS 2019 (FLAIR, whole tumour) into :class:`~semiseg.data.store.Case`\\ s: the
official training release (layout ``brats_raw``) and the h5 copies of it (layout ``brats``).

The release (BraTS 2019, CBICA; cite Menze et al., IEEE TMI 34(10), 2015 and Bakas et al.,
Scientific Data 4, 2017; registration at https://www.med.upenn.edu/cbica/brats2019/) unpacks to
``MICCAI_BraTS_2019_Data_Training/{HGG,LGG}/<ID>/`` with, per case, co-registered 1 mm isotropic
volumes of 240 x 240 x 155::

    <ID>_flair.nii.gz  <ID>_t1.nii.gz  <ID>_t1ce.nii.gz  <ID>_t2.nii.gz
    <ID>_seg.nii.gz    labels 0 background, 1 necrotic / non-enhancing core, 2 oedema, 4 enhancing

The case folders are looked for anywhere up to three levels below the layout's root (so the
release's ``HGG/`` and ``LGG/`` folders, or the cases directly at the root, all work).

The semi-supervised protocol (SSL4MIS, then ALHVR, SGRS-Net, CRLN) segments the whole tumour on
FLAIR. Its preprocessing (SSL4MIS's ``brats_proprecessing.py``), applied by
:func:`preprocess_brats`:

1. crop to the box of the non-zero FLAIR voxels (the brain), as that script slices it:
   ``min:max`` along each axis, so the last brain voxel of each axis is left out;
2. clip the intensities at their 99.9th percentile over the cropped volume (the smallest value
   whose cumulative share reaches 0.999, as ``skimage.exposure.cumulative_distribution`` finds it
   on the release's integer intensities);
3. z-score with the mean and standard deviation of the voxels > 0, applied to every voxel;
4. label = ``seg > 0`` (whole tumour).

The other modalities are not read (only the FLAIR and the segmentation must be present). A case
keeps its geometry: spacing and direction of the FLAIR, and the origin moved to the crop's first
voxel, so a prediction written by the infer stage lies on the scan, and
:func:`semiseg.data.volumes.to_source_grid` puts it back on the release's 240 x 240 x 155 grid.

Split: SSL4MIS's ``train.txt`` / ``val.txt`` / ``test.txt`` (250 / 25 / 60 of the 335 training
cases), shipped as ``config/datasets/brats_splits/{train,val,test}.list`` and copied in by the
fetch stage; each case is its own patient; the labeled ones are the first n of ``train.list``.

The h5 copies (layout ``brats``, what SSL4MIS's loader reads): ``<root>/data/<ID>.h5`` (or
``<root>/<ID>.h5``) with ``image`` (float32, preprocessed as above) and ``label`` (0/1), taken
in the array order of the NIfTI files they were made from (SimpleITK's ``(Z, Y, X)``, the store's);
they carry no geometry, so their cases get unit spacing, origin 0 and the identity direction.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from semiseg.errors import DataError
from semiseg.data.layouts import Patients, read_case_lists
from semiseg.data.store import Case
from semiseg.data.volumes import check_label_values, check_same_grid, crop_geometry, read_h5_copies, read_volume

__all__ = ["BRATS_LABELS", "MODALITY", "brats_brain_box", "preprocess_brats", "read_brats_h5", "read_brats_raw",
           "source_label_file"]

#: The values of a BraTS segmentation.
BRATS_LABELS = (0, 1, 2, 4)
#: The one modality the protocol reads.
MODALITY = "flair"
#: The share of voxels at or below the clip value.
CLIP_SHARE = 0.999
_ROLES = ("train", "val", "test")
_SEARCH_DEPTH = 3


def brats_brain_box(image: np.ndarray) -> tuple[slice, ...]:
    """SSL4MIS's crop of the non-zero voxels: ``min:max`` per axis (the max index excluded)."""
    where = np.nonzero(image)
    if not where[0].size:
        raise ValueError("the FLAIR volume is all zero (no brain to crop to)")
    return tuple(slice(int(w.min()), int(w.max())) for w in where)


def preprocess_brats(flair: np.ndarray, seg: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """SSL4MIS's preprocessing of one ``(Z, Y, X)`` case (see the module docstring): ``(image,
    label, start)``, ``start`` the crop's first voxel in the release's array."""
    box = brats_brain_box(flair)
    if any(s.stop - s.start < 1 for s in box):
        raise ValueError(f"the brain box {[(s.start, s.stop) for s in box]} is empty along an axis")
    image = flair[box].astype(np.float64)
    clip = float(np.quantile(image, CLIP_SHARE, method="inverted_cdf"))
    image = np.minimum(image, clip)
    brain = image[image > 0]
    if brain.size < 2 or not brain.std() > 0:
        raise ValueError("the cropped FLAIR volume has no spread of positive intensities to z-score")
    image = ((image - brain.mean()) / brain.std()).astype(np.float32)
    label = (seg[box] > 0).astype(np.uint8)
    return np.ascontiguousarray(image), np.ascontiguousarray(label), tuple(s.start for s in box)


def _case_dirs(src: Path, wanted: set[str]) -> dict[str, Path]:
    """The folder of each wanted case id found up to three levels below ``src``."""
    found: dict[str, Path] = {}
    level = [src]
    for _ in range(_SEARCH_DEPTH):
        nxt = []
        for folder in level:
            for p in sorted(folder.iterdir()):
                if not p.is_dir():
                    continue
                if p.name in wanted:
                    if p.name in found:
                        raise DataError(p, f"case {p.name!r} is also at {found[p.name]}; each case once")
                    found[p.name] = p
                else:
                    nxt.append(p)
        level = nxt
    return found


def source_label_file(case_dir: Path, case: str) -> Path:
    """The release's segmentation file of ``case``."""
    return Path(case_dir) / f"{case}_seg.nii.gz"


def _load_raw(case: str, flair_path: Path, seg_path: Path) -> Case:
    flair, seg = read_volume(flair_path, "FLAIR image"), read_volume(seg_path, "segmentation")
    check_same_grid(flair, seg, flair_path, seg_path)
    label = sitk.GetArrayFromImage(seg)
    check_label_values(label, BRATS_LABELS, seg_path)
    try:
        image, label, start = preprocess_brats(sitk.GetArrayFromImage(flair), label)
    except ValueError as exc:
        raise DataError(flair_path, str(exc)) from None
    geometry = crop_geometry(flair, start)
    return Case(case, case, image, label, geometry["spacing"], os.fspath(flair_path),
                origin=geometry["origin"], direction=geometry["direction"])


def read_brats_raw(src_dir: str | os.PathLike[str], dataset_name: str) -> tuple[Iterator[Case], Patients]:
    """Import the BraTS 2019 training release (see the module docstring).

    Returns ``(cases, patients)``: a lazy iterator of cases (train, val, test, each in list order)
    and the ids per list.

    Raises:
        DataError: up front for a missing or empty train/test list, a case in two lists, a listed
            case without its folder or without its FLAIR or segmentation file; while iterating for
            an unreadable file, FLAIR and segmentation on different grids, a segmentation value
            outside 0, 1, 2, 4, or an all-zero FLAIR.
    """
    src = Path(src_dir)
    files, cases = read_case_lists(src, dataset_name)
    dirs = _case_dirs(src, {c for role in _ROLES for c in cases[role]})
    paths: dict[str, tuple[Path, Path]] = {}
    for role in _ROLES:
        for case in cases[role]:
            if case not in dirs:
                raise DataError(files[role], f"case {case!r} is listed but no folder {case}/ is under {src} "
                                             f"(searched {_SEARCH_DEPTH} levels deep)")
            flair, seg = dirs[case] / f"{case}_{MODALITY}.nii.gz", source_label_file(dirs[case], case)
            for path, what in ((flair, "the FLAIR modality"), (seg, "the segmentation")):
                if not path.is_file():
                    raise DataError(path, f"case {case!r}: {what} is missing (a BraTS case folder holds "
                                          f"<ID>_flair.nii.gz and <ID>_seg.nii.gz, among others)")
            paths[case] = (flair, seg)

    def generate() -> Iterator[Case]:
        for role in _ROLES:
            for case in cases[role]:
                yield _load_raw(case, *paths[case])

    return generate(), {role: list(cases[role]) for role in _ROLES}


def read_brats_h5(src_dir: str | os.PathLike[str], dataset_name: str) -> tuple[Iterator[Case], Patients]:
    """Import the h5 copies (``data/<ID>.h5`` or ``<ID>.h5``; see the module docstring).

    Raises:
        DataError: up front for a missing or empty train/test list, a case in two lists or a
            listed case without its file; while iterating for an h5 file without
            ``image``/``label``, not 3-D, with mismatched shapes or a label outside 0/1.
    """
    return read_h5_copies(Path(src_dir), dataset_name, lambda src, case: [src / "data" / f"{case}.h5", src / f"{case}.h5"])
