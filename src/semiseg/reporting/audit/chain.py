"""Following the chain of one table cell back to the fetched source (see :mod:`semiseg.reporting.audit`)."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path

from semiseg import paths
from semiseg.data.registry import LAYOUTS
from semiseg.reporting.audit.links import MISMATCH, MISSING, OK, Auditor, abs_path, check_override, show
from semiseg.table_config import is_external, run_stride

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


def audit(table_path, *, row: str, ratio: int, metric: str | None = None, root=None, overrides=(),
          configfiles=()) -> dict:
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
        overrides, configfiles: the build's ``snakemake --config KEY=VALUE ...`` and
            ``--configfile FILE ...`` (:func:`~semiseg.reporting.audit.links.build_config`), so
            that a smoke or one-seed build is judged against the config it was built with.

    Returns a JSON-serialisable dict: ``table``, ``row``, ``ratio``, ``cell`` (per metric: the
    text shown, the text recomputed from the runs' metrics, per-seed values), ``chain`` (the table
    link), ``runs`` (per seed: the metrics, predictions, model and config links), ``data``
    (split, descriptor, store and source, shared by the seeds), ``steps`` (each record: code
    fingerprint then and now, git commit, environment, device, host, SLURM job id, timing, the
    train spec, staleness), ``stale`` and ``status`` (``ok``, ``MISMATCH`` or ``missing``).
    Raises ValueError for an unknown row, ratio or metric, FileNotFoundError for a missing table.
    """
    from semiseg.metrics.csv_io import METRIC_NAMES

    for item in overrides:
        check_override(item)
    table_path = Path(table_path).resolve()
    if not table_path.is_file():
        raise FileNotFoundError(f"{table_path}: no such table")
    if metric is not None and metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRIC_NAMES)}")
    trace = _Trace(table_path, row, int(ratio), _workflow_root(table_path, root), overrides, configfiles)
    t_link = trace.table_link()
    runs = [trace.run(seed) for seed in trace.seeds]
    data = trace.split_links() + trace.store_links() + trace.source_links()
    cell = _cell(trace.spec_row.get("label") or trace.method, trace.md_rows, runs, trace.ratio, metric)
    return trace.verdict(t_link, runs, data, cell, metric)


def _workflow_root(table_path: Path, root) -> Path:
    """``root``, else the workflow around the table, else around the cwd."""
    from semiseg.config import ConfigError, find_root

    if root is None:
        try:
            root = find_root(table_path.parent)
        except ConfigError:
            root = find_root()
    return Path(root).resolve()


def _read_by(readers: dict, path: Path, *consumers) -> None:
    have = readers.setdefault(path, [])
    have += [c for c in consumers if c not in have]


