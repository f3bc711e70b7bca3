"""UniMatch (Yang et al., "Revisiting Weak-to-Strong Consistency in Semi-Supervised Semantic
Segmentation", CVPR 2023, arXiv:2208.09910): weak-to-strong self-training of one network, with two
strong views of each unlabeled image and a feature-perturbed pass of its weak view.

Reference code: https://github.com/LiheYoung/UniMatch at commit
0324f3dd4a22128105a5eb135d2586c0bb3cc647, ``more-scenarios/medical/`` (``unimatch.py``,
``dataset/acdc.py``, ``dataset/transform.py``, ``model/unet.py``, ``util/utils.py``,
``configs/acdc.yaml``): the paper's ACDC experiments.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semiseg.methods.base import Losses, Method, StepContext, register, two_stream
from semiseg.methods.common.losses import one_hot, soft_dice_loss
from semiseg.methods.unimatch.views import colour_jitter, cutmix_boxes, gaussian_blur, strong_view

__all__ = ["UniMatch", "channel_dropout", "colour_jitter", "confident_loss", "cutmix_boxes", "evaluating",
           "gaussian_blur", "mixed_targets", "strong_view", "unimatch_total"]


@contextmanager
def evaluating(net: nn.Module):
    """``net`` in eval mode (batch-norm running statistics, no dropout) inside, its mode restored after."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


