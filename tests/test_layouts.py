"""Importers: the real ACDC / LA layouts and the synthetic ones, and how broken layouts fail."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import needs_file
from semiseg.errors import DataError
from semiseg.data.layouts import read_la_layout, read_slices_layout
from semiseg.data.store import Store, describe, write_store
from semiseg.data.synthetic import LA_FILE_NAME, LA_IMAGE_DIR, write_synthetic2d, write_synthetic3d

SHARED_DATA = Path(
    os.environ.get("SEMISEG_SHARED_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
ACDC = SHARED_DATA / "ACDC"
LA = SHARED_DATA / "LA-mini"
needs_acdc = needs_file(ACDC / "train.list",
                        f"real ACDC not found at {ACDC}; set SEMISEG_SHARED_DATA to the folder holding ACDC/")
needs_la = needs_file(LA / "train.list",
                      f"real LA-mini not found at {LA}; set SEMISEG_SHARED_DATA to the folder with LA-mini/")
ACDC_LABELS = {"background": 0, "RV": 1, "Myo": 2, "LV": 3}


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as h5:
        return h5["image"][()], h5["label"][()]


# -- real data -------------------------------------------------------------------------------------


@pytest.mark.data
@needs_acdc
def test_real_acdc() -> None:
    cases, patients = read_slices_layout(ACDC, "acdc")
    lists = {role: _lines(ACDC / f"{role}.list") for role in ("train", "val", "test")}
    for role, ids in lists.items():
        assert patients[role] == list(dict.fromkeys(c.split("_frame")[0] for c in ids))
    assert [len(patients[r]) for r in ("train", "val", "test")] == [70, 10, 20]

    slices_per_case: dict[str, int] = {}
    for slice_id in _lines(ACDC / "train_slices.list"):
        case = slice_id.rsplit("_slice_", 1)[0]
        slices_per_case[case] = slices_per_case.get(case, 0) + 1

    seen = []
    for case in cases:
        seen.append(case.case_id)
        assert case.patient == case.case_id.split("_frame")[0]
        assert case.spacing == (1.0, 1.0, 1.0)
        assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
        assert case.image.shape == case.label.shape and case.image.ndim == 3
        assert case.label.max() <= 3
        if case.case_id in slices_per_case:
            assert case.image.shape[0] == slices_per_case[case.case_id]
            assert case.source.endswith(f"{case.case_id}_slice_{{1..{case.image.shape[0]}}}.h5")
            # the distributors min-max normalised each volume before slicing it, so one case's
            # slices together span exactly [0, 1] (a single slice mostly does not)
            assert case.image.min() == 0.0 and case.image.max() == 1.0
        else:
            assert case.source == str(ACDC / "data" / f"{case.case_id}.h5")
    assert seen == lists["train"] + lists["val"] + lists["test"]
    assert sum(slices_per_case.values()) == 1312


@pytest.mark.data
@needs_acdc
def test_real_acdc_slice_index_is_z_plus_one() -> None:
    """``slice_10`` is z = 9, not the second slice (string order would put it after slice_1)."""
    cases, _ = read_slices_layout(ACDC, "acdc")
    case = next(cases)  # the first train case, patient099_frame01 with 16 slices
    assert case.image.shape[0] >= 10
    image, label = _read(ACDC / "data" / "slices" / f"{case.case_id}_slice_10.h5")
    np.testing.assert_array_equal(case.image[9], image)
    np.testing.assert_array_equal(case.label[9], label)
    # anatomy runs continuously through the rebuilt stack: neighbours differ less than
    # slices five apart
    near = np.mean([np.abs(case.image[z] - case.image[z + 1]).mean() for z in range(10)])
    far = np.mean([np.abs(case.image[z] - case.image[z + 5]).mean() for z in range(10)])
    assert near < far


@pytest.mark.data
@needs_la
def test_real_la_is_transposed_to_zyx() -> None:
    cases, patients = read_la_layout(LA, "la")
    assert patients == {
        "train": _lines(LA / "train.list"), "val": [], "test": _lines(LA / "test.list")
    }
    first = next(cases)
    raw_image, raw_label = _read(LA / LA_IMAGE_DIR / first.case_id / LA_FILE_NAME)
    assert first.image.shape == raw_image.shape[::-1] and first.image.shape[0] == 88
    np.testing.assert_array_equal(first.image, raw_image.transpose(2, 1, 0))
    np.testing.assert_array_equal(first.label, raw_label.transpose(2, 1, 0))
    assert first.image.flags.c_contiguous and first.patient == first.case_id


# -- synthetic round trips -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acdc_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic2d(
        tmp_path_factory.mktemp("layout2d") / "src", seed=5, n_train=3, n_val=1, n_test=2,
        slices=(3, 5), size=(40, 40),
    )


@pytest.fixture(scope="module")
def la_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic3d(
        tmp_path_factory.mktemp("layout3d") / "src", seed=5, n_train=2, n_test=1,
        shape=(16, 20, 24),
    )


@pytest.fixture
def broken2d(acdc_like: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic 2D layout for a test to damage."""
    return Path(shutil.copytree(acdc_like, tmp_path / "copy"))


