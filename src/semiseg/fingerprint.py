"""Content hashes of the source code each pipeline stage depends on.

Snakemake's code trigger sees only a rule's own `run:` block or script, not edits inside an
imported package. So every rule carries, as a param, the hash of exactly the package files its
result depends on; an edit to one of them changes the param, and Snakemake re-runs that rule's
jobs (and, through their changed outputs, everything downstream) and no others:

- a method's own file (and the files of its base classes) → that method's train jobs only;
- the engine, networks, shared method pieces → every train job;
- the table writer → only tables.

The hash is over the files' bytes: whitespace- and comment-only edits count as changes. That
errs on the side of re-running, and keeps the fingerprint a plain, checkable sha256 of files
anyone can list (``semiseg audit`` prints them).
"""

from __future__ import annotations

import hashlib
import inspect
from functools import lru_cache
from pathlib import Path

__all__ = ["STAGE_FILES", "stage_files", "code_fingerprint", "method_files", "table_fingerprint"]

PACKAGE = Path(__file__).resolve().parent

# Files (relative to the package) or directories each stage's result depends on.
STAGE_FILES: dict[str, tuple[str, ...]] = {
    "fetch": ("data/fetch.py", "data/synthetic.py", "data/errors.py"),
    "preprocess": ("data/preprocess.py", "data/layouts.py", "data/store.py", "data/errors.py"),
    "split": ("data/splits.py",),
    "train": ("engine", "nets", "methods/base.py", "methods/common", "data/store.py",
              "inference/predict.py", "config.py"),
    "infer": ("inference", "nets", "data/store.py"),
    "evaluate": ("metrics",),
    "figure": ("reporting/figures.py", "methods", "nets", "engine/data.py", "data/store.py"),
    "table": ("reporting/__init__.py", "reporting/tables.py", "reporting/build.py", "metrics/segmentation.py"),
}


def _expand(entry: str) -> list[Path]:
    p = PACKAGE / entry
    if p.is_dir():
        return sorted(q for q in p.rglob("*.py"))
    if not p.exists():
        raise FileNotFoundError(f"{p}: listed in STAGE_FILES but missing")
    return [p]


def method_files(algorithm: str) -> list[Path]:
    """The source files of a registered algorithm's class and of its semiseg base classes."""
    from semiseg.methods import METHODS

    if algorithm not in METHODS:
        raise ValueError(f"unknown algorithm {algorithm!r}; registered: {', '.join(sorted(METHODS))}")
    files = []
    for cls in inspect.getmro(METHODS[algorithm]):
        if cls.__module__.startswith("semiseg."):
            files.append(Path(inspect.getfile(cls)).resolve())
    return sorted(set(files))


def stage_files(stage: str, algorithm: str | None = None) -> list[Path]:
    """Every package file the stage's result depends on (plus the method's, for train)."""
    if stage not in STAGE_FILES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGE_FILES)}")
    files = {f for entry in STAGE_FILES[stage] for f in _expand(entry)}
    if algorithm is not None:
        files.update(method_files(algorithm))
    return sorted(files)


@lru_cache(maxsize=None)
def code_fingerprint(stage: str, algorithm: str | None = None) -> str:
    """sha256 (first 16 hex digits) over the relative paths and bytes of the stage's files."""
    h = hashlib.sha256()
    for f in stage_files(stage, algorithm):
        h.update(str(f.relative_to(PACKAGE)).encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def table_fingerprint(cfg: dict, name: str) -> str:
    """What a table was built from, as one hash: every run's resolved spec, the train code of its
    methods and the table code. Printed in the table's footnote; `semiseg audit` recomputes it."""
    from semiseg.config import run_spec, spec_hash, table_runs

    runs = table_runs(cfg, name)
    return spec_hash({
        "runs": [run_spec(cfg, *r) for r in runs],
        "train_code": sorted({code_fingerprint("train", cfg["methods"][m]["algorithm"]) for _, m, _, _ in runs}),
        "table_code": code_fingerprint("table"),
    })
