"""What both synthetic generators share: the imaging effects they render and how they write files.

Imaging effects (all driven by the caller's :class:`numpy.random.Generator`, so a generator's
output stays a pure function of its seed): partial-volume blending (:func:`paint`), a smooth
multiplicative bias field, tissue texture, Rician magnitude noise, min-max scaling. Writing: h5
files the way the public layouts store them, list files, and a directory that appears only
when generation succeeded (:func:`atomic_dir`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

from semiseg import io as semiseg_io

__all__ = ["atomic_dir", "bias_field", "check_count", "minmax", "paint", "rician", "sigmoid", "texture",
           "write_h5", "write_list"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def paint(image: np.ndarray, fraction: np.ndarray, intensity: float | np.ndarray) -> None:
    """Blend ``intensity`` into ``image`` where ``fraction`` (0..1) of a voxel is covered."""
    image += fraction * (intensity - image)


def bias_field(rng: np.random.Generator, shape: Sequence[int], terms: int = 3) -> np.ndarray:
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


def texture(rng: np.random.Generator, shape: Sequence[int], sigma: Sequence[float]) -> np.ndarray:
    """Zero-mean, unit-std smooth noise: tissue texture at the scale of ``sigma`` voxels."""
    field = ndimage.gaussian_filter(rng.standard_normal(tuple(shape)), sigma)
    return field / (field.std() + 1e-12)


def rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise, as MRI magnitude images are."""
    real = image + rng.normal(0.0, sigma, image.shape)
    imag = rng.normal(0.0, sigma, image.shape)
    return np.sqrt(real * real + imag * imag)


def minmax(image: np.ndarray) -> np.ndarray:
    low, high = float(image.min()), float(image.max())
    return ((image - low) / max(high - low, 1e-12)).astype(np.float32)


def write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    """Write ``image``/``label`` the way the public layouts do: gzip, h5py's automatic chunks."""
    with h5py.File(path, "w") as h5:
        h5.create_dataset("image", data=np.ascontiguousarray(image, dtype=np.float32),
                          compression="gzip")
        h5.create_dataset("label", data=np.ascontiguousarray(label, dtype=np.uint8),
                          compression="gzip")


def write_list(path: Path, items: Sequence[str]) -> None:
    path.write_text("".join(f"{item}\n" for item in items))


@contextmanager
def atomic_dir(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling of ``out_dir`` and move it into place when the block succeeds.

    A failed generation leaves nothing at ``out_dir``; an existing non-empty ``out_dir`` is
    replaced only with ``overwrite=True``, otherwise :class:`FileExistsError` is raised before any
    work is done.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir}: directory is not empty (pass overwrite=True to replace)")
    with semiseg_io.atomic_dir(out_dir) as tmp:  # the umask's mode; removed on failure
        yield tmp


def check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
