"""One self-contained HTML page per table, for ``snakemake --report``.

``results/report/<table>.html`` holds, for one ``config/tables/<name>.yaml``:

1. the table itself (``results/tables/<name>.md``, rendered as an HTML table, word for word);
2. per-class metrics: Dice and 95HD of each class (RV, Myo, LV for ACDC), mean ± std over seeds;
3. Dice against the labeled ratio, a line per row, with the papers' values of the table's
   ``reference`` as open markers in the row's colour, in panels of a few rows each;
4. the runs' job parameters, read from each run's own ``config.json`` (what it was trained
   with), checked against the table's ``Schedule:`` line: a page is never written beside a table
   whose schedule its runs do not share;
5. the validation Dice of every row against the iteration, a panel per ratio; then learning
   curves of every run: each loss term of ``train.csv`` and the validation Dice, against the
   iteration (one figure per row, a colour per ratio, a line per seed);
6. example overlays: for each ratio, the same test slices (image, ground truth, each row's
   prediction of its first seed);
7. the figures the table's methods register (:mod:`semiseg.method_sources`), drawn from the
   seed-0 run of each row that has one, each under its registered title and note.
8. for a table whose ``columns`` has ``difference``, a forest plot of the paired differences, and
   with ``cost``, Dice against device time per ratio (:mod:`semiseg.reporting.comparison_figures`),
   after the Dice-against-ratio figure.

A predictions row (another tool's folder, scored once: ``external/<table>/<key>/metrics.csv``)
is on the page wherever its one result applies: per-class metrics, a point at its ratio in the
Dice-against-ratio figure and its predictions in the overlays, each marked *evaluation only*.
Where it does not apply (no seeds: no ± and no paired difference; no training here: no cost, job
parameters or learning curves), the section says so by name instead of leaving the row out.

Every name on the page is the row's ``label``, looked up by ``(method, ratio)``: a table may
hold two rows of one method (U-Net with a few labeled patients and with all of them).

The figures are embedded in the page (``data:`` URIs; palette PNGs, overlays as JPEG), so the
page is one file that the Snakemake report shows as it is and that opens on its own in a
browser. The report shows it as a ``data:`` URL, which Chromium refuses above 2 MB: with an
ACDC-size table (23 cells of a method at a ratio, 3 seeds each) the page stays near 1 MB
(tests/test_report.py).
Matplotlib is used through its object API (no pyplot state).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from semiseg.method_sources import figure_of
from semiseg.metrics.csv_io import read_metrics_csv
from semiseg.metrics.summary import summarise
from semiseg.provenance import read_record
from semiseg.reporting.build import parse_run_path, result_key
from semiseg.reporting.comparison_figures import comparison_sections
from semiseg.reporting.report_figures import (EVALUATION_ONLY, dice_vs_ratio, evaluation_only_note,
                                              learning_curves, overlays, reference_points, val_dice)
from semiseg.reporting.notes import mean_std_text
from semiseg.reporting.tables import write_table
from semiseg.table_config import is_external

__all__ = ["markdown_to_html", "reference_points", "row_labels", "table_page", "check_schedule"]

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


def _read_external(metrics: Sequence[Path], table: Mapping) -> dict[tuple[str, int], dict]:
    """``(key, ratio)`` → ``{"path", "summary", "folder", "sha256"}`` of each predictions row's
    ``metrics.csv`` (``external/<table>/<key>/metrics.csv``); ``sha256`` is the folder's checksum
    its scoring recorded (None without a record)."""
    out = {}
    for path in metrics:
        path = Path(path)
        key, ratio, _ = result_key(path, table)
        row = next(r for r in table["rows"] if is_external(r) and r["method"] == key)
        record = read_record("evaluate-external", path) or {}
        out[(key, ratio)] = {"path": path, "summary": summarise(read_metrics_csv(path)),
                             "folder": Path(row["predictions"]),
                             "sha256": (record.get("spec") or {}).get("predictions", {}).get("sha256")}
    return out


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


def row_labels(table: Mapping) -> dict[tuple[str, int], str]:
    """``(method, ratio)`` → the name of the table row that holds it (its ``label``, else the
    method): two rows of one method (U-Net at 10 % and at 100 %) keep their own names."""
    return {(row["method"], int(ratio)): row.get("label") or row["method"]
            for row in table["rows"] for ratio in row["ratios"]}


def _per_class_html(table: Mapping, runs: Mapping, labels: Mapping[tuple[str, int], str],
                    external: Mapping) -> str:
    """Each row's per-class Dice and 95HD, mean ± std over its seeds; a predictions row's one
    value, its seeds cell saying why there are none."""
    summaries = [r["summary"] for r in runs.values()] + [e["summary"] for e in external.values()]
    classes = list(dict.fromkeys(c for summary in summaries for c in summary["per_class"]))
    head = "".join(f"<th>{html.escape(c)} Dice (%)</th>" for c in classes)
    head += "".join(f"<th>{html.escape(c)} 95HD</th>" for c in classes)
    body = []
    for row in table["rows"]:
        method = row["method"]
        for ratio in row["ratios"]:
            if is_external(row):
                found = [external[(method, int(ratio))]["summary"]] if (method, int(ratio)) in external else []
                seeds = f"none: {EVALUATION_ONLY}"
            else:
                found = [run["summary"] for k, run in runs.items() if k[0] == method and k[1] == int(ratio)]
                seeds = str(len(found))
            if not found:
                continue
            cells = []
            for metric, factor in (("dice", 100.0), ("hd95", 1.0)):
                for c in classes:
                    vals = [factor * summary["per_class"][c][metric] for summary in found if c in summary["per_class"]]
                    if not vals:
                        cells.append("<td>–</td>")
                        continue
                    cells.append(f"<td>{mean_std_text(vals)}</td>")
            body.append(f"<tr><td>{html.escape(labels[(method, int(ratio))])}</td><td>{int(ratio)}%</td>"
                        f"<td>{seeds}</td>{''.join(cells)}</tr>")
    return (f"<table><thead><tr><th>Method</th><th>Labeled</th><th>Seeds</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _external_html(external: Mapping, labels: Mapping[tuple[str, int], str]) -> str:
    """What the page knows of each predictions row instead of job parameters: the folder it
    scored and the checksum its scoring recorded (``semiseg audit`` checks the folder against it)."""
    body = "".join(f"<tr><td>{html.escape(labels[key])}</td><td>{key[1]}%</td>"
                   f"<td><code>{html.escape(str(e['folder']))}</code></td>"
                   f"<td><code>{html.escape(e['sha256'][:16]) if e['sha256'] else '–'}</code></td>"
                   f"<td><code>{html.escape(str(e['path']))}</code></td></tr>" for key, e in external.items())
    return ("<table><thead><tr><th>Method</th><th>Labeled</th><th>predictions folder</th><th>sha256 (scored)</th>"
            f"<th>metrics</th></tr></thead><tbody>{body}</tbody></table>")


def _params_html(runs: Mapping, labels: Mapping[tuple[str, int], str]) -> str:
    keys = ("name", "iterations", "labeled_batch_size", "unlabeled_batch_size", "lr", "val_interval",
            "max_test_cases")
    body = []
    order = {key: k for k, key in enumerate(labels)}  # the table's row order
    for (method, ratio, seed), run in sorted(runs.items(), key=lambda kv: (order.get(kv[0][:2], len(order)),
                                                                          kv[0][2])):
        spec = run["config"]["spec"]
        sched = spec["schedule"]
        summary = run["config"].get("summary", {})
        cells = "".join(f"<td>{html.escape(str(sched.get(k, '–')))}</td>" for k in keys)
        params = json.dumps(spec["method"].get("params", {}), sort_keys=True)
        best = summary.get("best_val_dice")
        best_text = "–" if best is None else f"{100 * best:.2f} @ {summary.get('best_iteration')}"
        body.append(f"<tr><td>{html.escape(labels.get((method, ratio), method))}</td><td>{ratio}%</td>"
                    f"<td>{seed}</td>{cells}"
                    f"<td>{best_text}</td>"
                    f"<td><code>{html.escape(params)}</code></td>"
                    f"<td><code>{html.escape(str(run['dir']))}</code></td></tr>")
    head = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in ("schedule", *keys[1:]))
    return (f"<table><thead><tr><th>Method</th><th>Labeled</th><th>Seed</th>{head}<th>best val Dice</th>"
            f"<th>method parameters</th><th>run</th></tr></thead><tbody>{''.join(body)}</tbody></table>")


def _embedded_image(path: Path, width: int = 800) -> str:
    """A run figure's PNG as a JPEG ``data:`` URI at most ``width`` pixels wide: the figures are
    drawn at 120 dpi for their own files, and several of them as PNG would make the page too
    big for the report (module docstring)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        image.save(buf, format="jpeg", quality=85, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


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
               external: Sequence[Path] = (), figures: Sequence[Path] = (), out: Path,
               overlay_slices: int = 2) -> Path:
    """Write the report page of one table to ``out`` (atomically) and return its path.

    ``spec``: ``name`` and ``table`` (the catalogue entry). ``run_dirs``: the runs the table was
    built from (each with ``metrics.csv``, ``config.json``, ``train.csv``, ``predictions/``).
    ``external``: the ``metrics.csv`` of its predictions rows (:func:`semiseg.paths.external_file`).
    ``figures``: files of registered figures (:func:`semiseg.paths.figure`).
    """
    from semiseg.data.store import Store

    table = spec["table"]
    text = Path(table_md).read_text()
    runs = _read_runs(run_dirs)
    scored = _read_external(external, table)
    schedule = check_schedule(text, runs)
    labels = row_labels(table)
    methods = list(dict.fromkeys(row["method"] for row in table["rows"]))
    trained = (f"Runs trained with schedule <strong>{html.escape(str(schedule))}</strong> (read from each run's "
               "<code>config.json</code>; see the job parameters below)." if runs else
               "No run trained here: its rows are " + (f"{EVALUATION_ONLY} (another tool's predictions)"
                                                        if scored else "the papers' values") + ".")
    parts = [f"<h1>{html.escape(table['title'])}</h1>",
             f'<p class="note">Report page of <code>{html.escape(str(table_md))}</code>: the table as built, then '
             f"what it is made of. {trained}</p>",
             "<h2>The table</h2>", markdown_to_html(re.sub(r"^#\s.*\n", "", text, count=1))]
    if runs or scored:
        parts += ["<h2>Per-class metrics</h2>",
                  '<p class="note">Each class\'s Dice and 95HD, mean ± sample std over seeds of the per-run means '
                  "over test cases (the table's Dice is the mean of these over classes)"
                  + (f"; a row marked {EVALUATION_ONLY} (another tool's predictions, scored here with the same "
                     "metrics) has one value: one folder, no seeds" if scored else "") + ".</p>",
                  _per_class_html(table, runs, labels, scored)]
    parts += ["<h2>Dice against the labeled ratio</h2>", f'<img alt="Dice against labeled ratio" '
              f'src="{dice_vs_ratio(table, runs, labels, scored)}">']
    sources = sorted({p["source"] for p in reference_points(table) if p["source"]})
    if sources:
        parts.append('<p class="note">Papers\' values: ' + "; ".join(html.escape(s) for s in sources) + ".</p>")
    parts += comparison_sections(table, runs, scored)  # the `difference` and `cost` columns' figures
    if runs or scored:
        parts += ["<h2>Job parameters of the runs</h2>"]
        parts += [_params_html(runs, labels)] if runs else []
        if scored:
            parts += [evaluation_only_note(labels, scored, "Not here", "trained outside this workflow: no job "
                                           "parameters, validation Dice or learning curves here; what it scored"),
                      _external_html(scored, labels)]
    if runs:
        ran = [(method, ratio, label) for (method, ratio), label in labels.items()
               if any(key[:2] == (method, ratio) for key in runs)]
        png = val_dice(ran, runs)
        if png:
            parts += ["<h2>Validation Dice of every row</h2>", f'<img alt="validation Dice of every row" src="{png}">']
        parts.append("<h2>Learning curves</h2>")
        for row in table["rows"]:
            ratios = [int(r) for r in row["ratios"] if any(key[:2] == (row["method"], int(r)) for key in runs)]
            png = learning_curves(row["method"], ratios, runs, labels[(row["method"], ratios[0])]) if ratios else None
            if png:
                parts.append(f'<img alt="learning curves {html.escape(row["method"])} '
                             f'{", ".join(map(str, ratios))}" src="{png}">')
    if runs or scored:
        parts.append("<h2>Example predictions</h2>")
        folders = {key: e["folder"] for key, e in scored.items()}
        with Store(store_path) as store:
            names = {v: k for k, v in store.labels.items()}
            for ratio in sorted({r for (_m, r, _s) in runs} | {r for (_k, r) in scored}):
                png = overlays(ratio, methods, runs, store, labels, names, overlay_slices, folders)
                if png:
                    parts.append(f'<img alt="overlays {ratio}" src="{png}">')
    for fig_path in figures:
        fig = figure_of(fig_path)
        data = _embedded_image(fig_path)
        parts += [f"<h2>{html.escape(fig['title'], quote=False)} ({html.escape(Path(fig_path).stem)})</h2>",
                  f'<p class="note">{html.escape(fig["note"], quote=False)}</p>',
                  f'<img alt="{html.escape(fig["alt"])}" src="{data}">']
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(table['title'])}</title><style>{_STYLE}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    write_table(page, out)
    return Path(out)
