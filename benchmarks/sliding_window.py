"""3D sliding-window inference: the one-window loop against the batched on-device predictor.

On the same V-Net (1 -> 2 classes, the LA network, one random initialisation saved once) and the
same volume (a real LA case from ../shared/data/LA-mini when present, else a random volume of an
LA case's shape), at the LA protocol (patch 112 x 112 x 80, stride 18 x 18 x 4; store order
(80, 112, 112) and (4, 18, 18)), it runs, each in its own process so that peak memory is its own:

- ``loop``: :func:`semiseg.inference.predict.predict_volume_3d_reference`, one window at a time,
  softmax copied to numpy and accumulated on the host (UA-MT's ``test_single_case``);
- ``batched-B``: :func:`semiseg.inference.predict.predict_volume_3d` with ``batch_size=B``;
- ``monai``: ``monai.inferers.sliding_window_inference`` (when monai is installed) at the same
  windows (``overlap`` chosen per axis so that its scan interval is the stride), uniform blending
  and the softmax as its predictor, batch 1.

and prints windows/s, wall time, the process's CPU time (user + system: on a machine shared with
other jobs it is the steadier figure) and peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU:
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


def monai_predict(net, image, stride, device):
    """``monai.inferers.sliding_window_inference`` at the LA protocol's windows: MONAI's scan
    interval is ``int(patch * (1 - overlap))``, so ``overlap = 1 - (stride + 0.5) / patch`` gives
    the stride exactly, and its window starts are then UA-MT's (``n = ceil((size - patch) /
    stride) + 1``, the last one flush with the end). Uniform (``constant``) blending of the
    softmax, divided by the count, argmax: the labels of :func:`predict_volume_3d_reference`."""
    import torch
    from monai.inferers import sliding_window_inference

    overlap = [1 - (s + 0.5) / p for s, p in zip(stride, PATCH)]
    x = torch.from_numpy(image)[None, None].to(device)
    with torch.no_grad():
        out = sliding_window_inference(x, PATCH, 1, lambda w: torch.softmax(net(w), 1), overlap=overlap,
                                       mode="constant", padding_mode="constant")
    return out[0].argmax(0).to(torch.uint8).cpu().numpy()


def peak_rss() -> int:
    """This process's peak resident memory in bytes: ``VmHWM``, which belongs to the process image
    (``ru_maxrss`` survives ``exec``, so a child of a large parent would report the parent's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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
    windows = len(window_starts([s + p for s, p in zip(image.shape, pads)], PATCH, args.stride))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if args.mode == "loop":
        label = predict_volume_3d_reference(net, image, PATCH, args.stride, 2, device)
    elif args.mode == "monai":
        label = monai_predict(net, image, args.stride, device)
    else:
        label = predict_volume_3d(net, image, PATCH, args.stride, 2, device, batch_size=args.batch_size)
    sync()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else peak_rss())
    np.save(args.out, label)
    print(json.dumps({"case": case, "shape": list(image.shape), "windows": windows, "wall": wall, "cpu": cpu,
                      "peak_mb": peak / 2**20, "device": str(device), "faults": faults,
                      "foreground": int(label.sum())}))


def measure(args, tmp: Path, mode: str, batch: int | None, tuned: bool, tag: str) -> dict:
    """One child process: its JSON line, with the label map's path."""
    out = tmp / f"{mode}{batch or ''}_{tag}.npy"
    cmd = [sys.executable, __file__, "--child", mode, "--batch-size", str(batch or 1), "--weights",
           str(tmp / "vnet.pt"), "--out", str(out), "--device", args.device, "--threads", str(args.threads),
           "--stride", *map(str, args.stride)]
    if args.case:
        cmd += ["--case", args.case]
    if tuned:
        cmd += ["--tuned"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO / "src")})
    if proc.returncode:
        sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "out": out}


def has_monai() -> bool:
    import importlib.util

    return importlib.util.find_spec("monai") is not None


