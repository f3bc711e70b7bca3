"""`semiseg audit`: trace one table cell back to the fetched source, and check every link.

A cell of ``results/tables/<name>.md`` (a row, by method name or label, and a labeled ratio)
was made by this chain of jobs, each of which wrote a provenance record beside its outputs
(:mod:`semiseg.provenance`)::

    table ← metrics.csv ← predictions/ ← model.pt + config.json ← split ← store.h5 + dataset.json ← raw/
    (table)  (evaluate)     (infer)         (train, one per seed)   (split)  (preprocess)            (fetch)

:func:`audit` follows the records (each says which paths it read), and for every file on the
way recomputes its sha256 now (:func:`semiseg.provenance.path_digest`) and compares it with
what its producer's record says it wrote and with what each consumer's record says it read:

- ``ok``: the file exists and every record that names it holds today's sha256;
- ``MISMATCH``: it exists but differs from at least one record (edited, replaced, tampered);
- ``missing``: the file is gone, or the record that should have written it is absent or does
  not list it.

The fetched source is also checked file by file against its ``.fetched.json`` manifest, and the
cell's value is recomputed from the runs' ``metrics.csv`` files and compared with the text the
table shows.

Separately, each record is checked for staleness against the checkout and config *as they are
now*: ``stale: code changed`` where the stage's code fingerprint
(:func:`semiseg.fingerprint.code_fingerprint`, a byte-level hash) differs from the recorded one,
``stale: config changed`` where the settings the job ran with differ from what
``config/config.yaml`` and the catalogues resolve to now. ``--config`` overrides given to the
original ``snakemake`` call are not recorded, so a run built with overrides reads as stale on
config. Stale is not a failure: the files are still what their records say; Snakemake would
rebuild them.

Exit status of the command line: 0 when every link and the cell are ``ok`` (stale or not),
1 when any link is ``MISMATCH`` or ``missing`` or the recomputed cell differs from the table,
2 for a usage error (unknown table, row or ratio). See ``docs/provenance.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from semiseg.fingerprint import table_fingerprint
from semiseg.io import sha256_file
from semiseg.provenance import path_digest, record_path

__all__ = ["audit", "format_audit", "table_fingerprint", "add_arguments", "run_cli", "main",
           "OK", "MISMATCH", "MISSING"]

OK, MISMATCH, MISSING = "ok", "MISMATCH", "missing"

# Files Snakemake itself drops into directory() outputs after the job's record was written; a
# digest taken by a later job includes them, the producer's does not (see _Auditor.matches).
_SNAKEMAKE_MARKERS = frozenset({".snakemake_timestamp"})


# ----------------------------------------------------------------------------- helpers
def _abs(root: Path, path: str | os.PathLike) -> Path:
    p = Path(path)
    return Path(os.path.normpath(p if p.is_absolute() else root / p))


def _show(root: Path, path: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _diff(recorded, now, prefix="") -> list[str]:
    """Dotted keys where two JSON-like values differ, e.g. ``["method.params.consistency"]``."""
    if isinstance(recorded, dict) and isinstance(now, dict):
        out = []
        for k in sorted(set(recorded) | set(now), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in recorded or k not in now:
                out.append(key)
            else:
                out.extend(_diff(recorded[k], now[k], key))
        return out
    return [] if recorded == now else [prefix or "(value)"]


# ----------------------------------------------------------------------------- the table file
def _split_row(line: str) -> list[str]:
    """The cells of a markdown table row, undoing tables._escape (``\\|`` and ``\\\\``)."""
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
    for line in text.splitlines():
        if not line.startswith("| "):
            continue
        cells = _split_row(line)
        if len(cells) != len(COLUMNS) or cells[0] == COLUMNS[0] or set(cells[1]) <= set(":-"):
            continue
        name = re.sub(r" \(\d+/\d+ seeds\)$", "", cells[0])
        m = re.search(r"\((\d+(?:\.\d+)?)%\)", cells[1])
        rows.append({"name": name, "ratio": float(m.group(1)) if m else None,
                     "cells": dict(zip(COLUMNS, cells))})
    fp = re.search(r"^- Code fingerprint: (\S+)\s*$", text, re.MULTILINE)
    return rows, fp.group(1) if fp else None


# ----------------------------------------------------------------------------- the auditor
class _Auditor:
    """One audit: caches digests and records, and collects the links."""

    def __init__(self, root: Path):
        self.root = root
        self._digests: dict[Path, dict] = {}
        self._file_shas: dict[Path, str] = {}
        self._records: dict[Path, dict | None] = {}
        self.cfg = None
        self.cfg_error = None
        try:
            from semiseg.config import load_config

            self.cfg = load_config(root=root)
        except Exception as exc:  # noqa: BLE001 - a broken config makes config staleness unknown, nothing more
            self.cfg_error = str(exc)

    # digests and records ---------------------------------------------------
    def digest(self, path: Path) -> dict:
        """path_digest of `path` now (computed once per audit)."""
        if path not in self._digests:
            self._digests[path] = path_digest(path)
        return self._digests[path]

    def file_sha256(self, path: Path) -> str:
        if path not in self._file_shas:
            self._file_shas[path] = sha256_file(path)
        return self._file_shas[path]

    def matches(self, path: Path, recorded: str | None) -> bool:
        """Whether `recorded` is the sha256 of `path` now.

        A directory output gets Snakemake's ``.snakemake_timestamp`` after its producer wrote
        its record, so a digest recorded by the producer leaves it out and one recorded by a
        later reader includes it: for a directory, the digest without Snakemake's marker files
        (path_digest's formula otherwise) is accepted too.
        """
        now = self.digest(path)
        if recorded is None or now["sha256"] is None:
            return False
        if recorded == now["sha256"]:
            return True
        if now["kind"] != "dir":
            return False
        if "sha256_without_markers" not in now:
            h = hashlib.sha256()
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                if "provenance" in f.name or f.name in _SNAKEMAKE_MARKERS:
                    continue
                h.update(f"{f.relative_to(path).as_posix()}\0{self.file_sha256(f)}\n".encode())
            now["sha256_without_markers"] = h.hexdigest()
        return recorded == now["sha256_without_markers"]

    def record(self, stage: str, primary: Path) -> tuple[Path, dict | None]:
        path = record_path(stage, primary)
        if path not in self._records:
            self._records[path] = _read_json(path) if path.exists() else None
        return path, self._records[path]

    def _entry(self, record: dict | None, role: str, path: Path) -> dict | None:
        for e in (record or {}).get(role, []):
            if _abs(self.root, e["path"]) == path:
                return e
        return None

    def arg_path(self, record: dict | None, key: str, fallback: Path) -> Path:
        value = (record or {}).get("args", {}).get(key)
        return _abs(self.root, value) if value else fallback

    # one link --------------------------------------------------------------
    def link(self, name: str, path: Path, producer: tuple[str, Path, dict | None],
             consumers: list[tuple[str, Path, dict | None]]) -> dict:
        now = self.digest(path)
        checks, problems = [], []
        stage, rec_path, rec = producer
        entry = self._entry(rec, "outputs", path)
        if rec is None:
            checks.append({"stage": stage, "record": _show(self.root, rec_path), "role": "wrote",
                           "sha256": None, "status": MISSING})
            problems.append(f"no {stage} record at {_show(self.root, rec_path)}")
        elif entry is None:
            checks.append({"stage": stage, "record": _show(self.root, rec_path), "role": "wrote",
                           "sha256": None, "status": MISSING})
            problems.append(f"the {stage} record does not list it among its outputs")
        else:
            checks.append(self._check(stage, rec_path, "wrote", entry, path, problems))
        for c_stage, c_path, c_rec in consumers:
            e = self._entry(c_rec, "inputs", path)
            if c_rec is None:
                continue  # reported where that record is the producer
            if e is None:
                checks.append({"stage": c_stage, "record": _show(self.root, c_path), "role": "read",
                               "sha256": None, "status": MISSING})
                problems.append(f"the {c_stage} record ({_show(self.root, c_path)}) does not list it among its inputs")
            else:
                checks.append(self._check(c_stage, c_path, "read", e, path, problems))
        if now["kind"] == "missing":
            status = MISSING
            problems.insert(0, "not found")
        elif any(c["status"] == MISMATCH for c in checks):
            status = MISMATCH
        elif any(c["status"] == MISSING for c in checks):
            status = MISSING
        else:
            status = OK
        out = {"name": name, "path": _show(self.root, path), "kind": now["kind"], "sha256": now["sha256"],
               "status": status, "checks": checks, "problems": problems}
        if now["kind"] == "dir":
            out["files"] = now["files"]
        return out

    def _check(self, stage, rec_path, role, entry, path, problems) -> dict:
        now = self.digest(path)
        ok = self.matches(path, entry.get("sha256"))
        if not ok and now["sha256"] is not None:
            verb = "wrote" if role == "wrote" else "read"
            problems.append(f"sha256 now {now['sha256'][:12]}…, the {stage} record {verb} {str(entry.get('sha256'))[:12]}…")
        return {"stage": stage, "record": _show(self.root, rec_path), "role": role, "sha256": entry.get("sha256"),
                "status": OK if ok else (MISSING if now["sha256"] is None else MISMATCH)}

    # one record's summary and staleness ------------------------------------------
    def step(self, stage: str, rec_path: Path, rec: dict | None, *, config_now=None,
             algorithm: str | None = None) -> dict:
        """What the record says about the job, and whether code or config changed since."""
        from semiseg.fingerprint import code_fingerprint

        out = {"stage": stage, "record": _show(self.root, rec_path), "present": rec is not None, "stale": []}
        if rec is None:
            return out
        code = rec.get("code") or {}
        env = rec.get("environment") or {}
        try:
            now = code_fingerprint(stage, algorithm)
        except (ValueError, FileNotFoundError) as exc:
            now = None
            out["stale"].append({"reason": "stale: code changed", "detail": str(exc)})
        out.update({
            "code": {"fingerprint": code.get("fingerprint"), "fingerprint_now": now,
                     "commit": code.get("commit"), "dirty": code.get("dirty")},
            "environment": env, "device": env.get("device"), "host": rec.get("host"),
            "slurm_job_id": rec.get("slurm_job_id"), "started": rec.get("started"),
            "ended": rec.get("ended"), "wall_seconds": rec.get("wall_seconds"), "args": rec.get("args"),
            "rule": rec.get("rule"), "wildcards": rec.get("wildcards"),
        })
        if now is not None and code.get("fingerprint") != now:
            out["stale"].append({"reason": "stale: code changed",
                                 "detail": f"code fingerprint {code.get('fingerprint')} recorded, {now} now"})
        if stage == "train":
            out["spec"] = rec.get("spec")
        if config_now is not None:
            recorded, current = config_now
            if isinstance(current, Exception):
                out["stale"].append({"reason": "stale: config changed", "detail": str(current)})
            elif recorded != current:
                keys = _diff(recorded, current)
                out["stale"].append({"reason": "stale: config changed",
                                     "detail": "differs from config/config.yaml now at " + ", ".join(keys[:6])
                                     + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")})
        return out

    def config_now(self, fn):
        """(None if the config could not be loaded) or fn(cfg), an exception becoming the value."""
        if self.cfg is None:
            return None
        try:
            return fn(self.cfg)
        except (KeyError, ValueError) as exc:
            return RuntimeError(f"no longer in the config: {exc}")

    # the fetched source's manifest -----------------------------------------------
    def manifest(self, raw: Path) -> dict:
        from semiseg.data.fetch import MANIFEST

        path = raw / MANIFEST
        man = _read_json(path)
        out = {"path": _show(self.root, path), "status": OK, "files": 0, "mismatched": [], "missing": [], "extra": []}
        if man is None or not isinstance(man.get("files"), dict):
            out["status"] = MISSING
            return out
        files = man["files"]
        out["files"] = len(files)
        for rel, info in files.items():
            f = raw / rel
            if not f.is_file():
                out["missing"].append(rel)
            elif self.file_sha256(f) != info.get("sha256"):
                out["mismatched"].append(rel)
        for f in sorted(p for p in raw.rglob("*") if p.is_file()):
            rel = f.relative_to(raw).as_posix()
            if (rel not in files and f.name != MANIFEST and "provenance" not in f.name
                    and f.name not in _SNAKEMAKE_MARKERS and not f.name.endswith(".partial")):
                out["extra"].append(rel)
        if out["mismatched"] or out["extra"]:
            out["status"] = MISMATCH
        elif out["missing"]:
            out["status"] = MISSING
        return out


# ----------------------------------------------------------------------------- audit
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
    from semiseg.config import ConfigError, find_root, run_spec
    from semiseg.metrics.segmentation import METRIC_NAMES, read_metrics_csv, summarise
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
    a = _Auditor(root)
    name = table_path.stem

    # the table and its record -----------------------------------------------------
    t_rec_path, t_rec = a.record("table", table_path)
    spec = (t_rec or {}).get("spec") or {}
    table_spec = spec.get("table")
    if table_spec is None:
        if a.cfg is None or name not in a.cfg["tables"]:
            raise ValueError(f"{table_path}: no table record ({_show(root, t_rec_path)}) and no table {name!r} "
                             "in the config; cannot tell which runs made it")
        table_spec = a.cfg["tables"][name]
    spec_row = _find_row(table_spec, row, ratio)
    method, dataset, seeds = spec_row["method"], table_spec["dataset"], [int(s) for s in table_spec["seeds"]]

    metrics_paths: dict[int, Path] = {}
    for m in (t_rec or {}).get("args", {}).get("metrics", []):
        d, meth, r, s = parse_run_path(m)
        if (d, meth, r) == (dataset, method, ratio):
            metrics_paths[s] = _abs(root, m)
    results = Path(a.cfg["settings"]["results"]) if a.cfg else Path("results")
    for s in seeds:
        metrics_paths.setdefault(s, _abs(root, results / "runs" / dataset / method / str(ratio) / f"seed{s}" / "metrics.csv"))

    steps: dict[str, dict] = {}

    def add_step(stage, rec_path, rec, **kw) -> str:
        key = _show(root, rec_path)
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

        default_store = root / results / "preprocessed" / dataset / "store.h5"
        default_split = root / results / "splits" / dataset / f"{ratio}.json"
        read_by(split_readers, a.arg_path(tr_rec, "split", a.arg_path(i_rec, "split", default_split)), train, infer)
        read_by(store_readers, a.arg_path(tr_rec, "store", a.arg_path(i_rec, "store", default_store)),
                train, infer, evaluate)

        value = {}
        if metrics.is_file():
            try:
                value = {k: v for k, v in summarise(read_metrics_csv(metrics)).items() if k in METRIC_NAMES}
            except ValueError as exc:
                value = {"error": str(exc)}
        runs.append({"seed": seed, "run_dir": _show(root, run_dir), "summary": value, "links": links})

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
        desc = a.arg_path(s_rec, "descriptor", split.parents[2] / "preprocessed" / dataset / "dataset.json")
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
        read_by(raw_readers, a.arg_path(p_rec, "raw", store.parents[2] / "raw" / dataset), ("preprocess", p_path, p_rec))

    for raw, consumers in raw_readers.items():
        f_path, f_rec = a.record("fetch", raw)
        now = dataset_now(lambda ds: {"source": {**ds["source"], **a.cfg["settings"]["sources"].get(dataset, {})}})
        lk = a.link("source", raw, ("fetch", f_path, f_rec), consumers)
        lk["made_by"] = add_step("fetch", f_path, f_rec,
                                 config_now=None if now is None or f_rec is None else (f_rec.get("spec"), now))
        man = a.manifest(raw) if raw.is_dir() else {"path": _show(root, raw / ".fetched.json"), "status": MISSING}
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
        shown_full = md[0]["cells"][columns[key]] if md else None
        shown = re.sub(r" \(paper [^)]*\)$", "", shown_full) if shown_full is not None else None
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
        "table": _show(root, table_path), "root": str(root),
        "config": "config/config.yaml (as it is now; --config overrides of the original run are not recorded)",
        "config_error": a.cfg_error,
        "row": {"method": method, "label": spec_row.get("label")}, "ratio": ratio, "metric": metric,
        "seeds": seeds, "cell": cell, "chain": [t_link], "runs": runs, "data": data, "steps": steps,
        "stale": stale, "status": status,
        "counts": {s: sum(lk["status"] == s for lk in all_links) for s in (OK, MISMATCH, MISSING)},
    }


# ----------------------------------------------------------------------------- text
def _mark(status: str) -> str:
    return "✓" if status == OK else "✗"


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def _step_lines(step: dict, indent: str) -> list[str]:
    if not step["present"]:
        return [f"{indent}{step['stage']} record {step['record']}: MISSING"]
    code = step["code"]
    commit = (code.get("commit") or "?")[:10] + (" (uncommitted changes)" if code.get("dirty") else "")
    env = step.get("environment") or {}
    versions = ", ".join(f"{k} {env[k]}" for k in ("python", "torch", "cuda", "numpy", "snakemake") if env.get(k))
    fp_state = "current" if code.get("fingerprint") == code.get("fingerprint_now") else f"now {code.get('fingerprint_now')}"
    job = ""
    if step.get("rule"):
        wildcards = ", ".join(f"{k}={v}" for k, v in (step.get("wildcards") or {}).items())
        job = f" (rule {step['rule']}{': ' + wildcards if wildcards else ''})"
    lines = [(f"{indent}{step['stage']} record {step['record']}{job}: {step.get('started')}, {step.get('wall_seconds')} s"
              f" on {step.get('host')} ({step.get('device')}), SLURM job {step.get('slurm_job_id') or '-'}"),
             f"{indent}  code {code.get('fingerprint')} ({fp_state}), commit {commit}; {versions}"]
    if step["stage"] == "train" and step.get("spec"):
        s = step["spec"]
        sched = s.get("schedule", {})
        lines.append(f"{indent}  spec: {s['method']['name']} ({s['method']['algorithm']}, {s['method']['network']}) "
                     f"params {json.dumps(s['method']['params'], sort_keys=True)}; schedule {sched.get('name')} "
                     f"{sched.get('iterations')} it; seed {s.get('seed')}; device {s.get('device')}")
    for st in step["stale"]:
        lines.append(f"{indent}  ⚠ {st['reason']}: {st['detail']}")
    return lines


def _link_lines(link: dict, indent: str, steps: dict, seen: set) -> list[str]:
    path = link["path"] + ("/" if link["kind"] == "dir" else "")
    checks = "  ".join(f"{c['role']} by {c['stage']} {_mark(c['status']) if c['status'] == OK else c['status']}"
                       for c in link["checks"])
    size = f" ({link['files']} files)" if link["kind"] == "dir" else ""
    lines = [f"{indent}{_mark(link['status'])} {link['name']:<11} {path}{size}  sha256 {_short(link['sha256'])}  "
             f"{checks}" + ("" if link["status"] == OK else f"  → {link['status']}")]
    for p in link["problems"]:
        lines.append(f"{indent}    ! {p}")
    if "manifest" in link:
        man = link["manifest"]
        lines.append(f"{indent}    manifest {man['path']}: {man.get('files', 0)} files, "
                     + ("all match" if man["status"] == OK else man["status"]))
    if "fingerprint" in link:
        fp = link["fingerprint"]
        state = "current" if fp["now"] and fp["now"] == fp["footnote"] else f"now {fp['now']}"
        lines.append(f"{indent}    footnote fingerprint {fp['footnote']} ({state})")
    key = link.get("made_by")
    if key and key not in seen:
        seen.add(key)
        lines += _step_lines(steps[key], indent + "    ")
    return lines


def format_audit(result: dict) -> str:
    """The audit as indented text: one line per link with ✓/✗, each record's details under it."""
    row = result["row"]
    name = row["method"] + (f" ({row['label']})" if row.get("label") else "")
    out = [f"audit {result['table']}: row {name}, ratio {result['ratio']}%"
           + (f", metric {result['metric']}" if result["metric"] else ""),
           f"workflow {result['root']}; staleness judged against {result['config']}"]
    if result.get("config_error"):
        out.append(f"  (config not loadable, config staleness unknown: {result['config_error'].splitlines()[0]})")
    cell = result["cell"]
    out.append("")
    if not cell["found"]:
        out.append(f"✗ cell: no row {cell['row_label']!r} with ratio {result['ratio']}% in the table text")
    for m in cell["metrics"].values():
        per_seed = ", ".join(f"seed {s}: {v:.2f}" if isinstance(v, float) else f"seed {s}: -"
                             for s, v in m["per_seed"].items())
        out.append(f"{_mark(m['status'])} cell {m['column']}: table shows {m['shown']}, "
                   f"recomputed {m['recomputed']} ({per_seed})")
    out.append("")
    seen: set = set()
    steps = result["steps"]
    for link in result["chain"]:
        out += _link_lines(link, "", steps, seen)
    for run in result["runs"]:
        out.append(f"  seed {run['seed']}  {run['run_dir']}")
        for link in run["links"]:
            out += _link_lines(link, "  ", steps, seen)
    out.append("  data (shared by the seeds)")
    for link in result["data"]:
        out += _link_lines(link, "  ", steps, seen)
    out.append("")
    c = result["counts"]
    out.append(f"status: {result['status']} ({c[OK]} links ok, {c[MISMATCH]} mismatched, {c[MISSING]} missing; "
               f"cell {cell['status']})")
    if result["stale"]:
        out.append("stale (the current code/config would rebuild these):")
        for st in result["stale"]:
            out.append(f"  {st['step']}: {st['reason']} ({st['detail']})")
    else:
        out.append("stale: none (code fingerprints and config match every record)")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", help="a built table, results/tables/<name>.md")
    p.add_argument("--row", required=True, help="the row's method name or its label")
    p.add_argument("--ratio", type=int, required=True, help="labeled percent, e.g. 10")
    p.add_argument("--metric", default=None, choices=("dice", "jaccard", "hd95", "asd"),
                   help="recompute this column of the cell (default: all four)")
    p.add_argument("--format", default="text", choices=("text", "json"))
    p.add_argument("--root", default=None, help="workflow directory (default: found from the table's location)")


def run_cli(args) -> int:
    """Print the audit; 0 when every link and the cell are ok, 1 otherwise."""
    result = audit(args.table, row=args.row, ratio=args.ratio, metric=args.metric, root=args.root)
    if args.format == "json":
        print(json.dumps(result, indent=1, default=str))
    else:
        print(format_audit(result), end="")
    return 0 if result["status"] == OK else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m semiseg.reporting.audit", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run_cli(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"semiseg audit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
