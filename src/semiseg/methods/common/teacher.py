"""The teacher–student family: a student network, its frozen EMA copy, and an unsupervised term
that compares the two per pixel.

Mean Teacher, UA-MT, BCP, BUARL, SGRS-Net and CRLN build on :class:`TeacherStudent`; each
overrides only its difference from it (every hook gets the step's
:class:`~semiseg.methods.base.StepContext`, or the :class:`UnsupervisedContext` made of it):

- :meth:`TeacherStudent.build_student` — the student network (default: the run's network;
  CRLN wraps it with its prototypes);
- :meth:`TeacherStudent.supervised_weight` — an optional per-pixel weight on the supervised
  term (BUARL's labeled-stream weights);
- :meth:`TeacherStudent.teacher_input` — what the teacher sees (Gaussian input noise when the
  method's ``noise_std`` is above 0, the image itself at 0; a mixing method returns a mixed
  image);
- :meth:`TeacherStudent.unsupervised_map` — the per-pixel loss ``(B, *spatial)`` between the
  student's prediction and the teacher's (default: squared softmax difference, mean over
  classes);
- :meth:`TeacherStudent.pixel_weight` — an optional per-pixel weight on that map (UA-MT's
  certainty mask; BUARL's region weights);
- :meth:`TeacherStudent.reduce_unsupervised` — how the weighted map becomes a scalar (default:
  the sum of weight × map over all unlabeled pixels divided by their number, so without a weight
  it is the plain mean);
- ``ema_warmup`` / ``ema_buffers`` / :meth:`TeacherStudent.ema_active` — the EMA update.

The teacher is ``self.teacher``, a frozen copy of the student made at construction (it gets no
gradient and is not in the optimiser); the student is ``self.models[0]`` and is what
validation and inference run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from semiseg.methods.base import Losses, Method, Step, StepContext, two_stream
from semiseg.methods.common.ema import ema_update
from semiseg.methods.common.losses import reduce_region

__all__ = ["TeacherStudent", "UnsupervisedContext", "frozen_copy", "input_noise"]


def frozen_copy(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` whose parameters require no gradient."""
    twin = copy.deepcopy(net)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def input_noise(x: Tensor, std: float, clip: float) -> Tensor:
    """``x + clip(N(0, std²), ±clip)`` (the Mean Teacher / UA-MT teacher input)."""
    return x + torch.clamp(torch.randn_like(x) * std, -clip, clip)


@dataclass
class UnsupervisedContext:
    """What the unsupervised hooks see: the step's context (its batch, step and statistics
    channel), the student's logits and the teacher's probabilities on the unlabeled images."""

    context: StepContext
    student_logits: Tensor
    teacher_probs: Tensor

    @property
    def batch(self) -> dict[str, Tensor]:
        return self.context.batch

    @property
    def step(self) -> Step:
        return self.context.step

    @property
    def stats(self) -> dict:
        return self.context.stats


