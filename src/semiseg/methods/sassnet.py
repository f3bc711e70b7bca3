"""SASSNet (Li et al., "Shape-aware Semi-supervised 3D Semantic Segmentation for Medical Images",
MICCAI 2020; code kleinzcy/SASSnet @1761aa8, ``code/train_gan_sdfloss.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from semiseg.methods.base import Losses, StepContext, register, two_stream
from semiseg.methods.common.sdf import SignedDistanceMethod
from semiseg.nets import input_channels
from semiseg.nets.sdf import Discriminator

__all__ = ["SASSNet", "discriminator_loss", "shape_adversarial_loss"]


def shape_adversarial_loss(scores: Tensor) -> Tensor:
    """The network's adversarial term: the discriminator's cross-entropy ``(N, 2)`` ``scores`` of
    the unlabeled images against class 1 ("labeled"), mean over the images. Worked example: scores
    ``[0, ln 3]`` (P(labeled) = 3/4) give ``ln(4/3) = 0.287682``."""
    return F.cross_entropy(scores, torch.ones(scores.shape[0], dtype=torch.long, device=scores.device))


def discriminator_loss(scores: Tensor, n_labeled: int) -> Tensor:
    """The discriminator's cross-entropy of its ``(N, 2)`` ``scores``, the first ``n_labeled``
    images of class 1 (labeled), the rest of class 0, mean over the images. Worked example: scores
    ``[0, ln 3]`` and ``[0, ln 3]``, one labeled: ``(ln(4/3) + ln 4) / 2 = 0.836988``."""
    target = (torch.arange(scores.shape[0], device=scores.device) < n_labeled).long()
    return F.cross_entropy(scores, target)


@register("sassnet")
class SASSNet(SignedDistanceMethod):
    """Shape-aware semi-supervised segmentation: a signed-distance head and a discriminator that
    tells the signed distance maps of labeled images from those of unlabeled ones.

    Per iteration, labeled and unlabeled images in one batch (one set of batch-norm statistics):
    ``L = Dice(z_L, y) + sdf_weight · MSE(s_L, sdf(y)) + λ(t) · CE(D(s_U, x_U), labeled)``
    (:class:`~semiseg.methods.common.sdf.SignedDistanceMethod`, :func:`shape_adversarial_loss`):
    the network learns to make the unlabeled images' maps look labeled to ``D``, which runs in eval
    mode (no dropout) and is not moved by this loss (its parameters enter detached; the code's
    gradients into ``D`` are zeroed before its own step). ``λ(t) = consistency · exp(−5(1 − t)²)``
    as a staircase: the code's ``0.01 · sigmoid_rampup(iter_num // 150, 40)`` of 6000 iterations
    is ``consistency: 0.01, consistency_rampup: 1, rampup_block: 150``.

    Then ``D`` alone (the engine's second phase, :meth:`second_phase`): the network, just updated,
    in eval mode and without gradient, maps every image of the batch; ``D`` in train mode (channel
    dropout 0.5) scores them and minimises :func:`discriminator_loss` (labeled 1, unlabeled 0)
    with its own Adam (``discriminator_lr`` 1e-4, ``discriminator_betas`` (0.9, 0.99)), at a lr
    that no lr policy moves (the code never changes it). ``D`` (:class:`~semiseg.nets.sdf.Discriminator`,
    the code's ``FC3DDiscriminator``; its 2D form on 2D data) sees the maps and the image.

    For more classes than two (ACDC, which no code of the method covers) ``D`` sees the maps of
    every foreground class as channels and the rest is as in
    :class:`~semiseg.methods.dtc.DTC`'s docstring. The code's targets ``[1, 1, 0, 0]`` are typed
    for its 2 + 2 batch; here they follow the batch's split.

    Parameters (workflow/schemas/params/sassnet.schema.yaml): ``sdf_weight``, ``consistency``,
    ``consistency_rampup``, ``rampup_block``, ``discriminator_lr``, ``discriminator_betas``,
    ``discriminator_width``.
    """

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        self.discriminator = Discriminator(self.num_classes - 1, input_channels(self.net),
                                           int(self.params["discriminator_width"]), self.dims)

    def extra_optimizers(self, schedule: dict) -> dict[str, torch.optim.Optimizer]:
        """The discriminator's Adam, its lr fixed (``fixed_lr``: no lr policy scales it)."""
        betas = tuple(float(b) for b in self.params["discriminator_betas"])
        group = {"params": list(self.discriminator.parameters()), "fixed_lr": True}
        return {"discriminator": torch.optim.Adam([group], lr=float(self.params["discriminator_lr"]), betas=betas)}

    def training_step(self, ctx: StepContext) -> Losses:
        s = two_stream(ctx.batch)
        nl = s.n_labeled
        logits, sdf = self.net.heads(s.images)
        terms = self.supervised_terms(logits[:nl], sdf[:nl], s.label)
        self.discriminator.eval()
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        terms["adversarial"] = shape_adversarial_loss(functional_call(self.discriminator, frozen, (sdf[nl:], s.unlabeled)))
        weight = self.ramp_weight(ctx.step)
        total = self.supervised_total(terms) + weight * terms["adversarial"]
        ctx.stats["consistency_weight"] = weight
        return Losses(total=total, terms=terms, stats=ctx.stats)

    def second_phase(self, ctx: StepContext) -> dict[str, Tensor]:
        s = two_stream(ctx.batch)
        was = self.net.training
        self.net.eval()
        with torch.no_grad():
            _, sdf = self.net.heads(s.images)
        self.net.train(was)
        self.discriminator.train()
        loss = discriminator_loss(self.discriminator(sdf, s.images), s.n_labeled)
        ctx.stats["discriminator_loss"] = loss.detach()
        return {"discriminator": loss}
