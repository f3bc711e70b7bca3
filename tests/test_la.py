"""The Left Atrium dataset: the catalogue's protocol, the shipped UA-MT split, the h5 copy (a
trimmed one such as LA-mini keeps its lists, checked against the protocol's), the raw NRRD
release reader (on NRRD files written here from real LA-mini volumes) against the h5 reader, and
(slow) the smoke table end to end on LA-mini.

LA-mini (``../shared/data/LA-mini``, conftest's ``shared_data_dir``) holds 24 real volumes of the
common copy: the first 20 of UA-MT's train.list and the first 4 of its test.list.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO
from helpers import data_set_folder, read_list, smoke_rows
from semiseg.config import run_spec
from semiseg.errors import DataError
from semiseg.data.fetch import fetch, shipped_splits_digest
from semiseg.data.la import crop_box, preprocess_la, read_la_raw
from semiseg.data.layouts import read_la_layout
from semiseg.data.preprocess import READERS
from semiseg.data.splits import make_split

SPLITS = REPO / "config" / "datasets" / "la_splits"
IMAGES = "2018LA_Seg_Training Set"
# UA-MT's data/train.list and test.list (github.com/yulequan/UA-MT), pinned by their ends.
TRAIN_FIRST_16 = ["06SR5RBREL16DQ6M8LWS", "0RZDK210BSMWAA6467LU", "1D7CUD1955YZPGK8XHJX", "1GU15S0GJ6PFNARO469W",
                  "1MHBF3G6DCPWHSKG7XCP", "23X6SY44VT9KFHR7S7OC", "2XL5HSFSE93RMOJDRGR4", "38CWS74285MFGZZXR09Z",
                  "3C2QTUNI0852XV7ZH4Q1", "3DA0T2V6JJ2NLUAV6FWM", "4498CA6DZWELOXCBRYRF", "45C45I6IXAFGNRO067W9",
                  "4CHFJGF6ZUM7CMZTNFQF", "4EPVTT1HPA8U60CDUKXE", "57SGAJMLCTCH92QUA0EE", "5BHTH9RHH3PQT913I59W"]
TEST_FIRST_4 = ["UPT6DX9IQY9JAZ7HJKA7", "UTBUJIWZMKP64E3N73YC", "ULHWPWKKLTE921LQLH1P", "V0MZOWJ6MU3RMRCV9EXR"]


@pytest.fixture(scope="module")
def la_mini(shared_data_dir) -> Path:
    return data_set_folder(shared_data_dir, "LA-mini", "LA-mini")


# ----------------------------------------------------------------------------- catalogue, split
def test_the_catalogue_states_the_protocol(cfg):
    ds = cfg["datasets"]["la"]
    assert ds["dims"] == 3 and ds["network"] == "vnet" and ds["labels"] == {"background": 0, "atrium": 1}
    assert ds["ratios"] == {"5": 4, "10": 8, "20": 16, "100": 80} and ds["train_patients"] == 80
    # the papers' 112 x 112 x 80 patch and 18 x 18 x 4 stride, in the store's (Z, Y, X) order
    assert ds["patch_size"] == [80, 112, 112] and ds["stride"] == [4, 18, 18]
    assert ds["distance_unit"] == "voxel" and ds["largest_component"] is False
    assert ds["source"]["layout"] == "la" and "UA-MT" in ds["source"]["how_to_get"]
    spec = run_spec(cfg, "la", "mean_teacher", 10, 0)
    assert spec["labeled_patients"] == 8 and spec["schedule"]["name"] == "paper"
    assert spec["schedule"]["iterations"] == 6000
    assert (spec["schedule"]["labeled_batch_size"], spec["schedule"]["unlabeled_batch_size"]) == (2, 2)
    assert "largest_component" not in spec["dataset"]  # off: the spec is as without the field


def test_the_shipped_split_is_ua_mt_s():
    train, test = read_list(SPLITS / "train.list"), read_list(SPLITS / "test.list")
    assert (len(train), len(test), len(set(train) | set(test))) == (80, 20, 100)
    assert train[:16] == TRAIN_FIRST_16 and test[:4] == TEST_FIRST_4
    assert not (SPLITS / "val.list").exists()  # the protocol has no validation split


@pytest.mark.data
def test_la_mini_is_a_first_part_of_the_protocol(la_mini):
    assert read_list(la_mini / "train.list") == read_list(SPLITS / "train.list")[:20]
    assert read_list(la_mini / "test.list") == read_list(SPLITS / "test.list")[:4]


def test_labeled_volumes_are_the_first_of_the_train_list(cfg):
    train, test = read_list(SPLITS / "train.list"), read_list(SPLITS / "test.list")
    descriptor = {"name": "la", "patients": {"train": train, "val": [], "test": test},
                  "cases": {c: {"patient": c} for c in train + test}}
    for ratio, n in cfg["datasets"]["la"]["ratios"].items():
        split = make_split(descriptor, int(ratio), n)
        assert split["labeled"] == train[:n] == split["cases"]["labeled"]
        assert split["unlabeled"] == train[n:] and split["val"] == [] and split["test"] == test
    assert make_split(descriptor, 5, 4)["labeled"] == TRAIN_FIRST_16[:4]


# ----------------------------------------------------------------------------- the h5 copy
@pytest.mark.data
def test_a_trimmed_copy_keeps_its_lists_and_a_wrong_one_is_refused(la_mini, tmp_path):
    record = fetch("la", {"layout": "la", "path": str(la_mini)}, tmp_path / "raw", root=REPO)
    assert read_list(tmp_path / "raw" / "train.list") == read_list(la_mini / "train.list")
    assert record["source"]["splits_checked_against"] == str(SPLITS.resolve())
    assert "train.list" in record["files"] and len([f for f in record["files"] if f.endswith(".h5")]) == 24

    bad = tmp_path / "bad"
    (bad / IMAGES).mkdir(parents=True)
    (bad / "train.list").write_text("\n".join([TRAIN_FIRST_16[1], TRAIN_FIRST_16[0]]) + "\n")
    (bad / "test.list").write_text(TEST_FIRST_4[0] + "\n")
    with pytest.raises(DataError, match=r"train\.list.*line 1 is '0RZDK210BSMWAA6467LU'.*first part"):
        fetch("la", {"layout": "la", "path": str(bad)}, tmp_path / "raw2", root=REPO)
    assert not (tmp_path / "raw2").exists()


def test_a_copy_without_lists_gets_the_protocol_s(tmp_path):
    src = tmp_path / "src"
    (src / IMAGES / "X").mkdir(parents=True)
    (src / IMAGES / "X" / "mri_norm2.h5").write_bytes(b"not read by fetch")
    fetch("la", {"layout": "la", "path": str(src)}, tmp_path / "raw", root=REPO)
    assert read_list(tmp_path / "raw" / "train.list") == read_list(SPLITS / "train.list")
    assert not (tmp_path / "raw" / "val.list").exists()
    assert shipped_splits_digest("la", REPO) == shipped_splits_digest("la_raw", REPO) != "none"


# ----------------------------------------------------------------------------- the raw release
def test_crop_box_worked_example():
    # label at 50..130 of 200 (extent 80): 16 more on each side to reach 112, plus the margin 15
    assert crop_box(50, 130, 200) == slice(19, 161)
    assert crop_box(5, 150, 160) == slice(0, 160)  # wide label: margin only, clipped at the edges
    assert crop_box(50, 130, 200, margin=10) == slice(24, 156)


def test_preprocess_la_by_hand():
    image = np.arange(4 * 150 * 160, dtype=np.float32).reshape(4, 150, 160)
    mask = np.zeros(image.shape, np.uint8)
    mask[1:3, 60:71, 40:51] = 255  # 10 x 10 in-plane extent (indices 60..70, 40..50)
    mask[0, 0, 0] = 1  # not the atrium: only 255 counts
    img, lab = preprocess_la(image, mask)
    # Y: 60 - 15 - 51 = -6 -> 0 .. 70 + 15 + 51 = 136; X: 40 - 15 - 51 < 0 -> 0 .. 50 + 66 = 116
    assert img.shape == lab.shape == (4, 136, 116)
    assert lab.sum() == 2 * 11 * 11 and set(np.unique(lab)) == {0, 1} and lab[0, 0, 0] == 0
    z = (image - image.mean()) / image.std()  # over the whole volume, before cropping
    np.testing.assert_allclose(img, z[:, :136, :116], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="no voxel of value 255"):
        preprocess_la(image, np.zeros_like(mask))


def _write_nrrd(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(array)
    img.SetSpacing((0.625, 0.625, 0.625))
    sitk.WriteImage(img, str(path), useCompression=True)


def write_raw_release(root: Path, la_mini: Path, train: list[str], test: list[str], pad=(0, 30, 25)) -> dict:
    """Real LA-mini volumes written back in the release's layout: the h5 copy's (Z, Y, X) volume,
    placed in a larger in-plane canvas (as the uncropped scan was), intensities as scanner
    integers, the atrium as 255. Returns {case: (offset in the canvas, h5 label)}."""
    placed = {}
    for case in train + test:
        with h5py.File(la_mini / IMAGES / case / "mri_norm2.h5") as f:
            image = f["image"][()].transpose(2, 1, 0)
            label = f["label"][()].transpose(2, 1, 0)
        canvas = [s + 2 * p for s, p in zip(image.shape, pad)]
        raw = np.zeros(canvas, np.uint16)
        mask = np.zeros(canvas, np.uint8)
        inner = tuple(slice(p, p + s) for p, s in zip(pad, image.shape))
        raw[inner] = np.clip(image * 40 + 300, 0, None).astype(np.uint16)
        mask[inner] = label * 255
        _write_nrrd(raw, root / "Training Set" / case / "lgemri.nrrd")
        _write_nrrd(mask, root / "Training Set" / case / "laendo.nrrd")
        placed[case] = (pad, label)
    (root / "train.list").write_text("\n".join(train) + "\n")
    (root / "test.list").write_text("\n".join(test) + "\n")
    return placed


@pytest.mark.data
def test_the_raw_and_h5_readers_give_the_same_cases_and_labels(la_mini, tmp_path):
    train, test = TRAIN_FIRST_16[:2], TEST_FIRST_4[:1]
    placed = write_raw_release(tmp_path / "release", la_mini, train, test)
    # through the fetch stage: the release's own (first-part) lists are kept, checked
    fetch("la", {"layout": "la_raw", "path": str(tmp_path / "release")}, tmp_path / "raw", root=REPO)
    raw_cases, raw_patients = READERS["la_raw"](tmp_path / "raw", "la")
    raw_cases = list(raw_cases)

    h5_copy = tmp_path / "h5"
    for case in train + test:
        (h5_copy / IMAGES / case).mkdir(parents=True)
        shutil.copy(la_mini / IMAGES / case / "mri_norm2.h5", h5_copy / IMAGES / case / "mri_norm2.h5")
    (h5_copy / "train.list").write_text("\n".join(train) + "\n")
    (h5_copy / "test.list").write_text("\n".join(test) + "\n")
    h5_cases, h5_patients = read_la_layout(h5_copy, "la")
    h5_cases = list(h5_cases)

    assert raw_patients == h5_patients == {"train": train, "val": [], "test": test}
    assert [c.case_id for c in raw_cases] == [c.case_id for c in h5_cases] == train + test
    for raw, h5 in zip(raw_cases, h5_cases):
        assert set(np.unique(raw.label)) == set(np.unique(h5.label)) == {0, 1}
        assert raw.label.sum() == h5.label.sum()  # every atrium voxel, none added
        assert raw.image.dtype == np.float32 and raw.label.dtype == np.uint8
        assert raw.image.shape[0] == h5.image.shape[0] == 88  # slices are never cropped
        assert min(raw.image.shape[1:]) >= 112
        # where the raw crop lands in the canvas: its label equals the h5 label there
        pad, label = placed[raw.case_id]
        full = np.zeros([s + 2 * p for s, p in zip(label.shape, pad)], np.uint8)
        full[tuple(slice(p, p + s) for p, s in zip(pad, label.shape))] = label
        ys, xs = np.nonzero(full.any(0))[0], np.nonzero(full.any((0, 1)))[0]
        y0 = crop_box(int(ys.min()), int(ys.max()), full.shape[1]).start
        x0 = crop_box(int(xs.min()), int(xs.max()), full.shape[2]).start
        np.testing.assert_array_equal(raw.label, full[:, y0:y0 + raw.label.shape[1], x0:x0 + raw.label.shape[2]])
        # z-scored over the uncropped scan: where the crop overlaps the h5 volume, its intensities
        # are an increasing affine map of the h5 copy's (scanner integers: correlation, not equality)
        ys_ = slice(max(y0, pad[1]), min(y0 + raw.image.shape[1], pad[1] + label.shape[1]))
        xs_ = slice(max(x0, pad[2]), min(x0 + raw.image.shape[2], pad[2] + label.shape[2]))
        mine = raw.image[:, ys_.start - y0:ys_.stop - y0, xs_.start - x0:xs_.stop - x0]
        theirs = h5.image[:, ys_.start - pad[1]:ys_.stop - pad[1], xs_.start - pad[2]:xs_.stop - pad[2]]
        assert mine.shape == theirs.shape and mine.size > 0.5 * h5.image.size
        assert np.corrcoef(mine.ravel(), theirs.ravel())[0, 1] > 0.999


@pytest.mark.data
def test_a_broken_release_is_named(la_mini, tmp_path):
    write_raw_release(tmp_path / "r", la_mini, TRAIN_FIRST_16[:1], TEST_FIRST_4[:1])
    (tmp_path / "r" / "Training Set" / TEST_FIRST_4[0] / "laendo.nrrd").unlink()
    with pytest.raises(DataError, match=rf"{TEST_FIRST_4[0]}.*laendo\.nrrd does not exist"):
        read_la_raw(tmp_path / "r", "la")
    empty = np.zeros((4, 120, 120), np.uint8)
    _write_nrrd(empty, tmp_path / "r" / "Training Set" / TEST_FIRST_4[0] / "laendo.nrrd")
    _write_nrrd(np.ones((4, 120, 120), np.uint16),
                tmp_path / "r" / "Training Set" / TEST_FIRST_4[0] / "lgemri.nrrd")
    cases, _ = read_la_raw(tmp_path / "r", "la")
    next(cases)
    with pytest.raises(DataError, match=r"laendo\.nrrd.*no voxel of value 255"):
        next(cases)


# ----------------------------------------------------------------------------- the papers' values
# The Dice cells the smoke table must show (the test below renders them from the catalogue): the
# papers disagree on V-Net at 8 labeled; UA-MT at 16 comes from CRLN's Table 2 only.
VNET_8_PAPERS = "(paper: BUARL T2 82.74; SGRS-Net T2 78.57)"
UAMT_16_PAPERS = "(paper: CRLN T2 88.78)"


def _rows(table: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]


def _cells(table: str) -> dict[tuple[str, str], list[str]]:
    """(row label, Labeled cell) -> the four metric cells of a rendered table."""
    out = {}
    for line in _rows(table):
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        out[(cells[0], cells[1])] = cells[3:]
    return out


def test_the_la_table_shows_each_papers_value_with_its_source(cfg):
    from semiseg.reporting.tables import build_table

    table = cfg["tables"]["la"]
    results = {(row["method"], int(r), s): None for row in table["rows"] if row.get("run", True)
               for r in row["ratios"] for s in table["seeds"]}
    results[("supervised", 10, 0)] = {"dice": 0.8, "jaccard": 0.7, "hd95": 10.0, "asd": 3.0}
    info = {"train_patients": 80, "labeled_patients": {int(k): v for k, v in cfg["datasets"]["la"]["ratios"].items()}}
    text = build_table(table, dataset_info=info, results=results, footer={})
    cells = _cells(text)
    assert len(cells) == 31
    assert cells[("V-Net (labeled only)", "8 (10%)")] == [
        f"80.00 {VNET_8_PAPERS}", "70.00 (paper: BUARL T2 71.72; SGRS-Net T2 66.96)",
        "10.00 (paper: BUARL T2 13.35; SGRS-Net T2 21.20)", "3.00 (paper: BUARL T2 3.26; SGRS-Net T2 6.07)"]
    # where the papers agree, the value prints once with both sources
    assert cells[("V-Net (labeled only)", "4 (5%)")][0] == "not run (paper: BUARL T2, SGRS-Net T2 52.55)"
    assert cells[("V-Net (labeled only)", "16 (20%)")] == ["not run"] * 4  # no paper reports it
    assert cells[("UA-MT", "16 (20%)")][0] == f"not run {UAMT_16_PAPERS}"
    # CRLN prints ASD before 95HD: each lands in its own column
    assert cells[("UA-MT", "8 (10%)")][2:] == ["not run (paper: CRLN T1 13.84)", "not run (paper: CRLN T1 3.36)"]
    assert cells[("BCP", "8 (10%)")] == [
        "not run (paper: BUARL T2, SGRS-Net T2 89.62; CRLN T1 best 89.83)",
        "not run (paper: BUARL T2, SGRS-Net T2 81.31; CRLN T1 best 81.64)",
        "not run (paper: BUARL T2, SGRS-Net T2 6.81; CRLN T1 best 6.92)",
        "not run (paper: BUARL T2, SGRS-Net T2 1.76; CRLN T1 best 1.84)"]
    assert cells[("URPC", "8 (10%)")][0] == "not run (paper: BUARL T2 86.92; SGRS-Net T2, CRLN T1 85.01)"
    # SGRS-Net's URPC ASD at 4 labeled is garbled in its text: only BUARL's shows
    assert cells[("URPC", "4 (5%)")][3] == "not run (paper: BUARL T2 3.65)"
    assert cells[("CRLN", "16 (20%)")][:2] == ["not run (paper: CRLN T2 91.88; CRLN T2 best 91.95)",
                                                "not run (paper: CRLN T2 85.05)"]
    assert cells[("SGRS-Net", "4 (5%)")][0] == "not run (paper: SGRS-Net T2 89.70)"
    footer = next(line for line in text.splitlines() if line.startswith("- Paper values"))
    for tag in ("BUARL T2", "SGRS-Net T2", "CRLN T1", "CRLN T1 best", "CRLN T2", "CRLN T2 best"):
        assert f"{tag}: " in footer
    # a smoke run's cell, as the smoke table has it: its footnote mark, then the papers' values
    smoke = {("supervised", 10, 0): {"schedule": "smoke", "iterations": 1, "test_cases": 1,
                                     "test_stride": [80, 112, 112]}}
    text = build_table(table, dataset_info={**info, "test_cases": 20, "own_schedule": "paper"}, results=results,
                       footer={}, run_info=smoke)
    assert _cells(text)[("V-Net (labeled only)", "8 (10%)")][0] == (
        f"80.00 (†) {VNET_8_PAPERS}")
    assert "Not a result: † smoke: 1 of 20 test volumes at stride 80×112×112, 1 iteration — not a result." in text


# ----------------------------------------------------------------------------- the smoke table
# built by the session fixture `la_smoke` (tests/conftest.py) from tests/smoke_targets.py


@pytest.mark.slow
@pytest.mark.data
def test_the_la_smoke_table_on_la_mini(la_smoke, la_mini):
    res = la_smoke
    desc = json.loads((res / "preprocessed" / "la" / "dataset.json").read_text())
    assert desc["patients"] == {"train": read_list(la_mini / "train.list"), "val": [], "test": TEST_FIRST_4}
    for ratio, n in (("5", 4), ("10", 8), ("20", 16), ("100", 20)):
        split = json.loads((res / "splits" / "la" / f"{ratio}.json").read_text())
        assert split["labeled"] == read_list(SPLITS / "train.list")[:n] and split["val"] == []
    assert json.loads((res / "splits" / "la" / "5.json").read_text())["labeled"] == TRAIN_FIRST_16[:4]
    # the protocol ran: V-Net on 80 x 112 x 112 patches, last weights, sliding window on the test case
    config = json.loads((res / "runs" / "la" / "ua_mt" / "10" / "seed0" / "config.json").read_text())
    assert config["spec"]["dataset"]["patch_size"] == [80, 112, 112]
    assert config["spec"]["method"]["network"] == "vnet"
    # the smoke schedule's coarser stride (one patch: 8 windows, not 45), named in the table
    assert config["spec"]["dataset"]["stride"] == config["spec"]["schedule"]["test_stride"] == [80, 112, 112]
    assert config["summary"]["best_iteration"] == config["summary"]["iterations"]  # no val: the last weights
    predictions = sorted((res / "runs" / "la" / "bcp" / "5" / "seed0" / "predictions").glob("*.nii.gz"))
    assert [p.name for p in predictions] == [f"{TEST_FIRST_4[0]}.nii.gz"]
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(predictions[0]))).shape == (88, 132, 175)

    table = (res / "tables" / "la.md").read_text()
    rows = _rows(table)
    ran_here, paper_only = smoke_rows(res, "la")  # the literature's baselines at 8 labeled only
    assert len(rows) == len(ran_here) + len(paper_only), table
    assert "| V-Net (labeled only) | 8 (10%) | 0 |" in table
    assert "| V-Net (all labeled, upper bound) | 20 (100%) | 0 |" in table
    cells = _cells(table)
    assert VNET_8_PAPERS in cells[("V-Net (labeled only)", "8 (10%)")][0], table
    assert UAMT_16_PAPERS in cells[("UA-MT", "16 (20%)")][0], table
    not_run = [row.split("|")[1].strip() for row in rows if "not run" in row]
    assert not_run == paper_only, table
    measured = [row for row in rows if "not run" not in row]
    assert [row.split("|")[1].strip() for row in measured] == ran_here, table
    assert {"URPC", "MC-Net", "SS-Net", "CAML"} <= set(ran_here), table  # the literature's baselines run
    assert all(re.search(r"\| \d+\.\d\d", row) for row in measured), table
    assert "BUARL" in table and "Post-processing" not in table  # off in this protocol
    assert "1 of 4 test volumes at stride 80×112×112, 1 iteration — not a result" in table
    print(f"\n{table}")
