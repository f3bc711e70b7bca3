"""One self-contained HTML page per table, for ``snakemake --report``.

``results/report/<table>.html`` holds, for one ``config/tables/<name>.yaml``:

1. the table itself (``results/tables/<name>.md``, rendered as an HTML table, word for word);
2. per-class metrics: Dice and 95HD of each class (RV, Myo, LV for ACDC), mean ± std over seeds;
3. Dice against the labeled ratio, a line per method, with the papers' values of the table's
   ``reference`` as open markers in the method's colour;
4. the runs' job parameters, read from each run's own ``config.json`` (what it was trained
   with), checked against the table's ``Schedule:`` line: a page is never written beside a table
   whose schedule its runs do not share;
5. learning curves of every run: each loss term of ``train.csv`` and the validation Dice,
   against the iteration (one figure per method and ratio, a line per seed);
6. example overlays: for each ratio, the same test slices (image, ground truth, each method's
   prediction of its first seed);
7. ALHVR's region figure (image, both networks, Ω1/Ω2/Ω3), when the table has an ``alhvr`` row.

The figures are PNGs embedded in the page (``data:`` URIs), so the page is one file that the
Snakemake report shows as it is and that opens on its own in a browser. Matplotlib is used
through its object API (no pyplot state).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from semiseg.reporting.colours import LABEL_COLOURS, METHOD_COLOURS
from semiseg.metrics.segmentation import read_metrics_csv, summarise
from semiseg.reporting.build import parse_run_path
from semiseg.reporting.tables import write_table

__all__ = ["markdown_to_html", "reference_points", "table_page", "check_schedule"]

#: train.csv columns that are not curves of their own.
_NOT_CURVES = ("iteration", "lr", "val_dice")


# ----------------------------------------------------------------------------- markdown
def _inline(text: str) -> str:
    """Escape ``text`` and render the inline markdown the tables use: `code`, **bold**, [links](url)."""
    out, pos = [], 0
    for m in re.finditer(r"`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)\s]+)\)", text):
        out.append(html.escape(text[pos:m.start()]))
        if m[1] is not None:
            out.append(f"<code>{html.escape(m[1])}</code>")
        elif m[2] is not None:
            out.append(f"<strong>{html.escape(m[2])}</strong>")
        else:
            out.append(f'<a href="{html.escape(m[4], quote=True)}">{html.escape(m[3])}</a>')
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    """The cells of a markdown pipe-table line (``\\|`` is a literal bar)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip().replace("\\|", "|").replace("\\\\", "\\") for c in re.split(r"(?<!\\)\|", body)]


