"""Pancreas-CT: the two conventions' catalogue entries and shipped lists (MC-Net's 62 / 20 of 82,
CoraNet's 62 / 18 of 80 without the duplicates), the TCIA release reader on stand-in DICOM series
and NIfTI labels written here (HU through the rescale intercept, a missing slice, a label off the
grid), MC-Net's and CoraNet's preprocessing, the h5 copies, and predictions written back."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO
from release_files import PANCREAS_GEOMETRY, pancreas_case, write_dicom_series, write_lists, write_pancreas_release
from release_files import write_nifti
from semiseg.config import load_config
from semiseg.errors import DataError
from semiseg.data.fetch import fetch
from semiseg.data.pancreas import (preprocess_coranet, preprocess_mcnet, read_pancreas_coranet_raw,
                                   read_pancreas_h5, read_pancreas_raw, resample_1mm)
from semiseg.data.preprocess import READERS, preprocess
from semiseg.data.store import Store
from semiseg.data.volumes import read_dicom_series, to_source_grid

MCNET = REPO / "config" / "datasets" / "pancreas_splits"
CORANET = REPO / "config" / "datasets" / "pancreas_coranet_splits"
LABELS = {"background": 0, "pancreas": 1}


def _list(path):
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def test_the_catalogue_states_both_conventions():
    cfg = load_config(root=REPO)
    a, b = cfg["datasets"]["pancreas"], cfg["datasets"]["pancreas_coranet"]
    assert a["source"]["layout"] == "pancreas_raw" and b["source"]["layout"] == "pancreas_coranet_raw"
    assert a["ratios"] == {"5": 3, "10": 6, "20": 12, "100": 62} and b["ratios"] == {"10": 6, "20": 12, "100": 62}
    assert a["patch_size"] == b["patch_size"] == [96, 96, 96]
    assert a["stride"] == [16, 16, 16] and b["stride"] == [4, 16, 16]
    assert READERS["pancreas_raw"] is read_pancreas_raw and READERS["pancreas"] is read_pancreas_h5
    assert READERS["pancreas_coranet_raw"] is read_pancreas_coranet_raw


def test_the_shipped_lists():
    train, test = _list(MCNET / "train.list"), _list(MCNET / "test.list")
    assert (len(train), len(test)) == (62, 20)
    assert set(train) | set(test) == {f"image{n:04d}" for n in range(1, 83)}  # all 82, duplicates included
    assert train[:3] == ["image0057", "image0018", "image0062"] and "image0025" in test and "image0070" in train
    train, test = _list(CORANET / "train.list"), _list(CORANET / "test.list")
    assert (len(train), len(test)) == (62, 18)
    assert set(train) | set(test) == {f"image{n:04d}" for n in range(1, 83)} - {"image0025", "image0070"}
    assert train[:12] == [f"image{n:04d}" for n in range(1, 13)]  # CoraNet's train_lab.txt: its 20 %
    assert test[0] == "image0064" and not (CORANET / "val.list").exists()


def test_a_dicom_series_reads_in_hounsfield_units(tmp_path):
    hu, _ = pancreas_case(0)
    a = write_dicom_series(hu, PANCREAS_GEOMETRY, tmp_path / "a", intercept=-1024)
    b = write_dicom_series(hu, PANCREAS_GEOMETRY, tmp_path / "b", intercept=0)
    # the stored values differ (shifted by the intercept), the HU read back do not
    assert (a / "1-001.dcm").read_bytes() != (b / "1-001.dcm").read_bytes()
    for folder in (a, b):
        img, files = read_dicom_series(folder)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(img), hu)
        assert np.allclose(img.GetSpacing(), PANCREAS_GEOMETRY["spacing"]) and len(files) == hu.shape[0]
        assert np.allclose(img.GetOrigin(), PANCREAS_GEOMETRY["origin"])
    with pytest.raises(DataError, match=r"c: 1 slice\(s\) missing between 1-006\.dcm \(-404\.500 mm\) and "
                                        r"1-008\.dcm \(-401\.500 mm\)"):
        read_dicom_series(write_dicom_series(hu, PANCREAS_GEOMETRY, tmp_path / "c", skip=(6,)))


def test_mcnet_and_coranet_preprocessing_by_hand():
    image = np.full((10, 200, 180), -1000.0)
    label = np.zeros((10, 200, 180), np.uint8)
    label[3:6, 50:70, 100:170] = 1
    image[label > 0] = 100
    img, lab, start = preprocess_mcnet(image, label)
    # y: box 50..69 (extent 19 < 96): (96 - 19) // 2 = 38 more, plus 25: 50-63 < 0 -> 0 .. 69+63=132
    # x: box 100..169 (extent 69): 13 more, plus 25: 62 .. 207 -> 180; z not cropped
    assert start == (0, 0, 62) and img.shape == (10, 132, 118) and lab.sum() == label.sum()
    scaled = (np.clip(image, -125, 275) + 125) / 400
    crop = scaled[:, 0:132, 62:180]
    np.testing.assert_allclose(img, (crop - crop.mean()) / crop.std(), rtol=1e-5, atol=1e-6)
    img, lab, start = preprocess_coranet(image, label)
    # all axes: box +- 25, then widened to 96 where the volume allows (z: only 10 slices);
    # y: 25..95 (70) widened by 13 each side to 12..108; x: 75..195 clipped to 180 (105 >= 96)
    assert start == (0, 12, 75) and img.shape == (10, 96, 105) and lab.sum() == label.sum()
    assert img.min() == 0.0 and img.max() == 1.0


def test_resampling_follows_mcnet_s_rule():
    img = sitk.Image(40, 44, 24, sitk.sitkInt16)
    img.SetSpacing((0.78125, 0.78125, 1.5))
    out = resample_1mm(img, label=False)
    assert out.GetSize() == (31, 34, 36)  # int(40 * 0.78125) = 31, int(44 * 0.78125) = 34, 36
    assert np.allclose(out.GetSpacing(), (40 * 0.78125 / 31, 44 * 0.78125 / 34, 1.0))
    assert out.GetPixelID() == sitk.sitkFloat32


@pytest.mark.parametrize("convention", ["mcnet", "coranet"])
def test_the_release_reader_and_the_write_back(tmp_path, convention):
    files = write_pancreas_release(tmp_path / "rel", [1, 2], flip_label=convention == "coranet")
    write_lists(tmp_path / "rel", train=["image0001"], test=["image0002"])
    layout = "pancreas_raw" if convention == "mcnet" else "pancreas_coranet_raw"
    desc = preprocess("pancreas", layout, tmp_path / "rel", labels=LABELS, dims=3, store_path=tmp_path / "s.h5")
    assert list(desc["cases"]) == ["image0001", "image0002"]
    with Store(tmp_path / "s.h5") as st:
        for n in (1, 2):
            cid = f"image{n:04d}"
            image, label = st.read(cid)
            hu, source_label = pancreas_case(n - 1)
            mm3 = source_label.sum() * 0.78125 ** 2 * 1.5  # the pancreas' volume, about 1 voxel per mm3 now
            assert 0.9 * mm3 < label.sum() < 1.1 * mm3
            if convention == "mcnet":
                assert abs(image.mean()) < 1e-4 and abs(image.std() - 1) < 1e-3
            else:
                assert image.min() >= 0 and image.max() <= 1
            assert np.allclose(st.spacing(cid), (1.0, 44 * 0.78125 / 34, 40 * 0.78125 / 31))
            # the ground truth as a prediction, on the release's label grid: geometry equal, voxels
            # equal except next to the label's boundary (the 1 mm resampling is not invertible)
            reference = sitk.ReadImage(str(files[n][1]))
            back = to_source_grid(label, st.geometry(cid), reference)
            for what in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
                assert np.allclose(getattr(back, what)(), getattr(reference, what)()), what
            ref = sitk.GetArrayFromImage(reference)
            got = sitk.GetArrayFromImage(back)
            from scipy import ndimage
            cube = np.ones((3, 3, 3), bool)  # a voxel's 26 neighbours: nearest-neighbour shifts stay in them
            boundary = ndimage.binary_dilation(ref > 0, cube) & ~ndimage.binary_erosion(ref > 0, cube)
            assert np.array_equal(got[~boundary], ref[~boundary])
            assert (got != ref).sum() < 0.5 * boundary.sum()


def test_a_broken_release_is_named_and_leaves_no_store(tmp_path):
    files = write_pancreas_release(tmp_path / "rel", [3, 4])
    write_lists(tmp_path / "rel", train=["image0003"], test=["image0004"])
    out = tmp_path / "o" / "s.h5"

    def fails(match):
        with pytest.raises(DataError, match=match):
            preprocess("pancreas", "pancreas_raw", tmp_path / "rel", labels=LABELS, dims=3, store_path=out)
        assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))

    folder, lab = files[4]
    (folder / "1-010.dcm").unlink()
    fails(r"PANCREAS_0004.*1 slice\(s\) missing between 1-009\.dcm .* and 1-011\.dcm")
    write_pancreas_release(tmp_path / "rel", [4])
    hu, label = pancreas_case(1)
    write_nifti(label, {**PANCREAS_GEOMETRY, "origin": (-172.5, -180.0, -400.0)}, lab)
    fails(r"label0004\.nii\.gz: its grid .* does not cover the DICOM series .*mismatched geometry")
    write_nifti(label * 2, PANCREAS_GEOMETRY, lab)
    fails(r"label0004\.nii\.gz: label values \[2\] are outside the dataset's classes \[0, 1\]")
    lab.unlink()
    fails(r"test\.list: case 'image0004' is listed but its label file label0004\.nii\.gz is not under")


def test_the_h5_copies(tmp_path):
    (tmp_path / "c" / "Pancreas_h5").mkdir(parents=True)
    for n in (57, 18):
        hu, label = pancreas_case(n)
        img, lab, _ = preprocess_mcnet(hu, label)
        with h5py.File(tmp_path / "c" / "Pancreas_h5" / f"image{n:04d}_norm.h5", "w") as h5:
            # as MC-Net's notebook writes them: (X, Y, Z), label as float32
            h5["image"], h5["label"] = img.transpose(2, 1, 0), lab.transpose(2, 1, 0).astype(np.float32)
    write_lists(tmp_path / "c", train=["image0057"], test=["image0018"])
    cases = list(read_pancreas_h5(tmp_path / "c", "pancreas")[0])
    hu, label = pancreas_case(57)
    img, lab, _ = preprocess_mcnet(hu, label)
    np.testing.assert_array_equal(cases[0].image, img)
    assert cases[0].label.dtype == np.uint8 and np.array_equal(cases[0].label, lab)
    # a copy's lists must be a first part of MC-Net's: image0057 is its first train case, but
    # image0018 is not its first test case
    with pytest.raises(DataError, match=r"test\.list: line 1 is 'image0018' where the protocol's"):
        fetch("pancreas", {"layout": "pancreas", "path": str(tmp_path / "c")}, tmp_path / "raw", root=REPO)


def test_the_3d_preprocess_benchmark_runs(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("preprocess_3d", REPO / "benchmarks" / "preprocess_3d.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--cases", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and lines[0].split()[0] == "reader"
    assert all(float(line.split()[-3]) > 0 and int(line.split()[-2]) > 0 for line in lines[1:])


def test_export_writes_a_prediction_back_on_the_release_s_label_grid(tmp_path):
    from semiseg.data.source_grids import source_grid_files
    from semiseg.inference.export import export_run
    from semiseg.inference.export import write_label_nifti

    files = write_pancreas_release(tmp_path / "rel", [6, 7])
    write_lists(tmp_path / "rel", train=["image0006"], test=["image0007"])
    raw = tmp_path / "raw"
    fetch("pancreas", {"layout": "pancreas_raw", "path": str(tmp_path / "rel")}, raw, root=REPO)
    assert source_grid_files(raw, ["image0007"]) == {"image0007": raw / files[7][1].relative_to(tmp_path / "rel")}
    with pytest.raises(DataError, match=r"no source label file of \['image0099'\]"):
        source_grid_files(raw, ["image0099"])
    preprocess("pancreas", "pancreas_raw", raw, labels=LABELS, dims=3, store_path=tmp_path / "s.h5")
    (tmp_path / "run" / "predictions").mkdir(parents=True)
    with Store(tmp_path / "s.h5") as st:
        write_label_nifti(st.read("image0007")[1], st.geometry("image0007"),
                          tmp_path / "run" / "predictions" / "image0007.nii.gz")
    export_run(tmp_path / "run", tmp_path / "s.h5", tmp_path / "out", source_dir=raw)
    back = sitk.ReadImage(str(tmp_path / "out" / "image0007_pred_source.nii.gz"))
    source = sitk.ReadImage(str(files[7][1]))
    assert back.GetSize() == source.GetSize() and np.allclose(back.GetOrigin(), source.GetOrigin())
    agree = (sitk.GetArrayFromImage(back) == sitk.GetArrayFromImage(source)).mean()
    assert agree > 0.98  # the 1 mm resampling is not invertible: boundary voxels may differ
