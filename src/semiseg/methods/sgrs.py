"""SGRS-Net (Wang et al., "Synergy-Guided Regional Supervision of Pseudo Labels for
Semi-Supervised Medical Image Segmentation"; public code github.com/ortonwang/SGRS-Net, whose
README cites MICCAI 2025): a mean teacher whose pseudo-labels are split into three regions by
how the student's predictions on an unlabeled image and on its mix with a labeled one agree."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from semiseg.methods.base import Losses, Step, StepContext, register, two_stream
from semiseg.methods.common.losses import one_hot, reduce_region
from semiseg.methods.common.pseudo import entropy
from semiseg.methods.common.teacher import TeacherStudent, input_noise

__all__ = ["SGRS", "SynergyRegions", "mix_images", "mix_lambda", "region_ce", "region_dice",
           "synergy_regions", "uncertainty"]

AUGMENTS = ("mix", "flip_h", "flip_v", "none")
REGION_LOSSES = ("con", "nr", "none")


def mix_lambda(n: int, alpha: float, per_sample: bool) -> Tensor:
    """``λ = max(b, 1 − b)``, ``b ~ Beta(α, α)``: one draw for the batch (``(n,)`` of the same
    value) or one per sample (the code's ``np.random.beta`` per unlabeled image). Always in
    ``[0.5, 1]``: the mix keeps more of the unlabeled image than of the labeled one."""
    draws = torch.distributions.Beta(alpha, alpha).sample((n if per_sample else 1,))
    lam = torch.maximum(draws, 1.0 - draws)
    return lam.expand(n).clone() if not per_sample else lam


def mix_images(unlabeled: Tensor, labeled: Tensor, lam: Tensor, partner: Tensor) -> Tensor:
    """``D_M,i = λ_i·U_i + (1 − λ_i)·L_partner[i]`` (the paper's Eq. 4). ``partner`` indexes the
    labeled batch for each unlabeled image. Worked example: ``U = 1, L = 0, λ = 0.8`` gives 0.8."""
    lam = lam.to(unlabeled).view(-1, *([1] * (unlabeled.dim() - 1)))
    return lam * unlabeled + (1.0 - lam) * labeled[partner]


def uncertainty(probs: Tensor, rule: str) -> Tensor:
    """The per-pixel uncertainty ``(B, *spatial)`` the threshold τ applies to.

    - ``entropy_log10``: Eq. 6, ``−Σ_c p_c log10 p_c`` over all C classes. Base 10 is what the
      paper's τ = 0.296 means (the public code's band below, which for two classes it equals);
    - ``entropy_ln``: Eq. 6 with the natural logarithm (τ = 0.296 nats then excludes a two-class
      pixel whose foreground probability lies in about (0.087, 0.913));
    - ``background_band``: the public code's rule, a band ``0.5 − δ < p_0 < 0.5 + δ`` on the
      background probability, written as the two-class entropy of ``(p_0, 1 − p_0)`` in base 10
      (the band's edges are where that entropy equals τ: τ = 0.2961 is the code's
      ``0.425 < p_0 < 0.575``). For C classes this lumps every foreground class together; for
      C = 2 it is ``entropy_log10``.
    """
    if rule == "entropy_log10":
        return entropy(probs, dim=1, eps=0.0) / math.log(10.0)
    if rule == "entropy_ln":
        return entropy(probs, dim=1, eps=0.0)
    if rule == "background_band":
        p0 = probs[:, 0]
        return entropy(torch.stack([p0, 1.0 - p0], dim=1), dim=1, eps=0.0) / math.log(10.0)
    raise ValueError(f"unknown delta_rule {rule!r}; known: entropy_log10, entropy_ln, background_band")


@dataclass(frozen=True)
class SynergyRegions:
    """Boolean ``(B, *spatial)`` masks: Δ (either prediction too uncertain), Ω (both certain,
    argmax agrees), Θ (both certain, argmax disagrees). They partition the pixels."""

    delta: Tensor
    omega: Tensor
    theta: Tensor


def synergy_regions(p_u: Tensor, p_m: Tensor, tau: float, rule: str = "entropy_log10") -> SynergyRegions:
    """Eqs. 7-9: ``Δ = [H(P_U) > τ] ∨ [H(P_M) > τ]``, ``Ω = [argmax P_U = argmax P_M] ∧ ¬Δ``,
    ``Θ = [argmax P_U ≠ argmax P_M] ∧ ¬Δ``, with H the :func:`uncertainty` of ``rule``."""
    delta = (uncertainty(p_u, rule) > tau) | (uncertainty(p_m, rule) > tau)
    agree = p_u.argmax(dim=1) == p_m.argmax(dim=1)
    return SynergyRegions(delta=delta, omega=agree & ~delta, theta=~agree & ~delta)


def region_ce(logits: Tensor, target: Tensor, mask: Tensor, *, epsilon: float = 0.0,
              normalize: str = "all_pixels") -> Tensor:
    """Cross-entropy against ``target`` on the pixels of ``mask`` (Eq. 10, or Eq. 15 with
    ``epsilon``: the smoothed target ``(1 − ε)·y + ε/C``, PyTorch's ``label_smoothing``).

    ``normalize``: ``all_pixels`` divides the region's sum by every pixel of the view (the
    public code), ``region`` by the region's own pixel count (:func:`reduce_region`). Worked
    example, two classes, logits ``(0, 0)`` (p = 0.5 each): CE = ln 2 whatever ε.
    """
    ce_map = F.cross_entropy(logits, target, reduction="none", label_smoothing=epsilon)
    return reduce_region(ce_map, mask, normalize)


def region_dice(probs: Tensor, target_onehot: Tensor, mask: Tensor, eta: float = 0.0) -> Tensor:
    """Eq. 11 (``eta = 0``) and Eq. 16 on the pixels of ``mask``:
    ``1 − 2·Σ_{i,c} p·y / (Σ_{i,c} p² + Σ_{i,c} y² + η)``, the sums over every masked pixel of
    the batch and every class together, as the equations write them. An empty region gives 0.

    Worked example: one masked pixel, ``p = (0.2, 0.8)``, ``y = (0, 1)``: ``Σp·y = 0.8``,
    ``Σp² = 0.68``, ``Σy² = 1``; η = 0 gives ``1 − 1.6/1.68 = 0.047619``, η = 20 gives
    ``1 − 1.6/21.68 = 0.926199``.
    """
    m = mask.unsqueeze(1).to(probs.dtype)
    target = target_onehot.to(probs.dtype)
    intersect = (probs * target * m).sum()
    denominator = (probs * probs * m).sum() + (target * target * m).sum() + eta
    loss = 1.0 - 2.0 * intersect / denominator.clamp_min(1e-12)
    return torch.where(m.sum() > 0, loss, torch.zeros_like(loss))


@register("sgrs")
class SGRS(TeacherStudent):
    """Mean teacher + Mix Augmentation + Synergy Evaluation + Regional Loss Evaluation.

    Per iteration, as the paper states it (Eqs. 1-20):

    - pseudo-labels ``Y = argmax teacher(D_U)`` (no gradient);
    - Mix Augmentation: ``D_M = λ·D_U + (1 − λ)·D_L``, ``λ = max(b, 1 − b)``, ``b ~ Beta(α, α)``;
      ``Y`` is also D_M's label. Each unlabeled image is mixed with a labeled one of the batch
      through a random permutation (the paper is silent; the public code does this);
    - the student sees ``cat(D_L, D_U, D_M)`` in one forward pass (one set of batch-norm
      statistics, as the code); ``P_U``, ``P_M`` its softmax on D_U and D_M;
    - Synergy Evaluation (:func:`synergy_regions`): Δ, Ω, Θ from the student's P_U and P_M;
    - ``L_con`` = Σ_{X ∈ U, M} [CE + Dice](P_X, Y) on Ω; ``L_NR`` = Σ_X [CE_ε + Dice_η](P_X, Y)
      on Θ (:func:`region_ce`, :func:`region_dice`); Δ gets nothing;
    - ``L = w_sup·(CE + Dice)(P_L, GT) + λ(t)·(L_con + L_NR)`` with the Gaussian warm-up
      ``λ(t) = consistency·exp(−5(1 − t/t_warm)²)`` (Eq. 20), ``t_warm = consistency_rampup``
      of training; ``w_sup = supervised_weight`` (1: Eq. 12 sums CE and Dice);
    - the teacher is the EMA of the student (decay ``ema_decay`` after the common
      ``1 − 1/(t+1)`` warm-up), in the engine's train mode (V-Net dropout active, as the code).

    Choices where the paper is silent (the defaults follow the public code):

    - τ's unit: ``delta_rule`` (:func:`uncertainty`), default ``entropy_log10``, Eq. 6 over all
      C classes in base 10, the unit in which the paper's τ = 0.296 was set;
    - ``t_warm``: the code reaches 1 at iteration 6000 of 15k: ``consistency_rampup`` 0.4;
    - ``normalize``: the region CE (written as a sum in Eq. 10) is divided by every pixel of the
      view (code) or by the region's pixels (``region``);
    - α = 0.75 (``mix_alpha``; the paper calls α "randomly generated");
    - the learning rate decays as the schedule says (``poly`` under ``paper``: the paper gives
      lr 0.01 and no decay rule); ``ema_decay`` 0.99, the code's;
    - the supervised Dice is the one every method here uses (per class over the batch,
      background included, :meth:`~semiseg.methods.base.Method.supervised_loss`); Eq. 11 as
      written sums the classes together, which the region Dice terms follow.

    The public code's behaviours that change numbers, as switches (the paper's by default):

    - ``delta_rule: background_band``: τ as a probability band on the background class (see
      :func:`uncertainty`); the same as the default for two classes;
    - ``mix_lambda: sample``: one λ per unlabeled image (code), not one per batch;
    - ``noise_std`` > 0: the teacher sees ``D_U + clip(N(0, σ²), ±noise_clip)`` (code: σ = 0.1,
      clip 0.2) and D_M mixes that noisy image with a labeled one under its own noise;
    - ``rampup_block: 150``: the code's staircase warm-up (with ``consistency_rampup`` 0.4 of
      15k iterations it reaches 1 at 6000, as ``min(t // 150, 40) / 40``);
    - a constant learning rate (the code never decays it): the schedule's ``lr_policy:
      constant`` (the ``sgrs_code`` catalogue entry);
    - ``supervised_weight: 0.5``: the code's ``0.5·(CE + Dice)``.

    Defects of the public code that are not reproduced:

    - the Θ-mask broadcast: its ``(B, *spatial)`` smoothed-CE map times the ``(B, 1, *spatial)``
      Θ mask broadcasts to ``(B, B, *spatial)``, so each sample's smoothed CE is weighted by the
      batch-mean Θ mask, not its own;
    - the supervised Dice lacks the Dice coefficient's factor 2 (a perfect prediction scores
      0.5);
    - the EMA is applied twice per step (a decay-0.99 average of every float tensor that also
      shrinks the student's by 2e-4, then the warmed-up 0.99 average of the parameters: an
      effective ≈ 0.98).

    Other differences from the code, not offered: its Ω CE is masked with "argmax agrees"
    (Δ pixels that agree get plain CE); its region Dice is per sample and per class with a
    linear denominator and the smoothing (1 on Ω, η on Θ) in numerator and denominator; its
    unsupervised terms are averaged, not summed, over U and M and scaled by 0.5 (CE 0.25, Dice
    0.125 of the paper's sum); it keeps the checkpoint that scores best on the test list (here
    the last weights are evaluated).

    Ablation switches (paper Tables 5-7):

    - ``pseudo_labels: student``: no mean teacher: Y is the student's own argmax on D_U
      (detached), the teacher is unused and never updated (Table 5's single-network baseline);
    - ``augment``: ``mix`` (MA), ``flip_h`` / ``flip_v`` (D_M is D_U flipped along the width /
      height axis; the student's prediction on it is flipped back before the regions and
      losses, Table 7), ``none`` (no second view: only P_U is supervised, and the three region
      losses must be the same, as there is no synergy to evaluate);
    - ``omega_loss`` / ``theta_loss`` / ``delta_loss``: ``con``, ``nr`` or ``none`` per region
      (Table 6; all ``con`` is Table 5's "without SE&RLE": L_con on all of Y). Regions with the
      same loss are supervised as one region (one Dice over their union).

    Parameters: workflow/schemas/params/sgrs.schema.yaml.
    """

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        p = self.params
        if p["augment"] not in AUGMENTS:
            raise ValueError(f"sgrs: augment {p['augment']!r} unknown; known: {', '.join(AUGMENTS)}")
        kinds = {p[f"{r}_loss"] for r in ("omega", "theta", "delta")}
        if not kinds <= set(REGION_LOSSES):
            raise ValueError(f"sgrs: region losses must be in {REGION_LOSSES}, got "
                             f"omega {p['omega_loss']!r}, theta {p['theta_loss']!r}, delta {p['delta_loss']!r}")
        if p["augment"] == "none" and len(kinds) > 1:
            raise ValueError("sgrs: augment 'none' gives no second prediction to evaluate synergy on; "
                             "omega_loss, theta_loss and delta_loss must then be the same (the loss on all of Y), "
                             f"got {p['omega_loss']!r}, {p['theta_loss']!r}, {p['delta_loss']!r}")

    # ---- the teacher

    def ema_active(self, step: Step) -> bool:
        return self.params["pseudo_labels"] == "teacher"

    # ---- the second view

    def second_view(self, labeled: Tensor, unlabeled: Tensor) -> tuple[Tensor | None, dict[str, float]]:
        """D_M for the unlabeled images ``unlabeled`` (the teacher's input), or None."""
        how = self.params["augment"]
        if how == "none":
            return None, {}
        if how in ("flip_h", "flip_v"):
            return torch.flip(unlabeled, dims=(self._flip_dim(unlabeled),)), {}
        lam = mix_lambda(unlabeled.shape[0], float(self.params["mix_alpha"]),
                         self.params["mix_lambda"] == "sample")
        n = labeled.shape[0]
        partner = torch.randperm(n)[torch.arange(unlabeled.shape[0]) % n].to(labeled.device)
        std = float(self.params["noise_std"])
        if std > 0:  # the code mixes the teacher's noisy image with a noisy labeled one
            labeled = input_noise(labeled, std, float(self.params["noise_clip"]))
        return mix_images(unlabeled, labeled, lam, partner), {"mix_lambda": float(lam.mean())}

    def _flip_dim(self, x: Tensor) -> int:
        return x.dim() - 1 if self.params["augment"] == "flip_h" else x.dim() - 2

    # ---- the step

    def training_step(self, ctx: StepContext) -> Losses:
        s = two_stream(ctx.batch)
        n_l, n_u = s.n_labeled, s.unlabeled.shape[0]
        from_teacher = self.params["pseudo_labels"] == "teacher"
        seen = self.teacher_input(s.unlabeled, ctx) if from_teacher else s.unlabeled
        mixed, stats = self.second_view(s.labeled, seen)
        parts = [s.labeled, s.unlabeled] + ([mixed] if mixed is not None else [])
        logits = self.student(torch.cat(parts))
        ce, dice = self.supervised_loss(logits[:n_l], s.label)
        views = [logits[n_l:n_l + n_u]]
        if mixed is not None:
            out_m = logits[n_l + n_u:]
            if self.params["augment"] != "mix":  # back into D_U's frame
                out_m = torch.flip(out_m, dims=(self._flip_dim(out_m),))
            views.append(out_m)
        if from_teacher:
            with torch.no_grad():
                target = self.teacher(seen).argmax(dim=1)
        else:
            target = views[0].detach().argmax(dim=1)
        terms, region_stats = self.region_losses(views, target)
        weight = self.consistency_weight(ctx.step)
        unsup = sum(terms.values())
        total = float(self.params["supervised_weight"]) * (ce + dice) + weight * unsup
        return Losses(total=total, terms={"ce": ce, "dice": dice, **terms},
                      stats={"consistency_weight": weight, **stats, **region_stats})

    def region_losses(self, views: list[Tensor], target: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``con_ce``, ``con_dice``, ``nr_ce``, ``nr_dice`` summed over the views (the logits on
        D_U and, when there is one, on D_M in D_U's frame), each on the union of the regions the
        params give that loss; and the regions' fractions."""
        p = self.params
        with torch.no_grad():
            probs = [torch.softmax(v, dim=1) for v in views]
            if len(probs) == 2:
                reg = synergy_regions(probs[0], probs[1], float(p["tau"]), p["delta_rule"])
            else:  # one view: every pixel gets the same loss (checked at construction)
                everything = torch.ones_like(target, dtype=torch.bool)
                reg = SynergyRegions(delta=everything, omega=everything, theta=everything)
        regions = {"omega": reg.omega, "theta": reg.theta, "delta": reg.delta}
        target_1h = one_hot(target, views[0].shape[1])
        terms: dict[str, Tensor] = {}
        for kind in ("con", "nr"):
            chosen = [regions[r] for r in regions if p[f"{r}_loss"] == kind]
            if not chosen:
                continue
            mask = torch.stack(chosen).any(dim=0)
            epsilon, eta = (float(p["epsilon"]), float(p["eta"])) if kind == "nr" else (0.0, 0.0)
            terms[f"{kind}_ce"] = sum(region_ce(v, target, mask, epsilon=epsilon, normalize=p["normalize"])
                                      for v in views)
            terms[f"{kind}_dice"] = sum(region_dice(torch.softmax(v, dim=1), target_1h, mask, eta) for v in views)
        stats = {}
        if len(views) == 2:
            stats = {f"{r}_fraction": m.float().mean() for r, m in regions.items()}  # read with the losses
        return terms, stats