def channel_dropout(x: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """``nn.Dropout2d(p)`` of features ``(B, C, *spatial)`` with draws from ``generator``: each
    channel of each sample zeroed with probability ``p``, the others scaled by ``1/(1 − p)``."""
    keep = torch.rand(x.shape[:2], generator=generator) >= p
    return x * (keep.to(device=x.device, dtype=x.dtype) / (1.0 - p)).view(*x.shape[:2], *([1] * (x.dim() - 2)))


def confident_loss(logits: Tensor, target: Tensor, conf: Tensor, threshold: float, kind: str) -> Tensor:
    """The unsupervised term of one view: the student's ``logits`` ``(B, C, *spatial)`` against the
    pseudo labels ``target`` where their confidence ``conf`` reaches ``threshold``.

    ``"dice"`` (the medical code's ``DiceLoss(..., ignore=conf < τ)``): SSL4MIS's soft Dice of the
    softmax, every sum restricted to the confident pixels of the batch (smoothing 1e-5, classes
    averaged with background). Worked example, one class, pixels ``p = [0.8, 0.6, 0.3]``,
    ``t = [1, 0, 1]``, the third below τ: ``1 − 1.6 / (0.64 + 0.36 + 1) = 0.2``. ``"ce"`` (the
    paper's per-pixel criterion, its natural-image code): ``Σ 1[conf ≥ τ]·CE / #pixels``.
    """
    confident = conf >= threshold
    if kind == "dice":
        probs = torch.softmax(logits, dim=1)
        return soft_dice_loss(probs, one_hot(target, logits.shape[1]), mask=confident)
    if kind == "ce":
        ce = F.cross_entropy(logits, target, reduction="none")
        return (ce * confident).sum() / ce.numel()
    raise ValueError(f"unimatch unlabeled_loss must be 'dice' or 'ce', got {kind!r}")


def mixed_targets(label: Tensor, conf: Tensor, mix_label: Tensor, mix_conf: Tensor,
                  box: Tensor) -> tuple[Tensor, Tensor]:
    """The pseudo labels and confidences of a CutMixed strong view: the partner's inside ``box``
    (where its image was pasted), the image's own outside."""
    return torch.where(box, mix_label, label), torch.where(box, mix_conf, conf)


def unimatch_total(supervised: Tensor, strong: tuple[Tensor, Tensor], fp: Tensor, strong_weight: float,
                   fp_weight: float) -> Tensor:
    """``(L_s + L_u) / 2`` with ``L_u = μ·(L_s1 + L_s2)/2 + λ·L_fp`` (the paper's total loss; the code's
    ``(loss_x + 0.25·s1 + 0.25·s2 + 0.5·fp) / 2`` at μ = λ = 0.5). Worked example: ``L_s = 0.4``,
    ``L_s1 = 0.2``, ``L_s2 = 0.6``, ``L_fp = 0.3``, μ = λ = 0.5: ``(0.4 + 0.2 + 0.15) / 2 = 0.375``."""
    return 0.5 * (supervised + strong_weight * 0.5 * (strong[0] + strong[1]) + fp_weight * fp)


@register("unimatch")
class UniMatch(Method):
    """One network taught by its own confident weak-view predictions on two strong views and on a
    feature-perturbed pass (the paper's dual-stream perturbations, DusPerb, and its unified image-
    and feature-level perturbations, UniPerb).

    Per iteration, on ``B`` labeled images ``x``, ``B`` unlabeled images ``u`` (weak view) and
    ``B`` more unlabeled images ``u'`` (weak view), their partners for CutMix:

    - ``u'``'s prediction in eval mode (batch-norm running statistics, no dropout; no gradient):
      labels ``ŷ'`` and confidences ``c'`` (max softmax);
    - two strong views of every image of ``u`` and ``u'`` (:mod:`~semiseg.methods.unimatch.views`);
      each strong view of ``u_i`` gets a CutMix box of its own (p = 0.5), filled from the same
      strong view of ``u'_i``;
    - one forward pass of ``[x, u]`` whose decoder runs on every encoder level concatenated with
      its channel dropout (``fp_dropout``, the code's ``need_fp``: clean and perturbed features
      share the decoder's batch-norm statistics): ``p_x``, ``p_w``, ``p_fp``;
    - one forward pass of both strong views together: ``p_s1``, ``p_s2``;
    - pseudo labels ``ŷ``, ``c`` of ``p_w`` (detached), mixed with ``ŷ'``, ``c'`` in each box;
    - ``L = (L_s + L_u) / 2``, ``L_s = (CE + Dice)/2`` of ``p_x``,
      ``L_u = strong_weight·(L(p_s1) + L(p_s2))/2 + fp_weight·L(p_fp)``, each ``L`` of
      :func:`confident_loss` (pixels with confidence ≥ ``conf_thresh``). The network is what
      validation and inference run.

    The unlabeled batch is ``u`` and ``u'`` together (the schedule's ``unlabeled_batch_size``, so
    even): the code draws ``u'`` from a second unlabeled loader; its ACDC batch is 12 + 12 + 12.

    Choices of the code where the paper is silent (or speaks of natural images), followed here:
    its medical script's unsupervised terms are the Dice of the confident pixels (the paper's
    per-pixel loss of natural images, CE, is ``unlabeled_loss: ce``); ``u'`` is predicted in
    eval mode, ``u`` in the training pass (encoder dropout on); the strong views are colour
    jitter, blur and CutMix (no grayscale or equalisation on one-band slices). Its ACDC schedule
    (``config/methods/unimatch.yaml``): 300 epochs of the unlabeled slices in batches of 12
    (30,900 / 29,100 iterations at 3 / 7 labeled patients), SGD lr 0.01, momentum 0.9, weight
    decay 1e-4, poly 0.9 updated after each step, 256 × 256 slices.

    Not reproduced: the code validates on ``splits/acdc/valtest.txt``, the val patients *and* the
    test patients, and keeps the best epoch's weights by that score, so its reported test Dice
    is chosen on the test set; here the checkpoint is chosen on the val split only, as for every
    method. Its 8-bit quantisation of the unlabeled images is not reproduced either (see
    :mod:`~semiseg.methods.unimatch.views`).

    Parameters (config ``params``, workflow/schemas/params/unimatch.schema.yaml):
    ``conf_thresh``, ``strong_weight``, ``fp_weight``, ``fp_dropout``, ``unlabeled_loss``.
    """

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        if self.dims != 2:
            raise ValueError(f"unimatch is a 2D method (its strong views blur slices); the dataset has dims "
                             f"{self.dims}")
        self.models.append(net_factory())

    def make_views(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        """``unlabeled_image`` becomes the first half of the unlabeled batch (``u``), ``mix_image``
        the second (``u'``); ``strong_image`` holds both strong views of ``u``, CutMixed,
        ``(2B, 1, H, W)``, and ``cutmix_box`` their boxes ``(2B, H, W)``."""
        unlabeled = batch["unlabeled_image"]
        n = unlabeled.shape[0]
        if n % 2:
            raise ValueError(f"unimatch splits the unlabeled batch into images and their CutMix partners: "
                             f"unlabeled_batch_size must be even, got {n}")
        h, w = unlabeled.shape[-2:]
        views, boxes = [], []
        for _ in range(2):
            strong = strong_view(unlabeled, generator)
            box = cutmix_boxes(n // 2, h, w, generator).to(unlabeled.device)
            own, partner = strong[: n // 2], strong[n // 2:]
            views.append(torch.where(box[:, None], partner, own))
            boxes.append(box)
        return {**batch, "unlabeled_image": unlabeled[: n // 2], "mix_image": unlabeled[n // 2:],
                "strong_image": torch.cat(views), "cutmix_box": torch.cat(boxes)}

    def weak_pass(self, images: Tensor, n_labeled: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The clean logits of ``images`` (labeled first) and the feature-perturbed logits of their
        unlabeled part, from one decoder pass over clean and dropped-out features together."""
        net, p = self.models[0], float(self.params["fp_dropout"])
        features = net.encode(images)
        logits, _ = net.decode([torch.cat([f, channel_dropout(f, p, generator)]) for f in features])
        clean, perturbed = logits.chunk(2)
        return clean, perturbed[n_labeled:]

    def loss_terms(self, pred_x: Tensor, label_x: Tensor, pred_w: Tensor, pred_fp: Tensor, pred_strong: Tensor,
                   mix_logits: Tensor, boxes: Tensor) -> dict[str, Tensor]:
        """The named terms of a step from its predictions: labeled ``pred_x`` with ``label_x``; the
        weak view's ``pred_w`` and its feature-perturbed ``pred_fp``; both strong views
        ``pred_strong`` ``(2B, C, H, W)`` with their CutMix ``boxes`` ``(2B, H, W)``; the partners'
        eval-mode ``mix_logits``. Also ``conf``, the weak view's confidences (not a loss)."""
        tau, kind = float(self.params["conf_thresh"]), self.params["unlabeled_loss"]
        mix_conf, mix_label = torch.softmax(mix_logits.detach(), dim=1).max(dim=1)
        conf, label = torch.softmax(pred_w.detach(), dim=1).max(dim=1)
        strong = [confident_loss(pred, *mixed_targets(label, conf, mix_label, mix_conf, box), tau, kind)
                  for pred, box in zip(pred_strong.chunk(2), boxes.chunk(2))]
        ce, dice = self.supervised_loss(pred_x, label_x)
        return {"ce": ce, "dice": dice, "strong1": strong[0], "strong2": strong[1],
                "fp": confident_loss(pred_fp, label, conf, tau, kind), "conf": conf}

    def training_step(self, ctx: StepContext) -> Losses:
        s, batch, net = two_stream(ctx.batch), ctx.batch, self.models[0]
        with torch.no_grad(), evaluating(net):
            mix_logits = net(batch["mix_image"])
        clean, pred_fp = self.weak_pass(s.images, s.n_labeled, ctx.generator)
        terms = self.loss_terms(clean[: s.n_labeled], s.label, clean[s.n_labeled:], pred_fp,
                                net(batch["strong_image"]), mix_logits, batch["cutmix_box"])
        conf = terms.pop("conf")
        total = unimatch_total(0.5 * (terms["ce"] + terms["dice"]), (terms["strong1"], terms["strong2"]), terms["fp"],
                               float(self.params["strong_weight"]), float(self.params["fp_weight"]))
        ctx.stats["mask_ratio"] = (conf >= float(self.params["conf_thresh"])).float().mean()
        return Losses(total=total, terms=terms, stats=ctx.stats)
