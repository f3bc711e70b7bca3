"""DTC (Luo et al., "Semi-supervised Medical Image Segmentation through Dual-task Consistency",
AAAI 2021; code HiLab-git/DTC @2525b9c, ``code/train_la_dtc.py``)."""

from __future__ import annotations

import torch
from torch import Tensor

from semiseg.methods.base import Losses, StepContext, register, two_stream
from semiseg.methods.common.sdf import SignedDistanceMethod, level_set_probability

__all__ = ["DTC", "dual_task_consistency"]


def dual_task_consistency(logits: Tensor, sdf: Tensor, k: float) -> Tensor:
    """``mean (T⁻¹(s_c) − p_c)²`` over every image, foreground class ``c`` and pixel, ``p`` the
    softmax of ``logits`` and ``T⁻¹(s) = σ(−k·s)``. Worked example, one pixel, two classes,
    logits ``[0, 0]`` (``p_1 = 0.5``) and ``s = −0.001`` at k = 1500: ``(σ(1.5) − 0.5)² = 0.100853``."""
    probs = torch.softmax(logits, dim=1)[:, 1:]
    return torch.mean((level_set_probability(sdf, k) - probs) ** 2)


@register("dtc")
class DTC(SignedDistanceMethod):
    """Dual-task consistency: a segmentation head and a level-set (signed distance) head on one
    network, the level set's segmentation ``σ(−k·s)`` made to agree with the segmentation head's on
    every image, labeled and unlabeled.

    Per iteration, labeled and unlabeled images in one batch (one set of batch-norm statistics):
    ``L = Dice(z_L, y) + sdf_weight · MSE(s_L, sdf(y)) + λ(t) · mean_{all images} (σ(−k·s) − p)²``
    (:class:`~semiseg.methods.common.sdf.SignedDistanceMethod` for the first two terms and the
    signed distance map, :func:`dual_task_consistency` for the last), with
    ``λ(t) = consistency · exp(−5(1 − t)²)`` ramped over ``consistency_rampup`` of training as a
    staircase of ``rampup_block`` iterations: the code's ``sigmoid_rampup(iter_num // 150, 40)``
    over its 6000 iterations (= 40 blocks of 150) is ``consistency_rampup: 1, rampup_block: 150``.

    The paper's ``L_total = L_Dice + β·L_LSF + λ_d·L_DTC`` is the code's; β = ``sdf_weight`` 0.3,
    k = ``transform_k`` 1500, λ's final value ``consistency`` 1. The code's network has one
    sigmoid segmentation channel (LA is binary); for more classes (ACDC) the segmentation head
    has one softmax logit per class and the level-set head one map per foreground class, the
    consistency comparing each foreground class's probability with its own map and the Dice
    averaged over the foreground classes. The codes fix neither: it is the paper's equations
    written per class, the background (its map the negative of the others' union) left out as in
    the binary case.

    Parameters (workflow/schemas/params/dtc.schema.yaml): ``sdf_weight``, ``consistency``,
    ``consistency_rampup``, ``rampup_block``, ``transform_k``.
    """

    def training_step(self, ctx: StepContext) -> Losses:
        s = two_stream(ctx.batch)
        logits, sdf = self.net.heads(s.images)
        terms = self.supervised_terms(logits[: s.n_labeled], sdf[: s.n_labeled], s.label)
        terms["consistency"] = dual_task_consistency(logits, sdf, float(self.params["transform_k"]))
        weight = self.ramp_weight(ctx.step)
        total = self.supervised_total(terms) + weight * terms["consistency"]
        ctx.stats["consistency_weight"] = weight
        return Losses(total=total, terms=terms, stats=ctx.stats)
