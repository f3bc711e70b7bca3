"""The region study of ALHVR (Lei et al., ICCV 2025, Table 1): cross pseudo supervision with the
pixels of chosen regions left out of the unsupervised loss."""

from __future__ import annotations

import torch

from semiseg.methods.base import Losses, StepContext, register, two_stream
from semiseg.methods.common.dual_branch import DualBranch, reduce_region
from semiseg.methods.common.regions import REGION_NAMES


@register("cps_regions")
class CPSRegions(DualBranch):
    """CPS (Chen et al., CVPR 2021) on ALHVR's two networks, minus the regions in ``drop_regions``.

    Per network x with the other y: ``L_x = CE + Dice (labeled) +
    λ(t)·CE(ŷ_x1, argmax ŷ_y1)`` on the unlabeled pixels outside the dropped regions, with
    ALHVR's supervised term, ramp ``λ(t) = lambda_max·exp(−5(1 − t/t_max)²)`` and batch.

    The regions are ALHVR's, from the two networks' perturbed predictions (each decoder also
    runs on perturbed encoder features, without gradient: that pass only measures the
    confidences ``con_x = max ŷ_x2``), γ the mean of the lowest ``beta`` fraction of
    ``(con_a + con_b) / 2``:

    - ``R1`` = Ω1, reliable stable: both ``con >= γ``;
    - ``R2`` = Ω2, reliable unstable: exactly one ``con >= γ``;
    - ``R3`` = Ω3, unreliable stable: both ``con < γ``.

    ``drop_regions: []`` is plain CPS (on networks that also see the perturbed pass);
    ``[R2, R3]`` trains on R1 alone, and so on: the seven entries of the catalogue are every
    choice that keeps at least one region.

    Choice: ``normalize: all_pixels`` (default) divides the masked CE by all unlabeled pixels,
    so a kept pixel weighs exactly what it weighs in plain CPS and dropping a region only
    removes that region's share; ``region`` re-averages over the kept pixels.
    """

    def training_step(self, ctx: StepContext) -> Losses:
        s = two_stream(ctx.batch)
        nl = s.n_labeled
        branches = self.branches(s.images, perturbed_grad=False)
        terms = self.branch_supervised_terms(branches, s.label)
        regions = self.split([torch.softmax(br.logits_p[nl:], dim=1) for br in branches])
        keep = torch.ones_like(regions.reliable[0])
        for name in self.params["drop_regions"]:
            if name not in REGION_NAMES:
                raise ValueError(f"unknown region {name!r} in drop_regions; known: {', '.join(REGION_NAMES)}")
            keep &= ~regions.region(name)
        weight = self.weight(ctx.step)
        cross = self.cross_maps([br.logits[nl:] for br in branches])
        unsup = {f"cps{suffix}": reduce_region(ce_map, keep, self.params["normalize"])
                 for suffix, ce_map in zip(self.term_suffixes, cross)}
        total = sum(terms.values()) + weight * sum(unsup.values())
        stats = {"gamma": regions.gamma, "lambda": weight, "kept": keep.float().mean(),
                 **regions.fractions()}
        return Losses(total=total, terms={**terms, **unsup}, stats=stats)
