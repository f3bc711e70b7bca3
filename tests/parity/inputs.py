"""The inputs a parity record and its replay share, rebuilt from seeds on both sides.

A record (``tests/parity/records/<name>.json``) holds a short training trajectory produced by a
method's official code (``benchmarks/parity_record.py``); the replay
(``tests/test_parity_trajectories.py``) trains the project's method on the same inputs. Nothing
here is stored: both sides rebuild the same tensors from the seeds in the record.

- :func:`seeded_init`: every parameter filled in declaration order from one seeded generator
  (the official network and the project's declare theirs in the same order, so the order is the
  name map); batch-norm buffers keep their defaults.
- :func:`slices`: ``n`` synthetic 2D slices with a 4-class label (discs of classes 1–3 on
  background) and an image that shows them through noise.
- :func:`volumes`: ``n`` synthetic 3D volumes of ``depth`` such slices each, their label
  binarised (the two-class 3D scripts: MCF, DTC, SASSNet).
- :func:`batch_at`: the labeled and unlabeled slices iteration ``t`` trains on (augmentation
  replaced by a fixed cycle).
- :class:`NoiseStream`: a stand-in for ``torch.randn_like`` that returns the ``k``-th draw of a
  seeded stream on its ``k``-th call, so that input noise does not depend on how many draws
  dropout took before it (the official scripts and the project draw noise and dropout masks in
  different orders); dropout itself draws from the global generator, seeded per iteration by
  :func:`seed_iteration` on both sides.
- :class:`PerturbStream`: the same for the feature perturbations' draws (ALHVR) and BCP's
  paste-block corners.
- :func:`strong_stand_in`, :func:`box_stand_in`: UniMatch's strong views and CutMix boxes (its
  code makes them with PIL in its dataset), the ``k``-th of each from ``Generator(seed·1000 + k)``.
- :func:`weight_stats`, :func:`shapes_digest`: the statistics of final weights a record keeps,
  and a digest of the parameter shapes that the name map by order relies on.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["NoiseStream", "PerturbStream", "batch_at", "box_stand_in", "seed_iteration", "seeded_init",
           "shapes_digest", "slices", "stream_dropout", "strong_stand_in", "volumes", "weight_stats"]


@torch.no_grad()
def seeded_init(module: nn.Module, seed: int) -> nn.Module:
    """Fill ``module``'s parameters in declaration order from ``Generator(seed)``: weights of
    dimension > 1 ~ N(0, 1/fan_in), other ``*.weight`` ~ 1 + 0.1·N(0, 1), biases ~ 0.1·N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        draw = torch.randn(p.shape, generator=g, dtype=torch.float64)
        if p.dim() > 1:
            draw = draw / math.sqrt(p[0].numel())
        elif name.endswith("weight"):
            draw = 1.0 + 0.1 * draw
        else:
            draw = 0.1 * draw
        p.copy_(draw.to(p.dtype))
    return module


