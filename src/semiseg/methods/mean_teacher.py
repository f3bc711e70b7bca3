"""Mean Teacher (Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017)."""

from __future__ import annotations

from semiseg.methods.base import Step, register
from semiseg.methods.common.teacher import TeacherStudent


@register("mean_teacher")
class MeanTeacher(TeacherStudent):
    """A student trained on labels plus consistency with an EMA teacher on noisy input.

    Per iteration, as in the common medical code (SSL4MIS ``train_mean_teacher_2D.py``):
    ``L = 0.5·(CE + Dice)(student(x_l), y_l) + λ(t)·MSE(softmax(student(x_u)), softmax(teacher(x_u + ε)))``
    with ε ~ clip(N(0, noise_std²), ±noise_clip) and λ(t) = consistency·exp(-5(1 − t/T)²)
    ramped over ``consistency_rampup`` of training. The consistency is the mean over the
    unlabeled images only (SSL4MIS takes ``outputs_soft[labeled_bs:]``), over every pixel and
    class. The teacher's weights are the EMA of the student's (decay ``ema_decay``, the
    ``1 − 1/(t+1)`` warm-up of :func:`~semiseg.methods.common.ema.ema_update`, with the 0-based
    iteration as SSL4MIS passes it: the first update copies the student); it receives no
    gradient. All of this is :class:`~semiseg.methods.common.teacher.TeacherStudent`'s default
    step; Mean Teacher adds only the delayed start below.

    ``consistency_start``: λ is 0 for the first ``round(consistency_start · iterations)``
    iterations. SSL4MIS's 2D script sets the consistency loss to 0 while ``iter_num < 1000``
    (of 30k: 1/30, which the ``mean_teacher`` catalogue entry uses); its 3D script and the paper
    have no such delay (0). The ramp itself still counts from iteration 0, as in SSL4MIS, so
    λ steps from 0 to its ramped value there.

    ``rampup_block``: SSL4MIS ramps per "epoch" of 150 iterations
    (``sigmoid_rampup(iter_num // 150, 200)``), a staircase (the catalogue entry, 150); 1 is the
    smooth per-iteration ramp (the schema default).

    Parameters (config ``params``, workflow/schemas/params/mean_teacher.schema.yaml):
    ``ema_decay``, ``consistency``, ``consistency_rampup``, ``consistency_start``,
    ``rampup_block``, ``noise_std``, ``noise_clip``.
    """

    def consistency_weight(self, step: Step) -> float:
        """λ(t): 0 before ``consistency_start``, then ``consistency`` times the ramp at ``t``."""
        if step.iteration < round(float(self.params["consistency_start"]) * step.total):
            return 0.0
        return self.ramp_weight(step)
