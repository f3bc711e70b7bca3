"""synthetic2d: cardiac short-axis cine MRI like ACDC, in the common semi-supervised ACDC layout.

:func:`write_synthetic2d` writes ``data/<case>.h5`` volumes, ``data/slices/<case>_slice_<i>.h5``
training slices numbered from 1, and ``train.list`` / ``val.list`` / ``test.list`` /
``train_slices.list`` / ``all_slices.list``, exactly what :func:`semiseg.data.layouts.read_slices_layout`
reads from the real data.

The images are made hard by default, so that a small network does not reach a Dice of 1.0
within minutes: class intensities are drawn per case from overlapping ranges (the myocardium
barely differs from the surrounding tissue), tissue texture, partial-volume blur at every
boundary while the labels stay hard, a smooth multiplicative bias field, Rician noise, and
background structures that look like the targets (bright round blobs, some with a
myocardium-like rim). Four knobs make them easier without changing what is drawn (the same seed
draws the same anatomy at every setting): ``noise`` scales the texture and the Rician noise,
``myo_contrast`` lifts the myocardium's intensity above the surrounding tissue, ``distractors``
fades the target look-alikes out, ``heart_scale`` enlarges the heart in the image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from semiseg.data.synthetic.render import (atomic_dir, bias_field, check_count, minmax, paint, rician, sigmoid,
                                           texture, write_h5, write_list)

__all__ = ["write_synthetic2d"]


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


@dataclass(frozen=True)
class _Heart:
    """One case's heart, per slice (``(Z, 1, 1)`` parameters, ``(Z, Y, X)`` fields): centre,
    rotation and LV semi-axes, the LV's ellipse-frame coordinates ``u``, ``v``, the signed
    distances to the LV cavity, the epicardium and the RV, and how far the heart reaches from its
    centre (pixels)."""

    cx: np.ndarray
    cy: np.ndarray
    theta: np.ndarray
    lv_a: np.ndarray
    lv_b: np.ndarray
    u: np.ndarray
    v: np.ndarray
    s_lv: np.ndarray
    s_epi: np.ndarray
    s_rv: np.ndarray
    reach: float


def _heart(anatomy: dict[str, float], contraction: dict[str, float], depth: np.ndarray, xx: np.ndarray,
           yy: np.ndarray, scale: float, rng: np.random.Generator) -> _Heart:
    """The heart of one frame at ``depth`` (0 at the base, 1 at the apex, ``(Z, 1, 1)``)."""
    n_slices = depth.shape[0]
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
    return _Heart(cx, cy, theta, lv_a, lv_b, u, v, s_lv, s_epi, s_rv, float(np.max(offset + rv_long)))


def _body_and_lookalikes(shape: tuple[int, int, int], xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator,
                         anatomy: dict[str, float], heart_reach: float, *, tissue: float, myo: float,
                         distractors: float, edge: float) -> np.ndarray:
    """The image around the heart: the body's tissue, two dark lungs and 2-4 bright blobs placed
    clear of the heart, about half of them an LV look-alike with a tissue-grey rim."""
    n_slices, ny, nx = shape
    scale = float(min(ny, nx))
    image = np.full(shape, 0.02)
    body_a, body_b = rng.uniform(0.46, 0.56, 2) * scale
    s_body, _, _ = _ellipse_field(
        xx, yy, np.array(nx / 2 + rng.uniform(-0.04, 0.04) * scale),
        np.array(ny / 2 + rng.uniform(-0.04, 0.04) * scale), np.array(rng.uniform(0, np.pi)),
        np.array(body_a), np.array(body_b),
    )
    paint(image, sigmoid(s_body / 1.5), tissue)

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
            paint(image, sigmoid(s_blob / 1.5), rng.uniform(0.04, 0.12))
            continue
        if rng.random() < 0.5:  # an LV look-alike: bright core in a tissue-grey rim
            rim = rng.uniform(0.7, 1.3) * anatomy["wall"]
            s_rim, _, _ = _ellipse_field(
                xx, yy, bcx, bcy, rot, np.array(radius + rim), np.array(radius * ecc + rim)
            )
            paint(image, distractors * sigmoid(s_rim / edge), myo + rng.uniform(-0.03, 0.03))
        paint(image, distractors * sigmoid(s_blob / edge), rng.uniform(0.6, 0.95))
    return image


def _paint_heart(image: np.ndarray, heart: _Heart, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator, *,
                 scale: float, myo: float, lv_blood: float, rv_blood: float, distractors: float,
                 edge: float) -> None:
    """Paint the heart over ``image``: epicardial fat, myocardium, LV blood with its papillary
    muscles, RV blood."""
    # Epicardial fat: a bright band over part of the heart's outline (labelled background).
    fat_width = rng.uniform(1.0, 2.5) * scale / 96
    start, span = rng.uniform(0, 2 * np.pi), rng.uniform(0.8, 2.2)
    in_sector = np.mod(np.arctan2(heart.v, heart.u) - start, 2 * np.pi) < span
    paint(image, distractors * sigmoid(np.minimum(heart.s_epi + fat_width, -heart.s_epi) / edge) * in_sector,
          rng.uniform(0.6, 0.85))

    paint(image, sigmoid(heart.s_epi / edge), myo)
    paint(image, sigmoid(heart.s_lv / edge), lv_blood)
    # Papillary muscles: dark spots inside the cavity that still belong to the LV label.
    for _ in range(int(rng.integers(1, 3))):
        angle = rng.uniform(0, 2 * np.pi)
        px = heart.cx + 0.55 * heart.lv_a * np.cos(angle + heart.theta)
        py = heart.cy + 0.55 * heart.lv_b * np.sin(angle + heart.theta)
        pr = 0.22 * heart.lv_b
        s_pap, _, _ = _ellipse_field(xx, yy, px, py, heart.theta, pr, pr)
        paint(image, sigmoid(np.minimum(s_pap, heart.s_lv) / edge), myo + rng.uniform(0.0, 0.15))
    paint(image, sigmoid(heart.s_rv / edge), rv_blood)


def _acquire(image: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """What the scanner adds: tissue texture, partial-volume blur, a bias field, Rician noise;
    min-max scaled to [0, 1]."""
    image = image + noise * rng.uniform(0.02, 0.05) * texture(rng, image.shape, (0, 2.0, 2.0))
    image = ndimage.gaussian_filter(image, (0, rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.9)))
    image = image * bias_field(rng, image.shape)
    image = rician(rng, np.clip(image, 0.0, None), noise * rng.uniform(0.025, 0.06))
    return minmax(image)


def _cardiac_case(
    anatomy: dict[str, float], contraction: dict[str, float], n_slices: int,
    size: tuple[int, int], rng: np.random.Generator, *, noise: float = 1.0, myo_contrast: float = 0.0,
    distractors: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one short-axis volume (base at z=0, apex at the last slice) and its label map.

    ``noise`` scales the texture and Rician noise amplitudes; ``myo_contrast`` is added to the
    myocardium's intensity (tissue is drawn from 0.25..0.40); ``distractors`` weighs the bright
    background blobs and the epicardial fat (0: drawn but not painted). None changes what is drawn.
    """
    ny, nx = size
    scale = float(min(size))
    zz = np.arange(n_slices, dtype=np.float64)[:, None, None]
    depth = zz / max(n_slices - 1, 1)  # 0 at the base, 1 at the apex
    yy = np.arange(ny, dtype=np.float64)[None, :, None]
    xx = np.arange(nx, dtype=np.float64)[None, None, :]
    heart = _heart(anatomy, contraction, depth, xx, yy, scale, rng)

    label = np.zeros((n_slices, ny, nx), dtype=np.uint8)
    label[heart.s_epi > 0] = 2
    label[heart.s_lv > 0] = 3
    label[heart.s_rv > 0] = 1

    # Intensities of this case (cine SSFP: bright blood, grey tissue, dark lungs, bright fat).
    tissue = rng.uniform(0.25, 0.40)
    myo = tissue + rng.uniform(-0.06, 0.08) + myo_contrast
    lv_blood = rng.uniform(0.70, 0.95)
    rv_blood = lv_blood * rng.uniform(0.82, 1.0)
    edge = 0.6  # partial-volume width of every boundary, in pixels

    image = _body_and_lookalikes((n_slices, ny, nx), xx, yy, rng, anatomy, heart.reach, tissue=tissue, myo=myo,
                                 distractors=distractors, edge=edge)
    _paint_heart(image, heart, xx, yy, rng, scale=scale, myo=myo, lv_blood=lv_blood, rv_blood=rv_blood,
                 distractors=distractors, edge=edge)
    return _acquire(image, rng, noise), label


