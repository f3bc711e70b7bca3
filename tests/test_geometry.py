"""Predictions a viewer places correctly: the source geometry survives store, infer and export."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from semiseg.data.acdc import read_acdc_raw
from semiseg.errors import DataError
from semiseg.data.store import IDENTITY_DIRECTION, Case, Store, write_store
from semiseg.engine.loop import train
from semiseg.inference.export import export_run, itksnap_labels
from semiseg.inference.run import infer
from helpers import LABELS
from test_engine import _spec

# a rotation of 30 degrees about z with the y axis flipped: orthonormal, not the identity
_C, _S = math.cos(math.pi / 6), math.sin(math.pi / 6)
DIRECTION = (_C, _S, 0.0, _S, -_C, 0.0, 0.0, 0.0, 1.0)
ORIGIN = (-120.5, 87.25, 33.0)


def _store(path, origin=ORIGIN, direction=DIRECTION, n=6):
    rng = np.random.default_rng(1)
    cases = []
    for i in range(n):
        label = np.zeros((3, 32, 32), np.uint8)
        label[:, 8:20, 8:20] = 1
        label[:, 12:16, 12:16] = 2
        image = (label / 2 + rng.normal(0, 0.1, label.shape)).astype(np.float32)
        cases.append(Case(f"p{i}_frame01", f"p{i}", image, label, (10.0, 1.5, 1.25),
                          origin=tuple(o + i for o in origin), direction=direction))
    write_store(path, name="tiny", dims=2, labels=LABELS, cases=cases)
    return path


def test_the_store_keeps_origin_and_direction(tmp_path):
    path = _store(tmp_path / "store.h5")
    with Store(path) as store:
        assert store.origin("p2_frame01") == pytest.approx((-118.5, 89.25, 35.0))
        assert store.direction("p2_frame01") == pytest.approx(DIRECTION)
        geometry = store.geometry("p0_frame01")
    assert geometry["spacing"] == (1.25, 1.5, 10.0)  # SimpleITK's x, y, z
    assert geometry["origin"] == pytest.approx(ORIGIN)


def test_a_store_written_without_geometry_reads_as_origin_zero_identity(tmp_path):
    path = _store(tmp_path / "store.h5")
    with h5py.File(path, "r+") as h5:
        for entry in h5["cases"].values():
            del entry.attrs["origin"], entry.attrs["direction"]
    with Store(path) as store:
        assert store.origin("p0_frame01") == (0.0, 0.0, 0.0)
        assert store.direction("p0_frame01") == IDENTITY_DIRECTION


@pytest.mark.parametrize("field, value, match", [
    ("direction", (1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0), "not an orthonormal matrix"),
    ("direction", (1.0, 0.0, 0.0, 1.0), "9 finite numbers"),
    ("origin", (0.0, float("nan"), 0.0), "origin must be 3 finite numbers"),
])
def test_bad_geometry_is_refused_naming_the_case(tmp_path, field, value, match):
    label = np.zeros((2, 4, 4), np.uint8)
    case = Case("p0_frame01", "p0", label.astype(np.float32), label, source="p0.nii.gz", **{field: value})
    with pytest.raises(DataError, match=rf"p0\.nii\.gz.*p0_frame01.*{match}"):
        write_store(tmp_path / "s.h5", name="t", dims=2, labels=LABELS, cases=[case])


def test_the_official_release_importer_keeps_the_niftis_geometry(tmp_path):
    root = tmp_path / "database"
    rng = np.random.default_rng(0)
    for patient in ("patient001", "patient002"):
        pdir = root / "training" / patient
        pdir.mkdir(parents=True)
        (pdir / "Info.cfg").write_text("ED: 1\nES: 9\n")
        for frame in (1, 9):
            for suffix, array in (("", rng.random((3, 8, 6)).astype(np.float32)),
                                  ("_gt", rng.integers(0, 3, (3, 8, 6)).astype(np.uint8))):
                img = sitk.GetImageFromArray(array)
                img.SetSpacing((1.5, 1.5, 10.0))
                img.SetOrigin(ORIGIN)
                img.SetDirection(DIRECTION)
                sitk.WriteImage(img, str(pdir / f"{patient}_frame{frame:02d}{suffix}.nii.gz"))
    for role, ids in (("train", "patient001\n"), ("val", ""), ("test", "patient002\n")):
        (root / f"{role}.list").write_text(ids)
    cases = list(read_acdc_raw(root, "acdc")[0])
    assert len(cases) == 4
    for case in cases:
        assert case.origin == pytest.approx(ORIGIN, abs=1e-4)
        assert case.direction == pytest.approx(DIRECTION, abs=1e-6)  # NIfTI keeps it in float32
    write_store(tmp_path / "s.h5", name="acdc", dims=2, labels=LABELS, cases=cases)
    with Store(tmp_path / "s.h5") as store:
        assert store.origin("patient002_frame02") == pytest.approx(ORIGIN, abs=1e-4)


def test_predictions_and_exports_lie_on_the_image(tmp_path):
    store = _store(tmp_path / "store.h5")
    split = tmp_path / "split.json"
    split.write_text('{"cases": {"labeled": ["p0_frame01", "p1_frame01"], "unlabeled": ["p2_frame01"],'
                     ' "val": ["p4_frame01"], "test": ["p3_frame01", "p5_frame01"]}}')
    run = tmp_path / "run"
    train(_spec(iterations=2, val_interval=2), store, split, run, progress=False)
    assert infer(run, store, split, run / "predictions", device="cpu") == 2
    pred = sitk.ReadImage(str(run / "predictions" / "p5_frame01.nii.gz"))
    assert pred.GetOrigin() == pytest.approx((-115.5, 92.25, 38.0))  # p5's origin: ORIGIN + 5
    assert pred.GetDirection() == pytest.approx(DIRECTION)
    assert pred.GetSpacing() == pytest.approx((1.25, 1.5, 10.0))
    assert (run / "predictions" / "labels.txt").read_text() == itksnap_labels(LABELS)

    out = tmp_path / "export"
    assert export_run(run, store, out) == ["p3_frame01", "p5_frame01"]
    assert sorted(p.name for p in out.iterdir()) == [
        "labels.txt", "p3_frame01_gt.nii.gz", "p3_frame01_image.nii.gz", "p3_frame01_pred.nii.gz",
        "p5_frame01_gt.nii.gz", "p5_frame01_image.nii.gz", "p5_frame01_pred.nii.gz"]
    image = sitk.ReadImage(str(out / "p5_frame01_image.nii.gz"))
    for name in ("gt", "pred"):
        layer = sitk.ReadImage(str(out / f"p5_frame01_{name}.nii.gz"))
        # the same voxel lands on the same point of patient space
        assert layer.TransformIndexToPhysicalPoint((3, 7, 2)) == pytest.approx(
            image.TransformIndexToPhysicalPoint((3, 7, 2)))
    with Store(store) as st:
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), st.read_image("p5_frame01"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "p5_frame01_gt.nii.gz"))),
                                      st.read("p5_frame01")[1])
    with pytest.raises(DataError, match="no prediction of \\['p0_frame01'\\]"):
        export_run(run, store, tmp_path / "e2", cases=["p0_frame01"])
    assert not (tmp_path / "e2").exists()


def test_itksnap_label_file():
    text = itksnap_labels({"background": 0, "RV": 1, "Myo": 2, "LV": 3})
    rows = [ln.split() for ln in text.splitlines() if not ln.startswith("#")]
    assert rows == [["0", "0", "0", "0", "0.00", "0", "0", '"background"'],
                    ["1", "0", "114", "178", "1.00", "1", "1", '"RV"'],     # #0072B2
                    ["2", "213", "94", "0", "1.00", "1", "1", '"Myo"'],     # #D55E00
                    ["3", "240", "228", "66", "1.00", "1", "1", '"LV"']]    # #F0E442
