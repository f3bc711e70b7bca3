"""The two-network family: :class:`TwoNetwork` (two independently initialised networks, each
supervised, with the cross pseudo-label map CPS is made of) and, on it, :class:`DualBranch`, the
two-network, two-pass base that ALHVR (Lei et al., "Adaptive Learning of High-Value Regions
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

import torch.nn.functional as F

from semiseg.methods.base import Method, Step
from semiseg.methods.common.losses import DiceCE, alhvr_code_dice_loss, one_hot, reduce_region
from semiseg.methods.common.regions import Regions, split_regions
from semiseg.nets import init_weights
from semiseg.nets.perturb import perturb_features

__all__ = ["NETS", "Branch", "DualBranch", "TwoNetwork", "cross_pseudo_map", "reduce_region"]

NETS = "ab"  # suffix of each network's loss terms


@dataclass
class Branch:
    """One network's outputs on the whole batch (labeled first): clean and perturbed decoder."""

    logits: Tensor      # ŷ_x1 (logits), decoder on the encoder features F1
    logits_p: Tensor    # ŷ_x2 (logits), the same decoder on perturbed features F2
    features: Tensor    # decoder feature map on F1 (prototype stage)
    features_p: Tensor  # the same map on F2


def cross_pseudo_map(logits: Tensor, other_logits: Tensor) -> Tensor:
    """Per-pixel CE ``(B, *spatial)`` of ``logits`` against the hard labels ``argmax(other_logits)``.

    The other network's prediction is a fixed target (detached): only ``logits`` gets a gradient.
    Its mean is CPS's cross term; ALHVR's region study masks it.
    """
    return F.cross_entropy(logits, other_logits.detach().argmax(dim=1), reduction="none")


class TwoNetwork(Method):
    """Two networks (``models``, a list the steps loop over), started apart.

    :meth:`network_inits` names each network's initialisation scheme
    (:func:`semiseg.nets.init_weights`; ``default`` keeps PyTorch's own, which already draws
    them apart; CPS reads them from ``params['inits']``). ``term_suffixes`` is how the
    per-network loss terms are suffixed in the log (``ce1``/``ce2`` or ``ce_a``/``ce_b``).
    """

    #: Suffix of each network's loss terms.
    term_suffixes: tuple[str, str] = ("1", "2")

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        inits = self.network_inits()
        if len(inits) != 2:
            raise ValueError(f"{self.algorithm} trains two networks; params.inits names {len(inits)}")
        for scheme in inits:
            net = net_factory()
            self.models.append(net if scheme == "default" else init_weights(net, scheme))

    def network_inits(self) -> list[str]:
        """Each network's initialisation scheme: PyTorch's own for both, by default."""
        return ["default", "default"]

    def supervised_terms(self, logits: list[Tensor], label: Tensor) -> dict[str, Tensor]:
        """``ce<suffix>``, ``dice<suffix>`` of each network's labeled logits."""
        terms = {}
        for suffix, own in zip(self.term_suffixes, logits):
            terms[f"ce{suffix}"], terms[f"dice{suffix}"] = self.supervised_loss(own[: label.shape[0]], label)
        return terms

    def cross_maps(self, logits: list[Tensor]) -> list[Tensor]:
        """Each network's :func:`cross_pseudo_map` against the other's prediction, in network order."""
        return [cross_pseudo_map(own, other) for own, other in zip(logits, reversed(logits))]


class DualBranch(TwoNetwork):
    """Two independently initialised networks; each decoder runs on the encoder features and on
    a perturbed copy (feature noise or feature dropout, drawn at random per network and pass,
    applied to every encoder level as the public ALHVR ``UNet_fea_aux`` does).

    Shared by ALHVR and the region study: the forward passes, the supervised term
    ``CE + Dice`` on each network's clean prediction, and the regions computed from the
    perturbed predictions of the unlabeled images. Network A is the evaluated one (the
    public code reports ``model1``).
    """

    term_suffixes = ("_a", "_b")

    def supervised_loss(self, logits: Tensor, label: Tensor, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """CE and Dice; ``dice_form: alhvr_code`` takes the Dice of ALHVR's public code
        (:func:`~semiseg.methods.common.losses.alhvr_code_dice_loss`, without the factor 2)."""
        if self.params["dice_form"] != "alhvr_code":
            return super().supervised_loss(logits, label, weight)
        if weight is not None:
            raise ValueError(f"{self.algorithm}: dice_form alhvr_code takes no per-pixel weight")
        label = label.long()
        dice = alhvr_code_dice_loss(torch.softmax(logits, dim=1), one_hot(label, logits.shape[1]))
        return DiceCE(F.cross_entropy(logits, label), dice)

    def branches(self, x: Tensor, *, perturbed_grad: bool = True) -> list[Branch]:
        out = []
        for net in self.models:
            features = net.encode(x)
            logits, maps = self._decode(net, features)
            with torch.set_grad_enabled(perturbed_grad and torch.is_grad_enabled()):
                perturbed = perturb_features(features, self.params["perturbation"])
                logits_p, maps_p = self._decode(net, perturbed)
            out.append(Branch(logits, logits_p, maps, maps_p))
        return out

    def prototype_source(self) -> tuple[str, int]:
        """Which feature map each branch keeps: ``("decoder_stage", stage)`` (that decoder
        stage; -1 the penultimate map, the default) or ``("up2_projection", _)`` (the 1x1
        projection inside the second up block, 1/8 resolution, ALHVR's public code)."""
        return "decoder_stage", -1

    def _decode(self, net, features) -> tuple[Tensor, Tensor]:
        """Logits and the feature map of :meth:`prototype_source`."""
        source, stage = self.prototype_source()
        if source == "up2_projection":
            projections: list = []
            logits, _ = net.decode_stages(features, projections)
            if len(projections) < 2:
                raise ValueError("prototype_features up2_projection needs a U-Net with an interpolating decoder")
            return logits, projections[1]
        logits, stages = net.decode_stages(features)
        if not -len(stages) <= stage < len(stages):
            raise ValueError(f"prototype_stage {stage} out of range for {len(stages)} decoder stages")
        return logits, stages[stage]

    def branch_supervised_terms(self, branches: list[Branch], label: Tensor) -> dict[str, Tensor]:
        """:meth:`TwoNetwork.supervised_terms` on each branch's clean prediction."""
        return self.supervised_terms([br.logits for br in branches], label)

    def split(self, probs_p: list[Tensor]) -> Regions:
        return split_regions(probs_p[0].amax(dim=1), probs_p[1].amax(dim=1), float(self.params["beta"]))

    def weight(self, step: Step) -> float:
        """λ(t) = lambda_max · exp(−5(1 − t/t_ramp)²), t_ramp = ``rampup`` × the iterations
        (a staircase of ``rampup_block`` iterations, :meth:`Method.ramp_weight`)."""
        return self.ramp_weight(step, "lambda_max", "rampup")