def _cardiac_anatomy(rng: np.random.Generator, size: tuple[int, int], heart_scale: float = 1.0) -> dict[str, float]:
    """Patient-level heart shape and position (pixels), shared by both frames; the heart's sizes
    are multiplied by ``heart_scale`` (the draws are the same at every scale)."""
    ny, nx = size
    scale = float(min(size))
    anatomy = {
        "lv_r": rng.uniform(0.08, 0.12) * scale * heart_scale,
        "ecc": rng.uniform(0.75, 0.98),
        "theta": rng.uniform(0, np.pi),
        "wall": rng.uniform(0.03, 0.05) * scale * heart_scale,
        "rv_long": rng.uniform(0.17, 0.25) * scale * heart_scale,
        "rv_short": rng.uniform(0.07, 0.10) * scale * heart_scale,
        "rv_overlap": rng.uniform(0.2, 0.6),
        "rv_dir": rng.uniform(0, 2 * np.pi),
    }
    # Keep the whole heart in view: the RV reaches out to about hypot(its offset, its long axis).
    offset = anatomy["lv_r"] + anatomy["wall"] + 0.6 * anatomy["rv_short"]
    reach = float(np.hypot(offset, anatomy["rv_long"])) + 0.03 * scale
    anatomy["cx"] = rng.uniform(min(reach, nx / 2), max(nx - reach, nx / 2))
    anatomy["cy"] = rng.uniform(min(reach, ny / 2), max(ny - reach, ny / 2))
    return anatomy


