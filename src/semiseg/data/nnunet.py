"""Importer of a dataset in nnU-Net's raw layout (layout ``nnunet``), in either form of its
``dataset.json``, into :class:`~semiseg.data.store.Case`\\ s: a user's own data needs a
catalogue entry, no code.

The layout (nnU-Net v2's ``nnUNet_raw/DatasetXXX_Name``, the Medical Segmentation Decathlon's
extended)::

    dataset.json
    imagesTr/   training images          labelsTr/  their label maps
    imagesTs/   test images (optional)   labelsTs/  their label maps (optional; not nnU-Net's)
    splits_final.json                    (optional; nnU-Net writes it in nnUNet_preprocessed)

``dataset.json``, nnU-Net v2 form: ``channel_names`` (``{"0": "T2", "1": "ADC"}``), ``labels``
(name -> value, ``{"background": 0, "prostate": 1}``), ``numTraining`` and ``file_ending``
(``".nii.gz"``); the image of channel ``i`` of case ``c`` is ``imagesTr/c_{i:04d}<file_ending>``,
its label ``labelsTr/c<file_ending>``. Decathlon (v1) form: ``modality`` (``{"0": "T2"}``),
``labels`` (value as a string -> name), ``training`` (a list of ``{"image", "label"}`` paths
relative to the root), optional ``test`` (image paths); a multi-channel image is one 4-D NIfTI
whose last axis is the channel. A ``dataset.json`` with ``channel_names`` is read as v2, one
with ``modality`` as v1.

What comes from the files: the classes (``labels``; the catalogue's ``labels`` must be the same
map), the channels, and each case's geometry (spacing, origin, direction). The store holds the
channels the source's ``params.channel`` chooses: one (a name of ``channel_names`` / ``modality``,
or its index), or a list of them, in the order the networks take them as input channels (a list
of one is the same as that one). Every channel file of a case is read and must lie on the
label's voxel grid. Intensities are z-scored per volume and channel over all voxels
(``params.normalize: zscore``) or kept as the files hold them (``none``). Each case is its own
patient; case ids are the label files' names without the file ending.

The split (``params.split``), one of:

- ``{seed: s, val: v, test: t}``: the training cases (sorted by id) shuffled with seed ``s``; the
  first ``t`` are test cases, the next ``v`` validation cases, the rest train, in shuffled order
  (the labeled ones are the first ``n`` of it). With ``t = 0`` the test cases are the images of
  ``imagesTs/`` that have a label in ``labelsTs/``.
- ``{fold: k}``: fold ``k`` of ``splits_final.json`` (at the layout's root): its ``train`` and
  ``val`` lists, in that file's order; the test cases are those of ``labelsTs/``.

Every file the ``dataset.json`` names and every file the folder holds is checked up front: a
missing channel file, a label without its image, an image without its label, a ``numTraining``
that is not the number of labels, a ``dataset.json`` or ``splits_final.json`` that names a case
the folder lacks each raise :class:`DataError` naming the file at fault. While iterating, a label
value outside ``labels`` or a channel or label off the grid raise naming that file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from semiseg.data.layouts import Patients
from semiseg.data.store import Case
from semiseg.data.volumes import check_label_values, check_same_grid
from semiseg.errors import DataError

__all__ = ["DATASET_JSON", "SPLITS_FINAL", "NnunetCase", "read_dataset_json", "read_nnunet_raw"]

DATASET_JSON = "dataset.json"
SPLITS_FINAL = "splits_final.json"


@dataclass(frozen=True)
class NnunetCase:
    """The files of one case: its channel images (v2: one file each; v1: one 4-D file) and label."""

    case_id: str
    images: tuple[Path, ...]
    label: Path


@dataclass(frozen=True)
class DatasetJson:
    """What a ``dataset.json`` says, in one form whichever it was written in."""

    path: Path
    version: int
    channels: dict[int, str]
    labels: dict[str, int]
    file_ending: str
    training: list[NnunetCase]
    test: list[NnunetCase]


def _read_json(path: Path, missing: str = "does not exist"):
    if not path.is_file():
        raise DataError(path, missing)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(path, f"is not valid JSON ({exc})") from None


def _load_json(path: Path) -> dict:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataError(path, "must hold a JSON object")
    return data


def _int_keys(mapping: object, path: Path, field: str) -> dict[int, str]:
    """``{"0": "T2", "1": "ADC"}`` -> ``{0: "T2", 1: "ADC"}``, keys exactly ``0..n-1``."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise DataError(path, f"{field!r} must be a non-empty object")
    try:
        out = {int(k): str(v) for k, v in mapping.items()}
    except ValueError:
        raise DataError(path, f"{field!r} keys must be integers, got {sorted(mapping)}") from None
    if sorted(out) != list(range(len(out))):
        raise DataError(path, f"{field!r} keys must be 0..{len(out) - 1}, got {sorted(out)}")
    return out


