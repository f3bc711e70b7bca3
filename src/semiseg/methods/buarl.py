"""Bidirectional uncertainty-aware region learning (BUARL; Zhou, Zhao, Sun, "Bidirectional
Uncertainty-Aware Region Learning for Semi-Supervised Medical Image Segmentation",
arXiv:2502.07457), as a weighting of the teacher–student family's losses.

BUARL is not a method of its own but a per-pixel weighting laid over a base method (Mean Teacher
and BCP in the paper). Its pieces, shared by both:

- :func:`entropy_map`: the uncertainty ``U`` of a prediction, per pixel (Eq. 3);
- :func:`percentile_threshold` and :func:`uncertain_mask`: ``μ = percentile(U, q)`` and
  ``M = [U > μ]`` (Eq. 4), per image or per batch;
- :func:`region_weight`: URL's weights (1 on uncertain pixels, α on certain ones: Eq. 7, the
  labeled stream) and CRL's (1 on certain, α on uncertain: Eq. 8, the unlabeled stream);
- the weighted CE + Dice is :func:`~semiseg.methods.common.losses.dice_ce_loss` with ``weight=``.

:class:`BUARLMeanTeacher` (``buarl_mt``) and :class:`BUARLBCP` (``buarl_bcp``) plug them into
Mean Teacher's and BCP's steps through the family's hooks; everything else is the base method's.
No public code of BUARL exists: every choice the paper leaves open is a parameter (the schemas
``workflow/schemas/params/buarl_{mt,bcp}.schema.yaml``), argued in :class:`BUARLWeights`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from semiseg.methods.base import StepContext, register
from semiseg.methods.bcp import BidirectionalCopyPaste
from semiseg.methods.common.losses import dice_ce_loss
from semiseg.methods.common.pseudo import entropy
from semiseg.methods.common.teacher import UnsupervisedContext
from semiseg.methods.mean_teacher import MeanTeacher

__all__ = ["BUARLBCP", "BUARLMeanTeacher", "BUARLWeights", "FIGURES", "entropy_map", "percentile_threshold",
           "region_weight", "uncertain_mask"]

#: The figure drawn from a ``buarl_bcp`` run (a literal, read by :mod:`semiseg.method_sources`).
FIGURES = [{
    "name": "buarl_entropy", "algorithm": "buarl_bcp", "rule": "entropy_figure", "weights": "model.pt",
    "draw": "semiseg.reporting.buarl_figure:entropy_figure",
    "title": "BUARL's entropy regions", "alt": "BUARL entropy regions",
    "note": "Paper Figure 5 for our run: the entropy of the prediction on unlabeled slices, and the pixels "
            "above each image's 95th, 97th and 99th percentile of it (the uncertain regions URL and CRL "
            "weight).",
}]

ENTROPY_FORMS = ("shannon", "max_class")
SCOPES = ("image", "batch")
WEIGHTINGS = ("url", "crl", "none")


def entropy_map(probs: Tensor, form: str = "shannon") -> Tensor:
    """The uncertainty ``U`` ``(B, *spatial)`` of softmax probabilities ``(B, C, *spatial)``, detached.

    ``shannon``: ``-Σ_c p_c ln p_c`` (nats; ``0 ln 0 = 0``). ``max_class``: ``max_c(-p_c ln p_c)``,
    the paper's per-class "U = p log p" (Eq. 3) made one map by its largest class term. Computed
    in float32 whatever the input's precision. Worked example: ``p = [0.5, 0.5]`` gives
    ``ln 2 = 0.693147`` (shannon) and ``0.5 ln 2 = 0.346574`` (max_class); ``[1, 0]`` gives 0.
    """
    if form not in ENTROPY_FORMS:
        raise ValueError(f"unknown entropy form {form!r}; allowed: {', '.join(ENTROPY_FORMS)}")
    p = probs.detach().float()
    if form == "shannon":
        return entropy(p, dim=1, eps=0.0)
    return (-torch.special.xlogy(p, p)).amax(dim=1)


def percentile_threshold(u: Tensor, q: float, scope: str = "image") -> Tensor:
    """``μ = percentile(U, q)`` of an uncertainty map ``(B, *spatial)``, shaped ``(B, 1, ..., 1)``.

    ``scope``: ``image`` takes each image's (or patch's) own percentile, ``batch`` one over the
    whole batch (then the same μ for every image). The percentile is numpy's default (linear
    interpolation between the order statistics at ``q/100 · (N − 1)``), computed by sorting
    (no size limit, unlike ``torch.quantile``). Worked example: ``U = [0, 1, 2, 3, 4]``,
    ``q = 95``: position 3.8, ``μ = 3 + 0.8 · (4 − 3) = 3.8``; a constant map gives that constant.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    if scope not in SCOPES:
        raise ValueError(f"unknown threshold scope {scope!r}; allowed: {', '.join(SCOPES)}")
    b = u.shape[0]
    flat = u.reshape(b, -1) if scope == "image" else u.reshape(1, -1)
    ordered, _ = torch.sort(flat, dim=1)
    n = ordered.shape[1]
    pos = q / 100.0 * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    mu = ordered[:, lo] + frac * (ordered[:, hi] - ordered[:, lo])
    return mu.expand(b).reshape(b, *([1] * (u.dim() - 1)))


