"""The figures of a table's report page (:mod:`semiseg.reporting.report`): Dice against the
labeled ratio with the papers' points, the validation Dice of every row, learning curves, and
overlays of the same test slices, each a ``data:`` URI (palette PNG; the overlays JPEG), at
:data:`DPI`. Every name is a table row's, looked up by ``(method, ratio)``. Matplotlib through
its object API (no pyplot state)."""

from __future__ import annotations

import base64
import html
import io
import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from semiseg.colours import LABEL_COLOURS, METHOD_COLOURS
from semiseg.data.store import channels_first
from semiseg.references import reference_sources
from semiseg.table_config import is_external

__all__ = ["EVALUATION_ONLY", "dice_vs_ratio", "dice_vs_ratio_figure", "evaluation_only_note", "learning_curves",
           "overlays", "reference_points", "val_dice", "val_dice_figure"]

def reference_points(table: Mapping) -> list[dict]:
    """The papers' values of a table entry: ``[{"method", "ratio", "metric", "value", "source", "tag"}]``.

    Reads ``reference`` as a mapping (``source``, ``values``: method → ratio → metric → value)
    or a list of such mappings, one per source; ratio keys may be ints or strings.
    """
    points = []
    for ref in reference_sources(table):
        for method, by_ratio in (ref.get("values") or {}).items():
            for ratio, cell in (by_ratio or {}).items():
                for metric, value in (cell or {}).items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                        points.append({"method": method, "ratio": int(ratio), "metric": metric,
                                       "value": float(value), "source": ref.get("source") or "",
                                       "tag": ref.get("tag")})
    return points


#: train.csv columns that are not curves of their own.
_NOT_CURVES = ("iteration", "lr", "val_dice")

#: train.csv columns that are a method's stage (BCP: 0 pre-training, 1 self-training), not a
#: loss: drawn as a dashed line where the stage changes in every panel, not as a curve.
_STAGE_FLAGS = ("stage",)

#: Rows per panel of the Dice-against-ratio and validation figures: each with a colour of its own
#: (the first six of METHOD_COLOURS: yellow is faint on white, black reads as the axes) and one
#: legend entry.
ROWS_PER_PANEL = 6

#: Marker of each paper source in the Dice-against-ratio figure, in the spec's order.
_SOURCE_MARKERS = ("D", "s", "^", "v", "P", "X")

#: Marker of a predictions row's one value (another tool's predictions scored here), filled.
_EXTERNAL_MARKER = "*"

#: How the page names a predictions row where it shows one.
EVALUATION_ONLY = "evaluation only"

#: Resolution of the figures in the page: enough to read 7-point text, small enough that a page
#: with an ACDC-size table stays well under Chromium's 2 MB limit on a data URL (the report
#: shows the page as one).
DPI = 80


def evaluation_only_note(labels: Mapping[tuple[str, int], str], external: Collection[tuple[str, int]], where: str,
                         why: str) -> str:
    """HTML: a note naming the predictions rows (``(key, ratio)``, named ``labels[(key, ratio)]``)
    a part of the page leaves out, and why; empty without any.

    >>> evaluation_only_note({("external_nnu_net", 10): "nnU-Net"}, [("external_nnu_net", 10)], "Not here", "no seeds")
    '<p class="note">Not here: nnU-Net (10%): evaluation only (another tool&#x27;s predictions), no seeds.</p>'
    """
    if not external:
        return ""
    names = ", ".join(f"{labels[key]} ({key[1]}%)" for key in external)
    text = f"{where}: {names}: {EVALUATION_ONLY} (another tool's predictions), {why}."
    return f'<p class="note">{html.escape(text)}</p>'


