"""The case store: one HDF5 file of whole volumes per dataset.

Layout (see ``docs/architecture.md``)::

    store.h5
      attrs: name (str), dims (2 | 3), num_classes (int), labels (JSON {"background": 0, ...}),
             format_version (int)
      cases/<case_id>/image   float32 (Z, Y, X), or (C, Z, Y, X) for C >= 2 channels
      cases/<case_id>/label   uint8   (Z, Y, X)
      cases/<case_id>  attrs: patient (str), spacing (3 floats, z/y/x),
                              origin (3 floats, x/y/z), direction (9 floats, row-major)

``origin`` and ``direction`` are the source image's place in patient space, in ITK's (and
SimpleITK's, and the NIfTI reader's) terms: the physical (LPS, mm) position of voxel
``[0, 0, 0]`` as ``(x, y, z)``, and the 3 x 3 matrix whose columns are the directions of the
image's ``x`` (last array axis), ``y`` and ``z`` (first array axis) index axes. Together with the
spacing they let a prediction be written back where the image lies (:meth:`Store.geometry`).
A source without them (the h5 layouts) gets origin 0 and the identity, as does a store written
before they were kept (reading it falls back to those).

A one-channel image is stored ``(Z, Y, X)``, as every store was before several channels could be
held; a dataset of ``C >= 2`` input channels (an nnU-Net layout's ``params.channel`` list) stores
each image ``(C, Z, Y, X)``, every case with the same ``C``, its channels in the order the
networks take them (:attr:`Store.channels`; :func:`channels_first` gives either as
``(C, Z, Y, X)``).

Whatever the dataset's dimensionality, the store holds whole volumes: a 2D dataset (ACDC) is
trained on its ``(Y, X)`` slices and evaluated on whole volumes slice by slice.

Intensities are stored as the source layout holds them; the store checks that they are finite,
not that they lie in a range. ACDC (and synthetic2d) volumes are min-max normalised to [0, 1] by
their distributors; the LA files (and synthetic3d) are z-scored per volume (mean 0, std 1, values
about -1..8), and the papers train on them that way.

Cases are written in the order they are given and read back in that order (the ``cases`` group
tracks creation order), so a store built twice from the same input is byte-identical and its
``store_sha256`` is stable across re-runs.

Volumes are stored uncompressed and contiguous: preprocessing is then the source read plus a
copy, and reading a case (or a slice of a 2D dataset's volume, which is contiguous bytes too) one
copy, with no chunk index. On the 24 LA-mini cases (2 cores, warm cache, CPU seconds): writing
0.4 s against 3.0 s with gzip level 4 (1.3 s LZF), hashing the store 0.2 s, reading the
distributors' gzip h5 files 0.9 s; the price is size, 302 MB against 57 MB (gzip 4) and 111 MB
(LZF), about 1.25 GB for the 100 LA training cases and 148 MB for ACDC's 200 volumes. A :class:`Store`
keeps an open HDF5 handle: open one per forked worker, never share one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from semiseg.data.cases import (IDENTITY_DIRECTION, ORIGIN_ZERO, Case, channels_first, check_case, check_geometry,
                                check_labels)
from semiseg.errors import DataError
from semiseg.io import atomic_path, ensure_free, sha256_file

__all__ = [
    "FORMAT_VERSION",
    "IDENTITY_DIRECTION",
    "ROLES",
    "Case",
    "Store",
    "channels_first",
    "describe",
    "sha256_file",
    "write_store",
]

#: Bumped when the on-disk layout of the store changes incompatibly.
FORMAT_VERSION = 1

#: The patient lists a descriptor carries, in this order.
ROLES = ("train", "val", "test")

_CASES = "cases"

def write_store(
    path: str | os.PathLike[str],
    *,
    name: str,
    dims: int,
    labels: Mapping[str, int],
    cases: Iterable[Case],
) -> Path:
    """Validate ``cases`` and write them to a new store at ``path``; return the path.

    The store is written to a temporary file beside ``path`` and moved into place only once every
    case has been validated and written, so a failure never leaves a store that looks valid. An
    existing file at ``path`` is removed first: after a failed rebuild there is no store at all
    rather than a stale one that looks current.

    Args:
        path: the store file to create (its directory is created if needed).
        name: the dataset's name (``"acdc"``).
        dims: 2 or 3, how the networks see the data.
        labels: class names to indices, indices exactly ``0..n-1``.
        cases: the cases, in the order the store should list them; consumed lazily, so an importer
            may read one volume at a time.

    Raises:
        ValueError: ``name``, ``dims`` or ``labels`` are invalid.
        DataError: a case is invalid (names the case and its source file), two cases share an
            id, two cases hold different numbers of channels, or there are no cases.
    """
    path = Path(path)
    if not isinstance(name, str) or not name:
        raise ValueError(f"store name must be a non-empty string, got {name!r}")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    labels = check_labels(labels)
    num_classes = len(labels)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.attrs["name"] = name
            h5.attrs["dims"] = int(dims)
            h5.attrs["num_classes"] = num_classes
            h5.attrs["labels"] = json.dumps(labels)
            group = h5.create_group(_CASES, track_order=True)
            seen: dict[str, str] = {}
            first: Case | None = None
            for raw in cases:
                case = check_case(raw, num_classes, path)
                if case.case_id in seen:
                    raise DataError(
                        case.source,
                        f"case {case.case_id!r} appears twice (first from {seen[case.case_id]})",
                    )
                first = first or case
                if _channels(case.image) != _channels(first.image):
                    raise DataError(case.source, f"case {case.case_id!r} has {_channels(case.image)} channel(s), "
                                                 f"case {first.case_id!r} {_channels(first.image)}")
                seen[case.case_id] = case.source
                # HDF5 can crash the process on a full disk: stop before it gets there
                ensure_free(tmp, case.image.nbytes + case.label.nbytes)
                _write_case(group, case)
            if not seen:
                raise DataError(path, "no cases to write")
    return path


def _channels(image) -> int:
    """How many channels a stored ``(Z, Y, X)`` or ``(C, Z, Y, X)`` image holds."""
    return 1 if image.ndim == 3 else int(image.shape[0])


def _write_case(group: h5py.Group, case: Case) -> None:
    entry = group.create_group(case.case_id)
    entry.attrs["patient"] = case.patient
    entry.attrs["spacing"] = np.asarray(case.spacing, dtype=np.float64)
    entry.attrs["origin"] = np.asarray(case.origin, dtype=np.float64)
    entry.attrs["direction"] = np.asarray(case.direction, dtype=np.float64)
    for key, data in (("image", case.image), ("label", case.label)):
        entry.create_dataset(key, data=data)


class Store:
    """Read-only view of a store written by :func:`write_store`.

    Opening validates the root attributes and every case's metadata (keys, shapes, dtypes,
    attributes) without reading voxel data; a malformed store raises :class:`DataError` naming
    the file and the problem. Use as a context manager, or call :meth:`close`.

    Example::

        with Store("results/preprocessed/acdc/store.h5") as store:
            image, label = store.read(store.case_ids[0])
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(self.path, "store does not exist")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise DataError(self.path, f"not a readable HDF5 file ({exc})") from None
        try:
            self._load_metadata()
        except BaseException:
            self._h5.close()
            raise

    def _fail(self, problem: str) -> DataError:
        return DataError(self.path, problem)

    def _load_metadata(self) -> None:
        attrs = self._h5.attrs
        for key in ("name", "dims", "num_classes", "labels"):
            if key not in attrs:
                raise self._fail(f"missing root attribute {key!r} (not a semiseg store?)")
        version = int(attrs.get("format_version", FORMAT_VERSION))
        if version != FORMAT_VERSION:
            raise self._fail(f"store format version {version}, this code reads {FORMAT_VERSION}")
        self.name: str = _as_str(attrs["name"])
        self.dims: int = int(attrs["dims"])
        if self.dims not in (2, 3):
            raise self._fail(f"root attribute dims is {self.dims}, expected 2 or 3")
        try:
            labels = check_labels(json.loads(_as_str(attrs["labels"])))
        except (ValueError, TypeError) as exc:
            raise self._fail(f"invalid labels attribute: {exc}") from None
        self._labels = labels
        self.num_classes: int = int(attrs["num_classes"])
        if self.num_classes != len(labels):
            raise self._fail(
                f"num_classes is {self.num_classes} but labels name {len(labels)} classes"
            )
        if _CASES not in self._h5 or not isinstance(self._h5[_CASES], h5py.Group):
            raise self._fail(f"missing group {_CASES!r}")
        self._meta: dict[str, tuple[str, tuple[float, float, float], tuple[int, int, int]]] = {}
        self._placement: dict[str, tuple[tuple[float, float, float], tuple[float, ...]]] = {}
        for case_id, entry in self._h5[_CASES].items():
            self._meta[case_id] = self._case_metadata(case_id, entry)
            self._placement[case_id] = check_geometry(
                entry.attrs.get("origin", ORIGIN_ZERO), entry.attrs.get("direction", IDENTITY_DIRECTION),
                lambda problem, where=f"{_CASES}/{case_id}": self._fail(f"{where}: {problem}"))
        if not self._meta:
            raise self._fail("store holds no cases")
        counts = {case_id: _channels(self._h5[_CASES][case_id]["image"]) for case_id in self._meta}
        self.channels: int = counts[next(iter(counts))]
        odd = sorted(c for c, n in counts.items() if n != self.channels)
        if odd:
            raise self._fail(f"cases {odd} do not hold the {self.channels} channel(s) of the first case")

    def _case_metadata(
        self, case_id: str, entry: Any
    ) -> tuple[str, tuple[float, float, float], tuple[int, int, int]]:
        where = f"{_CASES}/{case_id}"
        if not isinstance(entry, h5py.Group):
            raise self._fail(f"{where} is not a group")
        for key in ("image", "label"):
            if key not in entry or not isinstance(entry[key], h5py.Dataset):
                raise self._fail(f"{where} has no dataset {key!r}")
        image, label = entry["image"], entry["label"]
        if image.ndim not in (3, 4):
            raise self._fail(f"{where}/image must be (Z, Y, X) or (C, Z, Y, X), got shape {image.shape}")
        if image.shape[-3:] != label.shape:
            raise self._fail(
                f"{where}: image shape {image.shape} differs from label shape {label.shape}"
            )
        if image.dtype != np.float32 or label.dtype != np.uint8:
            raise self._fail(
                f"{where}: expected float32 image and uint8 label, got {image.dtype} and "
                f"{label.dtype}"
            )
        if "patient" not in entry.attrs or "spacing" not in entry.attrs:
            raise self._fail(f"{where} lacks the 'patient' or 'spacing' attribute")
        spacing = tuple(float(s) for s in np.asarray(entry.attrs["spacing"]).ravel())
        if len(spacing) != 3:
            raise self._fail(f"{where}: spacing must hold 3 numbers, got {spacing}")
        shape = (int(label.shape[0]), int(label.shape[1]), int(label.shape[2]))
        return _as_str(entry.attrs["patient"]), spacing, shape  # type: ignore[return-value]

    # -- context management ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the underlying HDF5 file (idempotent)."""
        self._h5.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({os.fspath(self.path)!r}, name={self.name!r}, cases={len(self._meta)})"

    # -- metadata ----------------------------------------------------------------------------------

    @property
    def labels(self) -> dict[str, int]:
        """Class names to indices (a copy)."""
        return dict(self._labels)

    @property
    def case_ids(self) -> tuple[str, ...]:
        """Every case id, in the order the cases were written."""
        return tuple(self._meta)

    def __len__(self) -> int:
        return len(self._meta)

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._meta

    def _entry(self, case_id: str) -> tuple[str, tuple[float, float, float], tuple[int, int, int]]:
        try:
            return self._meta[case_id]
        except KeyError:
            raise self._fail(f"no case {case_id!r} in store {self.name!r}") from None

    def patient(self, case_id: str) -> str:
        """The patient id of ``case_id``."""
        return self._entry(case_id)[0]

    def spacing(self, case_id: str) -> tuple[float, float, float]:
        """Voxel spacing (z, y, x) of ``case_id``."""
        return self._entry(case_id)[1]

    def origin(self, case_id: str) -> tuple[float, float, float]:
        """Physical position (x, y, z; LPS mm) of voxel ``[0, 0, 0]`` of ``case_id``."""
        self._entry(case_id)
        return self._placement[case_id][0]

    def direction(self, case_id: str) -> tuple[float, ...]:
        """ITK's direction matrix of ``case_id``, row-major (9 floats)."""
        self._entry(case_id)
        return self._placement[case_id][1]

    def geometry(self, case_id: str) -> dict[str, tuple[float, ...]]:
        """Where ``case_id`` lies, in SimpleITK's terms: ``{"spacing": (x, y, z), "origin": (x, y, z),
        "direction": 9 floats}``; ``image.SetSpacing(**)`` etc. place an array of its shape there."""
        return {"spacing": tuple(reversed(self.spacing(case_id))), "origin": self.origin(case_id),
                "direction": self.direction(case_id)}

    def shape(self, case_id: str) -> tuple[int, int, int]:
        """Volume shape (Z, Y, X) of ``case_id`` (one channel's), without reading it."""
        return self._entry(case_id)[2]

    # -- data --------------------------------------------------------------------------------------

    def read_image(self, case_id: str) -> np.ndarray:
        """The float32 image of ``case_id``: ``(Z, Y, X)``, or ``(C, Z, Y, X)`` in a store of
        :attr:`channels` ``C >= 2``."""
        self._entry(case_id)
        return self._h5[_CASES][case_id]["image"][()]

    def read(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The float32 image (as :meth:`read_image`) and the uint8 ``(Z, Y, X)`` label of ``case_id``."""
        self._entry(case_id)
        entry = self._h5[_CASES][case_id]
        return entry["image"][()], entry["label"][()]


def _as_str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def describe(
    store_path: str | os.PathLike[str], *, patients: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """Build the ``dataset.json`` descriptor of a store.

    Args:
        store_path: a store written by :func:`write_store`.
        patients: ``{"train": [...], "val": [...], "test": [...]}``, patient ids in the source's
            list order (as the importers return them). ``val`` may be empty.

    Returns:
        ``{"name", "dims", "num_classes", "labels", "patients", "cases", "store_sha256"}`` where
        ``cases`` maps each case id (in store order) to ``{"patient", "shape", "spacing"}``, and
        ``"channels"`` for a store of 2 or more channels.

    Raises:
        ValueError: ``patients`` does not have exactly the keys train/val/test.
        DataError: the patient lists and the store disagree: a patient listed twice, a listed
            patient without cases, or a stored case whose patient is in no list.
    """
    store_path = Path(store_path)
    if set(patients) != set(ROLES):
        raise ValueError(f"patients must have exactly the keys {list(ROLES)}, got {list(patients)}")
    for role in ROLES:
        if isinstance(patients[role], str):
            raise ValueError(
                f"patients[{role!r}] must be a list of ids, not the string {patients[role]!r}"
            )
    role_of: dict[str, str] = {}
    for role in ROLES:
        for patient in patients[role]:
            if patient in role_of:
                raise DataError(
                    store_path,
                    f"patient {patient!r} is listed in both {role_of[patient]!r} and {role!r}",
                )
            role_of[patient] = role

    with Store(store_path) as store:
        cases: dict[str, dict[str, Any]] = {}
        with_cases: set[str] = set()
        for case_id in store.case_ids:
            patient = store.patient(case_id)
            if patient not in role_of:
                raise DataError(
                    store_path,
                    f"case {case_id!r} belongs to patient {patient!r}, who is in no patient list",
                )
            with_cases.add(patient)
            cases[case_id] = {
                "patient": patient,
                "shape": list(store.shape(case_id)),
                "spacing": list(store.spacing(case_id)),
            }
        missing = [p for p in role_of if p not in with_cases]
        if missing:
            raise DataError(store_path, f"listed patients have no cases in the store: {missing}")
        descriptor = {
            "name": store.name,
            "dims": store.dims,
            "num_classes": store.num_classes,
            "labels": store.labels,
            # only where there are several: one-channel descriptors stay as they were
            **({"channels": store.channels} if store.channels > 1 else {}),
            "patients": {role: list(patients[role]) for role in ROLES},
            "cases": cases,
        }
    descriptor["store_sha256"] = sha256_file(store_path)
    return descriptor
