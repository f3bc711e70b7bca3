"""Pseudo-label helpers: sharpening, entropy, largest connected component.

- :func:`sharpen` is the element-wise sharpening of MC-Net (Wu et al., "Semi-supervised Left
  Atrium Segmentation with Mutual Consistency Training", MICCAI 2021, arXiv:2103.02911) and
  MC-Net+ (MedIA 2022): ``p^(1/T) / (p^(1/T) + (1 - p)^(1/T))``. It treats every element as the
  probability of a binary event against its complement, which is exact for a two-class softmax
  (where ``1 - p`` *is* the other class) and is how MC-Net applies it channel-wise to
  multi-class outputs too.
- :func:`sharpen_distribution` is MixMatch's temperature sharpening (Berthelot et al.,
  NeurIPS 2019, arXiv:1905.02249): ``p_c^(1/T) / sum_k p_k^(1/T)`` along the class dimension,
  which keeps a distribution a distribution. The two agree for two classes.
- :func:`entropy` is the per-position Shannon entropy used as uncertainty by UA-MT (Yu et al.,
  MICCAI 2019, arXiv:1907.07034) and by entropy-minimisation terms.
- :func:`largest_connected_component` is BCP's post-processing of teacher pseudo-labels
  (Bai et al., "Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation",
  CVPR 2023, arXiv:2305.00673, ``get_ACDC_2DLargestCC`` / ``LargestCC_pancreas``).
"""

from __future__ import annotations

from itertools import permutations

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

__all__ = [
    "entropy",
    "largest_connected_component",
    "mutual_consistency",
    "sharpen",
    "sharpen_distribution",
]


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def sharpen(p: Tensor, temperature: float) -> Tensor:
    """Element-wise binary sharpening ``p^(1/T) / (p^(1/T) + (1 - p)^(1/T))`` (MC-Net).

    ``T < 1`` pushes each probability towards 0 or 1, ``T = 1`` is the identity and 0.5 is a
    fixed point. Worked example: ``p = 0.8, T = 0.5`` gives ``0.64 / (0.64 + 0.04) =
    0.9411765``. MC-Net uses ``T = 0.1``. ``p`` must lie in ``[0, 1]``.
    """
    _check_temperature(temperature)
    a = p.pow(1.0 / temperature)
    b = (1.0 - p).pow(1.0 / temperature)
    return a / (a + b)


def mutual_consistency(probs: list[Tensor], temperature: float) -> Tensor:
    """``Σ_{i≠j} mean((p_i − sharpen(p_j))²)`` over the ordered pairs of several predictions'
    probability maps (MC-Net's decoders, CAML's two networks), each mean over every element. The
    sharpened targets are not detached: both codes back-propagate through both sides. Worked
    example, two maps, one pixel of two classes, ``T = 0.5``: ``p_1 = [0.75, 0.25]``,
    ``p_2 = [0.5, 0.5]``: ``sharpen(p_1) = [0.9, 0.1]``, ``sharpen(p_2) = p_2``;
    ``mean([0.25², 0.25²]) + mean([0.4², 0.4²]) = 0.0625 + 0.16 = 0.2225``."""
    targets = [sharpen(p, temperature) for p in probs]
    return sum(((probs[i] - targets[j]) ** 2).mean() for i, j in permutations(range(len(probs)), 2))


def sharpen_distribution(p: Tensor, temperature: float, dim: int = 1) -> Tensor:
    """Distribution sharpening ``p^(1/T) / sum_k p_k^(1/T)`` along ``dim`` (MixMatch).

    Computed as ``softmax(log(p) / T)`` for numerical stability at small ``T``; zero
    probabilities stay zero (their gradient is undefined; sharpened targets are used
    detached). Worked example: ``[0.8, 0.2]`` with ``T = 0.5`` gives
    ``[0.64, 0.04] / 0.68 = [0.9411765, 0.0588235]``.
    """
    _check_temperature(temperature)
    return torch.softmax(torch.log(p) / temperature, dim=dim)


def entropy(p: Tensor, dim: int = 1, eps: float = 1e-6, *, keepdim: bool = False,
            normalize: bool = False) -> Tensor:
    """Per-position entropy ``-sum_c p_c log(p_c + eps)`` in nats along ``dim``.

    ``eps = 1e-6`` inside the logarithm as in UA-MT/SSL4MIS; pass ``eps=0`` for the exact
    value where no probability is zero. ``normalize`` divides by ``log C`` so the result lies in
    ``[0, 1]`` (SSL4MIS's ``entropy_loss``). Worked example: ``[0.5, 0.5]`` has entropy
    ``ln 2 = 0.6931472`` (``0.6931452`` with ``eps = 1e-6``).
    """
    # xlogy: 0 * log(0) = 0, so eps=0 is usable when some probabilities are exactly zero.
    h = -torch.special.xlogy(p, p + eps).sum(dim=dim, keepdim=keepdim)
    if normalize:
        h = h / float(np.log(p.shape[dim]))
    return h