def test_synthetic2d_round_trip(acdc_like: Path, tmp_path: Path) -> None:
    cases, patients = read_slices_layout(acdc_like, "synthetic2d")
    cases = list(cases)
    lists = {role: _lines(acdc_like / f"{role}.list") for role in ("train", "val", "test")}
    assert [c.case_id for c in cases] == lists["train"] + lists["val"] + lists["test"]
    for role in lists:
        assert patients[role] == [c[: len("patient000")] for c in lists[role][::2]]
    for case in cases:
        # train volumes were rebuilt from shuffled slice lists; they equal the written volumes
        image, label = _read(acdc_like / "data" / f"{case.case_id}.h5")
        np.testing.assert_array_equal(case.image, image)
        np.testing.assert_array_equal(case.label, label)

    store = write_store(tmp_path / "store.h5", name="synthetic2d", dims=2, labels=ACDC_LABELS,
                        cases=cases)
    descriptor = describe(store, patients=patients)
    assert descriptor["patients"] == patients
    with Store(store) as opened:
        assert list(opened.case_ids) == [c.case_id for c in cases]
        for case in cases:
            image, label = opened.read(case.case_id)
            np.testing.assert_array_equal(image, case.image)
            np.testing.assert_array_equal(label, case.label)


def test_synthetic3d_round_trip(la_like: Path, tmp_path: Path) -> None:
    cases, patients = read_la_layout(la_like, "synthetic3d")
    cases = list(cases)
    assert patients["val"] == [] and patients["train"] == _lines(la_like / "train.list")
    assert [c.case_id for c in cases] == patients["train"] + patients["test"]
    for case in cases:
        assert case.image.shape == (16, 20, 24)
        raw, _ = _read(la_like / LA_IMAGE_DIR / case.case_id / LA_FILE_NAME)
        np.testing.assert_array_equal(case.image, raw.transpose(2, 1, 0))
    store = write_store(tmp_path / "s.h5", name="synthetic3d", dims=3,
                        labels={"background": 0, "atrium": 1}, cases=cases)
    assert describe(store, patients=patients)["cases"][cases[0].case_id]["shape"] == [16, 20, 24]


def test_la_val_list_is_optional_and_used_when_present(la_like: Path, tmp_path: Path) -> None:
    src = Path(shutil.copytree(la_like, tmp_path / "copy"))
    train = _lines(src / "train.list")
    (src / "train.list").write_text(f"{train[0]}\n")
    (src / "val.list").write_text(f"{train[1]}\n")
    _, patients = read_la_layout(src, "la")
    assert patients["train"] == [train[0]] and patients["val"] == [train[1]]


# -- broken layouts --------------------------------------------------------------------------------


def test_missing_slice_file_names_list_and_case(broken2d: Path) -> None:
    case = _lines(broken2d / "train.list")[1]
    (broken2d / "data" / "slices" / f"{case}_slice_2.h5").unlink()
    with pytest.raises(DataError, match=f"case '{case}': slice file .*_slice_2.h5") as info:
        read_slices_layout(broken2d, "s")
    assert info.value.path == str(broken2d / "train_slices.list")


def test_missing_volume_names_list_and_case(broken2d: Path) -> None:
    case = _lines(broken2d / "test.list")[0]
    (broken2d / "data" / f"{case}.h5").unlink()
    with pytest.raises(DataError, match=f"case '{case}' is listed but") as info:
        read_slices_layout(broken2d, "s")
    assert info.value.path == str(broken2d / "test.list")


def test_gap_in_slice_numbering(broken2d: Path) -> None:
    slices = _lines(broken2d / "train_slices.list")
    victim = next(s for s in slices if s.endswith("_slice_2"))
    (broken2d / "train_slices.list").write_text("".join(f"{s}\n" for s in slices if s != victim))
    with pytest.raises(DataError, match=r"gaps \[2\]"):
        read_slices_layout(broken2d, "s")


def test_slices_of_unlisted_case(broken2d: Path) -> None:
    with open(broken2d / "train_slices.list", "a") as handle:
        handle.write("patient999_frame01_slice_1\n")
    with pytest.raises(DataError, match="patient999_frame01.*not in train.list"):
        read_slices_layout(broken2d, "s")


@pytest.mark.parametrize("name", ["train.list", "test.list", "val.list", "train_slices.list"])
def test_missing_list(broken2d: Path, name: str) -> None:
    (broken2d / name).unlink()
    with pytest.raises(DataError, match="list file does not exist") as info:
        read_slices_layout(broken2d, "s")
    assert info.value.path == str(broken2d / name)