def uncertain_mask(u: Tensor, q: float, scope: str = "image") -> Tensor:
    """``M = [U > μ]`` (bool, ``(B, *spatial)``) with ``μ`` = :func:`percentile_threshold`.

    Strict, as Eq. 4 ("1 if U > μ"): a pixel whose entropy equals μ is certain. So where the top
    values tie, fewer than ``100 − q`` % of the pixels are uncertain, and a constant map (every
    pixel equal to μ) has none: everything is certain.
    """
    return u > percentile_threshold(u, q, scope)


def region_weight(kind: str, mask: Tensor, alpha: float) -> Tensor | None:
    """The per-pixel weights of a stream: ``url`` 1 where ``mask`` (uncertain), α elsewhere (Eq. 7);
    ``crl`` 1 where certain, α where uncertain (Eq. 8); ``none``: None (every weight 1)."""
    if kind == "none":
        return None
    if kind not in WEIGHTINGS:
        raise ValueError(f"unknown region weighting {kind!r}; allowed: {', '.join(WEIGHTINGS)}")
    one = torch.ones((), dtype=torch.float32, device=mask.device)
    a = torch.full((), float(alpha), dtype=torch.float32, device=mask.device)
    return torch.where(mask, one, a) if kind == "url" else torch.where(mask, a, one)