class TeacherStudent(Method):
    """A student (``models[0]``) and an EMA teacher (``teacher``); the Mean Teacher step by default.

    :meth:`training_step` is ``0.5·(CE + Dice)(student(x_l), y_l) + λ(t)·L_u`` with
    ``L_u = reduce(weight ⊙ map(student(x_u), teacher(teacher_input(x_u))))``: the student sees
    the labeled and unlabeled images in one batch (one set of batch-norm statistics, as the
    common code), the teacher's input is drawn after the student's forward pass. λ(t) is
    :meth:`consistency_weight`. After every optimiser step :meth:`ema_active` decides whether
    the teacher moves: ``teacher <- α·teacher + (1 − α)·student`` with ``α = ema_decay``, warmed
    up as ``min(1 − 1/(t + 1), ema_decay)`` when ``ema_warmup`` (the 0-based iteration: the
    first update copies the student), buffers by ``ema_buffers``
    (:mod:`semiseg.methods.common.ema`).
    """

    #: EMA warm-up ``min(1 − 1/(t+1), decay)`` (Mean Teacher, UA-MT) or the constant decay (BCP).
    ema_warmup: ClassVar[bool] = True
    #: What the EMA does with batch-norm buffers: "copy", "ema" or "keep".
    ema_buffers: ClassVar[str] = "copy"

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        self.models.append(self.build_student())
        self.teacher = frozen_copy(self.models[0])

    def build_student(self) -> nn.Module:
        """The student network (the teacher starts as its copy): the run's network by default."""
        return self.net_factory()

    @property
    def student(self) -> nn.Module:
        return self.models[0]

    # ---- the teacher

    def teacher_input(self, x: Tensor, ctx: StepContext) -> Tensor:
        """The teacher's input for the unlabeled images ``x``: :func:`input_noise` when the params'
        ``noise_std`` is above 0, the images themselves at 0."""
        std = float(self.params["noise_std"])
        return input_noise(x, std, float(self.params["noise_clip"])) if std > 0 else x

    @torch.no_grad()
    def teacher_probs(self, x: Tensor, ctx: StepContext) -> Tensor:
        return torch.softmax(self.teacher(self.teacher_input(x, ctx)), dim=1)

    # ---- the supervised term

    def supervised_weight(self, logits: Tensor, ctx: StepContext) -> Tensor | None:
        """A per-pixel weight ``(B, *spatial)`` on the supervised CE + Dice of the student's
        labeled ``logits``, or None (all 1)."""
        return None

    # ---- the unsupervised term

    def unsupervised_map(self, ctx: UnsupervisedContext) -> Tensor:
        """Per-pixel loss ``(B, *spatial)``: the squared softmax difference, mean over classes."""
        return ((torch.softmax(ctx.student_logits, dim=1) - ctx.teacher_probs) ** 2).mean(dim=1)

    def pixel_weight(self, ctx: UnsupervisedContext) -> Tensor | None:
        """A per-pixel weight ``(B, *spatial)`` on :meth:`unsupervised_map`, or None (all 1)."""
        return None

    def reduce_unsupervised(self, loss_map: Tensor, weight: Tensor | None, ctx: UnsupervisedContext) -> Tensor:
        """``Σ weight·map / N`` over the N unlabeled pixels (the plain mean without a weight)."""
        return loss_map.mean() if weight is None else reduce_region(loss_map, weight, "all_pixels")

    def unsupervised_loss(self, ctx: UnsupervisedContext) -> Tensor:
        return self.reduce_unsupervised(self.unsupervised_map(ctx), self.pixel_weight(ctx), ctx)

    def consistency_weight(self, step: Step) -> float:
        """λ(t): ``consistency`` ramped over ``consistency_rampup`` of training (:meth:`Method.ramp_weight`)."""
        return self.ramp_weight(step)

    # ---- the step

    def training_step(self, ctx: StepContext) -> Losses:
        s = two_stream(ctx.batch)
        logits = self.student(s.images)
        labeled = logits[: s.n_labeled]
        ce, dice = self.supervised_loss(labeled, s.label, weight=self.supervised_weight(labeled, ctx))
        unsup = UnsupervisedContext(ctx, logits[s.n_labeled:], self.teacher_probs(s.unlabeled, ctx))
        consistency = self.unsupervised_loss(unsup)
        weight = self.consistency_weight(ctx.step)
        total = 0.5 * (ce + dice) + weight * consistency
        return Losses(total=total, terms={"ce": ce, "dice": dice, "consistency": consistency},
                      stats={"consistency_weight": weight, **ctx.stats})

    # ---- the EMA

    def ema_active(self, step: Step) -> bool:
        """Whether the teacher follows the student after this step (always, by default)."""
        return True

    def after_optimizer_step(self, ctx: StepContext) -> None:
        if self.ema_active(ctx.step):
            ema_update(self.teacher, self.student, float(self.params["ema_decay"]), ctx.step.iteration,
                       buffers=self.ema_buffers, warmup=self.ema_warmup)