def markdown_to_html(text: str) -> str:
    """HTML of the markdown a table file is written in: ``#`` headings, paragraphs, ``-`` lists
    and pipe tables (with their alignment row), and the inline forms of :func:`_inline`.
    Anything else is kept as escaped text, so nothing of the file is lost."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", line)
        if heading:
            level = len(heading[1])
            out.append(f"<h{level}>{_inline(heading[2])}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|?\s*:?-{3,}", lines[i + 1]):
            header = _cells(line)
            aligns = ["right" if c.endswith(":") and not c.startswith(":") else "left" for c in _cells(lines[i + 1])]
            i += 2
            body = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                body.append(_cells(lines[i]))
                i += 1
            th = "".join(f'<th style="text-align:{aligns[k] if k < len(aligns) else "left"}">{_inline(c)}</th>'
                         for k, c in enumerate(header))
            rows = "".join("<tr>" + "".join(f'<td style="text-align:{aligns[k] if k < len(aligns) else "left"}">'
                                            f"{_inline(c)}</td>" for k, c in enumerate(r)) + "</tr>" for r in body)
            out.append(f"<table><thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table>")
        elif re.match(r"^\s*[-*]\s+", line):
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                item = re.sub(r"^\s*[-*]\s+", "", lines[i])
                i += 1
                while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():  # continuation
                    item += " " + lines[i].strip()
                    i += 1
                items.append(f"<li>{_inline(item)}</li>")
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#|\s*\||\s*[-*]\s)", lines[i]):
                para.append(lines[i].strip())
                i += 1
            if not para:  # a line that starts like a block but is none: keep it as text
                para, i = [line.strip()], i + 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


# ----------------------------------------------------------------------------- data
def reference_points(table: Mapping) -> list[dict]:
    """The papers' values of a table entry: ``[{"method", "ratio", "metric", "value", "source"}]``.

    Reads ``reference`` as a mapping (``source``, ``values``: method → ratio → metric → value)
    or a list of such mappings, one per source; ratio keys may be ints or strings.
    """
    refs = table.get("reference") or []
    if isinstance(refs, Mapping):
        refs = [refs]
    points = []
    for ref in refs:
        for method, by_ratio in (ref.get("values") or {}).items():
            for ratio, cell in (by_ratio or {}).items():
                for metric, value in (cell or {}).items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                        points.append({"method": method, "ratio": int(ratio), "metric": metric,
                                       "value": float(value), "source": ref.get("source") or ""})
    return points


def _read_runs(run_dirs: Sequence[Path]) -> dict[tuple[str, int, int], dict]:
    """``(method, ratio, seed)`` → ``{"dir", "summary", "config", "curves"}`` of each run."""
    import pandas as pd

    runs = {}
    for d in run_dirs:
        d = Path(d)
        _, method, ratio, seed = parse_run_path(d / "metrics.csv")
        with open(d / "config.json") as fh:
            config = json.load(fh)
        curves = pd.read_csv(d / "train.csv") if (d / "train.csv").is_file() else None
        runs[(method, ratio, seed)] = {"dir": d, "summary": summarise(read_metrics_csv(d / "metrics.csv")),
                                       "config": config, "curves": curves}
    return runs


def check_schedule(table_md: str, runs: Mapping) -> str | None:
    """The schedule the runs were trained with, checked against the table's ``Schedule:`` line.

    Raises ``ValueError`` when the runs disagree among themselves or with the table: the page
    would show job parameters that are not the table's.
    """
    names = sorted({r["config"]["spec"]["schedule"].get("name", "?") for r in runs.values()})
    if len(names) > 1:
        raise ValueError(f"the table's runs were trained with different schedules {names}; rebuild the table")
    stated = re.search(r"^\s*-?\s*Schedule:\s*`?([\w.-]+)", table_md, flags=re.M)
    if names and stated and stated[1] != names[0]:
        raise ValueError(f"the table says schedule {stated[1]!r} but its runs were trained with {names[0]!r}")
    return names[0] if names else None


# ----------------------------------------------------------------------------- figures
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
def _per_class_html(table: Mapping, runs: Mapping, labels: Mapping[str, str]) -> str:
    classes = list(dict.fromkeys(c for r in runs.values() for c in r["summary"]["per_class"]))
    head = "".join(f"<th>{html.escape(c)} Dice (%)</th>" for c in classes)
    head += "".join(f"<th>{html.escape(c)} 95HD</th>" for c in classes)
    body = []
    for row in table["rows"]:
        method = row["method"]
        for ratio in row["ratios"]:
            keys = [k for k in runs if k[0] == method and k[1] == int(ratio)]
            if not keys:
                continue
            cells = []
            for metric, factor in (("dice", 100.0), ("hd95", 1.0)):
                for c in classes:
                    vals = [factor * runs[k]["summary"]["per_class"][c][metric] for k in keys
                            if c in runs[k]["summary"]["per_class"]]
                    if not vals:
                        cells.append("<td>–</td>")
                        continue
                    mean, std = _mean_std(vals)
                    cells.append(f"<td>{mean:.2f} ± {std:.2f}</td>" if len(vals) > 1 else f"<td>{mean:.2f}</td>")
            body.append(f"<tr><td>{html.escape(labels.get(method, method))}</td><td>{int(ratio)}%</td>"
                        f"<td>{len(keys)}</td>{''.join(cells)}</tr>")
    return (f"<table><thead><tr><th>Method</th><th>Labeled</th><th>Seeds</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _params_html(runs: Mapping, labels: Mapping[str, str]) -> str:
    keys = ("name", "iterations", "labeled_batch_size", "unlabeled_batch_size", "lr", "val_interval",
            "max_test_cases")
    body = []
    order = {m: k for k, m in enumerate(labels)}  # the table's row order
    for (method, ratio, seed), run in sorted(runs.items(), key=lambda kv: (order.get(kv[0][0], len(order)),
                                                                          kv[0][1], kv[0][2])):
        spec = run["config"]["spec"]
        sched = spec["schedule"]
        summary = run["config"].get("summary", {})
        cells = "".join(f"<td>{html.escape(str(sched.get(k, '–')))}</td>" for k in keys)
        params = json.dumps(spec["method"].get("params", {}), sort_keys=True)
        best = summary.get("best_val_dice")
        best_text = "–" if best is None else f"{100 * best:.2f} @ {summary.get('best_iteration')}"
        body.append(f"<tr><td>{html.escape(labels.get(method, method))}</td><td>{ratio}%</td><td>{seed}</td>{cells}"
                    f"<td>{best_text}</td>"
                    f"<td><code>{html.escape(params)}</code></td>"
                    f"<td><code>{html.escape(str(run['dir']))}</code></td></tr>")
    head = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in ("schedule", *keys[1:]))
    return (f"<table><thead><tr><th>Method</th><th>Labeled</th><th>Seed</th>{head}<th>best val Dice</th>"
            f"<th>method parameters</th><th>run</th></tr></thead><tbody>{''.join(body)}</tbody></table>")


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em; color: #222;
       max-width: 1400px; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
thead th { background: #f0f3f7; }
tbody tr:nth-child(even) { background: #fafafa; }
code { font-size: 0.92em; background: #f4f4f4; padding: 0 0.2em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.note { color: #555; font-size: 0.9em; }
"""


