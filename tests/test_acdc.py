"""ACDC for real: the catalogue, the protocol's split, the raw-release importer, the 2D evaluation
protocol on real volumes, checkpoint selection on val, and (slow) the smoke table end to end.

Reads the real data from ../shared/data/ACDC (conftest's ``shared_data_dir``); the raw-release
tests write official-layout NIfTI files from those real volumes into a temporary directory.
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
import torch
from scipy import ndimage

from conftest import REPO
from helpers import data_set_folder, read_list, smoke_rows
from semiseg.config import run_spec
from semiseg.data.acdc import read_acdc_raw, read_info_cfg
from semiseg.errors import DataError
from semiseg.data.layouts import read_slices_layout
from semiseg.data.preprocess import preprocess
from semiseg.data.splits import make_split
from semiseg.data.store import Case, Store, write_store
from semiseg.inference.predict import predict_volume_2d
from semiseg.metrics import case_metrics

LABELS = {"background": 0, "RV": 1, "Myo": 2, "LV": 3}
NAMES = {v: k for k, v in LABELS.items()}
SPLITS = REPO / "config" / "datasets" / "acdc_splits"

# The protocol's split (SSL4MIS's lists, used by UA-MT, BCP and the rest), pinned by patient id.
# Train: list order matters, the labeled patients are its first n.
TRAIN_FIRST_14 = ["patient099", "patient038", "patient050", "patient100", "patient058", "patient021",
                  "patient049", "patient020", "patient072", "patient040", "patient060", "patient089",
                  "patient004", "patient056"]
VAL = ["patient028", "patient085", "patient082", "patient087", "patient019", "patient030", "patient078",
       "patient045", "patient002", "patient039"]
TEST = ["patient011", "patient013", "patient084", "patient033", "patient093", "patient022", "patient068",
        "patient024", "patient083", "patient081", "patient080", "patient001", "patient007", "patient066",
        "patient008", "patient065", "patient075", "patient064", "patient059", "patient052"]
LABELED_SLICES = {3: 68, 7: 136, 14: 256, 70: 1312}


@pytest.fixture(scope="module")
def acdc(shared_data_dir) -> Path:
    return data_set_folder(shared_data_dir, "ACDC", "real ACDC")


# ----------------------------------------------------------------------------- catalogue
def test_the_catalogue_states_the_protocol(cfg):
    ds = cfg["datasets"]["acdc"]
    assert ds["labels"] == LABELS and ds["dims"] == 2 and ds["patch_size"] == [256, 256]
    assert ds["ratios"] == {"5": 3, "10": 7, "20": 14, "100": 70}
    assert ds["source"] == {**ds["source"], "layout": "slices", "path": "../shared/data/ACDC"}
    assert "how_to_get" in ds["source"] and ds.get("default_schedule") == "paper"
    spec = run_spec(cfg, "acdc", "supervised", 10, 0)
    assert spec["schedule"]["name"] == "paper" and spec["labeled_patients"] == 7


def test_the_table_has_the_papers_rows(cfg):
    from semiseg.references import reference_sources, reference_values

    table = cfg["tables"]["acdc"]
    rows = [(r["method"], tuple(r["ratios"])) for r in table["rows"]]
    assert rows[:2] == [("supervised", (5, 10, 20)), ("supervised", (100,))]
    for method in ("mean_teacher", "ua_mt", "cps", "bcp", "alhvr"):
        assert (method, (5, 10, 20)) in rows
    sources = {src["tag"]: src["source"] for src in reference_sources(table)}
    assert set(sources) == {"ALHVR T2", "BUARL T1", "TraCoCo"} and "CVPR 2023" in sources["TraCoCo"]
    ref = reference_values(table)
    bcp = {"dice": 87.59, "jaccard": 78.67, "hd95": 1.90, "asd": 0.67}
    assert ref["bcp"][5] == [("BUARL T1", bcp), ("TraCoCo", bcp)]
    assert ref["bcp"][10][1] == ("TraCoCo", {"dice": 88.84, "jaccard": 80.62, "hd95": 3.98, "asd": 1.17})
    # methods not implemented keep their rows, with the papers' values only; UniMatch runs beside them
    for method, runs in (("ps_mt", False), ("unimatch", True)):
        row = next(r for r in table["rows"] if r["method"] == method)
        assert row.get("run", True) is runs and (method in cfg["methods"]) is runs
        assert set(ref[method]) == set(row["ratios"]) == {5, 10, 20}


# ----------------------------------------------------------------------------- split
def test_the_shipped_split_is_the_common_layouts(acdc):
    for role in ("train", "val", "test"):
        patients = list(dict.fromkeys(c.partition("_frame")[0] for c in read_list(acdc / f"{role}.list")))
        assert read_list(SPLITS / f"{role}.list") == patients, role
    train, val, test = (read_list(SPLITS / f"{r}.list") for r in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    assert train[:14] == TRAIN_FIRST_14 and val == VAL and test == TEST
    assert sorted(train + val + test) == [f"patient{i:03d}" for i in range(1, 101)]


def test_labeled_patients_and_slices_of_each_ratio(acdc, cfg):
    """The split stage's labeled patients hold the slices every paper trains on (7 -> 136)."""
    _, patients = read_slices_layout(acdc, "acdc")  # checks the layout; reads no voxels
    slices: dict[str, int] = {}
    for s in read_list(acdc / "train_slices.list"):
        case = s.rpartition("_slice_")[0]
        slices[case] = slices.get(case, 0) + 1
    cases = {c: {"patient": c.partition("_frame")[0]}
             for role in ("train", "val", "test") for c in read_list(acdc / f"{role}.list")}
    descriptor = {"name": "acdc", "patients": patients, "cases": cases}
    for ratio, n in cfg["datasets"]["acdc"]["ratios"].items():
        split = make_split(descriptor, int(ratio), n)
        assert split["labeled"] == read_list(SPLITS / "train.list")[:n]
        assert split["val"] == VAL and split["test"] == TEST
        assert len(split["cases"]["labeled"]) == 2 * n  # ED + ES of each patient
        assert sum(slices[c] for c in split["cases"]["labeled"]) == LABELED_SLICES[n]


