"""AbdomenCT-1K: the catalogue entry (ALHVR's 2D protocol), the project's own shipped 30 / 11
split (replaced by a source's lists), the release reader on stand-in NIfTI files written here,
bad inputs, and predictions written back exactly on the scan."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO
from release_files import ABDOMEN_GEOMETRIES, abdomen_case, write_abdomen_release, write_lists, write_nifti
from semiseg.config import load_config
from semiseg.data.abdomenct1k import read_abdomenct1k_raw, window
from semiseg.errors import DataError
from semiseg.data.fetch import fetch
from semiseg.data.preprocess import READERS, preprocess
from semiseg.data.store import Store
from semiseg.inference.export import write_label_nifti

SPLITS = REPO / "config" / "datasets" / "abdomenct1k_splits"
LABELS = {"background": 0, "liver": 1, "kidney": 2, "spleen": 3, "pancreas": 4}


def _list(path):
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def test_the_catalogue_and_the_own_split():
    ds = load_config(root=REPO)["datasets"]["abdomenct1k"]
    assert ds["dims"] == 2 and ds["network"] == "unet" and ds["labels"] == LABELS
    assert ds["ratios"] == {"5": 1, "10": 3, "100": 30} and ds["patch_size"] == [256, 256]
    assert READERS[ds["source"]["layout"]] is read_abdomenct1k_raw
    train, test = _list(SPLITS / "train.list"), _list(SPLITS / "test.list")
    assert train == [f"Case_{i:05d}" for i in range(1, 31)] and test == [f"Case_{i:05d}" for i in range(31, 42)]
    assert "not the paper" in (REPO / "config" / "datasets" / "abdomenct1k.yaml").read_text().replace("NOT", "not")


def test_the_window():
    np.testing.assert_allclose(window(np.array([-1000, -125, 75, 275, 3000])), [0, 0, 0.5, 1, 1])


def test_the_reader_keeps_the_scan_s_geometry_and_writes_back_exactly(tmp_path):
    files = write_abdomen_release(tmp_path / "rel", [1, 2, 3])
    write_lists(tmp_path / "rel", train=["Case_00001", "Case_00002"], test=["Case_00003"])
    desc = preprocess("abdomenct1k", "abdomenct1k_raw", tmp_path / "rel", labels=LABELS, dims=2,
                      store_path=tmp_path / "s.h5")
    assert desc["patients"]["test"] == ["Case_00003"] and desc["dims"] == 2
    with Store(tmp_path / "s.h5") as st:
        for i, n in enumerate((1, 2, 3)):
            cid = f"Case_{n:05d}"
            hu, mask = abdomen_case(i)
            image, label = st.read(cid)
            np.testing.assert_array_equal(label, mask)
            np.testing.assert_allclose(image, window(hu))
            geometry = ABDOMEN_GEOMETRIES[i % 2]
            assert st.geometry(cid)["origin"] == pytest.approx(geometry["origin"])
            assert st.geometry(cid)["direction"] == pytest.approx(geometry["direction"])
            # the ground truth as the infer stage writes a prediction: the mask file, geometry included
            write_label_nifti(label, st.geometry(cid), tmp_path / f"{cid}.nii.gz")
            ours, theirs = sitk.ReadImage(str(tmp_path / f"{cid}.nii.gz")), sitk.ReadImage(str(files[n][1]))
            assert np.array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs))
            for what in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
                assert np.allclose(getattr(ours, what)(), getattr(theirs, what)(), atol=1e-5), what


def test_a_source_s_own_lists_replace_the_shipped_ones(tmp_path):
    write_abdomen_release(tmp_path / "rel", [7, 8])
    fetch("abdomenct1k", {"layout": "abdomenct1k_raw", "path": str(tmp_path / "rel")}, tmp_path / "a", root=REPO)
    assert _list(tmp_path / "a" / "train.list") == _list(SPLITS / "train.list")
    write_lists(tmp_path / "rel", train=["Case_00007"], test=["Case_00008"])
    fetch("abdomenct1k", {"layout": "abdomenct1k_raw", "path": str(tmp_path / "rel")}, tmp_path / "b", root=REPO)
    assert _list(tmp_path / "b" / "train.list") == ["Case_00007"]
    assert list(read_abdomenct1k_raw(tmp_path / "b", "abdomenct1k")[1].values()) == [["Case_00007"], [], ["Case_00008"]]


@pytest.mark.parametrize("damage, message", [
    ("no_mask", r"test\.list: case 'Case_00005' is listed but its mask Mask/Case_00005\.nii\.gz is not under"),
    ("no_image", r"test\.list: case 'Case_00005' is listed but its image Case_00005_0000\.nii\.gz is not"),
    ("shifted", r"Mask/Case_00005\.nii\.gz: spacing .* differs from the image's"),
    ("label5", r"Case_00005\.nii\.gz: label values \[5\] are outside the dataset's classes \[0, 1, 2, 3, 4\]"),
])
def test_a_broken_release_is_named_and_leaves_no_store(tmp_path, damage, message):
    files = write_abdomen_release(tmp_path / "rel", [4, 5])
    write_lists(tmp_path / "rel", train=["Case_00004"], test=["Case_00005"])
    image, mask = files[5]
    if damage == "no_mask":
        mask.unlink()
    elif damage == "no_image":
        image.unlink()
    else:
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(mask)))
        geo = dict(ABDOMEN_GEOMETRIES[1])
        if damage == "shifted":
            geo["spacing"] = (0.7, 0.68, 1.0)
        else:
            arr[0, 0, 0] = 5
        write_nifti(arr, geo, mask)
    out = tmp_path / "o" / "s.h5"
    with pytest.raises(DataError, match=message):
        preprocess("abdomenct1k", "abdomenct1k_raw", tmp_path / "rel", labels=LABELS, dims=2, store_path=out)
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))


def test_alhvr_tables_on_its_other_datasets():
    from semiseg.config import run_spec, table_runs

    cfg = load_config(root=REPO)
    for name in ("alhvr_abdomenct1k", "alhvr_brats", "alhvr_ablation_abdomenct1k", "alhvr_ablation_brats",
                 "alhvr_beta_abdomenct1k", "alhvr_beta_brats"):
        assert cfg["tables"][name]["dataset"] in ("abdomenct1k", "brats")
    # β 0.7 on AbdomenCT-1K and BraTS (the paper's setting there), 0.8 on ACDC as before
    assert run_spec(cfg, "abdomenct1k", "alhvr", 5, 0)["method"]["params"]["beta"] == 0.7
    assert run_spec(cfg, "abdomenct1k", "alhvr_cgcpcl_only", 5, 0)["method"]["params"]["beta"] == 0.7
    assert run_spec(cfg, "acdc", "alhvr", 10, 0)["method"]["params"]["beta"] == 0.8
    brats = run_spec(cfg, "brats", "alhvr", 10, 0)
    assert brats["method"]["params"]["beta"] == 0.7 and brats["method"]["network"] == "vnet"
    assert (brats["schedule"]["labeled_batch_size"], brats["schedule"]["iterations"]) == (2, 15000)
    betas = [run_spec(cfg, d, m, r, 0)["method"]["params"]["beta"]
             for d, m, r, _ in table_runs(cfg, "alhvr_beta_brats")[::3]]
    assert betas == [0.5, 0.6, 0.7, 0.8, 0.9]
    ref = cfg["tables"]["alhvr_beta_abdomenct1k"]["reference"]["values"]
    assert ref["alhvr"][5]["dice"] == 84.75 == cfg["tables"]["alhvr_abdomenct1k"]["reference"]["values"]["alhvr"][5]["dice"]
