"""The papers' augmentations, batched on the training device with torch.

The common semi-supervised code augments one sample at a time on the CPU with scipy; with a
small, resident training set that starves a GPU. Here one call transforms a whole batch:

- 2D (the ``RandomGenerator`` of ALHVR's and BCP's code, the version of SSL4MIS's generator the
  ACDC papers trained with): with p = 0.5 a random rot90 (k ∈ {0,1,2,3}) followed by a random
  flip, otherwise with p = 0.5 a rotation by an integer angle in [-20, 19] degrees
  (``np.random.randint(-20, 20)``), otherwise nothing: 0.5 / 0.25 / 0.25. (SSL4MIS's own
  generator has since been changed to 0.5 rot90-flip / 0.5 rotation / never nothing; we follow
  the papers' copies.) SSL4MIS rotates with ``ndimage.rotate(order=0, reshape=False)``: nearest
  neighbour for the image as for the label, and zero outside the input. Everything is one
  affine map per sample applied to the batch at once (:func:`warp_2d`, nearest for images as
  SSL4MIS, and for labels). Rotations by multiples of 90° and flips map
  pixel centres onto pixel centres of a square image, so they are exact; a rotation reproduces
  ``ndimage.rotate`` pixel for pixel (same angle sign, centre, nearest rounding and border).
  SSL4MIS augments the slice at its own size and then zooms it to 256 x 256 (order 0); the
  resident set is zoomed once at load time (``semiseg.engine.data``) and augmented at
  256 x 256, which for a non-square slice rotates in the zoomed pixel grid.
- 3D (UA-MT / BCP Left Atrium ``RandomRotFlip``): a random crop of the patch size (already
  done by the sampler) then a random rot90 in the axial plane and a random flip along one of
  the two in-plane axes. The store's volumes are ``(Z, Y, X)``: patches ``(B, C, D, H, W)`` are
  rotated in (H, W) and flipped along H or W, never along the slice axis D (the LA files'
  ``(X, Y, Z)``: ``np.rot90`` in (X, Y), ``np.flip`` along axis 0 or 1).

Randomness comes from a ``torch.Generator`` the caller seeds per iteration, so a resumed run
draws the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["affine_2d", "augment_2d", "augment_3d", "rotation_2d", "warp_2d"]


def _rotation_matrices(degrees: torch.Tensor) -> torch.Tensor:
    """``(n, 2, 2)`` float64 rotations in grid_sample's (x, y) coordinates, with
    ``ndimage.rotate``'s sign: a positive angle turns the content as ``ndimage.rotate(img, angle)``.

    Float64, as scipy computes: in float32 a source coordinate that is exactly ``k + 0.5`` can
    land on the other side of the rounding boundary.
    """
    rad = degrees.to(torch.float64) * (math.pi / 180)
    c, s = torch.cos(rad), torch.sin(rad)
    return torch.stack([torch.stack([c, -s], dim=-1), torch.stack([s, c], dim=-1)], dim=-2)


def rotation_2d(degrees: torch.Tensor) -> torch.Tensor:
    """``(n, 2, 3)`` affine matrices rotating by ``degrees`` about the image centre."""
    theta = torch.zeros(degrees.shape[0], 2, 3, dtype=torch.float64)
    theta[:, :, :2] = _rotation_matrices(degrees)
    return theta


def affine_2d(n: int, generator: torch.Generator, max_angle: int = 20) -> torch.Tensor:
    """Per-sample 2×3 affine matrices (normalised coordinates, float64) of the SSL4MIS policy.

    Angles are integers in ``[-max_angle, max_angle - 1]``, as ``np.random.randint(-20, 20)``.
    """
    u = torch.rand(n, 2, generator=generator)
    k = torch.randint(0, 4, (n,), generator=generator)
    flip_axis = torch.randint(0, 2, (n,), generator=generator)
    angle = torch.randint(-max_angle, max_angle, (n,), generator=generator)
    rot_flip = u[:, 0] > 0.5
    rotate = (~rot_flip) & (u[:, 1] > 0.5)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    # rot90 by k quarter turns, then a flip along x or y; rounded so the entries are exact.
    rf = _rotation_matrices(k * 90).round()
    flip = torch.ones(n, 2, dtype=torch.float64)
    flip[torch.arange(n), flip_axis] = -1
    rf = rf * flip[:, None, :]
    theta[rot_flip, :, :2] = rf[rot_flip]
    theta[rotate, :, :2] = _rotation_matrices(angle)[rotate]
    return theta


def _source_pixels(theta: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each output pixel samples the input, in input pixel units ``(B, H, W)`` each (x, y):
    grid_sample's convention with ``align_corners=False``, computed in float64.

    With ``J = j + 1/2 − w/2`` and ``I = i + 1/2 − h/2`` (column j, row i, both about the
    centre), the normalised map ``theta`` is, in pixels,
    ``x = t00·J + t01·(w/h)·I + (w/2)(t02 + 1) − 1/2`` and
    ``y = t10·(h/w)·J + t11·I + (h/2)(t12 + 1) − 1/2``.
    """
    t = theta[:, :, :, None, None]  # broadcast over (H, W)
    jj = (torch.arange(w, dtype=torch.float64, device=theta.device) + 0.5 - w / 2).view(1, 1, w)
    ii = (torch.arange(h, dtype=torch.float64, device=theta.device) + 0.5 - h / 2).view(1, h, 1)
    px = t[:, 0, 0] * jj + (t[:, 0, 1] * (w / h) * ii + (w / 2) * (t[:, 0, 2] + 1) - 0.5)
    py = t[:, 1, 0] * (h / w) * jj + (t[:, 1, 1] * ii + (h / 2) * (t[:, 1, 2] + 1) - 0.5)
    return px, py