# ----------------------------------------------------------------------------- raw release
def _volume(acdc: Path, case: str) -> tuple[np.ndarray, np.ndarray]:
    """A case of the common layout: its volume file, or its slices stacked (train cases)."""
    path = acdc / "data" / f"{case}.h5"
    if path.is_file():
        with h5py.File(path) as f:
            return f["image"][()], f["label"][()]
    images, labels = [], []
    for i in range(1, 100):
        p = acdc / "data" / "slices" / f"{case}_slice_{i}.h5"
        if not p.is_file():
            break
        with h5py.File(p) as f:
            images.append(f["image"][()])
            labels.append(f["label"][()])
    return np.stack(images), np.stack(labels)


def _write_nifti(array: np.ndarray, spacing_xyz, path: Path) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing_xyz)
    sitk.WriteImage(img, str(path), useCompression=True)


def write_release(root: Path, volumes: dict[str, tuple], *, es_frames: dict[str, int]) -> Path:
    """Write patients in the official release's layout under root/database/training/.

    `volumes`: patient -> (ED image, ED label, ES image, ES label). Images are written as the
    release stores them, on a scanner-like scale (a * x + b), so the importer's min-max matters.
    """
    training = root / "database" / "training"
    for k, (patient, (ed_i, ed_l, es_i, es_l)) in enumerate(volumes.items()):
        pdir = training / patient
        pdir.mkdir(parents=True)
        es = es_frames[patient]
        (pdir / "Info.cfg").write_text(f"ED: 1\nES: {es}\nGroup: NOR\nHeight: 180.0\nNbFrame: 30\nWeight: 80.0\n")
        spacing = (1.5625, 1.5625, 10.0 - k)  # x, y, z as in the NIfTI header
        for frame, image, label in ((1, ed_i, ed_l), (es, es_i, es_l)):
            stem = pdir / f"{patient}_frame{frame:02d}"
            _write_nifti((image * 850.0 + 17.0).astype(np.float32), spacing, Path(f"{stem}.nii.gz"))
            _write_nifti(label.astype(np.uint8), spacing, Path(f"{stem}_gt.nii.gz"))
        _write_nifti(np.zeros((2, 4, 4, 4), np.int16), spacing + (1.0,), pdir / f"{patient}_4d.nii.gz")
    (root / "database" / "MANDATORY_CITATION.md").write_text("Bernard et al., IEEE TMI 2018\n")
    return root / "database"


