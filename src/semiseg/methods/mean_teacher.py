"""Mean Teacher (Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017)."""

from __future__ import annotations

import copy

import torch

from semiseg.methods.base import Losses, Method, Step, register
from semiseg.methods.common.ema import ema_update


@register("mean_teacher")
class MeanTeacher(Method):
    """A student trained on labels plus consistency with an EMA teacher on noisy input.

    Per iteration, as in the common medical code (SSL4MIS ``train_mean_teacher_2D.py``):
    ``L = 0.5·(CE + Dice)(student(x_l), y_l) + λ(t)·MSE(softmax(student(x_u)), softmax(teacher(x_u + ε)))``
    with ε ~ clip(N(0, noise_std²), ±noise_clip) and λ(t) = consistency·exp(-5(1 − t/T)²)
    ramped over ``consistency_rampup`` of training. The consistency is the mean over the
    unlabeled images only (SSL4MIS takes ``outputs_soft[labeled_bs:]``), over every pixel and
    class. The teacher's weights are the EMA of the student's (decay ``ema_decay``, the
    ``1 − 1/(t+1)`` warm-up of :func:`~semiseg.methods.common.ema.ema_update`); it receives no
    gradient.

    ``consistency_start``: λ is 0 for the first ``round(consistency_start · iterations)``
    iterations. SSL4MIS's 2D script sets the consistency loss to 0 while ``iter_num < 1000``
    (of 30k: 1/30, which the ``mean_teacher`` catalogue entry uses); its 3D script and the paper
    have no such delay (0). The ramp itself still counts from iteration 0, as in SSL4MIS, so
    λ steps from 0 to its ramped value there.

    Where we differ from SSL4MIS: its ramp is a staircase over "epochs" of 150 iterations
    (``sigmoid_rampup(iter_num // 150, 200)``), ours is smooth per iteration.

    Parameters (config ``params``, workflow/schemas/params/mean_teacher.schema.yaml):
    ``ema_decay``, ``consistency``, ``consistency_rampup``, ``consistency_start``,
    ``noise_std``, ``noise_clip``.
    """

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        self.models.append(net_factory())
        self.teacher = copy.deepcopy(self.models[0])
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def consistency_weight(self, step: Step) -> float:
        """λ(t): 0 before ``consistency_start``, then ``consistency`` times the ramp at ``t``."""
        # Specs built without the schema's defaults (hand-made test specs) lack it: no delay.
        start = round(float(self.params["consistency_start"]) * step.total)
        if step.iteration < start:
            return 0.0
        return self.params["consistency"] * step.rampup(self.params["consistency_rampup"])

    def training_step(self, batch, step: Step) -> Losses:
        student = self.models[0]
        xl, yl, xu = batch["labeled_image"], batch["labeled_label"], batch["unlabeled_image"]
        nl = xl.shape[0]
        logits = student(torch.cat([xl, xu]))
        ce, dice = self.supervised_loss(logits[:nl], yl)
        noise = torch.clamp(torch.randn_like(xu) * self.params["noise_std"],
                            -self.params["noise_clip"], self.params["noise_clip"])
        with torch.no_grad():
            teacher_probs = torch.softmax(self.teacher(xu + noise), dim=1)
        consistency = torch.mean((torch.softmax(logits[nl:], dim=1) - teacher_probs) ** 2)
        weight = self.consistency_weight(step)
        total = 0.5 * (ce + dice) + weight * consistency
        return Losses(total=total, terms={"ce": ce, "dice": dice, "consistency": consistency},
                      stats={"consistency_weight": weight})

    def after_optimizer_step(self, step: Step) -> None:
        # SSL4MIS calls update_ema_variables(..., iter_num) before incrementing iter_num, i.e.
        # with the 0-based iteration: alpha = 0 on the first update, so the teacher starts as a
        # copy of the once-trained student, then averages uniformly until alpha reaches decay.
        ema_update(self.teacher, self.models[0], self.params["ema_decay"], step.iteration)
