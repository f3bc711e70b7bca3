"""Deterministic synthetic stand-ins for ACDC and LA, written in the real datasets' layouts.

The generators write exactly the on-disk layouts of the real data, so that the pipeline's real
importers (:mod:`semiseg.data.layouts`) are what the synthetic datasets exercise:

* :func:`write_synthetic2d` — cardiac short-axis cine MRI like ACDC, in the common
  semi-supervised ACDC layout (``data/<case>.h5`` volumes, ``data/slices/<case>_slice_<i>.h5``
  training slices numbered from 1, ``train.list`` / ``val.list`` / ``test.list`` /
  ``train_slices.list`` / ``all_slices.list``);
* :func:`write_synthetic3d` — late-gadolinium MRI of the left atrium like the 2018 LA challenge,
  in the common LA layout (``2018LA_Seg_Training Set/<id>/mri_norm2.h5`` stored ``(X, Y, Z)``,
  ``train.list`` / ``test.list``).

Both are pure functions of their arguments: the same seed gives byte-identical files. Each
patient draws from its own generator seeded by ``(seed, patient_number)``, so adding patients does
not change the existing ones.

The images are made hard on purpose, so that a small network does not reach a Dice of 1.0 within
minutes: class intensities are drawn per case from overlapping ranges (myocardium barely differs
from the surrounding tissue), tissue texture, partial-volume blur at every boundary while the
labels stay hard, a smooth multiplicative bias field, Rician noise, and background structures that
look like the targets (bright round blobs, some with a myocardium-like rim).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

from semiseg.io import atomic_dir

__all__ = ["LA_IMAGE_DIR", "LA_FILE_NAME", "write_synthetic2d", "write_synthetic3d"]

#: The LA layout's image directory and per-case file name (as in the public 2018 LA release).
LA_IMAGE_DIR = "2018LA_Seg_Training Set"
LA_FILE_NAME = "mri_norm2.h5"

_ID_ALPHABET = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


# -- shared helpers --------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _paint(image: np.ndarray, fraction: np.ndarray, intensity: float | np.ndarray) -> None:
    """Blend ``intensity`` into ``image`` where ``fraction`` (0..1) of a voxel is covered."""
    image += fraction * (intensity - image)


def _bias_field(rng: np.random.Generator, shape: Sequence[int], terms: int = 3) -> np.ndarray:
    """A smooth multiplicative field around 1 (roughly 0.7..1.4): exp of a few low-frequency waves.

    Frequencies are at most one cycle across the field of view in-plane and a third of a cycle
    along the first axis, like a receive-coil sensitivity profile.
    """
    axes = np.meshgrid(*[np.linspace(0.0, 1.0, n) for n in shape], indexing="ij", sparse=True)
    log_field = np.zeros(tuple(shape), dtype=np.float64)
    for _ in range(terms):
        phase = rng.uniform(0.0, 2 * np.pi)
        freqs = [rng.uniform(-0.3, 0.3)] + [rng.uniform(-1.0, 1.0) for _ in shape[1:]]
        wave = sum(f * a for f, a in zip(freqs, axes))
        log_field += rng.uniform(0.05, 0.12) * np.cos(2 * np.pi * wave + phase)
    return np.exp(log_field)


def _texture(rng: np.random.Generator, shape: Sequence[int], sigma: Sequence[float]) -> np.ndarray:
    """Zero-mean, unit-std smooth noise: tissue texture at the scale of ``sigma`` voxels."""
    field = ndimage.gaussian_filter(rng.standard_normal(tuple(shape)), sigma)
    return field / (field.std() + 1e-12)


def _rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise, as MRI magnitude images are."""
    real = image + rng.normal(0.0, sigma, image.shape)
    imag = rng.normal(0.0, sigma, image.shape)
    return np.sqrt(real * real + imag * imag)


def _minmax(image: np.ndarray) -> np.ndarray:
    low, high = float(image.min()), float(image.max())
    return ((image - low) / max(high - low, 1e-12)).astype(np.float32)


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    """Write ``image``/``label`` the way the public layouts do: gzip, h5py's automatic chunks."""
    with h5py.File(path, "w") as h5:
        h5.create_dataset("image", data=np.ascontiguousarray(image, dtype=np.float32),
                          compression="gzip")
        h5.create_dataset("label", data=np.ascontiguousarray(label, dtype=np.uint8),
                          compression="gzip")


