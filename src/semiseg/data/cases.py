"""One case as an importer hands it to the store, and the checks every case passes before it is
written: label values, shapes, finite intensities, spacing, and the geometry (origin and
direction) that places it in patient space (see :mod:`semiseg.data.store`)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from semiseg.errors import DataError

__all__ = ["IDENTITY_DIRECTION", "ORIGIN_ZERO", "Case", "channels_first", "check_case", "check_geometry",
           "check_labels"]

#: The direction of an image whose index axes are the physical axes (ITK's default).
IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
ORIGIN_ZERO = (0.0, 0.0, 0.0)


@dataclass(frozen=True, eq=False)
class Case:
    """One volume and its label map, as an importer hands it to :func:`write_store`.

    Attributes:
        case_id: unique id within the dataset (``patient003_frame01``); becomes an HDF5 name, so
            it may not contain ``/``.
        patient: the patient the case belongs to; splits are made by patient.
        image: ``(Z, Y, X)`` intensities, or ``(C, Z, Y, X)`` for ``C >= 2`` channels on one voxel
            grid (the networks' input channels, in that order); converted to float32 when written.
        label: ``(Z, Y, X)`` integer class map, values in ``range(num_classes)``; stored as uint8.
        spacing: voxel size along z, y, x (mm, or 1.0 for voxel units).
        source: the file(s) the case was read from, named in any :class:`DataError` about it.
        origin: physical position (x, y, z; LPS mm, as ITK reads it) of voxel ``[0, 0, 0]``.
        direction: ITK's 3 x 3 direction matrix, row-major (9 floats); its columns are the x, y,
            z index axes' directions. Must be orthonormal.
    """

    case_id: str
    patient: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    source: str = ""
    origin: tuple[float, float, float] = ORIGIN_ZERO
    direction: tuple[float, ...] = IDENTITY_DIRECTION


def channels_first(image: np.ndarray) -> np.ndarray:
    """A case's image as ``(C, Z, Y, X)``: a one-channel ``(Z, Y, X)`` image gains a leading axis of 1
    (a view), a several-channel one is returned as it is."""
    return image[None] if image.ndim == 3 else image


def check_labels(labels: Mapping[str, int]) -> dict[str, int]:
    """Validate a ``{name: index}`` map: string names, indices exactly ``0..n-1``."""
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError(f"labels must be a non-empty {{name: index}} mapping, got {labels!r}")
    out: dict[str, int] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"label names must be non-empty strings, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"label {key!r} has non-integer index {value!r}")
        out[key] = int(value)
    if sorted(out.values()) != list(range(len(out))):
        raise ValueError(f"label indices must be exactly 0..{len(out) - 1}, got {out}")
    return out


def check_case(case: Case, num_classes: int, where: str | os.PathLike[str]) -> Case:
    """Return ``case`` with a float32 image and uint8 label, or raise :class:`DataError`.

    ``where`` is named in the error when the case does not say where it came from.
    """
    source = case.source or os.fspath(where)
    name = f"case {case.case_id!r}"
    if not isinstance(case.case_id, str) or not case.case_id or "/" in case.case_id:
        raise DataError(source, f"invalid case id {case.case_id!r} (non-empty, no '/')")
    if case.case_id in (".", ".."):
        raise DataError(source, f"invalid case id {case.case_id!r}")
    if not isinstance(case.patient, str) or not case.patient:
        raise DataError(source, f"{name}: invalid patient id {case.patient!r}")

    image = np.asarray(case.image)
    label = np.asarray(case.label)
    if image.ndim not in (3, 4) or (image.ndim == 4 and image.shape[0] < 2):
        raise DataError(source, f"{name}: image must be 3-D (Z, Y, X) or hold 2 or more channels (C, Z, Y, X), "
                                f"got shape {image.shape}")
    if image.size == 0:
        raise DataError(source, f"{name}: image is empty (shape {image.shape})")
    if image.shape[-3:] != label.shape:
        raise DataError(
            source, f"{name}: image shape {image.shape} differs from label shape {label.shape}"
        )
    if not (np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer)):
        raise DataError(source, f"{name}: image has non-numeric dtype {image.dtype}")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
        raise DataError(source, f"{name}: image has {bad} non-finite (NaN/inf) voxels")
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
        raise DataError(source, f"{name}: label dtype {label.dtype} is not an integer type")
    low, high = int(label.min()), int(label.max())
    if low < 0 or high >= num_classes:
        raise DataError(
            source,
            f"{name}: label values span {low}..{high}, outside 0..{num_classes - 1}",
        )
    try:
        spacing = tuple(float(s) for s in np.asarray(case.spacing, dtype=np.float64).ravel())
    except (TypeError, ValueError):
        spacing = ()
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise DataError(source, f"{name}: spacing must be 3 positive numbers, got {case.spacing!r}")
    origin, direction = check_geometry(case.origin, case.direction,
                                        lambda problem: DataError(source, f"{name}: {problem}"))
    return Case(
        case_id=case.case_id,
        patient=case.patient,
        image=image,
        label=label.astype(np.uint8, copy=False),
        spacing=spacing,  # type: ignore[arg-type]
        source=source,
        origin=origin,
        direction=direction,
    )


def check_geometry(origin, direction, fail) -> tuple[tuple[float, float, float], tuple[float, ...]]:
    """``origin`` as 3 finite floats and ``direction`` as 9 floats of an orthonormal matrix, or
    raise ``fail(problem)``."""
    try:
        o = tuple(float(v) for v in np.asarray(origin, dtype=np.float64).ravel())
    except (TypeError, ValueError):
        o = ()
    if len(o) != 3 or not all(math.isfinite(v) for v in o):
        raise fail(f"origin must be 3 finite numbers (x, y, z), got {origin!r}")
    try:
        d = tuple(float(v) for v in np.asarray(direction, dtype=np.float64).ravel())
    except (TypeError, ValueError):
        d = ()
    if len(d) != 9 or not all(math.isfinite(v) for v in d):
        raise fail(f"direction must be 9 finite numbers (a 3 x 3 matrix, row-major), got {direction!r}")
    m = np.asarray(d).reshape(3, 3)
    # NIfTI headers store the matrix in float32: orthonormal to about 1e-6
    if not np.allclose(m @ m.T, np.eye(3), atol=1e-4):
        raise fail(f"direction {d} is not an orthonormal matrix (columns of unit length, at right angles)")
    return o, d  # type: ignore[return-value]
