"""CRLN (Wang et al., "Leveraging Labelled Data Knowledge: A Cooperative Rectification Learning
Network for Semi-supervised 3D Medical Image Segmentation", arXiv:2502.11456): a weak-to-strong
teacher–student whose pseudo-labels are rectified by learned class prototypes (the DIM,
:mod:`semiseg.methods.crln_net`), plus a contrastive loss with "unassertive" positives (CPS)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semiseg.methods.base import Losses, Method, Step, register, two_stream
from semiseg.methods.common.losses import dice_ce_loss
from semiseg.methods.common.teacher import TeacherStudent, frozen_copy
from semiseg.methods.crln_net import CRLNNet
from semiseg.methods.crln_rectify import RECTIFICATIONS, ConcatRectifier, Rectified, rectify, rectify_fixed

__all__ = ["CRLN", "beta_4_4", "contrastive_loss", "info_nce", "rectify", "rectify_fixed", "sample_contrast",
           "strong_view", "unsupervised_loss"]


def beta_4_4(n: int, generator: torch.Generator) -> Tensor:
    """``n`` draws of Beta(4, 4) from ``generator``: the 4th smallest of 7 uniforms."""
    return torch.rand(n, 7, generator=generator).sort(dim=1).values[:, 3]


def _fit(x: Tensor, h: int, w: int, fill: float | None) -> Tensor:
    """Centre-crop or pad the last two axes of ``x`` to ``(h, w)``: reflect-padded when ``fill``
    is None, else padded with ``fill``."""
    dh, dw = h - x.shape[-2], w - x.shape[-1]
    if dh > 0 or dw > 0:
        ph, pw = max(dh, 0), max(dw, 0)
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        if fill is None:
            lead, flat = x.shape[:-2], x.reshape(1, -1, *x.shape[-2:])
            flat = F.pad(flat, pad, mode="reflect")
            x = flat.reshape(*lead, *flat.shape[-2:])
        else:
            x = F.pad(x, pad, value=fill)
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w]


def strong_view(image: Tensor, label: Tensor, conf: Tensor, generator: torch.Generator, *,
                scale: tuple[float, float] = (0.5, 1.5), noise_std: float = 0.1) -> tuple[Tensor, Tensor, Tensor]:
    """The strong view of unlabeled images ``(B, 1, *spatial)`` with the teacher's labels and
    confidences ``(B, *spatial)`` following every geometric change (the code's
    ``generate_unsup_data`` and ``transform_u``):

    1. per sample, an in-plane rescale by ``s ~ U(scale)`` (image (bi/tri)linear, labels and
       confidences nearest), centre-cropped or padded back (image: reflect; label: −1, ignored;
       confidence: 0);
    2. CutMix: ``λ ~ Beta(4, 4)`` per batch, a box of ``int(W√(1−λ)) × int(H√(1−λ))`` in-plane
       over the full depth, its centre per sample in ``[W/8, W) × [H/8, H)`` (clipped at the
       border), pasted from ``randperm`` partners (a sample may be its own);
    3. per sample: brightness ``×U(0.75, 1.25)`` with p = 0.8, clipped to the sample's range (the
       code clips to [0, 1] on min-max images; the store's volumes are not min-max normalised);
       noise ``clip(N(0, σ²), ±2σ)`` with p = 0.5; an in-plane rot90 (half turns on a
       non-square plane) and a flip with p = 0.5.
    """
    b, device = image.shape[0], image.device
    h, w = image.shape[-2:]
    imgs, labs, confs = [], [], []
    for i in range(b):
        s = scale[0] + (scale[1] - scale[0]) * float(torch.rand((), generator=generator))
        size = (*image.shape[2:-2], max(1, round(h * s)), max(1, round(w * s)))
        mode = "trilinear" if image.dim() == 5 else "bilinear"
        x = F.interpolate(image[i:i + 1], size=size, mode=mode, align_corners=False)
        y = F.interpolate(label[i:i + 1, None].float(), size=size, mode="nearest")
        c = F.interpolate(conf[i:i + 1, None].float(), size=size, mode="nearest")
        imgs.append(_fit(x, h, w, None))
        labs.append(_fit(y, h, w, -1.0)[:, 0].long())
        confs.append(_fit(c, h, w, 0.0)[:, 0])
    x, y, c = torch.cat(imgs), torch.cat(labs), torch.cat(confs)
    # CutMix
    lam = float(beta_4_4(1, generator))
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    partner = torch.randperm(b, generator=generator).tolist()
    x0, y0, c0 = x.clone(), y.clone(), c.clone()
    for i in range(b):
        cy = int(torch.randint(h // 8, h, (), generator=generator))
        cx = int(torch.randint(w // 8, w, (), generator=generator))
        t, bo = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        le, r = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        j = partner[i]
        x[i, ..., t:bo, le:r] = x0[j, ..., t:bo, le:r]
        y[i, ..., t:bo, le:r] = y0[j, ..., t:bo, le:r]
        c[i, ..., t:bo, le:r] = c0[j, ..., t:bo, le:r]
    # per-sample photometric and rot/flip
    out_x, out_y, out_c = [], [], []
    for i in range(b):
        u = torch.rand(3, generator=generator)
        factor = 0.75 + 0.5 * float(torch.rand((), generator=generator))
        k = int(torch.randint(0, 4, (), generator=generator))
        axis = int(torch.randint(0, 2, (), generator=generator))
        noise = torch.randn(x.shape[1:], generator=generator).to(device) * noise_std
        xi, yi, ci = x[i], y[i], c[i]
        if u[0] < 0.8:
            xi = torch.minimum(torch.maximum(xi * factor, xi.min()), xi.max())
        if u[1] < 0.5:
            xi = xi + noise.clamp(-2 * noise_std, 2 * noise_std)
        if u[2] < 0.5:
            k = k if h == w else 2 * (k % 2)
            xi = torch.flip(torch.rot90(xi, k, dims=(-2, -1)), dims=(xi.dim() - 2 + axis,))
            yi = torch.flip(torch.rot90(yi, k, dims=(-2, -1)), dims=(yi.dim() - 2 + axis,))
            ci = torch.flip(torch.rot90(ci, k, dims=(-2, -1)), dims=(ci.dim() - 2 + axis,))
        out_x.append(xi)
        out_y.append(yi)
        out_c.append(ci)
    return torch.stack(out_x), torch.stack(out_y), torch.stack(out_c)


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
                     generator: torch.Generator) -> Tensor:
    """CPS over flat representations ``rep`` ``(N, D)``: per sampled class (:func:`sample_contrast`)
    the InfoNCE of its anchors against the positive ``r_c`` (the mean of the valid ``rep`` of the
    class, no gradient) or, with ``prototypes`` ``(C, K, D)`` and ``xi`` ``(C,)``, the
    unassertive ``(r_c + ξ_c·p̄_c)/(1 + ξ_c)`` with ``p̄_c`` the mean of the class's prototypes
    (``xi = inf`` gives the prototypes alone); negatives carry no gradient (as ReCo). The sum is
    divided by the number of classes sampled; 0 when none is."""
    drawn = sample_contrast(labels, valid, uncertain, num_classes, anchors, negatives, generator)
    total = rep.sum() * 0.0
    for c, (a, n) in drawn.items():
        pos = rep[valid & (labels == c)].mean(dim=0).detach()
        if prototypes is not None:
            p = prototypes[c].mean(dim=0).detach()
            pos = p if math.isinf(float(xi[c])) else (pos + xi[c] * p) / (1 + xi[c])
        total = total + info_nce(rep[a], pos, rep[n].detach(), temperature)
    return total / max(len(drawn), 1)


@register("crln")
class CRLN(TeacherStudent):
    """CRLN: weak-to-strong teacher–student, DIM rectification, collaborative positive supervision.

    Networks: ``models[0]`` is a :class:`~semiseg.methods.crln_net.CRLNNet` (backbone, prototypes,
    DIM, representation head), ``teacher`` its EMA copy (decay ``min(1 − 1/(t+1), ema_decay)``,
    parameters only, as the code), ``a`` the rectification scalar (initial 0, not clamped) with
    its own SGD (the schedule's lr and weight decay, no momentum, as the code).

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
    - ``L_a = ½[CE + Dice_fg](z_L + (1 − a)·M_L)`` with ``z_L, M_L`` detached: only ``a`` learns
      from it (Eq. 16; the code evaluates them again after the step in eval mode, here the
      step's own outputs are used);
    - total ``L_sup + unsup_weight·L_u + contrast_weight·L_cps + L_a``.

    Switches (the code's version, documented): ``confidence_weight: image`` (a per-image weight
    instead of the voxel mask), ``xi_draw: fixed``, ``dim_levels: last`` (the ½-resolution map
    only). The code's query reshape in the attention is a bug and is not reproduced (see
    :mod:`semiseg.methods.crln_net`). Ablations: ``rectify: false`` (no DIM, no M losses, no
    rectification), ``contrast_weight: 0``, ``positive: mean | prototypes`` (MR / LP only),
    ``strong_augmentation: false`` (the student sees the weak view), ``dim_spatial`` and
    ``dim_cross`` (the DIM aggregation's SA and CI steps); ``rectification`` (Table 7:
    ``learnable_v3`` the paper's ``z + (1 − a)·M``, ``fixed_v1`` the more confident of ``z`` and
    ``M`` per voxel with nothing learned, ``learnable_v2`` a convolution over ``[z; M]`` trained in
    ``a``'s place: :mod:`semiseg.methods.crln_rectify` says what the text gives and what is chosen).

    Validation and inference run ``evaluate``: ``student`` (default: the student's backbone, its
    plain logits), ``teacher`` (the EMA teacher's backbone) or ``teacher_rectified`` (the teacher's
    logits rectified by its ``M(x)``, as the public code evaluates; ``model.pt`` then holds the
    teacher's CRLNNet and ``a`` or the convolution, see :meth:`inference_network`). The paper
    says only that testing uses the sliding window of UA-MT / MC-Net+, not which network or
    logits; the default is the student's plain prediction, as the teacher–student methods here.
    """

    ema_buffers = "keep"

    def __init__(self, spec, net_factory):
        Method.__init__(self, spec, net_factory)
        p = self.params
        self.models.append(CRLNNet(net_factory(), self.num_classes, self.dims, prototypes=int(p["prototypes"]),
                                   dim=int(p["prototype_dim"]), levels=p["dim_levels"],
                                   spatial=bool(p["dim_spatial"]), cross=bool(p["dim_cross"])))
        self.teacher = frozen_copy(self.models[0])
        self.a = nn.Parameter(torch.zeros(()))
        self.rectification = p["rectification"]
        if self.rectification not in RECTIFICATIONS:
            raise ValueError(f"crln rectification must be one of {RECTIFICATIONS}, got {self.rectification!r}")
        if self.rectification == "learnable_v2":
            self.rectifier = ConcatRectifier(self.num_classes, self.dims)
        if p["evaluate"] == "teacher_rectified" and not p["rectify"]:
            raise ValueError("crln evaluate: teacher_rectified needs rectify: true (without it there is no "
                             "rectification); allowed with rectify: false: student, teacher")

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
        if spec["method"]["params"].get("evaluate", "student") != "teacher_rectified":
            return net_factory()
        return cls(spec, net_factory).eval_network()

    def extra_optimizers(self, schedule: dict) -> dict[str, torch.optim.Optimizer]:
        """The rectification's own SGD (the schedule's lr and weight decay, no momentum): ``a``
        (learnable_v3) or the convolution (learnable_v2); none for fixed_v1."""
        learned = {"learnable_v3": ("a", [self.a]),
                   "learnable_v2": ("rectifier", list(getattr(self, "rectifier", nn.Module()).parameters()))}
        if self.rectification not in learned:
            return {}
        name, params = learned[self.rectification]
        return {name: torch.optim.SGD(params, lr=float(schedule["lr"]), weight_decay=float(schedule["weight_decay"]))}

    def rectified(self, logits: Tensor, relation: Tensor) -> Tensor:
        """The logits ``z`` rectified by the relationship map ``M`` (the ``rectification`` param)."""
        if self.rectification == "fixed_v1":
            return rectify_fixed(logits, relation)
        if self.rectification == "learnable_v2":
            return self.rectifier(logits, relation)
        return rectify(logits, relation, self.a)

    def make_views(self, batch, generator):
        seed = int(torch.randint(0, 2 ** 62, (), generator=generator))
        return {**batch, "crln_seed": torch.tensor(seed)}

    def rectifying(self, step: Step) -> bool:
        return bool(self.params["rectify"]) and step.iteration >= int(round(self.params["rectify_start"] * step.total))

    def _supervised(self, logits: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        fg = self.num_classes > 1
        return dice_ce_loss(logits, label, include_background=not fg)

    def loss_of_a(self, logits: Tensor, relation: Tensor, label: Tensor) -> Tensor:
        """Eq. 16: ``½[CE + Dice_fg]`` of the rectified logits, the network's outputs detached
        (so only ``a``, or learnable_v2's convolution, learns from it)."""
        ce, dice = self._supervised(self.rectified(logits.detach(), relation.detach()), label)
        return 0.5 * (ce + dice)

    def xi(self, generator: torch.Generator, device) -> Tensor:
        p = self.params
        if p["positive"] == "prototypes":
            return torch.full((self.num_classes,), math.inf, device=device)
        if p["xi_draw"] == "fixed":
            return torch.full((self.num_classes,), float(p["xi"]), device=device)
        return (torch.rand(self.num_classes, generator=generator) * float(p["xi"])).to(device)

    def training_step(self, batch, step: Step) -> Losses:
        p, s = self.params, two_stream(batch)
        nl = s.n_labeled
        g = torch.Generator().manual_seed(int(batch["crln_seed"]))
        on = self.rectifying(step)
        with torch.no_grad():
            zt, mt, _ = self.teacher.outputs(s.unlabeled)
            probs_t = torch.softmax(self.rectified(zt, mt) if on else zt, dim=1)
            conf, pseudo = probs_t.max(dim=1)
        if p["strong_augmentation"]:
            xs, ys, cs = strong_view(s.unlabeled, pseudo, conf, g)
        else:
            xs, ys, cs = s.unlabeled, pseudo, conf
        z, m, rep = self.student.outputs(torch.cat([s.labeled, xs]))
        ce, dice = self._supervised(z[:nl], s.label)
        terms = {"ce": ce, "dice": dice}
        if p["rectify"]:
            terms["ce_map"], terms["dice_map"] = self._supervised(m[:nl], s.label)
        sup = 0.5 * sum(terms.values())
        terms["unsup"] = unsupervised_loss(z[nl:], ys, cs, float(p["confidence_threshold"]), p["confidence_weight"])
        total = sup + float(p["unsup_weight"]) * terms["unsup"]
        if float(p["contrast_weight"]) > 0:
            terms["cps"] = self._contrast(z, rep, s.label, ys, cs, on, g)
            total = total + float(p["contrast_weight"]) * terms["cps"]
        if p["rectify"] and self.rectification != "fixed_v1":
            name = "a_loss" if self.rectification == "learnable_v3" else "rectifier_loss"
            terms[name] = self.loss_of_a(z[:nl], m[:nl], s.label)
            total = total + terms[name]
        stats = {"a": float(self.a.detach()), "rectifying": float(on),
                 "confident": float((cs >= float(p["confidence_threshold"])).float().mean())}
        return Losses(total=total, terms=terms, stats=stats)

    def _contrast(self, z, rep, label, ys, cs, on: bool, g) -> Tensor:
        p = self.params
        labels = torch.cat([label, ys]).flatten()
        conf = torch.cat([torch.ones_like(label, dtype=cs.dtype), cs]).flatten()
        valid = (labels >= 0) & (conf >= float(p["contrast_threshold"]))
        probs = torch.softmax(z.detach(), dim=1).movedim(1, -1).reshape(-1, z.shape[1])
        own = probs.gather(1, labels.clamp_min(0)[:, None])[:, 0]
        uncertain = own < float(p["anchor_threshold"])
        flat = F.normalize(rep, dim=1).movedim(1, -1).reshape(-1, rep.shape[1])
        use_protos = on and p["positive"] != "mean"
        return contrastive_loss(flat, labels, valid, uncertain,
                                self.teacher.prototypes if use_protos else None,
                                self.xi(g, rep.device) if use_protos else None,
                                num_classes=self.num_classes, anchors=int(p["anchors"]), negatives=int(p["negatives"]),
                                temperature=float(p["temperature"]), generator=g)
