"""Wall time of the default target (results/tables/demo.md) from scratch, and of a no-op re-run.

Runs in a temporary copy of the workflow (Snakefile, workflow/, config/, profiles/: the
workflow profile applies as it does to `snakemake --cores 2` in the checkout), so the checkout's
results/ is untouched. Prints a small table; the numbers depend on the machine (say which).

    python benchmarks/demo_time.py [--cores 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(root: Path, cores: int) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(cores), "--directory", str(root),
                           "--snakefile", str(root / "Snakefile")], capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"snakemake failed:\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="build here and keep the results")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="semiseg-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "config", "profiles"):
        src = REPO / name
        (shutil.copytree(src, root / name, dirs_exist_ok=True) if src.is_dir() else shutil.copy(src, root / name))
    full, _ = run(root, args.cores)
    noop, out = run(root, args.cores)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, --cores {args.cores}")
    print("| target | wall time (s) |")
    print("| --- | ---: |")
    print(f"| results/tables/demo.md from scratch | {full:.1f} |")
    print(f"| no-op re-run ({'nothing to be done' if 'Nothing to be done' in out else 'JOBS RAN'}) | {noop:.1f} |")
    print()
    print((root / "results" / "tables" / "demo.md").read_text())
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
