"""Cross pseudo supervision (Chen et al., "Semi-Supervised Semantic Segmentation with Cross Pseudo
Supervision", CVPR 2021, arXiv:2106.01226)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from semiseg.methods.base import Losses, Method, Step, register
from semiseg.nets import init_weights

__all__ = ["CrossPseudoSupervision", "cross_pseudo_loss"]


def cross_pseudo_loss(logits: Tensor, other_logits: Tensor) -> Tensor:
    """Mean CE of ``logits`` against the hard labels ``argmax(other_logits)`` (detached).

    Only ``logits`` receives a gradient: the other network's prediction is a fixed target.
    """
    return F.cross_entropy(logits, other_logits.detach().argmax(dim=1))


@register("cps")
class CrossPseudoSupervision(Method):
    """Two networks, each supervised by the labels and by the other's hard pseudo-labels.

    Per iteration, for each network ``k`` of the two (``self.models``, a list the step loops
    over) and ``k'`` the other one:
    ``L_k = 0.5·(CE + Dice)(f_k(x_l), y_l) + λ(t)·CE(f_k(x), argmax f_k'(x))`` with
    ``λ(t) = consistency·exp(-5(1 − t)²)`` ramped over ``consistency_rampup`` of training; the
    optimiser minimises ``L_1 + L_2``. The two networks are independently initialised:
    ``inits`` names each one's scheme (SSL4MIS: Kaiming-normal for the first, Xavier-normal for
    the second; ``default`` keeps PyTorch's own).

    Choices where the paper or the code leave room:

    - ``x`` is the labeled and the unlabeled images when ``on_labeled`` is true (the paper's
      ``L_cps = L_cps^l + L_cps^u``, and its public TorchSemiSeg code; the schema default);
      SSL4MIS's ACDC/BraTS scripts use the unlabeled images only (``on_labeled: false``, what
      the ``cps`` catalogue entry runs). With ``on_labeled`` the cross term is one mean over all
      pixels of the batch, as TorchSemiSeg computes it on the concatenated predictions.
    - λ = 0.1 ramped over the whole run is SSL4MIS's ACDC setting (the paper's 1.5 / 6 are for
      natural images); the ramp is smooth per iteration where SSL4MIS steps every 150.
    - Both networks are trained by the engine's one SGD optimiser with the same settings, which
      is what SSL4MIS's two identical optimisers amount to.
    - Inference uses the first network (``eval_network``), the "model1" SSL4MIS reports.

    Parameters (workflow/schemas/params/cps.schema.yaml): ``consistency``,
    ``consistency_rampup``, ``on_labeled``, ``inits``.
    """

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        for scheme in self.params["inits"]:
            net = net_factory()
            self.models.append(net if scheme == "default" else init_weights(net, scheme))
        if len(self.models) != 2:
            raise ValueError(f"cps trains two networks; params.inits names {len(self.models)}")

    def training_step(self, batch, step: Step) -> Losses:
        xl, yl, xu = batch["labeled_image"], batch["labeled_label"], batch["unlabeled_image"]
        nl = xl.shape[0]
        x = torch.cat([xl, xu])
        logits = [net(x) for net in self.models]
        first = 0 if self.params["on_labeled"] else nl
        weight = self.params["consistency"] * step.rampup(self.params["consistency_rampup"])
        total = torch.zeros((), device=x.device)
        terms = {}
        for k, (own, other) in enumerate(zip(logits, reversed(logits)), start=1):
            ce, dice = self.supervised_loss(own[:nl], yl)
            cps = cross_pseudo_loss(own[first:], other[first:])
            total = total + 0.5 * (ce + dice) + weight * cps
            terms.update({f"ce{k}": ce, f"dice{k}": dice, f"cps{k}": cps})
        return Losses(total=total, terms=terms, stats={"consistency_weight": weight})
