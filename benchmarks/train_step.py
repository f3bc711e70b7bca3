"""Training throughput per method at the ACDC paper batch (12 labeled + 12 unlabeled 256×256 slices).

For each method: iterations per second, peak memory (GPU: torch.cuda.max_memory_allocated;
CPU: the process's peak RSS) and the share of a step spent preparing the batch (indexing the
resident set + batched augmentation) versus the method's forward/backward/optimiser step.
Each method runs in its own process so peak memory is its own.

    python benchmarks/train_step.py [--device cpu|cuda] [--steps 5] [--amp] [--methods supervised mean_teacher ...]

``--dataset la`` measures the Left Atrium protocol instead: V-Net, 2 labeled + 2 unlabeled
patches of 80 × 112 × 112 (``--size`` is ignored), two classes; each method's own views
(``make_views``) and optimisers (``extra_optimizers``) are used. CRLN reports 0.651 s per batch
on an RTX 3090 for LA, "only marginally" above BCP / UA-MT.

``--amp`` runs each training step under bf16 autocast, the engine's switch for a schedule with
``amp: true`` (on a CPU too).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

DEFAULT_METHODS = ["supervised", "mean_teacher", "ua_mt", "cps", "bcp", "alhvr"]
LA_PATCH = (80, 112, 112)


def spec_for(algorithm: str, params: dict, device: str, lb: int, ub: int, size: int, amp: bool = False,
             dataset: str = "acdc") -> dict:
    if dataset == "la":
        return {"dataset": {"name": "bench_la", "dims": 3, "labels": {"bg": 0, "atrium": 1}, "num_classes": 2,
                            "patch_size": list(LA_PATCH), "stride": [4, 18, 18]},
                "method": {"name": algorithm, "algorithm": algorithm, "network": "vnet", "params": params},
                "schedule": {"name": "bench", "iterations": 30000, "labeled_batch_size": lb,
                             "unlabeled_batch_size": ub, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
                             "lr_policy": "poly", "val_interval": 10**9, "checkpoint_interval": 10**9, "amp": amp},
                "ratio": 10, "labeled_patients": 8, "seed": 0, "device": device}
    return {"dataset": {"name": "bench", "dims": 2, "labels": {"bg": 0, "RV": 1, "Myo": 2, "LV": 3},
                        "num_classes": 4, "patch_size": [size, size], "stride": None},
            "method": {"name": algorithm, "algorithm": algorithm, "network": "unet", "params": params},
            "schedule": {"name": "bench", "iterations": 30000, "labeled_batch_size": lb,
                         "unlabeled_batch_size": ub, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
                         "lr_policy": "poly", "val_interval": 10**9, "checkpoint_interval": 10**9, "amp": amp},
            "ratio": 10, "labeled_patients": 7, "seed": 0, "device": device}


def engine_step(m, opts: dict, batch: dict, it: int, g, amp: bool, device) -> None:
    """One training step as the engine runs it (``semiseg.engine.loop``): the method's views, its
    step context, the step under autocast when `amp`, every optimiser, the second phase and the
    post-step hook."""
    import torch

    from semiseg.engine.loop import run_second_phase
    from semiseg.methods import Step, StepContext

    ctx = StepContext(Step(iteration=10000 + it, total=30000), m.make_views(batch, g), g)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
        losses = m.training_step(ctx)
    for opt in opts.values():
        opt.zero_grad(set_to_none=True)
    losses.total.backward()
    for opt in opts.values():
        opt.step()
    run_second_phase(m, opts, ctx)
    m.after_optimizer_step(ctx)


def measure(method: str, device_name: str, steps: int, lb: int, ub: int, size: int, amp: bool = False,
            dataset: str = "acdc") -> dict:
    import torch

    from semiseg.config import load_config
    from semiseg.device import select_device
    from semiseg.engine.data import ResidentSet, StreamSampler
    from semiseg.engine.loop import build_optimizers
    from semiseg.methods import build_method
    from semiseg.nets import build_network

    cfg = load_config()
    entry = cfg["methods"][method]
    if dataset == "la":
        return _measure_la(method, entry, device_name, steps, lb, ub, amp)
    device = select_device(device_name)
    spec = spec_for(entry["algorithm"], entry["params"], device_name, lb, ub, size, amp)
    torch.manual_seed(0)
    net_factory = lambda: build_network(entry.get("network", "unet"), in_channels=1, num_classes=4, dims=2)  # noqa: E731
    m = build_method(spec, net_factory).to(device).train()
    opts = build_optimizers(m, spec["schedule"])
    # ACDC at 10 %: 136 labeled and 1176 unlabeled slices resident on the device
    lab = ResidentSet(2, (size, size), device, torch.rand(136, 1, size, size, device=device),
                      torch.randint(0, 4, (136, size, size), device=device, dtype=torch.uint8))
    unl = ResidentSet(2, (size, size), device, torch.rand(1176, 1, size, size, device=device), None)
    ls, us = StreamSampler(136, lb, 0, 0), StreamSampler(1176, ub, 0, 1)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    prep = compute = 0.0
    for it in range(steps + 2):  # two warm-up steps
        sync()
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(it)
        xl, yl = lab.batch(ls.indices(it), g, with_label=True)
        xu, _ = unl.batch(us.indices(it), g, with_label=False)
        sync()
        t1 = time.perf_counter()
        engine_step(m, opts, {"labeled_image": xl, "labeled_label": yl, "unlabeled_image": xu}, it, g, amp, device)
        sync()
        t2 = time.perf_counter()
        if it >= 2:
            prep += t1 - t0
            compute += t2 - t1
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"method": method, "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
            "it_per_s": steps / (prep + compute), "peak_mb": peak, "prep_share": prep / (prep + compute),
            "amp": amp}


def _measure_la(method: str, entry: dict, device_name: str, steps: int, lb: int, ub: int, amp: bool) -> dict:
    """One method's step on the LA protocol (see the module docstring), views and optimisers included."""
    import torch

    from semiseg.device import select_device
    from semiseg.engine.loop import build_optimizers
    from semiseg.methods import build_method
    from semiseg.nets import build_network

    device = select_device(device_name)
    params = {**entry["params"], **(entry.get("datasets", {}).get("la", {}).get("params") or {})}
    spec = spec_for(entry["algorithm"], params, device_name, lb, ub, 0, amp, dataset="la")
    torch.manual_seed(0)
    m = build_method(spec, lambda: build_network("vnet", in_channels=1, num_classes=2, dims=3)).to(device).train()
    opts = build_optimizers(m, spec["schedule"])

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    total = 0.0
    for it in range(steps + 2):  # two warm-up steps
        g = torch.Generator().manual_seed(it)
        batch = {"labeled_image": torch.rand(lb, 1, *LA_PATCH, generator=g).to(device),
                 "labeled_label": (torch.rand(lb, *LA_PATCH, generator=g) > 0.8).long().to(device),
                 "unlabeled_image": torch.rand(ub, 1, *LA_PATCH, generator=g).to(device)}
        sync()
        t0 = time.perf_counter()
        engine_step(m, opts, batch, it, g, amp, device)
        sync()
        if it >= 2:
            total += time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"method": method, "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
            "it_per_s": steps / total, "peak_mb": peak, "prep_share": 0.0, "amp": amp}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--labeled", type=int, default=None, help="labeled batch (ACDC: 12, LA: 2)")
    ap.add_argument("--unlabeled", type=int, default=None, help="unlabeled batch (ACDC: 12, LA: 2)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    ap.add_argument("--dataset", choices=["acdc", "la"], default="acdc",
                    help="la: V-Net on 2 + 2 patches of 80 x 112 x 112 (--labeled/--unlabeled default to 2)")
    ap.add_argument("--amp", action="store_true",
                    help="bf16 autocast (the schedule's `amp`)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    default_batch = 2 if args.dataset == "la" else 12
    args.labeled = default_batch if args.labeled is None else args.labeled
    args.unlabeled = default_batch if args.unlabeled is None else args.unlabeled
    if args.one:
        print(json.dumps(measure(args.one, args.device, args.steps, args.labeled, args.unlabeled, args.size,
                                 args.amp, args.dataset)))
        return
    amp = "bf16 autocast" if args.amp else "fp32"
    shape = "80 × 112 × 112 (LA, V-Net)" if args.dataset == "la" else f"{args.size}²"
    print(f"batch {args.labeled}+{args.unlabeled} × {shape}, {amp}, {args.steps} timed steps after 2 warm-up steps")
    if args.dataset == "la":
        print("| method | device | it/s | s per batch | peak memory (MB) |")
        print("| --- | --- | ---: | ---: | ---: |")
    else:
        print("| method | device | it/s | peak memory (MB) | data preparation |")
        print("| --- | --- | ---: | ---: | ---: |")
    for method in args.methods:
        proc = subprocess.run([sys.executable, __file__, "--one", method, "--device", args.device, "--steps",
                               str(args.steps), "--labeled", str(args.labeled), "--unlabeled", str(args.unlabeled),
                               "--size", str(args.size), "--dataset", args.dataset, *(["--amp"] if args.amp else [])],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"| {method} | failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else '?'} | | | |")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        if args.dataset == "la":
            print(f"| {r['method']} | {r['device']} | {r['it_per_s']:.3f} | {1 / r['it_per_s']:.2f} | {r['peak_mb']:.0f} |")
            continue
        print(f"| {r['method']} | {r['device']} | {r['it_per_s']:.3f} | {r['peak_mb']:.0f} | {100 * r['prep_share']:.1f} % |")


if __name__ == "__main__":
    main()