def largest_connected_component(label_map: Tensor, *, connectivity: int | None = None,
                                classes: list[int] | None = None, on_device: bool = False) -> Tensor:
    """Keep only the largest connected component of each foreground class, per sample.

    Args:
        label_map: integer labels ``(B, *spatial)`` (2D slices or 3D volumes), 0 = background.
        connectivity: neighbourhood as in ``scipy.ndimage.generate_binary_structure``: 1 =
            faces only (4 / 6-connectivity), ``ndim`` = full (8 / 26). ``None`` means full,
            the default of ``skimage.measure.label`` that BCP calls.
        classes: the foreground classes to process; default every non-zero label present.
        on_device: label on the map's own device (:func:`_largest_component_masks`) instead
            of the host round trip; the same result.

    Returns:
        A tensor of the same shape, dtype and device in which every voxel of class ``c`` that is
        not in the largest ``c``-component of its sample is set to background (0). Classes that
        are absent stay absent. Ties go to the component met first in C (raster) order, as
        ``np.argmax`` over component sizes does in BCP.

    By default this is a host round trip: the map is copied to the CPU, labelled with
    ``scipy.ndimage.label`` one sample and class at a time, and copied back (a few milliseconds
    for 24 ACDC slices of 256x256, but a device synchronisation and two transfers per step on a
    GPU). ``on_device`` keeps the map on its device and labels it by max-pool propagation
    (:func:`_largest_component_masks`), all samples at once, with the same result.
    """
    if label_map.dim() < 2:
        raise ValueError(f"label_map must be (B, *spatial), got shape {tuple(label_map.shape)}")
    if label_map.is_floating_point():
        raise ValueError("label_map must hold integer labels")
    spatial_dims = label_map.dim() - 1
    if connectivity is None:
        connectivity = spatial_dims
    if not 1 <= connectivity <= spatial_dims:
        raise ValueError(f"connectivity must be in [1, {spatial_dims}], got {connectivity}")
    structure = ndimage.generate_binary_structure(spatial_dims, connectivity)
    if on_device:
        out = label_map.detach().clone()
        present = classes if classes is not None else [int(c) for c in torch.unique(out) if c != 0]
        for c in present:
            mask = label_map == c
            out[mask & ~_largest_component_masks(mask, structure)] = 0
        return out

    labels = label_map.detach().cpu().numpy()
    out = labels.copy()
    for b in range(labels.shape[0]):
        sample = labels[b]
        present = classes if classes is not None else [int(c) for c in np.unique(sample) if c != 0]
        for c in present:
            components, n = ndimage.label(sample == c, structure=structure)
            if n <= 1:
                continue
            sizes = np.bincount(components.ravel())[1:]
            keep = int(np.argmax(sizes)) + 1
            out[b][(components != keep) & (components > 0)] = 0
    return torch.from_numpy(out).to(label_map.device)


def _largest_component_masks(mask: Tensor, structure: np.ndarray) -> Tensor:
    """Per sample of a boolean ``(B, *spatial)`` mask, the mask of its largest connected
    component under ``structure`` (scipy's), computed with tensor operations on the mask's device.

    Every voxel of the mask starts with the value ``N - i`` (``i`` its raster index in its sample,
    ``N`` the sample's size) and repeatedly takes the largest value among its neighbours in the
    mask (a 3x3(x3) max-pool for full connectivity, the maximum of the structure's shifts
    otherwise) until nothing changes: every component then holds ``N -`` the raster index of its
    first voxel, i.e. its own id, which is how scipy numbers components. The largest component
    wins; among equal sizes the one met first in raster order (the larger id), as ``np.argmax``
    over scipy's sizes. Worked example: the 1D row ``1 1 0 1 1`` (N = 5) starts as ``5 4 0 2 1``
    and settles at ``5 5 0 2 2``: two components of size 2, the first (id 5) is kept.
    The number of rounds is the longest path inside a component (convergence is checked every
    8 rounds, one host synchronisation each).
    """
    b, spatial = mask.shape[0], mask.shape[1:]
    n = int(np.prod(spatial))
    dtype = torch.float32 if n < 2**24 else torch.float64  # ids exact in the float type
    index = torch.arange(n, 0, -1, device=mask.device, dtype=dtype).view(1, *spatial)
    ids = torch.where(mask, index, torch.zeros((), dtype=dtype, device=mask.device))[:, None]
    inside = mask[:, None]
    full = bool(structure.all())
    offsets = [tuple(int(o) - 1 for o in off) for off in np.argwhere(structure)]
    pool = {1: torch.nn.functional.max_pool1d, 2: torch.nn.functional.max_pool2d,
            3: torch.nn.functional.max_pool3d}[len(spatial)]

    def spread(x: Tensor) -> Tensor:
        if full:
            return pool(x, 3, stride=1, padding=1)
        padded = torch.nn.functional.pad(x, (1, 1) * len(spatial))
        out = x
        for off in offsets:
            window = tuple(slice(1 + o, 1 + o + size) for o, size in zip(off, spatial))
            out = torch.maximum(out, padded[(slice(None), slice(None), *window)])
        return out

    while True:
        before = ids
        for _ in range(8):
            ids = torch.where(inside, spread(ids), ids)
        if torch.equal(ids, before):
            break
    ids = ids[:, 0].to(torch.int64)
    key = ids + (n + 1) * torch.arange(b, device=mask.device).view(b, *([1] * len(spatial)))
    values, counts = torch.unique(key[mask], return_counts=True)
    sample, own = values // (n + 1), values % (n + 1)
    best = torch.full((b,), -1, dtype=torch.int64, device=mask.device)
    best.scatter_reduce_(0, sample, counts * (n + 1) + own, "amax")
    keep = best % (n + 1)
    return mask & (ids == keep.view(b, *([1] * len(spatial))))
