"""hd95 / asd on the union bounding box: exactly medpy's values on the whole volume (random masks
touching the edges or not, real Left Atrium masks) and the empty-mask convention unchanged."""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from conftest import missing_data
from semiseg.metrics import class_metrics, union_box, volume_diagonal


def _medpy(pred, gt, spacing):
    return {"dice": float(medpy_binary.dc(pred, gt)), "jaccard": float(medpy_binary.jc(pred, gt)),
            "hd95": float(medpy_binary.hd95(pred, gt, voxelspacing=spacing)),
            "asd": float(medpy_binary.asd(pred, gt, voxelspacing=spacing))}


def _blob(rng, shape, fill):
    return ndimage.binary_opening(rng.random(shape) < fill, iterations=1) | (rng.random(shape) < 0.002)


def test_union_box_worked_example():
    pred = np.zeros((5, 6, 7), bool)
    gt = np.zeros((5, 6, 7), bool)
    pred[1, 2, 3] = True
    gt[3, 2, 6] = True
    assert union_box(pred, gt) == (slice(1, 4), slice(2, 3), slice(3, 7))
    with pytest.raises(ValueError, match="both masks are empty"):
        union_box(np.zeros((2, 2), bool), np.zeros((2, 2), bool))


@pytest.mark.parametrize("seed", range(6))
def test_equals_medpy_exactly_on_random_masks(seed):
    """Masks in a corner of a larger volume, touching its faces, or spread out; anisotropic spacing."""
    rng = np.random.default_rng(seed)
    shape = (20, 40, 36)
    pred, gt = np.zeros(shape, bool), np.zeros(shape, bool)
    where = [(slice(0, 9), slice(0, 15), slice(0, 12)), (slice(5, 20), slice(20, 40), slice(10, 36)),
             (slice(None), slice(None), slice(None))][seed % 3]
    pred[where] = _blob(rng, pred[where].shape, 0.5)
    gt[where] = _blob(rng, gt[where].shape, 0.45)
    if seed % 2:  # the two masks far apart: the box spans most of the volume
        gt = np.roll(gt, 7, axis=2)
    spacing = (2.5, 0.7, 1.3) if seed % 2 else (1.0, 1.0, 1.0)
    got = class_metrics(pred, gt, spacing)
    want = _medpy(pred, gt, spacing)
    for key in want:
        assert got[key] == want[key], key  # bit for bit, not approximately


def test_empty_masks_keep_the_convention():
    full = np.zeros((6, 7, 8), bool)
    full[2:4, 3:5, 1:6] = True
    empty = np.zeros_like(full)
    assert class_metrics(empty, empty, 1.0) == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0,
                                                 "pred_empty": True, "gt_empty": True}
    diag = volume_diagonal(full.shape, 1.0)
    for pred, gt in ((empty, full), (full, empty)):
        got = class_metrics(pred, gt, 1.0)
        assert (got["dice"], got["hd95"], got["asd"]) == (0.0, diag, diag)  # the whole image's diagonal


@pytest.mark.data
def test_equals_medpy_exactly_on_real_left_atrium_masks(shared_data_dir):
    root = shared_data_dir / "LA-mini"
    if not (root / "test.list").is_file():
        missing_data(f"LA-mini not found at {root}")
    case = (root / "test.list").read_text().split()[0]
    with h5py.File(root / "2018LA_Seg_Training Set" / case / "mri_norm2.h5") as f:
        gt = f["label"][()].astype(bool)
    ball = ndimage.generate_binary_structure(3, 1)
    pred = np.roll(ndimage.binary_dilation(gt, ball, iterations=2), 3, axis=0)
    pred[5:12, 5:12, 5:12] = True  # a false blob far from the atrium, near the volume's corner
    preds = {"dilated, shifted, with a false blob": pred}
    for name, pred in preds.items():
        t0 = time.perf_counter()
        got = class_metrics(pred, gt, 1.0)
        boxed = time.perf_counter() - t0
        t0 = time.perf_counter()
        want = _medpy(pred, gt, (1.0, 1.0, 1.0))
        whole = time.perf_counter() - t0
        for key in want:
            assert got[key] == want[key], (name, key)
        print(f"\n{case} {name}: box {boxed:.2f} s, whole volume {whole:.2f} s ({whole / boxed:.1f}x)")


def test_the_evaluate_stage_does_not_import_medpy():
    # medpy is the tests' reference; an evaluate job computes its values without it (and without
    # scipy.stats, a second of every job's start-up)
    import subprocess
    import sys

    code = "import sys, semiseg.metrics.evaluate; print(sorted(m for m in ('medpy', 'scipy.stats') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