def _png(fig) -> str:
    """The figure as a palette PNG (32 colours: a line plot has few) ``data:`` URI."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").quantize(colors=32, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    image.save(out, format="png", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _jpeg(fig, quality: int = 60) -> str:
    """The figure as a JPEG ``data:`` URI: images (slices with overlays) compress ten times
    better than as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    out = io.BytesIO()
    Image.open(io.BytesIO(buf.getvalue())).convert("RGB").save(out, format="jpeg", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _panels(table: Mapping) -> list[tuple[str, list[Mapping]]]:
    """The table's rows in titled panels of at most :data:`ROWS_PER_PANEL`: first the rows run
    (or, a predictions row, scored) here, then those with the papers' values only, each group
    split evenly (ACDC's 9 + 13 rows: 5 + 4, then 5 + 4 + 4)."""
    here = [r for r in table["rows"] if r.get("run", True)]
    groups = (("Run or scored here" if any(is_external(r) for r in here) else "Run here", here),
              ("Papers' values only", [r for r in table["rows"] if not r.get("run", True)]))
    panels = []
    for title, rows in groups:
        if not rows:
            continue
        n = math.ceil(len(rows) / ROWS_PER_PANEL)
        size = math.ceil(len(rows) / n)
        for p in range(n):
            panels.append((title + (f" ({p + 1}/{n})" if n > 1 else ""), rows[p * size:(p + 1) * size]))
    return panels


def dice_vs_ratio_figure(table: Mapping, runs: Mapping, labels: Mapping[tuple[str, int], str],
                         external: Mapping[tuple[str, int], Mapping] | None = None):
    """Mean Dice ± std over seeds against the labeled ratio, a line per table row, and the papers'
    Dice values as open markers in the row's colour (one marker shape per source), in panels of
    at most :data:`ROWS_PER_PANEL` rows (:func:`_panels`), each colour once in a panel. A row's
    name is ``labels[(method, ratio)]`` of its first ratio: two rows of one method keep their own.
    A predictions row (``external``: ``(key, ratio)`` → ``{"summary"}``) is one star at its ratio,
    its legend entry marked :data:`EVALUATION_ONLY`. Returns the matplotlib figure."""
    from matplotlib.lines import Line2D

    external = external or {}
    refs = [p for p in reference_points(table) if p["metric"] == "dice"]
    sources = list(dict.fromkeys(p["source"] for p in refs))
    marker = {s: _SOURCE_MARKERS[k % len(_SOURCE_MARKERS)] for k, s in enumerate(sources)}
    tags = {p["source"]: p["tag"] or "paper" for p in refs}
    all_ratios = sorted({int(r) for row in table["rows"] for r in row["ratios"]})
    panels = _panels(table)
    cols = 2 if len(panels) > 1 else 1
    nrows = math.ceil(len(panels) / cols)
    fig = _figure(6.0 * cols, 3.3 * nrows + 0.9)
    axes = fig.subplots(nrows, cols, squeeze=False, sharey=True).ravel()
    for ax, (title, rows) in zip(axes, panels):
        for k, row in enumerate(rows):
            colour = METHOD_COLOURS[k]
            # rows side by side around each ratio, so that their markers do not pile up
            shift = 1.04 ** (k - (len(rows) - 1) / 2)
            method, ratios = row["method"], [int(r) for r in row["ratios"]]
            label = labels.get((method, ratios[0]), row.get("label") or method)
            ran = [r for r in ratios if any(key[0] == method and key[1] == r for key in runs)]
            scored = [r for r in ratios if (method, r) in external]
            if scored:  # another tool's predictions: one value, no seeds
                ax.plot([r * shift for r in scored], [100 * external[(method, r)]["summary"]["dice"] for r in scored],
                        linestyle="none", color=colour, marker=_EXTERNAL_MARKER, markersize=9)
                label += f" ({EVALUATION_ONLY})"
            if ran:
                stats = [_mean_std([100 * run["summary"]["dice"] for key, run in runs.items()
                                    if key[0] == method and key[1] == r]) for r in ran]
                ax.errorbar([r * shift for r in ran], [s[0] for s in stats], yerr=[s[1] for s in stats],
                            color=colour, marker="o", markersize=4, capsize=2, linewidth=1.2)
            for p in refs:
                if p["method"] == method and p["ratio"] in ratios:
                    ax.plot([p["ratio"] * shift], [p["value"]], linestyle="none", marker=marker[p["source"]],
                            color=colour, markerfacecolor="none", markersize=6)
            # the legend's entry names the row by its colour; the figure's legend says what the
            # markers are
            ax.plot([], [], color=colour, linewidth=4, label=label)
        ax.set_xscale("log")
        ax.set_xticks(all_ratios)
        ax.set_xticklabels([f"{r}%" for r in all_ratios])
        ax.minorticks_off()
        ax.set_xlabel("labeled ratio (log scale)", fontsize=8)
        ax.set_ylabel("Dice (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color="0.3", marker="o", label="ours: mean ± std over seeds")]
    if external:
        handles.append(Line2D([], [], color="0.3", marker=_EXTERNAL_MARKER, markersize=9, linestyle="none",
                              label=f"{EVALUATION_ONLY}: another tool's predictions"))
    handles += [Line2D([], [], color="0.3", marker=marker[s], markerfacecolor="none", linestyle="none",
                       label=f"paper: {tags[s]}") for s in sources]
    # two entries a column of panels: a one-panel figure is too narrow for four side by side
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 2 * cols), fontsize=7,
               frameon=False)
    fig.suptitle("Dice against the labeled ratio", fontsize=10)
    return fig


