"""LA preprocessing against the bare read of the same h5 files, on ../shared/data/LA-mini.

``bare read``: every case's ``mri_norm2.h5`` opened with h5py and its image and label read (the
distributors' gzip files), nothing else. ``semiseg preprocess``: :func:`semiseg.data.preprocess.preprocess`
with the ``la`` layout, the preprocess rule's call: the same read, the checks, the store written
and hashed into ``dataset.json``'s descriptor, into a temporary directory deleted afterwards.
Interleaved rounds (bare first on odd rounds), CPU seconds of this process (the steadier figure on
a shared machine) and wall seconds, the minimum over the rounds.

    python benchmarks/preprocess_la.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def la_root() -> Path:
    return Path(os.environ.get("SEMISEG_SHARED_DATA", REPO.parent / "shared" / "data")) / "LA-mini"


def bare_read(root: Path) -> int:
    import h5py

    n = 0
    for case in sorted((root / "2018LA_Seg_Training Set").iterdir()):
        with h5py.File(case / "mri_norm2.h5") as f:
            f["image"][()], f["label"][()]
        n += 1
    return n


def semiseg_preprocess(root: Path) -> int:
    from semiseg.data.preprocess import preprocess

    tmp = Path(tempfile.mkdtemp(prefix="preprocess_la_"))
    try:
        descriptor = preprocess("la", "la", root, labels={"background": 0, "atrium": 1}, dims=3,
                                store_path=tmp / "store.h5")
        return len(descriptor["cases"])
    finally:
        shutil.rmtree(tmp)


def compare(repeat: int = 2) -> dict:
    """``{"cases", "bare": (cpu, wall), "semiseg": (cpu, wall)}``, minima over `repeat` rounds."""
    root = la_root()
    best = {"bare": (float("inf"),) * 2, "semiseg": (float("inf"),) * 2}
    cases = 0
    for r in range(repeat):
        for name in (["bare", "semiseg"] if r % 2 == 0 else ["semiseg", "bare"]):
            c0, w0 = time.process_time(), time.perf_counter()
            cases = (bare_read if name == "bare" else semiseg_preprocess)(root)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            best[name] = (min(best[name][0], cpu), min(best[name][1], wall))
    return {"cases": cases, **best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    r = compare(args.repeat)
    print(f"LA-mini, {r['cases']} cases, {args.repeat} interleaved rounds, load average {load:.1f}")
    print("| step | CPU (s) | wall (s) | / bare read (CPU, wall) |")
    print("| --- | ---: | ---: | ---: |")
    for name in ("bare", "semiseg"):
        cpu, wall = r[name]
        print(f"| {name} | {cpu:.2f} | {wall:.2f} | {cpu / r['bare'][0]:.2f}x, {wall / r['bare'][1]:.2f}x |")


if __name__ == "__main__":
    main()