def table_page(spec: Mapping, *, table_md: Path, run_dirs: Sequence[Path], store_path: Path,
               region_figures: Sequence[Path] = (), out: Path, overlay_slices: int = 3) -> Path:
    """Write the report page of one table to ``out`` (atomically) and return its path.

    ``spec``: ``name`` and ``table`` (the catalogue entry). ``run_dirs``: the runs the table was
    built from (each with ``metrics.csv``, ``config.json``, ``train.csv``, ``predictions/``).
    """
    from semiseg.data.store import Store

    table = spec["table"]
    text = Path(table_md).read_text()
    runs = _read_runs(run_dirs)
    schedule = check_schedule(text, runs)
    labels = {row["method"]: row.get("label") or row["method"] for row in table["rows"]}
    methods = list(dict.fromkeys(row["method"] for row in table["rows"]))
    parts = [f"<h1>{html.escape(table['title'])}</h1>",
             f'<p class="note">Report page of <code>{html.escape(str(table_md))}</code>: the table as built, then '
             f"what it is made of. Runs trained with schedule <strong>{html.escape(str(schedule))}</strong> "
             "(read from each run's <code>config.json</code>; see the job parameters below).</p>",
             "<h2>The table</h2>", markdown_to_html(re.sub(r"^#\s.*\n", "", text, count=1))]
    if runs:
        parts += ["<h2>Per-class metrics</h2>",
                  '<p class="note">Each class\'s Dice and 95HD, mean ± sample std over seeds of the per-run means '
                  "over test cases (the table's Dice is the mean of these over classes).</p>",
                  _per_class_html(table, runs, labels)]
    parts += ["<h2>Dice against the labeled ratio</h2>", f'<img alt="Dice against labeled ratio" '
              f'src="{dice_vs_ratio(table, runs, labels)}">']
    sources = sorted({p["source"] for p in reference_points(table) if p["source"]})
    if sources:
        parts.append('<p class="note">Papers\' values: ' + "; ".join(html.escape(s) for s in sources) + ".</p>")
    if runs:
        parts += ["<h2>Job parameters of the runs</h2>", _params_html(runs, labels), "<h2>Learning curves</h2>"]
        for method in methods:
            for ratio in sorted({r for (m, r, _s) in runs if m == method}):
                png = learning_curves(method, ratio, runs, labels[method])
                if png:
                    parts.append(f'<img alt="learning curves {html.escape(method)} {ratio}" src="{png}">')
        parts.append("<h2>Example predictions</h2>")
        with Store(store_path) as store:
            names = {v: k for k, v in store.labels.items()}
            for ratio in sorted({r for (_m, r, _s) in runs}):
                png = overlays(ratio, methods, runs, store, labels, names, overlay_slices)
                if png:
                    parts.append(f'<img alt="overlays {ratio}" src="{png}">')
    for fig_path in region_figures:
        data = base64.b64encode(Path(fig_path).read_bytes()).decode("ascii")
        parts += [f"<h2>ALHVR's regions ({html.escape(Path(fig_path).stem)})</h2>",
                  '<p class="note">Paper Figure 1 for our run: image, both networks\' predictions, and the '
                  "regions Ω1 (reliable stable), Ω2 (reliable unstable), Ω3 (unreliable stable).</p>",
                  f'<img alt="ALHVR regions" src="data:image/png;base64,{data}">']
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(table['title'])}</title><style>{_STYLE}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    write_table(page, out)
    return Path(out)
