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
from semiseg.methods.common.ema import ema_update
from semiseg.methods.common.losses import alhvr_code_dice_loss, one_hot, per_sample_dice_loss, reduce_region
from semiseg.methods.common.pseudo import entropy
from semiseg.methods.common.teacher import TeacherStudent, input_noise

__all__ = ["SGRS", "SynergyRegions", "mix_images", "mix_lambda", "region_ce", "region_dice",
           "region_dice_per_sample", "synergy_regions", "uncertainty"]

AUGMENTS = ("mix", "flip_h", "flip_v", "none")
#: The factor ``double_ema`` multiplies the student's tensors by ``1 −`` after each step (the
#: code's WeightEMA: ``0.02 × 0.01``, its base lr hard-coded).
DOUBLE_EMA_SHRINK = 2e-4
REGION_LOSSES = ("con", "nr", "none")


def mix_lambda(n: int, alpha: float, per_sample: bool) -> Tensor:
    """``λ = max(b, 1 − b)``, ``b ~ Beta(α, α)``: one draw for the batch (``(n,)`` of the same
    value) or one per sample (the code's ``np.random.beta`` per unlabeled image). Always in
    ``[0.5, 1]``: the mix keeps more of the unlabeled image than of the labeled one."""
    # α > 0 is the schema's check; the distribution's own would read its parameters back each step
    draws = torch.distributions.Beta(alpha, alpha, validate_args=False).sample((n if per_sample else 1,))
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


