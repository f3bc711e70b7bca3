"""Wall time of the default target (results/tables/demo.md) from scratch, and of a no-op re-run.

Runs in a temporary copy of the workflow (Snakefile, workflow/, config/, profiles/: the
workflow profile applies as it does to `snakemake --cores 2` in the checkout), so the checkout's
results/ is untouched. Prints a small table, the machine's load average before and after (the
numbers depend on the machine and on what else runs on it: say which), the demo table, and
whether it meets its two goals: the fully labeled row at least 80 % Dice, and at the lowest
labeled ratio a semi-supervised row that recovers at least a third of the gap between the
labeled-only row and the upper bound, with its paired difference to labeled-only (by seed and
test case, semiseg.reporting.comparisons, the demo table's bootstrap settings) having a
confidence interval above zero.

    python benchmarks/demo_time.py [--cores 2] [--keep DIR]
    python benchmarks/demo_time.py --check DIR     # the goals of a build already in DIR
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


def per_case(root: Path) -> dict[tuple[str, int, int], object]:
    """(method, ratio, seed) -> the run's per-case values (semiseg.metrics.summary.case_means)."""
    sys.path.insert(0, str(REPO / "src"))
    from semiseg.metrics.csv_io import read_metrics_csv
    from semiseg.metrics.summary import case_means

    out = {}
    for metrics in sorted((root / "results" / "runs").glob("*/*/*/seed*/metrics.csv")):
        method, ratio, seed = metrics.parts[-4], int(metrics.parts[-3]), int(metrics.parts[-2][len("seed"):])
        out[(method, ratio, seed)] = case_means(read_metrics_csv(metrics))
    return out


def goals(root: Path) -> list[str]:
    """The demo's two goals, each as a line saying whether it is met and by what numbers."""
    import statistics

    import yaml

    from semiseg.reporting.comparisons import table_comparisons

    cases = per_case(root)
    table = yaml.safe_load((root / "config" / "tables" / "demo.yaml").read_text())["demo"]
    table.setdefault("bootstrap", {"resamples": 1000})
    table["bootstrap"] = {"confidence": 0.95, "seed": 0, **table["bootstrap"]}
    dice = {}
    for (m, r, _), frame in cases.items():
        dice.setdefault((m, r), []).append(100 * float(frame["dice"].mean()))
    lines = []
    full = statistics.fmean(dice[("supervised", 100)]) if ("supervised", 100) in dice else None
    if full is not None:
        lines.append(f"fully labeled U-Net: {full:.2f} % Dice ({'meets' if full >= 80 else 'MISSES'} >= 80 %)")
    low = min((r for _, r in dice), default=None)
    base = statistics.fmean(dice[("supervised", low)]) if ("supervised", low) in dice else None
    for (m, r), c in table_comparisons(table, cases, ["supervised"]).items():
        if r != low or base is None or full is None:
            continue
        s = c.stats
        recovered = s.estimate / (full - base) if full > base else float("nan")
        ok = recovered >= 1 / 3 and s.low > 0
        lines.append(f"{m} at {low} %: {statistics.fmean(dice[(m, r)]):.2f} vs labeled-only {base:.2f} and upper "
                     f"bound {full:.2f}: paired difference {s.estimate:+.2f} (per seed "
                     f"{', '.join(f'{d:+.2f}' for d in s.per_seed)}; {s.confidence * 100:g}% CI "
                     f"{s.low:.2f} to {s.high:.2f}; p {s.p_value:.2g}), {100 * recovered:.0f} % of the gap "
                     f"({'meets' if ok else 'MISSES'} >= a third of the gap with the interval above 0)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="build here and keep the results")
    ap.add_argument("--check", type=Path, help="only check the goals of a build already in this folder")
    args = ap.parse_args()
    if args.check:
        for line in goals(args.check):
            print(line)
        return
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
    print(f"from scratch in {full / 60:.1f} min ({'meets' if full < 600 else 'MISSES'} under 10 min, at the load above)")
    for line in goals(root):
        print(line)
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
