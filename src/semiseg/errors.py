"""The one exception type for bad input data.

Every data-validation failure in semiseg raises :class:`DataError` naming the file at fault and
what is wrong with it, so a failing pipeline run points straight at the offending file::

    DataError: /data/ACDC/train.list: case 'patient003_frame01' is listed but
    /data/ACDC/data/slices/patient003_frame01_slice_1.h5 does not exist
"""

from __future__ import annotations

import os

__all__ = ["DataError"]


class DataError(Exception):
    """A data file is missing, malformed or inconsistent.

    Args:
        path: the file (or directory) at fault.
        problem: what is wrong with it, as a sentence fragment without trailing period.

    ``str(error)`` is ``"<path>: <problem>"``; both parts stay available as attributes.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(self.path, problem)

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"
