"""The catalogue of published values (``config/papers/*.yaml``) and the tables that cite it.

Each paper's file holds the tables it prints, each value typed once, under the name a table cites
(``workflow/schemas/papers.schema.yaml``)::

    buarl:
      citation: Zhou, Zhao, Sun, "Bidirectional Uncertainty-Aware Region Learning ..." (BUARL)
      tables:
        BUARL T2:
          table: Table 2 (LA, 4 and 8 labeled volumes)
          dataset: la
          values: {bcp: {10: {dice: 89.62, jaccard: 81.31, hd95: 6.81, asd: 1.76}}, ...}

and a table cites it by that name, ``reference: [{cite: BUARL T2}, {cite: SGRS-Net T2}]``.
:func:`cite_references` replaces each citation with the source it stands for (``tag``,
``source``, ``values``: :mod:`semiseg.references`), the values kept to the table's rows, so that
everything downstream (the table, its footer, the report, the audit) reads one form.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from semiseg.references import reference_sources
from semiseg.schema import ConfigError
from semiseg.table_config import is_external

__all__ = ["cite_references", "paper_tables"]


def paper_tables(papers: dict, origin: dict[str, Path]) -> dict[str, dict]:
    """The papers' tables by the name a table cites, each with its ``paper``, ``file``, ``dataset``,
    ``source`` (the paper's citation, then which of its tables) and ``values``. A name is the
    papers' once: two papers may not print a table of the same name."""
    out: dict[str, dict] = {}
    for paper, entry in papers.items():
        for name, table in entry["tables"].items():
            if name in out:
                raise ConfigError(f"{origin[paper]}: {paper}.tables.{name}: the name is also a table of "
                                  f"{out[name]['paper']} ({out[name]['file']}); a cited name must be one table's")
            out[name] = {"paper": paper, "file": origin[paper], "dataset": table["dataset"],
                         "source": f"{entry['citation']}, {table['table']}", "values": table["values"]}
    return out


def cite_references(table: dict, where: str, cited: dict[str, dict]) -> None:
    """Replace the table's citations (``{cite: <name>}``) with the sources they stand for, in place:
    the cited table's values at this table's rows (method and ratio; ``methods`` narrows them),
    tagged with ``tag``, else with the cited name: in a list of sources (of one, too) each names
    its paper; a ``reference`` that is one citation, not a list, prints its values untagged, as
    ``paper x``. Sources written out in full stay as they are. Raises :class:`ConfigError` naming
    the field: an unknown name, a table of another dataset, a ``methods`` entry the cited table or
    this table's rows lack, a citation that gives no value."""
    ref = table.get("reference")
    sources = reference_sources(table)
    if not any("cite" in source for source in sources):
        return
    rows: dict[str, set[int]] = {}
    for row in table["rows"]:
        if is_external(row):  # another tool's predictions: no paper reports them (and no method yet)
            continue
        rows.setdefault(row["method"], set()).update(int(r) for r in row["ratios"])
    out = []
    for i, source in enumerate(sources):
        field = f"{where}.reference" if isinstance(ref, Mapping) else f"{where}.reference.{i}"
        out.append(_cited(source, field, cited, table, rows, listed=not isinstance(ref, Mapping))
                   if "cite" in source else source)
    table["reference"] = out[0] if isinstance(ref, Mapping) else out


def _cited(citation: Mapping, field: str, cited: dict[str, dict], table: Mapping, rows: dict[str, set[int]],
           listed: bool) -> dict:
    """One citation as the source it stands for (see :func:`cite_references`)."""
    name = citation["cite"]
    if name not in cited:
        raise ConfigError(f"{field}.cite: unknown paper table {name!r}; allowed: "
                          f"{', '.join(sorted(cited)) or '(none: the paper catalogue is empty)'} (config/papers/)")
    paper = cited[name]
    if paper["dataset"] != table["dataset"]:
        raise ConfigError(f"{field}.cite: {name!r} is a table of dataset {paper['dataset']!r} ({paper['file']}), "
                          f"this table's dataset is {table['dataset']!r}; allowed: a table of {table['dataset']!r}")
    methods = citation.get("methods", list(paper["values"]))
    for j, method in enumerate(citation.get("methods", [])):
        if method not in paper["values"]:
            raise ConfigError(f"{field}.methods.{j}: {name!r} ({paper['file']}) has no values of {method!r}; "
                              f"allowed: {', '.join(paper['values'])}")
        if method not in rows:
            raise ConfigError(f"{field}.methods.{j}: {method!r} is no row of this table; allowed: "
                              f"{', '.join(rows)}")
    values = {}
    for method in methods:
        kept = {int(r): dict(cell) for r, cell in paper["values"][method].items() if int(r) in rows.get(method, ())}
        if kept:
            values[method] = kept
    if not values:
        raise ConfigError(f"{field}.cite: {name!r} ({paper['file']}) gives no value at this table's rows "
                          "(method and ratio); allowed: a paper table that prints one of them")
    tag = citation.get("tag", name if listed else None)
    return {**({"tag": tag} if tag else {}), "source": paper["source"], "values": values}
