"""CRLN's strong view (Wang et al., arXiv:2502.11456; its code's ``generate_unsup_data`` and
``transform_u``): the student's strongly augmented unlabeled images, with the teacher's labels
and confidences following every geometric change (used by :class:`semiseg.methods.crln.CRLN`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["beta_4_4", "strong_view"]


def beta_4_4(n: int, generator: torch.Generator) -> Tensor:
    """``n`` draws of Beta(4, 4) from ``generator``: the 4th smallest of 7 uniforms."""
    return torch.rand(n, 7, generator=generator).sort(dim=1).values[:, 3]


def _fit(x: Tensor, h: int, w: int, fill: float | None) -> Tensor:
    """Centre-crop or pad the last two axes of ``x`` to ``(h, w)``: reflect-padded when ``fill``
    is None, else padded with ``fill``."""
    dh, dw = h - x.shape[-2], w - x.shape[-1]
    if dh > 0 or dw > 0:
        ph, pw = max(dh, 0), max(dw, 0)
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        if fill is None:
            lead, flat = x.shape[:-2], x.reshape(1, -1, *x.shape[-2:])
            flat = F.pad(flat, pad, mode="reflect")
            x = flat.reshape(*lead, *flat.shape[-2:])
        else:
            x = F.pad(x, pad, value=fill)
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w]


def strong_view(image: Tensor, label: Tensor, conf: Tensor, generator: torch.Generator, *,
                scale: tuple[float, float] = (0.5, 1.5), noise_std: float = 0.1) -> tuple[Tensor, Tensor, Tensor]:
    """The strong view of unlabeled images ``(B, C, *spatial)`` with the teacher's labels and
    confidences ``(B, *spatial)`` following every geometric change (the code's
    ``generate_unsup_data`` and ``transform_u``):

    1. per sample, an in-plane rescale by ``s ~ U(scale)`` (image (bi/tri)linear, labels and
       confidences nearest), centre-cropped or padded back (image: reflect; label: −1, ignored;
       confidence: 0);
    2. CutMix: ``λ ~ Beta(4, 4)`` per batch, a box of ``int(W√(1−λ)) × int(H√(1−λ))`` in-plane
       over the full depth, its centre per sample in ``[W/8, W) × [H/8, H)`` (clipped at the
       border), pasted from ``randperm`` partners (a sample may be its own);
    3. per sample: brightness ``×U(0.75, 1.25)`` with p = 0.8, its factor drawn per channel and
       clipped to the channel's range (the code clips to [0, 1] on min-max images of one channel;
       the store's volumes are not min-max normalised);
       noise ``clip(N(0, σ²), ±2σ)`` with p = 0.5; an in-plane rot90 (half turns on a
       non-square plane) and a flip with p = 0.5.
    """
    b, device = image.shape[0], image.device
    h, w = image.shape[-2:]
    imgs, labs, confs = [], [], []
    for i in range(b):
        s = scale[0] + (scale[1] - scale[0]) * float(torch.rand((), generator=generator))
        size = (*image.shape[2:-2], max(1, round(h * s)), max(1, round(w * s)))
        mode = "trilinear" if image.dim() == 5 else "bilinear"
        x = F.interpolate(image[i:i + 1], size=size, mode=mode, align_corners=False)
        y = F.interpolate(label[i:i + 1, None].float(), size=size, mode="nearest")
        c = F.interpolate(conf[i:i + 1, None].float(), size=size, mode="nearest")
        imgs.append(_fit(x, h, w, None))
        labs.append(_fit(y, h, w, -1.0)[:, 0].long())
        confs.append(_fit(c, h, w, 0.0)[:, 0])
    x, y, c = torch.cat(imgs), torch.cat(labs), torch.cat(confs)
    # CutMix
    lam = float(beta_4_4(1, generator))
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    partner = torch.randperm(b, generator=generator).tolist()
    x0, y0, c0 = x.clone(), y.clone(), c.clone()
    for i in range(b):
        cy = int(torch.randint(h // 8, h, (), generator=generator))
        cx = int(torch.randint(w // 8, w, (), generator=generator))
        t, bo = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        le, r = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        j = partner[i]
        x[i, ..., t:bo, le:r] = x0[j, ..., t:bo, le:r]
        y[i, ..., t:bo, le:r] = y0[j, ..., t:bo, le:r]
        c[i, ..., t:bo, le:r] = c0[j, ..., t:bo, le:r]
    # per-sample photometric and rot/flip
    out_x, out_y, out_c = [], [], []
    for i in range(b):
        u = torch.rand(3, generator=generator)
        factor = (0.75 + 0.5 * torch.rand(x.shape[1], generator=generator).double()).to(device, x.dtype)
        factor = factor.view(-1, *([1] * (x.dim() - 2)))  # per channel
        k = int(torch.randint(0, 4, (), generator=generator))
        axis = int(torch.randint(0, 2, (), generator=generator))
        noise = torch.randn(x.shape[1:], generator=generator).to(device) * noise_std
        xi, yi, ci = x[i], y[i], c[i]
        if u[0] < 0.8:
            spatial = tuple(range(1, xi.dim()))
            low, high = xi.amin(spatial, keepdim=True), xi.amax(spatial, keepdim=True)
            xi = torch.minimum(torch.maximum(xi * factor, low), high)
        if u[1] < 0.5:
            xi = xi + noise.clamp(-2 * noise_std, 2 * noise_std)
        if u[2] < 0.5:
            k = k if h == w else 2 * (k % 2)
            xi = torch.flip(torch.rot90(xi, k, dims=(-2, -1)), dims=(xi.dim() - 2 + axis,))
            yi = torch.flip(torch.rot90(yi, k, dims=(-2, -1)), dims=(yi.dim() - 2 + axis,))
            ci = torch.flip(torch.rot90(ci, k, dims=(-2, -1)), dims=(ci.dim() - 2 + axis,))
        out_x.append(xi)
        out_y.append(yi)
        out_c.append(ci)
    return torch.stack(out_x), torch.stack(out_y), torch.stack(out_c)