class BUARLWeights:
    """BUARL's weight maps for a teacher–student method (mixed into its class before the base).

    Per stream (``labeled`` and ``unlabeled``): the entropy of a prediction
    (:func:`entropy_map`), its ``<stream>_percentile`` (:func:`uncertain_mask`), and the
    stream's ``<stream>_weighting`` with ``<stream>_alpha`` (:func:`region_weight`). The paper's
    setting: URL (α = 0.5) on labeled, CRL (α = 0.5) on unlabeled, percentiles 95 / 99 on ACDC and
    95 / 95 on LA (the catalogue's per-dataset settings).

    Choices where the paper leaves room, each a parameter:

    - ``entropy``: Eq. 3 writes ``U = p log p`` "for each class", a map per class, which Eq. 4
      then thresholds as one map, with a sign that would make the confident pixels the largest.
      ``shannon`` (default) reads it as the Shannon entropy ``−Σ_c p_c ln p_c``, what the text
      calls "the entropy matrix", one value per pixel, high where the classes are evenly spread;
      ``max_class`` keeps the per-class terms ``−p_c ln p_c`` and takes their largest. The
      entropy is of the detached softmax: a weight, not a term to be minimised.
    - ``threshold_scope``: "the qth percentile [of U] each time" does not say over what;
      ``image`` (default) thresholds each image (patch) on its own, so every image gives its most
      uncertain ``100 − q`` % (Fig. 5 shows the regions per image); ``batch`` one μ for the batch.
    - M is strict (``U > μ``, Eq. 4): ties at μ, and every pixel of a constant map, are certain.
    - Whose prediction: the labeled mask comes from the network being trained on the labeled
      images (Eq. 1 has the prediction of the network supervised on them; the EMA teacher gets
      no gradient, so only the student can be). ``unlabeled_mask_from: teacher`` (default) takes
      the unlabeled mask from the teacher, whose prediction makes the pseudo-labels it weights
      (Sec. 3.4: "the same operation on the unlabeled data" as the pseudo-labels come from);
      ``student`` from the student's own prediction.
    - The weights multiply each pixel's CE and every sum of the Dice (``dice_ce_loss(weight=)``);
      the CE is still divided by every pixel (Eqs. 7-8 add the two regions' losses, they do not
      renormalise them), so with α = 1 the loss is the base method's.
    - ``labeled_alpha`` and ``unlabeled_alpha``: the paper's single α (0.5), per stream so that
      its Table 6 ("remove" the unreliable predictions: α = 0) can drop the unlabeled stream's
      uncertain pixels without dropping the labeled stream's certain ones, which URL with α = 0
      would (those are the reliable predictions, not the unreliable ones).
    - ``labeled_weighting`` / ``unlabeled_weighting``: ``url``, ``crl`` or ``none`` on each stream,
      the paper's Tables 3 (URL or CRL off: ``none``) and 4 (either on either stream).
    - The EMA is the base method's. Eq. 10 writes ``θ_t = (1 − λ) θ_{t−1} + λ θ_s`` with
      ``λ = min(t/(t+1), 0.99)``: read literally the teacher would be 99 % the current student,
      i.e. hardly averaged at all, the reverse of the Mean Teacher update it cites ([18]), whose
      decay ``min(1 − 1/(t+1), 0.99)`` multiplies the *previous teacher*. The λ is read as that
      decay with the two weights swapped in print, and the paper says everything else follows
      the base methods: Mean Teacher's warm-up for ``buarl_mt``, BCP's constant 0.99 for
      ``buarl_bcp``.
    """

    def region_weights(self, stream: str, probs: Tensor, stats: dict) -> Tensor | None:
        """The weight map ``(B, *spatial)`` of ``stream`` for softmax ``probs``, or None (weighting
        ``none``); adds the stream's uncertain fraction to ``stats`` (the step's channel; a tensor,
        read with the loss terms)."""
        p = self.params
        kind = p[f"{stream}_weighting"]
        if kind == "none":
            return None
        mask = uncertain_mask(entropy_map(probs, p["entropy"]), float(p[f"{stream}_percentile"]),
                              p["threshold_scope"])
        fraction = mask.float().mean().detach()
        key = f"{stream}_uncertain"
        stats[key] = fraction if key not in stats else 0.5 * (stats[key] + fraction)
        return region_weight(kind, mask, float(p[f"{stream}_alpha"]))

    def unlabeled_source(self, teacher_probs: Tensor, student_logits: Tensor) -> Tensor:
        """The probabilities the unlabeled mask is taken from (``unlabeled_mask_from``)."""
        if self.params["unlabeled_mask_from"] == "teacher":
            return teacher_probs
        return torch.softmax(student_logits.detach(), dim=1)


@register("buarl_mt")
class BUARLMeanTeacher(BUARLWeights, MeanTeacher):
    """Mean Teacher with BUARL's region weights ("Ours(MT)"): URL on the supervised CE + Dice, CRL
    on the unlabeled term.

    Per iteration: the supervised ``0.5·(CE + Dice)`` of the student on the labeled images, each
    pixel weighted by the labeled stream's map (from the student's own detached prediction);
    the unlabeled term weighted by the unlabeled stream's map (from the teacher's prediction on
    its noisy input, ``unlabeled_mask_from``), times Mean Teacher's λ(t); the EMA teacher as
    Mean Teacher's. See :class:`BUARLWeights` for the weights.

    ``unlabeled_loss``: the paper's Eq. 8 is a segmentation loss (CE + Dice) against
    pseudo-labels from the teacher, which Mean Teacher does not have; ``pseudo_label``
    (default) follows Eq. 8: ``0.5·(CE + Dice)`` of the student's unlabeled logits against the
    argmax of the teacher's softmax, each pixel weighted by CRL, with Eq. 9's weight 1 beside
    the supervised term (``consistency: 1.0`` in the catalogue; Mean Teacher's ramp and delayed
    start are kept, so the first, still random teacher does not teach). The paper's 12-point
    gain of Ours(MT) over MT at 3 labeled ACDC patients is more than a reweighting of MT's small
    consistency would give, which also points to this reading. ``mse`` keeps Mean Teacher's
    MSE consistency and weights its per-pixel map by CRL (``Σ w·map / N``); with both α = 1 (or
    both weightings ``none``) that is Mean Teacher's loss.

    Parameters (workflow/schemas/params/buarl_mt.schema.yaml): Mean Teacher's (``ema_decay``,
    ``consistency``, ``consistency_rampup``, ``consistency_start``, ``rampup_block``,
    ``noise_std``, ``noise_clip``) and BUARL's (``entropy``, ``threshold_scope``,
    ``labeled_weighting``, ``unlabeled_weighting``, ``labeled_percentile``,
    ``unlabeled_percentile``, ``labeled_alpha``, ``unlabeled_alpha``, ``unlabeled_mask_from``,
    ``unlabeled_loss``).
    """

    def supervised_weight(self, logits: Tensor, ctx: StepContext) -> Tensor | None:
        """URL: the labeled stream's weights, from the student's own detached prediction."""
        return self.region_weights("labeled", torch.softmax(logits.detach(), dim=1), ctx.stats)

    def pixel_weight(self, ctx: UnsupervisedContext) -> Tensor | None:
        """CRL: the unlabeled stream's weights."""
        return self.region_weights("unlabeled", self.unlabeled_source(ctx.teacher_probs, ctx.student_logits),
                                   ctx.stats)

    def unsupervised_loss(self, ctx: UnsupervisedContext) -> Tensor:
        if self.params["unlabeled_loss"] == "mse":
            return super().unsupervised_loss(ctx)
        pseudo = ctx.teacher_probs.argmax(dim=1)
        return dice_ce_loss(ctx.student_logits, pseudo, weight=self.pixel_weight(ctx)).total


