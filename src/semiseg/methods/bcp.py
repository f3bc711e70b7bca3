"""Bidirectional copy-paste (Bai et al., "Bidirectional Copy-Paste for Semi-Supervised Medical
Image Segmentation", CVPR 2023, arXiv:2305.00673)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from semiseg.methods.base import Losses, StageContext, Step, StepContext, register, two_stream
from semiseg.methods.common.losses import DiceCE, dice_ce_loss
from semiseg.methods.common.pseudo import largest_connected_component
from semiseg.methods.common.teacher import TeacherStudent

__all__ = ["SCRIPT_DICE_SMOOTH", "BidirectionalCopyPaste", "copy_paste", "halves", "mixed_loss", "paste_mask"]

#: The Dice smoothing of each of BCP's scripts (``dice_smoothing: script``): ACDC_BCP_train.py's
#: ``DiceLoss`` and LA_BCP_train.py's ``mask_DiceLoss``.
SCRIPT_DICE_SMOOTH = {"acdc": 1e-10, "la": 1e-5}


def paste_mask(spatial: Sequence[int], ratio: float, *, device=None,
               generator: torch.Generator | None = None) -> Tensor:
    """BCP's mask ``M`` of shape ``spatial``: 1 everywhere but a block of zeros.

    The zero block has side ``int(s * ratio)`` along every axis of size ``s`` (``ratio = 2/3``:
    170 of 256, 74 of 112, 53 of 80); its corner is drawn uniformly from ``[0, s - side)`` per
    axis (``np.random.randint(0, s - side)`` in the public code; ``[0, 0]`` when the block fills
    the axis). Worked example: ``spatial = (32, 32)``, ``ratio = 2/3`` gives a 21 x 21 block of
    zeros (441 pixels) starting at rows/columns 0..10, and 1024 - 441 = 583 ones. A tiny
    tolerance makes ``96 * 0.666...`` give 64, as ``96 * 2 / 3`` does, not 63.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    mask = torch.ones(tuple(spatial), dtype=torch.long, device=device)
    region = []
    for s in spatial:
        side = int(s * ratio + 1e-6)
        start = int(torch.randint(0, max(s - side, 1), (), generator=generator))
        region.append(slice(start, start + side))
    mask[tuple(region)] = 0
    return mask


def copy_paste(background: Tensor, foreground: Tensor, mask: Tensor) -> Tensor:
    """``background * M + foreground * (1 - M)``: the foreground fills M's zero block.

    Works for images ``(B, C, *spatial)`` and label maps ``(B, *spatial)`` alike (``mask`` is
    ``(*spatial)`` and broadcasts); labels stay integers.
    """
    return background * mask + foreground * (1 - mask)


