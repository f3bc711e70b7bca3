"""A failing data job names the file and the problem, exits non-zero and leaves no output."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from semiseg.data.synthetic import write_synthetic2d

LABELS = json.dumps({"background": 0, "RV": 1, "Myo": 2, "LV": 3})


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return write_synthetic2d(tmp_path_factory.mktemp("src") / "raw", seed=1, n_train=3, n_val=1, n_test=1,
                             slices=(2, 3), size=(32, 32))


def semiseg(*args):
    return subprocess.run([sys.executable, "-m", "semiseg.cli", *map(str, args)], capture_output=True, text=True)


def preprocess(raw, out):
    return semiseg("preprocess", "--dataset", "d", "--layout", "slices", "--raw", raw, "--labels", LABELS,
                   "--dims", 2, "--store", out / "store.h5", "--descriptor", out / "dataset.json")


def damaged(layout, tmp_path):
    import shutil

    return shutil.copytree(layout, tmp_path / "raw")


def first_test_volume(raw):
    return raw / "data" / f"{(raw / 'test.list').read_text().split()[0]}.h5"


def rewrite(path, **datasets):
    with h5py.File(path, "r") as fh:
        data = {k: fh[k][()] for k in fh}
    data.update(datasets)
    with h5py.File(path, "w") as fh:
        for k, v in data.items():
            if v is not None:
                fh[k] = v


@pytest.mark.parametrize("damage, problem", [
    (lambda p: p.unlink(), "does not exist"),
    (lambda p: rewrite(p, label=None), "label"),
    (lambda p: rewrite(p, image=None), "image"),
    (lambda p: rewrite(p, label=np.zeros((1, 5, 5), np.uint8)), "shape"),
    (lambda p: rewrite(p, label=np.full(h5py.File(p, "r")["image"].shape, 7, np.uint8)), "7"),
    (lambda p: rewrite(p, image=np.full(h5py.File(p, "r")["image"].shape, np.nan, np.float32)), "finite"),
])
def test_preprocess_names_the_bad_file_and_leaves_no_store(layout, tmp_path, damage, problem):
    raw = damaged(layout, tmp_path)
    bad = first_test_volume(raw)
    damage(bad)
    out = tmp_path / "out"
    proc = preprocess(raw, out)
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert bad.stem in message and problem in message.lower(), message
    assert not (out / "store.h5").exists() and not (out / "dataset.json").exists()


def test_list_naming_a_missing_case_is_reported_with_the_list(layout, tmp_path):
    raw = damaged(layout, tmp_path)
    with open(raw / "val.list", "a") as fh:
        fh.write("patient999_frame01\n")
    out = tmp_path / "out"
    proc = preprocess(raw, out)
    assert proc.returncode == 2
    assert "val.list" in proc.stderr and "patient999_frame01" in proc.stderr
    assert not (out / "store.h5").exists() and not (out / "dataset.json").exists()


@pytest.mark.parametrize("name", ["train.list", "test.list"])
def test_an_empty_split_list_is_reported_without_output(layout, tmp_path, name):
    raw = damaged(layout, tmp_path)
    (raw / name).write_text("\n")
    out = tmp_path / "out"
    proc = preprocess(raw, out)
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert name in message and "list is empty" in message, message
    assert not (out / "store.h5").exists() and not (out / "dataset.json").exists()


def test_split_larger_than_the_training_set_is_refused_without_output(layout, tmp_path):
    out = tmp_path / "out"
    assert preprocess(layout, out).returncode == 0
    proc = semiseg("split", "--descriptor", out / "dataset.json", "--ratio", 100, "--labeled-patients", 9,
                   "--out", tmp_path / "split.json")
    assert proc.returncode == 2 and "9" in proc.stderr and "3" in proc.stderr
    assert not (tmp_path / "split.json").exists()
