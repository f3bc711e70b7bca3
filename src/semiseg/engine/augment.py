"""The papers' augmentations, batched on the training device with torch.

The common semi-supervised code augments one sample at a time on the CPU with scipy; with a
small, resident training set that starves a GPU. Here one call transforms a whole batch:

- 2D (SSL4MIS ``RandomGenerator``): with p = 0.5 a random rot90 (k ∈ {0,1,2,3}) followed by a
  random flip, otherwise with p = 0.5 a random rotation in ±20°, otherwise nothing. Everything
  is expressed as one affine map per sample and applied with a single ``grid_sample``
  (bilinear for images, nearest for labels). Rotations by multiples of 90° and flips map pixel
  centres onto pixel centres of a square image, so they are exact.
- 3D (UA-MT / BCP Left Atrium): a random crop of the patch size (already done by the sampler)
  followed by a random rot90 in the axial plane and a random flip along one axis.

Randomness comes from a ``torch.Generator`` the caller seeds per iteration, so a resumed run
draws the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["augment_2d", "augment_3d", "affine_2d"]


def affine_2d(n: int, generator: torch.Generator, max_angle: float = 20.0) -> torch.Tensor:
    """Per-sample 2×3 affine matrices (normalised coordinates) of the SSL4MIS policy."""
    u = torch.rand(n, 2, generator=generator)
    k = torch.randint(0, 4, (n,), generator=generator)
    flip_axis = torch.randint(0, 2, (n,), generator=generator)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * max_angle
    rot_flip = u[:, 0] > 0.5
    rotate = (~rot_flip) & (u[:, 1] > 0.5)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    # rot90 by k quarter turns, then a flip along x or y.
    quarter = k.float() * (math.pi / 2)
    c, s = torch.cos(quarter).round(), torch.sin(quarter).round()
    rf = torch.zeros(n, 2, 2)
    rf[:, 0, 0], rf[:, 0, 1], rf[:, 1, 0], rf[:, 1, 1] = c, -s, s, c
    flip = torch.ones(n, 2)
    flip[torch.arange(n), flip_axis] = -1
    rf = rf * flip[:, None, :]
    rad = angle * (math.pi / 180)
    rr = torch.zeros(n, 2, 2)
    rr[:, 0, 0], rr[:, 0, 1], rr[:, 1, 0], rr[:, 1, 1] = torch.cos(rad), -torch.sin(rad), torch.sin(rad), torch.cos(rad)
    theta[rot_flip, :, :2] = rf[rot_flip]
    theta[rotate, :, :2] = rr[rotate]
    return theta


def augment_2d(image: torch.Tensor, label: torch.Tensor | None, generator: torch.Generator):
    """Augment a batch: `image` (B, C, H, W) float, `label` (B, H, W) integer or None."""
    theta = affine_2d(image.shape[0], generator).to(device=image.device, dtype=image.dtype)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if label is None:
        return out, None
    lab = F.grid_sample(label[:, None].to(image.dtype), grid, mode="nearest", padding_mode="zeros",
                        align_corners=False)
    return out, lab[:, 0].round().to(label.dtype)


def augment_3d(image: torch.Tensor, label: torch.Tensor | None, generator: torch.Generator):
    """Random rot90 in the (H, W) plane and a random flip, per sample, of (B, C, D, H, W) patches."""
    n = image.shape[0]
    k = torch.randint(0, 4, (n,), generator=generator).tolist()
    if image.shape[-1] != image.shape[-2]:  # a non-square plane only admits half turns
        k = [2 * (q % 2) for q in k]
    axis = torch.randint(0, 3, (n,), generator=generator).tolist()
    imgs, labs = [], []
    for i in range(n):
        x = torch.flip(torch.rot90(image[i], k[i], dims=(2, 3)), dims=(axis[i] + 1,))
        imgs.append(x)
        if label is not None:
            labs.append(torch.flip(torch.rot90(label[i], k[i], dims=(1, 2)), dims=(axis[i],)))
    return torch.stack(imgs), (torch.stack(labs) if label is not None else None)
