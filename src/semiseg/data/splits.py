"""Labeled / unlabeled / val / test splits by patient, from a dataset descriptor.

A split is a pure function of the descriptor (``dataset.json``, see
:func:`semiseg.data.store.describe`) and the number of labeled patients: the labeled patients are
the first ``n`` of the train list in list order, as the semi-supervised literature's code takes
them (ACDC: 3, 7 and 14 patients for 5 %, 10 % and 20 %, holding 68, 136 and 256 training
slices), and the rest of the train list is unlabeled. Val and test are the descriptor's lists.

The written ``splits/{dataset}/{ratio}.json``::

    {"dataset": "acdc", "ratio": 10, "labeled_patients": 7,
     "labeled": [...], "unlabeled": [...], "val": [...], "test": [...],
     "cases": {"labeled": [...], "unlabeled": [...], "val": [...], "test": [...]}}

Case ids are listed patient by patient in the role's patient order, and within a patient sorted
by case id (``_frame01`` before ``_frame02``), so the split does not depend on the order of the
descriptor's ``cases`` mapping.

Two roles may be empty. ``unlabeled`` is empty when every train patient is labeled (the fully
supervised upper bound). ``val`` is empty exactly when the dataset has no validation list (the LA
layout); validation then has nothing to score, and the engine must not select a checkpoint by
validation (it keeps the last one). ``labeled`` and ``test`` are never empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SPLIT_ROLES", "make_split"]

#: The roles of a split, in the order they are written.
SPLIT_ROLES = ("labeled", "unlabeled", "val", "test")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _cases_by_patient(descriptor: Mapping[str, Any]) -> dict[str, list[str]]:
    cases = descriptor["cases"]
    if not isinstance(cases, Mapping):
        raise ValueError("descriptor 'cases' must map case ids to {'patient', ...}")
    by_patient: dict[str, list[str]] = {}
    for case_id, info in cases.items():
        if not isinstance(info, Mapping) or "patient" not in info:
            raise ValueError(f"descriptor case {case_id!r} has no 'patient'")
        by_patient.setdefault(str(info["patient"]), []).append(str(case_id))
    return {patient: sorted(ids) for patient, ids in by_patient.items()}


def make_split(descriptor: Mapping[str, Any], ratio: int, labeled_patients: int) -> dict[str, Any]:
    """Build the split json for ``labeled_patients`` labeled patients.

    Args:
        descriptor: a dataset descriptor with ``name``, ``patients`` (``train``/``val``/``test``
            lists) and ``cases`` (``{case_id: {"patient": ...}}``).
        ratio: the percent label the split stands for (``10``), used in paths; 1..100.
        labeled_patients: ``n``, how many of the train patients are labeled (the first ``n``).

    Returns:
        The split: ``dataset``, ``ratio``, ``labeled_patients``, the four patient lists and
        ``cases`` with the case ids of each role.

    Raises:
        ValueError: ``ratio`` or ``n`` out of range, the descriptor lacks a key, a patient is in
            two lists or has no cases, or the test list is empty.
    """
    for key in ("name", "patients", "cases"):
        if key not in descriptor:
            raise ValueError(f"descriptor has no {key!r} (is it a dataset.json?)")
    patients = descriptor["patients"]
    if not isinstance(patients, Mapping) or not {"train", "val", "test"} <= set(patients):
        raise ValueError("descriptor 'patients' must have the lists 'train', 'val' and 'test'")
    name = descriptor["name"]
    train = [str(p) for p in patients["train"]]
    if not _is_int(ratio) or not 1 <= ratio <= 100:
        raise ValueError(f"ratio must be an integer percent in 1..100, got {ratio!r}")
    if not _is_int(labeled_patients) or not 1 <= labeled_patients <= len(train):
        raise ValueError(
            f"{name}: labeled_patients must be an integer in 1..{len(train)} (the number of "
            f"train patients), got {labeled_patients!r}"
        )
    roles = {
        "labeled": train[:labeled_patients],
        "unlabeled": train[labeled_patients:],
        "val": [str(p) for p in patients["val"]],
        "test": [str(p) for p in patients["test"]],
    }
    if not roles["test"]:
        raise ValueError(
            f"{name}: the descriptor's test list is empty; a split needs test patients"
        )

    by_patient = _cases_by_patient(descriptor)
    owner: dict[str, str] = {}
    for role in SPLIT_ROLES:
        for patient in roles[role]:
            if patient in owner:
                raise ValueError(
                    f"{name}: patient {patient!r} is in both {owner[patient]!r} and {role!r}"
                )
            owner[patient] = role
            if not by_patient.get(patient):
                raise ValueError(f"{name}: patient {patient!r} ({role}) has no cases")

    split: dict[str, Any] = {
        "dataset": name,
        "ratio": ratio,
        "labeled_patients": labeled_patients,
    }
    split.update({role: list(roles[role]) for role in SPLIT_ROLES})
    split["cases"] = {
        role: [case for patient in roles[role] for case in by_patient[patient]]
        for role in SPLIT_ROLES
    }
    return split
