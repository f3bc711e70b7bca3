"""MCF (Wang et al., "MCF: Mutual Correction Framework for Semi-Supervised Medical Image
Segmentation", CVPR 2023), after its public code https://github.com/WYC-321/MCF at commit
ad20659b9842dbc8fbcaca307ee7d7fec34938f6 (``code/train_MCF.py``, ``code/test_LA_MCF.py``,
``code/test_util.py``, ``code/networks/``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from semiseg.methods.base import Losses, Method, StepContext, register, two_stream
from semiseg.methods.common.losses import dice_ce_loss, masked_mean, one_hot
from semiseg.methods.common.pseudo import sharpen_distribution
from semiseg.nets import input_channels
from semiseg.nets.resnet import ResNetED, kaiming_init

__all__ = ["MCF", "PairMean", "competition_loss", "review_loss"]


def review_loss(probs: Tensor, label: Tensor, disagree: Tensor) -> Tensor:
    """The contrastive difference review (CDR) on the labeled images: the squared error of the
    probabilities against the one-hot label, averaged over the foreground classes per pixel, then
    over the pixels where the two networks' hard labels differ (``sum(m·e) / (sum(m) + 1e-16)``,
    0 where they agree everywhere).

    With two classes this is the code's ``sum(mask · (p_1 − y)²) / (sum(mask) + 1e-16)``, mask
    ``(argmax_a == 1) xor (argmax_b == 1)``. Worked example: ``p_1 = [0.8, 0.3]``, ``y = [1, 1]``,
    mask ``[0, 1]`` gives ``0.7² = 0.49``.
    """
    error = (probs - one_hot(label.long(), probs.shape[1])).pow(2)[:, 1:].mean(dim=1)
    return masked_mean(error, disagree)


def competition_loss(probs: Tensor, teacher_probs: Tensor, temperature: float) -> Tensor:
    """The student's term on the unlabeled images: the mean over every element of
    ``(p − sharpen(q))²``, ``q`` the teacher's probabilities sharpened by ``q^(1/T) / Σ q^(1/T)``
    (detached). Worked example, one pixel: ``q = [0.6, 0.4]``, ``T = 0.5`` gives
    ``[0.36, 0.16] / 0.52 = [0.6923, 0.3077]``; ``p = [0.5, 0.5]`` then gives
    ``((0.5 − 0.6923)² + (0.5 − 0.3077)²) / 2 = 0.036982``."""
    target = sharpen_distribution(teacher_probs.detach(), temperature)
    return (probs - target).pow(2).mean()


class PairMean(nn.Module):
    """Two networks evaluated as the mean of their softmax (MCF's ``test_single_case``);
    ``forward`` returns its log, whose argmax is the averaged prediction's."""

    def __init__(self, first: nn.Module, second: nn.Module):
        super().__init__()
        self.nets = nn.ModuleList([first, second])

    def forward(self, x: Tensor) -> Tensor:
        probs = sum(torch.softmax(net(x), dim=1) for net in self.nets) / 2
        return torch.log(probs.clamp_min(1e-12))


def _second_network(first: nn.Module, num_classes: int, dims: int) -> ResNetED:
    return ResNetED(input_channels(first), num_classes, dims=dims)


@register("mcf")
class MCF(Method):
    """Two heterogeneous networks that correct each other: the run's backbone (V-Net in 3D, the
    U-Net in 2D) and :class:`~semiseg.nets.resnet.ResNetED` (a ResNet-34 encoder under the same
    decoder design), both initialised as the code does (:func:`~semiseg.nets.resnet.kaiming_init`).

    Per iteration, for each network ``k`` on the batch (labeled first):
    ``L_k = CE + Dice + review_weight · CDR_k`` on the labeled images (Dice over the foreground
    classes, :func:`review_loss` for CDR, the mask the pixels where the two hard labels differ);
    the network with the lower Dice loss at this step teaches (dynamic competition, the second on
    a tie) and the other, the student, adds ``λ(t) · competition_loss`` on the unlabeled images
    against the teacher's sharpened probabilities (temperature ``T``), ``λ(t) = consistency ·
    exp(−5(1 − t)²)`` over ``consistency_rampup`` of training in blocks of ``rampup_block``
    iterations. Each term reaches its own network only (the pseudo-label and the CDR mask are
    constants), so the one optimiser over both minimising ``L_a + L_b`` is the code's two
    optimisers with equal settings. Validation and inference evaluate :class:`PairMean`.
    Loss terms ``ce_a, dice_a, cdr_a`` (and ``_b``), ``cons`` (the student's, unweighted);
    statistics ``consistency_weight`` and ``teacher`` (0: the backbone teaches, 1: the ResNet).

    Where the code leaves room (it is 3D, binary and for Left Atrium; the paper's text is not in
    this project's paper set, so the code decides every choice here):

    - Dice and CDR with more than two classes: the code's Dice is the foreground channel's
      (squared denominator); here the mean over the foreground classes (equal for two classes);
      CDR's error likewise, and its mask "the hard labels differ" (the code's xor of "label 1").
    - The 2D form (ACDC, AbdomenCT-1K): the SSL4MIS U-Net beside a 2D ResNet-34 under the U-Net's
      decoder, the code's initialisation on both.
    - Schedules: LA and Pancreas-CT (whose folds the code ships for the same script) train on the
      script's (config/methods/mcf.yaml); BraTS, ACDC and AbdomenCT-1K, which no MCF code covers,
      on the dataset's paper schedule, the ramp over the whole run as in the script.
    - The code sharpens ``q^(1/T) / Σ q^(1/T)``; here ``softmax(log q / T)``, equal up to rounding.
    - The code's two views of a batch are one crop (its ``ToTensor`` is deterministic): both
      networks see the same images here too. Its LA crop has no rotation or flip; the dataset's
      augmentation applies here.
    - lr ×0.1 every 2,500 iterations: the code lowers it after step 2,500, one step later than
      the engine's ``step`` policy.

    Parameters: workflow/schemas/params/mcf.schema.yaml.
    """

    term_suffixes = ("_a", "_b")

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        first = kaiming_init(net_factory())
        self.models.extend([first, _second_network(first, self.num_classes, self.dims)])

    def eval_network(self) -> nn.Module:
        # made on demand, not a submodule: the method's state dict keeps one name per parameter
        return PairMean(self.models[0], self.models[1])

    @classmethod
    def inference_network(cls, spec, net_factory) -> nn.Module:
        first = net_factory()
        return PairMean(first, _second_network(first, int(spec["dataset"]["num_classes"]),
                                                int(spec["dataset"]["dims"])))

    def supervised_loss(self, logits: Tensor, label: Tensor, weight: Tensor | None = None):
        """CE and the foreground classes' Dice (the code's ``dice_loss`` of channel 1 for LA)."""
        return dice_ce_loss(logits, label, weight=weight, include_background=False)

    def training_step(self, ctx: StepContext) -> Losses:
        s = two_stream(ctx.batch)
        n = s.n_labeled
        logits = [net(s.images) for net in self.models]
        probs = [torch.softmax(out, dim=1) for out in logits]
        disagree = probs[0][:n].argmax(dim=1) != probs[1][:n].argmax(dim=1)
        terms, total = {}, 0.0
        for suffix, out, p in zip(self.term_suffixes, logits, probs):
            terms[f"ce{suffix}"], terms[f"dice{suffix}"] = self.supervised_loss(out[:n], s.label)
            terms[f"cdr{suffix}"] = review_loss(p[:n], s.label, disagree)
            total = total + terms[f"ce{suffix}"] + terms[f"dice{suffix}"] \
                + float(self.params["review_weight"]) * terms[f"cdr{suffix}"]
        # 1 where the backbone's Dice is lower: it teaches and the ResNet learns (a tensor, no sync)
        first_teaches = (terms["dice_a"].detach() < terms["dice_b"].detach()).to(probs[0].dtype)
        T = float(self.params["temperature"])
        student_b = competition_loss(probs[1][n:], probs[0][n:], T)
        student_a = competition_loss(probs[0][n:], probs[1][n:], T)
        terms["cons"] = first_teaches * student_b + (1 - first_teaches) * student_a
        weight = self.ramp_weight(ctx.step)
        ctx.stats.update(consistency_weight=weight, teacher=1 - first_teaches)
        return Losses(total=total + weight * terms["cons"], terms=terms, stats=ctx.stats)