@register("buarl_bcp")
class BUARLBCP(BUARLWeights, BidirectionalCopyPaste):
    """BCP with BUARL's region weights ("Ours(BCP)"), through BCP's :meth:`mix_weight` hook.

    - Pre-training (labeled images pasted into each other): with ``labeled_pretrain`` (default),
      every pixel of the mixed image is weighted by the labeled stream's map (URL) of the
      student's own detached prediction on it. The paper's Fig. 6 compares teachers "trained
      with different threshold values in the supervised phase", so URL acts there.
    - Self-training (labeled and unlabeled pasted both ways): the pseudo-labelled pixels get the
      unlabeled stream's weights (CRL) from the teacher's prediction on the unmixed unlabeled
      image (``unlabeled_mask_from: teacher``, the prediction the pseudo-labels are made from;
      ``student``: the student's detached prediction on the mixed image); with
      ``labeled_self_train`` (default) the ground-truth pixels get the labeled stream's weights
      (URL) from the student's detached prediction on the mixed image (Eq. 7 applies to every
      use of labels). The weights multiply BCP's own region weights (``u_weight`` on the pseudo-
      labelled region), which stay.
    - Each map's percentile is over its whole prediction (the unmixed unlabeled image, or the
      whole mixed image), then only the pixels of its region are used.
    - EMA, stages, hand-off, pseudo-labels (largest component): BCP's. See :class:`BUARLWeights`.

    Parameters (workflow/schemas/params/buarl_bcp.schema.yaml): BCP's (``pretrain_fraction``,
    ``mask_ratio``, ``u_weight``, ``ema_decay``, ``largest_component``, ``handoff``,
    ``reset_optimizer``, ``script``, ``dice_smoothing``) and BUARL's (``entropy``, ``threshold_scope``, ``labeled_weighting``,
    ``unlabeled_weighting``, ``labeled_percentile``, ``unlabeled_percentile``, ``labeled_alpha``,
    ``unlabeled_alpha``, ``unlabeled_mask_from``, ``labeled_pretrain``, ``labeled_self_train``).
    """

    def mix_weight(self, logits: Tensor, mask: Tensor, unlabeled_in: str | None,
                   teacher_logits: Tensor | None, ctx: StepContext) -> Tensor | None:
        own, stats = torch.softmax(logits.detach(), dim=1), ctx.stats
        if unlabeled_in is None:
            return self.region_weights("labeled", own, stats) if self.params["labeled_pretrain"] else None
        labeled = self.region_weights("labeled", own, stats) if self.params["labeled_self_train"] else None
        teacher = torch.softmax(teacher_logits.float(), dim=1) if teacher_logits is not None else own
        unlabeled = self.region_weights("unlabeled", self.unlabeled_source(teacher, logits), stats)
        if labeled is None and unlabeled is None:
            return None
        ones = torch.ones(own.shape[0], *own.shape[2:], device=own.device)
        labeled = ones if labeled is None else labeled
        unlabeled = ones if unlabeled is None else unlabeled
        in_unlabeled = (mask == 1) if unlabeled_in == "ones" else (mask == 0)
        return torch.where(in_unlabeled, unlabeled, labeled)
