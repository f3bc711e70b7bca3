"""UniMatch's strong views of unlabeled slices (its medical code's ``dataset/acdc.py`` and
``dataset/transform.py``, LiheYoung/UniMatch ``more-scenarios/medical``), batched on the training
device; used by :class:`semiseg.methods.unimatch.UniMatch`.

The weak view is the engine's (:mod:`semiseg.engine.augment`: the code's ``random_rot_flip`` /
``random_rotate`` at 0.5 / 0.25 / 0.25 is the same policy). Each strong view starts from it:

1. colour jitter with p = 0.8 (:func:`colour_jitter`): the code's
   ``ColorJitter(0.5, 0.5, 0.5, 0.25)`` on a greyscale PIL image, where saturation and hue leave
   a one-band image unchanged, so brightness and contrast only;
2. Gaussian blur with p = 0.5, σ ~ U(0.1, 2.0) (:func:`gaussian_blur`);
3. a CutMix box with p = 0.5 (:func:`cutmix_boxes`), filled by the method from another unlabeled
   image's strong view.

Where the code goes through 8-bit PIL images (``(img * 255).astype(uint8)`` for the weak and
strong views alike, ``Image.blend``'s rounding, PIL's three-pass box approximation of the
Gaussian), these work on the float slices: the values differ by the code's 1/255 quantisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["colour_jitter", "cutmix_boxes", "gaussian_blur", "gaussian_kernels", "strong_view"]

#: Tries at a box that fits before :func:`cutmix_boxes` gives up (the code loops for ever).
MAX_BOX_TRIES = 10_000


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """``(B,)`` values shaped to broadcast over ``like`` ``(B, ...)``, on its device and dtype."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


def _per_channel(values: Tensor, like: Tensor) -> Tensor:
    """``(B·C,)`` values, sample-major, shaped ``(B, C, 1, ...)`` to broadcast over ``like``."""
    return values.to(device=like.device, dtype=like.dtype).view(*like.shape[:2], *([1] * (like.dim() - 2)))


def colour_jitter(image: Tensor, generator: torch.Generator, *, strength: float = 0.5, p: float = 0.8) -> Tensor:
    """Per sample of ``image`` ``(B, C, *spatial)`` in [0, 1], with probability ``p``: brightness
    ``x·b`` and contrast ``m + c·(x − m)`` (``m`` the channel's mean when the step runs), factors
    ``b, c ~ U(1 − strength, 1 + strength)`` drawn per channel (each input channel, an MR sequence,
    is jittered on its own; one channel draws as the code does), in a random order per sample
    (torchvision's ``randperm`` of the four; saturation and hue do nothing to a greyscale image),
    each clipped to [0, 1] (PIL's 0..255). Worked example: ``x = [0.2, 0.6]``, ``b = 1.5``,
    ``c = 0.5``: brightness first gives ``[0.3, 0.9]``, mean 0.6, then ``[0.45, 0.75]``; contrast
    first gives the same (both maps are linear in ``x`` and scale the mean alike): the order only
    matters where a value clips.
    """
    n, ch = image.shape[:2]
    apply = torch.rand(n, generator=generator) < p
    b = _per_channel(_uniform(n * ch, 1 - strength, 1 + strength, generator), image)
    c = _per_channel(_uniform(n * ch, 1 - strength, 1 + strength, generator), image)
    brightness_first = torch.rand(n, generator=generator) < 0.5
    dims = tuple(range(2, image.dim()))

    def brightness(x: Tensor) -> Tensor:
        return (x * b).clamp(0.0, 1.0)

    def contrast(x: Tensor) -> Tensor:
        m = x.mean(dim=dims, keepdim=True)
        return (m + c * (x - m)).clamp(0.0, 1.0)

    jittered = torch.where(_per_sample(brightness_first, image).bool(), contrast(brightness(image)),
                           brightness(contrast(image)))
    return torch.where(_per_sample(apply, image).bool(), jittered, image)


def gaussian_kernels(sigma: Tensor, radius: int) -> Tensor:
    """``(B, 2·radius + 1)`` normalised 1D Gaussian kernels of standard deviations ``sigma``
    ``(B,)``, float64; a σ of 0 gives the identity (a one at the centre)."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    s = sigma.to(torch.float64)[:, None]
    k = torch.where(s > 0, torch.exp(-0.5 * (x / s.clamp_min(1e-12)) ** 2), (x == 0).to(torch.float64))
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(image: Tensor, generator: torch.Generator, *, p: float = 0.5,
                  sigma: tuple[float, float] = (0.1, 2.0)) -> Tensor:
    """Per sample of ``image`` ``(B, C, H, W)``, with probability ``p``: a Gaussian blur of
    standard deviation ``σ ~ U(sigma)`` (PIL's ``GaussianBlur(radius=σ)``, whose radius is the
    standard deviation), separable, the kernel cut at ``⌈3σ⌉`` of the largest σ of the batch,
    borders replicated (PIL's box passes clamp at the edge)."""
    n, ch, h, w = image.shape
    apply = torch.rand(n, generator=generator) < p
    s = torch.where(apply, _uniform(n, sigma[0], sigma[1], generator), torch.zeros(n, dtype=torch.float64))
    if not bool(apply.any()):
        return image
    radius = max(1, math.ceil(3 * float(s.max())))
    k = gaussian_kernels(s, radius).to(device=image.device, dtype=image.dtype).repeat_interleave(ch, dim=0)
    x = F.pad(image.reshape(1, n * ch, h, w), (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k[:, None, None, :], groups=n * ch)  # along W
    x = F.conv2d(x, k[:, None, :, None], groups=n * ch)  # along H
    return x.reshape(n, ch, h, w)


def cutmix_boxes(n: int, height: int, width: int, generator: torch.Generator, *, p: float = 0.5,
                 area: tuple[float, float] = (0.02, 0.4), aspect: tuple[float, float] = (0.3, 1 / 0.3)) -> Tensor:
    """``n`` boolean masks ``(n, height, width)``, each with probability ``p`` one box of ones
    (the code's ``obtain_cutmix_box``): area ``A ~ U(area)·H·W``, then, until the box fits, an
    aspect ``r ~ U(aspect)``, width ``int(√(A/r))``, height ``int(√(A·r))`` and a top-left corner
    uniform over the image. Worked example, 256², ``A = 0.09·256² = 5898.24``, ``r = 1``: a
    76 × 76 box whose corner must fall in ``[0, 180]²`` to fit. The code's images are square; a
    rectangle draws the corner over ``[0, W) × [0, H)``.
    """
    boxes = torch.zeros(n, height, width, dtype=torch.bool)
    for i in range(n):
        if float(torch.rand((), generator=generator)) > p:
            continue
        size = float(_uniform(1, area[0], area[1], generator)) * height * width
        for _ in range(MAX_BOX_TRIES):
            r = float(_uniform(1, aspect[0], aspect[1], generator))
            bw, bh = int(math.sqrt(size / r)), int(math.sqrt(size * r))
            x = int(torch.randint(0, width, (), generator=generator))
            y = int(torch.randint(0, height, (), generator=generator))
            if x + bw <= width and y + bh <= height:
                break
        else:
            raise ValueError(f"no CutMix box of area {size:.0f} fits a {height} x {width} image in "
                             f"{MAX_BOX_TRIES} tries")
        boxes[i, y:y + bh, x:x + bw] = True
    return boxes


def strong_view(image: Tensor, generator: torch.Generator) -> Tensor:
    """Colour jitter then blur (steps 1 and 2 of the module docstring) of a batch ``(B, C, H, W)``."""
    return gaussian_blur(colour_jitter(image, generator), generator)
