"""Time the readers of the BraTS 2019, Pancreas-CT and AbdomenCT-1K releases, per case, and the
store size they write, on the stand-in release files the tests write (``tests/release_files.py``:
synthetic volumes in the official formats, smaller than the real scans).

    python benchmarks/preprocess_3d.py                 # 4 cases per reader, the tests' sizes
    python benchmarks/preprocess_3d.py --cases 8 --scale 2

``--scale`` multiplies every axis of the stand-in volumes (the tests' sizes: BraTS 30 x 40 x 36,
Pancreas-CT 24 x 44 x 40 at 0.78 x 0.78 x 1.5 mm, AbdomenCT-1K 8 x 48 x 40; the real releases are
155 x 240 x 240, about 100-250 x 512 x 512 and 40-1000 x 512 x 512). Each reader runs through
``semiseg.data.preprocess.preprocess``, the preprocess rule's call, into a temporary directory
deleted afterwards (the h5 copies are made by this project's own MC-Net / SSL4MIS steps from the
stand-ins' native grid, with gzip as the groups' copies use); one line per reader: seconds per
case (writing the store included), store bytes per case, source bytes per case. Nothing is
written into the repository.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.name.endswith(".list"))


def _releases(root: Path, n: int, scale: int) -> list[tuple[str, str, Path, dict, int]]:
    """(reader name, layout, source folder, labels, dims) of every reader, its files written."""
    import release_files as rf
    from semiseg.data.brats import preprocess_brats
    from semiseg.data.pancreas import preprocess_mcnet

    s = lambda shape: tuple(v * scale for v in shape)  # noqa: E731
    out = []
    ids = [f"BraTS19_BENCH_{i}_1" for i in range(n)]
    rf.write_brats_release(root / "brats", ids, shape=s((30, 40, 36)))
    rf.write_lists(root / "brats", train=ids[:-1], test=ids[-1:])
    out.append(("BraTS release (NIfTI)", "brats_raw", root / "brats", {"background": 0, "tumour": 1}, 3))
    (root / "brats_h5" / "data").mkdir(parents=True)
    for i, case in enumerate(ids):
        image, label, _ = preprocess_brats(*rf.brats_case(i, s((30, 40, 36))))
        with h5py.File(root / "brats_h5" / "data" / f"{case}.h5", "w") as h5:
            h5.create_dataset("image", data=image, compression="gzip")
            h5.create_dataset("label", data=label, compression="gzip")
    rf.write_lists(root / "brats_h5", train=ids[:-1], test=ids[-1:])
    out.append(("BraTS h5 copies", "brats", root / "brats_h5", {"background": 0, "tumour": 1}, 3))

    numbers = list(range(1, n + 1))
    rf.write_pancreas_release(root / "pancreas", numbers, shape=s((24, 44, 40)))
    names = [f"image{k:04d}" for k in numbers]
    rf.write_lists(root / "pancreas", train=names[:-1], test=names[-1:])
    out.append(("Pancreas-CT release, MC-Net (DICOM)", "pancreas_raw", root / "pancreas",
                {"background": 0, "pancreas": 1}, 3))
    out.append(("Pancreas-CT release, CoraNet (DICOM)", "pancreas_coranet_raw", root / "pancreas",
                {"background": 0, "pancreas": 1}, 3))
    (root / "pancreas_h5" / "Pancreas_h5").mkdir(parents=True)
    for i, name in enumerate(names):
        image, label, _ = preprocess_mcnet(*rf.pancreas_case(i, s((24, 44, 40))))
        with h5py.File(root / "pancreas_h5" / "Pancreas_h5" / f"{name}_norm.h5", "w") as h5:
            h5.create_dataset("image", data=image.transpose(2, 1, 0), compression="gzip")
            h5.create_dataset("label", data=label.transpose(2, 1, 0).astype(np.float32), compression="gzip")
    rf.write_lists(root / "pancreas_h5", train=names[:-1], test=names[-1:])
    out.append(("Pancreas-CT h5 copies", "pancreas", root / "pancreas_h5", {"background": 0, "pancreas": 1}, 3))

    rf.write_abdomen_release(root / "abdomen", numbers, shape=s((8, 48, 40)))
    cases = [f"Case_{k:05d}" for k in numbers]
    rf.write_lists(root / "abdomen", train=cases[:-1], test=cases[-1:])
    out.append(("AbdomenCT-1K release (NIfTI)", "abdomenct1k_raw", root / "abdomen",
                {"background": 0, "liver": 1, "kidney": 2, "spleen": 3, "pancreas": 4}, 2))
    return out


def main(argv: list[str] | None = None) -> int:
    from semiseg.data.preprocess import preprocess

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=4, help="cases per reader (at least 2)")
    p.add_argument("--scale", type=int, default=1, help="multiply every axis of the stand-in volumes")
    args = p.parse_args(argv)
    if args.cases < 2:
        p.error("--cases must be at least 2 (one train, one test)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"{'reader':40s} {'s/case':>8s} {'store B/case':>13s} {'source B/case':>14s}")
        for name, layout, src, labels, dims in _releases(tmp / "src", args.cases, args.scale):
            store = tmp / "out" / layout / "store.h5"
            t0 = time.perf_counter()
            preprocess(layout, layout, src, labels=labels, dims=dims, store_path=store)
            seconds = time.perf_counter() - t0
            print(f"{name:40s} {seconds / args.cases:8.3f} {store.stat().st_size / args.cases:13.0f} "
                  f"{_size(src) / args.cases:14.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