def dice_vs_ratio(table: Mapping, runs: Mapping, labels: Mapping[tuple[str, int], str],
                  external: Mapping[tuple[str, int], Mapping] | None = None) -> str:
    """PNG (data URI) of :func:`dice_vs_ratio_figure`."""
    return _png(dice_vs_ratio_figure(table, runs, labels, external))


def _band(x: np.ndarray, y: np.ndarray, bins: int = 100) -> tuple[np.ndarray, ...]:
    """A long curve summarised in ``bins`` bins of consecutive iterations (the last ``len % bins``
    iterations dropped): each bin's first iteration, and the 10th percentile, mean and 90th
    percentile of its values. A panel is ~200 pixels wide: 30,000 raw points draw the same band
    as 100 bins, slower and in many more bytes of the page."""
    bins = min(bins, len(x))
    size = len(x) // bins
    y = y[: size * bins].reshape(bins, size)
    low, high = np.percentile(y, [10, 90], axis=1)
    return x[: size * bins: size], low, y.mean(axis=1), high


def _stage_starts(curves) -> list[int]:
    """The iterations (1-based, as plotted) at which a stage flag column changes value."""
    starts = []
    for flag in _STAGE_FLAGS:
        if flag in curves:
            data = curves[["iteration", flag]].dropna()
            values = data[flag].to_numpy()
            changed = np.flatnonzero(values[1:] != values[:-1]) + 1
            starts += [int(data["iteration"].to_numpy()[i]) + 1 for i in changed]
    return starts


