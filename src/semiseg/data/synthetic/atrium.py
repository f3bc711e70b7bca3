"""synthetic3d: late-gadolinium MRI of the left atrium like the 2018 LA challenge, in the common LA layout.

:func:`write_synthetic3d` writes ``2018LA_Seg_Training Set/<id>/mri_norm2.h5`` stored
``(X, Y, Z)`` and ``train.list`` / ``test.list``, exactly what
:func:`semiseg.data.layouts.read_la_layout` reads from the real data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from semiseg.data.layout_names import LA_FILE_NAME, LA_IMAGE_DIR
from semiseg.data.synthetic.render import (atomic_dir, bias_field, check_count, paint, rician, sigmoid, texture,
                                           write_h5, write_list)

__all__ = ["write_synthetic3d"]

_ID_ALPHABET = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


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
    image += rng.uniform(0.03, 0.06) * texture(rng, shape, 2.0)

    # Distractors: the other blood pools and vessels around the atrium (ventricle, aorta,
    # pulmonary artery), about as bright; where one meets the atrium only a wall of about two
    # voxels of tissue separates them.
    outside = sigmoid((ndimage.distance_transform_edt(label == 0) - 2.0) / 0.7)
    for _ in range(int(rng.integers(4, 8))):
        field = _ellipsoid_field(grid, rng.uniform(0.05, 0.95, 3) * dims,
                                 rng.uniform(0.07, 0.20, 3) * dims.min(), _random_rotation(rng))
        paint(image, sigmoid(field / 0.7) * outside, blood * rng.uniform(0.8, 1.2))
    paint(image, ndimage.gaussian_filter(label.astype(np.float64), 0.8), blood)

    image = ndimage.gaussian_filter(image, rng.uniform(0.5, 0.9))
    image = image * bias_field(rng, shape)
    image = rician(rng, np.clip(image, 0.0, None), rng.uniform(0.03, 0.07))
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
    check_count("n_train", n_train, 1)
    check_count("n_test", n_test, 1)
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
    with atomic_dir(out_dir, overwrite) as root:
        for number, case in enumerate(ids, start=1):
            image, label = _atrium_case(np.random.default_rng((seed, number)), shape)
            case_dir = root / LA_IMAGE_DIR / case
            case_dir.mkdir(parents=True)
            write_h5(case_dir / LA_FILE_NAME, image.transpose(2, 1, 0), label.transpose(2, 1, 0))
        write_list(root / "train.list", train)
        write_list(root / "test.list", test)
    return out_dir