def _labels(raw: object, path: Path, version: int) -> dict[str, int]:
    if version == 1:
        by_value = _int_keys(raw, path, "labels")
        labels = {name: value for value, name in sorted(by_value.items())}
    else:
        if not isinstance(raw, Mapping) or not raw:
            raise DataError(path, "'labels' must be a non-empty object of name: value")
        labels = {}
        for name, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise DataError(path, f"label {name!r} is {value!r}; region-based labels (lists) are not "
                                      "supported, each label must be one integer")
            labels[str(name)] = value
    if sorted(labels.values()) != list(range(len(labels))):
        raise DataError(path, f"label values must be 0..{len(labels) - 1}, got {labels}")
    return labels


def _label_cases(folder: Path, ending: str) -> dict[str, Path]:
    return {p.name[: -len(ending)]: p for p in sorted(folder.glob(f"*{ending}")) if p.is_file()}


def _v2_cases(root: Path, sub: str, labels_sub: str, channels: dict[int, str], ending: str,
              json_path: Path) -> list[NnunetCase]:
    """The cases of ``labels_sub`` with their channel files in ``sub``; every image file of ``sub``
    must belong to one of them."""
    label_files = _label_cases(root / labels_sub, ending)
    cases = []
    expected: set[Path] = set()
    for case_id, label in label_files.items():
        images = tuple(root / sub / f"{case_id}_{i:04d}{ending}" for i in sorted(channels))
        for image in images:
            if not image.is_file():
                raise DataError(image, f"missing: case {case_id!r} has a label ({label.name}) but not this channel "
                                       f"file ({len(channels)} channels in {json_path.name})")
        expected.update(images)
        cases.append(NnunetCase(case_id, images, label))
    if (root / sub).is_dir():
        for image in sorted((root / sub).glob(f"*{ending}")):
            if image not in expected and sub == "imagesTr":
                raise DataError(image, f"has no label in {labels_sub}/ (or is not <case>_<4-digit channel>{ending} "
                                       f"of a channel of {json_path.name})")
    return cases


def _v1_entry(root: Path, entry: object, json_path: Path, index: int) -> NnunetCase:
    if not isinstance(entry, Mapping) or not {"image", "label"} <= set(entry):
        raise DataError(json_path, f"training[{index}] must be an object with 'image' and 'label'")
    image, label = root / str(entry["image"]), root / str(entry["label"])
    for path in (image, label):
        if not path.is_file():
            raise DataError(path, f"missing: named by {json_path.name} (training[{index}])")
    return NnunetCase(label.name[: -len(".nii.gz")] if label.name.endswith(".nii.gz") else label.stem,
                      (image,), label)


