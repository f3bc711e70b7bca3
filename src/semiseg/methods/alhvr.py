"""ALHVR (Lei et al., "Adaptive Learning of High-Value Regions for Semi-Supervised Medical Image
Segmentation", ICCV 2025, https://github.com/ziziyao/ALHVR): CG-CPCL and DTCT over the two-network
base it shares with the paper's region study (:mod:`semiseg.methods.common.dual_branch`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from semiseg.methods.base import Losses, StepContext, register, two_stream
from semiseg.methods.common.dual_branch import NETS, DualBranch, reduce_region
from semiseg.methods.common.pseudo import entropy, sharpen, sharpen_distribution
from semiseg.methods.common.regions import Regions, class_prototypes, prototype_similarity, resize_features

__all__ = ["ALHVR", "FIGURES", "NORMALIZE", "PROTOTYPE_SMOOTHING", "cg_cpcl_terms", "dtct_teacher"]

#: The figure drawn from an ``alhvr`` run (a literal, read by :mod:`semiseg.method_sources`).
FIGURES = [{
    "name": "alhvr_regions", "algorithm": "alhvr", "rule": "region_figure", "weights": "models.pt",
    "draw": "semiseg.reporting.figures:region_figure",
    "title": "ALHVR's regions", "alt": "ALHVR regions",
    "note": "Paper Figure 1 for our run: image, both networks' predictions, and the regions Ω1 (reliable "
            "stable), Ω2 (reliable unstable), Ω3 (unreliable stable).",
}]


def cg_cpcl_terms(sim: Tensor, target: Tensor, mask: Tensor, *, cosine: str = "all",
                  ce_reduction: str = "region", cos_reduction: str = "all_pixels",
                  ce_broadcast: bool = False) -> tuple[Tensor, Tensor]:
    """CG-CPCL's two terms for one network: ``CE(sim, ŷ^p)⊙Mask`` and ``(1 − sim)⊙Mask``.

    ``sim`` ``(B, C, *spatial)`` are this network's perturbed features' similarities to the
    *other* network's prototypes, used as logits; ``target`` ``(B, *spatial)`` is the other
    network's pseudo label; ``mask`` where this network learns from the other. ``cosine``:
    ``"all"`` averages ``1 − sim_c`` over every class c (the public code); ``"target"`` takes
    ``1 − sim_{ŷ^p}``, the similarity to the pseudo label's own prototype.

    ``ce_broadcast`` reproduces the public code's CE numerator: it multiplies the mask, made
    ``(B, 1, *spatial)``, with the ``(B, *spatial)`` CE map, which broadcasts to
    ``(B, B, *spatial)`` and pairs every sample's mask with every sample's CE:
    ``Σ_x (Σ_i m_i(x))·(Σ_j ce_j(x))`` in place of ``Σ_i Σ_x m_i(x)·ce_i(x)``. The denominator
    is the reduction's (``Σ m`` for ``"region"``, as the code). Both agree for a batch of one.
    """
    ce_map = F.cross_entropy(sim, target, reduction="none")
    if cosine == "all":
        cos_map = (1.0 - sim).mean(dim=1)
    elif cosine == "target":
        cos_map = 1.0 - sim.gather(1, target.unsqueeze(1)).squeeze(1)
    else:
        raise ValueError(f"cosine must be 'all' or 'target', got {cosine!r}")
    if ce_broadcast:
        ce = _batch_paired(ce_map, mask, ce_reduction)
    else:
        ce = reduce_region(ce_map, mask, ce_reduction)
    return ce, reduce_region(cos_map, mask, cos_reduction)


def _batch_paired(loss_map: Tensor, mask: Tensor, how: str) -> Tensor:
    """:func:`reduce_region` with the numerator ``Σ_x (Σ_i m_i(x))·(Σ_j l_j(x))`` (see
    :func:`cg_cpcl_terms`). Worked example, two samples of two pixels, masks ``[1, 0]``,
    ``[0, 1]``, losses ``[a, b]``, ``[c, d]``: ``(a + c + b + d) / 2`` with ``"region"``, where
    the per-sample pairing gives ``(a + d) / 2``."""
    m = mask.to(loss_map.dtype)
    paired = (m.sum(dim=0) * loss_map.sum(dim=0)).sum()
    if how == "region":
        return paired / (m.sum() + 1e-16)  # masked_mean's eps, the code's 1e-16
    if how == "all_pixels":
        return paired / loss_map.numel()
    raise ValueError(f"unknown reduction {how!r}; known: region, all_pixels")


def dtct_teacher(probs_a: Tensor, probs_b: Tensor) -> Tensor:
    """Per pixel, the more confident of the two unperturbed predictions (ties go to B, as in
    the public code's ``max_a > max_b``)."""
    pick_a = probs_a.amax(dim=1, keepdim=True) > probs_b.amax(dim=1, keepdim=True)
    return torch.where(pick_a, probs_a, probs_b)


#: Which reduction each term gets under the ``normalize`` choices (see :class:`ALHVR`).
NORMALIZE = {
    "reference": {"pc_ce": "region", "pc_cos": "all_pixels", "mh_mse": "region", "mh_ent": "all_pixels"},
    "region": dict.fromkeys(("pc_ce", "pc_cos", "mh_mse", "mh_ent"), "region"),
    "all_pixels": dict.fromkeys(("pc_ce", "pc_cos", "mh_mse", "mh_ent"), "all_pixels"),
}

#: The ``smoothing`` of :func:`class_prototypes` under each ``prototype_divisor`` (see :class:`ALHVR`).
PROTOTYPE_SMOOTHING = {"count": None, "alhvr_code": 1e-5}


@register("alhvr")
class ALHVR(DualBranch):
    """Adaptive learning of high-value regions: CG-CPCL on Ω2, DTCT on Ω3.

    Per network x ∈ {a, b}: ``L_x = CE + Dice (labeled) + λ(t)·(L_pc^x + L_mh^x)``, with
    ``λ(t) = lambda_max·exp(−5(1 − t/t_max)²)``; the engine minimises ``L_a + L_b``. On the
    unlabeled images, γ and Ω1/Ω2/Ω3 come from the perturbed predictions
    (``semiseg.methods.common.regions``, parameter ``beta``).

    - CG-CPCL (``cg_cpcl``): prototypes ``p^c`` of each network's clean decoder features under
      its own pseudo label ``argmax ŷ_x1``; ``sim_a = cos(F_a2, p_b)``, and
      ``L_pc^a = CE(sim_a, ŷ_b1^p)⊙Mask_a + (1 − sim_a)⊙Mask_a`` where A is unreliable and B
      reliable; the mirror for B. Logged as ``pc_ce_x`` and ``pc_cos_x``.
    - DTCT (``dtct``): the teacher is, per pixel, the more confident of ŷ_a1, ŷ_b1, sharpened
      with ``temperature``; ``L_mh^x = MSE(ŷ_x2, teacher)`` on Ω3 plus the entropy of ŷ_x1 and
      of ŷ_x2 on Ω3. Logged as ``mh_mse_x`` and ``mh_ent_x``. The MSE of a pixel is summed
      over classes, as in the public code.

    Switching a module off removes its terms (not computed, not logged, no gradient).

    Choices the paper leaves open are parameters. Their defaults follow the authors' public
    code, since that is what produced the paper's numbers, except ``prototype_stage``, where
    the paper names the layer:

    - ``normalize``: how a masked term is averaged. ``"reference"`` (default) takes the public
      code's denominators: the CE over its region's pixels (``Σ m + 1e-16``), the MSE, summed
      over classes, over its region's pixels; the cosine term (mean over classes) and the
      entropy terms over *all* unlabeled pixels of the batch (so they shrink with their
      region). It does not reproduce the code's CE *numerator*, whose broadcast pairs every
      sample's mask with every sample's CE; ``reference`` pairs each sample with its own, the
      paper's per-pixel masked mean, unless ``ce_batch_broadcast`` is set (the two agree when
      the unlabeled batch holds one image). ``"region"`` averages every term over its region,
      ``"all_pixels"`` over all pixels.
    - ``ce_batch_broadcast`` (default false): reproduce that broadcast exactly
      (:func:`cg_cpcl_terms`); false is the per-pixel masked mean the paper writes.
    - ``detach_teacher`` (default false): the public code lets the DTCT MSE's gradient reach the
      teacher, i.e. the winning unperturbed prediction; true treats the teacher as a target.
    - ``sharpen``: ``"elementwise"`` (default) is the paper's and code's
      ``p^(1/T) / (p^(1/T) + (1 − p)^(1/T))`` applied to every class channel on its own, which
      is exact for two classes and leaves a multi-class target unnormalised;
      ``"distribution"`` is ``p_c^(1/T) / Σ_k p_k^(1/T)``.
    - ``detach_prototypes`` (default false): the public code back-propagates CG-CPCL through
      the other network's prototypes as well.
    - ``cosine_term``: ``"all"`` (default; the code's ``(1 − sim)`` over every class channel)
      or ``"target"`` (``1 − sim`` to the pseudo label's own prototype).
    - ``prototype_pooling``: ``"sample"`` (default; mean of per-sample class means, the code's
      ``getPrototype``) or ``"batch"`` (mean over every pixel of the class in the batch).
    - ``prototype_stage``: which decoder map the prototypes use, -1 (default) = the
      penultimate map that feeds the output layer, the paper's "penultimate layer". Maps are
      upsampled to label size.
    - ``prototype_features: up2_projection`` takes the map the public code reads instead: the
      64-channel output of the 1×1 convolution inside the second up block, at 1/8 resolution.
    - ``prototype_divisor``: ``"count"`` (default) divides a class's feature sum by its pixel
      count, the mean the paper writes; ``"alhvr_code"`` by ``count + 1e-5``, as the public
      code's ``getPrototype_2D``/``_3D`` (a class of ``n`` pixels shrinks by ``n / (n + 1e-5)``).
    - ``dice_form: alhvr_code``: the public code's supervised Dice, ``1 − I/(Σp² + Σt²)``
      without the factor 2 (so Dice weighs half as much as CE in the paper's runs); the default
      ``standard`` is SSL4MIS's Dice, as every other method here.
    - ``rampup_block``: 150 reproduces the code's staircase ramp ``sigmoid_rampup(iter // 150, ...)``.
    - ``similarity_scale``: factor on the cosine similarities used as CE logits (code: 1).

    Also: γ is one threshold per batch, over the unlabeled images only; the perturbed pass
    decodes the whole batch, labeled images included (same batch-norm statistics as the
    public code); ``perturbation`` may pin noise or dropout instead of a random choice.
    """

    def prototype_source(self) -> tuple[str, int]:
        return self.params["prototype_features"], int(self.params["prototype_stage"])

    def training_step(self, ctx: StepContext) -> Losses:
        s = two_stream(ctx.batch)
        nl = s.n_labeled
        branches = self.branches(s.images)
        terms = self.branch_supervised_terms(branches, s.label)
        probs = [torch.softmax(br.logits[nl:], dim=1) for br in branches]
        probs_p = [torch.softmax(br.logits_p[nl:], dim=1) for br in branches]
        regions = self.split(probs_p)
        reduction = NORMALIZE[self.params["normalize"]]
        unsup: dict[str, Tensor] = {}
        if self.params["cg_cpcl"]:
            unsup.update(self.cg_cpcl(branches, probs, regions, nl, reduction))
        if self.params["dtct"]:
            unsup.update(self.dtct(probs, probs_p, regions, reduction))
        weight = self.weight(ctx.step)
        total = sum(terms.values()) + weight * sum(unsup.values(), torch.zeros((), device=s.labeled.device))
        stats = {"gamma": regions.gamma, "lambda": weight, **regions.fractions()}
        return Losses(total=total, terms={**terms, **unsup}, stats=stats)

    def cg_cpcl(self, branches, probs, regions: Regions, nl: int, reduction) -> dict[str, Tensor]:
        labels = [p.argmax(dim=1) for p in probs]  # ŷ_x1^p
        size = labels[0].shape[1:]
        prototypes = []
        for br, y in zip(branches, labels):
            f = resize_features(br.features[nl:], size)
            f = f.detach() if self.params["detach_prototypes"] else f
            prototypes.append(class_prototypes(f, y, self.num_classes, pooling=self.params["prototype_pooling"],
                                               smoothing=PROTOTYPE_SMOOTHING[self.params["prototype_divisor"]]))
        out = {}
        for i, name in enumerate(NETS):
            other = 1 - i
            sim = prototype_similarity(resize_features(branches[i].features_p[nl:], size), prototypes[other],
                                       scale=float(self.params["similarity_scale"]))
            out[f"pc_ce_{name}"], out[f"pc_cos_{name}"] = cg_cpcl_terms(
                sim, labels[other], regions.learner(i), cosine=self.params["cosine_term"],
                ce_reduction=reduction["pc_ce"], cos_reduction=reduction["pc_cos"],
                ce_broadcast=bool(self.params["ce_batch_broadcast"]))
        return out

    def dtct(self, probs, probs_p, regions: Regions, reduction) -> dict[str, Tensor]:
        teacher = dtct_teacher(probs[0], probs[1])
        if self.params["detach_teacher"]:
            teacher = teacher.detach()
        t = float(self.params["temperature"])
        if self.params["sharpen"] == "elementwise":
            target = sharpen(teacher, t)
        else:  # the clamp keeps log(0) out of the gradient when the teacher is not detached
            target = sharpen_distribution(teacher.clamp_min(1e-12), t)
        omega3 = regions.omega3
        out = {}
        for i, name in enumerate(NETS):
            mse_map = ((probs_p[i] - target) ** 2).sum(dim=1)
            out[f"mh_mse_{name}"] = reduce_region(mse_map, omega3, reduction["mh_mse"])
            out[f"mh_ent_{name}"] = (reduce_region(entropy(probs[i]), omega3, reduction["mh_ent"])
                                     + reduce_region(entropy(probs_p[i]), omega3, reduction["mh_ent"]))
        return out
