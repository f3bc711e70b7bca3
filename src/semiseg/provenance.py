"""Provenance records: what made each output, written beside it by every stage.

After a stage succeeds, the CLI writes ``<record>`` (a JSON file named after the stage, next to
the stage's outputs) holding:

- ``stage``, the workflow ``rule`` and its ``wildcards``, and the stage's own arguments,
- ``inputs`` and ``outputs``: path, kind (file/dir) and sha256 (a directory's sha256 is taken
  over the sorted list of its files' relative paths and sha256s),
- ``spec``: the resolved configuration the stage ran with, where it has one,
- ``code``: the stage's code fingerprint (:mod:`semiseg.fingerprint`), the git commit of the
  checkout and whether it had uncommitted changes,
- ``environment``: python, torch, CUDA, snakemake, medpy, SimpleITK, numpy, h5py versions,
- ``device``: the CPU model or GPU name, ``host``, the SLURM job id when there is one,
- ``started``, ``ended``, ``wall_seconds``.

``semiseg audit`` follows these records from a table back to the fetched source.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

from semiseg.io import atomic_write, sha256_file

__all__ = ["RECORD_NAMES", "record_path", "path_digest", "write_record", "read_record", "environment", "git_state"]

PACKAGE = Path(__file__).resolve().parent

# Where each stage's record lives, given its primary output.
RECORD_NAMES = {
    "fetch": lambda out: Path(out) / ".provenance.json",
    "preprocess": lambda out: Path(out).parent / "provenance.json",
    "split": lambda out: Path(out).with_suffix(".provenance.json"),
    "train": lambda out: Path(out) / "provenance.train.json",
    "infer": lambda out: Path(out).parent / "provenance.infer.json",
    "evaluate": lambda out: Path(out).parent / "provenance.evaluate.json",
    "evaluate-external": lambda out: Path(out).parent / "provenance.evaluate-external.json",
    "table": lambda out: Path(out).with_suffix(".provenance.json"),
    "figure": lambda out: Path(out).with_suffix(".provenance.json"),
    "report": lambda out: Path(out).with_suffix(".provenance.json"),
    "oracle-train": lambda out: Path(out) / "provenance.oracle-train.json",
    "oracle-evaluate": lambda out: Path(out).parent / "provenance.oracle-evaluate.json",
}


def record_path(stage: str, primary_output: Path) -> Path:
    return RECORD_NAMES[stage](primary_output)


def path_digest(path: Path) -> dict:
    """``{"path", "kind", "sha256"}`` of a file, or of a directory's files (provenance files excluded)."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        n = 0
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            # records are written after the digest; Snakemake marks directory outputs with an
            # empty .snakemake_timestamp once the job ends, which must not change the digest
            if "provenance" in f.name or f.name == ".snakemake_timestamp":
                continue
            h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
            n += 1
        return {"path": str(path), "kind": "dir", "files": n, "sha256": h.hexdigest()}
    if path.is_file():
        return {"path": str(path), "kind": "file", "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return {"path": str(path), "kind": "missing", "sha256": None}


@lru_cache(maxsize=1)
def git_state() -> dict:
    """The commit of the checkout the package runs from, and whether any tracked file of that
    checkout (package, workflow, config, profiles) had uncommitted changes."""
    def git(*args):
        return subprocess.run(["git", "-C", str(PACKAGE), *args], capture_output=True, text=True, timeout=20)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def environment() -> dict:
    env = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("semiseg", "torch", "numpy", "snakemake", "medpy", "SimpleITK", "h5py", "scipy", "pandas"):
        env[dist] = _version(dist)
    cuda = gpu = None
    if "torch" in sys.modules:
        import torch

        cuda = torch.version.cuda
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    env["cuda"] = cuda
    env["device"] = gpu or _cpu_model()
    return env


def write_record(stage: str, *, primary_output: Path, inputs: list[Path], outputs: list[Path],
                 args: dict, started: float, spec: dict | None = None, code: str | None = None,
                 rule: str | None = None, wildcards: dict | None = None) -> Path:
    """Write the stage's record next to its outputs (atomically); return its path.

    ``rule`` and ``wildcards`` are the workflow job's (None when the stage ran outside Snakemake).
    """
    ended = time.time()
    rec = {
        "stage": stage,
        "rule": rule,
        "wildcards": wildcards,
        "args": args,
        "inputs": [path_digest(p) for p in inputs],
        "outputs": [path_digest(p) for p in outputs],
        "spec": spec,
        "code": {"fingerprint": code, **git_state()},
        "environment": environment(),
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ended)),
        "wall_seconds": round(ended - started, 3),
    }
    path = record_path(stage, primary_output)
    atomic_write(path, json.dumps(rec, indent=1, default=str))
    return path


def read_record(stage: str, primary_output: Path) -> dict | None:
    path = record_path(stage, primary_output)
    if not path.exists():
        return None
    return json.loads(path.read_text())
