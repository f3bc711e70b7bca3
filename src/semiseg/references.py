"""The papers' values of a table spec: one or more sources, each a paper's table, named.

A table's ``reference`` is one source or a list of them (``workflow/schemas/tables.schema.yaml``)::

    reference:
      - tag: ALHVR T2                       # printed in the cell beside each value
        source: Lei et al., ICCV 2025, Table 2 (ACDC)
        values: {mean_teacher: {10: {dice: 83.65, jaccard: 73.15, hd95: 13.45, asd: 3.61}}}
      - tag: BUARL T1
        source: Zhou, Zhao, Sun, BUARL, Table 1 (ACDC)
        values: {mean_teacher: {10: {dice: 79.65, jaccard: 68.06, hd95: 12.87, asd: 3.99}}}

so that where two papers print different numbers for the same method and ratio, both stay in
the table, each with its source. A single source may leave out ``tag`` (its values print as
``paper x``). This module only reads specs; it imports nothing heavy (the workflow loads it
while building the DAG).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["METRICS", "check_references", "reference_sources", "reference_values"]

#: The metrics a paper value may give, in column order.
METRICS: tuple[str, ...] = ("dice", "jaccard", "hd95", "asd")


def reference_sources(table: Mapping) -> list[Mapping]:
    """The table's sources as a list (``reference`` may be one mapping or a list of them)."""
    ref = table.get("reference")
    if not ref:
        return []
    return [ref] if isinstance(ref, Mapping) else list(ref)


def _ratio(key) -> int:
    """A ratio key as an int: YAML gives ints, a spec that went through JSON gives strings."""
    if isinstance(key, bool):
        raise ValueError(f"ratio {key!r} is not a labeled percent")
    return int(key)


def reference_values(table: Mapping) -> dict[str, dict[int, list[tuple[str | None, dict]]]]:
    """``method -> ratio -> [(tag, {metric: value}), ...]``, the sources in the spec's order.

    ``tag`` is ``None`` for an untagged single source. Ratio keys come back as ints whatever
    the spec held (YAML ints or JSON strings).
    """
    out: dict[str, dict[int, list[tuple[str | None, dict]]]] = {}
    for source in reference_sources(table):
        for method, by_ratio in (source.get("values") or {}).items():
            for ratio, cell in (by_ratio or {}).items():
                out.setdefault(method, {}).setdefault(_ratio(ratio), []).append(
                    (source.get("tag"), dict(cell or {})))
    return out


def check_references(table: Mapping) -> list[str]:
    """What is wrong with the table's ``reference`` beyond its schema, as ``field: problem`` lines.

    Several sources need a tag each, distinct, so that every printed value names its paper;
    ratio keys are integers (labeled percents).
    """
    sources = reference_sources(table)
    problems = []
    tags: dict[str, int] = {}
    for i, source in enumerate(sources):
        where = f"reference.{i}" if not isinstance(table.get("reference"), Mapping) else "reference"
        tag = source.get("tag")
        if len(sources) > 1 and not tag:
            problems.append(f"{where}.tag: a table with {len(sources)} sources needs a tag on each "
                            "(printed beside its values), e.g. 'ALHVR T2'")
        elif tag in tags:
            problems.append(f"{where}.tag: {tag!r} is also the tag of reference.{tags[tag]}; tags must differ")
        elif tag:
            tags[tag] = i
        for method, by_ratio in (source.get("values") or {}).items():
            for ratio in by_ratio or {}:
                try:
                    _ratio(ratio)
                except (TypeError, ValueError):
                    problems.append(f"{where}.values.{method}.{ratio}: not a labeled percent; "
                                    "allowed: an integer ratio of the table's dataset")
    return problems
