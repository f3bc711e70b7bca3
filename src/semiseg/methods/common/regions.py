"""ALHVR's regions: the adaptive threshold γ, the masks Ω1/Ω2/Ω3 and class prototypes.

Lei et al., "Adaptive Learning of High-Value Regions for Semi-Supervised Medical Image
Segmentation" (ICCV 2025, https://github.com/ziziyao/ALHVR) sort the unlabeled pixels of a batch by
the confidences ``con_a = max_c p_a2``, ``con_b = max_c p_b2`` of two networks' *perturbed*
predictions:

- :func:`adaptive_threshold`: ``γ`` is the mean of the lowest ``K = floor(β · N)`` values of
  ``(con_a + con_b) / 2`` over the ``N`` pixels of the batch (one γ per batch, as the public
  code computes it). Worked example: confidences ``[0.9, 0.5, 0.7, 0.3, 0.8]``, ``β = 0.8``:
  ``K = 4``, the lowest four are ``0.3, 0.5, 0.7, 0.8`` and ``γ = 2.3 / 4 = 0.575``.
- :func:`split_regions`: a network is *reliable* at a pixel when its confidence is ``>= γ``.
  ``Ω1`` (reliable stable): both reliable; ``Ω2`` (reliable unstable): exactly one;
  ``Ω3`` (unreliable stable): neither. ``Ω2`` splits into the pixels where network A learns from
  B (``con_a < γ <= con_b``, the paper's ``Mask_a``) and the mirror ``Mask_b``. Reading
  "reliable" as ``>= γ`` everywhere makes the three regions a partition even where a confidence
  equals γ exactly (the paper and code write ``con_b > γ`` in ``Mask_a`` and ``>= γ`` in Ω1,
  which leaves such pixels in no region or in two). The same regions are the R1/R2/R3 of the
  paper's region study (``cps_regions``).
- :func:`class_prototypes`: the mean feature of the pixels of each pseudo-label class
  (masked average pooling, as in the prototype methods ALHVR builds on);
  :func:`prototype_similarity` is the cosine similarity of every pixel's feature to every class
  prototype, the ``sim`` of CG-CPCL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from semiseg.methods.common.losses import one_hot

__all__ = [
    "PROTOTYPE_POOLINGS",
    "REGION_NAMES",
    "Regions",
    "adaptive_threshold",
    "class_prototypes",
    "prototype_similarity",
    "resize_features",
    "split_regions",
]

#: The region names of the paper's region study, in order: R1 = Ω1, R2 = Ω2, R3 = Ω3.
REGION_NAMES = ("R1", "R2", "R3")

#: How :func:`class_prototypes` pools the batch (see there).
PROTOTYPE_POOLINGS = ("batch", "sample")


def adaptive_threshold(con_a: Tensor, con_b: Tensor, beta: float) -> Tensor:
    """``γ``: the mean of the lowest ``K = floor(β · N)`` values of ``(con_a + con_b) / 2``.

    ``con_a`` and ``con_b`` are per-pixel confidences of the same shape (any shape; all
    ``N`` elements count). ``K`` is at least 1, so a very small ``β · N`` still gives the
    minimum rather than the mean of nothing. The result is a detached 0-d tensor: a threshold,
    not something to differentiate.
    """
    if con_a.shape != con_b.shape:
        raise ValueError(f"confidence shapes differ: {tuple(con_a.shape)} vs {tuple(con_b.shape)}")
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    con = (0.5 * (con_a.detach() + con_b.detach())).flatten().float()
    # floor(β·N) as the public code's int(); the 1e-9 keeps 0.7 * 10 from flooring to 6.
    k = max(1, math.floor(beta * con.numel() + 1e-9))
    return torch.topk(con, k, largest=False, sorted=False).values.mean()


@dataclass(frozen=True)
class Regions:
    """Where each network is reliable (``con >= γ``), and the regions that follow from it."""

    gamma: Tensor
    reliable: tuple[Tensor, Tensor]

    @property
    def omega1(self) -> Tensor:
        """Reliable stable: both networks reliable."""
        return self.reliable[0] & self.reliable[1]

    @property
    def omega2(self) -> Tensor:
        """Reliable unstable: exactly one network reliable (``learner(0) | learner(1)``)."""
        return self.reliable[0] ^ self.reliable[1]

    @property
    def omega3(self) -> Tensor:
        """Unreliable stable: neither network reliable."""
        return ~(self.reliable[0] | self.reliable[1])

    def learner(self, i: int) -> Tensor:
        """Pixels where network ``i`` is unreliable and the other reliable: ``i`` learns there
        from the other (``Mask_a`` for ``i = 0``, ``Mask_b`` for ``i = 1``)."""
        if i not in (0, 1):
            raise ValueError(f"network index must be 0 or 1, got {i}")
        return ~self.reliable[i] & self.reliable[1 - i]

    def region(self, name: str) -> Tensor:
        """The mask of region ``"R1"``, ``"R2"`` or ``"R3"`` (Ω1, Ω2, Ω3)."""
        masks = {"R1": self.omega1, "R2": self.omega2, "R3": self.omega3}
        if name not in masks:
            raise ValueError(f"unknown region {name!r}; known: {', '.join(REGION_NAMES)}")
        return masks[name]

    def label_map(self) -> Tensor:
        """An integer map: 1 in Ω1, 2 in Ω2, 3 in Ω3 (every pixel is in exactly one)."""
        return 3 - self.reliable[0].long() - self.reliable[1].long()

    def fractions(self) -> dict[str, Tensor]:
        """Share of pixels in each region, for logging: 0-d tensors, which the engine reads with
        the loss terms in its one transfer per step."""
        return {f"omega{i}": m.float().mean() for i, m in
                enumerate((self.omega1, self.omega2, self.omega3), start=1)}


def split_regions(con_a: Tensor, con_b: Tensor, beta: float) -> Regions:
    """γ from :func:`adaptive_threshold` and each network's reliability ``con >= γ``.

    Worked example (β = 0.8): ``con_a = [0.9, 0.4, 0.8, 0.2, 0.6]``,
    ``con_b = [0.9, 0.6, 0.6, 0.4, 0.6]`` average to ``[0.9, 0.5, 0.7, 0.3, 0.6]``;
    γ = (0.3 + 0.5 + 0.6 + 0.7) / 4 = 0.525; reliable A = ``[1, 0, 1, 0, 1]``,
    reliable B = ``[1, 1, 1, 0, 1]``: Ω1 = pixels 0, 2, 4; Ω2 = pixel 1 (A learns from B);
    Ω3 = pixel 3.
    """
    gamma = adaptive_threshold(con_a, con_b, beta)
    return Regions(gamma=gamma, reliable=(con_a.detach() >= gamma, con_b.detach() >= gamma))


def resize_features(features: Tensor, size) -> Tensor:
    """Bi/trilinear upsampling of ``(B, D, *spatial)`` features to ``size`` (no-op if equal).

    ``align_corners=False``, PyTorch's default, which the public ALHVR code uses.
    """
    size = tuple(int(s) for s in size)
    if tuple(features.shape[2:]) == size:
        return features
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[features.dim() - 2]
    return F.interpolate(features, size=size, mode=mode, align_corners=False)


def class_prototypes(features: Tensor, labels: Tensor, num_classes: int, *,
                     pooling: str = "batch", smoothing: float | None = None) -> Tensor:
    """Per-class mean feature under hard ``labels``: a ``(num_classes, D)`` tensor.

    Args:
        features: ``(B, D, *spatial)``, at the labels' resolution (see :func:`resize_features`).
        labels: ``(B, *spatial)`` integer class per pixel (a network's pseudo label).
        num_classes: number of classes ``C``.
        pooling: ``"batch"``: ``p_c = sum_{b,x} f·[y = c] / sum_{b,x} [y = c]``, the mean over
            every pixel of class ``c`` in the batch; ``"sample"``: the mean over the batch of the
            per-sample class means, a sample without class ``c`` contributing a zero vector
            (the public ALHVR code's ``getPrototype_2D``/``_3D``). Under cosine similarity the
            two differ only in how samples are weighted: by pixel count, or equally.
        smoothing: None divides each feature sum by its pixel count (at least 1): the mean;
            a number ``s`` divides by ``count + s`` instead, as the public ALHVR code
            (``s = 1e-5``), which shrinks a class of ``n`` pixels by ``n / (n + s)``.

    A class absent from the batch gets a zero prototype, whose cosine similarity to anything
    is 0. Gradients flow to ``features`` (detach them to stop it).

    Worked example: one sample with D = 1 and four pixels, features ``[1, 3, 5, 7]``, labels
    ``[0, 1, 1, 1]``, three classes: ``p_0 = 1``, ``p_1 = (3 + 5 + 7) / 3 = 5``, ``p_2 = 0``;
    with ``smoothing=0.5``: ``p_0 = 1 / 1.5``, ``p_1 = 15 / 3.5``, ``p_2 = 0``.
    """
    if pooling not in PROTOTYPE_POOLINGS:
        raise ValueError(f"pooling must be one of {PROTOTYPE_POOLINGS}, got {pooling!r}")
    if labels.shape != features.shape[:1] + features.shape[2:]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match features "
                         f"{tuple(features.shape)} (need (B, *spatial) for (B, D, *spatial))")
    mask = one_hot(labels, num_classes).to(features.dtype)  # (B, C, *spatial)
    f = features.flatten(2)                                  # (B, D, P)
    m = mask.flatten(2)                                      # (B, C, P)
    sums = torch.einsum("bdp,bcp->bcd", f, m)                # (B, C, D)
    counts = m.sum(dim=2)                                    # (B, C)

    def divisor(n: Tensor) -> Tensor:
        return n.clamp_min(1.0) if smoothing is None else n + smoothing

    if pooling == "batch":
        return sums.sum(0) / divisor(counts.sum(0)).unsqueeze(1)
    return (sums / divisor(counts).unsqueeze(2)).mean(0)


def prototype_similarity(features: Tensor, prototypes: Tensor, *, scale: float = 1.0,
                         eps: float = 1e-8) -> Tensor:
    """Cosine similarity of each pixel's feature to each prototype, times ``scale``.

    ``features`` ``(B, D, *spatial)``, ``prototypes`` ``(C, D)`` -> ``(B, C, *spatial)``.
    Norms are clamped at ``eps``, so a zero prototype (an absent class) or a zero feature
    gives similarity 0. ``scale`` is the public code's ``scaler`` (1 there): CG-CPCL feeds the
    similarities to a cross-entropy as logits.
    """
    if features.shape[1] != prototypes.shape[1]:
        raise ValueError(f"feature dim {features.shape[1]} != prototype dim {prototypes.shape[1]}")
    f = F.normalize(features, dim=1, eps=eps)
    p = F.normalize(prototypes, dim=1, eps=eps)
    return scale * torch.einsum("bd...,cd->bc...", f, p)
