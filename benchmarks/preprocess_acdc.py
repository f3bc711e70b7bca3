"""Time the fetch and preprocess stages on real ACDC and report the store's size.

    python benchmarks/preprocess_acdc.py                          # ../shared/data/ACDC (slices layout)
    python benchmarks/preprocess_acdc.py --path /data/ACDC/database --layout acdc_raw

Runs exactly what the workflow's ``fetch`` and ``preprocess`` rules run (``semiseg.data.fetch``,
``semiseg.data.preprocess``) into a temporary directory that is deleted afterwards (``--keep DIR``
keeps the outputs there), and prints one line per stage, the store's size against the source's,
and the labeled-slice counts of the protocol's splits as a check that the store is the one the
papers train on. Nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def main(argv: list[str] | None = None) -> int:
    from semiseg.data.fetch import fetch
    from semiseg.data.preprocess import preprocess
    from semiseg.data.splits import make_split

    catalogue = yaml.safe_load((REPO / "config" / "datasets" / "acdc.yaml").read_text())["acdc"]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", default=catalogue["source"]["path"],
                   help="the ACDC source (relative: from the checkout); default: the catalogue's")
    p.add_argument("--layout", default=catalogue["source"]["layout"], choices=("slices", "acdc_raw"))
    p.add_argument("--keep", type=Path, default=None, help="keep raw/ and the store in this directory")
    args = p.parse_args(argv)

    work = args.keep or Path(tempfile.mkdtemp(prefix="semiseg-bench-"))
    raw, store = work / "raw" / "acdc", work / "preprocessed" / "acdc" / "store.h5"
    source = {"layout": args.layout, "path": args.path}
    t0, c0 = time.perf_counter(), time.process_time()
    record = fetch("acdc", source, raw, root=REPO)
    t1, c1 = time.perf_counter(), time.process_time()
    desc = preprocess("acdc", args.layout, raw, labels=catalogue["labels"], dims=catalogue["dims"],
                      store_path=store)
    t2, c2 = time.perf_counter(), time.process_time()

    n_raw = sum(f["bytes"] for f in record["files"].values())
    print(f"source       {record['source'].get('path')} (layout {args.layout}), "
          f"{len(record['files'])} files, {_mb(n_raw)}")
    print(f"fetch        {t1 - t0:6.1f} s wall, {c1 - c0:6.1f} s CPU  (copy or hard-link + sha256 of every file)")
    print(f"preprocess   {t2 - t1:6.1f} s wall, {c2 - c1:6.1f} s CPU  ({len(desc['cases'])} volumes into one store)")
    print(f"store        {_mb(store.stat().st_size)} ({store.stat().st_size / n_raw:.0%} of the source), "
          f"descriptor {_mb(len(json.dumps(desc)))}")
    z = {cid: c["shape"][0] for cid, c in desc["cases"].items()}
    counts = []
    for ratio, n in catalogue["ratios"].items():
        split = make_split(desc, int(ratio), n)
        counts.append(f"{n} patients: {sum(z[c] for c in split['cases']['labeled'])}")
    print("labeled slices  " + ", ".join(counts))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if args.keep is None:
        import shutil

        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
