"""Cross pseudo supervision (Chen et al., "Semi-Supervised Semantic Segmentation with Cross Pseudo
Supervision", CVPR 2021, arXiv:2106.01226)."""

from __future__ import annotations

from torch import Tensor

from semiseg.methods.base import Losses, StepContext, register, two_stream
from semiseg.methods.common.dual_branch import TwoNetwork, cross_pseudo_map

__all__ = ["CrossPseudoSupervision", "cross_pseudo_loss"]


def cross_pseudo_loss(logits: Tensor, other_logits: Tensor) -> Tensor:
    """Mean CE of ``logits`` against the hard labels ``argmax(other_logits)`` (detached).

    Only ``logits`` receives a gradient: the other network's prediction is a fixed target.
    """
    return cross_pseudo_map(logits, other_logits).mean()


@register("cps")
class CrossPseudoSupervision(TwoNetwork):
    """Two networks, each supervised by the labels and by the other's hard pseudo-labels.

    Per iteration, for each network ``k`` of the two (``self.models``, a list the step loops
    over) and ``k'`` the other one:
    ``L_k = 0.5·(CE + Dice)(f_k(x_l), y_l) + λ(t)·CE(f_k(x), argmax f_k'(x))`` with
    ``λ(t) = consistency·exp(-5(1 − t)²)`` ramped over ``consistency_rampup`` of training; the
    optimiser minimises ``L_1 + L_2``. The two networks are independently initialised:
    ``inits`` names each one's scheme (``default`` keeps PyTorch's own, which is what SSL4MIS's
    2D script uses; its 3D script and the paper's TorchSemiSeg code draw Kaiming-normal for the
    first and Xavier-normal for the second, the schema default).

    Choices where the paper or the code leave room:

    - ``x`` is the labeled and the unlabeled images when ``on_labeled`` is true (the paper's
      ``L_cps = L_cps^l + L_cps^u``, and its public TorchSemiSeg code; the schema default);
      SSL4MIS's ACDC/BraTS scripts use the unlabeled images only (``on_labeled: false``, what
      the ``cps`` catalogue entry runs). With ``on_labeled`` the cross term is one mean over all
      pixels of the batch, as TorchSemiSeg computes it on the concatenated predictions.
    - λ = 0.1 ramped over the whole run is SSL4MIS's ACDC setting (the paper's 1.5 / 6 are for
      natural images); ``rampup_block: 150`` reproduces SSL4MIS's staircase (the catalogue entry).
    - Both networks are trained by the engine's one SGD optimiser with the same settings, which
      is what SSL4MIS's two identical optimisers amount to.
    - Inference uses the first network (``eval_network``), the "model1" SSL4MIS reports.

    Parameters (workflow/schemas/params/cps.schema.yaml): ``consistency``,
    ``consistency_rampup``, ``rampup_block``, ``on_labeled``, ``inits``.
    """

    def network_inits(self) -> list[str]:
        return list(self.params["inits"])

    def training_step(self, ctx: StepContext) -> Losses:
        s = two_stream(ctx.batch)
        logits = [net(s.images) for net in self.models]
        first = 0 if self.params["on_labeled"] else s.n_labeled
        weight = self.ramp_weight(ctx.step)
        terms = self.supervised_terms(logits, s.label)
        cross = self.cross_maps([out[first:] for out in logits])
        total = 0.5 * sum(terms.values())
        for suffix, loss_map in zip(self.term_suffixes, cross):
            terms[f"cps{suffix}"] = loss_map.mean()
            total = total + weight * terms[f"cps{suffix}"]
        return Losses(total=total, terms=terms, stats={"consistency_weight": weight})
