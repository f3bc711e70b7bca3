"""What the methods' source says about them, read without importing it: the workflow builds its
DAG (rules, inputs, code fingerprints) without importing torch.

A method lives in ``methods/<name>.py`` or, with helpers of its own, in a package
``methods/<name>/`` whose ``__init__.py`` registers it (:func:`method_source_files`).

A method registers the figures drawn from its runs in a module-level literal ``FIGURES`` of its
module, a list of dicts with the keys of :data:`FIGURE_FIELDS`. The CLI (``semiseg figure
<name>``), the rules (``workflow/rules/figures.smk``: one rule per figure), the code fingerprint
of the figure stage and the report page find them here; none of them names a method. Worked
example (BUARL's, in ``methods/buarl.py``)::

    FIGURES = [{
        "name": "buarl_entropy", "algorithm": "buarl_bcp", "rule": "entropy_figure", "weights": "model.pt",
        "draw": "semiseg.reporting.buarl_figure:entropy_figure",
        "title": "BUARL's entropy regions", "alt": "BUARL entropy regions",
        "note": "Paper Figure 5 for our run: ...",
    }]

draws ``results/figures/buarl_entropy_<dataset>_<ratio>.png`` (:func:`semiseg.paths.figure`) with rule
``entropy_figure`` from the seed-0 run of the catalogue entry ``buarl_bcp`` (its ``model.pt``
and ``config.json``), by calling ``entropy_figure(run_dir, store, split, out_png,
n_slices=...)``; the report page of every table with a ``buarl_bcp`` row shows it under its
title.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

__all__ = ["FIGURE_FIELDS", "figure_of", "method_source_files", "registered_figures"]

PACKAGE = Path(__file__).resolve().parent

#: The keys of a registered figure.
FIGURE_FIELDS = {
    "name": "the figure's name: its file's stem before _<dataset>_<ratio>, and the CLI's `semiseg figure <name>`",
    "algorithm": "the catalogue entry (named after its algorithm) whose seed-0 run it is drawn from; the "
                 "report page of every table with a row of that entry shows it",
    "rule": "the Snakemake rule that draws it (its provenance record names it)",
    "weights": "the run's weights file it reads: model.pt (the evaluated network) or models.pt (every network)",
    "draw": "module:function drawing it, called as function(run_dir, store, split, out_png, n_slices=...)",
    "title": "its section title on the report page",
    "alt": "its image's alternative text on the report page",
    "note": "what it shows, under the title on the report page (and the CLI's help)",
}


def method_source_files() -> list[Path]:
    """The files that may register a method: ``methods/*.py`` and ``methods/*/__init__.py``."""
    methods = PACKAGE / "methods"
    return sorted([*methods.glob("*.py"), *methods.glob("*/__init__.py")])


def _figures_of(path: Path) -> list[dict]:
    tree = ast.parse(path.read_bytes(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FIGURES" for t in node.targets):
            try:
                figures = ast.literal_eval(node.value)
            except ValueError as exc:
                raise ValueError(f"{path}: FIGURES must be a literal list of dicts ({exc})") from None
            for fig in figures:
                if not isinstance(fig, dict) or set(fig) != set(FIGURE_FIELDS):
                    keys = sorted(fig) if isinstance(fig, dict) else type(fig).__name__
                    raise ValueError(f"{path}: a FIGURES entry has keys {keys}; "
                                     f"it needs exactly {sorted(FIGURE_FIELDS)}")
            return figures
    return []


@lru_cache(maxsize=None)
def registered_figures() -> dict[str, dict]:
    """Figure name -> its registration (:data:`FIGURE_FIELDS`), from every method's ``FIGURES``."""
    found: dict[str, dict] = {}
    for path in method_source_files():
        for fig in _figures_of(path):
            if fig["name"] in found:
                raise ValueError(f"{path}: figure {fig['name']!r} is registered twice")
            found[fig["name"]] = fig
    return found


def figure_of(path) -> dict:
    """The registration of a figure file (:func:`semiseg.paths.figure`): the longest registered
    name that starts its stem."""
    stem = Path(path).stem
    names = [n for n in registered_figures() if stem.startswith(f"{n}_")]
    if not names:
        raise ValueError(f"{path}: not a registered figure's file (figures/<name>_<dataset>_<ratio>.png with "
                         f"<name> one of {', '.join(sorted(registered_figures()))})")
    return registered_figures()[max(names, key=len)]
