"""Uncertainty Rectified Pyramid Consistency (Luo et al., "Efficient Semi-supervised Gross Target
Volume of Nasopharyngeal Carcinoma Segmentation via Uncertainty Rectified Pyramid Consistency",
MICCAI 2021, arXiv:2012.07042; extended as "Semi-supervised medical image segmentation via
uncertainty rectified pyramid consistency", Medical Image Analysis 80, 2022)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from semiseg.methods.base import Losses, Method, StepContext, register, two_stream
from semiseg.nets.pyramid import PyramidNet

__all__ = ["URPC", "pyramid_uncertainty", "rectified_consistency"]


def pyramid_uncertainty(log_probs: Tensor, mean: Tensor, divergence: str) -> Tensor:
    """Per-pixel uncertainty ``D_s`` ``(B, *spatial)`` of one scale's prediction against the mean
    prediction ``p_c`` of all scales: a KL divergence over the classes.

    ``scale_mean`` (the paper): ``D_s = Σ_j p_s^j log(p_s^j / p_c^j)``; ``mean_scale`` (SSL4MIS's
    ``KLDivLoss(log p_s, p_c)``): ``Σ_j p_c^j log(p_c^j / p_s^j)``. Worked example, two classes,
    ``p_s = [0.8, 0.2]``, ``p_c = [0.5, 0.5]``: ``scale_mean`` 0.8 ln 1.6 + 0.2 ln 0.4 = 0.1927448,
    ``mean_scale`` 0.5 ln 0.625 + 0.5 ln 2.5 = 0.2231436.
    """
    if divergence == "scale_mean":
        return (log_probs.exp() * (log_probs - torch.log(mean))).sum(dim=1)
    if divergence == "mean_scale":
        return (torch.xlogy(mean, mean) - mean * log_probs).sum(dim=1)
    raise ValueError(f"unknown divergence {divergence!r}; known: scale_mean, mean_scale")


def rectified_consistency(logits: Sequence[Tensor], *, divergence: str = "scale_mean",
                          class_reduction: str = "sum", eps: float = 1e-8) -> Tensor:
    """URPC's unsupervised loss on the heads' logits ``(B, C, *spatial)`` (all at one size):

        L_u = 1/S Σ_s [ Σ_v w_s·d_s / Σ_v w_s  +  1/V Σ_v D_s ],   w_s = exp(−D_s)

    with ``p_c`` the mean of the S heads' softmax, ``D_s`` :func:`pyramid_uncertainty` and
    ``d_s = ||p_c − p_s||²`` summed over classes (``class_reduction: sum``, the paper) or averaged
    over them (``mean``, SSL4MIS's ``torch.mean`` over class and position: 1/C of it). The sums run
    over every unlabeled pixel of the batch, as SSL4MIS takes them; ``eps`` is its ``1e-8`` beside
    the mean weight. Gradients flow through ``p_c``, ``d_s``, ``w_s`` and ``D_s`` (neither paper nor
    code stops any). Worked example in ``tests/test_urpc.py``.
    """
    log_probs = [F.log_softmax(z, dim=1) for z in logits]
    probs = [lp.exp() for lp in log_probs]
    mean = torch.stack(probs).mean(dim=0)
    total = logits[0].new_zeros(())
    for p, lp in zip(probs, log_probs):
        uncertainty = pyramid_uncertainty(lp, mean, divergence)
        weight = torch.exp(-uncertainty)
        squared = (mean - p) ** 2
        if class_reduction == "sum":
            distance = squared.sum(dim=1)
        elif class_reduction == "mean":
            distance = squared.mean(dim=1)
        else:
            raise ValueError(f"unknown class_reduction {class_reduction!r}; known: sum, mean")
        total = total + (weight * distance).mean() / (weight.mean() + eps) + uncertainty.mean()
    return total / len(logits)


def _with_pyramid(net) -> PyramidNet:
    """The run's network as URPC trains it: as built where ``network_args.pyramid`` made it a
    :class:`~semiseg.nets.pyramid.PyramidNet`, else wrapped in the default pyramid."""
    return net if isinstance(net, PyramidNet) else PyramidNet(net)


@register("urpc")
class URPC(Method):
    """One network with a pyramid of predictions, supervised at every scale and made consistent
    across scales where they agree.

    The network is the run's U-Net or V-Net with URPC's deep-supervision heads
    (:class:`~semiseg.nets.pyramid.PyramidNet`, its defaults unless ``network_args: {pyramid:
    {...}}`` sets them): S = 4 logits
    at the input size, main head first; validation and inference run the main head alone, as
    SSL4MIS's test scripts. Per iteration, labeled and unlabeled images in one batch (one set of
    batch-norm statistics, as the code):

        L = 1/S Σ_s ½(CE + Dice)(p_s(x_l), y_l) + λ(t)·L_u(x_u)

    with L_u :func:`rectified_consistency` on the unlabeled images and λ(t) = ``consistency`` ×
    the sigmoid ramp over ``consistency_rampup`` of training (:meth:`Method.ramp_weight`, a
    staircase of ``rampup_block`` iterations). The logged ``ce`` and ``dice`` are the means over
    the S heads.

    Reference code: HiLab-git/SSL4MIS @06df6047a59aba9988ced8331998b5957ecb356b,
    ``code/train_uncertainty_rectified_pyramid_consistency_2D.py`` (ACDC: U-Net ``UNet_URPC``,
    30k iterations of 12 + 12 slices, lr 0.01 poly, λ 0.1 ramped over 200 "epochs" of 150
    iterations = the whole run) and ``..._3D.py`` (its own 3D U-Net ``unet_3D_dv_semi``, BraTS).
    Where the code departs from the paper, a parameter chooses (the ``urpc_code`` catalogue entry
    takes the code's side of both):

    - ``divergence``: the paper's ``D_s`` is KL(p_s ‖ p_c); the code's ``kl_distance(log p_s, p_c)``
      computes KL(p_c ‖ p_s) (``mean_scale``).
    - ``class_reduction``: the paper's squared distance ``||p_c − p_s||²`` sums over the classes;
      the code's ``torch.mean`` over (image, class, pixel) divides it by C as well (``mean``).

    Choices the paper leaves to the code, taken from it: the consistency's sums over the whole
    unlabeled batch, its ``1e-8``, the supervised ½(CE + Dice) at every scale with SSL4MIS's Dice
    (background included), the heads' logits resized before the softmax (nearest in 2D), no
    gradient stopped. Not reproduced: ``Decoder_URPC`` declares a fourth auxiliary convolution
    (``out_conv_dp4``, on the bottleneck) that its forward never uses; SSL4MIS's 2D test script
    ``test_2D_fully.py`` passes the network's tuple of outputs to ``torch.softmax`` for
    ``unet_urpc`` (a crash); its validation (``test_single_volume_ds``) takes the main output,
    as here.

    3D: the tables' URPC rows (LA, Pancreas-CT, BraTS) come from papers that re-ran URPC on the
    V-Net protocol of those datasets; the catalogue trains it on the dataset's V-Net and schedule
    with heads on the V-Net's decoder stages and the 2D code's perturbations, 1x1x1 heads and
    trilinear resizing (the 3D code's ``UnetDsv3``), not on SSL4MIS's 3D U-Net (whose dropouts sit
    on its main decoder path).

    Parameters (config ``params``, workflow/schemas/params/urpc.schema.yaml): ``consistency``,
    ``consistency_rampup``, ``rampup_block``, ``divergence``, ``class_reduction``.
    """

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        self.models.append(_with_pyramid(net_factory()))

    @classmethod
    def inference_network(cls, spec, net_factory):
        return _with_pyramid(net_factory())

    def training_step(self, ctx: StepContext) -> Losses:
        s = two_stream(ctx.batch)
        heads = self.models[0].heads(s.images)
        supervised = [self.supervised_loss(h[: s.n_labeled], s.label) for h in heads]
        ce = torch.stack([t.ce for t in supervised]).mean()
        dice = torch.stack([t.dice for t in supervised]).mean()
        consistency = rectified_consistency([h[s.n_labeled:] for h in heads], divergence=self.params["divergence"],
                                            class_reduction=self.params["class_reduction"])
        weight = self.ramp_weight(ctx.step)
        total = 0.5 * (ce + dice) + weight * consistency
        return Losses(total=total, terms={"ce": ce, "dice": dice, "consistency": consistency},
                      stats={"consistency_weight": weight, **ctx.stats})