def test_patient_in_two_lists(broken2d: Path) -> None:
    train = _lines(broken2d / "train.list")
    test = _lines(broken2d / "test.list")
    # frame02 of a test patient moved into train: a leak across the split
    (broken2d / "train.list").write_text("".join(f"{c}\n" for c in train + [test[1]]))
    (broken2d / "test.list").write_text("".join(f"{c}\n" for c in test[:1] + test[2:]))
    with pytest.raises(DataError, match="patient .* is also in train.list"):
        read_slices_layout(broken2d, "s")


def test_case_without_frame_suffix(broken2d: Path) -> None:
    (broken2d / "test.list").write_text("scan1\n")
    with pytest.raises(DataError, match="no '_frame' part"):
        read_slices_layout(broken2d, "s")


def _rewrite(path: Path, **arrays: np.ndarray) -> None:
    path.unlink()
    with h5py.File(path, "w") as h5:
        for key, value in arrays.items():
            h5.create_dataset(key, data=value)


def test_h5_without_label_names_the_file(broken2d: Path) -> None:
    case = _lines(broken2d / "val.list")[0]
    path = broken2d / "data" / f"{case}.h5"
    image, _ = _read(path)
    _rewrite(path, image=image)
    cases, _ = read_slices_layout(broken2d, "s")  # the layout is complete; the file is not
    with pytest.raises(DataError, match="no dataset 'label'") as info:
        list(cases)
    assert info.value.path == str(path)


def test_h5_shape_mismatch_names_the_file(broken2d: Path) -> None:
    case = _lines(broken2d / "train.list")[0]
    path = broken2d / "data" / "slices" / f"{case}_slice_1.h5"
    image, label = _read(path)
    _rewrite(path, image=image, label=label[:-1])
    cases, _ = read_slices_layout(broken2d, "s")
    with pytest.raises(DataError, match="differs from label shape") as info:
        next(cases)
    assert info.value.path == str(path)


def test_slices_of_different_shapes(broken2d: Path) -> None:
    case = _lines(broken2d / "train.list")[0]
    path = broken2d / "data" / "slices" / f"{case}_slice_2.h5"
    image, label = _read(path)
    _rewrite(path, image=image[:-2], label=label[:-2])
    with pytest.raises(DataError, match="slice shape") as info:
        next(read_slices_layout(broken2d, "s")[0])
    assert info.value.path == str(path)


def test_train_volume_disagreeing_with_its_slices(broken2d: Path) -> None:
    case = _lines(broken2d / "train.list")[0]
    path = broken2d / "data" / f"{case}.h5"
    image, label = _read(path)
    _rewrite(path, image=image[::-1], label=label[::-1])
    with pytest.raises(DataError, match="differs from the volume rebuilt") as info:
        next(read_slices_layout(broken2d, "s")[0])
    assert info.value.path == str(path)


def test_not_hdf5_names_the_file(broken2d: Path) -> None:
    case = _lines(broken2d / "test.list")[0]
    path = broken2d / "data" / f"{case}.h5"
    path.write_text("garbage")
    with pytest.raises(DataError, match="cannot read as HDF5") as info:
        list(read_slices_layout(broken2d, "s")[0])
    assert info.value.path == str(path)


def test_broken_la_layouts(la_like: Path, tmp_path: Path) -> None:
    src = Path(shutil.copytree(la_like, tmp_path / "copy"))
    case = _lines(src / "test.list")[0]
    (src / LA_IMAGE_DIR / case / LA_FILE_NAME).unlink()
    with pytest.raises(DataError, match=f"case '{case}' is listed but") as info:
        read_la_layout(src, "la")
    assert info.value.path == str(src / "test.list")
    (src / "train.list").unlink()
    with pytest.raises(DataError, match="list file does not exist"):
        read_la_layout(src, "la")
    with pytest.raises(DataError, match="source directory does not exist"):
        read_la_layout(tmp_path / "nowhere", "la")
    shutil.rmtree(src / LA_IMAGE_DIR)
    with pytest.raises(DataError, match="image directory does not exist"):
        read_la_layout(src, "la")


@pytest.mark.parametrize("damage, fragment", [
    (lambda h5: h5["label"].__setitem__(Ellipsis, 0), "the label has no atrium voxel"),
    (lambda h5: h5["image"].__setitem__(Ellipsis, 3.0), "the image is constant"),
], ids=["all-zero-label", "constant-image"])
def test_the_la_layout_refuses_what_the_raw_release_s_importer_refuses(la_like: Path, tmp_path: Path, damage,
                                                                        fragment) -> None:
    """An all-zero label passed the h5 layout (`la`) but not the raw release's (`la_raw`): both refuse it."""
    import h5py

    src = Path(shutil.copytree(la_like, tmp_path / "copy"))
    case = _lines(src / "train.list")[1]
    path = src / LA_IMAGE_DIR / case / LA_FILE_NAME
    with h5py.File(path, "r+") as h5:
        damage(h5)
    with pytest.raises(DataError, match=fragment) as info:
        list(read_la_layout(src, "la")[0])
    assert info.value.path == str(path)