def region_dice_per_sample(probs: Tensor, target_onehot: Tensor, mask: Tensor, smooth: float) -> Tensor:
    """The public code's region Dice (nnU-Net's ``SoftDiceLoss(smooth=s)`` with ``loss_mask``):
    ``1 − mean_{b,c} (2Σ_v p·y·m + s)/(Σ_v (p + y)·m + s + 1e-8)``, per sample and class,
    background included; ``s = 1`` on L_con's region, ``η`` on L_NR's. An empty region gives
    ``1 − s/(s + 1e-8)``, about 0.

    Worked example: one sample, one masked pixel, ``p = (0.2, 0.8)``, ``y = (0, 1)``, ``s = 1``:
    class 0 ``1 − 1/(0.2 + 1 + 1e-8)``, class 1 ``1 − 2.6/(1.8 + 1 + 1e-8)``, mean 0.1190.
    """
    return per_sample_dice_loss(probs, target_onehot, smooth, mask=mask, eps=1e-8)


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
    - ``supervised_weight: 0.5``: the code's ``0.5·(CE + Dice)``;
    - ``dice_form: sgrs_code``: the code's supervised Dice, ``1 − I/(Σp² + Σt² + 1e-10)`` per
      class over the batch, without the Dice coefficient's factor 2 (a perfect prediction scores
      0.5; it is ALHVR's code's Dice,
      :func:`~semiseg.methods.common.losses.alhvr_code_dice_loss`), so Dice weighs half as much
      as CE;
    - ``omega_ce: agree``: L_con's CE covers every pixel where the two argmaxes agree, the Δ ones
      included (the code masks it with "argmax agrees"; its Dice keeps Ω);
    - ``region_dice: per_sample``: the code's region Dice, nnU-Net's ``SoftDiceLoss`` per sample
      and class with a linear denominator, background included, and the smoothing in numerator
      and denominator: ``1 − mean_{b,c} (2Σp·y·m + s)/(Σ(p + y)·m + s + 1e-8)``, ``s = 1`` on
      L_con's region and ``η`` on L_NR's (:func:`region_dice_per_sample`);
    - ``unsup_reduction: code``: the unsupervised terms as the code weighs them,
      ``0.5·(CE_unl + D_unl)`` with CE averaged over the two views and Dice over the four
      view × region terms: each CE term of the sum ×¼, each Dice term ×⅛;
    - ``double_ema``: the code's two EMA updates per step (:meth:`after_optimizer_step`).

    A defect of the public code that is not reproduced: the Θ-mask broadcast. Its
    ``(B, *spatial)`` smoothed-CE map times the ``(B, 1, *spatial)`` Θ mask broadcasts to
    ``(B, B, *spatial)``, so each sample's smoothed CE is weighted by the batch-mean Θ mask, not
    its own (one unlabeled image per batch, or Θ masks equal across the batch, leave it inert).

    Other differences from the code, not offered: it keeps the checkpoint that scores best on the
    test list (here the last weights are evaluated).

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

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """The teacher's EMA; with ``double_ema`` the code's two updates per step: MixMatch's
        ``WeightEMA`` (decay ``ema_decay`` over every floating-point tensor of the state,
        batch-norm statistics included, after which the student's are multiplied by
        ``1 − 2e-4``: the code's ``0.02 × 0.01``, about 200× its weight decay's pull), then Mean
        Teacher's update of the parameters with the warm-up ``min(1 − 1/(t + 2), ema_decay)``
        (the code counts the step before it: its first update has decay 0.5). The teacher's
        effective decay is about ``0.99² ≈ 0.98``."""
        step = ctx.step
        if not (self.params["double_ema"] and self.ema_active(step)):
            return super().after_optimizer_step(ctx)
        decay = float(self.params["ema_decay"])
        with torch.no_grad():
            student = self.student.state_dict()
            for name, t in self.teacher.state_dict().items():
                if t.is_floating_point():
                    t.lerp_(student[name].to(t.dtype), 1.0 - decay)
                    student[name].mul_(1.0 - DOUBLE_EMA_SHRINK)
        ema_update(self.teacher, self.student, decay, step.iteration + 1, buffers="keep")

    # ---- the supervised term

    def supervised_loss(self, logits: Tensor, label: Tensor, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """CE and Dice of the labeled images; ``dice_form: sgrs_code``: the code's Dice, without
        the factor 2 (no per-pixel weight)."""
        if self.params["dice_form"] != "sgrs_code":
            return super().supervised_loss(logits, label, weight)
        if weight is not None:
            raise ValueError("sgrs: dice_form sgrs_code takes no per-pixel weight")
        dice = alhvr_code_dice_loss(torch.softmax(logits, dim=1), one_hot(label, logits.shape[1]))
        return F.cross_entropy(logits, label), dice

    # ---- the second view

    def second_view(self, labeled: Tensor, unlabeled: Tensor) -> tuple[Tensor | None, dict[str, Tensor]]:
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
        return mix_images(unlabeled, labeled, lam, partner), {"mix_lambda": lam.mean()}

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
        # unsup_reduction code: CE averaged over the 2 views, Dice over the 4 view x region terms, x 0.5
        ce_scale, dice_scale = (0.25, 0.125) if p["unsup_reduction"] == "code" else (1.0, 1.0)
        terms: dict[str, Tensor] = {}
        for kind in ("con", "nr"):
            chosen = [regions[r] for r in regions if p[f"{r}_loss"] == kind]
            if not chosen:
                continue
            mask = torch.stack(chosen).any(dim=0)
            ce_mask = mask
            if kind == "con" and p["omega_ce"] == "agree" and len(probs) == 2:
                ce_mask = mask | (reg.delta & (probs[0].argmax(dim=1) == probs[1].argmax(dim=1)))
            epsilon, eta = (float(p["epsilon"]), float(p["eta"])) if kind == "nr" else (0.0, 0.0)
            terms[f"{kind}_ce"] = ce_scale * sum(
                region_ce(v, target, ce_mask, epsilon=epsilon, normalize=p["normalize"]) for v in views)
            if p["region_dice"] == "per_sample":
                smooth = eta if kind == "nr" else 1.0
                dice = sum(region_dice_per_sample(torch.softmax(v, dim=1), target_1h, mask, smooth) for v in views)
            else:
                dice = sum(region_dice(torch.softmax(v, dim=1), target_1h, mask, eta) for v in views)
            terms[f"{kind}_dice"] = dice_scale * dice
        stats = {}
        if len(views) == 2:
            stats = {f"{r}_fraction": m.float().mean() for r, m in regions.items()}  # read with the losses
        return terms, stats
