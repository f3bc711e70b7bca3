"""Tests of semiseg.metrics: medpy agreement, hand-worked cases, empty masks, CSV, summary."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from semiseg.metrics import (
    CSV_COLUMNS,
    case_metrics,
    class_metrics,
    read_metrics_csv,
    summarise,
    volume_diagonal,
    write_metrics_csv,
)


def random_blobs(rng: np.random.Generator, shape: tuple[int, ...], fraction: float) -> np.ndarray:
    """A mask of smooth random blobs covering about ``fraction`` of the image."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.0)
    return field > np.quantile(field, 1.0 - fraction)


def rectangle(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


# --- agreement with medpy -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [
        ((64, 48), (0.7, 1.3)),
        ((12, 40, 36), (10.0, 1.25, 1.25)),
        ((20, 24, 28), (2.5, 0.5, 1.0)),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_medpy_on_random_masks(shape, spacing, seed):
    rng = np.random.default_rng(seed)
    gt = random_blobs(rng, shape, 0.2)
    # A perturbed copy: overlapping but not equal, with stray components, like a real prediction.
    pred = random_blobs(rng, shape, 0.05) | (gt & (rng.random(shape) > 0.1))
    assert pred.any() and gt.any()

    got = class_metrics(pred, gt, spacing)

    assert got["dice"] == pytest.approx(medpy_binary.dc(pred, gt), abs=1e-6)
    assert got["jaccard"] == pytest.approx(medpy_binary.jc(pred, gt), abs=1e-6)
    assert got["hd95"] == pytest.approx(medpy_binary.hd95(pred, gt, voxelspacing=spacing), abs=1e-6)
    assert got["asd"] == pytest.approx(medpy_binary.asd(pred, gt, voxelspacing=spacing), abs=1e-6)
    assert got["pred_empty"] is False and got["gt_empty"] is False


def test_scalar_spacing_means_every_axis():
    rng = np.random.default_rng(3)
    gt = random_blobs(rng, (16, 20, 20), 0.2)
    pred = random_blobs(rng, (16, 20, 20), 0.2)
    assert class_metrics(pred, gt, 1.5) == class_metrics(pred, gt, (1.5, 1.5, 1.5))


# --- hand-worked cases ----------------------------------------------------------------------


def test_two_overlapping_squares_dice_and_jaccard():
    # Two 4x4 squares offset by one pixel on both axes overlap in a 3x3 square:
    # dice = 2 * 9 / (16 + 16) = 0.5625, jaccard = 9 / (16 + 16 - 9) = 9 / 23.
    gt = rectangle((10, 10), slice(2, 6), slice(2, 6))
    pred = rectangle((10, 10), slice(3, 7), slice(3, 7))
    got = class_metrics(pred, gt, (1.0, 1.0))
    assert got["dice"] == pytest.approx(0.5625)
    assert got["jaccard"] == pytest.approx(9 / 23)


def test_shifted_square_distances_with_anisotropic_spacing():
    # gt: rows 2-5, cols 2-5; pred: the same square two rows lower (rows 4-7). Spacing: 2 per
    # row, 1 per column. Overlap rows 4-5 x 4 cols = 8 px: dice 16/32, jaccard 8/24.
    # Surfaces (connectivity 1) are the 12-pixel rings. From gt's ring to pred's:
    #   row 2 (4 px): to pred row 4, 2 rows     -> 4.0 each
    #   row 3 (cols 2, 5): to pred row 4        -> 2.0 each
    #   row 4 (cols 2, 5): on pred's ring       -> 0
    #   row 5 cols 2, 5: on pred's ring         -> 0
    #   row 5 cols 3, 4: one column to (5,2)/(5,5) = 1.0 (one row up would be 2.0) -> 1.0 each
    # so 4*4 + 2*2 + 2*1 = 22 over 12 px; by symmetry pred's ring sees the same distances.
    # asd = 22 / 12. hd95 over the 24 pooled values (0 x8, 1 x4, 2 x4, 4 x8): the 95th
    # percentile sits at position 0.95 * 23 = 21.85, between two 4s -> 4.0.
    gt = rectangle((10, 10), slice(2, 6), slice(2, 6))
    pred = rectangle((10, 10), slice(4, 8), slice(2, 6))
    got = class_metrics(pred, gt, (2.0, 1.0))
    assert got["dice"] == pytest.approx(0.5)
    assert got["jaccard"] == pytest.approx(1 / 3)
    assert got["asd"] == pytest.approx(22 / 12)
    assert got["hd95"] == pytest.approx(4.0)


def test_identical_masks_are_perfect():
    rng = np.random.default_rng(4)
    mask = random_blobs(rng, (8, 30, 30), 0.3)
    got = class_metrics(mask, mask.copy(), (3.0, 1.0, 1.0))
    assert (got["dice"], got["jaccard"], got["hd95"], got["asd"]) == (1.0, 1.0, 0.0, 0.0)


# --- the empty-mask convention --------------------------------------------------------------


def test_volume_diagonal_by_hand():
    # (10 - 1) * 10 = 90, (256 - 1) * 1.5 = 382.5 twice.
    assert volume_diagonal((10, 256, 256), (10.0, 1.5, 1.5)) == pytest.approx(
        math.sqrt(90**2 + 2 * 382.5**2)
    )
    assert volume_diagonal((5, 10, 10), (2.0, 1.0, 0.5)) == pytest.approx(math.sqrt(165.25))


def test_both_empty_is_perfect():
    empty = np.zeros((5, 10, 10), dtype=bool)
    got = class_metrics(empty, empty.copy(), (2.0, 1.0, 0.5))
    assert got == {
        "dice": 1.0,
        "jaccard": 1.0,
        "hd95": 0.0,
        "asd": 0.0,
        "pred_empty": True,
        "gt_empty": True,
    }


@pytest.mark.parametrize("empty_side", ["pred", "gt"])
def test_one_empty_scores_dice_zero_and_the_diagonal(empty_side):
    # Diagonal of a (5, 10, 10) image with spacing (2, 1, 0.5): sqrt(8^2 + 9^2 + 4.5^2).
    empty = np.zeros((5, 10, 10), dtype=bool)
    full = empty.copy()
    full[2, 3:6, 3:6] = True
    pred, gt = (empty, full) if empty_side == "pred" else (full, empty)
    got = class_metrics(pred, gt, (2.0, 1.0, 0.5))
    worst = math.sqrt(8**2 + 9**2 + 4.5**2)
    assert got["dice"] == 0.0 and got["jaccard"] == 0.0
    assert got["hd95"] == pytest.approx(worst) and got["asd"] == pytest.approx(worst)
    assert got["pred_empty"] is (empty_side == "pred")
    assert got["gt_empty"] is (empty_side == "gt")


def test_medpy_itself_cannot_score_empty_masks():
    # Why class_metrics decides empty masks itself: medpy raises on an empty mask.
    empty = np.zeros((6, 6), dtype=bool)
    full = rectangle((6, 6), slice(1, 3), slice(1, 3))
    with pytest.raises(RuntimeError):
        medpy_binary.hd95(empty, full)
    with pytest.raises(RuntimeError):
        medpy_binary.asd(full, empty)


def test_one_empty_is_never_better_than_any_real_prediction():
    # The diagonal bounds every distance of that image, so a missed structure always scores at
    # least as badly as the worst real prediction.
    rng = np.random.default_rng(5)
    shape, spacing = (10, 32, 32), (10.0, 1.5, 1.5)
    gt = random_blobs(rng, shape, 0.1)
    far = np.zeros(shape, dtype=bool)
    far[-1, -1, -1] = True
    missed = class_metrics(np.zeros(shape, dtype=bool), gt, spacing)
    worst_real = class_metrics(far, gt, spacing)
    assert missed["hd95"] >= worst_real["hd95"]
    assert missed["asd"] >= worst_real["asd"]


# --- input checks ---------------------------------------------------------------------------


def test_class_metrics_rejects_bad_input():
    mask = np.zeros((4, 4), dtype=bool)
    with pytest.raises(TypeError, match="boolean"):
        class_metrics(mask.astype(np.uint8), mask, 1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        class_metrics(mask, np.zeros((4, 5), dtype=bool), 1.0)
    with pytest.raises(ValueError, match="2 dimensions"):
        class_metrics(mask, mask, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        class_metrics(mask, mask, (1.0, 0.0))


# --- case_metrics ---------------------------------------------------------------------------


def test_case_metrics_one_row_per_foreground_class():
    gt = np.zeros((3, 10, 10), dtype=np.uint8)
    gt[1, 2:6, 2:6] = 1
    gt[1, 6:8, 6:8] = 2
    pred = np.zeros_like(gt)
    pred[1, 3:7, 3:7] = 1
    # Class 3 is in neither map: it scores as "both empty".
    rows = case_metrics(pred, gt, ["background", "RV", "Myo", "LV"], (10.0, 1.0, 1.0), case="p1")

    assert [(r["case"], r["class"], r["class_name"]) for r in rows] == [
        ("p1", 1, "RV"),
        ("p1", 2, "Myo"),
        ("p1", 3, "LV"),
    ]
    assert rows[0]["dice"] == pytest.approx(0.5625)
    assert rows[1]["dice"] == 0.0 and rows[1]["pred_empty"] and not rows[1]["gt_empty"]
    assert rows[2]["dice"] == 1.0 and rows[2]["pred_empty"] and rows[2]["gt_empty"]
    assert set(rows[0]) == set(CSV_COLUMNS)


def test_case_metrics_accepts_a_mapping_and_omits_case_when_not_given():
    gt = np.zeros((6, 6), dtype=np.int64)
    gt[1:3, 1:3] = 1
    rows = case_metrics(gt.copy(), gt, {0: "background", 1: "atrium"}, (1.0, 1.0))
    assert len(rows) == 1 and "case" not in rows[0]
    assert rows[0]["class_name"] == "atrium" and rows[0]["dice"] == 1.0


def test_case_metrics_rejects_unknown_labels_and_bad_class_names():
    gt = np.zeros((6, 6), dtype=np.uint8)
    pred = gt.copy()
    pred[0, 0] = 4
    with pytest.raises(ValueError, match=r"pred_label contains labels \[4\]"):
        case_metrics(pred, gt, ["background", "a"], 1.0)
    with pytest.raises(TypeError, match="invert"):
        case_metrics(gt, gt, {"background": 0, "a": 1}, 1.0)
    with pytest.raises(ValueError, match="no foreground"):
        case_metrics(gt, gt, ["background"], 1.0)
    with pytest.raises(TypeError, match="integer label map"):
        case_metrics(gt.astype(float), gt, ["background", "a"], 1.0)


# --- metrics.csv ----------------------------------------------------------------------------


def _rows() -> list[dict]:
    rng = np.random.default_rng(6)
    out = []
    for case in ("case_b", "case_a"):
        gt = (random_blobs(rng, (6, 24, 24), 0.3)).astype(np.uint8)
        gt[random_blobs(rng, (6, 24, 24), 0.1)] = 2
        pred = gt.copy()
        pred[random_blobs(rng, (6, 24, 24), 0.1)] = 1
        out += case_metrics(pred, gt, {1: "one", 2: "two"}, (5.0, 0.8, 0.8), case=case)
    return out


def test_metrics_csv_round_trip(tmp_path):
    rows = _rows()
    path = tmp_path / "run" / "metrics.csv"
    write_metrics_csv(rows, path)

    assert path.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    assert [p.name for p in path.parent.iterdir()] == ["metrics.csv"]  # no temp file left
    df = read_metrics_csv(path)
    assert list(df.columns) == list(CSV_COLUMNS)
    assert df["class"].dtype.kind == "i" and df["dice"].dtype.kind == "f"
    assert df["pred_empty"].dtype == bool and df["gt_empty"].dtype == bool
    for record, row in zip(df.to_dict("records"), rows):
        assert record == row  # floats are written at full precision: exact round trip


def test_write_metrics_csv_rejects_bad_rows(tmp_path):
    rows = _rows()
    path = tmp_path / "metrics.csv"
    no_case = [{k: v for k, v in row.items() if k != "case"} for row in rows]
    with pytest.raises(ValueError, match=r"missing \['case'\]"):
        write_metrics_csv(no_case, path)
    with pytest.raises(ValueError, match="duplicate"):
        write_metrics_csv(rows + rows[:1], path)
    with pytest.raises(ValueError, match="finite"):
        write_metrics_csv([{**rows[0], "hd95": float("nan")}], path)
    with pytest.raises(ValueError, match="no metric rows"):
        write_metrics_csv([], path)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_read_metrics_csv_names_the_problem(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("case,class,dice\np1,1,0.5\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_metrics_csv(path)
    path.write_text(",".join(CSV_COLUMNS) + "\np1,1,RV,0.5,0.3,nan,1.0,False,False\n")
    with pytest.raises(ValueError, match="finite"):
        read_metrics_csv(path)
    path.write_text(",".join(CSV_COLUMNS) + "\np1,1,RV,0.5,0.3,2.0,1.0,maybe,False\n")
    with pytest.raises(ValueError, match="pred_empty"):
        read_metrics_csv(path)


# --- summarise ------------------------------------------------------------------------------


def _frame(records: list[tuple[str, int, str, float]]) -> pd.DataFrame:
    """A metrics frame whose four metrics all equal the given value (so each is checked)."""
    return pd.DataFrame(
        [
            {"case": case, "class": cls, "class_name": name, "dice": v, "jaccard": v, "hd95": v,
             "asd": v, "pred_empty": False, "gt_empty": False}
            for case, cls, name, v in records
        ]
    )


def test_summarise_averages_classes_within_a_case_first():
    # Case a: classes 1, 2 -> 1.0 and 0.0, case mean 0.5. Case b has only class 1 -> 0.8.
    # Classes within case, then cases:  (0.5 + 0.8) / 2       = 0.65
    # A flat mean over the rows would be (1.0 + 0.0 + 0.8) / 3 = 0.60,
    # cases within class, then classes: ((1.0 + 0.8) / 2 + 0.0) / 2 = 0.45.
    df = _frame([("a", 1, "RV", 1.0), ("a", 2, "LV", 0.0), ("b", 1, "RV", 0.8)])
    summary = summarise(df)
    for metric in ("dice", "jaccard", "hd95", "asd"):
        assert summary[metric] == pytest.approx(0.65)
    assert summary["n_cases"] == 2
    assert summary["per_class"] == {
        "RV": pytest.approx({m: 0.9 for m in ("dice", "jaccard", "hd95", "asd")}),
        "LV": pytest.approx({m: 0.0 for m in ("dice", "jaccard", "hd95", "asd")}),
    }


def test_summarise_on_a_complete_frame_is_the_mean_of_the_per_class_means():
    # Every case has every class: per-class means 0.7 (RV) and 0.3 (LV) -> 0.5, the number a
    # paper's "mean" column reports.
    df = _frame(
        [("a", 1, "RV", 0.6), ("a", 2, "LV", 0.2), ("b", 1, "RV", 0.8), ("b", 2, "LV", 0.4)]
    )
    summary = summarise(df)
    assert summary["dice"] == pytest.approx(0.5)
    assert summary["per_class"]["RV"]["dice"] == pytest.approx(0.7)
    assert summary["per_class"]["LV"]["dice"] == pytest.approx(0.3)


def test_summarise_of_a_written_file_and_the_literature_convention(tmp_path):
    # The flags let a reader recompute SSL4MIS-style numbers (distance 0 for an empty mask).
    gt = np.zeros((10, 10), dtype=np.uint8)
    gt[2:6, 2:6] = 1
    gt[7:9, 7:9] = 2
    pred = gt.copy()
    pred[pred == 2] = 0  # class 2 missed entirely
    rows = case_metrics(pred, gt, ["bg", "one", "two"], (1.0, 1.0), case="c")
    write_metrics_csv(rows, tmp_path / "metrics.csv")
    df = read_metrics_csv(tmp_path / "metrics.csv")

    ours = summarise(df)
    assert ours["dice"] == pytest.approx(0.5)
    assert ours["hd95"] == pytest.approx(volume_diagonal((10, 10), 1.0) / 2)

    literature = df.copy()
    literature.loc[literature["pred_empty"] | literature["gt_empty"], ["hd95", "asd"]] = 0.0
    assert summarise(literature)["hd95"] == 0.0


def test_summarise_rejects_empty_or_incomplete_frames():
    with pytest.raises(ValueError, match="empty"):
        summarise(_frame([]).reindex(columns=list(CSV_COLUMNS)))
    with pytest.raises(ValueError, match="missing columns"):
        summarise(pd.DataFrame({"case": ["a"], "dice": [1.0]}))


# ----------------------------------------------------------------------------- distance units
def test_the_evaluate_stage_measures_distances_in_voxels_unless_the_dataset_asks_for_mm(tmp_path):
    import SimpleITK as sitk

    from semiseg.data.store import Case, write_store
    from semiseg.metrics.evaluate import evaluate
    from semiseg.metrics.csv_io import read_metrics_csv

    gt = np.zeros((4, 20, 20), np.uint8)
    gt[1:3, 5:10, 5:10] = 1
    pred = np.roll(gt, 3, axis=2)  # shifted 3 voxels along x
    store = write_store(tmp_path / "store.h5", name="d", dims=3, labels={"background": 0, "a": 1},
                        cases=[Case("c0", "p0", gt.astype(np.float32), gt, spacing=(5.0, 2.0, 2.0))])
    (tmp_path / "pred").mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(pred), str(tmp_path / "pred" / "c0.nii.gz"))
    hd95 = {}
    for unit in ("voxel", "mm"):
        evaluate(tmp_path / "pred", store, tmp_path / f"{unit}.csv", distance_unit=unit)
        hd95[unit] = float(read_metrics_csv(tmp_path / f"{unit}.csv")["hd95"].iloc[0])
    assert hd95["voxel"] == pytest.approx(medpy_binary.hd95(pred, gt))
    assert hd95["mm"] == pytest.approx(medpy_binary.hd95(pred, gt, voxelspacing=(5.0, 2.0, 2.0)))
    assert hd95["mm"] == pytest.approx(2 * hd95["voxel"])  # the shift is along x, 2 mm per voxel
    with pytest.raises(ValueError, match="distance_unit"):
        evaluate(tmp_path / "pred", store, tmp_path / "x.csv", distance_unit="cm")


def test_surface_distances_are_medpy_s_in_both_directions():
    """The two arrays hd95 and asd are read from are medpy's own, value for value and in order."""
    from semiseg.metrics.binary import surface_distances

    rng = np.random.default_rng(3)
    pred = ndimage.binary_dilation(rng.random((9, 14, 12)) > 0.93, iterations=1)
    gt = ndimage.binary_dilation(rng.random((9, 14, 12)) > 0.93, iterations=1)
    spacing = (2.5, 0.7, 0.7)
    medpy_sd = getattr(medpy_binary, "__surface_distances")
    to_gt, to_pred = surface_distances(pred, gt, spacing)
    np.testing.assert_array_equal(to_gt, medpy_sd(pred, gt, spacing))
    np.testing.assert_array_equal(to_pred, medpy_sd(gt, pred, spacing))