def read_dataset_json(root: str | os.PathLike[str]) -> DatasetJson:
    """Read and check ``root/dataset.json`` (either form) against the folder (see the module docstring)."""
    root = Path(root)
    path = root / DATASET_JSON
    data = _load_json(path)
    if "channel_names" in data:
        version, channels = 2, _int_keys(data["channel_names"], path, "channel_names")
        ending = data.get("file_ending")
        if not isinstance(ending, str) or not ending.startswith("."):
            raise DataError(path, f"'file_ending' must be a file ending such as '.nii.gz', got {ending!r}")
    elif "modality" in data:
        version, channels, ending = 1, _int_keys(data["modality"], path, "modality"), ".nii.gz"
    else:
        raise DataError(path, "has neither 'channel_names' (nnU-Net v2) nor 'modality' (Decathlon); cannot tell "
                              "its form")
    labels = _labels(data.get("labels"), path, version)
    if not (root / "labelsTr").is_dir():
        raise DataError(root / "labelsTr", "missing: the layout's training labels folder")
    if version == 2:
        training = _v2_cases(root, "imagesTr", "labelsTr", channels, ending, path)
        test = _v2_cases(root, "imagesTs", "labelsTs", channels, ending, path)
    else:
        if not isinstance(data.get("training"), list):
            raise DataError(path, "'training' must be a list of {image, label} (Decathlon form)")
        training = [_v1_entry(root, e, path, i) for i, e in enumerate(data["training"])]
        listed = {c.label.resolve() for c in training}
        for label in _label_cases(root / "labelsTr", ending).values():
            if label.resolve() not in listed:
                raise DataError(label, f"is not in the 'training' list of {path.name}")
        test = [NnunetCase(case_id, (root / "imagesTs" / f"{case_id}{ending}",), label)
                for case_id, label in _label_cases(root / "labelsTs", ending).items()]
        for case in test:
            if not case.images[0].is_file():
                raise DataError(case.images[0], f"missing: the image of {case.label}")
    if not training:
        raise DataError(root / "labelsTr", f"holds no label files (*{ending})")
    n = data.get("numTraining")
    if n is not None and n != len(training):
        raise DataError(path, f"numTraining is {n} but the folder has {len(training)} training cases")
    ids = [c.case_id for c in training + test]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise DataError(path, f"case ids {twice} are both training and test cases")
    return DatasetJson(path, version, channels, labels, ending, training, test)


def _split(meta: DatasetJson, root: Path, split: Mapping) -> dict[str, list[str]]:
    """Case ids per role (see the module docstring)."""
    ids = sorted(c.case_id for c in meta.training)
    test_ids = [c.case_id for c in meta.test]
    if "fold" in split:
        path = root / SPLITS_FINAL
        folds = _read_json(path, "missing: the split names a fold of splits_final.json")
        k = split["fold"]
        if not isinstance(folds, list) or not 0 <= k < len(folds) or not isinstance(folds[k], Mapping):
            raise DataError(path, f"has no fold {k} (a list of {{train, val}} objects expected)")
        roles = {"train": list(folds[k].get("train", [])), "val": list(folds[k].get("val", []))}
        for role, members in roles.items():
            unknown = sorted(set(members) - set(ids))
            if unknown:
                raise DataError(path, f"fold {k} {role} names cases the folder lacks in labelsTr/: {unknown}")
        both = sorted(set(roles["train"]) & set(roles["val"]))
        if both:
            raise DataError(path, f"fold {k}: cases {both} are in both train and val")
        n_test = 0
    else:
        order = [ids[i] for i in np.random.default_rng(split["seed"]).permutation(len(ids))]
        n_test, n_val = split.get("test", 0), split.get("val", 0)
        if n_test + n_val >= len(order):
            raise DataError(meta.path, f"the split takes {n_test} test and {n_val} val of its {len(order)} "
                                       "training cases and leaves none to train on")
        roles = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    if not n_test:
        if not test_ids:
            raise DataError(root / "labelsTs", "no test cases: the split draws none from imagesTr and there are "
                                               "no labelled test images (imagesTs/ + labelsTs/)")
        roles["test"] = test_ids
    return {role: roles.get(role, []) for role in ("train", "val", "test")}


def _channel_indices(meta: DatasetJson, channel: str | int | Sequence[str | int], dataset_name: str) -> list[int]:
    """The indices of ``params.channel``: one name or index, or a list of them (none twice)."""
    chosen = list(channel) if isinstance(channel, Sequence) and not isinstance(channel, str) else [channel]
    names = {name: i for i, name in meta.channels.items()}
    indices = []
    for c in chosen:
        if isinstance(c, int) and not isinstance(c, bool) and c in meta.channels:
            indices.append(c)
        elif isinstance(c, str) and c in names:
            indices.append(names[c])
        else:
            raise DataError(meta.path, f"has no channel {c!r} (the {dataset_name} entry's params.channel); "
                                       f"its channels are {meta.channels}")
    if not indices or len(set(indices)) < len(indices):
        raise DataError(meta.path, f"the {dataset_name} entry's params.channel {chosen} must name one or more of its "
                                   f"channels {meta.channels}, each once")
    return indices


