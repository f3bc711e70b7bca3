"""A run's predictions next to their images, for a viewer: ``semiseg export``.

The infer stage writes ``predictions/<case>.nii.gz`` only (the evaluate stage reads every NIfTI
there). To look at them, ``export_run`` writes, into one folder::

    <case>_image.nii.gz   the image as the store holds it (float32; intensities as preprocessed,
                          e.g. min-max scaled to [0, 1] for ACDC); a store of several channels:
                          <case>_image_0000.nii.gz, _0001, ... one per channel
    <case>_gt.nii.gz      its ground truth (uint8)
    <case>_pred.nii.gz    the run's prediction (uint8)
    labels.txt            ITK-SNAP label description: value, colour, name of every class

all three with the geometry of the source image (spacing, origin, direction), so they overlay in
any viewer. With ``source_dir`` (a fetched release whose reader crops or resamples its scans:
:data:`semiseg.data.source_grids.SOURCE_GRIDS`), also ``<case>_pred_source.nii.gz``: the prediction
put back on the voxel grid of the release's own label file (nearest neighbour, 0 outside the
stored box), to compare with that file directly. In ITK-SNAP: File > Open Main Image ``<case>_image.nii.gz``, Segmentation > Open
Segmentation ``<case>_pred.nii.gz`` (or ``_gt``), Segmentation > Import Label Descriptions
``labels.txt``. In 3D Slicer: load the image, and the two label maps as segmentations.

``export_nnunet`` writes one split of a dataset as an nnU-Net v2 raw dataset (the layout
:mod:`semiseg.data.nnunet` reads), so nnU-Net can be trained on exactly the labeled cases of a
table row::

    imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz   the split's labeled and val cases
    imagesTs/<case>_0000.nii.gz, labelsTs/<case>.nii.gz   its test cases (nnU-Net reads no labelsTs)
    dataset.json        channel_names {"0": "image"}, labels, numTraining, file_ending .nii.gz
    splits_final.json   one fold: train = the labeled cases, val = the val cases

A store of several channels gives each case ``_0000``, ``_0001``, ... in the store's order, and
``channel_names`` ``{"0": "channel_0", "1": "channel_1", ...}`` (the store keeps no names).

Images are the store's (as preprocessed), on the store's geometry. The split's unlabeled cases
are left out: an nnU-Net trained on this folder is the labeled-only baseline of that ratio.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from semiseg.colours import LABEL_COLOURS
from semiseg.data.store import Store, channels_first
from semiseg.errors import DataError
from semiseg.io import atomic_dir, ensure_free

__all__ = ["LABEL_COLOURS", "LEGEND_NAME", "export_nnunet", "export_run", "itksnap_labels", "write_itksnap_labels",
           "write_label_nifti", "write_nifti"]

#: File name of the label description written beside predictions and exports.
LEGEND_NAME = "labels.txt"



def itksnap_labels(labels: Mapping[str, int]) -> str:
    """The ITK-SNAP label description file of ``labels`` (``{name: value}``, value 0 the background).

    One line per value: ``IDX R G B A VIS MSH "LABEL"``: colour 0..255, opacity A 0..1, visible
    in slices (VIS) and in 3D (MSH). The background is transparent and hidden.
    """
    lines = ["# ITK-SNAP Label Description File (written by semiseg)",
             "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL"]
    for name, value in sorted(labels.items(), key=lambda kv: kv[1]):
        if '"' in name:
            raise ValueError(f"label name {name!r} contains a double quote, which the file format cannot hold")
        if value == 0:
            rgb, alpha, vis = (0, 0, 0), 0.0, 0
        else:
            hexcode = LABEL_COLOURS[(value - 1) % len(LABEL_COLOURS)]
            rgb, alpha, vis = tuple(int(hexcode[i:i + 2], 16) for i in (1, 3, 5)), 1.0, 1
        lines.append(f"{value:5d} {rgb[0]:5d} {rgb[1]:4d} {rgb[2]:4d} {alpha:6.2f} {vis:3d} {vis:3d}  \"{name}\"")
    return "\n".join(lines) + "\n"


def write_itksnap_labels(labels: Mapping[str, int], path: Path) -> Path:
    Path(path).write_text(itksnap_labels(labels))
    return Path(path)


def write_nifti(array: np.ndarray, geometry: dict, path: Path) -> None:
    """Write a (Z, Y, X) array placed by ``geometry`` (:meth:`Store.geometry`: SimpleITK's
    ``spacing`` and ``origin`` as (x, y, z), ``direction`` row-major).

    SimpleITK writes a truncated or empty file without an error when the disk fills up, so the
    space is checked first and the file is read back."""
    ensure_free(path, array.nbytes)
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in geometry["spacing"]))
    img.SetOrigin(tuple(float(s) for s in geometry["origin"]))
    img.SetDirection(tuple(float(s) for s in geometry["direction"]))
    sitk.WriteImage(img, str(path), useCompression=True)
    try:
        if str(path).endswith(".gz"):
            with gzip.open(path, "rb") as fh:  # a truncated stream fails its length and CRC check
                while fh.read(1 << 20):
                    pass
        same = np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), array)
    except (RuntimeError, OSError, EOFError):
        same = False
    if not same:
        ensure_free(path, array.nbytes)  # the usual cause
        raise OSError(f"{path}: the image written does not read back the same; is the disk failing?")


def write_label_nifti(label: np.ndarray, geometry: dict, path: Path) -> None:
    """Write a (Z, Y, X) label map (uint8) placed by ``geometry``, as :func:`write_nifti`."""
    write_nifti(label.astype(np.uint8), geometry, path)


def export_run(run_dir: Path, store_path: Path, out_dir: Path, cases: list[str] | None = None,
               source_dir: Path | None = None) -> list[str]:
    """Write image, ground truth and prediction of ``cases`` (default: every prediction of the
    run) and ``labels.txt`` into ``out_dir``; returns the cases. ``out_dir`` is written whole
    (a temporary folder beside it, then a rename) and replaces what was there."""

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    pred_dir = run_dir / "predictions"
    available = sorted(p.name[: -len(".nii.gz")] for p in pred_dir.glob("*.nii.gz")) if pred_dir.is_dir() else []
    if not available:
        raise DataError(pred_dir, "no predictions (*.nii.gz) to export; build the run's predictions first "
                                  "(snakemake .../predictions, or semiseg infer)")
    chosen = list(cases) if cases else available
    missing = [c for c in chosen if c not in available]
    if missing:
        raise DataError(pred_dir, f"no prediction of {missing}; the run predicted {available}")
    if source_dir is not None:
        from semiseg.data.source_grids import source_grid_files

        sources = source_grid_files(Path(source_dir), chosen)
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with Store(store_path) as store:
            write_itksnap_labels(store.labels, tmp / LEGEND_NAME)
            for cid in chosen:
                if cid not in store:
                    raise DataError(pred_dir / f"{cid}.nii.gz", f"case {cid!r} is not in the store {store_path}")
                image, label = store.read(cid)
                geometry = store.geometry(cid)
                pred = sitk.ReadImage(os.fspath(pred_dir / f"{cid}.nii.gz"))
                if sitk.GetArrayViewFromImage(pred).shape != label.shape:
                    raise DataError(pred_dir / f"{cid}.nii.gz", f"prediction shape "
                                    f"{sitk.GetArrayViewFromImage(pred).shape} differs from the image's {label.shape}")
                if image.ndim == 3:
                    write_nifti(image, geometry, tmp / f"{cid}_image.nii.gz")
                for c, channel in enumerate(image if image.ndim == 4 else []):
                    write_nifti(channel, geometry, tmp / f"{cid}_image_{c:04d}.nii.gz")
                write_nifti(label.astype(np.uint8), geometry, tmp / f"{cid}_gt.nii.gz")
                # the prediction's own array, placed like the image (it already is, when infer wrote it)
                write_nifti(sitk.GetArrayFromImage(pred).astype(np.uint8), geometry, tmp / f"{cid}_pred.nii.gz")
                if source_dir is not None:
                    from semiseg.data.volumes import read_volume, to_source_grid

                    back = to_source_grid(sitk.GetArrayFromImage(pred), geometry, read_volume(sources[cid], "label"))
                    write_nifti(sitk.GetArrayFromImage(back), {"spacing": back.GetSpacing(), "origin": back.GetOrigin(),
                                "direction": back.GetDirection()}, tmp / f"{cid}_pred_source.nii.gz")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return chosen


def export_nnunet(store_path: Path, split_path: Path, out_dir: Path) -> dict[str, list[str]]:
    """Write the split at ``split_path`` (``splits/<dataset>/<ratio>.json``) of the store as an nnU-Net
    v2 raw dataset in ``out_dir`` (see the module docstring); returns the case ids per role
    (``labeled``, ``val``, ``test``). ``out_dir`` is written whole and replaces what was there."""
    from semiseg.data.nnunet import DATASET_JSON, SPLITS_FINAL

    split = json.loads(Path(split_path).read_text())
    roles = {role: list(split["cases"][role]) for role in ("labeled", "val", "test")}
    with Store(store_path) as store, atomic_dir(out_dir) as tmp:
        for role, ids in roles.items():
            images, labels = ("imagesTs", "labelsTs") if role == "test" else ("imagesTr", "labelsTr")
            (tmp / images).mkdir(exist_ok=True)
            (tmp / labels).mkdir(exist_ok=True)
            for cid in ids:
                if cid not in store:
                    raise DataError(split_path, f"case {cid!r} ({role}) is not in the store {store_path}")
                image, label = store.read(cid)
                for c, channel in enumerate(channels_first(image)):
                    write_nifti(channel, store.geometry(cid), tmp / images / f"{cid}_{c:04d}.nii.gz")
                write_label_nifti(label, store.geometry(cid), tmp / labels / f"{cid}.nii.gz")
        (tmp / DATASET_JSON).write_text(json.dumps({
            "name": f"{split['dataset']} {split['ratio']}% labeled",
            "description": f"semiseg split {split_path}: the labeled and val cases train, the test cases in imagesTs",
            "channel_names": ({"0": "image"} if store.channels == 1 else
                              {str(c): f"channel_{c}" for c in range(store.channels)}), "labels": store.labels,
            "numTraining": len(roles["labeled"]) + len(roles["val"]), "file_ending": ".nii.gz"}, indent=1))
        (tmp / SPLITS_FINAL).write_text(json.dumps([{"train": roles["labeled"], "val": roles["val"]}], indent=1))
    return roles
