"""Following the chain of one table cell back to the fetched source (see :mod:`semiseg.reporting.audit`)."""

from __future__ import annotations

import re
from pathlib import Path

from semiseg.fingerprint import table_fingerprint
from semiseg.reporting.audit.links import MISMATCH, MISSING, OK, Auditor, abs_path, show

__all__ = ["audit"]


def _split_row(line: str) -> list[str]:
    """The cells of a markdown table row, undoing reporting.notes.escape (``\\|`` and ``\\\\``)."""
    cells, cell, chars = [], [], iter(line.strip())
    for ch in chars:
        if ch == "\\":
            cell.append(next(chars, ""))
        elif ch == "|":
            cells.append("".join(cell).strip())
            cell = []
        else:
            cell.append(ch)
    return cells[1:]  # text before the first pipe is empty; after the last one nothing is kept


def _parse_table(text: str) -> tuple[list[dict], str | None]:
    """Body rows of a table written by semiseg.reporting.tables (name, ratio, cells by column),
    and the fingerprint of its footnote."""
    from semiseg.reporting.tables import COLUMNS

    rows = []
    header = list(COLUMNS)  # a table's own header names its columns (a spec's `columns` chooses them)
    for line in text.splitlines():
        if not line.startswith("| "):
            continue
        cells = _split_row(line)
        if cells and cells[0] == COLUMNS[0]:
            header = cells
            continue
        if len(cells) != len(header) or set(cells[1]) <= set(":-"):
            continue
        name = re.sub(r" \(\d+/\d+ seeds\)$", "", cells[0])
        m = re.search(r"\((\d+(?:\.\d+)?)%\)", cells[1])
        rows.append({"name": name, "ratio": float(m.group(1)) if m else None,
                     "cells": dict(zip(header, cells))})
    fp = re.search(r"^- Code fingerprint: (\S+)\s*$", text, re.MULTILINE)
    return rows, fp.group(1) if fp else None


#: The value a cell shows, before any smoke warning or papers' values (semiseg.reporting.tables).
_CELL_VALUE = re.compile(r"^(not run|-?\d+\.\d+(?: ± \d+\.\d+)?)(?: \(.*\))?$")


def _value_part(cell: str) -> str:
    """``81.50 ± 0.71`` of ``81.50 ± 0.71 (smoke: …) (paper: A 80.10; B 79.00)``; a cell of
    another shape comes back whole (and then differs from the recomputed value)."""
    m = _CELL_VALUE.match(cell)
    return m.group(1) if m else cell


def _find_row(spec: dict, row: str, ratio: int) -> dict:
    candidates = [r for r in spec["rows"] if row in (r["method"], r.get("label"))]
    if not candidates:
        known = "; ".join(f"{r['method']}" + (f" ({r['label']})" if r.get("label") else "") for r in spec["rows"])
        raise ValueError(f"no row {row!r} in the table; rows (method (label)): {known}")
    matches = [r for r in candidates if ratio in [int(x) for x in r["ratios"]]]
    if not matches:
        have = sorted({int(x) for r in candidates for x in r["ratios"]})
        raise ValueError(f"row {row!r} has no ratio {ratio}; it has {', '.join(map(str, have))}")
    if len(matches) > 1:
        raise ValueError(f"{row!r} names {len(matches)} rows with ratio {ratio}; give the row's label instead")
    if not matches[0].get("run", True):
        raise ValueError(f"row {row!r} is not run here (run: false, paper values only); nothing to audit")
    return matches[0]