def slices(n: int, size: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` images ``(n, 1, size, size)`` (float64) and labels ``(n, size, size)`` (int64)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    labels = torch.zeros(n, size, size, dtype=torch.int64)
    for i in range(n):
        for cls in (1, 2, 3):
            cy, cx = (torch.rand(2, generator=g, dtype=torch.float64) * (size - 8) + 4).tolist()
            r = float(torch.rand((), generator=g, dtype=torch.float64)) * size / 6 + size / 10
            labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = cls
    images = labels.to(torch.float64) / 3 + 0.2 * torch.randn(n, size, size, generator=g, dtype=torch.float64)
    return images.unsqueeze(1), labels


def volumes(n: int, depth: int, size: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` images ``(n, 1, depth, size, size)`` (float64), each ``depth`` of :func:`slices`
    stacked, and binary labels ``(n, depth, size, size)`` (int64; foreground = any class)."""
    images, labels = slices(n * depth, size, seed)
    return images.reshape(n, 1, depth, size, size), (labels.reshape(n, depth, size, size) > 0).long()


def batch_at(t: int, images: Tensor, labels: Tensor, n_labeled: int, labeled_bs: int, unlabeled_bs: int
             ) -> tuple[Tensor, Tensor, Tensor]:
    """Iteration ``t``'s labeled images, their labels and the unlabeled images: the first
    ``n_labeled`` slices are the labeled pool, the rest the unlabeled one, each taken cyclically."""
    n_unlabeled = images.shape[0] - n_labeled
    li = [(t * labeled_bs + k) % n_labeled for k in range(labeled_bs)]
    ui = [n_labeled + (t * unlabeled_bs + k) % n_unlabeled for k in range(unlabeled_bs)]
    return images[li], labels[li], images[ui]


def seed_iteration(seed: int, t: int) -> None:
    """Seed the global generator (dropout masks) before iteration ``t``."""
    torch.manual_seed(seed * 1000 + t)


class NoiseStream:
    """``randn_like`` whose ``k``-th call returns ``N(0, 1)`` drawn from ``Generator(seed·1000 + k)``."""

    def __init__(self, seed: int):
        self.seed, self.calls = seed, 0

    def __call__(self, x: Tensor, **kwargs) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1000 + self.calls)
        self.calls += 1
        return torch.randn(x.shape, generator=g, dtype=torch.float64).to(kwargs.get("dtype") or x.dtype)


def weight_stats(params: list[tuple[str, Tensor]], named: list[int]) -> dict:
    """Sum and L2 norm of every parameter together, and of the parameters at positions ``named``
    (in declaration order) their shape, sum, L2 norm and a position-weighted sum
    ``Σ_i x_i·(1 + (i mod 7))`` over the flattened tensor (which a permutation would change)."""
    flat = torch.cat([p.detach().reshape(-1).to(torch.float64) for _, p in params])

    def checksum(x: Tensor) -> float:
        x = x.detach().reshape(-1).to(torch.float64)
        return float((x * (1 + torch.arange(x.numel(), dtype=torch.float64) % 7)).sum())

    return {"sum": float(flat.sum()), "l2": float(flat.norm()),
            "tensors": [{"index": i, "name": params[i][0], "shape": list(params[i][1].shape),
                         "sum": float(params[i][1].detach().sum()), "l2": float(params[i][1].detach().norm()),
                         "checksum": checksum(params[i][1])} for i in named]}


class PerturbStream:
    """The random draws of a feature perturbation (ALHVR's coin, feature-dropout γ and feature
    noise), the ``k``-th draw from ``Generator(seed·1000 + k)``: ``scalar(low, high)`` is
    ``low + (high − low)·u``, ``tensor(shape)`` is ``u`` of that shape (float64)."""

    def __init__(self, seed: int):
        self.seed, self.calls = seed, 0

    def _generator(self) -> torch.Generator:
        self.calls += 1
        return torch.Generator().manual_seed(self.seed * 1000 + self.calls - 1)

    def scalar(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self._generator(), dtype=torch.float64))

    def tensor(self, shape) -> Tensor:
        return torch.rand(tuple(shape), generator=self._generator(), dtype=torch.float64)

    def integer(self, low: int, high: int) -> int:
        """An integer in ``[low, high)``: ``low + ⌊u·(high − low)⌋`` (BCP's paste-block corner)."""
        return low + int(float(torch.rand((), generator=self._generator(), dtype=torch.float64)) * (high - low))


def shapes_digest(module: nn.Module) -> str:
    """A digest of the parameter shapes in declaration order: equal digests mean that
    :func:`seeded_init` fills the same tensors on both sides."""
    import hashlib

    shapes = ";".join(",".join(map(str, p.shape)) for p in module.parameters())
    return hashlib.sha1(shapes.encode()).hexdigest()[:16]


def strong_stand_in(x: Tensor, seed: int, k: int) -> Tensor:
    """The ``k``-th stand-in strong view of images ``x`` ``(B, 1, H, W)``: per sample
    ``x·a + 0.1·n`` with ``a ~ U(0.6, 1.4)`` and ``n ~ N(0, 1)`` per pixel, from ``Generator(seed·1000 + k)``."""
    g = torch.Generator().manual_seed(seed * 1000 + k)
    a = 0.6 + 0.8 * torch.rand(x.shape[0], 1, 1, 1, generator=g, dtype=torch.float64)
    return (x * a + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).to(x.dtype)


def box_stand_in(n: int, height: int, width: int, seed: int, k: int) -> Tensor:
    """The ``k``-th stand-in set of ``n`` CutMix boxes ``(n, height, width)`` (bool): each with
    probability 0.5 a box of a quarter to a half of each side at a uniform corner that fits, from
    ``Generator(seed·1000 + k)``."""
    g = torch.Generator().manual_seed(seed * 1000 + k)
    boxes = torch.zeros(n, height, width, dtype=torch.bool)
    for i in range(n):
        u = torch.rand(5, generator=g, dtype=torch.float64).tolist()
        bh, bw = int(height * (0.25 + 0.25 * u[1])), int(width * (0.25 + 0.25 * u[2]))
        y, x = int(u[3] * (height - bh + 1)), int(u[4] * (width - bw + 1))
        if u[0] < 0.5:
            boxes[i, y:y + bh, x:x + bw] = True
    return boxes


def stream_dropout(module: nn.Module, stream: PerturbStream) -> None:
    """Every ``Dropout3d`` of ``module`` draws its channel masks from ``stream`` (``u ≥ p`` kept,
    ``×1/(1 − p)``), so that two networks built by different code drop the same channels: each
    network's masks in its own call order, whichever network runs first (SGRS-Net's record)."""
    for m in module.modules():
        if isinstance(m, nn.Dropout3d):
            def forward(x, m=m):
                if not m.training:
                    return x
                keep = (stream.tensor(x.shape[:2]) >= m.p).to(x.dtype)
                return x * (keep / (1 - m.p)).view(*x.shape[:2], *([1] * (x.dim() - 2)))
            m.forward = forward
