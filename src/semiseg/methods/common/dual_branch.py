"""The two-network, two-pass base that ALHVR (Lei et al., "Adaptive Learning of High-Value Regions
for Semi-Supervised Medical Image Segmentation", ICCV 2025, https://github.com/ziziyao/ALHVR) and
its region study (``cps_regions``, the paper's Table 1) share: two independently initialised
networks whose decoders also run on perturbed encoder features, the supervised term on each
network's clean prediction, ALHVR's regions of the unlabeled pixels, and the masked reductions
of per-pixel loss maps.

It lives here, not in ``alhvr.py``, so that each of the two methods' own files holds only its
difference from this base: an edit to ALHVR's losses re-runs ALHVR's jobs, not the region study's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from semiseg.methods.base import Method, Step
from semiseg.methods.common.losses import masked_mean
from semiseg.methods.common.regions import Regions, split_regions
from semiseg.nets.perturb import perturb_features

__all__ = ["NETS", "Branch", "DualBranch", "reduce_region"]

NETS = "ab"  # suffix of each network's loss terms


@dataclass
class Branch:
    """One network's outputs on the whole batch (labeled first): clean and perturbed decoder."""

    logits: Tensor      # ŷ_x1 (logits), decoder on the encoder features F1
    logits_p: Tensor    # ŷ_x2 (logits), the same decoder on perturbed features F2
    features: Tensor    # decoder feature map on F1 (prototype stage)
    features_p: Tensor  # the same map on F2


def reduce_region(loss_map: Tensor, mask: Tensor, how: str) -> Tensor:
    """A per-pixel loss restricted to ``mask``: ``"region"`` averages over the masked pixels
    (``sum(l·m) / sum(m)``, 0 for an empty mask); ``"all_pixels"`` divides the same sum by
    every pixel of the map, so a term shrinks with its region."""
    if how == "region":
        return masked_mean(loss_map, mask)
    if how == "all_pixels":
        return (loss_map * mask.to(loss_map.dtype)).sum() / loss_map.numel()
    raise ValueError(f"unknown reduction {how!r}; known: region, all_pixels")


class DualBranch(Method):
    """Two independently initialised networks; each decoder runs on the encoder features and on
    a perturbed copy (feature noise or feature dropout, drawn at random per network and pass,
    applied to every encoder level as the public ALHVR ``UNet_fea_aux`` does).

    Shared by ALHVR and the region study: the forward passes, the supervised term
    ``CE + Dice`` on each network's clean prediction, and the regions computed from the
    perturbed predictions of the unlabeled images. Network A is the evaluated one (the
    public code reports ``model1``).
    """

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        for _ in NETS:  # net_factory draws fresh weights: the networks start apart
            self.models.append(net_factory())

    def branches(self, x: Tensor, *, perturbed_grad: bool = True) -> list[Branch]:
        stage = int(self.params.get("prototype_stage", -1))
        out = []
        for net in self.models:
            features = net.encode(x)
            logits, stages = net.decode_stages(features)
            if not -len(stages) <= stage < len(stages):
                raise ValueError(f"prototype_stage {stage} out of range for {len(stages)} decoder stages")
            with torch.set_grad_enabled(perturbed_grad and torch.is_grad_enabled()):
                perturbed = perturb_features(features, self.params.get("perturbation", "random"))
                logits_p, stages_p = net.decode_stages(perturbed)
            out.append(Branch(logits, logits_p, stages[stage], stages_p[stage]))
        return out

    def supervised_terms(self, branches: list[Branch], label: Tensor) -> dict[str, Tensor]:
        terms = {}
        for name, br in zip(NETS, branches):
            ce, dice = self.supervised_loss(br.logits[: label.shape[0]], label)
            terms[f"ce_{name}"], terms[f"dice_{name}"] = ce, dice
        return terms

    def split(self, probs_p: list[Tensor]) -> Regions:
        return split_regions(probs_p[0].amax(dim=1), probs_p[1].amax(dim=1), float(self.params["beta"]))

    def weight(self, step: Step) -> float:
        """λ(t) = lambda_max · exp(−5(1 − t/t_ramp)²), t_ramp = ``rampup`` × the iterations."""
        return float(self.params["lambda_max"]) * step.rampup(float(self.params["rampup"]))
