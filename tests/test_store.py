"""The case store: round trip, validation with DataErrors that name the file, atomic writes."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from semiseg.errors import DataError
from semiseg.data.store import Case, Store, describe, sha256_file, write_store

LABELS = {"background": 0, "RV": 1, "Myo": 2, "LV": 3}


def _case(case_id: str, patient: str, shape=(3, 8, 10), seed: int = 0, **overrides) -> Case:
    rng = np.random.default_rng(seed)
    fields = dict(
        case_id=case_id,
        patient=patient,
        image=rng.random(shape, dtype=np.float32),
        label=rng.integers(0, 4, shape).astype(np.uint8),
        spacing=(2.5, 1.25, 1.25),
        source=f"/src/{case_id}.h5",
    )
    fields.update(overrides)
    return Case(**fields)


def _cases() -> list[Case]:
    # deliberately not in alphabetical order: the store keeps the order it is given
    return [
        _case("p2_frame01", "p2", seed=1),
        _case("p2_frame02", "p2", seed=2),
        _case("p1_frame01", "p1", shape=(5, 6, 7), seed=3),
        _case("p3_frame01", "p3", seed=4),
    ]


def _write(path: Path, cases=None, **kwargs) -> Path:
    args = dict(name="toy", dims=2, labels=LABELS, cases=_cases() if cases is None else cases)
    args.update(kwargs)
    return write_store(path, **args)


def test_data_error_names_file_and_problem() -> None:
    error = DataError(Path("/a/b.h5"), "no dataset 'label'")
    assert str(error) == "/a/b.h5: no dataset 'label'"
    assert (error.path, error.problem) == ("/a/b.h5", "no dataset 'label'")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_round_trip(tmp_path: Path) -> None:
    path = _write(tmp_path / "store.h5")
    with Store(path) as store:
        assert (store.name, store.dims, store.num_classes) == ("toy", 2, 4)
        assert store.labels == LABELS
        assert store.case_ids == ("p2_frame01", "p2_frame02", "p1_frame01", "p3_frame01")
        assert len(store) == 4 and "p1_frame01" in store and "nope" not in store
        for case in _cases():
            image, label = store.read(case.case_id)
            assert image.dtype == np.float32 and label.dtype == np.uint8
            np.testing.assert_array_equal(image, case.image)
            np.testing.assert_array_equal(label, case.label)
            np.testing.assert_array_equal(store.read_image(case.case_id), case.image)
            assert store.patient(case.case_id) == case.patient
            assert store.spacing(case.case_id) == (2.5, 1.25, 1.25)
            assert store.shape(case.case_id) == case.image.shape


def test_converts_dtypes_and_accepts_a_generator(tmp_path: Path) -> None:
    case = _case("c", "p", image=np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 24,
                 label=np.ones((2, 3, 4), dtype=np.int64))
    path = _write(tmp_path / "s.h5", cases=(c for c in [case]), dims=3)
    with Store(path) as store:
        image, label = store.read("c")
    assert image.dtype == np.float32 and label.dtype == np.uint8
    np.testing.assert_allclose(image, case.image, rtol=1e-6)


def test_volumes_are_stored_uncompressed_and_contiguous(tmp_path: Path) -> None:
    """The store's write cost is a copy: no filter, no chunking (see the module docstring)."""
    import h5py

    with h5py.File(_write(tmp_path / "s.h5"), "r") as h5:
        for entry in h5["cases"].values():
            for key in ("image", "label"):
                assert entry[key].compression is None and entry[key].chunks is None


def test_same_input_same_bytes(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.h5")
    b = _write(tmp_path / "b.h5")
    assert sha256_file(a) == sha256_file(b)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(label=np.zeros((3, 8, 9), np.uint8)), "differs from label shape"),
        (dict(image=np.full((3, 8, 10), np.nan, np.float32)), "non-finite"),
        (dict(image=np.full((3, 8, 10), np.inf, np.float32)), "non-finite"),
        (dict(label=np.full((3, 8, 10), 4, np.uint8)), "outside 0..3"),
        (dict(label=np.full((3, 8, 10), -1, np.int8)), "outside 0..3"),
        (dict(label=np.zeros((3, 8, 10), np.float32)), "not an integer type"),
        (dict(image=np.zeros((0, 8, 10), np.float32), label=np.zeros((0, 8, 10), np.uint8)),
         "empty"),
        (dict(image=np.zeros((8, 10), np.float32), label=np.zeros((8, 10), np.uint8)), "3-D"),
        (dict(spacing=(1.0, 0.0, 1.0)), "spacing"),
        (dict(spacing=(1.0, 1.0)), "spacing"),
        (dict(spacing="thin"), "spacing"),
        (dict(case_id="a/b"), "invalid case id"),
        (dict(patient=""), "invalid patient"),
    ],
)
def test_invalid_case_raises_naming_source_and_leaves_no_file(
    tmp_path: Path, overrides: dict, message: str
) -> None:
    path = tmp_path / "store.h5"
    _write(path)  # an older store, which a failed rebuild must not leave looking current
    fields = {"case_id": "bad_case", "patient": "p9", "source": "/src/bad_case.h5", **overrides}
    bad = _case(fields.pop("case_id"), fields.pop("patient"), **fields)
    with pytest.raises(DataError, match=message) as info:
        _write(path, cases=[*_cases(), bad])
    assert info.value.path == "/src/bad_case.h5"
    if "case id" not in message:
        assert "'bad_case'" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_error_without_source_names_the_store(tmp_path: Path) -> None:
    bad = _case("c", "p", label=np.full((3, 8, 10), 9, np.uint8), source="")
    with pytest.raises(DataError) as info:
        _write(tmp_path / "store.h5", cases=[bad])
    assert info.value.path == str(tmp_path / "store.h5")