def _write_list(path: Path, items: Sequence[str]) -> None:
    path.write_text("".join(f"{item}\n" for item in items))


@contextmanager
def _atomic_dir(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling of ``out_dir`` and move it into place when the block succeeds.

    A failed generation leaves nothing at ``out_dir``; an existing non-empty ``out_dir`` is
    replaced only with ``overwrite=True``, otherwise :class:`FileExistsError` is raised before any
    work is done.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir}: directory is not empty (pass overwrite=True to replace)")
    with atomic_dir(out_dir) as tmp:
        yield tmp


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


# -- synthetic2d: cardiac short axis ---------------------------------------------------------------


def _ellipse_field(
    xx: np.ndarray, yy: np.ndarray, cx: np.ndarray, cy: np.ndarray, theta: np.ndarray,
    a: np.ndarray, b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Approximate signed distance (pixels, positive inside) to rotated ellipses, per slice.

    All parameters are ``(Z, 1, 1)`` arrays; returns the field and the ellipse-frame coordinates
    ``(u, v)``, each ``(Z, Y, X)``.
    """
    dx, dy = xx - cx, yy - cy
    cos, sin = np.cos(theta), np.sin(theta)
    u = dx * cos + dy * sin
    v = -dx * sin + dy * cos
    radius = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return (1.0 - radius) * np.sqrt(a * b), u, v


def _smooth_walk(rng: np.random.Generator, n: int, step: float) -> np.ndarray:
    """A gently drifting offset along z: cumulative Gaussian steps, centred on the middle slice."""
    walk = np.cumsum(rng.normal(0.0, step, n))
    return walk - walk[n // 2]


def _cardiac_case(
    anatomy: dict[str, float], contraction: dict[str, float], n_slices: int,
    size: tuple[int, int], rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one short-axis volume (base at z=0, apex at the last slice) and its label map."""
    ny, nx = size
    scale = float(min(size))
    zz = np.arange(n_slices, dtype=np.float64)[:, None, None]
    depth = zz / max(n_slices - 1, 1)  # 0 at the base, 1 at the apex
    yy = np.arange(ny, dtype=np.float64)[None, :, None]
    xx = np.arange(nx, dtype=np.float64)[None, None, :]

    # Heart geometry per slice: the LV narrows toward the apex, the RV ends before it.
    cx = anatomy["cx"] + _smooth_walk(rng, n_slices, 0.006 * scale)[:, None, None]
    cy = anatomy["cy"] + _smooth_walk(rng, n_slices, 0.006 * scale)[:, None, None]
    theta = anatomy["theta"] + _smooth_walk(rng, n_slices, 0.05)[:, None, None]
    lv_scale = 1.0 - 0.55 * depth**1.6
    lv_a = anatomy["lv_r"] * contraction["lv"] * lv_scale
    lv_b = lv_a * (anatomy["ecc"] + _smooth_walk(rng, n_slices, 0.015)[:, None, None])
    wall = anatomy["wall"] * contraction["wall"] * (1.0 + 0.15 * depth)
    rv_scale = np.clip(1.0 - 1.05 * depth**1.5, 0.0, 1.0)
    rv_long = anatomy["rv_long"] * contraction["rv"] * rv_scale + 1e-3
    rv_short = anatomy["rv_short"] * contraction["rv"] * rv_scale + 1e-3

    s_lv, u, v = _ellipse_field(xx, yy, cx, cy, theta, lv_a, lv_b)
    s_epi, _, _ = _ellipse_field(xx, yy, cx, cy, theta, lv_a + wall, lv_b + wall)
    # The RV is an ellipse beside the LV, long axis tangential, with the epicardium cut out of it:
    # a crescent wrapped around the septum.
    phi = anatomy["rv_dir"] + theta
    offset = (lv_a + lv_b) / 2 + wall + anatomy["rv_overlap"] * rv_short
    s_rv_ellipse, _, _ = _ellipse_field(
        xx, yy, cx + offset * np.cos(phi), cy + offset * np.sin(phi), phi + np.pi / 2,
        rv_long, rv_short,
    )
    s_rv = np.minimum(s_rv_ellipse, -s_epi)
    s_rv[np.broadcast_to(rv_short < 1.0, s_rv.shape)] = -np.inf  # RV gone toward the apex

    label = np.zeros((n_slices, ny, nx), dtype=np.uint8)
    label[s_epi > 0] = 2
    label[s_lv > 0] = 3
    label[s_rv > 0] = 1

    # Intensities of this case (cine SSFP: bright blood, grey tissue, dark lungs, bright fat).
    tissue = rng.uniform(0.25, 0.40)
    myo = tissue + rng.uniform(-0.06, 0.08)
    lv_blood = rng.uniform(0.70, 0.95)
    rv_blood = lv_blood * rng.uniform(0.82, 1.0)
    edge = 0.6  # partial-volume width of every boundary, in pixels

    image = np.full((n_slices, ny, nx), 0.02)
    body_a, body_b = rng.uniform(0.46, 0.56, 2) * scale
    s_body, _, _ = _ellipse_field(
        xx, yy, np.array(nx / 2 + rng.uniform(-0.04, 0.04) * scale),
        np.array(ny / 2 + rng.uniform(-0.04, 0.04) * scale), np.array(rng.uniform(0, np.pi)),
        np.array(body_a), np.array(body_b),
    )
    _paint(image, _sigmoid(s_body / 1.5), tissue)

    heart_reach = float(np.max(offset + rv_long))
    for kind in ["lung"] * 2 + ["blob"] * int(rng.integers(2, 5)):
        low, high = (0.10, 0.18) if kind == "lung" else (0.03, 0.07)
        radius = rng.uniform(low, high) * scale
        for _ in range(20):  # place it clear of the heart; give up quietly if there is no room
            bx, by = rng.uniform(0.1, 0.9) * nx, rng.uniform(0.1, 0.9) * ny
            if np.hypot(bx - anatomy["cx"], by - anatomy["cy"]) > heart_reach + radius + 3:
                break
        else:
            continue
        bcx = bx + _smooth_walk(rng, n_slices, 0.004 * scale)[:, None, None]
        bcy = by + _smooth_walk(rng, n_slices, 0.004 * scale)[:, None, None]
        ecc = rng.uniform(0.6, 1.0)
        rot = np.array(rng.uniform(0, np.pi))
        s_blob, _, _ = _ellipse_field(
            xx, yy, bcx, bcy, rot, np.array(radius), np.array(radius * ecc)
        )
        if kind == "lung":
            _paint(image, _sigmoid(s_blob / 1.5), rng.uniform(0.04, 0.12))
            continue
        if rng.random() < 0.5:  # an LV look-alike: bright core in a tissue-grey rim
            rim = rng.uniform(0.7, 1.3) * anatomy["wall"]
            s_rim, _, _ = _ellipse_field(
                xx, yy, bcx, bcy, rot, np.array(radius + rim), np.array(radius * ecc + rim)
            )
            _paint(image, _sigmoid(s_rim / edge), myo + rng.uniform(-0.03, 0.03))
        _paint(image, _sigmoid(s_blob / edge), rng.uniform(0.6, 0.95))

    # Epicardial fat: a bright band over part of the heart's outline (labelled background).
    fat_width = rng.uniform(1.0, 2.5) * scale / 96
    start, span = rng.uniform(0, 2 * np.pi), rng.uniform(0.8, 2.2)
    in_sector = np.mod(np.arctan2(v, u) - start, 2 * np.pi) < span
    _paint(image, _sigmoid(np.minimum(s_epi + fat_width, -s_epi) / edge) * in_sector,
           rng.uniform(0.6, 0.85))

    _paint(image, _sigmoid(s_epi / edge), myo)
    _paint(image, _sigmoid(s_lv / edge), lv_blood)
    # Papillary muscles: dark spots inside the cavity that still belong to the LV label.
    for _ in range(int(rng.integers(1, 3))):
        angle = rng.uniform(0, 2 * np.pi)
        px = cx + 0.55 * lv_a * np.cos(angle + theta)
        py = cy + 0.55 * lv_b * np.sin(angle + theta)
        pr = 0.22 * lv_b
        s_pap, _, _ = _ellipse_field(xx, yy, px, py, theta, pr, pr)
        _paint(image, _sigmoid(np.minimum(s_pap, s_lv) / edge), myo + rng.uniform(0.0, 0.15))
    _paint(image, _sigmoid(s_rv / edge), rv_blood)

    image += rng.uniform(0.02, 0.05) * _texture(rng, image.shape, (0, 2.0, 2.0))
    image = ndimage.gaussian_filter(image, (0, rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.9)))
    image = image * _bias_field(rng, image.shape)
    image = _rician(rng, np.clip(image, 0.0, None), rng.uniform(0.025, 0.06))
    return _minmax(image), label


