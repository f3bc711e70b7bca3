"""The synthetic generators: layouts mirror ACDC / LA, content is valid, hard and deterministic."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from semiseg.data.synthetic import LA_FILE_NAME, LA_IMAGE_DIR, write_synthetic2d, write_synthetic3d

SMALL_2D = dict(n_train=2, n_val=1, n_test=1, slices=(3, 4), size=(48, 48))
SMALL_3D = dict(n_train=2, n_test=1, shape=(20, 24, 28))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as h5:
        assert sorted(h5.keys()) == ["image", "label"]
        return h5["image"][()], h5["label"][()]


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def acdc_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic2d(tmp_path_factory.mktemp("syn2d") / "acdc", seed=0)


@pytest.fixture(scope="module")
def la_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic3d(tmp_path_factory.mktemp("syn3d") / "la", seed=0)


# -- synthetic2d -----------------------------------------------------------------------------------


def test_2d_lists_follow_the_acdc_layout(acdc_like: Path) -> None:
    lists = {role: _lines(acdc_like / f"{role}.list") for role in ("train", "val", "test")}
    assert [len(lists[r]) for r in ("train", "val", "test")] == [24, 6, 8]
    for cases in lists.values():
        # both frames of a patient, together, frame01 first
        for first, second in zip(cases[::2], cases[1::2]):
            assert re.fullmatch(r"patient\d{3}_frame01", first)
            assert second == first.replace("_frame01", "_frame02")
    patients = [c[:10] for role in lists.values() for c in role[::2]]
    assert sorted(patients) == [f"patient{i:03d}" for i in range(1, 20)]

    volumes = sorted(p.stem for p in (acdc_like / "data").glob("*.h5"))
    assert volumes == sorted(sum(lists.values(), []))


def test_2d_slices_are_numbered_from_one_for_train_cases_only(acdc_like: Path) -> None:
    train = _lines(acdc_like / "train.list")
    slice_ids = _lines(acdc_like / "train_slices.list")
    files = sorted(p.stem for p in (acdc_like / "data" / "slices").glob("*.h5"))
    assert sorted(slice_ids) == files

    # grouped by case, in train.list order
    order = list(dict.fromkeys(s.rsplit("_slice_", 1)[0] for s in slice_ids))
    assert order == train
    for case in train:
        image, label = _read(acdc_like / "data" / f"{case}.h5")
        indices = sorted(int(s.rsplit("_", 1)[1]) for s in slice_ids if s.startswith(case + "_"))
        assert indices == list(range(1, image.shape[0] + 1))
        for z in (0, image.shape[0] - 1):
            slice_path = acdc_like / "data" / "slices" / f"{case}_slice_{z + 1}.h5"
            slice_image, slice_label = _read(slice_path)
            np.testing.assert_array_equal(slice_image, image[z])
            np.testing.assert_array_equal(slice_label, label[z])

    all_slices = _lines(acdc_like / "all_slices.list")
    assert all_slices == sorted(all_slices)
    assert set(slice_ids) < set(all_slices)


def test_2d_volumes_are_normalised_and_hold_all_four_classes(acdc_like: Path) -> None:
    for path in sorted((acdc_like / "data").glob("*.h5")):
        image, label = _read(path)
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert image.ndim == 3 and image.shape[1:] == (96, 96) and 6 <= image.shape[0] <= 10
        assert image.min() == 0.0 and image.max() == 1.0
        assert set(np.unique(label)) == {0, 1, 2, 3}, path.name
        # the RV fades out toward the apex, the LV does not
        assert (label[0] == 1).any() and (label[-1] == 3).any()


def test_2d_end_systole_frame_is_contracted(acdc_like: Path) -> None:
    for ed in sorted((acdc_like / "data").glob("*_frame01.h5")):
        _, ed_label = _read(ed)
        _, es_label = _read(ed.with_name(ed.name.replace("frame01", "frame02")))
        assert ed_label.shape == es_label.shape
        assert (es_label == 3).sum() < 0.9 * (ed_label == 3).sum(), ed.name


def _best_band_dice(image: np.ndarray, mask: np.ndarray, bins: int = 64) -> float:
    """The best Dice any intensity window [lo, hi) achieves on ``mask``."""
    edges = np.linspace(0.0, 1.0 + 1e-6, bins + 1)
    inside = np.concatenate([[0], np.cumsum(np.histogram(image[mask], edges)[0])])
    outside = np.concatenate([[0], np.cumsum(np.histogram(image[~mask], edges)[0])])
    tp = inside[None, :] - inside[:, None]
    fp = outside[None, :] - outside[:, None]
    dice = np.where(tp > 0, 2 * tp / np.maximum(tp + fp + mask.sum(), 1), 0.0)
    return float(dice.max())


def test_2d_intensity_alone_does_not_segment(acdc_like: Path) -> None:
    """Noise, bias, blur, distractors and low myocardium contrast defeat any intensity window."""
    lv, blood, myo = [], [], []
    for path in sorted((acdc_like / "data").glob("*.h5"))[:8]:
        image, label = _read(path)
        lv.append(_best_band_dice(image, label == 3))
        blood.append(_best_band_dice(image, (label == 1) | (label == 3)))
        myo.append(_best_band_dice(image, label == 2))
    assert max(lv) < 0.95 and max(blood) < 0.97
    assert np.mean(myo) < 0.5


def test_2d_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    a = write_synthetic2d(tmp_path / "a", seed=7, **SMALL_2D)
    b = write_synthetic2d(tmp_path / "b", seed=7, **SMALL_2D)
    c = write_synthetic2d(tmp_path / "c", seed=8, **SMALL_2D)
    assert _digests(a) == _digests(b)
    case = _lines(a / "train.list")[0]
    image_a, _ = _read(a / "data" / f"{case}.h5")
    image_b, _ = _read(b / "data" / f"{case}.h5")
    np.testing.assert_array_equal(image_a, image_b)
    image_c, _ = _read(c / "data" / "patient001_frame01.h5")
    image_a1, _ = _read(a / "data" / "patient001_frame01.h5")
    assert image_c.shape != image_a1.shape or not np.array_equal(image_c, image_a1)


def test_2d_adding_patients_keeps_existing_ones(tmp_path: Path) -> None:
    small = write_synthetic2d(tmp_path / "small", seed=3, **SMALL_2D)
    larger = write_synthetic2d(tmp_path / "large", seed=3, **{**SMALL_2D, "n_train": 4})
    for case in ("patient001_frame01", "patient004_frame02"):
        np.testing.assert_array_equal(_read(small / "data" / f"{case}.h5")[0],
                                      _read(larger / "data" / f"{case}.h5")[0])


def test_2d_refuses_non_empty_directory_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.h5").write_text("old")
    with pytest.raises(FileExistsError, match="not empty"):
        write_synthetic2d(out, **SMALL_2D)
    assert (out / "stale.h5").exists()
    write_synthetic2d(out, overwrite=True, **SMALL_2D)
    assert not (out / "stale.h5").exists() and (out / "train.list").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary directory left


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_train=0), dict(n_test=0), dict(n_val=-1), dict(slices=(1, 4)), dict(slices=(5, 4)),
     dict(size=(16, 96)), dict(n_train=True), dict(noise=-0.1), dict(myo_contrast=0.6), dict(distractors=1.5),
     dict(heart_scale=3.0), dict(noise=True)],
)
def test_2d_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        write_synthetic2d(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_2d_knobs_change_the_images_not_what_is_drawn(tmp_path: Path) -> None:
    """noise, myo_contrast and distractors repaint the same anatomy; heart_scale enlarges it."""
    base = write_synthetic2d(tmp_path / "base", **SMALL_2D)
    easy = write_synthetic2d(tmp_path / "easy", noise=0.2, myo_contrast=0.25, distractors=0.0, **SMALL_2D)
    case = _lines(base / "test.list")[0]
    image_b, label_b = _read(base / "data" / f"{case}.h5")
    image_e, label_e = _read(easy / "data" / f"{case}.h5")
    assert np.array_equal(label_b, label_e) and not np.array_equal(image_b, image_e)
    # with the look-alikes gone and the myocardium lifted, intensity separates the classes better
    assert _best_band_dice(image_e, label_e == 2) > _best_band_dice(image_b, label_b == 2)
    big = write_synthetic2d(tmp_path / "big", heart_scale=1.5, **SMALL_2D)
    _, label_big = _read(big / "data" / f"{case}.h5")
    assert (label_big > 0).sum() > 1.5 * (label_b > 0).sum()
    assert set(np.unique(label_big)) == {0, 1, 2, 3}


# -- synthetic3d -----------------------------------------------------------------------------------


def test_3d_follows_the_la_layout(la_like: Path) -> None:
    train, test = _lines(la_like / "train.list"), _lines(la_like / "test.list")
    assert len(train) == 8 and len(test) == 4 and not set(train) & set(test)
    assert all(re.fullmatch(r"[0-9A-Z]{20}", case) for case in train + test)
    assert sorted(p.name for p in (la_like / LA_IMAGE_DIR).iterdir()) == sorted(train + test)
    for case in train + test:
        image, label = _read(la_like / LA_IMAGE_DIR / case / LA_FILE_NAME)
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert image.shape == (64, 64, 48)  # (X, Y, Z) on disk, as the LA files store it
        assert set(np.unique(label)) == {0, 1}
        assert 0.01 < label.mean() < 0.25
        # z-scored like mri_norm2
        assert abs(float(image.mean())) < 1e-3 and abs(float(image.std()) - 1.0) < 1e-3


def test_3d_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    a = write_synthetic3d(tmp_path / "a", seed=1, **SMALL_3D)
    b = write_synthetic3d(tmp_path / "b", seed=1, **SMALL_3D)
    c = write_synthetic3d(tmp_path / "c", seed=2, **SMALL_3D)
    assert _digests(a) == _digests(b)
    assert _lines(a / "train.list") != _lines(c / "train.list")
    image_a, _ = _read(next((a / LA_IMAGE_DIR).iterdir()) / LA_FILE_NAME)
    image_c, _ = _read(next((c / LA_IMAGE_DIR).iterdir()) / LA_FILE_NAME)
    assert image_a.shape == image_c.shape == (28, 24, 20)
    assert not np.array_equal(image_a, image_c)


def test_3d_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_synthetic3d(tmp_path / "x", shape=(8, 64, 64))
    with pytest.raises(ValueError):
        write_synthetic3d(tmp_path / "x", n_test=0)
