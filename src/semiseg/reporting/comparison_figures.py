"""The report page's figures of a table's ``difference`` and ``cost`` columns: a forest plot of
the paired differences (:mod:`semiseg.reporting.comparisons`) and Dice against device time, one
panel per ratio (:mod:`semiseg.reporting.cost`); a predictions row, which has neither, is named
under the figure. Each a PNG as a ``data:`` URI, through
matplotlib's object API, as :mod:`semiseg.reporting.report_figures`."""

from __future__ import annotations

import html
import statistics
from collections.abc import Collection, Mapping

from semiseg.metrics.csv_io import read_metrics_csv
from semiseg.metrics.summary import case_means
from semiseg.reporting.comparisons import Comparison, table_comparisons
from semiseg.reporting.cost import run_cost
from semiseg.reporting.report_figures import _figure, _png, evaluation_only_note

__all__ = ["comparison_sections", "cost_plot", "forest_plot"]


def _row_labels(table: Mapping) -> dict[tuple[str, int], str]:
    return {(row["method"], int(r)): row.get("label") or row["method"] for row in table["rows"] for r in row["ratios"]}


def forest_plot(table: Mapping, comparisons: Mapping[tuple[str, int], Comparison]) -> str:
    """One line per comparison, top to bottom in table order: the mean difference (a filled dot
    where distinguishable, an open one where not), its bootstrap interval, and 0 dashed."""
    labels = _row_labels(table)
    items = list(comparisons.items())
    fig = _figure(8.0, 1.2 + 0.45 * len(items))
    ax = fig.add_subplot()
    for i, ((method, ratio), c) in enumerate(items):
        y = len(items) - 1 - i
        ax.plot([c.stats.low, c.stats.high], [y, y], color="black", lw=1.5)
        ax.plot([c.stats.estimate], [y], "o", ms=7, color="black",
                markerfacecolor="black" if c.distinguishable else "white")
    ax.axvline(0.0, color="grey", ls="--", lw=1)
    ax.set_yticks(range(len(items)))
    ax.set_yticklabels([f"{labels[key]} ({key[1]}%) vs {c.comparator_label}" for key, c in reversed(items)])
    confidence = float(table["bootstrap"]["confidence"])
    ax.set_xlabel(f"Dice difference (percentage points), {confidence * 100:g}% bootstrap interval over test cases")
    ax.set_title("Paired differences (open: not distinguishable after Holm)", fontsize=10)
    return _png(fig)


def cost_plot(table: Mapping, runs: Mapping) -> str | None:
    """Dice against device hours per run, one panel per ratio, a point per row and device (rows
    whose runs used several devices get a point per device: never one average across them); the
    marker says the device. None where no run recorded its cost."""
    labels = _row_labels(table)
    points: dict[int, list[tuple[str, str, float, float]]] = {}
    for (method, ratio), label in labels.items():
        by_device: dict[str, list[tuple[float, float]]] = {}
        for (m, r, _s), run in runs.items():
            if (m, r) != (method, ratio):
                continue
            cost = run_cost(run["dir"])
            if cost is None:
                continue
            device = f"{cost['device']}: {cost['device_name']}"
            hours = (cost["train_seconds"] + (cost["infer_seconds"] or 0.0)) / 3600
            by_device.setdefault(device, []).append((hours, 100 * run["summary"]["dice"]))
        for device, values in by_device.items():
            points.setdefault(ratio, []).append((label, device, statistics.fmean(h for h, _ in values),
                                                 statistics.fmean(d for _, d in values)))
    if not points:
        return None
    devices = sorted({p[1] for ps in points.values() for p in ps})
    markers = dict(zip(devices, "osD^v<>p*h"))
    fig = _figure(4.5 * len(points), 4.0)
    for k, ratio in enumerate(sorted(points)):
        ax = fig.add_subplot(1, len(points), k + 1)
        for label, device, hours, dice in points[ratio]:
            ax.plot([hours], [dice], markers.get(device, "o"), ms=8, label=f"{label} ({device})")
            ax.annotate(label, (hours, dice), textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.set_title(f"{ratio}% labeled", fontsize=10)
        ax.set_xlabel("device hours per run (training + inference)")
        ax.set_ylabel("Dice (%)")
        ax.legend(fontsize=7, loc="lower right")
    if len(devices) > 1:
        fig.suptitle(f"runs on {len(devices)} devices: times not comparable across markers", fontsize=9)
    return _png(fig)


def comparison_sections(table: Mapping, runs: Mapping, external: Collection[tuple[str, int]] = ()) -> list[str]:
    """The HTML of the page's paired-difference and cost sections, for a table whose ``columns``
    has ``difference`` or ``cost`` (none otherwise). ``runs``: the page's runs, ``(method, ratio,
    seed)`` -> ``{"dir", "summary", "config"}``; the labeled-only methods are those whose runs
    were trained with ``algorithm: supervised``. ``external``: the ``(key, ratio)`` of the
    predictions rows with a result, each named where a figure cannot show it."""
    columns = table.get("columns") or []
    parts: list[str] = []
    if "difference" in columns and table.get("bootstrap") and (runs or external):
        supervised = {m for (m, _r, _s), run in runs.items()
                      if run["config"].get("spec", {}).get("method", {}).get("algorithm") == "supervised"}
        cases = {key: case_means(read_metrics_csv(run["dir"] / "metrics.csv")) for key, run in runs.items()}
        comparisons = table_comparisons(table, cases, supervised) if runs else {}
        if comparisons or external:
            parts.append("<h2>Paired differences</h2>")
        if comparisons:
            parts += ['<p class="note">Each row\'s Dice minus its comparator\'s at the same ratio, paired by seed and '
                      "test case, with the bootstrap interval over test cases; a filled dot is distinguishable from "
                      "its comparator after Holm's correction over the table (the table's footer says how).</p>",
                      f'<img alt="paired differences" src="{forest_plot(table, comparisons)}">']
        parts.append(evaluation_only_note(_row_labels(table), external, "Not in the figure",
                                          "one value and no seeds: no paired difference"))
    if "cost" in columns and (runs or external):
        png = cost_plot(table, runs) if runs else None
        if png or external:
            parts.append("<h2>Dice against cost</h2>")
        if png:
            parts += ['<p class="note">Each row\'s mean Dice against its mean device time per run (training plus '
                      "inference), one panel per labeled ratio; a row whose runs used several devices has a point "
                      "per device.</p>", f'<img alt="{html.escape("Dice against cost")}" src="{png}">']
        parts.append(evaluation_only_note(_row_labels(table), external, "Not in the figure",
                                          "trained outside this workflow: no device time recorded here"))
    return [part for part in parts if part]
