"""Batch preparation: the resident set with batched augmentation against the per-sample
CPU-augmentation DataLoader loop of the common code.

    python benchmarks/data_pipeline.py [--device cpu|cuda] [--batches 20] [--workers 0]

Both make the ACDC paper batch, 12 labeled + 12 unlabeled slices of 256 x 256 with the papers'
2D augmentation (0.5 rot90 + flip, 0.25 rotation by an integer angle in [-20, 19] degrees,
nearest neighbour; ``semiseg.engine.augment``), from the same synthetic slices of ACDC's
in-plane sizes (seeded; the timing does not depend on the anatomy):

- reference: a ``torch.utils.data.Dataset`` whose ``__getitem__`` augments one slice at its
  own size with numpy / ``scipy.ndimage.rotate`` and zooms it to 256 x 256 (``order=0``), as the
  common code's ``RandomGenerator`` does, one ``DataLoader`` per stream (``--workers`` worker
  processes; the codes use several, which spends more cores on the same work);
- semiseg: the slices zoomed once at load (``engine.data.load_resident``'s ``resize_slices``), then
  per batch an index into the resident tensor and one batched affine warp
  (``ResidentSet.batch``) on ``--device``.

Prints seconds per batch (wall and, on a CPU, process CPU time) and the ratio reference ÷ ours.
``benchmarks/speed.py`` runs it beside the training steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

#: In-plane sizes of ACDC slices (the set's most common ones), cycled over the synthetic slices.
SHAPES = [(216, 256), (232, 256), (256, 216), (224, 154), (256, 232), (192, 256)]
SIZE = (256, 256)
LABELED, UNLABELED = 12, 12


def slices(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (image float32, label uint8) slices of ACDC's in-plane sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        out.append((rng.random(shape, dtype=np.float32), rng.integers(0, 4, shape, dtype=np.uint8)))
    return out


class PerSampleSet:
    """The reference: one slice augmented and zoomed per ``__getitem__``, on the CPU."""

    def __init__(self, items, rng_seed: int = 0):
        self.items = items
        self.rng = np.random.default_rng(rng_seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import torch
        from scipy import ndimage

        image, label = self.items[i]
        u = self.rng.random()
        if u < 0.5:
            k, axis = int(self.rng.integers(0, 4)), int(self.rng.integers(0, 2))
            image, label = np.flip(np.rot90(image, k), axis), np.flip(np.rot90(label, k), axis)
        elif u < 0.75:
            angle = int(self.rng.integers(-20, 20))
            image = ndimage.rotate(image, angle, order=0, reshape=False)
            label = ndimage.rotate(label, angle, order=0, reshape=False)
        y, x = image.shape
        zoom = (SIZE[0] / y, SIZE[1] / x)
        image = ndimage.zoom(np.ascontiguousarray(image), zoom, order=0)
        label = ndimage.zoom(np.ascontiguousarray(label), zoom, order=0)
        return torch.from_numpy(image.astype(np.float32))[None], torch.from_numpy(label.astype(np.int64))


def reference_batches(items, batches: int, workers: int) -> tuple[float, float]:
    """Seconds per batch (wall, process CPU) of the two per-sample DataLoader streams."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    half = len(items) // 2
    loaders = [DataLoader(PerSampleSet(part, seed), batch_size=bs, num_workers=workers,
                          sampler=RandomSampler(range(len(part)), replacement=True, num_samples=bs * (batches + 1),
                                                generator=torch.Generator().manual_seed(seed)))
               for seed, (part, bs) in enumerate(((items[:half], LABELED), (items[half:], UNLABELED)))]
    streams = [iter(loader) for loader in loaders]
    for s in streams:  # the first batch starts the workers
        next(s)
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(batches):
        for s in streams:
            next(s)
    return (time.perf_counter() - w0) / batches, (time.process_time() - c0) / batches


def resident_batches(items, batches: int, device: str) -> tuple[float, float]:
    """Seconds per batch (wall, process CPU) of the resident set and the batched augmentation."""
    import torch

    from semiseg.engine.data import ResidentSet, StreamSampler, resize_slices

    half = len(items) // 2
    sets, samplers = [], []
    for stream, (part, bs) in enumerate(((items[:half], LABELED), (items[half:], UNLABELED))):
        zoomed = [resize_slices(img[None], lab[None], SIZE) for img, lab in part]
        images = torch.from_numpy(np.stack([z[0][0] for z in zoomed])[:, None]).to(device)
        labels = torch.from_numpy(np.stack([z[1][0] for z in zoomed])).to(device)
        sets.append(ResidentSet(2, SIZE, device, images, labels))
        samplers.append(StreamSampler(len(part), bs, 0, stream))

    def one(it: int) -> None:
        g = torch.Generator(device=device).manual_seed(it)
        for rs, sampler in zip(sets, samplers):
            rs.batch(sampler.indices(it), g, with_label=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    one(0)
    w0, c0 = time.perf_counter(), time.process_time()
    for it in range(1, batches + 1):
        one(it)
    return (time.perf_counter() - w0) / batches, (time.process_time() - c0) / batches


def compare(batches: int = 20, workers: int = 0, device: str = "cpu", n: int = 240) -> dict:
    items = slices(n)
    return {"reference": reference_batches(items, batches, workers), "semiseg": resident_batches(items, batches, device),
            "batches": batches, "workers": workers, "device": device}


def table(r: dict) -> list[str]:
    ref, ours = r["reference"], r["semiseg"]
    return [f"batch preparation: {LABELED} + {UNLABELED} slices of {SIZE[0]}², {r['batches']} batches, "
            f"reference DataLoader with {r['workers']} worker(s), semiseg on {r['device']}",
            "| pipeline | wall s / batch | CPU s / batch (this process) |", "| --- | ---: | ---: |",
            f"| per-sample DataLoader (reference) | {ref[0]:.4f} | {ref[1]:.4f} |",
            f"| resident set + batched augmentation | {ours[0]:.4f} | {ours[1]:.4f} |",
            f"| reference ÷ semiseg | {ref[0] / ours[0]:.2f}x | {ref[1] / max(ours[1], 1e-9):.2f}x |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    print("\n".join(table(compare(args.batches, args.workers, args.device))))


if __name__ == "__main__":
    main()
