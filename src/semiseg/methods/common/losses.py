"""Loss terms shared by the methods: soft Dice, Dice + CE, masked means.

The supervised term of the medical semi-supervised literature is ``0.5 * (CE + Dice)`` on the
labeled images (SSL4MIS, UA-MT, MC-Net, BCP...), with SSL4MIS's ``DiceLoss``:

- per class ``c``: ``1 - (2 sum(p_c t_c) + s) / (sum(p_c^2) + sum(t_c^2) + s)``, with the *squared*
  denominator of V-Net (Milletari et al., 3DV 2016, arXiv:1606.04797) and ``s = 1e-5``;
- the sums run over the **whole batch** and all positions together (one Dice per class per
  batch, not per sample);
- the classes' losses are averaged with equal weight, **background included**.

UA-MT's LA script takes the Dice of the foreground channel only; that is
``include_background=False`` with two classes. BCP multiplies every sum by a mask to restrict
the loss to the pasted or the surrounding region; that is ``mask=``. BCP's LA script and
SGRS-Net's region terms take another Dice, per sample with a linear denominator
(:func:`per_sample_dice_loss`; ``per_sample=True`` in :func:`dice_ce_loss`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DiceCE",
    "alhvr_code_dice_loss",
    "binary_dice_loss",
    "dice_ce_loss",
    "masked_mean",
    "one_hot",
    "per_sample_dice_loss",
    "reduce_region",
    "soft_dice_loss",
]


def one_hot(target: Tensor, num_classes: int) -> Tensor:
    """``(B, *spatial)`` integer labels -> ``(B, num_classes, *spatial)`` float one-hot.

    Built by comparison, so it does not synchronise with the device; labels outside
    ``[0, num_classes)`` give an all-zero column rather than an error.
    """
    classes = torch.arange(num_classes, device=target.device)
    classes = classes.view(1, num_classes, *([1] * (target.dim() - 1)))
    return (target.unsqueeze(1) == classes).float()


def _channel_mask(mask: Tensor, like: Tensor) -> Tensor:
    """A ``(B, *spatial)`` or ``(B, 1, *spatial)`` mask as ``(B, 1, *spatial)`` float."""
    if mask.dim() == like.dim() - 1:
        mask = mask.unsqueeze(1)
    if mask.dim() != like.dim() or mask.shape[1] != 1:
        raise ValueError(
            f"mask must be (B, *spatial) or (B, 1, *spatial) for input {tuple(like.shape)}, "
            f"got {tuple(mask.shape)}"
        )
    return mask.to(like.dtype)


def binary_dice_loss(probs: Tensor, target: Tensor, smooth: float = 1e-8) -> Tensor:
    """``1 − (2 Σ p·t + s) / (Σ p + Σ t + s)``, every sum over all elements of the two tensors
    together: the ``Binary_dice_loss`` of the 3D codes of MC-Net's family (SS-Net, CAML). Worked
    example: ``p = [0.8, 0.6]``, ``t = [1, 0]`` gives ``1 − 1.6 / 2.4 = 1/3`` (up to ``s``)."""
    target = target.to(probs.dtype)
    return 1.0 - (2.0 * (probs * target).sum() + smooth) / (probs.sum() + target.sum() + smooth)


def soft_dice_loss(probs: Tensor, target_onehot: Tensor, smooth: float = 1e-5, *,
                   mask: Tensor | None = None, include_background: bool = True) -> Tensor:
    """SSL4MIS's multi-class soft Dice loss (see the module docstring).

    Args:
        probs: class probabilities ``(B, C, *spatial)`` (softmax output).
        target_onehot: one-hot (or soft) target of the same shape.
        smooth: ``s`` added to numerator and denominator (1e-5 as in SSL4MIS).
        mask: optional ``(B, *spatial)`` / ``(B, 1, *spatial)`` weights multiplying every sum
            (BCP's masked Dice).
        include_background: average over all ``C`` classes (SSL4MIS) or over classes
            ``1..C-1`` only (UA-MT's foreground Dice for LA).

    Returns:
        Scalar loss. Worked example: ``p = [0.8, 0.6]``, ``t = [1, 0]`` for one class gives
        ``1 - (2 * 0.8 + s) / (0.64 + 0.36 + 1 + s) = 0.2`` (up to ``s``).
    """
    if probs.shape != target_onehot.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and target {tuple(target_onehot.shape)} "
                         "must have the same shape")
    target = target_onehot.to(probs.dtype)
    dims = [0, *range(2, probs.dim())]
    weight = _channel_mask(mask, probs) if mask is not None else None
    prod, p2, t2 = probs * target, probs * probs, target * target
    if weight is not None:
        prod, p2, t2 = prod * weight, p2 * weight, t2 * weight
    intersect = prod.sum(dim=dims)
    denominator = p2.sum(dim=dims) + t2.sum(dim=dims)
    per_class = 1.0 - (2.0 * intersect + smooth) / (denominator + smooth)
    if not include_background:
        if per_class.numel() < 2:
            raise ValueError("include_background=False needs at least two classes")
        per_class = per_class[1:]
    return per_class.mean()


def per_sample_dice_loss(probs: Tensor, target_onehot: Tensor, smooth: float = 1e-5, *,
                         mask: Tensor | None = None, include_background: bool = True, eps: float = 0.0) -> Tensor:
    """Soft Dice loss per sample and class with a linear denominator:
    ``1 − mean_{b,c} (2 Σ p·t·m + s) / (Σ (p + t)·m + s + eps)``, the sums over each sample's
    positions only, ``m`` the optional ``(B, *spatial)`` / ``(B, 1, *spatial)`` mask (or weights).

    BCP's ``mask_DiceLoss`` (its LA script: ``s = 1e-5``, background included) and nnU-Net's
    ``SoftDiceLoss`` as SGRS-Net's code uses it (``s`` in numerator and denominator,
    ``eps = 1e-8``). An empty mask gives ``1 − s/(s + eps)``: 0 without ``eps``. Worked example,
    one sample, one class: ``p = [0.8, 0.6]``, ``t = [1, 0]`` gives ``1 − 1.6 / 2.4 = 1/3`` (up to
    ``s``; :func:`soft_dice_loss`'s squared denominator gives 0.2).
    """
    if probs.shape != target_onehot.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and target {tuple(target_onehot.shape)} "
                         "must have the same shape")
    target = target_onehot.to(probs.dtype)
    dims = tuple(range(2, probs.dim()))
    inter, total = probs * target, probs + target
    if mask is not None:
        weight = _channel_mask(mask, probs)
        inter, total = inter * weight, total * weight
    per_class = 1.0 - (2.0 * inter.sum(dim=dims) + smooth) / (total.sum(dim=dims) + smooth + eps)
    if not include_background:
        if per_class.shape[1] < 2:
            raise ValueError("include_background=False needs at least two classes")
        per_class = per_class[:, 1:]
    return per_class.mean()


def alhvr_code_dice_loss(probs: Tensor, target_onehot: Tensor) -> Tensor:
    """The Dice loss of ALHVR's public code: per class ``1 - I / (Σp² + Σt² + 1e-10)``, classes
    averaged with background. Without the Dice coefficient's factor 2 it is
    ``0.5 + 0.5 ×`` the SSL4MIS Dice loss (up to the smoothing terms), so next to CE it weighs
    half as much. Worked example: ``p = [0.8, 0.6]``, ``t = [1, 0]`` for one class gives
    ``1 - 0.8 / 2 = 0.6`` (SSL4MIS's: 0.2).
    """
    target = target_onehot.to(probs.dtype)
    dims = [0, *range(2, probs.dim())]
    intersect = (probs * target).sum(dim=dims)
    denominator = (probs * probs).sum(dim=dims) + (target * target).sum(dim=dims) + 1e-10
    return (1.0 - intersect / denominator).mean()


class DiceCE(NamedTuple):
    """The two supervised terms; unpacks as ``ce, dice``. ``total`` is their mean."""

    ce: Tensor
    dice: Tensor

    @property
    def total(self) -> Tensor:
        """``0.5 * (CE + Dice)``, the supervised loss of the common code."""
        return 0.5 * (self.ce + self.dice)


def dice_ce_loss(logits: Tensor, target: Tensor, *, mask: Tensor | None = None,
                 include_background: bool = True, smooth: float = 1e-5,
                 weight: Tensor | None = None, per_sample: bool = False) -> DiceCE:
    """Cross-entropy and soft Dice of ``logits`` ``(B, C, *spatial)`` vs labels ``(B, *spatial)``.

    CE is the mean over all positions (``nn.CrossEntropyLoss()``) or, with ``mask``, the masked
    mean ``sum(ce * m) / (sum(m) + 1e-16)`` (BCP's ``mix_loss``); Dice is
    :func:`soft_dice_loss` of the softmax. The papers' supervised loss is ``result.total`` =
    ``0.5 * (ce + dice)``.

    ``weight``: optional per-pixel weights ``(B, *spatial)`` (BUARL's region weights). They
    multiply each position's CE and every sum of the Dice (with the mask, if any), but not the
    count the CE is divided by (the mask's sum, or every position without one): weights of 1
    give the unweighted loss, weights 0.5 on a region halve that region's share.

    ``per_sample``: the Dice is :func:`per_sample_dice_loss` (BCP's LA ``mask_DiceLoss``), not
    SSL4MIS's.
    """
    dice_loss = per_sample_dice_loss if per_sample else soft_dice_loss
    if target.dim() != logits.dim() - 1:
        raise ValueError(f"target must be (B, *spatial) integer labels for logits "
                         f"{tuple(logits.shape)}, got {tuple(target.shape)}")
    target = target.long()
    if weight is not None:
        ce_map = F.cross_entropy(logits, target, reduction="none")
        weight = weight.reshape(ce_map.shape).to(ce_map.dtype)
        if mask is None:
            ce = (ce_map * weight).sum() / ce_map.numel()
        else:
            region = mask.reshape(ce_map.shape).to(ce_map.dtype)
            ce = (ce_map * (region * weight)).sum() / (region.sum() + 1e-16)
            weight = region * weight
        probs = torch.softmax(logits, dim=1)
        dice = dice_loss(probs, one_hot(target, logits.shape[1]), smooth, mask=weight,
                         include_background=include_background)
        return DiceCE(ce, dice)
    if mask is None:
        ce = F.cross_entropy(logits, target)
    else:
        ce_map = F.cross_entropy(logits, target, reduction="none")
        ce = masked_mean(ce_map, mask.reshape(ce_map.shape))
    probs = torch.softmax(logits, dim=1)
    dice = dice_loss(probs, one_hot(target, logits.shape[1]), smooth, mask=mask,
                     include_background=include_background)
    return DiceCE(ce, dice)


def masked_mean(x: Tensor, mask: Tensor, eps: float = 1e-16) -> Tensor:
    """``sum(x * m) / (count(m) + eps)`` with ``m = mask`` broadcast to ``x``'s shape.

    The count is that of the *broadcast* mask: a per-pixel mask ``(B, 1, *spatial)`` applied to
    ``(B, C, *spatial)`` counts each kept pixel ``C`` times, so the result is the mean over the
    kept elements. UA-MT's ``sum(mask * d) / (2 * sum(mask) + 1e-16)`` for its two LA channels
    is this. ``mask`` may be boolean or weights in ``[0, 1]``; an empty mask gives 0.
    """
    m = torch.broadcast_to(mask.to(x.dtype), x.shape)
    return (x * m).sum() / (m.sum() + eps)


def reduce_region(loss_map: Tensor, mask: Tensor, how: str) -> Tensor:
    """A per-pixel loss restricted to ``mask``: ``"region"`` averages over the masked pixels
    (``sum(l·m) / sum(m)``, 0 for an empty mask); ``"all_pixels"`` divides the same sum by
    every pixel of the map, so a term shrinks with its region."""
    if how == "region":
        return masked_mean(loss_map, mask)
    if how == "all_pixels":
        return (loss_map * mask.to(loss_map.dtype)).sum() / loss_map.numel()
    raise ValueError(f"unknown reduction {how!r}; known: region, all_pixels")