def halves(x: Tensor) -> tuple[Tensor, Tensor]:
    """The two halves ``a, b`` of a batch that BCP pairs up, of equal size ``ceil(B / 2)``.

    An even batch splits in two; in an odd one the middle sample is in both halves; a batch of
    one gives ``a = b`` (so a 1 + 1 smoke schedule still runs).
    """
    n = x.shape[0]
    return x[: (n + 1) // 2], x[n // 2:]


def mixed_loss(logits: Tensor, background_label: Tensor, foreground_label: Tensor, mask: Tensor,
               *, background_weight: float, foreground_weight: float,
               pixel_weight: Tensor | None = None, per_sample_dice: bool = False,
               smooth: float = 1e-5) -> DiceCE:
    """BCP's ``mix_loss``: CE and Dice of each source's labels over its own region, weighted.

    ``ce = w_b * CE_M(background_label) + w_f * CE_(1-M)(foreground_label)`` with the masked
    mean CE ``sum(ce * m) / sum(m)``, and the same for the masked soft Dice (every sum of the
    Dice multiplied by the region mask, classes averaged with background). The step's loss is
    ``0.5 * (ce + dice)``.

    ``pixel_weight`` (``(B, *spatial)``, None = 1) multiplies each pixel's CE and Dice sums in
    both regions (``dice_ce_loss``'s ``weight``; each region's CE is still divided by its pixel
    count), the hook of :meth:`BidirectionalCopyPaste.mix_weight`.

    ``per_sample_dice``: the Dice of BCP's LA script (``mask_DiceLoss``: per sample and class,
    linear denominator, :func:`~semiseg.methods.common.losses.per_sample_dice_loss`) instead of
    SSL4MIS's form, which its ACDC script uses; ``smooth``: the Dice's smoothing (1e-5 as
    SSL4MIS and the LA script; the ACDC script's ``DiceLoss`` has 1e-10).
    """
    m = mask.expand(logits.shape[0], *mask.shape)
    bg = dice_ce_loss(logits, background_label, mask=m, weight=pixel_weight, per_sample=per_sample_dice,
                      smooth=smooth)
    fg = dice_ce_loss(logits, foreground_label, mask=1 - m, weight=pixel_weight, per_sample=per_sample_dice,
                      smooth=smooth)
    return DiceCE(ce=background_weight * bg.ce + foreground_weight * fg.ce,
                  dice=background_weight * bg.dice + foreground_weight * fg.dice)


@register("bcp")
class BidirectionalCopyPaste(TeacherStudent):
    """Copy-paste pre-training on labeled images, then mean-teacher self-training on mixed images.

    Stage 1, the first ``pretrain_fraction`` of the iterations (labeled stream only): the labeled
    batch is split into halves ``a, b``; the student learns ``a * M + b * (1 - M)`` against
    ``y_a * M + y_b * (1 - M)`` with :func:`mixed_loss` (both weights 1). ``M`` is
    :func:`paste_mask` (one draw per iteration, shared by the batch).

    Stage 2, the rest: when it starts (the engine's stage hand-off,
    :meth:`on_stage_start`) the teacher becomes a copy of the pre-trained student: the last one,
    or with ``handoff: best`` the one that scored best on validation during pre-training, which
    the student also returns to (BCP's code). Each iteration, with labeled halves ``l_a, l_b``, unlabeled halves ``u_a, u_b``
    and the teacher's pseudo-labels ``p_a, p_b`` (argmax, then the largest connected component
    of each class per image):

    - ``u_a * M + l_a * (1 - M)`` (labeled foreground pasted into unlabeled background) against
      ``p_a`` outside the block, weight ``u_weight``, and ``y_a`` inside, weight 1;
    - ``l_b * M + u_b * (1 - M)`` (unlabeled foreground into labeled background) against ``y_b``
      outside, weight 1, and ``p_b`` inside, weight ``u_weight``;

    loss ``0.5 * (ce + dice)`` of the two summed; after each step the teacher moves to the
    student with the constant EMA decay ``ema_decay`` (parameters and batch-norm buffers,
    BCP's ``update_model_ema``). Inference uses the student. One code path serves 2D (ACDC,
    U-Net) and 3D (LA, V-Net): the mask has the patch's dimensionality.

    Choices where the paper or the code leave room:

    - The stages are one schedule: ``pretrain_fraction`` of ``iterations`` (ACDC: 10k of
      10k + 30k = 0.25 with 40k iterations; LA: 2k of 2k + 15k).
    - ``handoff``: ``last`` (schema default) starts self-training from the last pre-trained
      student; ``best`` from the pre-training checkpoint that scored best on validation
      (student and teacher), as BCP's code does (the catalogue entry). Without a val split
      ``best`` is the last. The final checkpoint is chosen on self-training's validations only.
    - ``reset_optimizer``: false (default) carries the optimiser on across the switch,
      momentum included, as BCP's ACDC script does (it loads the saved pre-training optimiser
      state into its new SGD; from the best checkpoint, where we carry on from the last
      iteration's state); true starts a fresh one, as its LA script does (the ``la`` settings of
      the catalogue entry, with its lr x0.1 every 2.5k self-training iterations:
      ``lr_policy: step``).
    - BCP's ACDC script keeps the learning rate constant (set ``lr_policy: constant``); its
      "consistency weight" is computed and logged but never used, so there is none here.
    - The paper calls ``M`` zero-centred; the code draws the block's corner uniformly, which we
      follow. The block side is ``int(s * mask_ratio)`` per axis, as in the code.
    - Pseudo-labels are the argmax of the teacher's softmax for every dataset (BCP's LA script
      thresholds the foreground probability at 0.5: the same for two classes, up to ties).
    - ``script``: which of BCP's two scripts the losses follow; they differ in three ways that
      change numbers. ``acdc`` (schema default; ACDC_BCP_train.py): SSL4MIS's Dice (squared
      denominator, one per class over the batch), pre-training by :func:`mixed_loss` (each
      region's labels over its own region, both weights 1), and the labeled halves pasted into
      the unlabeled ones first, as above. ``la`` (the catalogue's LA settings; LA_BCP_train.py):
      BCP's ``mask_DiceLoss`` everywhere (per sample and class, linear denominator, background
      included, smoothing 1e-5), pre-training by the plain ``½(CE + Dice)`` of the mixed label
      (the masked form adds two region means: about twice its gradient), and the mixes the other
      way round: ``l_a * M + u_a * (1 - M)`` (``y_a`` outside, weight 1; ``p_a`` inside,
      ``u_weight``) forwarded first, then ``u_b * M + l_b * (1 - M)`` (``p_b`` outside,
      ``u_weight``; ``y_b`` inside, 1).
    - ``dice_smoothing``: ``script`` (default) smooths the Dice as the script does: 1e-10 in
      the ACDC script's ``DiceLoss``, 1e-5 in the LA script's ``mask_DiceLoss``; ``ssl4mis``
      smooths with SSL4MIS's 1e-5 for both (the Dice every other method here uses). The paper
      does not say; BCP's code is the reference, so the default follows it. The smoothing
      matters where a class is nearly absent from a region: on the parity replay's tiny input
      1.4e-7 of the Dice at the first step, 5e-3 of the loss after 22 steps.
    - The teacher runs in the mode the engine sets (train mode, as in BCP: dropout active,
      batch statistics).
    - Labeled and unlabeled batches must be the same size (BCP pairs them half by half).

    On the teacher–student base: no EMA warm-up and batch-norm buffers averaged too
    (``update_model_ema``), no EMA during pre-training, its own two-stage step. A method built
    on BCP may weight each pixel of a mixed image's loss through :meth:`mix_weight` (BUARL).

    Parameters (workflow/schemas/params/bcp.schema.yaml): ``pretrain_fraction``,
    ``mask_ratio``, ``u_weight``, ``ema_decay``, ``largest_component``, ``handoff``,
    ``reset_optimizer``, ``script``, ``dice_smoothing``.
    """

    ema_warmup = False
    ema_buffers = "ema"

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        sched = spec.get("schedule", {})
        if sched.get("labeled_batch_size", 0) != sched.get("unlabeled_batch_size", 0):
            raise ValueError(
                f"bcp pairs labeled and unlabeled images half by half: labeled_batch_size "
                f"({sched['labeled_batch_size']}) must equal unlabeled_batch_size "
                f"({sched['unlabeled_batch_size']}); set both in the method's `schedule:` overrides")

    def pretrain_iterations(self, total: int) -> int:
        """How many of ``total`` iterations the labeled-only pre-training takes."""
        return int(round(self.params["pretrain_fraction"] * total))

    def in_pretraining(self, step: Step) -> bool:
        return step.iteration < self.pretrain_iterations(step.total)

    def stages(self, total: int) -> list[tuple[str, int]]:
        return [("pretrain", 0), ("self_train", self.pretrain_iterations(total))]

    def on_stage_start(self, name: str, step: Step, ctx: StageContext) -> None:
        """Self-training starts from the pre-trained student (``handoff``); the teacher copies it.
        A run resumed past this point restores both from its checkpoint instead."""
        best = ctx.best_models() if self.params["handoff"] == "best" else None
        if best is not None:
            self.models.load_state_dict(best)
        self.teacher.load_state_dict(self.student.state_dict())
        ctx.reset_optimizer = bool(self.params["reset_optimizer"])

    def training_step(self, ctx: StepContext) -> Losses:
        if self.in_pretraining(ctx.step):
            return self._pretrain_step(ctx)
        return self._self_train_step(ctx)

    @property
    def dice_smooth(self) -> float:
        """The Dice's smoothing under ``dice_smoothing`` and ``script`` (see the class)."""
        if self.params["dice_smoothing"] == "script":
            return SCRIPT_DICE_SMOOTH[self.params["script"]]
        return 1e-5

    def _mask(self, image: Tensor) -> Tensor:
        return paste_mask(image.shape[2:], self.params["mask_ratio"], device=image.device)

    def _pretrain_step(self, ctx: StepContext) -> Losses:
        batch = ctx.batch
        (img_a, img_b), (lab_a, lab_b) = halves(batch["labeled_image"]), halves(batch["labeled_label"])
        mask = self._mask(img_a)
        logits = self.models[0](copy_paste(img_a, img_b, mask))
        ctx.stats["stage"] = 0.0
        weight = self.mix_weight(logits, mask, None, None, ctx)
        if self.params["script"] == "la":  # the plain loss of the mixed label
            ce, dice = dice_ce_loss(logits, copy_paste(lab_a, lab_b, mask), weight=weight, per_sample=True,
                                    smooth=self.dice_smooth)
        else:
            ce, dice = mixed_loss(logits, lab_a, lab_b, mask, background_weight=1.0, foreground_weight=1.0,
                                  pixel_weight=weight, smooth=self.dice_smooth)
        return Losses(total=0.5 * (ce + dice), terms={"ce": ce, "dice": dice}, stats=ctx.stats)

    @torch.no_grad()
    def teacher_logits(self, image: Tensor) -> Tensor:
        return self.teacher(image)

    @torch.no_grad()
    def pseudo_label(self, image: Tensor, logits: Tensor | None = None) -> Tensor:
        """The teacher's label map ``(B, *spatial)``: argmax, then (optionally) the largest
        component. ``logits``: the teacher's on ``image`` when already computed. On an
        accelerator the components are found on the device (the same labels as scipy's, without
        the host round trip per step); on a CPU with scipy, which is faster there."""
        labels = (self.teacher(image) if logits is None else logits).argmax(dim=1)
        if not self.params["largest_component"]:
            return labels
        return largest_connected_component(labels, on_device=labels.device.type != "cpu")

    def mix_weight(self, logits: Tensor, mask: Tensor, unlabeled_in: str | None,
                   teacher_logits: Tensor | None, ctx: StepContext) -> Tensor | None:
        """Per-pixel weights ``(B, *spatial)`` on a mixed image's loss (both regions), or None (all 1:
        BCP itself).

        ``logits``: the student's on the mixed image; ``mask``: the paste mask (1 keeps the first
        image, 0 the pasted block); ``unlabeled_in``: where the unlabeled image lies, ``"ones"``
        (``u_a * M + l_a * (1 - M)``), ``"zeros"`` (``l_b * M + u_b * (1 - M)``) or None
        (pre-training: labeled images only); ``teacher_logits``: the teacher's on that unlabeled
        image, unmixed (its pixels sit where they are in the mix); ``ctx``: the step's context
        (its ``stats`` channel).
        """
        return None

    def _self_train_step(self, ctx: StepContext) -> Losses:
        student, u, s = self.student, self.params["u_weight"], two_stream(ctx.batch)
        (l_a, l_b), (y_a, y_b), (u_a, u_b) = halves(s.labeled), halves(s.label), halves(s.unlabeled)
        if u_a.shape[0] != l_a.shape[0]:
            raise ValueError(f"bcp needs equal labeled and unlabeled batches, got "
                             f"{s.n_labeled} and {s.unlabeled.shape[0]}")
        t_a, t_b = self.teacher_logits(u_a), self.teacher_logits(u_b)
        p_a, p_b = self.pseudo_label(u_a, t_a), self.pseudo_label(u_b, t_b)
        mask = self._mask(l_a)
        ctx.stats["stage"] = 1.0
        if self.params["script"] == "la":
            # LA_BCP_train.py: the unlabeled halves pasted into the labeled ones first
            out_l = student(copy_paste(l_a, u_a, mask))
            out_u = student(copy_paste(u_b, l_b, mask))
            on_l = mixed_loss(out_l, y_a, p_a, mask, background_weight=1.0, foreground_weight=u, per_sample_dice=True,
                              pixel_weight=self.mix_weight(out_l, mask, "zeros", t_a, ctx), smooth=self.dice_smooth)
            on_u = mixed_loss(out_u, p_b, y_b, mask, background_weight=u, foreground_weight=1.0, per_sample_dice=True,
                              pixel_weight=self.mix_weight(out_u, mask, "ones", t_b, ctx), smooth=self.dice_smooth)
            ce, dice = on_l.ce + on_u.ce, on_l.dice + on_u.dice
            return Losses(total=0.5 * (ce + dice), terms={"ce": ce, "dice": dice}, stats=ctx.stats)
        # Two forward passes, as BCP: each mixed batch gets its own batch-norm statistics.
        out_u = student(copy_paste(u_a, l_a, mask))
        out_l = student(copy_paste(l_b, u_b, mask))
        on_u = mixed_loss(out_u, p_a, y_a, mask, background_weight=u, foreground_weight=1.0,
                          pixel_weight=self.mix_weight(out_u, mask, "ones", t_a, ctx), smooth=self.dice_smooth)
        on_l = mixed_loss(out_l, y_b, p_b, mask, background_weight=1.0, foreground_weight=u,
                          pixel_weight=self.mix_weight(out_l, mask, "zeros", t_b, ctx), smooth=self.dice_smooth)
        ce, dice = on_u.ce + on_l.ce, on_u.dice + on_l.dice
        return Losses(total=0.5 * (ce + dice), terms={"ce": ce, "dice": dice}, stats=ctx.stats)

    def ema_active(self, step: Step) -> bool:
        return not self.in_pretraining(step)
