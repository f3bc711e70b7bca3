"""Per-case metrics against medpy, on the real LA-mini test labels.

For each case of ../shared/data/LA-mini's test.list, the reference is its label and the
"prediction" the label dilated by one voxel and shifted by 2 along the first (store) axis, so both
surfaces are real-sized and the distances non-trivial. Each case is scored by
:func:`semiseg.metrics.binary.class_metrics` (union box, one pair of distance transforms) and by
medpy's ``dc``, ``jc``, ``hd95`` and ``asd`` on the whole volume, interleaved in one process
(ours first on odd rounds, medpy first on even ones), spacing 1 voxel as in the LA papers; the
values must be identical. Prints one row per case and the total.

    python benchmarks/metrics.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def la_cases() -> list[tuple[str, "object", "object"]]:
    """(case id, prediction, reference) of every LA-mini test case, both boolean (Z, Y, X)."""
    import h5py
    import numpy as np
    from scipy import ndimage

    root = Path(os.environ.get("SEMISEG_SHARED_DATA", REPO.parent / "shared" / "data")) / "LA-mini"
    out = []
    for case in (root / "test.list").read_text().split():
        with h5py.File(root / "2018LA_Seg_Training Set" / case / "mri_norm2.h5") as f:
            gt = np.ascontiguousarray(f["label"][()].transpose(2, 1, 0)) > 0
        pred = np.roll(ndimage.binary_dilation(gt), 2, axis=0)
        out.append((case, pred, gt))
    return out


def medpy_metrics(pred, gt) -> dict[str, float]:
    from medpy.metric import binary as medpy_binary

    return {"dice": medpy_binary.dc(pred, gt), "jaccard": medpy_binary.jc(pred, gt),
            "hd95": medpy_binary.hd95(pred, gt, voxelspacing=1.0),
            "asd": medpy_binary.asd(pred, gt, voxelspacing=1.0)}


def compare(repeat: int = 1) -> list[dict]:
    """One row per case: shape, seconds of ours and medpy's (the minimum over `repeat` rounds),
    and whether every value is identical. Raises if a value differs."""
    from semiseg.metrics.binary import class_metrics

    rows = []
    for case, pred, gt in la_cases():
        times, values = {"ours": [], "medpy": []}, {}
        for r in range(repeat):
            order = ["ours", "medpy"] if r % 2 == 0 else ["medpy", "ours"]
            for name in order:
                t0 = time.process_time()
                got = class_metrics(pred, gt, 1.0) if name == "ours" else medpy_metrics(pred, gt)
                times[name].append(time.process_time() - t0)
                values[name] = got
        for key in ("dice", "jaccard", "hd95", "asd"):
            if float(values["ours"][key]) != float(values["medpy"][key]):
                raise AssertionError(f"{case}: {key} {values['ours'][key]} != medpy's {values['medpy'][key]}")
        rows.append({"case": case, "shape": pred.shape, "ours": min(times["ours"]), "medpy": min(times["medpy"])})
    return rows


def print_table(rows: list[dict]) -> None:
    print("| case | shape | semiseg (s CPU) | medpy (s CPU) | medpy / semiseg | values |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['case']} | {r['shape']} | {r['ours']:.2f} | {r['medpy']:.2f} | {r['medpy'] / r['ours']:.2f}x "
              "| identical |")
    ours, medpy = sum(r["ours"] for r in rows), sum(r["medpy"] for r in rows)
    print(f"| all {len(rows)} | | {ours:.2f} | {medpy:.2f} | {medpy / ours:.2f}x | identical |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=1, help="interleaved rounds per case (the minimum is kept)")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}; CPU seconds (process time), one thread")
    print_table(compare(args.repeat))


if __name__ == "__main__":
    main()
