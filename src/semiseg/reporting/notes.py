"""The words around a table's numbers: the ``mean ± std`` text, cell escaping, the "not a result"
mark of a smoke run, and the footer (what the values are, their units, the papers' sources,
schedule and code version). :mod:`semiseg.reporting.tables` builds the table with them."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from semiseg.references import reference_sources

__all__ = ["METRICS_DOC", "escape", "footer_lines", "mean_std_text", "smoke_mark"]

#: Where the metric definitions live, relative to ``results/tables/<name>.md``.
METRICS_DOC = "../../docs/metrics.md"

# Footer keys with a fixed place and wording; any other footer key is listed after them.
_FOOTER_LABELS: tuple[tuple[str, str], ...] = (
    ("schedule", "Schedule"),
    ("code_version", "Code version"),
    ("fingerprint", "Code fingerprint"),
    ("generated", "Generated"),
)


def mean_std_text(values: Sequence[float]) -> str:
    """``mean ± std`` (sample std, ddof=1) of two or more values, the one value alone, 2 decimals:
    every ± of the tables, the oracle's column and the report's per-class table.

    >>> mean_std_text([81.0, 82.0])
    '81.50 ± 0.71'
    >>> mean_std_text([3.456])
    '3.46'
    """
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def escape(text: object) -> str:
    """Make ``text`` safe inside a markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def smoke_mark(info: Mapping | None, dataset_info: Mapping) -> str:
    """The warning a run's cells carry when it is no result, or ``""``.

    ``info`` is what the run says of itself: ``schedule`` (name), ``iterations``,
    ``test_cases`` (volumes scored). A run is no result when it ran the ``smoke`` schedule on a
    dataset whose own schedule (``dataset_info['own_schedule']``) is another, or when it scored
    fewer test volumes than the dataset has (``dataset_info['test_cases']``).
    """
    if not info:
        return ""
    total = dataset_info.get("test_cases")
    scored = info.get("test_cases")
    partial = total is not None and scored is not None and scored < total
    smoke = info.get("schedule") == "smoke"
    own = dataset_info.get("own_schedule")
    if not partial and not (smoke and own not in (None, "smoke")):
        return ""
    parts = []
    if scored is not None and total is not None:
        stride = info.get("test_stride")
        at = f" at stride {'×'.join(map(str, stride))}" if stride else ""
        parts.append(f"{scored} of {total} test volumes{at}")
    if info.get("iterations") is not None:
        n = info["iterations"]
        parts.append(f"{n} iteration{'' if n == 1 else 's'}")
    head = "smoke" if smoke else f"schedule {info.get('schedule') or '?'}"
    return f"{head}: {', '.join(parts)} — not a result" if parts else f"{head} — not a result"


def footer_lines(
    spec: Mapping,
    *,
    dataset_info: Mapping,
    footer: Mapping,
    partial_rows: bool,
    smoke_note: str = "",
) -> list[str]:
    seeds = [int(seed) for seed in spec["seeds"]]
    seed_text = ", ".join(str(seed) for seed in seeds)
    lines = []
    if len(seeds) == 1:
        lines.append(
            f"One seed ({seed_text}): each value is that run's mean; "
            "no standard deviation is shown."
        )
    else:
        lines.append(
            f"Values are mean ± sample standard deviation (ddof=1) over seeds {seed_text} "
            "of each run's test-set summary."
        )
    if partial_rows:
        lines.append(
            "A row marked (k/n seeds) averages only the k runs that finished; with one run it "
            "shows that run's mean alone."
        )
    lines.append(
        "Each run's value is the mean over test cases of the mean over foreground classes. "
        "Empty masks: both empty scores Dice 1 and distances 0; a structure missed or "
        "hallucinated scores Dice 0 and distances equal to the image diagonal (not 0 as in "
        f"SSL4MIS-style code). See [docs/metrics.md]({METRICS_DOC})."
    )
    bootstrap = spec.get("bootstrap")
    if bootstrap:
        lines.append(
            f"({bootstrap['confidence'] * 100:g}% CI low–high): percentile bootstrap confidence interval over "
            f"the test cases: {bootstrap['resamples']} resamples of the test cases with replacement "
            f"(numpy default_rng({bootstrap['seed']}), the same resampled case sets in every cell), each scored "
            "as the mean over the row's seeds of the runs' means over the drawn cases. It shows how a value "
            "depends on which cases were tested; the ± how it depends on training. "
            f"See [docs/metrics.md]({METRICS_DOC})."
        )
    unit = dataset_info.get("distance_unit")
    if unit:
        lines.append(f"95HD and ASD are in {escape(unit)}.")
    else:
        lines.append(
            "95HD and ASD are in the units of the stored voxel spacing "
            "(mm, or voxels where the spacing is 1.0)."
        )
    sources = [src for src in reference_sources(spec) if src.get("values")]
    if len(sources) == 1 and not sources[0].get("tag"):
        lines.append(f"Paper values: {escape(sources[0].get('source') or 'source not given')}.")
    elif sources:
        named = "; ".join(f"{escape(src.get('tag') or 'paper')}: {escape(src.get('source') or 'source not given')}"
                          for src in sources)
        lines.append(f"Paper values (each cell names its source): {named}.")
    if smoke_note:
        lines.append(smoke_note)
    for key, label in _FOOTER_LABELS:
        if footer.get(key) not in (None, ""):
            lines.append(f"{label}: {escape(footer[key])}")
    for key in sorted(set(footer) - {key for key, _ in _FOOTER_LABELS}):
        if footer[key] not in (None, ""):
            lines.append(f"{escape(key)}: {escape(footer[key])}")
    return lines