def test_the_raw_release_imports_as_the_papers_copy(acdc, tmp_path):
    roles = {"train": ["patient099"], "val": ["patient085"], "test": ["patient001"]}
    volumes = {p: (*_volume(acdc, f"{p}_frame01"), *_volume(acdc, f"{p}_frame02"))
               for ps in roles.values() for p in ps}
    release = write_release(tmp_path, volumes, es_frames={"patient099": 9, "patient085": 12, "patient001": 12})
    for role, ps in roles.items():  # this test's own split, in the layout's root
        (release / f"{role}.list").write_text("".join(f"{p}\n" for p in ps))
    desc = preprocess("acdc", "acdc_raw", release, labels=LABELS, dims=2, store_path=tmp_path / "store.h5")
    assert desc["patients"] == roles
    assert list(desc["cases"]) == [f"{p}_frame0{i}" for ps in roles.values() for p in ps for i in (1, 2)]
    with Store(tmp_path / "store.h5") as store:
        for k, patient in enumerate(volumes):
            for i in (1, 2):
                case = f"{patient}_frame0{i}"
                image, label = store.read(case)
                ref_image, ref_label = _volume(acdc, case)
                np.testing.assert_allclose(image, ref_image, atol=2e-6)  # min-max undoes a*x+b
                assert image.min() == 0.0 and image.max() == 1.0
                np.testing.assert_array_equal(label, ref_label)
                assert store.spacing(case) == pytest.approx((10.0 - k, 1.5625, 1.5625))  # z, y, x


def _tiny_release(root: Path) -> Path:
    rng = np.random.default_rng(0)
    vol = {p: (rng.random((3, 16, 12)), rng.integers(0, 4, (3, 16, 12)),
               rng.random((3, 16, 12)), rng.integers(0, 4, (3, 16, 12))) for p in ("patient001", "patient002")}
    release = write_release(root, vol, es_frames={"patient001": 12, "patient002": 7})
    (release / "train.list").write_text("patient001\n")
    (release / "val.list").write_text("")
    (release / "test.list").write_text("patient002\n")
    return release


def test_the_raw_importer_reads_info_cfg_for_the_frames(tmp_path):
    release = _tiny_release(tmp_path)
    assert read_info_cfg(release / "training" / "patient002" / "Info.cfg")["ES"] == "7"
    cases, patients = read_acdc_raw(release, "acdc")
    got = [(c.case_id, Path(c.source).name) for c in cases]
    assert got == [("patient001_frame01", "patient001_frame01.nii.gz"), ("patient001_frame02", "patient001_frame12.nii.gz"),
                   ("patient002_frame01", "patient002_frame01.nii.gz"), ("patient002_frame02", "patient002_frame07.nii.gz")]
    assert patients == {"train": ["patient001"], "val": [], "test": ["patient002"]}


@pytest.mark.parametrize("breakage, match", [
    (lambda r: (r / "training/patient002/patient002_frame07_gt.nii.gz").unlink(), "patient002_frame07_gt.nii.gz"),
    (lambda r: (r / "training/patient001/Info.cfg").unlink(), "Info.cfg does not exist"),
    (lambda r: (r / "training/patient001/Info.cfg").write_text("ED: 1\nGroup: NOR\n"), "no 'ES:' line"),
    (lambda r: (r / "test.list").write_text("patient002\npatient003\n"), "patient003"),
    (lambda r: (r / "val.list").write_text("patient001\n"), "also in train.list"),
    (lambda r: (r / "train.list").unlink(), "split list does not exist"),
    (lambda r: (r / "train.list").write_text("patient001_frame01\n"), "not a patient id"),
    (lambda r: shutil.rmtree(r / "training"), "no patientNNN folders"),
])
def test_a_broken_release_names_the_file_at_fault(tmp_path, breakage, match):
    release = _tiny_release(tmp_path)
    breakage(release)
    with pytest.raises(DataError, match=match):
        cases, _ = read_acdc_raw(release, "acdc")
        list(cases)


def test_a_corrupt_nifti_is_named(tmp_path):
    release = _tiny_release(tmp_path)
    (release / "training/patient001/patient001_frame12.nii.gz").write_bytes(b"not a nifti")
    cases, _ = read_acdc_raw(release, "acdc")
    with pytest.raises(DataError, match="patient001_frame12.nii.gz: cannot read as NIfTI"):
        list(cases)