def _read(path: Path, what: str) -> sitk.Image:
    try:
        return sitk.ReadImage(os.fspath(path))
    except RuntimeError as exc:
        raise DataError(path, f"cannot read the {what} ({str(exc).strip().splitlines()[-1]})") from None


def _load(case: NnunetCase, meta: DatasetJson, channels: list[int], normalize: str) -> Case:
    label_img = _read(case.label, "label")
    if label_img.GetDimension() != 3:
        raise DataError(case.label, f"the label must be a 3-D volume, got {label_img.GetDimension()}-D")
    if len(case.images) > 1:  # v2: one file per channel
        volumes = [_read(p, "image") for p in case.images]
    else:  # v1: one 3-D file (one channel) or one 4-D file (the last axis the channel)
        img = _read(case.images[0], "image")
        if img.GetDimension() == 4:
            n = img.GetSize()[3]
            volumes = [img[:, :, :, i] for i in range(n)]
        else:  # a 3-D file of vectors holds its channels as components
            n = img.GetNumberOfComponentsPerPixel()
            volumes = [sitk.VectorIndexSelectionCast(img, i) for i in range(n)] if n > 1 else [img]
        if n != len(meta.channels):
            raise DataError(case.images[0], f"has {n} channel(s) but {meta.path.name} names {len(meta.channels)}")
    paths = case.images if len(case.images) == len(volumes) else case.images * len(volumes)
    for path, vol in zip(paths, volumes):
        if vol.GetDimension() != 3 or vol.GetNumberOfComponentsPerPixel() != 1:
            raise DataError(path, f"the image must be a 3-D single-channel volume, got {vol.GetDimension()}-D")
        if vol is not volumes[0]:  # a channel off the first channel's grid is named
            check_same_grid(volumes[0], vol, paths[0], path)
    check_same_grid(volumes[0], label_img, paths[0], case.label)
    label = sitk.GetArrayFromImage(label_img)
    check_label_values(label, meta.labels.values(), case.label)
    images = []
    for c in channels:
        image = sitk.GetArrayFromImage(volumes[c]).astype(np.float32)
        if normalize == "zscore":
            image = (image - image.mean()) / max(float(image.std()), 1e-8)
        images.append(image)
    # one channel stays (Z, Y, X), as the store has always held it
    return Case(case.case_id, case.case_id, images[0] if len(images) == 1 else np.stack(images),
                label.astype(np.uint8), tuple(float(s) for s in reversed(label_img.GetSpacing())),
                os.fspath(case.images[min(channels[0], len(case.images) - 1)]),
                origin=tuple(label_img.GetOrigin()), direction=tuple(label_img.GetDirection()))


def read_nnunet_raw(src_dir: str | os.PathLike[str], dataset_name: str, *, split: Mapping,
                    channel: str | int | Sequence[str | int] = 0, normalize: str = "zscore",
                    labels: Mapping[str, int] | None = None) -> tuple[Iterator[Case], Patients]:
    """Import an nnU-Net raw dataset (see the module docstring).

    Args:
        src_dir: the dataset's root (holding ``dataset.json``).
        dataset_name: the dataset's name, used in error messages.
        split: ``{seed, val, test}`` or ``{fold}`` (the source's ``params.split``).
        channel: the channel the store holds, a name or an index of the ``dataset.json``'s, or a
            list of them: the channels it holds, ``(C, Z, Y, X)``, in that order.
        normalize: ``zscore`` (per volume) or ``none``.
        labels: the catalogue's labels; must equal the ``dataset.json``'s when given.

    Raises:
        DataError: naming the file at fault (see the module docstring).
    """
    root = Path(src_dir)
    if not root.is_dir():
        raise DataError(root, f"{dataset_name}: source directory does not exist")
    meta = read_dataset_json(root)
    if labels is not None and dict(labels) != meta.labels:
        raise DataError(meta.path, f"{dataset_name}: its labels {meta.labels} differ from the catalogue's "
                                   f"{dict(labels)}; copy them into the dataset's entry")
    indices = _channel_indices(meta, channel, dataset_name)
    roles = _split(meta, root, split)
    by_id = {c.case_id: c for c in meta.training + meta.test}

    def generate() -> Iterator[Case]:
        for role in ("train", "val", "test"):
            for case_id in roles[role]:
                yield _load(by_id[case_id], meta, indices, normalize)

    return generate(), roles