class _Trace:
    """The chain of one cell as :func:`audit` follows it: the table and its record, each seed's
    run, the data files the seeds share, and every step (record) met on the way, once each."""

    def __init__(self, table_path: Path, row: str, ratio: int, root: Path, overrides=(), configfiles=()):
        self.table_path, self.ratio, self.root = table_path, ratio, root
        self.overrides, self.configfiles = list(overrides), list(configfiles)
        self.a = a = Auditor(root, overrides, configfiles)
        self.name = name = table_path.stem
        self.t_rec_path, self.t_rec = a.record("table", table_path)
        self.spec = (self.t_rec or {}).get("spec") or {}
        table_spec = self.spec.get("table")
        if table_spec is None:
            if a.cfg is None or name not in a.cfg["tables"]:
                raise ValueError(f"{table_path}: no table record ({show(root, self.t_rec_path)}) and no table "
                                 f"{name!r} in the config; cannot tell which runs made it")
            table_spec = a.cfg["tables"][name]
        self.table_spec = table_spec
        self.spec_row = _find_row(table_spec, row, ratio)
        self.method, self.dataset = self.spec_row["method"], table_spec["dataset"]
        # a predictions row (another tool's folder, scored once) has one result and no seed
        self.external = is_external(self.spec_row)
        self.seeds = [None] if self.external else [int(s) for s in table_spec["seeds"]]
        dataset, method = self.dataset, self.method
        # the table's own test stride, where its runs have one (their data is still the dataset's):
        # as its record's metrics paths name it, else as the config has it now
        in_cfg = a.cfg is not None and dataset in a.cfg["datasets"]
        self.stride = run_stride(table_spec, a.cfg["datasets"]) if in_cfg else None

        self.metrics_paths: dict[int, Path] = {}
        for m in (self.t_rec or {}).get("args", {}).get("metrics", []):
            external = paths.parse_external_path(m)
            if external is not None:
                if self.external and external[1] == method:
                    self.metrics_paths[None] = abs_path(root, m)
                continue
            d, meth, r, s, stride = paths.parse_run(m)
            if (d, meth, r) == (dataset, method, ratio):
                self.metrics_paths[s], self.stride = abs_path(root, m), stride
        self.results = Path(a.cfg["settings"]["results"]) if a.cfg else Path("results")
        for s in self.seeds:
            self.metrics_paths.setdefault(s, abs_path(root, self.results / (
                paths.external_file(name, method) if self.external
                else paths.run_file(dataset, method, ratio, s, "metrics.csv", stride=self.stride))))
        self.steps: dict[str, dict] = {}
        self.table_producer = ("table", self.t_rec_path, self.t_rec)
        # Readers of the shared data files, gathered over the seeds: {path: [(stage, record path, record)]}.
        self.split_readers: dict[Path, list] = {}
        self.store_readers: dict[Path, list] = {}
        self.descriptor_readers: dict[Path, list] = {}
        self.raw_readers: dict[Path, list] = {}

    def add_step(self, stage, rec_path, rec, **kw) -> str:
        key = show(self.root, rec_path)
        if key not in self.steps:
            self.steps[key] = self.a.step(stage, rec_path, rec, **kw)
        return key

    # the table and its record -----------------------------------------------------
    def table_link(self) -> dict:
        from semiseg.config import table_fingerprint

        a, name, spec = self.a, self.name, self.spec
        t_link = a.link("table", self.table_path, self.table_producer, [])
        t_cfg = None
        if self.t_rec is not None:
            t_cfg = a.config_now(lambda cfg: cfg["tables"][name])
            t_cfg = None if t_cfg is None else (self.table_spec, t_cfg)
        t_link["made_by"] = self.add_step("table", self.t_rec_path, self.t_rec, config_now=t_cfg)
        text = self.table_path.read_text(encoding="utf-8")
        self.md_rows, footnote = _parse_table(text)
        fp_now = a.config_now(lambda cfg: table_fingerprint(cfg, name))
        t_link["fingerprint"] = {"footnote": footnote, "recorded": spec.get("fingerprint"),
                                 "now": fp_now if isinstance(fp_now, str) else None}
        if footnote is not None and spec.get("fingerprint") not in (None, footnote):
            t_link["status"] = MISMATCH
            t_link["problems"].append(f"footnote fingerprint {footnote} is not the record's {spec.get('fingerprint')}")
        if isinstance(fp_now, str) and footnote is not None and fp_now != footnote:
            self.steps[t_link["made_by"]]["stale"].append(
                {"reason": "stale: code or config changed",
                 "detail": f"table fingerprint {footnote} in the footnote, {fp_now} now (a run's spec or code, or the "
                           "table code)"})
        return t_link

    # per seed: metrics ← predictions ← model + config -----------------------------------
    def run(self, seed: int | None) -> dict:
        from semiseg.config import run_spec

        if self.external:
            return self.external_run()
        a, dataset, method, ratio = self.a, self.dataset, self.method, self.ratio
        metrics = self.metrics_paths[seed]
        run_dir = metrics.parent
        e_path, e_rec = a.record("evaluate", metrics)
        pred = a.arg_path(e_rec, "predictions", run_dir / "predictions")
        i_path, i_rec = a.record("infer", pred)
        train_dir = a.arg_path(i_rec, "run_dir", run_dir)
        tr_path, tr_rec = a.record("train", train_dir)
        algorithm = ((tr_rec or {}).get("spec") or {}).get("method", {}).get("algorithm")
        spec_now = a.config_now(lambda cfg: run_spec(cfg, dataset, method, ratio, seed, stride=self.stride))
        tr_cfg = None if spec_now is None or tr_rec is None else (tr_rec.get("spec"), spec_now)
        evaluate, infer, train = ("evaluate", e_path, e_rec), ("infer", i_path, i_rec), ("train", tr_path, tr_rec)

        links = []
        lk = a.link("metrics", metrics, evaluate, [self.table_producer])
        lk["made_by"] = self.add_step("evaluate", e_path, e_rec)
        links.append(lk)
        lk = a.link("predictions", pred, infer, [evaluate])
        lk["made_by"] = self.add_step("infer", i_path, i_rec)
        links.append(lk)
        train_step = self.add_step("train", tr_path, tr_rec, config_now=tr_cfg, algorithm=algorithm)
        for nm, f in (("model", train_dir / "model.pt"), ("config", train_dir / "config.json")):
            lk = a.link(nm, f, train, [infer])
            lk["made_by"] = train_step
            links.append(lk)

        default_store = self.root / self.results / paths.store(self.dataset)
        default_split = self.root / self.results / paths.split(self.dataset, ratio)
        _read_by(self.split_readers, a.arg_path(tr_rec, "split", a.arg_path(i_rec, "split", default_split)),
                 train, infer)
        _read_by(self.store_readers, a.arg_path(tr_rec, "store", a.arg_path(i_rec, "store", default_store)),
                 train, infer, evaluate)
        return {"seed": seed, "run_dir": show(self.root, run_dir), "summary": _summary(metrics), "links": links}

    # a predictions row: metrics ← another tool's predictions folder (+ split, store) ------------
    def external_run(self) -> dict:
        a = self.a
        metrics = self.metrics_paths[None]
        e_path, e_rec = a.record("evaluate-external", metrics)
        evaluate = ("evaluate-external", e_path, e_rec)
        folder = a.arg_path(e_rec, "predictions", Path(self.spec_row["predictions"]))
        lk = a.link("metrics", metrics, evaluate, [self.table_producer])
        lk["made_by"] = self.add_step("evaluate-external", e_path, e_rec)
        links = [lk, a.link("predictions", folder, None, [evaluate])]  # made outside the workflow
        _read_by(self.split_readers, a.arg_path(e_rec, "split", self.root / self.results / paths.split(
            self.dataset, self.ratio)), evaluate)
        _read_by(self.store_readers, a.arg_path(e_rec, "store", self.root / self.results / paths.store(
            self.dataset)), evaluate)
        return {"seed": None, "run_dir": show(self.root, metrics.parent), "predictions": show(self.root, folder),
                "summary": _summary(metrics), "links": links}

    # split ← descriptor + store ← raw: files the seeds share ----------------------------------
    @cached_property
    def dataset_cfg(self):
        """The dataset's catalogue entry now (see :meth:`Auditor.config_now`)."""
        return self.a.config_now(lambda cfg: cfg["datasets"][self.dataset])

    def dataset_now(self, fn):
        ds_cfg = self.dataset_cfg
        return None if ds_cfg is None else (ds_cfg if isinstance(ds_cfg, Exception) else fn(ds_cfg))

    def split_links(self) -> list[dict]:
        a, dataset, ratio = self.a, self.dataset, self.ratio
        data = []
        for split, consumers in self.split_readers.items():
            s_path, s_rec = a.record("split", split)
            now = self.dataset_now(lambda ds: {"labeled_patients": ds["ratios"].get(str(ratio))})
            cfg_now = None if now is None or s_rec is None else (
                {"labeled_patients": (s_rec.get("args") or {}).get("labeled_patients")}, now)
            lk = a.link("split", split, ("split", s_path, s_rec), consumers)
            lk["made_by"] = self.add_step("split", s_path, s_rec, config_now=cfg_now)
            data.append(lk)
            desc = a.arg_path(s_rec, "descriptor",
                              paths.results_root(split, paths.split(dataset, ratio)) / paths.descriptor(dataset))
            _read_by(self.descriptor_readers, desc, ("split", s_path, s_rec), self.table_producer)
            _read_by(self.store_readers, desc.parent / paths.STORE_NAME)
        return data

    def store_links(self) -> list[dict]:
        a, dataset = self.a, self.dataset
        data = []
        for store, consumers in self.store_readers.items():
            p_path, p_rec = a.record("preprocess", store)
            now = self.dataset_now(lambda ds: {"layout": ds["source"].get("layout"), "labels": ds["labels"],
                                               "dims": ds["dims"], "params": _reader_params(ds["source"])})
            key = self.add_step("preprocess", p_path, p_rec,
                                config_now=None if now is None or p_rec is None else (p_rec.get("spec"), now))
            desc = a.arg_path(p_rec, "descriptor", store.parent / paths.DESCRIPTOR_NAME)
            for nm, f, readers in (("store", store, consumers),
                                   ("descriptor", desc, self.descriptor_readers.get(desc, [self.table_producer]))):
                lk = a.link(nm, f, ("preprocess", p_path, p_rec), readers)
                lk["made_by"] = key
                data.append(lk)
            raw = paths.results_root(store, paths.store(dataset)) / paths.raw_dir(dataset)
            _read_by(self.raw_readers, a.arg_path(p_rec, "raw", raw), ("preprocess", p_path, p_rec))
        return data

    def source_links(self) -> list[dict]:
        from semiseg.config import dataset_source

        a = self.a
        data = []
        for raw, consumers in self.raw_readers.items():
            f_path, f_rec = a.record("fetch", raw)
            now = self.dataset_now(lambda ds: {"source": dataset_source(a.cfg, self.dataset)})
            lk = a.link("source", raw, ("fetch", f_path, f_rec), consumers)
            lk["made_by"] = self.add_step("fetch", f_path, f_rec,
                                          config_now=None if now is None or f_rec is None else (f_rec.get("spec"), now))
            man = (a.manifest(raw) if raw.is_dir()
                   else {"path": show(self.root, raw / ".fetched.json"), "status": MISSING})
            lk["manifest"] = man
            if man["status"] != OK:
                parts = [f"{len(man[k])} {k}" for k in ("mismatched", "missing", "extra") if man.get(k)]
                lk["problems"].append(f"manifest {man['path']}: " + (", ".join(parts) or "absent or unreadable"))
                if man["status"] == MISMATCH or lk["status"] == OK:
                    lk["status"] = man["status"]
            data.append(lk)
        return data

    # the verdict --------------------------------------------------------------------------
    def verdict(self, t_link: dict, runs: list[dict], data: list[dict], cell: dict, metric: str | None) -> dict:
        root = self.root
        all_links = [t_link, *[lk for r in runs for lk in r["links"]], *data]
        statuses = {lk["status"] for lk in all_links} | {cell["status"]}
        status = MISMATCH if MISMATCH in statuses else (MISSING if MISSING in statuses else OK)
        stale = [{"step": k, "stage": s["stage"], **st} for k, s in self.steps.items() for st in s["stale"]]
        return {
            "table": show(root, self.table_path), "root": str(root),
            "config": "config/config.yaml as it is now" + "".join(
                f" + --configfile {f}" for f in self.configfiles) + "".join(f" + --config {o}" for o in self.overrides)
            + ("" if self.overrides or self.configfiles else " (give the build's --config / --configfile overrides "
                                                             "to judge a build made with them)"),
            "config_error": self.a.cfg_error,
            "row": {"method": self.method, "label": self.spec_row.get("label")}, "ratio": self.ratio,
            "metric": metric, "seeds": self.seeds, "cell": cell, "chain": [t_link], "runs": runs, "data": data,
            "steps": self.steps, "stale": stale, "status": status,
            "counts": {s: sum(lk["status"] == s for lk in all_links) for s in (OK, MISMATCH, MISSING)},
        }


