"""Tiny datasets in nnU-Net's raw layout, in both dataset.json forms, for the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SHAPE = (8, 16, 16)  # (Z, Y, X)
SPACING = (0.8, 0.7, 2.5)  # (x, y, z), as SimpleITK gives it
ORIGIN = (-10.0, 4.0, 30.0)
LABELS = {"background": 0, "core": 1, "rim": 2}
CHANNELS = ("T2", "ADC")


def _image(array: np.ndarray, *, spacing=SPACING, origin=ORIGIN) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def case_arrays(index: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Two channels and a label map of case ``index``: a sphere (core) in a shell (rim)."""
    rng = np.random.default_rng(index)
    z, y, x = np.indices(SHAPE)
    r = np.sqrt(((z - 4) * 2.0) ** 2 + (y - 8 - index % 3) ** 2 + (x - 8) ** 2)
    label = np.where(r < 3, 1, np.where(r < 5, 2, 0)).astype(np.uint8)
    t2 = (100.0 + 50.0 * label + rng.normal(0, 5, SHAPE)).astype(np.float32)
    adc = (1000.0 - 200.0 * label + rng.normal(0, 20, SHAPE)).astype(np.float32)
    return [t2, adc], label


def write_v2(root: Path, n_train: int = 6, n_test: int = 2, splits: bool = True) -> Path:
    """nnU-Net v2: one file per channel (``_0000``, ``_0001``), labels name -> value, labelsTs."""
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train + n_test):
        sub_i, sub_l = ("imagesTr", "labelsTr") if i < n_train else ("imagesTs", "labelsTs")
        case = f"case_{i:03d}"
        channels, label = case_arrays(i)
        for c, array in enumerate(channels):
            sitk.WriteImage(_image(array), str(root / sub_i / f"{case}_{c:04d}.nii.gz"))
        sitk.WriteImage(_image(label), str(root / sub_l / f"{case}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {str(i): name for i, name in enumerate(CHANNELS)}, "labels": LABELS,
        "numTraining": n_train, "file_ending": ".nii.gz", "name": "tiny"}))
    if splits:
        ids = [f"case_{i:03d}" for i in range(n_train)]
        (root / "splits_final.json").write_text(json.dumps(
            [{"train": ids[2:], "val": ids[:2]}, {"train": ids[:-2], "val": ids[-2:]}]))
    return root


def write_v1(root: Path, n_train: int = 6, n_test: int = 2) -> Path:
    """The Decathlon's form: 4-D images (the last axis the channel), a ``training`` list, labels
    value -> name."""
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(n_train + n_test):
        sub_i, sub_l = ("imagesTr", "labelsTr") if i < n_train else ("imagesTs", "labelsTs")
        case = f"prostate_{i:02d}"
        channels, label = case_arrays(i)
        img = sitk.GetImageFromArray(np.stack(channels), isVector=False)  # (C, Z, Y, X) -> a 4-D image, channel last
        img.SetSpacing(SPACING + (1.0,))
        img.SetOrigin(ORIGIN + (0.0,))
        sitk.WriteImage(img, str(root / sub_i / f"{case}.nii.gz"))
        sitk.WriteImage(_image(label), str(root / sub_l / f"{case}.nii.gz"))
        if i < n_train:
            training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "Prostate", "modality": {str(i): name for i, name in enumerate(CHANNELS)},
        "labels": {str(v): k for k, v in LABELS.items()}, "numTraining": n_train, "training": training,
        "test": [f"./imagesTs/prostate_{i:02d}.nii.gz" for i in range(n_train, n_train + n_test)]}))
    return root
