"""Uncertainty-aware Mean Teacher (Yu et al., "Uncertainty-aware Self-ensembling Model for
Semi-supervised 3D Left Atrium Segmentation", MICCAI 2019, arXiv:1907.07034)."""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor

from semiseg.methods.base import Losses, Method, Step, register
from semiseg.methods.common.ema import ema_update
from semiseg.methods.common.pseudo import entropy
from semiseg.methods.common.ramps import sigmoid_rampup

__all__ = ["UAMT", "masked_consistency", "mc_uncertainty", "uncertainty_threshold"]


def uncertainty_threshold(iteration: int, total: int, num_classes: int, *, start: float = 0.75,
                          rampup: float = 1.0) -> float:
    """``(start + (1 - start) * sigmoid_rampup(iteration, rampup * total)) * ln(C)``, C = ``num_classes``.

    UA-MT's code writes ``(0.75 + 0.25 * sigmoid_rampup(iter_num, max_iterations)) * ln 2``:
    from 0.75 of the largest possible entropy (``ln C``, ``ln 2`` for its binary LA task) to
    all of it, ramped per iteration over the whole run. Pass ``num_classes = 2`` for the
    code's ``ln 2`` whatever the task's C (:class:`UAMT`'s ``uncertainty_max: log_two``).
    Worked values for ``C = 2``, ``total = 100``: iteration 0 ->
    ``(0.75 + 0.25 e^-5) ln 2 = 0.5210280``; 50 -> ``(0.75 + 0.25 e^-1.25) ln 2 = 0.5695079``;
    100 -> ``ln 2 = 0.6931472``.
    """
    ramp = sigmoid_rampup(iteration, rampup * total)
    return (start + (1.0 - start) * ramp) * math.log(num_classes)


def masked_consistency(student_probs: Tensor, teacher_probs: Tensor, mask: Tensor,
                       normalizer: int) -> Tensor:
    """``sum(mask · (student − teacher)²) / (normalizer · sum(mask) + 1e-16)``.

    ``mask`` is per pixel ``(B, 1, *spatial)``; the squared differences ``(B, C, *spatial)`` are
    summed over the kept pixels and every class. ``normalizer = C`` makes it the mean over the
    kept (pixel, class) elements; UA-MT's and SSL4MIS's code divide by ``2 · sum(mask)`` for any
    C. Worked example: one kept pixel with squared differences ``0.5184, 0.0576 x 3`` (C = 4)
    sums to 0.6912: 0.1728 with ``normalizer = 4``, 0.3456 with 2. An empty mask gives 0.
    """
    m = mask.to(student_probs.dtype)
    return (m * (student_probs - teacher_probs) ** 2).sum() / (normalizer * m.sum() + 1e-16)


def mc_uncertainty(prob_samples: Tensor) -> Tensor:
    """Predictive entropy of ``T`` stochastic predictions ``(T, B, C, *spatial)`` -> ``(B, 1, *spatial)``.

    The mean of the ``T`` softmax maps is the prediction; its entropy (in nats, with UA-MT's
    ``1e-6`` inside the logarithm) is the uncertainty.
    """
    return entropy(prob_samples.mean(dim=0), dim=1, keepdim=True)


