"""CAML (Gao et al., "Correlation-Aware Mutual Learning for Semi-supervised Medical Image
Segmentation", MICCAI 2023, arXiv:2307.06312).

Reference code: https://github.com/Herschel555/CAML at commit
b63547927eef5b7ae47bd62452e28517d13545e4 (``code/train_caml.py``, ``code/networks/VNet.py``,
``code/utils/correlation.py``, ``code/utils/feature_memory.py``, ``code/test_3d.py``). The
paper and the code cover the Left Atrium only; Pancreas-CT and BraTS take the LA script's
settings (see config/methods/caml.yaml).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semiseg.methods.base import Losses, Method, StepContext, register, two_stream
from semiseg.methods.common.losses import binary_dice_loss
from semiseg.methods.common.pseudo import mutual_consistency
from semiseg.nets.caml import CamlNet

__all__ = ["Caml", "LabeledMemory", "correlation_matrix", "occ_loss"]


def correlation_matrix(features: Tensor, confidence: Tensor, label: Tensor, memory: list[Tensor | None],
                       num_classes: int, temperature: float, top_k: int) -> Tensor | None:
    """The omni-correlation matrix of unlabeled voxels with the labeled memory (the code's
    ``cal_correlation_matrix``), or None where no class gives a row.

    For each class ``c``: the ``top_k`` voxels predicted ``c`` with the highest ``confidence``;
    their dot products with every memory class's features side by side (the classes with more
    than one feature, when the class has more than one voxel), ``softmax(· / temperature)`` per
    voxel. The classes' rows are stacked in class order.
    """
    rows = []
    for c in range(num_classes):
        chosen = label == c
        order = torch.argsort(confidence[chosen], descending=True)[:top_k]
        class_features = features[chosen][order]
        bank = [m for m in memory if m is not None and m.shape[0] > 1] if class_features.shape[0] > 1 else []
        if bank:
            logits = class_features @ torch.cat(bank).to(class_features.dtype).T
            rows.append(torch.softmax(logits / temperature, dim=1))
    return torch.cat(rows) if rows else None


def occ_loss(target: Tensor, prediction: Tensor) -> Tensor:
    """``−Σ target · log(prediction + 1e-8) / rows``: the omni-correlation consistency, a
    cross-entropy per row summed and divided by the rows (the auxiliary network's matrix is the
    target, the vanilla one's the prediction; neither is detached, as in the code). Worked
    example, one row: target ``[0.5, 0.5]``, prediction ``[0.25, 0.75]`` gives
    ``−0.5 (ln 0.25 + ln 0.75) = 0.836988`` (up to the 1e-8)."""
    return (-target * torch.log(prediction + 1e-8)).sum() / target.shape[0]


class LabeledMemory(nn.Module):
    """The projected features of correctly predicted labeled voxels, per labeled patch and class.

    ``slots`` patches are kept, first in, first out; of each patch and class a uniform random
    subset of at most ``capacity`` features is stored with the class's true voxel count, so that
    :meth:`sample` draws a uniform subset of the union of every stored patch's voxels (as the code,
    which stores them all) while the memory stays a fixed size. The buffers are saved in
    checkpoints.
    """

    def __init__(self, slots: int, num_classes: int, capacity: int, dim: int):
        super().__init__()
        self.register_buffer("features", torch.zeros(slots, num_classes, capacity, dim))
        self.register_buffer("counts", torch.zeros(slots, num_classes, dtype=torch.long))
        self.register_buffer("cursor", torch.zeros((), dtype=torch.long))

    def write(self, features: Tensor, label: Tensor, generator: torch.Generator) -> None:
        """Replace the oldest patch by ``features`` ``(P, dim)`` of voxels labeled ``label`` ``(P,)``."""
        slots, num_classes, capacity, _ = self.features.shape
        slot = int(self.cursor) % slots
        self.features[slot].zero_()
        for c in range(num_classes):
            rows = torch.nonzero(label == c).flatten()
            keep = rows[torch.randperm(rows.numel(), generator=generator)[:capacity].to(rows.device)]
            self.features[slot, c, : keep.numel()] = features[keep].detach().to(self.features.dtype)
            self.counts[slot, c] = rows.numel()
        self.cursor += 1

    def sample(self, per_class: int, generator: torch.Generator) -> list[Tensor | None]:
        """``per_class`` features of each class drawn uniformly without replacement from every
        stored voxel of that class (None where fewer are stored, as the code)."""
        capacity = self.features.shape[2]
        out: list[Tensor | None] = []
        for c, counts in enumerate(self.counts.T.tolist()):
            total = sum(counts)
            if total < per_class:
                out.append(None)
                continue
            # a uniform subset of the union: the first `per_class` distinct of iid uniform draws
            picked: set[int] = set()
            while len(picked) < per_class:
                picked.update(torch.randint(total, (per_class - len(picked),), generator=generator).tolist())
            bounds = torch.tensor(counts).cumsum(0)
            slot_of = torch.bucketize(torch.tensor(sorted(picked)), bounds, right=True)
            parts = []
            for slot, k in enumerate(torch.bincount(slot_of, minlength=len(counts)).tolist()):
                if k:
                    rows = torch.randperm(min(counts[slot], capacity), generator=generator)[:k]
                    parts.append(self.features[slot, c, rows.to(self.features.device)])
            out.append(torch.cat(parts))
        return out


@register("caml")
class Caml(Method):
    """Two V-Nets learning from each other, one with cross-sample attention, regularised by the
    consistency of their correlations with a memory of labeled features.

    Per iteration, ``p_v``, ``p_a`` the softmax of the vanilla and the auxiliary network
    (:class:`~semiseg.nets.caml.CamlNet`) on the labeled and unlabeled images in one batch:
    ``L = supervised_weight · Σ_k Dice_k + λ_c(t) · L_c + λ_o(t) · L_o`` with

    - ``Dice_k``: :func:`binary_dice_loss` of each network's foreground probability on the labeled
      images (the mean over the foreground classes beyond two classes); the code has no CE;
    - ``L_c``: :func:`mutual_consistency` of ``p_v``, ``p_a`` with ``sharpen_temperature``, over
      the whole batch;
    - ``L_o``: the omni-correlation consistency (OCC). The labeled voxels both networks predict
      correctly are projected by both projection heads (in eval mode, without gradient), averaged,
      and written to the :class:`LabeledMemory` (one slot per labeled patch of the step), from
      which ``memory_per_class`` features per class are drawn. The unlabeled voxels where the two
      networks agree, each network's embedding through its projection and prediction heads, give
      two :func:`correlation_matrix` (labels and confidence from the vanilla network,
      ``top_k`` per class, ``correlation_temperature``); ``L_o`` is :func:`occ_loss` of the
      auxiliary's against the vanilla's, 0 where either has no row;
    - ``λ_c(t) = consistency · r(t)``, ``λ_o(t) = occ_weight · r(t)``, ``r`` the sigmoid ramp over
      ``consistency_rampup`` of training in blocks of ``rampup_block`` iterations (the code's
      ``sigmoid_rampup(iter_num // 150, rampup)``, which counts from 1: a block boundary falls
      one iteration later there).

    The code evaluates the vanilla network (the infer stage runs ``CamlNet.forward``).

    Where this differs from the code, beside the paper's formulas (which the code matches):

    - the memory: the code keys its slots by the labeled volume's dataset index and keeps every
      correctly predicted voxel (up to 10^6 × 32 floats per volume); the engine does not give a
      method the batch's indices, so the memory keeps the last ``memory_slots`` labeled patches
      (the catalogue sets it to the labeled count: one patch per volume as in the code once the
      labeled stream has gone round, but a volume may hold two slots in between), each class of
      a patch as a uniform subset of at most ``slot_capacity`` features and its voxel count; the
      draw is uniform over the union, as the code's;
    - random draws come from the step's generator, not Python's ``random``.

    The code's bug, not reproduced: it projects the auxiliary network's labeled embedding
    ``(B, C, H, W, D)`` for the memory with ``.view(-1, C)`` without first moving the channels
    last (it does so for the vanilla one), so half of each memory feature mixes channels and
    voxels. Here both are projected per voxel (tests/test_caml.py compares one step with the
    script, and tests/test_parity_caml.py replays 18 iterations of it, that line corrected).

    Parameters (workflow/schemas/params/caml.schema.yaml): ``supervised_weight``,
    ``consistency``, ``occ_weight``, ``consistency_rampup``, ``rampup_block``,
    ``sharpen_temperature``, ``correlation_temperature``, ``memory_per_class``, ``top_k``,
    ``feat_dim``, ``memory_slots``, ``slot_capacity``.
    """

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        self.models.append(self.inference_network(spec, net_factory))
        p = self.params
        if int(p["slot_capacity"]) < int(p["memory_per_class"]):
            raise ValueError(f"caml: params.slot_capacity ({p['slot_capacity']}) must be at least "
                             f"params.memory_per_class ({p['memory_per_class']})")
        self.memory = LabeledMemory(int(p["memory_slots"]), self.num_classes, int(p["slot_capacity"]),
                                    int(p["feat_dim"]))

    @classmethod
    def inference_network(cls, spec, net_factory) -> nn.Module:
        return CamlNet(net_factory(), net_factory(), int(spec["method"]["params"]["feat_dim"]))

    def supervised_terms(self, probs: list[Tensor], label: Tensor) -> dict[str, Tensor]:
        """``dice_v``, ``dice_a``: each network's :func:`binary_dice_loss` per foreground class, averaged."""
        n = label.shape[0]
        return {f"dice_{name}": torch.stack([binary_dice_loss(p[:n, c], label == c)
                                             for c in range(1, p.shape[1])]).mean()
                for name, p in zip("va", probs)}

    def remember(self, embeddings: list[Tensor], probs: list[Tensor], label: Tensor, ctx: StepContext) -> None:
        """Write each labeled patch's correctly predicted voxels, projected, to the memory."""
        net = self.models[0]
        correct = torch.stack([p[: label.shape[0]].argmax(dim=1) == label for p in probs]).all(dim=0)
        heads = [h.projection for h in net.heads]
        modes = [h.training for h in heads]
        with torch.no_grad():
            for h in heads:
                h.eval()
            for i in range(label.shape[0]):
                voxels = [e[i].movedim(0, -1)[correct[i]] for e in embeddings]
                projected = sum(h(v) for h, v in zip(heads, voxels)) / len(heads)
                self.memory.write(projected, label[i][correct[i]], ctx.generator)
            for h, mode in zip(heads, modes):
                h.train(mode)

    def omni_correlation(self, embeddings: list[Tensor], probs: list[Tensor], n_labeled: int,
                         ctx: StepContext) -> Tensor:
        """``L_o`` on the unlabeled voxels the two networks agree on (0 where it has no rows)."""
        net, p = self.models[0], self.params
        confidence, predicted = probs[0][n_labeled:].max(dim=1)
        agree = predicted == probs[1][n_labeled:].argmax(dim=1)
        zero = embeddings[0].sum() * 0.0
        if int(agree.sum()) < 2:  # batch norm in the heads needs two rows
            return zero
        memory = self.memory.sample(int(p["memory_per_class"]), ctx.generator)
        matrices = []
        for e, h in zip(embeddings, net.heads):
            features = h.prediction(h.projection(e[n_labeled:].movedim(1, -1)[agree]))
            matrices.append(correlation_matrix(features, confidence[agree], predicted[agree], memory,
                                               self.num_classes, float(p["correlation_temperature"]),
                                               int(p["top_k"])))
        if any(m is None for m in matrices):
            return zero
        return occ_loss(matrices[1], matrices[0])

    def training_step(self, ctx: StepContext) -> Losses:
        s, p = two_stream(ctx.batch), self.params
        outputs = self.models[0].branches(s.images)
        probs = [torch.softmax(logits, dim=1) for logits, _ in outputs]
        embeddings = [e for _, e in outputs]
        terms = self.supervised_terms(probs, s.label)
        terms["consistency"] = mutual_consistency(probs, float(p["sharpen_temperature"]))
        self.remember(embeddings, probs, s.label, ctx)
        terms["occ"] = self.omni_correlation(embeddings, probs, s.n_labeled, ctx)
        lambda_c = self.ramp_weight(ctx.step, "consistency", "consistency_rampup")
        lambda_o = self.ramp_weight(ctx.step, "occ_weight", "consistency_rampup")
        total = (float(p["supervised_weight"]) * (terms["dice_v"] + terms["dice_a"])
                 + lambda_c * terms["consistency"] + lambda_o * terms["occ"])
        return Losses(total=total, terms=terms, stats={"consistency_weight": lambda_c, "occ_weight": lambda_o})