def warp_2d(image: torch.Tensor, label: torch.Tensor | None, theta: torch.Tensor):
    """Apply ``theta`` (B, 2, 3) to ``image`` (B, C, H, W) and ``label`` (B, H, W) or None.

    As ``ndimage.rotate(..., order=0, reshape=False)`` (``mode="constant"``, ``cval=0``): an
    output pixel takes the input pixel nearest its source point (a half rounds up), and 0 where
    the source point lies outside ``[0, n - 1]`` on either axis (``grid_sample`` would still
    round a point up to half a pixel outside onto the border pixel). Images and labels alike
    (SSL4MIS's ``RandomGenerator`` rotates and zooms images with ``order=0`` too).

    A sample whose map is a rot90 / flip / identity (integer linear part, no translation: three
    samples in four of the papers' policy) takes its pixel map from a cache of the eight such maps
    per image size; only the others are computed (:func:`_nearest_pixels`). The result is the same.
    """
    b, _, h, w = image.shape
    theta = theta.to(dtype=torch.float64)
    lin = theta.detach().cpu()
    exact = ((lin[:, :, :2].round() == lin[:, :, :2]).all(dim=(1, 2)) & (lin[:, :, 2] == 0).all(dim=1)).tolist()
    nearest = torch.empty(b, h * w, dtype=torch.long, device=image.device)
    inside = torch.empty(b, h * w, dtype=torch.bool, device=image.device)
    general = [i for i, e in enumerate(exact) if not e]
    if general:
        nearest[general], inside[general] = _nearest_pixels(theta[general].to(image.device), h, w)
    for i, e in enumerate(exact):
        if e:
            nearest[i], inside[i] = _exact_pixels(tuple(lin[i].flatten().tolist()), h, w, str(image.device))
    index = nearest.view(b, 1, h * w)

    def pick(x: torch.Tensor) -> torch.Tensor:  # (B, C', H, W) gathered at `index`
        out = x.flatten(2).gather(2, index.expand(-1, x.shape[1], -1)).view(x.shape)
        return out * inside.view(b, 1, h, w).to(out.dtype)

    return pick(image), (pick(label[:, None])[:, 0] if label is not None else None)


def _nearest_pixels(theta: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(nearest, inside)``, each ``(B, H·W)``: the flat input pixel nearest each output pixel's
    source point under ``theta`` (float64, on the output's device), and whether that point lies
    inside the input."""
    px, py = _source_pixels(theta, h, w)
    eps = 1e-9  # float64 noise on the exact rot90/flip coordinates of the border pixels
    inside = (px >= -eps) & (px <= w - 1 + eps) & (py >= -eps) & (py <= h - 1 + eps)
    # Nearest pixel, a half rounding up: floor(p + 0.5), which truncation gives wherever
    # p + 0.5 >= 0, i.e. for every point inside (the others are zeroed; the clamp keeps them
    # in range).
    ix = (px + 0.5).long().clamp_(0, w - 1)
    iy = (py + 0.5).long().clamp_(0, h - 1)
    b = theta.shape[0]
    return (iy * w + ix).view(b, h * w), inside.view(b, h * w)


@functools.lru_cache(maxsize=64)
def _exact_pixels(entries: tuple[float, ...], h: int, w: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_nearest_pixels` of one rot90 / flip / identity map (its six entries), cached."""
    theta = torch.tensor(entries, dtype=torch.float64, device=device).view(1, 2, 3)
    nearest, inside = _nearest_pixels(theta, h, w)
    return nearest[0], inside[0]


def augment_2d(image: torch.Tensor, label: torch.Tensor | None, generator: torch.Generator):
    """Augment a batch: `image` (B, C, H, W) float, `label` (B, H, W) integer or None."""
    return warp_2d(image, label, affine_2d(image.shape[0], generator))


def augment_3d(image: torch.Tensor, label: torch.Tensor | None, generator: torch.Generator):
    """Random rot90 in the (H, W) plane and a random flip along H or W, per sample, of
    (B, C, D, H, W) patches (labels (B, D, H, W))."""
    n = image.shape[0]
    k = torch.randint(0, 4, (n,), generator=generator).tolist()
    if image.shape[-1] != image.shape[-2]:  # a non-square plane only admits half turns
        k = [2 * (q % 2) for q in k]
    # 0 -> H, 1 -> W: the two in-plane axes (np.flip(axis=np.random.randint(0, 2)) in the code)
    axis = torch.randint(0, 2, (n,), generator=generator).tolist()
    imgs, labs = [], []
    for i in range(n):
        imgs.append(torch.flip(torch.rot90(image[i], k[i], dims=(2, 3)), dims=(axis[i] + 2,)))
        if label is not None:
            labs.append(torch.flip(torch.rot90(label[i], k[i], dims=(1, 2)), dims=(axis[i] + 1,)))
    return torch.stack(imgs), (torch.stack(labs) if label is not None else None)
