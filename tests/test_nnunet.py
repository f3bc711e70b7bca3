"""The ``nnunet`` layout: nnU-Net v2 and Decathlon datasets written here (3-D, two channels), read
into a store through the fetch and preprocess stages; the splits; every bad input named."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_data import CHANNELS, LABELS, ORIGIN, SHAPE, SPACING, case_arrays, write_v1, write_v2
from semiseg.data.fetch import fetch
from semiseg.data.nnunet import read_nnunet_raw
from semiseg.data.preprocess import preprocess
from semiseg.data.store import Store
from semiseg.errors import DataError

SEEDED = {"seed": 3, "val": 1}


def _cases(root, **kwargs):
    cases, roles = read_nnunet_raw(root, "tiny", **{"split": SEEDED, **kwargs})
    return list(cases), roles


@pytest.fixture
def v2(tmp_path):
    return write_v2(tmp_path / "Dataset001_Tiny")


@pytest.fixture
def v1(tmp_path):
    return write_v1(tmp_path / "Task05_Prostate")


@pytest.mark.parametrize("form", ["v2", "v1"])
def test_both_forms_read_the_same_cases(form, request):
    root = request.getfixturevalue(form)
    cases, roles = _cases(root, channel="ADC", normalize="none", labels=LABELS)
    ids = sorted(c.case_id for c in cases if c.case_id not in roles["test"])
    prefix = "case_0" if form == "v2" else "prostate_"
    assert len(ids) == 6 and all(i.startswith(prefix) for i in ids)
    assert len(roles["val"]) == 1 and len(roles["train"]) == 5 and len(roles["test"]) == 2
    for case in cases:
        index = int(case.case_id.rsplit("_", 1)[1])
        channels, label = case_arrays(index)
        np.testing.assert_array_equal(case.image, channels[CHANNELS.index("ADC")])
        np.testing.assert_array_equal(case.label, label)
        assert case.spacing == pytest.approx(tuple(reversed(SPACING))) and case.origin == pytest.approx(ORIGIN)
        assert case.patient == case.case_id


def test_channel_by_index_and_zscore(v2):
    cases, _ = _cases(v2, channel=0)
    t2 = case_arrays(int(cases[0].case_id[-3:]))[0][0]
    np.testing.assert_allclose(cases[0].image, (t2 - t2.mean()) / t2.std(), atol=1e-4)


def test_seeded_split_is_reproducible_and_draws_test_from_training(v2):
    _, a = _cases(v2, split={"seed": 7, "val": 1, "test": 2})
    _, b = _cases(v2, split={"seed": 7, "val": 1, "test": 2})
    _, c = _cases(v2, split={"seed": 8, "val": 1, "test": 2})
    assert a == b and a != c
    assert [len(a[r]) for r in ("train", "val", "test")] == [3, 1, 2]
    assert sorted(a["train"] + a["val"] + a["test"]) == [f"case_{i:03d}" for i in range(6)]


def test_a_fold_of_splits_final(v2):
    _, roles = _cases(v2, split={"fold": 1})
    assert roles == {"train": [f"case_{i:03d}" for i in range(4)], "val": ["case_004", "case_005"],
                     "test": ["case_006", "case_007"]}


def test_preprocess_through_fetch(v1, tmp_path):
    raw = tmp_path / "raw"
    fetch("tiny", {"layout": "nnunet", "path": str(v1)}, raw)
    desc = preprocess("tiny", "nnunet", raw, labels=LABELS, dims=3, store_path=tmp_path / "store.h5",
                      params={"channel": "T2", "split": SEEDED})
    assert [len(desc["patients"][r]) for r in ("train", "val", "test")] == [5, 1, 2]
    with Store(tmp_path / "store.h5") as store:
        assert store.labels == LABELS and len(store) == 8
        assert store.shape("prostate_06") == SHAPE
        assert store.geometry("prostate_06")["spacing"] == pytest.approx(SPACING)


# -- bad inputs: each names the file at fault --------------------------------------------------------


def _raises(root, name, **kwargs):
    with pytest.raises(DataError) as err:
        cases, _ = read_nnunet_raw(root, "tiny", **{"split": SEEDED, **kwargs})
        list(cases)
    assert err.value.path.endswith(name), err.value
    return str(err.value)


def test_a_missing_channel_file(v2):
    (v2 / "imagesTr" / "case_002_0001.nii.gz").unlink()
    assert "missing" in _raises(v2, "imagesTr/case_002_0001.nii.gz")


def test_a_missing_decathlon_file(v1):
    (v1 / "imagesTr" / "prostate_01.nii.gz").unlink()
    assert "training[1]" in _raises(v1, "imagesTr/prostate_01.nii.gz")


def test_label_values_outside_labels(v2):
    label = sitk.ReadImage(str(v2 / "labelsTr" / "case_004.nii.gz"))
    array = sitk.GetArrayFromImage(label)
    array[0, 0, 0] = 5
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(label)
    sitk.WriteImage(out, str(v2 / "labelsTr" / "case_004.nii.gz"))
    assert "[5]" in _raises(v2, "labelsTr/case_004.nii.gz")


@pytest.mark.parametrize("what", ["channel", "label"])
def test_geometry_mismatch(v2, what):
    path = v2 / ("imagesTr/case_001_0001.nii.gz" if what == "channel" else "labelsTr/case_001.nii.gz")
    img = sitk.ReadImage(str(path))
    img.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(img, str(path))
    assert "origin" in _raises(v2, path.relative_to(v2).as_posix())


def test_a_decathlon_image_with_too_few_channels(v1):
    path = v1 / "imagesTr" / "prostate_03.nii.gz"
    img = sitk.ReadImage(str(path))
    sitk.WriteImage(img[:, :, :, 0], str(path))
    assert "1 channel(s)" in _raises(v1, "imagesTr/prostate_03.nii.gz")


def test_num_training_disagrees_with_the_folder(v2):
    meta = json.loads((v2 / "dataset.json").read_text())
    (v2 / "dataset.json").write_text(json.dumps({**meta, "numTraining": 9}))
    assert "numTraining is 9" in _raises(v2, "dataset.json")


def test_an_image_without_its_label(v2):
    (v2 / "labelsTr" / "case_003.nii.gz").unlink()
    _raises(v2, "imagesTr/case_003_0000.nii.gz")


def test_a_decathlon_label_not_in_the_training_list(v1):
    shutil.copy(v1 / "labelsTr" / "prostate_00.nii.gz", v1 / "labelsTr" / "extra.nii.gz")
    assert "not in the 'training' list" in _raises(v1, "labelsTr/extra.nii.gz")


def test_labels_that_differ_from_the_catalogue(v2):
    assert "differ from the catalogue" in _raises(v2, "dataset.json", labels={"background": 0, "tumour": 1})


def test_an_unknown_channel(v2):
    assert "'DWI'" in _raises(v2, "dataset.json", channel="DWI")


def test_a_fold_naming_a_case_the_folder_lacks(v2):
    (v2 / "splits_final.json").write_text(json.dumps([{"train": ["case_000", "case_999"], "val": []}]))
    assert "case_999" in _raises(v2, "splits_final.json", split={"fold": 0})


def test_no_test_cases(v2):
    shutil.rmtree(v2 / "labelsTs")
    _raises(v2, "labelsTs")


# -- through the command line: fetch, preprocess, split, export to nnU-Net and back ------------------


def test_the_stages_and_the_export_read_back_identically(v2, tmp_path):
    from semiseg.cli import main
    from semiseg.data.nnunet import read_dataset_json

    results = tmp_path / "results"
    store, descriptor = results / "preprocessed/tiny/store.h5", results / "preprocessed/tiny/dataset.json"
    params = {"channel": "T2", "split": {"fold": 0}, "normalize": "none"}
    assert main(["fetch", "--dataset", "tiny", "--source", json.dumps({"layout": "nnunet", "path": str(v2)}),
                 "--out", str(results / "raw/tiny")]) == 0
    assert main(["preprocess", "--dataset", "tiny", "--layout", "nnunet", "--raw", str(results / "raw/tiny"),
                 "--labels", json.dumps(LABELS), "--dims", "3", "--params", json.dumps(params),
                 "--store", str(store), "--descriptor", str(descriptor)]) == 0
    assert main(["split", "--descriptor", str(descriptor), "--ratio", "50", "--labeled-patients", "2",
                 "--out", str(results / "splits/tiny/50.json")]) == 0
    split = json.loads((results / "splits/tiny/50.json").read_text())
    assert split["labeled"] == ["case_002", "case_003"] and split["val"] == ["case_000", "case_001"]

    assert main(["export", "--format", "nnunet", "tiny", "50", "--results", str(results)]) == 0
    out = results / "nnunet_raw" / "Dataset500_tiny_50pct"
    meta = read_dataset_json(out)
    assert meta.version == 2 and meta.labels == LABELS and meta.channels == {0: "image"}
    assert json.loads((out / "splits_final.json").read_text()) == [{"train": split["labeled"], "val": split["val"]}]
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["case_006_0000.nii.gz", "case_007_0000.nii.gz"]

    cases, roles = read_nnunet_raw(out, "back", split={"fold": 0}, normalize="none", labels=LABELS)
    assert roles == {"train": split["labeled"], "val": split["val"], "test": split["test"]}
    with Store(store) as original:
        for case in cases:
            image, label = original.read(case.case_id)
            np.testing.assert_array_equal(case.image, image)
            np.testing.assert_array_equal(case.label, label)
            geometry = original.geometry(case.case_id)
            assert case.spacing == tuple(reversed(geometry["spacing"])) and case.origin == geometry["origin"]
            assert case.direction == geometry["direction"]


# -- a user's dataset through config alone ------------------------------------------------------------


def _own_dataset(name: str, params: dict, dims: int) -> dict:
    """A catalogue entry as docs/datasets.md has a user write it (the path in config.yaml's sources)."""
    return {name: {
        "description": f"{name}: a user's own data in nnU-Net's layout.",
        "source": {"layout": "nnunet", "params": params},
        "dims": dims, "network": "unet", "labels": LABELS, "ratios": {"40": 2, "100": 5},
        # four levels: an 8-slice patch halves three times
        "network_args": {"channels": [4, 8, 16, 32], "dropout": [0.0, 0.0, 0.1, 0.2]},
        "patch_size": [16, 16] if dims == 2 else [8, 16, 16], "stride": [4, 8, 8], "schedule": "smoke"}}


def _own_workflow(root, v2, v1):
    from conftest import make_workflow, shipped_datasets, write_yaml

    tables = {f"own_{name}": {"title": f"Own data {name}", "dataset": name, "seeds": [0],
                              "rows": [{"method": "supervised", "ratios": [40]}]} for name in ("mine_v2", "mine_v1")}
    make_workflow(root, tables=tables)
    write_yaml(root / "config" / "datasets" / "mine.yaml", {
        # both channels as the networks' input, by name and by index
        **_own_dataset("mine_v2", {"channel": ["T2", "ADC"], "split": {"fold": 0}}, dims=2),
        **_own_dataset("mine_v1", {"channel": [0, 1], "split": {"seed": 0, "val": 1, "test": 2}}, dims=3)})
    write_yaml(root / "config" / "config.yaml", {
        "tables": list(tables), "schedule": None, "device": "cpu", "results": "results",
        "sources": {"mine_v2": {"path": str(v2)}, "mine_v1": {"path": str(v1)}},
        "catalogues": {"other_datasets": shipped_datasets()}})
    return root


def test_a_user_dataset_needs_only_a_config_entry(v2, v1, tmp_path):
    from semiseg.config import dataset_source, load_config, ratio_patients, run_spec

    cfg = load_config(root=_own_workflow(tmp_path / "wf", v2, v1))
    source = dataset_source(cfg, "mine_v2")
    assert source["path"] == str(v2)
    assert source["params"] == {"channel": ["T2", "ADC"], "split": {"fold": 0}, "normalize": "zscore"}
    assert ratio_patients(cfg, "mine_v1", "40") == 2
    assert run_spec(cfg, "mine_v1", "supervised", 40, 0)["dataset"]["channels"] == 2


@pytest.mark.slow
def test_a_table_on_each_form_through_config_alone(v2, v1, tmp_path):
    from conftest import snakemake

    root = _own_workflow(tmp_path / "wf", v2, v1)
    proc = snakemake(root, "--set-threads", "train=1", "infer=1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name, test_cases in (("mine_v2", ["case_006", "case_007"]), ("mine_v1", None)):
        table = (root / "results" / "tables" / f"own_{name}.md").read_text()
        assert "Supervised" in table or "supervised" in table
        split = json.loads((root / "results" / "splits" / name / "40.json").read_text())
        if test_cases:
            assert split["test"] == test_cases
        assert len(split["labeled"]) == 2 and len(split["test"]) == 2
        # both channels in: the store's images, the trained network's first convolution, its predictions
        with Store(root / "results" / "preprocessed" / name / "store.h5") as store:
            assert store.channels == 2
        run = root / "results" / "runs" / name / "supervised" / "40" / "seed0"
        first = next(w for w in torch.load(run / "model.pt").values() if w.dim() > 2)
        assert first.shape[1] == 2
        predicted = {p.name for p in (run / "predictions").glob("*.nii.gz")}
        assert predicted and predicted <= {f"{c}.nii.gz" for c in split["test"]}


# -- another tool's predictions, scored as a run is ------------------------------------------------------


@pytest.fixture
def scored(v2, tmp_path):
    """A store and split of the v2 dataset, and a folder predicting its test cases (the labels,
    with one voxel changed), as another tool would write it: the label files' own geometry."""
    from semiseg.data.splits import make_split

    desc = preprocess("tiny", "nnunet", v2, labels=LABELS, dims=3, store_path=tmp_path / "store.h5",
                      params={"split": {"fold": 0}})
    (tmp_path / "split.json").write_text(json.dumps(make_split(desc, 50, 2)))
    preds = tmp_path / "preds"
    preds.mkdir()
    for case in ("case_006", "case_007"):
        img = sitk.ReadImage(str(v2 / "labelsTs" / f"{case}.nii.gz"))
        array = sitk.GetArrayFromImage(img)
        array[4, 8, 8] = 2
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(img)
        sitk.WriteImage(out, str(preds / f"{case}.nii.gz"))
    return tmp_path / "store.h5", tmp_path / "split.json", preds


def test_external_predictions_score_as_a_run_does(scored, tmp_path):
    from semiseg.cli import main
    from semiseg.metrics.csv_io import read_metrics_csv
    from semiseg.metrics.evaluate import evaluate
    from semiseg.provenance import path_digest

    store, split, preds = scored
    assert main(["evaluate-external", "--predictions", str(preds), "--store", str(store), "--split", str(split),
                 "--out", str(tmp_path / "external.csv")]) == 0
    evaluate(preds, store, tmp_path / "run.csv")
    external, run = read_metrics_csv(tmp_path / "external.csv"), read_metrics_csv(tmp_path / "run.csv")
    assert len(external) == 4 and external.equals(run)  # 2 cases x 2 foreground classes
    assert ((external["dice"] > 0.98) & (external["dice"] < 1.0)).all()  # one voxel of core called rim
    record = json.loads((tmp_path / "provenance.evaluate-external.json").read_text())
    assert record["spec"]["predictions"] == {"folder": str(preds.resolve()), "cases": 2,
                                             "sha256": path_digest(preds)["sha256"]}


def _external_raises(scored, name):
    from semiseg.metrics.external import evaluate_external

    store, split, preds = scored
    with pytest.raises(DataError) as err:
        evaluate_external(preds, store, split, preds.parent / "m.csv")
    assert err.value.path.endswith(name), err.value
    return str(err.value)


def test_external_missing_case(scored):
    (scored[2] / "case_007.nii.gz").unlink()
    assert "missing" in _external_raises(scored, "preds/case_007.nii.gz")


def test_external_extra_case(scored):
    shutil.copy(scored[2] / "case_007.nii.gz", scored[2] / "case_001.nii.gz")
    assert "extra" in _external_raises(scored, "preds/case_001.nii.gz")


def test_external_geometry_mismatch(scored):
    path = scored[2] / "case_006.nii.gz"
    img = sitk.ReadImage(str(path))
    img.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(img, str(path))
    assert "spacing" in _external_raises(scored, "preds/case_006.nii.gz")


def test_external_label_outside_the_classes(scored):
    path = scored[2] / "case_006.nii.gz"
    img = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(img)
    array[0, 0, 0] = 7
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(path))
    assert "[7]" in _external_raises(scored, "preds/case_006.nii.gz")
