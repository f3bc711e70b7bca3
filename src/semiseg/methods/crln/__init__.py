"""CRLN (Wang et al., "Leveraging Labelled Data Knowledge: A Cooperative Rectification Learning
Network for Semi-supervised 3D Medical Image Segmentation", arXiv:2502.11456): a weak-to-strong
teacher–student whose pseudo-labels are rectified by learned class prototypes (the DIM,
:mod:`semiseg.methods.crln.net`), plus a contrastive loss with "unassertive" positives (CPS)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semiseg.methods.base import Losses, Step, StepContext, register, two_stream
from semiseg.methods.common.losses import dice_ce_loss
from semiseg.methods.common.teacher import TeacherStudent
from semiseg.methods.crln.net import CRLNNet
from semiseg.methods.crln.rectify import ConcatRectifier, Rectified, rectified, rectify, rectify_fixed
from semiseg.methods.crln.views import beta_4_4, strong_view

__all__ = ["CRLN", "beta_4_4", "contrastive_loss", "info_nce", "rectify", "rectify_fixed", "sample_contrast",
           "strong_view", "unsupervised_loss"]


def unsupervised_loss(logits: Tensor, target: Tensor, conf: Tensor, threshold: float, weight: str) -> Tensor:
    """The weak-to-strong term: CE of the student's strong-view ``logits`` against the teacher's
    labels ``target`` (−1 ignored), counted by confidence.

    ``weight="voxel"`` (the paper): ``Σ 1[conf ≥ τ]·ℓ / #valid voxels``. ``"image"`` (the code):
    each image weighted by ``w_b = #{conf ≥ τ}/#valid`` of its own voxels, then the mean of
    ``w_b·ℓ`` over the voxels whose ``ℓ > 0``.
    """
    valid = target >= 0
    ce = F.cross_entropy(logits, target.clamp_min(0), reduction="none") * valid
    if weight == "voxel":
        return (ce * (conf >= threshold)).sum() / valid.sum().clamp_min(1)
    if weight == "image":
        dims = tuple(range(1, target.dim()))
        w = ((conf >= threshold) & valid).sum(dim=dims) / valid.sum(dim=dims).clamp_min(1)
        weighted = ce * w.view(-1, *([1] * len(dims)))
        positive = ce > 0
        return weighted[positive].sum() / positive.sum().clamp_min(1)
    raise ValueError(f"crln confidence_weight must be 'voxel' or 'image', got {weight!r}")


def sample_contrast(labels: Tensor, valid: Tensor, uncertain: Tensor, num_classes: int, anchors: int,
                    negatives: int, generator: torch.Generator) -> dict[int, tuple[Tensor, Tensor]]:
    """For each class ``c`` with uncertain valid voxels and valid voxels of other classes:
    ``anchors`` indices drawn with replacement from ``{valid, label c, uncertain}`` and, per
    anchor, ``negatives`` indices drawn uniformly from the valid voxels of the other classes.
    Inputs are flat ``(N,)``; ``uncertain`` is ``(N,)`` (the student's ``p_c`` below the anchor
    threshold for the voxel's own class)."""
    out = {}
    for c in range(num_classes):
        pool = torch.nonzero(valid & (labels == c) & uncertain).flatten()
        others = torch.nonzero(valid & (labels != c)).flatten()
        if pool.numel() == 0 or others.numel() == 0:
            continue
        a = pool[torch.randint(pool.numel(), (anchors,), generator=generator).to(pool.device)]
        n = others[torch.randint(others.numel(), (anchors, negatives), generator=generator).to(pool.device)]
        out[c] = (a, n)
    return out


def info_nce(anchor: Tensor, positive: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """``mean_a CE([cos(a, pos), cos(a, neg_1..n)] / T, 0)``: ``anchor`` ``(A, D)``, ``positive``
    ``(D,)``, ``negatives`` ``(A, n, D)``."""
    pos = F.cosine_similarity(anchor, positive.expand_as(anchor), dim=-1)
    neg = F.cosine_similarity(anchor[:, None], negatives, dim=-1)
    logits = torch.cat([pos[:, None], neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(anchor.shape[0], dtype=torch.long, device=anchor.device))


def contrastive_loss(rep: Tensor, labels: Tensor, valid: Tensor, uncertain: Tensor, prototypes: Tensor | None,
                     xi: Tensor | None, *, num_classes: int, anchors: int, negatives: int, temperature: float,
                     generator: torch.Generator, positive_rep: Tensor | None = None,
                     divide_by: str = "sampled") -> Tensor:
    """CPS over flat representations ``rep`` ``(N, D)``: per sampled class (:func:`sample_contrast`)
    the InfoNCE of its anchors against the positive ``r_c`` (the mean of the valid ``rep`` of the
    class, no gradient) or, with ``prototypes`` ``(C, K, D)`` and ``xi`` ``(C,)``, the
    unassertive ``(r_c + ξ_c·p̄_c)/(1 + ξ_c)`` with ``p̄_c`` the mean of the class's prototypes
    (``xi = inf`` gives the prototypes alone); negatives carry no gradient (as ReCo). The sum is
    divided by the number of classes sampled (``divide_by="sampled"``) or by the number of
    classes with valid voxels (``"present"``, the code's, which counts a class without uncertain
    anchors too); 0 when none is sampled. ``positive_rep`` ``(N, D)``: the representations
    ``r_c`` is the mean of, when not ``rep`` (the code: the raw ones, ``rep`` normalised)."""
    if divide_by not in ("sampled", "present"):
        raise ValueError(f"divide_by must be 'sampled' or 'present', got {divide_by!r}")
    drawn = sample_contrast(labels, valid, uncertain, num_classes, anchors, negatives, generator)
    means = rep if positive_rep is None else positive_rep
    total = rep.sum() * 0.0
    for c, (a, n) in drawn.items():
        pos = means[valid & (labels == c)].mean(dim=0).detach()
        if prototypes is not None:
            p = prototypes[c].mean(dim=0).detach()
            pos = p if math.isinf(float(xi[c])) else (pos + xi[c] * p) / (1 + xi[c])
        total = total + info_nce(rep[a], pos, rep[n].detach(), temperature)
    if divide_by == "present" and drawn:
        return total / (valid[:, None] & (labels[:, None] == torch.arange(num_classes, device=labels.device))).any(0).sum()
    return total / max(len(drawn), 1)


@register("crln")
class CRLN(TeacherStudent):
    """CRLN: weak-to-strong teacher–student, DIM rectification, collaborative positive supervision.

    Networks: ``models[0]`` is a :class:`~semiseg.methods.crln.net.CRLNNet` (backbone, prototypes,
    DIM, representation head), ``teacher`` its EMA copy (decay ``min(1 − 1/(t+1), ema_decay)``,
    parameters only, as the code), ``a`` the rectification scalar (initial 0, not clamped) with
    its own SGD (the schedule's lr, momentum, Nesterov and weight decay, as the code's
    ``optimizer_op``).

    Each iteration, rectification on once ``iteration ≥ rectify_start · total`` (code: 800 of
    40k):

    - teacher on the weak unlabeled images: ``ŷ, conf = max softmax(z_T + (1 − a)·M_T)``
      (``z_T`` alone before the start);
    - the strong view of those images with ``ŷ`` and ``conf`` (:func:`strong_view`);
    - student on labeled + strong images in one batch: logits ``z``, map ``M``, representations;
    - ``L_sup = ½[CE(z_L) + Dice_fg(z_L) + CE(M_L) + Dice_fg(M_L)]`` (Dice of the foreground
      classes, over the batch);
    - ``L_u`` = :func:`unsupervised_loss`, threshold ``confidence_threshold``;
    - ``L_cps`` = :func:`contrastive_loss` on labeled voxels and unlabeled ones with
      ``conf ≥ contrast_threshold``, anchors where the student's probability of the voxel's class
      is below ``anchor_threshold``; the positive mixes in the teacher's prototypes once
      rectification is on, ``ξ ~ U(0, xi)`` per class and step (the paper) or ``ξ = xi``
      (``xi_draw: fixed``, the code);
    - total ``L_sup + unsup_weight·L_u + contrast_weight·L_cps`` (Eq. 15);
    - then ``a`` alone (the engine's second phase, :meth:`second_phase`):
      ``L_a = ½[CE + Dice_fg](z_L + (1 − a)·M_L)`` (Eq. 16) and a step of its
      optimiser, then the EMA. The paper: "the training alternates the minimisation of the
      losses in (15) and (16) and the EMA"; so ``z_L, M_L`` are those of the student just
      updated by (15), on the step's labeled images (``a_step: after``, the default). It does not
      say in which mode: the student runs in eval mode, no gradient, as the public code (a
      train-mode pass would move the batch-norm statistics a second time per step). The cost is
      one more forward pass of the labeled images. ``a_step: same`` takes ``z_L, M_L`` from the
      step's own training-mode forward pass instead, ``L_a`` joining the total (their inputs
      detached, only ``a`` learns from it). learnable_v2's convolution learns as ``a`` does;
      fixed_v1 learns nothing.

    Switches (the code's version, documented): ``confidence_weight: image`` (a per-image weight
    instead of the voxel mask), ``xi_draw: fixed``, ``dim_levels: last`` (the ½-resolution map
    only), ``positive_mean: raw`` (CPS's class mean of the raw representations, not the
    L2-normalised ones), ``contrast_divisor: present`` (CPS's sum over the classes divided by the
    classes present, not those that gave anchors). The code's query reshape in the attention is a bug and is not reproduced (see
    :mod:`semiseg.methods.crln.net`). Ablations: ``rectify: false`` (no DIM, no M losses, no
    rectification), ``contrast_weight: 0``, ``positive: mean | prototypes`` (MR / LP only),
    ``strong_augmentation: false`` (the student sees the weak view), ``dim_spatial`` and
    ``dim_cross`` (the DIM aggregation's SA and CI steps); ``rectification`` (Table 7:
    ``learnable_v3`` the paper's ``z + (1 − a)·M``, ``fixed_v1`` the more confident of ``z`` and
    ``M`` per voxel with nothing learned, ``learnable_v2`` a convolution over ``[z; M]`` trained in
    ``a``'s place: :mod:`semiseg.methods.crln.rectify` says what the text gives and what is chosen).

    Validation and inference run ``evaluate``: ``student`` (default: the student's backbone, its
    plain logits), ``teacher`` (the EMA teacher's backbone) or ``teacher_rectified`` (the teacher's
    logits rectified by its ``M(x)``, as the public code evaluates; ``model.pt`` then holds the
    teacher's CRLNNet and ``a`` or the convolution, see :meth:`inference_network`). The paper
    says only that testing uses the sliding window of UA-MT / MC-Net+, not which network or
    logits; the default is the student's plain prediction, as the teacher–student methods here.
    """

    ema_buffers = "keep"

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        if self.params["evaluate"] == "teacher_rectified" and not self.params["rectify"]:
            raise ValueError("crln evaluate: teacher_rectified needs rectify: true (without it there is no "
                             "rectification); allowed with rectify: false: student, teacher")
        self.a = nn.Parameter(torch.zeros(()))
        self.rectification = self.params["rectification"]
        if self.rectification == "learnable_v2":
            self.rectifier = ConcatRectifier(self.num_classes, self.dims)

    def build_student(self) -> nn.Module:
        """The run's network as the backbone of a :class:`~semiseg.methods.crln.net.CRLNNet`."""
        p = self.params
        return CRLNNet(self.net_factory(), self.num_classes, self.dims, prototypes=int(p["prototypes"]),
                       dim=int(p["prototype_dim"]), levels=p["dim_levels"], spatial=bool(p["dim_spatial"]),
                       cross=bool(p["dim_cross"]))

    def eval_network(self) -> nn.Module:
        which = self.params["evaluate"]
        if which == "student":
            return self.models[0].backbone
        if which == "teacher":
            return self.teacher.backbone
        # made on demand, not a submodule: the method's state dict keeps one name per parameter
        return Rectified(self.teacher, self.rectification, self.a, getattr(self, "rectifier", None))

    @classmethod
    def inference_network(cls, spec, net_factory) -> nn.Module:
        if spec["method"]["params"]["evaluate"] != "teacher_rectified":
            return net_factory()
        return cls(spec, net_factory).eval_network()

    def extra_optimizers(self, schedule: dict) -> dict[str, torch.optim.Optimizer]:
        """The rectification's own SGD with the main one's settings (the schedule's lr, momentum,
        Nesterov and weight decay; the code: 0.9, Nesterov): ``a`` (learnable_v3) or the
        convolution (learnable_v2); none for fixed_v1."""
        learned = {"learnable_v3": ("a", [self.a]),
                   "learnable_v2": ("rectifier", list(getattr(self, "rectifier", nn.Module()).parameters()))}
        if self.rectification not in learned:
            return {}
        name, params = learned[self.rectification]
        return {name: torch.optim.SGD(params, lr=float(schedule["lr"]), momentum=float(schedule["momentum"]),
                                      weight_decay=float(schedule["weight_decay"]),
                                      nesterov=bool(schedule.get("nesterov", False)))}

    def _rectification_optimizer(self) -> str:
        return "a" if self.rectification == "learnable_v3" else "rectifier"

    def learns_rectification(self) -> bool:
        return bool(self.params["rectify"]) and self.rectification != "fixed_v1"

    def rectified(self, logits: Tensor, relation: Tensor) -> Tensor:
        """The logits ``z`` rectified by the relationship map ``M`` (the ``rectification`` param)."""
        return rectified(self.rectification, logits, relation, self.a, getattr(self, "rectifier", None))

    def rectifying(self, step: Step) -> bool:
        return bool(self.params["rectify"]) and step.iteration >= int(round(self.params["rectify_start"] * step.total))

    def supervised_loss(self, logits: Tensor, label: Tensor, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """CE and the Dice of the foreground classes (of every class for a one-class task)."""
        return dice_ce_loss(logits, label, include_background=self.num_classes == 1, weight=weight)

    def loss_of_a(self, logits: Tensor, relation: Tensor, label: Tensor) -> Tensor:
        """Eq. 16: ``½[CE + Dice_fg]`` of the rectified logits, the network's outputs detached
        (so only ``a``, or learnable_v2's convolution, learns from it)."""
        ce, dice = self.supervised_loss(self.rectified(logits.detach(), relation.detach()), label)
        return 0.5 * (ce + dice)

    def xi(self, generator: torch.Generator, device) -> Tensor:
        p = self.params
        if p["positive"] == "prototypes":
            return torch.full((self.num_classes,), math.inf, device=device)
        if p["xi_draw"] == "fixed":
            return torch.full((self.num_classes,), float(p["xi"]), device=device)
        return (torch.rand(self.num_classes, generator=generator) * float(p["xi"])).to(device)

    def training_step(self, ctx: StepContext) -> Losses:
        p, s = self.params, two_stream(ctx.batch)
        nl = s.n_labeled
        # the step's own stream for the strong view, ξ and the contrast's samples, seeded by one
        # draw of the step's generator
        g = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, (), generator=ctx.generator)))
        on = self.rectifying(ctx.step)
        with torch.no_grad():
            zt, mt, _ = self.teacher.outputs(s.unlabeled)
            probs_t = torch.softmax(self.rectified(zt, mt) if on else zt, dim=1)
            conf, pseudo = probs_t.max(dim=1)
        if p["strong_augmentation"]:
            xs, ys, cs = strong_view(s.unlabeled, pseudo, conf, g)
        else:
            xs, ys, cs = s.unlabeled, pseudo, conf
        z, m, rep = self.student.outputs(torch.cat([s.labeled, xs]))
        ce, dice = self.supervised_loss(z[:nl], s.label)
        terms = {"ce": ce, "dice": dice}
        if p["rectify"]:
            terms["ce_map"], terms["dice_map"] = self.supervised_loss(m[:nl], s.label)
        sup = 0.5 * sum(terms.values())
        terms["unsup"] = unsupervised_loss(z[nl:], ys, cs, float(p["confidence_threshold"]), p["confidence_weight"])
        total = sup + float(p["unsup_weight"]) * terms["unsup"]
        if float(p["contrast_weight"]) > 0:
            terms["cps"] = self._contrast(z, rep, s.label, ys, cs, on, g)
            total = total + float(p["contrast_weight"]) * terms["cps"]
        if self.learns_rectification() and p["a_step"] == "same":
            name = "a_loss" if self.rectification == "learnable_v3" else "rectifier_loss"
            terms[name] = self.loss_of_a(z[:nl], m[:nl], s.label)
            total = total + terms[name]
        # tensors: read by the engine with the loss terms, in one transfer (no sync here)
        ctx.stats.update(a=self.a.detach().clone(), rectifying=float(on),
                         confident=(cs >= float(p["confidence_threshold"])).float().mean())
        return Losses(total=total, terms=terms, stats=ctx.stats)

    def second_phase(self, ctx: StepContext) -> dict[str, Tensor]:
        """``a_step: after``: Eq. 16's loss of ``a`` (or learnable_v2's convolution) on the step's
        labeled images through the student just updated, in eval mode (no gradient to it, its
        batch-norm statistics left as they are), minimised by the rectification's own optimiser;
        the EMA follows (:meth:`after_optimizer_step`)."""
        if not self.learns_rectification() or self.params["a_step"] != "after":
            return {}
        s = two_stream(ctx.batch)
        was = self.student.training
        self.student.eval()
        with torch.no_grad():
            z, m = self.student.logits_and_map(s.labeled)
        self.student.train(was)
        return {self._rectification_optimizer(): self.loss_of_a(z, m, s.label)}

    def _contrast(self, z, rep, label, ys, cs, on: bool, g) -> Tensor:
        p = self.params
        labels = torch.cat([label, ys]).flatten()
        conf = torch.cat([torch.ones_like(label, dtype=cs.dtype), cs]).flatten()
        valid = (labels >= 0) & (conf >= float(p["contrast_threshold"]))
        probs = torch.softmax(z.detach(), dim=1).movedim(1, -1).reshape(-1, z.shape[1])
        own = probs.gather(1, labels.clamp_min(0)[:, None])[:, 0]
        uncertain = own < float(p["anchor_threshold"])
        raw = rep.movedim(1, -1).reshape(-1, rep.shape[1])
        use_protos = on and p["positive"] != "mean"
        return contrastive_loss(F.normalize(raw, dim=1), labels, valid, uncertain,
                                self.teacher.prototypes if use_protos else None,
                                self.xi(g, rep.device) if use_protos else None,
                                num_classes=self.num_classes, anchors=int(p["anchors"]), negatives=int(p["negatives"]),
                                temperature=float(p["temperature"]), generator=g,
                                positive_rep=raw if p["positive_mean"] == "raw" else None,
                                divide_by=p["contrast_divisor"])
