"""Uncertainty-aware Mean Teacher (Yu et al., "Uncertainty-aware Self-ensembling Model for
Semi-supervised 3D Left Atrium Segmentation", MICCAI 2019, arXiv:1907.07034)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from semiseg.methods.base import StepContext, register
from semiseg.methods.common.pseudo import entropy
from semiseg.methods.common.ramps import sigmoid_rampup
from semiseg.methods.common.teacher import TeacherStudent, UnsupervisedContext

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
    return _certain_mean(((student_probs - teacher_probs) ** 2).sum(dim=1), mask.squeeze(1), normalizer)


def _certain_mean(loss_map: Tensor, mask: Tensor, normalizer: int) -> Tensor:
    """``sum(mask · loss_map) / (normalizer · sum(mask) + 1e-16)`` for per-pixel ``(B, *spatial)`` maps."""
    m = mask.to(loss_map.dtype)
    return (m * loss_map).sum() / (normalizer * m.sum() + 1e-16)


def mc_uncertainty(prob_samples: Tensor) -> Tensor:
    """Predictive entropy of ``T`` stochastic predictions ``(T, B, C, *spatial)`` -> ``(B, 1, *spatial)``.

    The mean of the ``T`` softmax maps is the prediction; its entropy (in nats, with UA-MT's
    ``1e-6`` inside the logarithm) is the uncertainty.
    """
    return entropy(prob_samples.mean(dim=0), dim=1, keepdim=True)


@register("ua_mt")
class UAMT(TeacherStudent):
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
    - The threshold ramp is per iteration, as in both codes; the consistency ramp is a
      staircase of ``rampup_block`` iterations (the code's "epochs" of 150:
      ``sigmoid_rampup(it // 150, 200)`` in SSL4MIS's 2D script, 40 in UA-MT's LA script, the
      whole run in both; the catalogue entry uses 150, the schema default 1 is smooth).
    - The consistency is on the unlabeled stream only, as in both codes.
    - The supervised Dice includes the background class (SSL4MIS); UA-MT's LA script takes the
      foreground Dice only.

    On the teacher–student base this is two hooks: the certainty mask as the per-pixel weight
    (:meth:`pixel_weight`) and its normalised sum as the reduction (:meth:`reduce_unsupervised`).

    Parameters (config ``params``, workflow/schemas/params/ua_mt.schema.yaml): ``ema_decay``,
    ``consistency``, ``consistency_rampup``, ``rampup_block``, ``noise_std``, ``noise_clip``, ``passes``,
    ``threshold_start``, ``threshold_rampup``, ``uncertainty_max``, ``mse_normalizer``.
    """

    def _ceiling_classes(self) -> int:
        """The C whose ``ln C`` the threshold ramps up to (``uncertainty_max``)."""
        return {"log_classes": self.num_classes, "log_two": 2}[self.params["uncertainty_max"]]

    def _mse_normalizer(self) -> int:
        """The factor on ``sum(mask)`` in the masked MSE's denominator (``mse_normalizer``)."""
        return {"classes": self.num_classes, "two": 2}[self.params["mse_normalizer"]]

    @torch.no_grad()
    def teacher_uncertainty(self, xu: Tensor, ctx: StepContext) -> Tensor:
        """Entropy ``(B, 1, *spatial)`` of the mean of ``passes`` noisy teacher predictions."""
        passes = int(self.params["passes"])
        samples = []
        for first in range(0, passes, 2):
            k = min(2, passes - first)
            x = xu.repeat(k, *([1] * (xu.dim() - 1)))  # k copies, copy-major
            probs = torch.softmax(self.teacher(self.teacher_input(x, ctx)), dim=1)
            samples.append(probs.reshape(k, xu.shape[0], *probs.shape[1:]))
        return mc_uncertainty(torch.cat(samples))

    def unsupervised_map(self, ctx: UnsupervisedContext) -> Tensor:
        """The squared softmax difference summed over classes (the code's masked MSE numerator)."""
        return ((torch.softmax(ctx.student_logits, dim=1) - ctx.teacher_probs) ** 2).sum(dim=1)

    def pixel_weight(self, ctx: UnsupervisedContext) -> Tensor:
        """1 where the teacher's uncertainty is below :func:`uncertainty_threshold`, else 0."""
        uncertainty = self.teacher_uncertainty(ctx.batch["unlabeled_image"], ctx.context)
        threshold = uncertainty_threshold(ctx.step.iteration, ctx.step.total, self._ceiling_classes(),
                                          start=self.params["threshold_start"],
                                          rampup=self.params["threshold_rampup"])
        mask = (uncertainty < threshold).squeeze(1)
        ctx.stats.update(threshold=threshold, certain_fraction=mask.float().mean())
        return mask

    def reduce_unsupervised(self, loss_map, weight, ctx) -> Tensor:
        return _certain_mean(loss_map, weight, self._mse_normalizer())