def _check_knobs(*, noise, myo_contrast, heart_scale, distractors) -> None:
    """The difficulty knobs of :func:`write_synthetic2d` are numbers in their ranges."""
    for name, value, low, high in (("noise", noise, 0.0, 10.0), ("myo_contrast", myo_contrast, -0.2, 0.5),
                                   ("heart_scale", heart_scale, 0.5, 2.0), ("distractors", distractors, 0.0, 1.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{name} must be a number in {low:g}..{high:g}, got {value!r}")


def _check_shape(patients: int, slices: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, tuple[int, int]]:
    """The slice range and the slice size of :func:`write_synthetic2d`, as ints, once checked."""
    if patients > 999:
        raise ValueError("at most 999 patients (ids are patientNNN)")
    low, high = (int(s) for s in slices)
    if not 2 <= low <= high:
        raise ValueError(f"slices must be (low, high) with 2 <= low <= high, got {slices!r}")
    size = (int(size[0]), int(size[1]))
    if min(size) < 32:
        raise ValueError(f"size must be at least 32 x 32 pixels, got {size!r}")
    return low, high, size


def _cases_by_role(rng: np.random.Generator, n_train: int, n_val: int, n_test: int) -> dict[str, list[str]]:
    """The patients numbered 1.. drawn into train/val/test at random; both frames of each as cases."""
    numbers = rng.permutation(np.arange(1, n_train + n_val + n_test + 1))
    roles = {
        "train": numbers[:n_train],
        "val": numbers[n_train:n_train + n_val],
        "test": numbers[n_train + n_val:],
    }
    return {role: [f"patient{n:03d}_frame{f:02d}" for n in nums for f in (1, 2)]
            for role, nums in roles.items()}


def _write_lists(root: Path, cases: dict[str, list[str]], n_slices_of: dict[str, int],
                 rng: np.random.Generator) -> None:
    """The layout's lists: cases per role, the training slices (shuffled within a case, as in the
    public file) and every slice sorted as strings."""
    for role in ("train", "val", "test"):
        write_list(root / f"{role}.list", cases[role])
    train_slices = []
    for case in cases["train"]:
        order = rng.permutation(n_slices_of[case]) + 1
        train_slices += [f"{case}_slice_{i}" for i in order]
    write_list(root / "train_slices.list", train_slices)
    write_list(root / "all_slices.list", sorted(
        f"{case}_slice_{i}" for case, n in n_slices_of.items() for i in range(1, n + 1)
    ))


def _patient_frames(number: int, anatomy: dict[str, float], n_slices: int, size: tuple[int, int],
                    rng: np.random.Generator, knobs: dict[str, float]):
    """``(case, image, label)`` of a patient's two frames: end-diastole-like, then end-systole-like
    (smaller cavities, thicker wall)."""
    frames = {
        1: {"lv": 1.0, "wall": 1.0, "rv": 1.0},
        2: {"lv": rng.uniform(0.70, 0.82), "wall": rng.uniform(1.2, 1.4), "rv": rng.uniform(0.75, 0.90)},
    }
    for frame, contraction in frames.items():
        yield (f"patient{number:03d}_frame{frame:02d}",
               *_cardiac_case(anatomy, contraction, n_slices, size, rng, **knobs))


def write_synthetic2d(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    n_train: int = 12,
    n_val: int = 3,
    n_test: int = 4,
    slices: tuple[int, int] = (6, 10),
    size: tuple[int, int] = (96, 96),
    *,
    noise: float = 1.0,
    myo_contrast: float = 0.0,
    distractors: float = 1.0,
    heart_scale: float = 1.0,
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
        noise: factor on the tissue texture and the Rician noise (1: the default difficulty,
            0: none); >= 0.
        myo_contrast: added to the myocardium's intensity before the bias field and noise (0:
            the default, myocardium within -0.06..+0.08 of the tissue; images are scaled to
            [0, 1] afterwards); between -0.2 and 0.5.
        distractors: opacity of the target look-alikes (bright blobs, some with a rim, and the
            epicardial fat): 1 the default, 0 none; between 0 and 1.
        heart_scale: factor on the heart's sizes (LV radius, wall, RV), for a larger heart in
            a small image: 1 the default (LV radius 8-12 % of the image); between 0.5 and 2.
        overwrite: replace an existing non-empty ``out_dir``.
    """
    check_count("n_train", n_train, 1)
    check_count("n_val", n_val, 0)
    check_count("n_test", n_test, 1)
    _check_knobs(noise=noise, myo_contrast=myo_contrast, heart_scale=heart_scale, distractors=distractors)
    low, high, size = _check_shape(n_train + n_val + n_test, slices, size)
    knobs = {"noise": float(noise), "myo_contrast": float(myo_contrast), "distractors": float(distractors)}

    rng = np.random.default_rng(seed)
    total = n_train + n_val + n_test
    cases = _cases_by_role(rng, n_train, n_val, n_test)
    train_cases = set(cases["train"])

    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite) as root:
        slice_dir = root / "data" / "slices"
        slice_dir.mkdir(parents=True)
        n_slices_of: dict[str, int] = {}
        for number in range(1, total + 1):
            patient_rng = np.random.default_rng((seed, number))
            anatomy = _cardiac_anatomy(patient_rng, size, float(heart_scale))
            n_slices = int(patient_rng.integers(low, high + 1))
            for case, image, label in _patient_frames(number, anatomy, n_slices, size, patient_rng, knobs):
                write_h5(root / "data" / f"{case}.h5", image, label)
                n_slices_of[case] = n_slices
                if case in train_cases:
                    for z in range(n_slices):
                        write_h5(slice_dir / f"{case}_slice_{z + 1}.h5", image[z], label[z])

        _write_lists(root, cases, n_slices_of, rng)
    return out_dir
