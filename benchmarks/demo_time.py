"""Wall time of the default target (results/tables/demo.md) from scratch, and of a no-op re-run.

Runs in a temporary copy of the workflow (Snakefile, workflow/, config/, profiles/: the
workflow profile applies as it does to `snakemake --cores 2` in the checkout), so the checkout's
results/ is untouched. Prints a small table, the machine's load average before and after (the
numbers depend on the machine and on what else runs on it: say which), the demo table, and
whether it meets its two goals: the fully labeled row at least 80 % Dice, and at the lowest
labeled ratio a semi-supervised row ahead of the labeled-only one by more than the spread
(sample std) over the seeds of either.

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


def dice_by_row(root: Path) -> dict[tuple[str, int], list[float]]:
    """(method, ratio) -> the runs' Dice in %, one per seed, from the runs' metrics.csv."""
    sys.path.insert(0, str(REPO / "src"))
    from semiseg.metrics.csv_io import read_metrics_csv
    from semiseg.metrics.summary import summarise

    out: dict[tuple[str, int], list[float]] = {}
    for metrics in sorted((root / "results" / "runs").glob("*/*/*/seed*/metrics.csv")):
        method, ratio = metrics.parts[-4], int(metrics.parts[-3])
        out.setdefault((method, ratio), []).append(100 * summarise(read_metrics_csv(metrics))["dice"])
    return out


def goals(rows: dict[tuple[str, int], list[float]]) -> list[str]:
    """The demo's two goals, each as a line saying whether it is met and by what numbers."""
    import statistics

    def stats(v):
        return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else float("nan"))

    lines = []
    full = [v for (m, r), v in rows.items() if m == "supervised" and r == 100]
    if full:
        mean, _ = stats(full[0])
        lines.append(f"fully labeled U-Net: {mean:.2f} % Dice ({'meets' if mean >= 80 else 'MISSES'} >= 80 %)")
    low = min((r for _, r in rows), default=None)
    base = rows.get(("supervised", low))
    for (m, r), v in sorted(rows.items()):
        if r != low or m == "supervised" or base is None:
            continue
        (mb, sb), (ms, ss) = stats(base), stats(v)
        ok = ms - mb > max(sb, ss)
        lines.append(f"{m} at {low} %: {ms:.2f} ± {ss:.2f} vs labeled-only {mb:.2f} ± {sb:.2f}: ahead by "
                     f"{ms - mb:.2f} ({'more' if ok else 'NOT more'} than the larger spread, {max(sb, ss):.2f})")
    return lines


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
    load_before = os.getloadavg()
    full, _ = run(root, args.cores)
    load_after = os.getloadavg()
    noop, out = run(root, args.cores)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, --cores {args.cores}; "
          f"load average (1, 5, 15 min) before {', '.join(f'{x:.1f}' for x in load_before)}, "
          f"after {', '.join(f'{x:.1f}' for x in load_after)}")
    print("| target | wall time (s) |")
    print("| --- | ---: |")
    print(f"| results/tables/demo.md from scratch | {full:.1f} |")
    print(f"| no-op re-run ({'nothing to be done' if 'Nothing to be done' in out else 'JOBS RAN'}) | {noop:.1f} |")
    print()
    print((root / "results" / "tables" / "demo.md").read_text())
    for line in goals(dice_by_row(root)):
        print(line)
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
