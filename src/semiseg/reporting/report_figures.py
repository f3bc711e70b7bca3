"""The figures of a table's report page (:mod:`semiseg.reporting.report`): Dice against the
labeled ratio with the papers' points, learning curves, and overlays of the same test slices,
each a PNG as a ``data:`` URI. Matplotlib through its object API (no pyplot state)."""

from __future__ import annotations

import base64
import io
import math
import statistics
from collections.abc import Mapping, Sequence

import numpy as np

from semiseg.colours import LABEL_COLOURS, METHOD_COLOURS
from semiseg.references import reference_sources

__all__ = ["dice_vs_ratio", "learning_curves", "overlays", "reference_points"]

def reference_points(table: Mapping) -> list[dict]:
    """The papers' values of a table entry: ``[{"method", "ratio", "metric", "value", "source"}]``.

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
                                       "value": float(value), "source": ref.get("source") or ""})
    return points


#: train.csv columns that are not curves of their own.
_NOT_CURVES = ("iteration", "lr", "val_dice")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def dice_vs_ratio(table: Mapping, runs: Mapping, labels: Mapping[str, str]) -> str:
    """PNG (data URI): mean Dice ± std over seeds against the labeled ratio, a line per method;
    the papers' Dice values as open markers of the method's colour."""
    fig = _figure(7.5, 4.2)
    ax = fig.subplots()
    methods = list(dict.fromkeys(row["method"] for row in table["rows"]))
    refs = [p for p in reference_points(table) if p["metric"] == "dice"]
    ratios_seen = set()
    for k, method in enumerate(methods):
        colour = METHOD_COLOURS[k % len(METHOD_COLOURS)]
        ratios = sorted({r for (m, r, _s) in runs if m == method})
        if ratios:
            stats = [_mean_std([100 * runs[key]["summary"]["dice"] for key in runs if key[0] == method
                                and key[1] == r]) for r in ratios]
            ax.errorbar(ratios, [s[0] for s in stats], yerr=[s[1] for s in stats], color=colour, marker="o",
                        capsize=3, label=f"{labels.get(method, method)} (ours)")
            ratios_seen.update(ratios)
        mine = [p for p in refs if p["method"] == method]
        if mine:
            ax.plot([p["ratio"] for p in mine], [p["value"] for p in mine], linestyle="none", marker="D",
                    markerfacecolor="none", markeredgecolor=colour, markersize=8,
                    label=f"{labels.get(method, method)} (paper)")
            ratios_seen.update(p["ratio"] for p in mine)
    if ratios_seen:
        ax.set_xscale("log")
        ax.set_xticks(sorted(ratios_seen))
        ax.set_xticklabels([f"{r}%" for r in sorted(ratios_seen)])
        ax.minorticks_off()
    ax.set_xlabel("labeled ratio (log scale)")
    ax.set_ylabel("Dice (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Dice against the labeled ratio: mean ± std over seeds; ◇ the papers' values", fontsize=10)
    return _png(fig)


def _smooth(y: np.ndarray) -> np.ndarray:
    """A centred moving average over ~1/50 of the run (nothing for short runs), NaN-aware."""
    window = len(y) // 50
    if window < 2:
        return y
    kernel = np.ones(window)
    valid = np.isfinite(y)
    num = np.convolve(np.where(valid, y, 0.0), kernel, mode="same")
    den = np.convolve(valid.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def learning_curves(method: str, ratio: int, runs: Mapping, label: str) -> str | None:
    """PNG (data URI): every loss term of the runs' ``train.csv`` and the validation Dice against
    the iteration, one panel each, a line per seed; ``None`` when no run has a log."""
    mine = sorted((key for key in runs if key[0] == method and key[1] == ratio and runs[key]["curves"] is not None),
                  key=lambda key: key[2])
    if not mine:
        return None
    terms = list(dict.fromkeys(c for key in mine for c in runs[key]["curves"].columns if c not in _NOT_CURVES))
    panels = terms + ["val_dice"]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = _figure(3.2 * cols, 2.4 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, panels):
        for k, key in enumerate(mine):
            df = runs[key]["curves"]
            if name not in df:
                continue
            data = df[["iteration", name]].dropna()
            if data.empty:
                continue
            x, y = data["iteration"].to_numpy() + 1, data[name].to_numpy(dtype=float)
            colour = METHOD_COLOURS[k % len(METHOD_COLOURS)]
            if name == "val_dice":
                ax.plot(x, 100 * y, marker=".", color=colour, label=f"seed {key[2]}")
            else:
                ax.plot(x, y, color=colour, alpha=0.25 if len(y) >= 100 else 1.0, linewidth=0.8)
                if len(y) >= 100:
                    ax.plot(x, _smooth(y), color=colour, label=f"seed {key[2]}")
                else:
                    ax.lines[-1].set_label(f"seed {key[2]}")
        ax.set_title("validation Dice (%)" if name == "val_dice" else name, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes[len(panels) - 1].legend(fontsize=7)
    fig.suptitle(f"{label}, {ratio}% labeled: training log (thin: every iteration; thick: moving average)",
                 fontsize=10)
    return _png(fig)


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


def overlays(ratio: int, methods: Sequence[str], runs: Mapping, store, labels: Mapping[str, str],
             class_names: Mapping[int, str], n_slices: int = 3) -> str | None:
    """PNG (data URI): for the same test slices, the image, the ground truth and each method's
    prediction (its first seed's run at ``ratio``); ``None`` when no run has predictions."""
    import SimpleITK as sitk
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    shown = []
    for method in methods:
        seeds = sorted(s for (m, r, s) in runs if m == method and r == ratio)
        if seeds and (runs[(method, ratio, seeds[0])]["dir"] / "predictions").is_dir():
            shown.append((method, runs[(method, ratio, seeds[0])]["dir"] / "predictions", seeds[0]))
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
    fig = _figure(2.3 * cols, 2.4 * len(picks) + 0.8)
    axes = fig.subplots(len(picks), cols, squeeze=False)
    for r, (case, z) in enumerate(picks):
        image, gt = store.read(case)
        layers = [(None, "image"), (gt, "ground truth")]
        for method, pred_dir, seed in shown:
            pred = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_dir / f"{case}.nii.gz")))
            layers.append((pred, f"{labels.get(method, method)} (seed {seed})"))
        for c, (layer, title) in enumerate(layers):
            ax = axes[r, c]
            ax.imshow(image[z], cmap="gray", interpolation="nearest")
            if layer is not None:
                ax.imshow(np.ma.masked_equal(layer[z], 0), cmap=cmap, vmin=0, vmax=n_classes - 1, alpha=0.55,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{case} z={z}", fontsize=8)
    handles = [Patch(color=LABEL_COLOURS[(v - 1) % len(LABEL_COLOURS)], label=class_names[v])
               for v in sorted(class_names) if v > 0]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"{ratio}% labeled: the same test slices, each method's prediction", fontsize=10)
    return _png(fig)


# ----------------------------------------------------------------------------- the page
