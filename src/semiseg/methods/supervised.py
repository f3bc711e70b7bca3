"""Supervised baseline: the U-Net / V-Net lower (and, at 100 %, upper) bound of every table."""

from __future__ import annotations

from semiseg.methods.base import Losses, Method, StepContext, register


@register("supervised")
class Supervised(Method):
    """One network trained on the labeled stream only with 0.5·(CE + Dice).

    This is the "U-Net (n labeled)" row of the papers' tables, trained with the same engine,
    augmentation and schedule as the semi-supervised methods, so the gap between them is the
    unlabeled data's contribution alone.
    """

    uses_unlabeled = False

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        self.models.append(net_factory())

    def training_step(self, ctx: StepContext) -> Losses:
        logits = self.models[0](ctx.batch["labeled_image"])
        ce, dice = self.supervised_loss(logits, ctx.batch["labeled_label"])
        return Losses(total=0.5 * (ce + dice), terms={"ce": ce, "dice": dice})
