"""One command for the speed figures: training steps, the sliding window, metrics, preprocessing.

    python benchmarks/speed.py [--device cpu|cuda] [--no-append]

Each part reuses its own benchmark and runs beside its reference-style baseline in the same
run, and the tables are printed and appended, with the device's name, to benchmarks/RESULTS.md:

- train steps (``train_step.measure``): it/s of every method, fp32 and bf16 autocast, at the
  papers' shapes on a GPU (ACDC 12 + 12 slices of 256², LA 2 + 2 V-Net patches of 80 x 112 x 112);
  on a CPU at reduced shapes (ACDC 2 + 2 slices of 128², LA not run) and 2 timed steps, said in
  the table, so the whole script runs in a few minutes. One process for all methods: peak
  memory is not reported here (``train_step.py`` gives each method its own process);
- the sliding window (``sliding_window.compare``): semiseg's predictor against UA-MT's one-window
  loop and MONAI's ``sliding_window_inference`` (if installed) on a real LA case, glibc's default
  allocator, each in its own process; on a CPU at a coarser stride (8 windows instead of 45);
- batch preparation (``data_pipeline.compare``), the part of a training step outside the network:
  the resident set with batched augmentation against the per-sample CPU-augmentation DataLoader
  loop of the common code, at the ACDC paper batch (12 + 12 slices of 256²);
- metrics (``metrics.compare``): ``class_metrics`` against medpy on the LA-mini test labels;
- preprocessing (``preprocess_la.compare``): the LA store against the bare h5 read.

Ratios are reference ÷ ours; on a machine shared with other jobs, read the CPU-time columns.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

METHODS = ["supervised", "mean_teacher", "ua_mt", "cps", "bcp", "alhvr"]


def train_steps(device: str) -> list[str]:
    import train_step

    gpu = device.startswith("cuda")
    shapes = [("acdc", 12, 12, 256), ("la", 2, 2, 0)] if gpu else [("acdc", 2, 2, 128)]
    steps = 5 if gpu else 2
    lines = [f"train steps: {steps} timed steps after 2 warm-up steps"
             + ("" if gpu else "; CPU: reduced shapes (ACDC 2 + 2 slices of 128², the paper's 12 + 12 of 256²; "
                               "LA not run)"),
             "| method | dataset | batch | fp32 it/s | bf16 it/s | bf16 / fp32 |", "| --- | --- | --- | ---: | ---: | ---: |"]
    for dataset, lb, ub, size in shapes:
        for method in METHODS:
            try:
                fp32, bf16 = (train_step.measure(method, device, steps, lb, ub, size, amp, dataset)["it_per_s"]
                              for amp in (False, True))
            except Exception as exc:  # one method failing still leaves the others' figures
                lines.append(f"| {method} | {dataset} | {lb}+{ub} | failed: {type(exc).__name__}: {exc} | | |")
                continue
            shape = f"{lb}+{ub} x {size}²" if dataset == "acdc" else f"{lb}+{ub} x 80x112x112"
            lines.append(f"| {method} | {dataset} | {shape} | {fp32:.3f} | {bf16:.3f} | {bf16 / fp32:.2f}x |")
    return lines


def data_pipeline(device: str) -> list[str]:
    import data_pipeline as dp

    return dp.table(dp.compare(batches=20, workers=0, device=device))


def sliding_window(device: str) -> list[str]:
    import sliding_window as sw

    gpu = device.startswith("cuda")
    args = argparse.Namespace(device=device, batch=[4] if gpu else [1], threads=1 if not gpu else 2, case=None,
                              stride=list(sw.STRIDE) if gpu else [8, 20, 63], repeat=1, malloc=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        sw.print_table(sw.compare(args), args.threads)
    note = [] if gpu else ["sliding window: CPU, stride (8, 20, 63) instead of the protocol's (4, 18, 18)"]
    return note + out.getvalue().strip().splitlines()


def metrics() -> list[str]:
    import metrics as m

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        m.print_table(m.compare(2))
    return ["metrics: CPU seconds, minimum of 2 interleaved rounds, spacing 1 voxel"] + out.getvalue().strip().splitlines()


def preprocessing() -> list[str]:
    import preprocess_la

    r = preprocess_la.compare(2)
    lines = [f"preprocessing: LA-mini, {r['cases']} cases, minimum of 2 interleaved rounds",
             "| step | CPU (s) | wall (s) | / bare read (CPU, wall) |", "| --- | ---: | ---: | ---: |"]
    for name in ("bare", "semiseg"):
        cpu, wall = r[name]
        lines.append(f"| {name} | {cpu:.2f} | {wall:.2f} | {cpu / r['bare'][0]:.2f}x, {wall / r['bare'][1]:.2f}x |")
    return lines


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--parts", nargs="+", default=["train", "data", "window", "metrics", "preprocess"],
                    choices=["train", "data", "window", "metrics", "preprocess"])
    ap.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    import torch

    os.environ.setdefault("SEMISEG_MALLOC", "off")  # the glibc default allocator, for every part
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    load0, t0 = os.getloadavg()[0], time.time()
    head = (f"## {time.strftime('%Y-%m-%d')}, `python benchmarks/speed.py --device {args.device}`: "
            f"{device_name(args.device)} (python {platform.python_version()}, torch {torch.__version__})")
    parts = {"train": lambda: train_steps(args.device), "data": lambda: data_pipeline(args.device),
             "window": lambda: sliding_window(args.device),
             "metrics": metrics, "preprocess": preprocessing}
    lines = [head, ""]
    for name in args.parts:
        part = parts[name]()
        print("\n".join(part), flush=True)
        for line in part:  # a markdown table needs a blank line above it
            if line.startswith("|") and lines[-1] and not lines[-1].startswith("|"):
                lines.append("")
            lines.append(line)
        lines.append("")
    lines.append(f"Load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
                 f"{time.time() - t0:.0f} s in all.")
    print(lines[-1])
    if not args.no_append:
        with open(HERE / "RESULTS.md", "a") as fh:
            fh.write("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
