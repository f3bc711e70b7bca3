"""BraTS 2019 (FLAIR, whole tumour): the catalogue's protocol, the shipped SSL4MIS split, the
release reader (on stand-in case folders written here in the release's NIfTI format and geometry)
and the h5-copy reader, bad inputs, and predictions written back on the release's grid."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO
from release_files import BRATS_GEOMETRY, brats_case, write_brats_release, write_lists, write_nifti
from semiseg.config import load_config, run_spec
from semiseg.data.brats import preprocess_brats, read_brats_h5, read_brats_raw
from semiseg.errors import DataError
from semiseg.data.fetch import fetch
from semiseg.data.preprocess import READERS, preprocess
from semiseg.data.splits import make_split
from semiseg.data.store import Store
from semiseg.data.volumes import to_source_grid

SPLITS = REPO / "config" / "datasets" / "brats_splits"
LABELS = {"background": 0, "tumour": 1}


def _list(path):
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def test_the_catalogue_states_the_protocol(cfg):
    ds = cfg["datasets"]["brats"]
    assert ds["dims"] == 3 and ds["network"] == "vnet" and ds["labels"] == LABELS
    assert ds["ratios"] == {"5": 12, "10": 25, "20": 50, "100": 250} and ds["train_patients"] == 250
    assert ds["patch_size"] == [96, 96, 96] and ds["stride"] == [64, 64, 64]
    assert ds["source"]["layout"] == "brats_raw" and "cbica" in ds["source"]["how_to_get"].lower()
    assert READERS["brats_raw"] is read_brats_raw and READERS["brats"] is read_brats_h5
    assert run_spec(cfg, "brats", "supervised", 10, 0)["labeled_patients"] == 25


def test_the_shipped_split_is_ssl4mis_s(cfg):
    train, val, test = (_list(SPLITS / f"{r}.list") for r in ("train", "val", "test"))
    assert (len(train), len(val), len(test), len(set(train) | set(val) | set(test))) == (250, 25, 60, 335)
    # SSL4MIS data/BraTS2019/*.txt, pinned by their ends
    assert train[:3] == ["BraTS19_TCIA02_370_1", "BraTS19_CBICA_ASA_1", "BraTS19_TCIA12_470_1"]
    assert test[-1] == "BraTS19_CBICA_AQR_1"
    descriptor = {"name": "brats", "patients": {"train": train, "val": val, "test": test},
                  "cases": {c: {"patient": c} for c in train + val + test}}
    for ratio, n in cfg["datasets"]["brats"]["ratios"].items():
        split = make_split(descriptor, int(ratio), n)
        assert split["labeled"] == train[:n] and split["val"] == val and split["test"] == test


def test_preprocess_brats_by_hand():
    flair = np.zeros((6, 7, 8), np.int16)
    flair[1:5, 2:6, 1:7] = np.arange(1, 4 * 4 * 6 + 1).reshape(4, 4, 6)
    seg = np.zeros_like(flair, dtype=np.uint8)
    seg[2, 3, 2:4] = (1, 4)
    seg[3, 3, 2] = 2
    image, label, start = preprocess_brats(flair, seg)
    # SSL4MIS's brain box slices min:max: rows 1..3, 2..4, 1..5 (the last brain voxel left out)
    assert start == (1, 2, 1) and image.shape == label.shape == (3, 3, 5)
    crop = flair[1:4, 2:5, 1:6].astype(np.float64)
    clip = np.sort(crop.ravel())[int(np.ceil(0.999 * crop.size)) - 1]  # smallest value with cdf >= 0.999
    assert clip == crop.max()  # 45 voxels: the 99.9 % point is the largest
    crop = np.minimum(crop, clip)
    np.testing.assert_allclose(image, (crop - crop.mean()) / crop.std(), rtol=1e-6)
    assert label.dtype == np.uint8 and label.sum() == 3 and set(np.unique(label)) == {0, 1}
    # the clip: one very bright voxel among 2000 is clipped to the next value
    big = np.full((10, 10, 20), 5, np.int16)
    big[0, 0, 0], big[0, 0, 1], big[0, 0, 2] = 9000, 7, 6
    img, _, _ = preprocess_brats(np.pad(big, 1), np.zeros((12, 12, 22), np.uint8))
    assert np.isclose(img.max(), img[0, 0, 1])  # 9000 clipped to 7 (2 of 2000 above 5: 0.1 % share)


def test_the_release_reader_keeps_geometry_and_writes_back_exactly(tmp_path):
    ids = ["BraTS19_CBICA_AAA_1", "BraTS19_TCIA01_131_1", "BraTS19_2013_0_1"]
    base = write_brats_release(tmp_path / "rel", ids)
    write_lists(tmp_path / "rel", train=ids[:1], val=ids[1:2], test=ids[2:])
    cases, patients = read_brats_raw(tmp_path / "rel", "brats")
    assert patients == {"train": ids[:1], "val": ids[1:2], "test": ids[2:]}
    store = preprocess("brats", "brats_raw", tmp_path / "rel", labels=LABELS, dims=3,
                       store_path=tmp_path / "store.h5")
    assert list(store["cases"]) == ids and store["patients"]["val"] == ids[1:2]
    with Store(tmp_path / "store.h5") as st:
        for i, case in enumerate(ids):
            folder = base / ("HGG" if i % 2 == 0 else "LGG") / case
            flair, seg = brats_case(i)
            image, label, start = preprocess_brats(flair, seg)
            got_image, got_label = st.read(case)
            np.testing.assert_array_equal(got_label, label)
            np.testing.assert_allclose(got_image, image)
            assert st.spacing(case) == (1.0, 1.0, 1.0)
            # the origin moved to the crop's first voxel: (x, y, z) = (start_x, -239 + start_y, start_z)
            assert st.origin(case) == (float(start[2]), -239.0 + start[1], float(start[0]))
            # the ground truth as a prediction, written back on the release's grid: the release's
            # label file (whole tumour), geometry included
            source = sitk.ReadImage(str(folder / f"{case}_seg.nii.gz"))
            back = to_source_grid(got_label, st.geometry(case), source)
            assert back.GetSize() == source.GetSize() and back.GetOrigin() == source.GetOrigin()
            assert back.GetSpacing() == source.GetSpacing() and back.GetDirection() == source.GetDirection()
            np.testing.assert_array_equal(sitk.GetArrayFromImage(back), (sitk.GetArrayFromImage(source) > 0))


def test_an_oblique_release_writes_back_exactly(tmp_path):
    # a direction other than the identity and a non-unit spacing: the crop's origin follows them
    geometry = {"spacing": (0.9, 1.1, 1.3), "origin": (12.5, -200.0, 33.0),
                "direction": (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)}
    ids = ["A_1", "B_1"]
    base = write_brats_release(tmp_path / "rel", ids, geometry=geometry)
    write_lists(tmp_path / "rel", train=ids[:1], test=ids[1:])
    cases = list(read_brats_raw(tmp_path / "rel", "brats")[0])
    source = sitk.ReadImage(str(base / "LGG" / "B_1" / "B_1_seg.nii.gz"))
    geo = {"spacing": tuple(reversed(cases[1].spacing)), "origin": cases[1].origin, "direction": cases[1].direction}
    back = to_source_grid(cases[1].label, geo, source)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(source) > 0)


def _broken(tmp_path, name):
    ids = ["C_1", "D_1"]
    base = write_brats_release(tmp_path / name, ids)
    write_lists(tmp_path / name, train=ids[:1], test=ids[1:])
    return tmp_path / name, base / "LGG" / "D_1"


@pytest.mark.parametrize("damage, message", [
    ("no_flair", r"D_1_flair\.nii\.gz: case 'D_1': the FLAIR modality is missing"),
    ("no_seg", r"D_1_seg\.nii\.gz: case 'D_1': the segmentation is missing"),
    ("no_folder", r"test\.list: case 'D_1' is listed but no folder D_1/"),
    ("shifted", r"D_1_seg\.nii\.gz: origin .* differs from the image's"),
    ("resized", r"D_1_seg\.nii\.gz: size \(36, 40, 29\) .* differs from the image's \(36, 40, 30\)"),
    ("label3", r"D_1_seg\.nii\.gz: label values \[3\] are outside the dataset's classes \[0, 1, 2, 4\]"),
])
def test_a_broken_release_is_named_and_leaves_no_store(tmp_path, damage, message):
    root, folder = _broken(tmp_path, damage)
    seg_path = folder / "D_1_seg.nii.gz"
    if damage == "no_flair":
        (folder / "D_1_flair.nii.gz").unlink()
    elif damage == "no_seg":
        seg_path.unlink()
    elif damage == "no_folder":
        import shutil
        shutil.rmtree(folder)
    else:
        seg = sitk.GetArrayFromImage(sitk.ReadImage(str(seg_path)))
        geo = dict(BRATS_GEOMETRY)
        if damage == "shifted":
            geo["origin"] = (0.0, -238.0, 0.0)
        elif damage == "resized":
            seg = seg[:-1]
        else:
            seg[seg == 1] = 3
        write_nifti(seg, geo, seg_path)
    out = tmp_path / "out" / "store.h5"
    with pytest.raises(DataError, match=message):
        preprocess("brats", "brats_raw", root, labels=LABELS, dims=3, store_path=out)
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))


def test_the_h5_copies_and_their_lists(tmp_path):
    ids = ["E_1", "F_1", "G_1"]
    (tmp_path / "copy" / "data").mkdir(parents=True)
    for i, case in enumerate(ids):
        flair, seg = brats_case(i)
        image, label, _ = preprocess_brats(flair, seg)
        with h5py.File(tmp_path / "copy" / "data" / f"{case}.h5", "w") as h5:
            h5["image"], h5["label"] = image, label
    write_lists(tmp_path / "copy", train=ids[:2], val=[], test=ids[2:])
    cases, patients = read_brats_h5(tmp_path / "copy", "brats")
    got = list(cases)
    assert [c.case_id for c in got] == ids and patients["train"] == ids[:2]
    assert got[0].label.max() == 1 and got[0].spacing == (1.0, 1.0, 1.0)
    with h5py.File(tmp_path / "copy" / "data" / "G_1.h5", "r+") as h5:
        h5["label"][0, 0, 0] = 2
    cases, _ = read_brats_h5(tmp_path / "copy", "brats")
    with pytest.raises(DataError, match=r"G_1\.h5: label values \[2\] are outside"):
        list(cases)
    # a copy's own lists must be SSL4MIS's (or a first part): these are not
    with pytest.raises(DataError, match=r"train\.list: line 1 is 'E_1' where the protocol's"):
        fetch("brats", {"layout": "brats", "path": str(tmp_path / "copy")}, tmp_path / "raw", root=REPO)
    assert not (tmp_path / "raw").exists()


def test_a_release_without_lists_gets_ssl4mis_s(tmp_path):
    write_brats_release(tmp_path / "rel", ["H_1"])
    fetch("brats", {"layout": "brats_raw", "path": str(tmp_path / "rel")}, tmp_path / "raw", root=REPO)
    for role in ("train", "val", "test"):
        assert _list(tmp_path / "raw" / f"{role}.list") == _list(SPLITS / f"{role}.list")


def test_export_puts_the_ground_truth_back_as_the_release_s_label_file(tmp_path):
    from semiseg.inference.export import export_run
    from semiseg.inference.export import write_label_nifti

    ids = ["I_1", "J_1"]
    base = write_brats_release(tmp_path / "rel", ids)
    write_lists(tmp_path / "rel", train=ids[:1], val=[], test=ids[1:])
    raw = tmp_path / "raw"
    fetch("brats", {"layout": "brats_raw", "path": str(tmp_path / "rel")}, raw, root=REPO)
    preprocess("brats", "brats_raw", raw, labels=LABELS, dims=3, store_path=tmp_path / "s.h5")
    run = tmp_path / "run"
    (run / "predictions").mkdir(parents=True)
    with Store(tmp_path / "s.h5") as st:  # the infer stage's output, with the ground truth as prediction
        write_label_nifti(st.read("J_1")[1], st.geometry("J_1"), run / "predictions" / "J_1.nii.gz")
    export_run(run, tmp_path / "s.h5", tmp_path / "out", source_dir=raw)
    back = sitk.ReadImage(str(tmp_path / "out" / "J_1_pred_source.nii.gz"))
    source = sitk.ReadImage(str(base / "LGG" / "J_1" / "J_1_seg.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(source) > 0)
    for what in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(back, what)() == getattr(source, what)(), what
    with pytest.raises(DataError, match=r"layout 'brats' has no source grid"):
        (raw / ".fetched.json").write_text('{"layout": "brats"}')
        export_run(run, tmp_path / "s.h5", tmp_path / "out2", source_dir=raw)
    assert not (tmp_path / "out2").exists()


def test_a_table_asks_for_another_test_stride(cfg):
    from semiseg.config import dataset_source, table_runs, table_spec, table_stride

    table = cfg["tables"]["brats_stride16"]
    assert table["dataset"] == "brats" and cfg["tables"]["brats"]["dataset"] == "brats"
    assert table_stride(cfg, "brats_stride16") == [16, 16, 16] and table_stride(cfg, "brats") is None
    assert cfg["datasets"]["brats"]["stride"] == [64, 64, 64]  # the dataset stays as it is
    spec = run_spec(cfg, "brats", "supervised", 10, 0, stride=[16, 16, 16])
    assert spec["dataset"]["stride"] == [16, 16, 16]
    assert run_spec(cfg, "brats", "supervised", 10, 0)["dataset"]["stride"] == [64, 64, 64]
    assert spec["schedule"] == {**run_spec(cfg, "brats", "supervised", 10, 0)["schedule"]}
    assert all(r[0] == "brats" for r in table_runs(cfg, "brats_stride16"))
    assert table_spec(cfg, "brats_stride16")["sliding_window"] == \
        "96 x 96 x 96 windows (z, y, x), stride 16 x 16 x 16 (this table's; brats's default: 64 x 64 x 64)"
    assert table_spec(cfg, "brats")["sliding_window"] == "96 x 96 x 96 windows (z, y, x), stride 64 x 64 x 64"
    # a user's source of the dataset is the one of its runs at every stride
    import yaml
    settings = {**yaml.safe_load((REPO / "config" / "config.yaml").read_text()), "sources": {"brats": {"path": "/b"}}}
    assert dataset_source(load_config(settings, root=REPO), "brats")["path"] == "/b"


def test_a_run_s_own_stride_is_another_than_its_dataset_s(cfg):
    from semiseg.config import ConfigError

    with pytest.raises(ConfigError, match=r"a run of brats at test stride \[64, 64, 64\]: that is brats's own stride"):
        run_spec(cfg, "brats", "supervised", 10, 0, stride=[64, 64, 64])
    with pytest.raises(ConfigError, match=r"a run of acdc at test stride \[1, 8, 8\]: a test stride is for a 3D dataset"):
        run_spec(cfg, "acdc", "supervised", 10, 0, stride=[1, 8, 8])
    with pytest.raises(ConfigError, match=r"steps further than brats's patch \[96, 96, 96\] on the z axis"):
        run_spec(cfg, "brats", "supervised", 10, 0, stride=[128, 16, 16])


def test_a_test_stride_on_a_2d_dataset_is_refused(tmp_path):
    import shutil

    import yaml
    from semiseg.config import ConfigError

    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "workflow" / "schemas", tmp_path / "workflow" / "schemas")
    path = tmp_path / "config" / "tables" / "abdomenct1k.yaml"
    tables = yaml.safe_load(path.read_text())
    tables["abdomenct1k"]["stride"] = [1, 16, 16]
    path.write_text(yaml.safe_dump(tables))
    with pytest.raises(ConfigError, match=r"abdomenct1k\.yaml: abdomenct1k\.stride: a test stride is for a 3D dataset"):
        load_config(root=tmp_path)