def _cardiac_anatomy(rng: np.random.Generator, size: tuple[int, int]) -> dict[str, float]:
    """Patient-level heart shape and position (pixels), shared by both frames."""
    ny, nx = size
    scale = float(min(size))
    anatomy = {
        "lv_r": rng.uniform(0.08, 0.12) * scale,
        "ecc": rng.uniform(0.75, 0.98),
        "theta": rng.uniform(0, np.pi),
        "wall": rng.uniform(0.03, 0.05) * scale,
        "rv_long": rng.uniform(0.17, 0.25) * scale,
        "rv_short": rng.uniform(0.07, 0.10) * scale,
        "rv_overlap": rng.uniform(0.2, 0.6),
        "rv_dir": rng.uniform(0, 2 * np.pi),
    }
    # Keep the whole heart in view: the RV reaches out to about hypot(its offset, its long axis).
    offset = anatomy["lv_r"] + anatomy["wall"] + 0.6 * anatomy["rv_short"]
    reach = float(np.hypot(offset, anatomy["rv_long"])) + 0.03 * scale
    anatomy["cx"] = rng.uniform(min(reach, nx / 2), max(nx - reach, nx / 2))
    anatomy["cy"] = rng.uniform(min(reach, ny / 2), max(ny - reach, ny / 2))
    return anatomy


