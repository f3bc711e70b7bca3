"""MC-Net and MC-Net+: one encoder, several slightly different decoders, mutual consistency.

Wu et al., "Semi-supervised Left Atrium Segmentation with Mutual Consistency Training" (MICCAI
2021, arXiv:2103.02911): two decoders; Wu et al., "Mutual consistency learning for
semi-supervised medical image segmentation" (MedIA 2022): MC-Net+, three. Reference code:
https://github.com/ycwu1997/MC-Net at commit fee453ca299a5d2c845cc2f3de4e416fd667d9c2
(``code/train_mcnet_3d.py``, ``code/train_mcnet_2d.py``, ``code/networks/{VNet,unet}.py``,
``code/utils/losses.py``, ``code/test_{2d,3d}.py``), whose ``mcnet{2d,3d}_v1`` is MC-Net and
``mcnet3d_v2`` / ``mcnet2d_v2`` MC-Net+.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from semiseg.methods.base import Losses, Method, Step, StepContext, register, two_stream
from semiseg.methods.common.losses import alhvr_code_dice_loss, one_hot, soft_dice_loss
from semiseg.methods.common.pseudo import mutual_consistency
from semiseg.nets.heads import MultiDecoder

__all__ = ["MCNet", "extra_up_modes", "linear_dice_loss"]


def linear_dice_loss(probs: Tensor, target_onehot: Tensor, eps: float = 1e-8) -> Tensor:
    """The 3D code's Dice loss, ``1 − (2 Σ p·t + ε) / (Σ p + Σ t + ε)`` of the foreground channel,
    sums over the whole batch and every position, linear denominator; with more than one
    foreground class, the mean of theirs. Worked example: ``p = [0.8, 0.6]``, ``t = [1, 0]``
    gives ``1 − 1.6 / 2.4 = 1/3`` (up to ε)."""
    if probs.shape != target_onehot.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and target {tuple(target_onehot.shape)} "
                         "must have the same shape")
    if probs.shape[1] < 2:
        raise ValueError("the foreground Dice needs at least two classes")
    target = target_onehot.to(probs.dtype)
    dims = [0, *range(2, probs.dim())]
    inter = (probs * target).sum(dim=dims)
    total = probs.sum(dim=dims) + target.sum(dim=dims)
    return (1.0 - (2.0 * inter + eps) / (total + eps))[1:].mean()


#: ``params.dice`` -> the Dice loss of each decoder's labeled softmax against the one-hot label.
DICE_LOSSES = {"linear_foreground": linear_dice_loss, "squared": soft_dice_loss,
               "squared_code": alhvr_code_dice_loss}

# The code's decoders in their order, the main (evaluated) one first: the V-Net's transposed
# convolution or the U-Net's bilinear upsampling, then the other of the two, then nearest.
_UP_ORDER = ("transpose", "linear", "nearest")


def extra_up_modes(main: str, decoders: int) -> list[str]:
    """The up modes of the decoders after the main one (``main``, the network's own): the other
    of transpose / linear, then nearest. ``("transpose", 3)`` -> ``["linear", "nearest"]``
    (``mcnet3d_v2``), ``("linear", 2)`` -> ``["transpose"]`` (``mcnet2d_v1``)."""
    if main not in _UP_ORDER[:2]:
        raise ValueError(f"MC-Net's main decoder upsamples by transpose or linear, got up_mode={main!r}")
    others = [m for m in _UP_ORDER if m != main]
    if not 2 <= decoders <= 1 + len(others):
        raise ValueError(f"params.decoders must be 2 to {1 + len(others)}, got {decoders}")
    return others[:decoders - 1]


@register("mc_net")
class MCNet(Method):
    """Decoders that differ only in their upsampling, each supervised, each pulled towards the
    others' sharpened predictions.

    Per iteration, as ``train_mcnet_{2d,3d}.py``: the ``decoders`` heads of one network
    (:class:`~semiseg.nets.heads.MultiDecoder`, the encoder run once, its dropout shared) on the
    labeled and unlabeled images together give softmax maps ``p_1..p_n``;
    ``L = seg_weight · Σ_i Dice(p_i[labeled], y) + λ(t) · Σ_{i≠j} MSE(p_i, sharpen(p_j))``
    (:func:`mutual_consistency`, over the whole batch, labeled images included), with
    ``λ(t) = consistency · exp(−5(1 − t)²)`` ramped over ``consistency_rampup`` of training in
    ``rampup_block`` steps. The code computes a cross-entropy of every head and logs it but
    leaves it out of the loss; the papers' supervised term is the Dice alone, as here.

    - Decoders (``decoders``: 2 is MC-Net, 3 MC-Net+): the main one is the network's own
      (V-Net: transposed convolution, U-Net: bilinear), the second the other of the two, the
      third nearest upsampling (:func:`extra_up_modes`), in both codes' order.
    - Evaluation: the main decoder alone, as both test scripts load the checkpoint into the
      plain V-Net / U-Net (``strict=False``, encoder and ``decoder1``); ``eval_network`` is that
      plain network, so ``model.pt`` and the infer stage are the plain network's.
    - The ramp reads the code's counter, incremented before ``sigmoid_rampup(iter_num // 150,
      ...)``: iteration ``t`` (0-based) uses block ``(t + 1) // rampup_block``.
    - ``dice``: the 3D code's Dice (``linear_foreground``, :func:`linear_dice_loss`) or the 2D
      code's ``DiceLoss`` over all classes with the squared denominator. That class omits the
      Dice coefficient's factor 2 (``1 − I / (Σp² + Σt²)``, i.e. 0.5 + half the loss, so it
      pulls half as hard against the consistency): ``squared`` corrects it (SSL4MIS's loss),
      ``squared_code`` reproduces it (the ``*_code`` catalogue entries).

    Parameters (workflow/schemas/params/mc_net.schema.yaml): ``decoders``, ``dice``,
    ``seg_weight``, ``temperature``, ``consistency``, ``consistency_rampup``, ``rampup_block``.
    """

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        net = net_factory()
        self.models.append(MultiDecoder(net, extra_up_modes(net.up_mode, int(self.params["decoders"]))))

    def eval_network(self) -> nn.Module:
        return self.models[0].base

    def training_step(self, ctx: StepContext) -> Losses:
        s = two_stream(ctx.batch)
        probs = [torch.softmax(h, dim=1) for h in self.models[0].heads(s.images)]
        target = one_hot(s.label, self.num_classes)
        dice_loss = DICE_LOSSES[self.params["dice"]]
        dice = sum(dice_loss(p[:s.n_labeled], target) for p in probs)
        consistency = mutual_consistency(probs, float(self.params["temperature"]))
        ctx.stats["consistency_weight"] = weight = self.ramp_weight(Step(ctx.step.iteration + 1, ctx.step.total))
        total = float(self.params["seg_weight"]) * dice + weight * consistency
        return Losses(total=total, terms={"dice": dice, "consistency": consistency}, stats=ctx.stats)
