"""Scheduling overhead: the dry run of the full paper matrix, and a no-op re-run of a built workflow.

1. Full matrix: a copy of the workflow (Snakefile, workflow/, config/) whose config builds one
   table per dataset of the catalogue, each with every method of the catalogue at every ratio of
   that dataset and 3 seeds (0, 1, 2): every dataset × method × ratio × seed. ``snakemake -n``
   on it from scratch: the time to parse the config, validate it, resolve every job's spec and
   code fingerprint and build the DAG, and the number of jobs it plans.
2. No-op: the tests' tiny synthetic workflow (tests/conftest.py: dataset tiny2d, supervised vs
   Mean Teacher, one seed) built fully, then ``snakemake`` run again with nothing to do: what
   checking an up-to-date workflow costs.

Everything runs in temporary directories; the checkout's results/ is untouched. Not a test.

    python benchmarks/dryrun.py [--cores 2] [--repeat 3] [--skip-noop]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SEEDS = [0, 1, 2]


def snakemake(root: Path, *args: str, cores: int = 2) -> tuple[float, subprocess.CompletedProcess]:
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--directory", str(root),
           "--snakefile", str(root / "Snakefile"), *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return elapsed, proc


def planned_jobs(proc: subprocess.CompletedProcess) -> int:
    """The `total` of Snakemake's job stats (0 when there is nothing to be done)."""
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return 0
    m = re.search(r"^total\s+(\d+)\s*$", out, re.MULTILINE)
    if not m:
        sys.exit(f"no job count in snakemake's output:\n{out[-2000:]}")
    return int(m.group(1))


def matrix_workflow(root: Path) -> tuple[Path, int]:
    """A workflow copy whose tables are the full matrix; returns it and the number of runs."""
    sys.path.insert(0, str(REPO / "src"))
    from semiseg.config import load_config

    root.mkdir(parents=True)
    for name in ("Snakefile", "workflow", "config"):
        src = REPO / name
        shutil.copytree(src, root / name) if src.is_dir() else shutil.copy(src, root / name)
    cfg = load_config(root=root)
    tables, runs = {}, 0
    for dataset, ds in sorted(cfg["datasets"].items()):
        ratios = sorted(int(r) for r in ds["ratios"])
        tables[f"matrix_{dataset}"] = {
            "title": f"Every method on {dataset}", "dataset": dataset, "seeds": SEEDS,
            "rows": [{"method": m, "ratios": ratios} for m in sorted(cfg["methods"])]}
        runs += len(cfg["methods"]) * len(ratios) * len(SEEDS)
    tables_dir = root / cfg["settings"]["catalogues"]["tables"]
    (tables_dir / "matrix.yaml").write_text(yaml.safe_dump(tables, sort_keys=False))
    settings = yaml.safe_load((root / "config" / "config.yaml").read_text())
    settings["tables"] = list(tables)
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return root, runs


def tiny_workflow(root: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_workflow

    return make_workflow(root)


def spread(times: list[float]) -> str:
    if len(times) == 1:
        return f"{times[0]:.1f}"
    return f"{statistics.median(times):.1f} (min {min(times):.1f}, max {max(times):.1f}, n={len(times)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions of each measurement")
    ap.add_argument("--skip-noop", action="store_true", help="only the matrix dry run (no workflow is built)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="semiseg-dryrun-") as tmp:
        root, runs = matrix_workflow(Path(tmp) / "matrix")
        times, jobs = [], None
        for _ in range(args.repeat):
            elapsed, proc = snakemake(root, "--dry-run", cores=args.cores)
            times.append(elapsed)
            jobs = planned_jobs(proc)
        rows.append((f"dry run, full matrix from scratch ({runs} runs × train/infer/evaluate)", jobs, spread(times)))

        if not args.skip_noop:
            tiny = tiny_workflow(Path(tmp) / "tiny")
            build, proc = snakemake(tiny, cores=args.cores)
            rows.append(("tiny workflow, full build", planned_jobs_from_run(proc), f"{build:.1f}"))
            times = []
            for _ in range(args.repeat):
                elapsed, proc = snakemake(tiny, cores=args.cores)
                if "Nothing to be done" not in proc.stdout + proc.stderr:
                    sys.exit(f"the re-run of the tiny workflow ran jobs:\n{(proc.stdout + proc.stderr)[-3000:]}")
                times.append(elapsed)
            rows.append(("tiny workflow, no-op re-run", 0, spread(times)))
            times = []
            for _ in range(args.repeat):
                elapsed, proc = snakemake(tiny, "--dry-run", cores=args.cores)
                times.append(elapsed)
            rows.append(("tiny workflow, dry run when up to date", planned_jobs(proc), spread(times)))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, --cores {args.cores}")
    print("| measurement | jobs | wall time (s) |")
    print("| --- | ---: | ---: |")
    for what, n, t in rows:
        print(f"| {what} | {n} | {t} |")


def planned_jobs_from_run(proc: subprocess.CompletedProcess) -> int:
    m = re.search(r"(\d+) of (\d+) steps \(100%\) done", proc.stdout + proc.stderr)
    return int(m.group(2)) if m else -1


if __name__ == "__main__":
    main()
