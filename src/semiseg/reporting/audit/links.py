"""Checking one file of a cell's chain against the provenance records that name it, and one
record against the code and config as they are now (see :mod:`semiseg.reporting.audit`)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from semiseg.io import sha256_file
from semiseg.provenance import path_digest, record_path

__all__ = ["Auditor", "MISMATCH", "MISSING", "OK", "abs_path", "as_json", "build_config", "check_override", "config_diff", "read_json",
           "show"]

OK, MISMATCH, MISSING = "ok", "MISMATCH", "missing"

# Files Snakemake itself drops into directory() outputs after the job's record was written; a
# digest taken by a later job includes them, the producer's does not (see Auditor.matches).
_SNAKEMAKE_MARKERS = frozenset({".snakemake_timestamp"})


def abs_path(root: Path, path: str | os.PathLike) -> Path:
    p = Path(path)
    return Path(os.path.normpath(p if p.is_absolute() else root / p))


def show(root: Path, path: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def as_json(value):
    """``value`` as a JSON round trip gives it back: mapping keys become strings, tuples lists.

    A record holds its settings as JSON (``{"10": ...}``) while the config loaded now holds
    them as YAML gave them (``{10: ...}``); both sides go through this before they are compared.
    """
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def config_diff(recorded, now, prefix="") -> list[str]:
    """Dotted keys where two JSON-like values differ, e.g. ``["method.params.consistency"]``,
    compared as JSON holds them (:func:`as_json`: ``{10: x}`` and ``{"10": x}`` are equal)."""
    recorded, now = as_json(recorded), as_json(now)
    if isinstance(recorded, dict) and isinstance(now, dict):
        out = []
        for k in sorted(set(recorded) | set(now)):
            key = f"{prefix}.{k}" if prefix else k
            if k not in recorded or k not in now:
                out.append(key)
            else:
                out.extend(config_diff(recorded[k], now[k], key))
        return out
    return [] if recorded == now else [prefix or "(value)"]


def _merge(base: dict, update: dict) -> dict:
    """``update`` over ``base``, mappings merged key by key (Snakemake's ``update_config``)."""
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def check_override(item: str) -> tuple[str, str, str]:
    """``KEY=VALUE`` split at its first ``=``; ValueError for anything else."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--config {item!r}: not KEY=VALUE (e.g. schedule=smoke, seeds=[0])")
    return key, sep, text


def build_config(root: Path, overrides=(), configfiles=()) -> dict:
    """The config a ``snakemake`` call in ``root`` ran with: ``config/config.yaml``, then each
    ``--configfile`` merged over it, then each ``--config KEY=VALUE`` (VALUE read as YAML, as
    Snakemake reads it: ``seeds=[0]`` is a list of one integer).

    Raises:
        ValueError: an override that is not KEY=VALUE (:func:`check_override`).
    """
    import yaml

    from semiseg.schema import read_yaml

    config = read_yaml(root / "config" / "config.yaml")
    for f in configfiles:
        config = _merge(config, read_yaml(abs_path(root, f)))
    for item in overrides:
        key, _, text = check_override(item)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        config = _merge(config, {key: value})
    return config


class Auditor:
    """One audit: caches digests and records, and collects the links. The config now is
    ``config/config.yaml`` with the build's ``--configfile`` and ``--config`` overrides
    (:func:`build_config`)."""

    def __init__(self, root: Path, overrides=(), configfiles=()):
        self.root = root
        self._digests: dict[Path, dict] = {}
        self._file_shas: dict[Path, str] = {}
        self._records: dict[Path, dict | None] = {}
        self.cfg = None
        self.cfg_error = None
        try:
            from semiseg.config import load_config

            config = build_config(root, overrides, configfiles) if overrides or configfiles else None
            self.cfg = load_config(config, root=root)
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
            self._records[path] = read_json(path) if path.exists() else None
        return path, self._records[path]

    def _entry(self, record: dict | None, role: str, path: Path) -> dict | None:
        for e in (record or {}).get(role, []):
            if abs_path(self.root, e["path"]) == path:
                return e
        return None

    def arg_path(self, record: dict | None, key: str, fallback: Path) -> Path:
        value = (record or {}).get("args", {}).get(key)
        return abs_path(self.root, value) if value else fallback

    # one link --------------------------------------------------------------
    def link(self, name: str, path: Path, producer: tuple[str, Path, dict | None] | None,
             consumers: list[tuple[str, Path, dict | None]]) -> dict:
        """``path`` checked against the record of the stage that wrote it (``producer``; None for a
        file made outside the workflow, such as another tool's predictions) and of each that read it."""
        now = self.digest(path)
        checks, problems = [], []
        stage, rec_path, rec = producer or (None, None, None)
        entry = self._entry(rec, "outputs", path)
        if producer is None:
            pass
        elif rec is None:
            checks.append({"stage": stage, "record": show(self.root, rec_path), "role": "wrote",
                           "sha256": None, "status": MISSING})
            problems.append(f"no {stage} record at {show(self.root, rec_path)}")
        elif entry is None:
            checks.append({"stage": stage, "record": show(self.root, rec_path), "role": "wrote",
                           "sha256": None, "status": MISSING})
            problems.append(f"the {stage} record does not list it among its outputs")
        else:
            checks.append(self._check(stage, rec_path, "wrote", entry, path, problems))
        for c_stage, c_path, c_rec in consumers:
            e = self._entry(c_rec, "inputs", path)
            if c_rec is None:
                continue  # reported where that record is the producer
            if e is None:
                checks.append({"stage": c_stage, "record": show(self.root, c_path), "role": "read",
                               "sha256": None, "status": MISSING})
                problems.append(f"the {c_stage} record ({show(self.root, c_path)}) does not list it among its inputs")
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
        out = {"name": name, "path": show(self.root, path), "kind": now["kind"], "sha256": now["sha256"],
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
        return {"stage": stage, "record": show(self.root, rec_path), "role": role, "sha256": entry.get("sha256"),
                "status": OK if ok else (MISSING if now["sha256"] is None else MISMATCH)}

    # one record's summary and staleness ------------------------------------------
    def step(self, stage: str, rec_path: Path, rec: dict | None, *, config_now=None,
             algorithm: str | None = None) -> dict:
        """What the record says about the job, and whether code or config changed since."""
        from semiseg.fingerprint import code_fingerprint

        out = {"stage": stage, "record": show(self.root, rec_path), "present": rec is not None, "stale": []}
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
            elif keys := config_diff(recorded, current):
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
        man = read_json(path)
        out = {"path": show(self.root, path), "status": OK, "files": 0, "mismatched": [], "missing": [], "extra": []}
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