def learning_curves(method: str, ratios: Sequence[int], runs: Mapping, label: str) -> str | None:
    """PNG (data URI): a table row's training logs, every loss term and logged quantity of its runs'
    ``train.csv`` and the validation Dice against the iteration, one panel each; a colour per
    labeled ratio, a line per seed (a long log as the mean of :func:`_band`'s bins). A stage
    flag (:data:`_STAGE_FLAGS`) is a dashed line where the next stage starts, not a panel.
    One figure per row, not per ratio: an ACDC-size table's page stays small (module
    :mod:`semiseg.reporting.report`). ``None`` when no run has a log."""
    from matplotlib.lines import Line2D

    mine = sorted((key for key in runs if key[0] == method and key[1] in ratios and runs[key]["curves"] is not None),
                  key=lambda key: (list(ratios).index(key[1]), key[2]))
    if not mine:
        return None
    skip = (*_NOT_CURVES, *_STAGE_FLAGS)
    terms = list(dict.fromkeys(c for key in mine for c in runs[key]["curves"].columns if c not in skip))
    panels = terms + ["val_dice"]
    stages = sorted({it for key in mine for it in _stage_starts(runs[key]["curves"])})
    colour = {r: METHOD_COLOURS[k % len(METHOD_COLOURS)] for k, r in enumerate(dict.fromkeys(k[1] for k in mine))}
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = _figure(2.7 * cols, 2.0 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    binned = False
    for ax, name in zip(axes, panels):
        for key in mine:
            df = runs[key]["curves"]
            if name not in df:
                continue
            data = df[["iteration", name]].dropna()
            if data.empty:
                continue
            x, y = data["iteration"].to_numpy() + 1, data[name].to_numpy(dtype=float)
            if name == "val_dice":
                x, y = x, 100 * y
            elif len(y) >= 300:
                x, _low, y, _high = _band(x, y)
                binned = True
            ax.plot(x, y, color=colour[key[1]], linewidth=0.9, marker="." if name == "val_dice" else None,
                    markersize=3)
        for it in stages:
            ax.axvline(it, color="0.4", linestyle="--", linewidth=0.8)
        ax.set_title("validation Dice (%)" if name == "val_dice" else name, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    seeds = {r: sum(1 for key in mine if key[1] == r) for r in colour}
    handles = [Line2D([], [], color=c, label=f"{r}% labeled ({seeds[r]} seed{'s' if seeds[r] > 1 else ''})")
               for r, c in colour.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=7, frameon=False)
    notes = ["a line per seed"]
    notes += ["each the mean of 100 bins of iterations"] if binned else []
    notes += ["dashed: the next stage starts"] if stages else []
    fig.suptitle(f"{label}: training log ({'; '.join(notes)})", fontsize=10)
    return _png(fig)


def val_dice(rows: Sequence[tuple[str, int, str]], runs: Mapping) -> str | None:
    """PNG (data URI) of :func:`val_dice_figure`, or ``None`` when no run logged a validation."""
    fig = val_dice_figure(rows, runs)
    return None if fig is None else _png(fig)


def val_dice_figure(rows: Sequence[tuple[str, int, str]], runs: Mapping):
    """Validation Dice against the iteration of every row at each ratio, one panel per ratio: the
    mean over seeds of each validation, a line per row (``rows``: ``(method, ratio, label)`` in
    table order; a panel's colours are its own, at most :data:`ROWS_PER_PANEL` rows a panel).
    Returns the matplotlib figure, or ``None`` when no run logged a validation."""
    import pandas as pd

    panels = []
    for ratio in sorted({r for _m, r, _l in rows}):
        lines = []
        for method, _r, label in (row for row in rows if row[1] == ratio):
            logs = [runs[key]["curves"] for key in sorted(runs)
                    if key[:2] == (method, ratio) and runs[key]["curves"] is not None]
            seeds = [log[["iteration", "val_dice"]].dropna().set_index("iteration")["val_dice"]
                     for log in logs if "val_dice" in log]
            seeds = [s for s in seeds if not s.empty]
            if seeds:
                mean = pd.concat(seeds, axis=1).mean(axis=1).sort_index()
                lines.append((label, mean.index.to_numpy() + 1, 100 * mean.to_numpy(dtype=float), len(seeds)))
        parts = math.ceil(len(lines) / ROWS_PER_PANEL)
        for k in range(parts):
            title = f"{ratio}% labeled" + (f" ({k + 1}/{parts})" if parts > 1 else "")
            panels.append((title, lines[k * ROWS_PER_PANEL:(k + 1) * ROWS_PER_PANEL]))
    if not panels:
        return None
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = _figure(4.2 * cols, 3.0 * nrows + 0.6)
    axes = fig.subplots(nrows, cols, squeeze=False, sharey=True).ravel()
    for ax, (title, lines) in zip(axes, panels):
        for k, (label, x, y, seeds) in enumerate(lines):
            ax.plot(x, y, color=METHOD_COLOURS[k], marker="." if len(x) < 30 else None, linewidth=1.2,
                    label=label + (f" ({seeds} seeds)" if seeds > 1 else ""))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_ylabel("validation Dice (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=1, frameon=False)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Validation Dice during training, every row (mean over seeds)", fontsize=10)
    return fig


def _pick_slices(store, cases: Sequence[str], n: int) -> list[tuple[str, int]]:
    """``n`` (case, z) to show: cases spread over the sorted list, in each the slice with the most
    ground-truth foreground (ties: the lowest z)."""
    cases = sorted(cases)
    chosen = [cases[k * len(cases) // n] for k in range(min(n, len(cases)))]
    picks = []
    for case in dict.fromkeys(chosen):
        _, label = store.read(case)
        area = (label > 0).reshape(label.shape[0], -1).sum(1)
        picks.append((case, int(np.argmax(area))))
    return picks


def _crop(label: np.ndarray, margin: float = 0.3) -> tuple[slice, slice]:
    """The part of a slice to show: the ground truth's bounding box grown by ``margin`` of its size
    on each side (at least 8 pixels), kept inside the slice; the whole slice where it has no
    foreground. The structures fill the panel instead of a corner of it (ACDC's heart is
    ~60 of 256 pixels)."""
    found = np.nonzero(label)
    if not found[0].size:
        return slice(None), slice(None)
    out = []
    for idx, size in zip(found, label.shape):
        lo, hi = int(idx.min()), int(idx.max()) + 1
        grow = max(8, int(margin * (hi - lo)))
        out.append(slice(max(0, lo - grow), min(size, hi + grow)))
    return tuple(out)


def overlays(ratio: int, methods: Sequence[str], runs: Mapping, store, labels: Mapping[tuple[str, int], str],
             class_names: Mapping[int, str], n_slices: int = 2,
             external: Mapping[tuple[str, int], Path] | None = None) -> str | None:
    """JPEG (data URI): for the same test slices, the image, the ground truth and each row's
    prediction (its first seed's run at ``ratio``, named ``labels[(method, ratio)]``; a
    predictions row's from its folder, ``external``: ``(key, ratio)`` → folder, on the cases'
    grids as its scoring checked); ``None`` when no row has predictions."""
    import textwrap

    import SimpleITK as sitk
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    shown = []
    for method in methods:
        seeds = sorted(s for (m, r, s) in runs if m == method and r == ratio)
        if seeds and (runs[(method, ratio, seeds[0])]["dir"] / "predictions").is_dir():
            shown.append((method, runs[(method, ratio, seeds[0])]["dir"] / "predictions", f"seed {seeds[0]}"))
        elif (method, ratio) in (external or {}) and Path(external[(method, ratio)]).is_dir():
            shown.append((method, Path(external[(method, ratio)]), EVALUATION_ONLY))
    if not shown:
        return None
    common = set.intersection(*({p.name[: -len(".nii.gz")] for p in d.glob("*.nii.gz")} for _, d, _ in shown))
    common = [c for c in common if c in store]
    if not common:
        return None
    picks = _pick_slices(store, common, n_slices)
    n_classes = max(class_names) + 1
    cmap = ListedColormap(["black", *[LABEL_COLOURS[(v - 1) % len(LABEL_COLOURS)] for v in range(1, n_classes)]])
    cols = 2 + len(shown)
    fig = _figure(1.7 * cols, 1.8 * len(picks) + 1.1)
    axes = fig.subplots(len(picks), cols, squeeze=False)
    for r, (case, z) in enumerate(picks):
        image, gt = store.read(case)
        image = channels_first(image)[0]  # a store of several channels: the first is shown
        window = _crop(gt[z])
        layers = [(None, "image"), (gt, "ground truth")]
        for method, pred_dir, which in shown:
            pred = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_dir / f"{case}.nii.gz")))
            # wrapped to the column's width (1.7 in at 7 pt: ~18 characters), so titles never overlap
            layers.append((pred, textwrap.fill(f"{labels.get((method, ratio), method)} ({which})", 18)))
        for c, (layer, title) in enumerate(layers):
            ax = axes[r, c]
            ax.imshow(image[z][window], cmap="gray", interpolation="nearest")
            if layer is not None:
                ax.imshow(np.ma.masked_equal(layer[z][window], 0), cmap=cmap, vmin=0, vmax=n_classes - 1,
                          alpha=0.55, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
            if c == 0:
                ax.set_ylabel(f"{case} z={z}", fontsize=8)
    handles = [Patch(color=LABEL_COLOURS[(v - 1) % len(LABEL_COLOURS)], label=class_names[v])
               for v in sorted(class_names) if v > 0]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"{ratio}% labeled: the same test slices, each method's prediction", fontsize=10)
    return _jpeg(fig)


# ----------------------------------------------------------------------------- the page