# ----------------------------------------------------------------------------- evaluation protocol
class Oracle(torch.nn.Module):
    """A 'network' that answers each zoomed slice with the zoomed ground truth, and checks that it
    was given the slice exactly as the papers' protocol zooms it (nearest, to 256 x 256)."""

    def __init__(self, image: np.ndarray, label: np.ndarray, shift: int = 0):
        super().__init__()
        z, y, x = image.shape
        self.images = [ndimage.zoom(image[i], (256 / y, 256 / x), order=0) for i in range(z)]
        self.labels = [np.roll(ndimage.zoom(label[i], (256 / y, 256 / x), order=0), shift, axis=1) for i in range(z)]
        self.seen = 0

    def forward(self, x):
        n = x.shape[0]
        expected = np.stack(self.images[self.seen:self.seen + n])[:, None]
        np.testing.assert_array_equal(x.numpy(), expected)
        lab = torch.from_numpy(np.stack(self.labels[self.seen:self.seen + n]).astype(np.int64))
        self.seen += n
        return torch.nn.functional.one_hot(lab, 4).permute(0, 3, 1, 2).float()


def _reference_protocol(image: np.ndarray, net) -> np.ndarray:
    """SSL4MIS's test_single_volume, slice by slice, written out independently of the package."""
    out = np.zeros(image.shape, np.uint8)
    z, y, x = image.shape
    for i in range(z):
        s = ndimage.zoom(image[i], (256 / y, 256 / x), order=0)
        pred = net(torch.from_numpy(s[None, None].astype(np.float32))).argmax(1)[0].numpy()
        out[i] = ndimage.zoom(pred, (y / 256, x / 256), order=0)
    return out


@pytest.mark.parametrize("case, lossless", [("patient001_frame01", True), ("patient085_frame01", False)])
def test_evaluation_protocol_on_a_real_volume(acdc, case, lossless):
    image, label = _volume(acdc, case)
    pred = predict_volume_2d(Oracle(image, label), image, (256, 256), torch.device("cpu"))
    assert pred.shape == image.shape and pred.dtype == np.uint8  # back on the native grid
    np.testing.assert_array_equal(pred, _reference_protocol(image, Oracle(image, label)))
    rows = case_metrics(pred, label, NAMES, (1.0, 1.0, 1.0))  # the slices layout's voxel units
    if lossless:  # 256 x 216: the zoom there and back restores every voxel
        np.testing.assert_array_equal(pred, label)
        assert [r["dice"] for r in rows] == [1.0, 1.0, 1.0]
    else:  # 288 x 184: 288 -> 256 -> 288 rows loses a few voxels; pinned
        assert int((pred != label).sum()) == 357
        assert [round(r["dice"], 4) for r in rows] == [0.9967, 0.9857, 0.9968]
        assert [round(r["asd"], 4) for r in rows] == [0.0185, 0.0305, 0.018]


def test_distances_are_in_voxels_of_the_native_grid(acdc):
    """The papers call medpy's hd95/asd without a spacing: distances in voxels of the native
    grid. The store made from the papers' layout has unit spacing, so the evaluate stage (which
    passes the store's spacing) reports the same numbers. Checked on a prediction 3 columns off."""
    from medpy.metric import binary

    cases, _ = read_slices_layout(acdc, "acdc")
    assert next(cases).spacing == (1.0, 1.0, 1.0)
    image, label = _volume(acdc, "patient001_frame01")
    pred = predict_volume_2d(Oracle(image, label, shift=3), image, (256, 256), torch.device("cpu"))
    for row in case_metrics(pred, label, NAMES, (1.0, 1.0, 1.0)):
        p, g = pred == row["class"], label == row["class"]
        assert row["hd95"] == pytest.approx(binary.hd95(p, g)) and row["hd95"] > 1.0
        assert row["asd"] == pytest.approx(binary.asd(p, g)) and row["asd"] > 0.0
        assert row["dice"] == pytest.approx(binary.dc(p, g)) and row["dice"] < 1.0


