"""3D sliding-window inference: the one-window loop against the batched on-device predictor.

On the same V-Net (1 -> 2 classes, the LA network, one random initialisation saved once) and the
same volume (a real LA case from ../shared/data/LA-mini when present, else a random volume of an
LA case's shape), at the LA protocol (patch 112 x 112 x 80, stride 18 x 18 x 4; store order
(80, 112, 112) and (4, 18, 18)), it runs, each in its own process so that peak memory is its own:

- ``loop``: :func:`semiseg.inference.predict.predict_volume_3d_reference`, one window at a time,
  softmax copied to numpy and accumulated on the host (UA-MT's ``test_single_case``);
- ``batched-B``: :func:`semiseg.inference.predict.predict_volume_3d` with ``batch_size=B``.

and prints windows/s, wall time and peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU:
the process's peak RSS) side by side, then asserts that every label map equals the loop's.
``--malloc`` repeats each measurement with glibc's allocator thresholds raised as ``semiseg``
raises them for its train / infer / evaluate stages (:func:`semiseg.allocator.tune_allocator`), and
reports the minor page faults of each run.

    python benchmarks/sliding_window.py [--device cpu|cuda] [--batch 1 4] [--threads 2] [--malloc]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATCH, STRIDE = (80, 112, 112), (4, 18, 18)


def load_volume(case: str | None):
    """(case id, (Z, Y, X) float32 image): a real LA-mini case, else a random LA-sized volume."""
    import h5py
    import numpy as np

    root = Path(os.environ.get("SEMISEG_SHARED_DATA", REPO.parent / "shared" / "data")) / "LA-mini"
    if (root / "test.list").is_file():
        case = case or (root / "test.list").read_text().split()[0]
        with h5py.File(root / "2018LA_Seg_Training Set" / case / "mri_norm2.h5") as f:
            return case, np.ascontiguousarray(f["image"][()].transpose(2, 1, 0))
    return "random (88, 132, 175)", np.random.default_rng(0).standard_normal((88, 132, 175)).astype(np.float32)


def child(args) -> None:
    """One measurement, in this process: prints a JSON line."""
    if args.tuned:
        from semiseg.allocator import tune_allocator

        tune_allocator()
    import numpy as np
    import torch

    from semiseg.device import select_device
    from semiseg.inference.predict import predict_volume_3d, predict_volume_3d_reference, window_starts
    from semiseg.nets import build_network

    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    net = build_network("vnet", in_channels=1, num_classes=2, dims=3)
    net.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    net = net.to(device).eval()
    case, image = load_volume(args.case)
    pads = [max(p - s, 0) for s, p in zip(image.shape, PATCH)]
    windows = len(window_starts([s + p for s, p in zip(image.shape, pads)], PATCH, STRIDE))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    if args.mode == "loop":
        label = predict_volume_3d_reference(net, image, PATCH, STRIDE, 2, device)
    else:
        label = predict_volume_3d(net, image, PATCH, STRIDE, 2, device, batch_size=args.batch_size)
    sync()
    wall = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    np.save(args.out, label)
    print(json.dumps({"case": case, "shape": list(image.shape), "windows": windows, "wall": wall,
                      "peak_mb": peak / 2**20, "device": str(device), "faults": faults,
                      "foreground": int(label.sum())}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes of the batched predictor")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads per measurement")
    ap.add_argument("--case", default=None, help="LA-mini case id (default: the first of its test.list)")
    ap.add_argument("--malloc", action="store_true", help="also measure with semiseg's glibc malloc settings")
    ap.add_argument("--child", choices=["loop", "batched"], dest="mode", help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--tuned", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        return child(args)

    import numpy as np
    import torch

    from semiseg.nets import build_network

    tmp = Path(tempfile.mkdtemp(prefix="sliding_window_"))
    torch.manual_seed(0)
    torch.save(build_network("vnet", in_channels=1, num_classes=2, dims=3).state_dict(), tmp / "vnet.pt")
    envs = [("glibc default", False)] + ([("semiseg's mallopt", True)] if args.malloc else [])
    runs = [("loop", None)] + [("batched", b) for b in args.batch]
    rows = []
    for env_name, tuned in envs:
        for mode, b in runs:
            out = tmp / f"{mode}{b or ''}_{len(rows)}.npy"
            cmd = [sys.executable, __file__, "--child", mode, "--batch-size", str(b or 1), "--weights",
                   str(tmp / "vnet.pt"), "--out", str(out), "--device", args.device, "--threads", str(args.threads)]
            if args.case:
                cmd += ["--case", args.case]
            if tuned:
                cmd += ["--tuned"]
            env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO / "src")})
            if proc.returncode:
                sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r.update(name=f"{mode}" + (f" (batch {b})" if b else " (one window)"), env=env_name, out=out)
            rows.append(r)
            if len(rows) == 1:
                print(f"case {r['case']} {tuple(r['shape'])}, {r['windows']} windows of {PATCH}, stride {STRIDE}, "
                      f"device {r['device']}, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
                print("| predictor | allocator | windows/s | wall (s) | peak memory (MB) | page faults / window "
                      "| speed-up | labels equal |")
                print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
            first, ref = rows[0], np.load(rows[0]["out"])
            same = np.array_equal(np.load(r["out"]), ref)
            print(f"| {r['name']} | {r['env']} | {r['windows'] / r['wall']:.3f} | {r['wall']:.1f} | {r['peak_mb']:.0f} "
                  f"| {r['faults'] / r['windows']:.0f} | {first['wall'] / r['wall']:.2f}x | {'yes' if same else 'NO'} |",
                  flush=True)
    for r in rows:
        assert np.array_equal(np.load(r["out"]), np.load(rows[0]["out"])), \
            f"{r['name']} ({r['env']}) differs from the one-window loop"
    print(f"all {len(rows)} label maps equal the one-window loop's (load average now {os.getloadavg()[0]:.1f})")

if __name__ == "__main__":
    main()