def write_synthetic2d(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    n_train: int = 12,
    n_val: int = 3,
    n_test: int = 4,
    slices: tuple[int, int] = (6, 10),
    size: tuple[int, int] = (96, 96),
    *,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic ACDC-like dataset in the common ACDC layout and return ``out_dir``.

    Each patient ``patientNNN`` (numbered from 001, assigned to train/val/test at random) has two
    cases, ``patientNNN_frame01`` (end-diastole-like) and ``patientNNN_frame02`` (end-systole-like:
    smaller cavities, thicker wall), with the same number of slices, drawn from ``slices``
    (inclusive). Labels: 0 background, 1 RV, 2 myocardium, 3 LV; every case holds all four
    (the RV fades out toward the apex, the last slices). Images are float32 min-max normalised per
    volume to [0, 1].

    Files written, mirroring the public ACDC layout::

        data/<case>.h5                    image, label (Z, Y, X), for every case
        data/slices/<case>_slice_<i>.h5   image, label (Y, X) of slice z = i - 1, train cases only
        train.list, val.list, test.list   case ids, both frames of a patient together
        train_slices.list                 slice ids grouped by case in train.list order; within a
                                          case in shuffled order, as in the public file
        all_slices.list                   slice ids of every case, sorted as strings

    Args:
        out_dir: directory to create; it must not exist or be empty unless ``overwrite``.
        seed: the only source of randomness; same seed, byte-identical files.
        n_train, n_val, n_test: patients per list (``n_val`` may be 0).
        slices: inclusive range of slices per volume.
        size: ``(Y, X)`` of a slice.
        overwrite: replace an existing non-empty ``out_dir``.
    """
    _check_count("n_train", n_train, 1)
    _check_count("n_val", n_val, 0)
    _check_count("n_test", n_test, 1)
    if n_train + n_val + n_test > 999:
        raise ValueError("at most 999 patients (ids are patientNNN)")
    low, high = (int(s) for s in slices)
    if not 2 <= low <= high:
        raise ValueError(f"slices must be (low, high) with 2 <= low <= high, got {slices!r}")
    size = (int(size[0]), int(size[1]))
    if min(size) < 32:
        raise ValueError(f"size must be at least 32 x 32 pixels, got {size!r}")

    rng = np.random.default_rng(seed)
    total = n_train + n_val + n_test
    numbers = rng.permutation(np.arange(1, total + 1))
    roles = {
        "train": numbers[:n_train],
        "val": numbers[n_train:n_train + n_val],
        "test": numbers[n_train + n_val:],
    }
    cases = {role: [f"patient{n:03d}_frame{f:02d}" for n in nums for f in (1, 2)]
             for role, nums in roles.items()}
    train_cases = set(cases["train"])

    out_dir = Path(out_dir)
    with _atomic_dir(out_dir, overwrite) as root:
        slice_dir = root / "data" / "slices"
        slice_dir.mkdir(parents=True)
        n_slices_of: dict[str, int] = {}
        for number in range(1, total + 1):
            patient_rng = np.random.default_rng((seed, number))
            anatomy = _cardiac_anatomy(patient_rng, size)
            n_slices = int(patient_rng.integers(low, high + 1))
            frames = {
                1: {"lv": 1.0, "wall": 1.0, "rv": 1.0},
                2: {"lv": patient_rng.uniform(0.70, 0.82), "wall": patient_rng.uniform(1.2, 1.4),
                    "rv": patient_rng.uniform(0.75, 0.90)},
            }
            for frame, contraction in frames.items():
                case = f"patient{number:03d}_frame{frame:02d}"
                image, label = _cardiac_case(anatomy, contraction, n_slices, size, patient_rng)
                _write_h5(root / "data" / f"{case}.h5", image, label)
                n_slices_of[case] = n_slices
                if case in train_cases:
                    for z in range(n_slices):
                        _write_h5(slice_dir / f"{case}_slice_{z + 1}.h5", image[z], label[z])

        for role in ("train", "val", "test"):
            _write_list(root / f"{role}.list", cases[role])
        train_slices = []
        for case in cases["train"]:
            order = rng.permutation(n_slices_of[case]) + 1
            train_slices += [f"{case}_slice_{i}" for i in order]
        _write_list(root / "train_slices.list", train_slices)
        _write_list(root / "all_slices.list", sorted(
            f"{case}_slice_{i}" for case, n in n_slices_of.items() for i in range(1, n + 1)
        ))
    return out_dir


# -- synthetic3d: left atrium ----------------------------------------------------------------------


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3-D rotation matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _ellipsoid_field(
    grid: tuple[np.ndarray, np.ndarray, np.ndarray], center: np.ndarray, axes: np.ndarray,
    rotation: np.ndarray,
) -> np.ndarray:
    """Approximate signed distance (voxels, positive inside) to a rotated ellipsoid."""
    d = [g - c for g, c in zip(grid, center)]
    radius2 = np.zeros(np.broadcast_shapes(*(x.shape for x in d)))
    for k in range(3):
        local = d[0] * rotation[0, k] + d[1] * rotation[1, k] + d[2] * rotation[2, k]
        radius2 = radius2 + (local / axes[k]) ** 2
    return (1.0 - np.sqrt(radius2)) * float(np.cbrt(np.prod(axes)))


def _atrium_case(
    rng: np.random.Generator, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Render one LA-like volume ``(Z, Y, X)``: image z-scored like ``mri_norm2``, label 0/1."""
    dims = np.array(shape, dtype=np.float64)
    grid = tuple(np.arange(n, dtype=np.float64).reshape([-1 if i == k else 1 for i in range(3)])
                 for k, n in enumerate(shape))

    # The atrium: a main body plus appendage / pulmonary-vein stubs pointing outward from it.
    center = dims / 2 + rng.uniform(-0.08, 0.08, 3) * dims
    body_axes = rng.uniform(0.18, 0.27, 3) * dims
    inside = _ellipsoid_field(grid, center, body_axes, _random_rotation(rng)) > 0
    for _ in range(int(rng.integers(2, 5))):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        stub_center = center + direction * body_axes * rng.uniform(0.8, 1.1)
        stub_axes = np.array([rng.uniform(0.16, 0.26), rng.uniform(0.06, 0.09),
                              rng.uniform(0.06, 0.09)]) * dims.min()
        # Align the stub's long axis with its direction from the body.
        basis = np.linalg.qr(np.column_stack([direction, rng.standard_normal((3, 2))]))[0]
        inside |= _ellipsoid_field(grid, stub_center, stub_axes, basis) > 0
    label = (ndimage.gaussian_filter(inside.astype(np.float64), 1.5) > 0.5).astype(np.uint8)
    if not label.any():  # cannot happen with the ranges above; guard the invariant anyway
        label = (_ellipsoid_field(grid, center, body_axes, np.eye(3)) > 0).astype(np.uint8)

    tissue = rng.uniform(0.25, 0.40)
    blood = tissue + rng.uniform(0.20, 0.45)
    image = np.full(shape, tissue)
    image += rng.uniform(0.03, 0.06) * _texture(rng, shape, 2.0)

    # Distractors: the other blood pools and vessels around the atrium (ventricle, aorta,
    # pulmonary artery), about as bright; where one meets the atrium only a wall of about two
    # voxels of tissue separates them.
    outside = _sigmoid((ndimage.distance_transform_edt(label == 0) - 2.0) / 0.7)
    for _ in range(int(rng.integers(4, 8))):
        field = _ellipsoid_field(grid, rng.uniform(0.05, 0.95, 3) * dims,
                                 rng.uniform(0.07, 0.20, 3) * dims.min(), _random_rotation(rng))
        _paint(image, _sigmoid(field / 0.7) * outside, blood * rng.uniform(0.8, 1.2))
    _paint(image, ndimage.gaussian_filter(label.astype(np.float64), 0.8), blood)

    image = ndimage.gaussian_filter(image, rng.uniform(0.5, 0.9))
    image = image * _bias_field(rng, shape)
    image = _rician(rng, np.clip(image, 0.0, None), rng.uniform(0.03, 0.07))
    image = (image - image.mean()) / (image.std() + 1e-12)
    return image.astype(np.float32), label


def _la_ids(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct 20-character upper-case alphanumeric ids, like the LA challenge's."""
    ids: list[str] = []
    while len(ids) < n:
        candidate = "".join(rng.choice(_ID_ALPHABET, 20))
        if candidate not in ids:
            ids.append(candidate)
    return ids


def write_synthetic3d(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    n_train: int = 8,
    n_test: int = 4,
    shape: tuple[int, int, int] = (48, 64, 64),
    *,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic LA-like dataset in the common LA layout and return ``out_dir``.

    Each case is one volume with a blob "atrium" (label 1: a smoothed union of a body ellipsoid
    and a few appendage/vein stubs) among bright distractor blobs, tissue texture, a bias field
    and Rician noise. As in the public ``mri_norm2.h5`` files, the image is z-score normalised
    (zero mean, unit std over the volume), not scaled to [0, 1].

    Files written, mirroring the public LA layout::

        2018LA_Seg_Training Set/<id>/mri_norm2.h5   image float32, label uint8, stored (X, Y, Z)
        train.list, test.list                        ids, one per line

    Args:
        out_dir: directory to create; it must not exist or be empty unless ``overwrite``.
        seed: the only source of randomness; same seed, byte-identical files.
        n_train, n_test: cases per list.
        shape: the volume as the store sees it, ``(Z, Y, X)``; on disk it is transposed to
            ``(X, Y, Z)`` like the LA files, and :func:`semiseg.data.layouts.read_la_layout`
            transposes it back.
        overwrite: replace an existing non-empty ``out_dir``.
    """
    _check_count("n_train", n_train, 1)
    _check_count("n_test", n_test, 1)
    shape = tuple(int(n) for n in shape)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be 3 sizes of at least 16 voxels, got {shape!r}")

    rng = np.random.default_rng(seed)
    total = n_train + n_test
    ids = _la_ids(rng, total)
    order = rng.permutation(total)
    train = [ids[k] for k in order[:n_train]]
    test = [ids[k] for k in order[n_train:]]

    out_dir = Path(out_dir)
    with _atomic_dir(out_dir, overwrite) as root:
        for number, case in enumerate(ids, start=1):
            image, label = _atrium_case(np.random.default_rng((seed, number)), shape)
            case_dir = root / LA_IMAGE_DIR / case
            case_dir.mkdir(parents=True)
            _write_h5(case_dir / LA_FILE_NAME, image.transpose(2, 1, 0), label.transpose(2, 1, 0))
        _write_list(root / "train.list", train)
        _write_list(root / "test.list", test)
    return out_dir