def test_duplicate_case_and_no_cases(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="appears twice"):
        _write(tmp_path / "s.h5", cases=[_case("x", "p"), _case("x", "q")])
    with pytest.raises(DataError, match="no cases"):
        _write(tmp_path / "s.h5", cases=[])
    assert list(tmp_path.iterdir()) == []


def test_failure_inside_the_case_iterator_leaves_no_file(tmp_path: Path) -> None:
    def cases():
        yield _case("a", "p")
        raise DataError("/src/broken.h5", "no dataset 'label'")

    with pytest.raises(DataError, match="broken"):
        _write(tmp_path / "s.h5", cases=cases())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs",
    [dict(labels={"bg": 0, "fg": 2}), dict(labels={}), dict(labels={"bg": 0.0}), dict(dims=4),
     dict(name="")],
)
def test_bad_store_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        _write(tmp_path / "s.h5", **kwargs)
    assert list(tmp_path.iterdir()) == []


# -- reading malformed stores ----------------------------------------------------------------------


def test_missing_and_non_hdf5_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        Store(tmp_path / "nope.h5")
    assert str(tmp_path / "nope.h5") in str(info.value)
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5"):
        Store(tmp_path / "text.h5")


def _replace_label(h5: h5py.File, label: np.ndarray) -> None:
    del h5["cases/p1_frame01/label"]
    h5.create_dataset("cases/p1_frame01/label", data=label)


def _corrupt(path: Path, edit) -> Path:
    with h5py.File(path, "r+") as h5:
        edit(h5)
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda h5: h5.attrs.__delitem__("labels"), "missing root attribute 'labels'"),
        (lambda h5: h5.attrs.__setitem__("labels", "{not json"), "invalid labels"),
        (lambda h5: h5.attrs.__setitem__("num_classes", 5), "num_classes is 5"),
        (lambda h5: h5.attrs.__setitem__("dims", 1), "dims is 1"),
        (lambda h5: h5.__delitem__("cases/p1_frame01/label"), "no dataset 'label'"),
        (lambda h5: h5.__delitem__("cases/p3_frame01/image"), "no dataset 'image'"),
        (lambda h5: _replace_label(h5, np.zeros((5, 6, 8), np.uint8)), "differs from label shape"),
        (lambda h5: _replace_label(h5, np.zeros((5, 6, 7), np.int32)),
         "expected float32 image and uint8 label"),
        (lambda h5: h5["cases/p2_frame01"].attrs.__delitem__("patient"), "'patient'"),
        (lambda h5: h5.__delitem__("cases"), "missing group 'cases'"),
    ],
)
def test_malformed_store_raises_naming_file(tmp_path: Path, edit, message: str) -> None:
    path = _corrupt(_write(tmp_path / "store.h5"), edit)
    with pytest.raises(DataError, match=message) as info:
        Store(path)
    assert info.value.path == str(path)


def test_unknown_case(tmp_path: Path) -> None:
    with Store(_write(tmp_path / "store.h5")) as store:
        with pytest.raises(DataError, match="no case 'ghost'"):
            store.read("ghost")
        with pytest.raises(DataError, match="no case 'ghost'"):
            store.patient("ghost")


# -- describe / sha256 -----------------------------------------------------------------------------


def test_sha256_file_is_chunked_and_correct(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = np.random.default_rng(0).bytes(10_000)
    path.write_bytes(data)
    assert sha256_file(path, chunk_size=777) == hashlib.sha256(data).hexdigest()
    with pytest.raises(DataError, match="does not exist"):
        sha256_file(tmp_path / "missing")


def test_describe(tmp_path: Path) -> None:
    path = _write(tmp_path / "store.h5")
    patients = {"train": ["p2", "p1"], "val": [], "test": ["p3"]}
    descriptor = describe(path, patients=patients)
    assert json.loads(json.dumps(descriptor)) == descriptor
    assert descriptor == {
        "name": "toy",
        "dims": 2,
        "num_classes": 4,
        "labels": LABELS,
        "patients": patients,
        "cases": {
            "p2_frame01": {"patient": "p2", "shape": [3, 8, 10], "spacing": [2.5, 1.25, 1.25]},
            "p2_frame02": {"patient": "p2", "shape": [3, 8, 10], "spacing": [2.5, 1.25, 1.25]},
            "p1_frame01": {"patient": "p1", "shape": [5, 6, 7], "spacing": [2.5, 1.25, 1.25]},
            "p3_frame01": {"patient": "p3", "shape": [3, 8, 10], "spacing": [2.5, 1.25, 1.25]},
        },
        "store_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    assert list(descriptor["cases"]) == ["p2_frame01", "p2_frame02", "p1_frame01", "p3_frame01"]


@pytest.mark.parametrize(
    "patients, error, message",
    [
        ({"train": ["p2", "p1"], "val": [], "test": []}, DataError, "'p3', who is in no patient"),
        ({"train": ["p2", "p1", "p4"], "val": [], "test": ["p3"]}, DataError, "no cases.*p4"),
        ({"train": ["p2", "p1"], "val": ["p1"], "test": ["p3"]}, DataError,
         "both 'train' and 'val'"),
        ({"train": ["p2", "p1"], "test": ["p3"]}, ValueError, "exactly the keys"),
        ({"train": "p2", "val": [], "test": ["p3"]}, ValueError, "not the string"),
    ],
)
def test_describe_rejects_inconsistent_patients(
    tmp_path: Path, patients: dict, error: type, message: str
) -> None:
    path = _write(tmp_path / "store.h5")
    with pytest.raises(error, match=message):
        describe(path, patients=patients)