def audit(table_path, *, row: str, ratio: int, metric: str | None = None, root=None) -> dict:
    """Trace the cell (``row``, ``ratio``) of a built table back to the fetched source.

    Args:
        table_path: ``results/tables/<name>.md``.
        row: the row's method name (catalogue key) or its label as printed.
        ratio: the labeled percent (``10`` for "7 (10%)").
        metric: ``dice``, ``jaccard``, ``hd95`` or ``asd`` to recompute that column only;
            ``None``: all four.
        root: the workflow directory the table was built in (record paths are relative to it,
            and its ``config/config.yaml`` is what staleness is judged against); default: the
            nearest parent of the table holding ``workflow/schemas``, else of the cwd.

    Returns a JSON-serialisable dict: ``table``, ``row``, ``ratio``, ``cell`` (per metric: the
    text shown, the text recomputed from the runs' metrics, per-seed values), ``chain`` (the table
    link), ``runs`` (per seed: the metrics, predictions, model and config links), ``data``
    (split, descriptor, store and source, shared by the seeds), ``steps`` (each record: code
    fingerprint then and now, git commit, environment, device, host, SLURM job id, timing, the
    train spec, staleness), ``stale`` and ``status`` (``ok``, ``MISMATCH`` or ``missing``).
    Raises ValueError for an unknown row, ratio or metric, FileNotFoundError for a missing table.
    """
    from semiseg.config import ConfigError, base_dataset, dataset_source, find_root, run_spec
    from semiseg.metrics.csv_io import METRIC_NAMES, read_metrics_csv
    from semiseg.metrics.summary import summarise
    from semiseg.reporting.build import parse_run_path
    from semiseg.reporting.tables import _METRICS  # (summary key, display factor), column order
    from semiseg.reporting.tables import COLUMNS, format_cell

    table_path = Path(table_path).resolve()
    if not table_path.is_file():
        raise FileNotFoundError(f"{table_path}: no such table")
    if metric is not None and metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRIC_NAMES)}")
    ratio = int(ratio)
    if root is None:
        try:
            root = find_root(table_path.parent)
        except ConfigError:
            root = find_root()
    root = Path(root).resolve()
    a = Auditor(root)
    name = table_path.stem

    # the table and its record -----------------------------------------------------
    t_rec_path, t_rec = a.record("table", table_path)
    spec = (t_rec or {}).get("spec") or {}
    table_spec = spec.get("table")
    if table_spec is None:
        if a.cfg is None or name not in a.cfg["tables"]:
            raise ValueError(f"{table_path}: no table record ({show(root, t_rec_path)}) and no table {name!r} "
                             "in the config; cannot tell which runs made it")
        table_spec = a.cfg["tables"][name]
    spec_row = _find_row(table_spec, row, ratio)
    method, dataset, seeds = spec_row["method"], table_spec["dataset"], [int(s) for s in table_spec["seeds"]]

    # the dataset whose store and splits the runs read: a stride variant's are its base dataset's
    data_name = base_dataset(a.cfg, dataset) if a.cfg is not None and dataset in a.cfg["datasets"] else dataset

    metrics_paths: dict[int, Path] = {}
    for m in (t_rec or {}).get("args", {}).get("metrics", []):
        d, meth, r, s = parse_run_path(m)
        if (d, meth, r) == (dataset, method, ratio):
            metrics_paths[s] = abs_path(root, m)
    results = Path(a.cfg["settings"]["results"]) if a.cfg else Path("results")
    for s in seeds:
        metrics_paths.setdefault(s, abs_path(root, results / "runs" / dataset / method / str(ratio) / f"seed{s}" / "metrics.csv"))

    steps: dict[str, dict] = {}

    def add_step(stage, rec_path, rec, **kw) -> str:
        key = show(root, rec_path)
        if key not in steps:
            steps[key] = a.step(stage, rec_path, rec, **kw)
        return key

    t_link = a.link("table", table_path, ("table", t_rec_path, t_rec), [])
    t_cfg = None
    if t_rec is not None:
        t_cfg = a.config_now(lambda cfg: cfg["tables"][name])
        t_cfg = None if t_cfg is None else (table_spec, t_cfg)
    t_link["made_by"] = add_step("table", t_rec_path, t_rec, config_now=t_cfg)
    text = table_path.read_text(encoding="utf-8")
    md_rows, footnote = _parse_table(text)
    fp_now = a.config_now(lambda cfg: table_fingerprint(cfg, name))
    t_link["fingerprint"] = {"footnote": footnote, "recorded": spec.get("fingerprint"),
                             "now": fp_now if isinstance(fp_now, str) else None}
    if footnote is not None and spec.get("fingerprint") not in (None, footnote):
        t_link["status"] = MISMATCH
        t_link["problems"].append(f"footnote fingerprint {footnote} is not the record's {spec.get('fingerprint')}")
    if isinstance(fp_now, str) and footnote is not None and fp_now != footnote:
        steps[t_link["made_by"]]["stale"].append(
            {"reason": "stale: code or config changed",
             "detail": f"table fingerprint {footnote} in the footnote, {fp_now} now (a run's spec or code, or the table code)"})

    # per seed: metrics ← predictions ← model + config -----------------------------------
    # Readers of the shared data files, gathered over the seeds: {path: [(stage, record path, record)]}.
    split_readers: dict[Path, list] = {}
    store_readers: dict[Path, list] = {}

    def read_by(readers: dict, path: Path, *consumers) -> None:
        have = readers.setdefault(path, [])
        have += [c for c in consumers if c not in have]

    runs = []
    for seed in seeds:
        metrics = metrics_paths[seed]
        run_dir = metrics.parent
        e_path, e_rec = a.record("evaluate", metrics)
        pred = a.arg_path(e_rec, "predictions", run_dir / "predictions")
        i_path, i_rec = a.record("infer", pred)
        train_dir = a.arg_path(i_rec, "run_dir", run_dir)
        tr_path, tr_rec = a.record("train", train_dir)
        algorithm = ((tr_rec or {}).get("spec") or {}).get("method", {}).get("algorithm")
        spec_now = a.config_now(lambda cfg, seed=seed: run_spec(cfg, dataset, method, ratio, seed))
        tr_cfg = None if spec_now is None or tr_rec is None else (tr_rec.get("spec"), spec_now)
        evaluate, infer, train = ("evaluate", e_path, e_rec), ("infer", i_path, i_rec), ("train", tr_path, tr_rec)

        links = []
        lk = a.link("metrics", metrics, evaluate, [("table", t_rec_path, t_rec)])
        lk["made_by"] = add_step("evaluate", e_path, e_rec)
        links.append(lk)
        lk = a.link("predictions", pred, infer, [evaluate])
        lk["made_by"] = add_step("infer", i_path, i_rec)
        links.append(lk)
        train_step = add_step("train", tr_path, tr_rec, config_now=tr_cfg, algorithm=algorithm)
        for nm, f in (("model", train_dir / "model.pt"), ("config", train_dir / "config.json")):
            lk = a.link(nm, f, train, [infer])
            lk["made_by"] = train_step
            links.append(lk)

        default_store = root / results / "preprocessed" / data_name / "store.h5"
        default_split = root / results / "splits" / data_name / f"{ratio}.json"
        read_by(split_readers, a.arg_path(tr_rec, "split", a.arg_path(i_rec, "split", default_split)), train, infer)
        read_by(store_readers, a.arg_path(tr_rec, "store", a.arg_path(i_rec, "store", default_store)),
                train, infer, evaluate)

        value = {}
        if metrics.is_file():
            try:
                value = {k: v for k, v in summarise(read_metrics_csv(metrics)).items() if k in METRIC_NAMES}
            except ValueError as exc:
                value = {"error": str(exc)}
        runs.append({"seed": seed, "run_dir": show(root, run_dir), "summary": value, "links": links})

    # split ← descriptor + store ← raw: files the seeds share ----------------------------------
    data = []
    ds_cfg = a.config_now(lambda cfg: cfg["datasets"][dataset])

    def dataset_now(fn):
        return None if ds_cfg is None else (ds_cfg if isinstance(ds_cfg, Exception) else fn(ds_cfg))

    descriptor_readers: dict[Path, list] = {}
    for split, consumers in split_readers.items():
        s_path, s_rec = a.record("split", split)
        now = dataset_now(lambda ds: {"labeled_patients": ds["ratios"].get(str(ratio))})
        cfg_now = None if now is None or s_rec is None else (
            {"labeled_patients": (s_rec.get("args") or {}).get("labeled_patients")}, now)
        lk = a.link("split", split, ("split", s_path, s_rec), consumers)
        lk["made_by"] = add_step("split", s_path, s_rec, config_now=cfg_now)
        data.append(lk)
        desc = a.arg_path(s_rec, "descriptor", split.parents[2] / "preprocessed" / data_name / "dataset.json")
        read_by(descriptor_readers, desc, ("split", s_path, s_rec), ("table", t_rec_path, t_rec))
        read_by(store_readers, desc.parent / "store.h5")

    raw_readers: dict[Path, list] = {}
    for store, consumers in store_readers.items():
        p_path, p_rec = a.record("preprocess", store)
        now = dataset_now(lambda ds: {"layout": ds["source"].get("layout"), "labels": ds["labels"], "dims": ds["dims"]})
        key = add_step("preprocess", p_path, p_rec,
                       config_now=None if now is None or p_rec is None else (p_rec.get("spec"), now))
        desc = a.arg_path(p_rec, "descriptor", store.parent / "dataset.json")
        for nm, f, readers in (("store", store, consumers),
                               ("descriptor", desc, descriptor_readers.get(desc, [("table", t_rec_path, t_rec)]))):
            lk = a.link(nm, f, ("preprocess", p_path, p_rec), readers)
            lk["made_by"] = key
            data.append(lk)
        read_by(raw_readers, a.arg_path(p_rec, "raw", store.parents[2] / "raw" / data_name), ("preprocess", p_path, p_rec))

    for raw, consumers in raw_readers.items():
        f_path, f_rec = a.record("fetch", raw)
        now = dataset_now(lambda ds: {"source": dataset_source(a.cfg, dataset)})
        lk = a.link("source", raw, ("fetch", f_path, f_rec), consumers)
        lk["made_by"] = add_step("fetch", f_path, f_rec,
                                 config_now=None if now is None or f_rec is None else (f_rec.get("spec"), now))
        man = a.manifest(raw) if raw.is_dir() else {"path": show(root, raw / ".fetched.json"), "status": MISSING}
        lk["manifest"] = man
        if man["status"] != OK:
            parts = [f"{len(man[k])} {k}" for k in ("mismatched", "missing", "extra") if man.get(k)]
            lk["problems"].append(f"manifest {man['path']}: " + (", ".join(parts) or "absent or unreadable"))
            if man["status"] == MISMATCH or lk["status"] == OK:
                lk["status"] = man["status"]
        data.append(lk)

    # the cell -----------------------------------------------------------------------------
    label = spec_row.get("label") or method
    md = [r for r in md_rows if r["name"] == label and r["ratio"] is not None and int(r["ratio"]) == ratio]
    cell = {"row_label": label, "found": bool(md), "metrics": {}, "status": OK}
    columns = dict(zip([k for k, _ in _METRICS], COLUMNS[3:]))
    for key, factor in _METRICS:
        if metric is not None and key != metric:
            continue
        values = [r["summary"][key] * factor for r in runs if key in r["summary"]]
        recomputed = format_cell(values)
        shown_full = md[0]["cells"].get(columns[key]) if md else None
        shown = _value_part(shown_full) if shown_full is not None else None
        status = OK if shown == recomputed else MISMATCH
        cell["metrics"][key] = {"column": columns[key], "shown": shown_full, "recomputed": recomputed,
                                # in the table's units (Dice and Jaccard in %), as the cell shows them
                                "per_seed": {str(r["seed"]): (r["summary"][key] * factor if r["summary"].get(key)
                                                              is not None else None) for r in runs},
                                "status": status}
        if status != OK:
            cell["status"] = MISMATCH
    if not md:
        cell["status"] = MISSING

    # the verdict --------------------------------------------------------------------------
    all_links = [t_link, *[lk for r in runs for lk in r["links"]], *data]
    statuses = {lk["status"] for lk in all_links} | {cell["status"]}
    status = MISMATCH if MISMATCH in statuses else (MISSING if MISSING in statuses else OK)
    stale = [{"step": k, "stage": s["stage"], **st} for k, s in steps.items() for st in s["stale"]]
    return {
        "table": show(root, table_path), "root": str(root),
        "config": "config/config.yaml (as it is now; --config overrides of the original run are not recorded)",
        "config_error": a.cfg_error,
        "row": {"method": method, "label": spec_row.get("label")}, "ratio": ratio, "metric": metric,
        "seeds": seeds, "cell": cell, "chain": [t_link], "runs": runs, "data": data, "steps": steps,
        "stale": stale, "status": status,
        "counts": {s: sum(lk["status"] == s for lk in all_links) for s in (OK, MISMATCH, MISSING)},
    }
