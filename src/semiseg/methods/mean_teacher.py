"""Mean Teacher (Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017)."""

from __future__ import annotations

import copy

import torch

from semiseg.methods.base import Losses, Method, Step, register
from semiseg.methods.common.ema import ema_update


@register("mean_teacher")
class MeanTeacher(Method):
    """A student trained on labels plus consistency with an EMA teacher on noisy input.

    Per iteration, as in the common medical code (SSL4MIS):
    ``L = 0.5·(CE + Dice)(student(x_l), y_l) + λ(t)·MSE(softmax(student(x_u)), softmax(teacher(x_u + ε)))``
    with ε ~ clip(N(0, noise_std²), ±noise_clip) and λ(t) = consistency·exp(-5(1 − t/T)²)
    ramped over ``consistency_rampup`` of training. The teacher's weights are the EMA of the
    student's (decay ``ema_decay``); it receives no gradient.

    Parameters (config ``params``): ``ema_decay``, ``consistency``, ``consistency_rampup``,
    ``noise_std``, ``noise_clip`` — see workflow/schemas/methods.schema.yaml.

    Choice: the consistency is taken on the unlabeled stream only (SSL4MIS applies it to the
    whole batch, labeled included); the labeled images already have a stronger signal, and
    this keeps the unsupervised term about unlabeled data for every method of the benchmark.
    """

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        self.models.append(net_factory())
        self.teacher = copy.deepcopy(self.models[0])
        for p in self.teacher.parameters():
            p.requires_grad_(False)

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
        weight = self.params["consistency"] * step.rampup(self.params["consistency_rampup"])
        total = 0.5 * (ce + dice) + weight * consistency
        return Losses(total=total, terms={"ce": ce, "dice": dice, "consistency": consistency},
                      stats={"consistency_weight": weight})

    def after_optimizer_step(self, step: Step) -> None:
        # SSL4MIS passes the count of steps taken (1 after the first), so alpha starts at 0.5
        ema_update(self.teacher, self.models[0], self.params["ema_decay"], step.iteration + 1)
