"""Splits: the literature's ACDC labeled-slice counts, patient disjointness, clear refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import pytest

from conftest import needs_file
from semiseg.data.layouts import read_la_layout, read_slices_layout
from semiseg.data.splits import SPLIT_ROLES, make_split
from semiseg.data.store import describe, write_store
from semiseg.data.synthetic import write_synthetic2d, write_synthetic3d

SHARED_DATA = Path(
    os.environ.get("SEMISEG_SHARED_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
ACDC = SHARED_DATA / "ACDC"
needs_acdc = needs_file(ACDC / "train.list",
                        f"real ACDC not found at {ACDC}; set SEMISEG_SHARED_DATA to the folder holding ACDC/")


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def acdc_descriptor() -> dict:
    """A descriptor of the real ACDC, its shapes taken from the files on disk.

    A train case's depth is the number of its slice files in ``data/slices`` (counted from the
    directory, independently of the importer and of ``train_slices.list``); val/test shapes come
    from the volumes' metadata. Writing a real store just for this would take ~10 s; ``describe``
    itself is exercised on synthetic data below, and the importer's rebuilt depths are checked
    against ``train_slices.list`` in test_layouts.py.
    """
    _, patients = read_slices_layout(ACDC, "acdc")  # validates the layout, reads no voxels
    depth: dict[str, int] = {}
    slice_shape: dict[str, list[int]] = {}
    for path in (ACDC / "data" / "slices").glob("*_slice_*.h5"):
        case = path.stem.rsplit("_slice_", 1)[0]
        depth[case] = depth.get(case, 0) + 1
        if case not in slice_shape:
            with h5py.File(path, "r") as h5:
                slice_shape[case] = list(h5["label"].shape)
    cases = {case: {"patient": case.split("_frame")[0], "shape": [n, *slice_shape[case]]}
             for case, n in depth.items()}
    for role in ("val", "test"):
        for case in _lines(ACDC / f"{role}.list"):
            with h5py.File(ACDC / "data" / f"{case}.h5", "r") as h5:
                cases[case] = {"patient": case.split("_frame")[0], "shape": list(h5["label"].shape)}
    return {"name": "acdc", "patients": patients, "cases": cases}


@pytest.mark.data
@needs_acdc
@pytest.mark.parametrize("patients, slices", [(3, 68), (7, 136), (14, 256), (70, 1312)])
def test_acdc_labeled_slice_counts(acdc_descriptor: dict, patients: int, slices: int) -> None:
    split = make_split(acdc_descriptor, ratio=10, labeled_patients=patients)
    labeled = sum(acdc_descriptor["cases"][c]["shape"][0] for c in split["cases"]["labeled"])
    assert labeled == slices
    assert len(split["cases"]["labeled"]) == 2 * patients


@pytest.mark.data
@needs_acdc
def test_acdc_seven_patient_split(acdc_descriptor: dict) -> None:
    split = make_split(acdc_descriptor, ratio=10, labeled_patients=7)
    train_list = _lines(ACDC / "train.list")
    train_patients = list(dict.fromkeys(c.split("_frame")[0] for c in train_list))
    assert split["labeled"] == train_patients[:7]
    assert split["labeled"][:3] == ["patient099", "patient038", "patient050"]
    assert split["unlabeled"] == train_patients[7:]
    assert split["cases"]["labeled"] == train_list[:14]
    for role in ("val", "test"):
        listed = _lines(ACDC / f"{role}.list")
        assert split[role] == list(dict.fromkeys(c.split("_frame")[0] for c in listed))
        assert split["cases"][role] == listed  # ACDC lists frame01 before frame02
    assert len(split["val"]) == 10 and len(split["test"]) == 20


# -- synthetic descriptors -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def descriptor2d(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("split2d")
    src = write_synthetic2d(root / "src", seed=2, n_train=5, n_val=2, n_test=2, slices=(3, 4),
                            size=(40, 40))
    cases, patients = read_slices_layout(src, "synthetic2d")
    store = write_store(root / "store.h5", name="synthetic2d", dims=2,
                        labels={"background": 0, "RV": 1, "Myo": 2, "LV": 3}, cases=cases)
    return describe(store, patients=patients)


def test_split_contract(descriptor2d: dict) -> None:
    split = make_split(descriptor2d, ratio=40, labeled_patients=2)
    assert list(split) == ["dataset", "ratio", "labeled_patients", *SPLIT_ROLES, "cases"]
    assert (split["dataset"], split["ratio"], split["labeled_patients"]) == ("synthetic2d", 40, 2)
    train = descriptor2d["patients"]["train"]
    assert split["labeled"] == train[:2] and split["unlabeled"] == train[2:]
    assert split["val"] == descriptor2d["patients"]["val"]
    assert split["test"] == descriptor2d["patients"]["test"]
    for role in SPLIT_ROLES:
        expected = [f"{p}_frame0{f}" for p in split[role] for f in (1, 2)]
        assert split["cases"][role] == expected
    all_cases = sum(split["cases"].values(), [])
    assert sorted(all_cases) == sorted(descriptor2d["cases"])
    assert json.loads(json.dumps(split)) == split


def test_split_does_not_depend_on_case_order(descriptor2d: dict) -> None:
    shuffled = dict(descriptor2d, cases=dict(reversed(list(descriptor2d["cases"].items()))))
    assert make_split(shuffled, 40, 2) == make_split(descriptor2d, 40, 2)


def test_fully_labeled_split_has_no_unlabeled(descriptor2d: dict) -> None:
    split = make_split(descriptor2d, ratio=100, labeled_patients=5)
    assert split["unlabeled"] == [] and split["cases"]["unlabeled"] == []


@pytest.mark.parametrize(
    "ratio, n, message",
    [
        (10, 0, r"labeled_patients must be an integer in 1\.\.5"),
        (10, 6, r"labeled_patients must be an integer in 1\.\.5"),
        (10, True, "labeled_patients"),
        (10, 2.0, "labeled_patients"),
        (0, 2, "ratio"),
        (101, 2, "ratio"),
    ],
)
def test_out_of_range_arguments(descriptor2d: dict, ratio, n, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_split(descriptor2d, ratio, n)


def test_inconsistent_descriptors(descriptor2d: dict) -> None:
    patients = descriptor2d["patients"]
    no_test = dict(descriptor2d, patients=dict(patients, test=[]))
    with pytest.raises(ValueError, match="test list is empty"):
        make_split(no_test, 10, 1)
    leak = dict(descriptor2d, patients=dict(patients, val=patients["val"] + patients["train"][-1:]))
    with pytest.raises(ValueError, match="in both 'unlabeled' and 'val'"):
        make_split(leak, 10, 1)
    ghost = dict(descriptor2d, patients=dict(patients, test=patients["test"] + ["patient999"]))
    with pytest.raises(ValueError, match="'patient999' .* has no cases"):
        make_split(ghost, 10, 1)
    with pytest.raises(ValueError, match="no 'cases'"):
        make_split({k: v for k, v in descriptor2d.items() if k != "cases"}, 10, 1)
    with pytest.raises(ValueError, match="'train', 'val' and 'test'"):
        make_split(dict(descriptor2d, patients={"train": patients["train"]}), 10, 1)


def test_empty_val_is_allowed_when_the_dataset_has_none(tmp_path: Path) -> None:
    src = write_synthetic3d(tmp_path / "src", seed=0, n_train=3, n_test=1, shape=(16, 16, 16))
    cases, patients = read_la_layout(src, "synthetic3d")
    store = write_store(tmp_path / "s.h5", name="synthetic3d", dims=3,
                        labels={"background": 0, "atrium": 1}, cases=cases)
    split = make_split(describe(store, patients=patients), ratio=34, labeled_patients=1)
    assert split["val"] == [] and split["cases"]["val"] == []
    assert split["labeled"] == patients["train"][:1] == split["cases"]["labeled"]
    assert len(split["unlabeled"]) == 2 and split["test"] == patients["test"]