def test_the_checkpoint_is_chosen_on_val_never_on_test(acdc, cfg, tmp_path, monkeypatch):
    import semiseg.engine.loop as loop

    roles = {"labeled": ["patient099_frame01"], "unlabeled": [], "val": ["patient085_frame01", "patient028_frame01"],
             "test": ["patient001_frame01"]}
    cases = [Case(c, c.partition("_frame")[0], *_volume(acdc, c)) for cs in roles.values() for c in cs]
    write_store(tmp_path / "store.h5", name="acdc", dims=2, labels=LABELS, cases=cases)
    split = {"dataset": "acdc", "ratio": 5, "labeled_patients": 1, "cases": roles,
             **{r: sorted({c.partition("_frame")[0] for c in cs}) for r, cs in roles.items()}}
    (tmp_path / "split.json").write_text(json.dumps(split))
    seen: list[list[str]] = []
    scores = iter([0.3, 0.7, 0.5])  # what "validation" answers at iterations 1, 2, 3

    def validate(net, store, cs, *args):
        seen.append(list(cs))
        return next(scores)

    monkeypatch.setattr(loop, "validate", validate)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 3 steps of batch 1: threads only add contention on a busy runner
    spec = run_spec(cfg, "acdc", "supervised", 5, 0)
    spec["device"] = "cpu"
    spec["schedule"].update(iterations=3, labeled_batch_size=1, val_interval=1, checkpoint_interval=3)
    try:
        summary = loop.train(spec, tmp_path / "store.h5", tmp_path / "split.json", tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert seen == [roles["val"]] * 3
    assert summary["best_iteration"] == 2 and summary["best_val_dice"] == 0.7


# ----------------------------------------------------------------------------- the smoke tables
# built by the session fixture `acdc_smoke` (tests/conftest.py) from tests/smoke_targets.py
REGION_FIGURE = "figures/alhvr_regions_acdc_10.png"


def _rows(table: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]


@pytest.mark.slow
def test_the_smoke_acdc_table_on_the_real_data(acdc_smoke):
    res = acdc_smoke
    desc = json.loads((res / "preprocessed" / "acdc" / "dataset.json").read_text())
    assert desc["patients"]["val"] == VAL and desc["patients"]["test"] == TEST
    z = {c: info["shape"][0] for c, info in desc["cases"].items()}
    for ratio, n in (("5", 3), ("10", 7), ("20", 14), ("100", 70)):
        split = json.loads((res / "splits" / "acdc" / f"{ratio}.json").read_text())
        assert split["labeled"] == read_list(SPLITS / "train.list")[:n]
        assert sum(z[c] for c in split["cases"]["labeled"]) == LABELED_SLICES[n]
    table = (res / "tables" / "acdc.md").read_text()
    ran_here, paper_only = smoke_rows(res, "acdc")  # the literature's baselines: the papers' values only
    assert len(_rows(table)) == len(ran_here) + len(paper_only), table
    assert "| U-Net (labeled only) | 7 (10%) | 0 |" in table
    assert "| U-Net (all labeled, upper bound) | 70 (100%) | 0 |" in table
    assert "(paper: BUARL T1, TraCoCo 87.59)" in table and "| BCP | 3 (5%) | 67 (95%) |" in table
    assert "(paper: ALHVR T2 83.65; BUARL T1 79.65)" in table  # MT at 7 labeled, both papers
    # a smoke run on ACDC is no result: the title says so, and each of its cells carries the footnote mark
    assert table.splitlines()[0].endswith("— smoke: 2 of 40 test volumes, 1 iteration — not a result")
    ran = [row for row in _rows(table) if "not run" not in row]
    assert [r.split("|")[1].strip() for r in ran] == ran_here, table
    assert all(row.count("(†)") == 4 and "smoke" not in row for row in ran), table
    # every implemented row ran; the methods not implemented show their paper values only
    not_run = [r.split("|")[1].strip() for r in _rows(table) if "not run" in r]
    assert not_run == paper_only and {"MT", "BCP", "ALHVR", "BUARL (on BCP)"} <= set(ran_here)
    assert "| UniMatch | 14 (20%) | 56 (80%) | not run (paper: TraCoCo 90.47) |" in table
    print(f"\n{table}")


@pytest.mark.slow
@pytest.mark.parametrize("name, paper", [
    ("alhvr_acdc", "(paper 85.34)"),
    ("alhvr_ablation", "(paper 89.32)"),
    ("alhvr_beta", "(paper 90.26)"),
    ("alhvr_regions", "(paper 88.46)"),
])
def test_alhvr_s_tables_build_on_the_real_data(acdc_smoke, name, paper):
    table = (acdc_smoke / "tables" / f"{name}.md").read_text()
    ran_here, paper_only = smoke_rows(acdc_smoke, name)
    assert len(_rows(table)) == len(ran_here) + len(paper_only), table
    assert [r.split("|")[1].strip() for r in _rows(table) if "| not run" in r] == paper_only and "One seed (0)" in table
    ran = [row for row in _rows(table) if "| not run" not in row]
    assert all(re.search(r"\| \d+\.\d\d", row) for row in ran), table  # a measured Dice per row
    assert paper in table


@pytest.mark.slow
def test_the_region_figure_is_drawn_from_the_alhvr_run(acdc_smoke):
    png = acdc_smoke / REGION_FIGURE
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads(png.with_suffix(".provenance.json").read_text())
    assert record["rule"] == "region_figure" and record["wildcards"] == {"dataset": "acdc", "ratio": "10"}