def compare(args) -> list[dict]:
    """Every predictor under every allocator setting, `args.repeat` interleaved rounds (round-robin,
    so that a change of load hits every row alike); one row per predictor and setting with the
    median wall and CPU time. Asserts that every label map equals the one-window loop's."""
    import numpy as np
    import torch

    from semiseg.nets import build_network

    tmp = Path(tempfile.mkdtemp(prefix="sliding_window_"))
    torch.manual_seed(0)
    torch.save(build_network("vnet", in_channels=1, num_classes=2, dims=3).state_dict(), tmp / "vnet.pt")
    envs = [("glibc default", False)] + ([("semiseg's mallopt", True)] if args.malloc else [])
    runs = ([("loop", None, "loop (UA-MT, one window)")]
            + ([("monai", None, "monai sliding_window_inference")] if has_monai() else [])
            + [("batched", b, f"semiseg predict_volume_3d (batch {b})") for b in args.batch])
    cells = {(env, name): [] for env, _ in envs for *_, name in runs}
    load = [os.getloadavg()[0]]
    for r in range(args.repeat):
        for env, tuned in envs:
            for mode, b, name in runs:
                cells[env, name].append(measure(args, tmp, mode, b, tuned, f"{r}{tuned:d}"))
        load.append(os.getloadavg()[0])
    ref = np.load(cells[envs[0][0], runs[0][2]][0]["out"])
    rows = []
    for (env, name), results in cells.items():
        for res in results:
            assert np.array_equal(np.load(res["out"]), ref), f"{name} ({env}) differs from the one-window loop"
        med = {k: float(np.median([res[k] for res in results])) for k in ("wall", "cpu", "peak_mb", "faults")}
        rows.append({**results[0], **med, "name": name, "env": env, "repeats": len(results)})
    for row in rows:
        row["load"] = (min(load), max(load))
    return rows


def print_table(rows: list[dict], threads: int) -> None:
    first = rows[0]
    base = {row["env"]: row for row in rows if row["name"].startswith("loop")}
    monai = {row["env"]: row for row in rows if row["name"].startswith("monai")}
    print(f"case {first['case']} {tuple(first['shape'])}, {first['windows']} windows of {PATCH}, "
          f"device {first['device']}, {threads} threads, {first['repeats']} interleaved rounds, load average "
          f"{first['load'][0]:.1f}-{first['load'][1]:.1f}; medians; every label map equals the loop's")
    print("| predictor | allocator | windows/s | wall (s) | CPU (s) | peak memory (MB) | page faults / window "
          "| loop / this (wall, CPU) | monai / this (wall, CPU) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        b, m = base[r["env"]], monai.get(r["env"])
        vs_monai = f"{m['wall'] / r['wall']:.2f}x, {m['cpu'] / r['cpu']:.2f}x" if m else "-"
        print(f"| {r['name']} | {r['env']} | {r['windows'] / r['wall']:.3f} | {r['wall']:.1f} | {r['cpu']:.1f} "
              f"| {r['peak_mb']:.0f} | {r['faults'] / r['windows']:.0f} "
              f"| {b['wall'] / r['wall']:.2f}x, {b['cpu'] / r['cpu']:.2f}x | {vs_monai} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes of the batched predictor")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads per measurement")
    ap.add_argument("--case", default=None, help="LA-mini case id (default: the first of its test.list)")
    ap.add_argument("--stride", type=int, nargs=3, default=list(STRIDE),
                    help="window stride in store order (default the LA protocol's; larger = fewer windows)")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved rounds of every predictor")
    ap.add_argument("--malloc", action="store_true", help="also measure with semiseg's glibc malloc settings")
    ap.add_argument("--child", choices=["loop", "batched", "monai"], dest="mode", help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--tuned", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        return child(args)
    print_table(compare(args), args.threads)


if __name__ == "__main__":
    main()