@register("ua_mt")
class UAMT(Method):
    """Mean Teacher whose consistency is restricted to the pixels the teacher is sure about.

    Per iteration, as in the public code (UA-MT ``train_LA_meanteacher_certainty_unlabel.py``,
    SSL4MIS ``train_uncertainty_aware_mean_teacher_{2D,3D}.py``):

    - the student sees labeled and unlabeled images together; supervised 0.5·(CE + Dice);
    - the EMA teacher predicts the unlabeled images under Gaussian input noise
      ``clip(N(0, noise_std²), ±noise_clip)`` (the consistency target), and ``passes`` (T = 8)
      more times, each with fresh noise, for the uncertainty: the entropy of the mean of the T
      softmax maps;
    - consistency = MSE between student and teacher softmax over the pixels whose uncertainty
      is below :func:`uncertainty_threshold`, weighted by
      ``consistency · exp(-5(1 − t)²)`` ramped over ``consistency_rampup`` of training;
    - the teacher is the EMA of the student (decay ``ema_decay``, the common ``1 − 1/(t+1)``
      warm-up, :func:`~semiseg.methods.common.ema.ema_update`) and gets no gradient. Both UA-MT
      scripts pass the iteration count *before* incrementing it, so the first update copies the
      student; we pass the 0-based iteration likewise.

    The teacher runs in the mode the engine sets (train mode), as in the public code: its
    dropout (U-Net encoder, V-Net ``has_dropout``) is active, so the T passes vary by noise and
    by Monte-Carlo dropout, as the paper describes.

    Two constants of the code are binary-task constants that the paper states for any C; each
    is a parameter, so a run can follow the paper's rule or reproduce the code exactly (the
    ``ua_mt`` catalogue entry does the latter, so its numbers compare with the papers' tables,
    which come from that code):

    - ``uncertainty_max``: the threshold ramps up to the largest possible uncertainty.
      ``log_classes`` (schema default) is ``ln C``, the paper's "maximum uncertainty";
      ``log_two`` is the code's ``np.log(2)``, which UA-MT (binary LA) and SSL4MIS's 2D script
      (ACDC, four classes: a threshold ``ln 2 / ln 4`` = half the paper's) both hard-code.
    - ``mse_normalizer``: the masked MSE's denominator, ``classes`` (schema default,
      ``C·sum(mask)``: the mean over the kept (pixel, class) elements) or ``two`` (the code's
      ``2·sum(mask) + 1e-16`` for any C: that mean for LA's two classes, twice it for ACDC's
      four), see :func:`masked_consistency`.

    Choices where the paper or the code leave room:

    - The T passes are run two noisy copies of the batch at a time, as the code does (its
      batch-norm statistics then see 2B images per pass); an odd T ends with one copy.
    - The consistency and threshold ramps are smooth per iteration; the code's consistency
      ramp is a staircase over "epochs" of 150 iterations (``sigmoid_rampup(it // 150, 200)``
      in SSL4MIS's 2D script, 40 in UA-MT's LA script: the whole run in both, fraction 1.0).
    - The consistency is on the unlabeled stream only, as in both codes.
    - The supervised Dice includes the background class (SSL4MIS); UA-MT's LA script takes the
      foreground Dice only.

    Parameters (config ``params``, workflow/schemas/params/ua_mt.schema.yaml): ``ema_decay``,
    ``consistency``, ``consistency_rampup``, ``noise_std``, ``noise_clip``, ``passes``,
    ``threshold_start``, ``threshold_rampup``, ``uncertainty_max``, ``mse_normalizer``.
    """

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        self.models.append(net_factory())
        self.teacher = copy.deepcopy(self.models[0])
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def _ceiling_classes(self) -> int:
        """The C whose ``ln C`` the threshold ramps up to (``uncertainty_max``)."""
        return {"log_classes": self.num_classes, "log_two": 2}[self.params["uncertainty_max"]]

    def _mse_normalizer(self) -> int:
        """The factor on ``sum(mask)`` in the masked MSE's denominator (``mse_normalizer``)."""
        return {"classes": self.num_classes, "two": 2}[self.params["mse_normalizer"]]

    def _noisy(self, x: Tensor) -> Tensor:
        noise = torch.randn_like(x) * self.params["noise_std"]
        return x + torch.clamp(noise, -self.params["noise_clip"], self.params["noise_clip"])

    @torch.no_grad()
    def teacher_uncertainty(self, xu: Tensor) -> Tensor:
        """Entropy ``(B, 1, *spatial)`` of the mean of ``passes`` noisy teacher predictions."""
        passes = int(self.params["passes"])
        samples = []
        for first in range(0, passes, 2):
            k = min(2, passes - first)
            x = xu.repeat(k, *([1] * (xu.dim() - 1)))  # k copies, copy-major
            probs = torch.softmax(self.teacher(self._noisy(x)), dim=1)
            samples.append(probs.reshape(k, xu.shape[0], *probs.shape[1:]))
        return mc_uncertainty(torch.cat(samples))

    def training_step(self, batch, step: Step) -> Losses:
        student = self.models[0]
        xl, yl, xu = batch["labeled_image"], batch["labeled_label"], batch["unlabeled_image"]
        nl = xl.shape[0]
        logits = student(torch.cat([xl, xu]))
        ce, dice = self.supervised_loss(logits[:nl], yl)
        with torch.no_grad():
            teacher_probs = torch.softmax(self.teacher(self._noisy(xu)), dim=1)
            uncertainty = self.teacher_uncertainty(xu)
        threshold = uncertainty_threshold(step.iteration, step.total, self._ceiling_classes(),
                                          start=self.params["threshold_start"],
                                          rampup=self.params["threshold_rampup"])
        mask = uncertainty < threshold
        consistency = masked_consistency(torch.softmax(logits[nl:], dim=1), teacher_probs, mask,
                                         self._mse_normalizer())
        weight = self.params["consistency"] * step.rampup(self.params["consistency_rampup"])
        total = 0.5 * (ce + dice) + weight * consistency
        return Losses(total=total, terms={"ce": ce, "dice": dice, "consistency": consistency},
                      stats={"consistency_weight": weight, "threshold": threshold,
                             "certain_fraction": float(mask.float().mean())})

    def after_optimizer_step(self, step: Step) -> None:
        ema_update(self.teacher, self.models[0], self.params["ema_decay"], step.iteration)
