"""Content hashes of the source code each pipeline stage depends on.

Snakemake's code trigger sees only a rule's own `run:` block or script, not edits inside an
imported package. So every rule carries, as a param, the hash of exactly the package files its
result depends on; an edit to one of them changes the param, and Snakemake re-runs that rule's
jobs (and, through their changed outputs, everything downstream) and no others.

Which files: a stage's *entry module* (:data:`STAGE_MODULES`) and every ``semiseg`` module it
imports, transitively, read from the source with :mod:`ast` (any ``import semiseg.x`` or
``from semiseg.x import y`` anywhere in a file, function bodies included; ``y`` counts when it is
itself a module). A train job adds its algorithm's module and that module's imports. Nothing is
listed by hand, so a new import is followed without anyone remembering to list it:

- ``methods/alhvr.py`` → ALHVR's train jobs only (the region study ``cps_regions`` imports the
  two-network base in ``methods/common/dual_branch.py``, not ``alhvr.py``);
- the engine, networks, shared method pieces a method imports → every train job that reaches
  them;
- the table writer → only tables.

Three kinds of import are not followed:

- the algorithm modules that ``semiseg.methods`` imports dynamically to register them (they are
  not written as imports; the train stage adds exactly its own algorithm's);
- the package ``__init__`` of a module imported by its full name (``semiseg.data.store`` does not
  bring in ``semiseg/data/__init__.py`` and everything it re-exports);
- :data:`PLUMBING`: modules that shape how a job runs, not what it computes: the config loader
  (what it resolves is already a rule param, the run spec), the command line, provenance records
  and this module.

The hash is over the files' bytes: whitespace- and comment-only edits count as changes. That
errs on the side of re-running, and keeps the fingerprint a plain, checkable sha256 of files
anyone can list (``semiseg audit`` prints the fingerprints; :func:`stage_files` lists the files).
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

from semiseg.method_sources import method_source_files, registered_figures

__all__ = ["PLUMBING", "STAGE_MODULES", "code_fingerprint", "method_files", "module_imports",
           "registered_algorithms", "stage_files", "stage_roots"]

PACKAGE = Path(__file__).resolve().parent

#: The module each stage's CLI command calls into; its import closure is the stage's code. The
#: ``figure`` stage's are the modules of the figures the methods register (:func:`stage_roots`).
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "fetch": ("semiseg.data.fetch",),
    "preprocess": ("semiseg.data.preprocess",),
    "split": ("semiseg.data.splits",),
    "train": ("semiseg.engine.loop",),
    "infer": ("semiseg.inference.run",),
    "evaluate": ("semiseg.metrics.evaluate",),
    "evaluate-external": ("semiseg.metrics.external",),
    "table": ("semiseg.reporting.build",),
    "report": ("semiseg.reporting.report",),
    # the test-selection oracle (a table's `oracle:`): its own stages, apart from the honest ones
    "oracle-train": ("semiseg.engine.oracle",),
    "oracle-evaluate": ("semiseg.metrics.oracle",),
}

#: Modules not followed: they decide how a job runs, not what it computes (see the module doc).
PLUMBING = frozenset({"semiseg.config", "semiseg.schema", "semiseg.cli", "semiseg.provenance", "semiseg.fingerprint",
                       "semiseg.io", "semiseg.table_config"})


def _module_file(name: str) -> Path | None:
    """The source file of a ``semiseg`` module name, or None when it names no module."""
    parts = name.split(".")
    if parts[0] != "semiseg":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = ["semiseg", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def module_imports(name: str) -> frozenset[str]:
    """The ``semiseg`` modules that module ``name`` imports directly (relative imports resolved)."""
    path = _module_file(name)
    if path is None:
        raise ValueError(f"{name!r} is not a module of the semiseg package")
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # `from semiseg.methods import alhvr` imports the module semiseg.methods.alhvr
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(m for m in found if _module_file(m) is not None)


def _closure(roots) -> set[Path]:
    seen: set[str] = set()
    todo = [r for r in roots if r not in PLUMBING]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(m for m in module_imports(name) if m not in seen and m not in PLUMBING)
    return {_module_file(m) for m in seen}


@lru_cache(maxsize=None)
def registered_algorithms() -> dict[str, str]:
    """Algorithm name -> the module registering it, found by reading ``semiseg/methods/*.py``
    and ``semiseg/methods/*/__init__.py`` (a method with helpers is a package) for a class
    decorated ``@register("<name>")``: the same registry ``semiseg.methods`` builds by
    importing those modules, without importing them (building the workflow's DAG then never
    imports torch)."""
    found: dict[str, str] = {}
    for path in method_source_files():
        tree = ast.parse(path.read_bytes(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "register"
                        and deco.args and isinstance(deco.args[0], ast.Constant)):
                    found[deco.args[0].value] = _module_name(path)
    return found


def method_files(algorithm: str) -> list[Path]:
    """The source files of a registered algorithm's module and of every semiseg module it imports."""
    modules = registered_algorithms()
    if algorithm not in modules:
        raise ValueError(f"unknown algorithm {algorithm!r}; registered: {', '.join(sorted(modules))}")
    return sorted(_closure([modules[algorithm]]))


def stage_roots(stage: str) -> tuple[str, ...]:
    """The stage's entry modules: :data:`STAGE_MODULES`, and for ``figure`` the modules that
    draw the figures the methods register (:func:`semiseg.method_sources.registered_figures`)."""
    if stage == "figure":
        return tuple(sorted({f["draw"].partition(":")[0] for f in registered_figures().values()}))
    if stage not in STAGE_MODULES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join([*STAGE_MODULES, 'figure'])}")
    return STAGE_MODULES[stage]


def stage_files(stage: str, algorithm: str | None = None) -> list[Path]:
    """Every package file the stage's result depends on (plus the algorithm's, for train)."""
    files = _closure(stage_roots(stage))
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