def _summary(metrics: Path) -> dict:
    """A run's summary metrics from its ``metrics.csv`` ({} when absent, ``error`` when unreadable)."""
    from semiseg.metrics.csv_io import METRIC_NAMES, read_metrics_csv
    from semiseg.metrics.summary import summarise

    if not metrics.is_file():
        return {}
    try:
        return {k: v for k, v in summarise(read_metrics_csv(metrics)).items() if k in METRIC_NAMES}
    except ValueError as exc:
        return {"error": str(exc)}


# the cell -----------------------------------------------------------------------------
def _cell(label: str, md_rows: list[dict], runs: list[dict], ratio: int, metric: str | None) -> dict:
    """The cell as shown beside the cell recomputed from the runs' summaries, metric by metric."""
    from semiseg.reporting.tables import _METRICS  # (summary key, display factor), column order
    from semiseg.reporting.tables import COLUMNS, format_cell

    md = [r for r in md_rows if r["name"] == label and r["ratio"] is not None and int(r["ratio"]) == ratio]
    cell = {"row_label": label, "found": bool(md), "metrics": {}, "status": OK}
    columns = dict(zip([k for k, _ in _METRICS], COLUMNS[3:]))
    for key, factor in _METRICS:
        if metric is not None and key != metric:
            continue
        if md and columns[key] not in md[0]["cells"]:  # a table whose `columns` leave this metric out
            continue
        values = [r["summary"][key] * factor for r in runs if key in r["summary"]]
        recomputed = format_cell(values)
        shown_full = md[0]["cells"][columns[key]] if md else None
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
    return cell


def _reader_params(source: dict) -> dict:
    """The params the preprocess rule gives a source's reader (``dataset_reader_params`` in
    common.smk): the source's own where its layout reads them, else none."""
    layout = LAYOUTS.get(source.get("layout"))
    return source.get("params", {}) if layout is not None and layout.reader_params else {}
