"""SS-Net (Wu et al., "Exploring Smoothness and Class-Separation for Semi-supervised Medical
Image Segmentation", MICCAI 2022, arXiv:2203.01324).

Reference code: https://github.com/ycwu1997/SS-Net at commit
c0a8bf6e535ad1166ff8f3f871dc5cb9273e4573 (``code/train_ss_2d.py`` for ACDC, ``code/train_ss_3d.py``
for LA, ``code/utils/losses.py`` ``VAT2d`` / ``VAT3d``, ``code/utils/feature_memory.py``,
``code/utils/contrastive_losses.py``, the heads of ``code/networks/unet.py`` / ``VNet.py``).
The loss terms are compared with the code's functions in ``tests/test_ss_net.py``, a training
trajectory of the 2D script in ``tests/test_parity_ss_net.py`` (docs/fidelity.md, "SS-Net").
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semiseg.methods.base import Losses, Method, StepContext, register, two_stream
from semiseg.methods.common.losses import binary_dice_loss, one_hot, soft_dice_loss

__all__ = ["DICE_KINDS", "SSNet", "SeparationHeads", "frozen_norm_statistics",
           "separation_loss", "smoothness_loss", "unit_directions", "update_memory"]

#: The Dice losses of the two scripts (``params.dice``): ``multiclass`` (2D), ``binary`` (3D).
DICE_KINDS = ("multiclass", "binary")

# the smoothing of the 2D script's DiceLoss / softDiceLoss (the 3D script's Binary_dice_loss is
# common.losses.binary_dice_loss)
_MULTICLASS_SMOOTH = 1e-10


def supervised_dice(probs: Tensor, label: Tensor, kind: str) -> Tensor:
    """The supervised term, the only one on the labels: ``multiclass`` is SSL4MIS's Dice over all
    classes, background included (squared denominator, ``s = 1e-10``); ``binary`` the
    :func:`binary_dice_loss` of the foreground channel against ``label == 1``."""
    if kind == "multiclass":
        return soft_dice_loss(probs, one_hot(label, probs.shape[1]), smooth=_MULTICLASS_SMOOTH)
    return binary_dice_loss(probs[:, 1], label == 1)


def smoothness_dice(probs_hat: Tensor, probs: Tensor, kind: str) -> Tensor:
    """The distance of a perturbed prediction from the clean one: ``multiclass`` the soft Dice
    over classes (2D ``softDiceLoss``), ``binary`` :func:`binary_dice_loss` over every channel
    at once (3D ``Binary_dice_loss`` of the two softmax maps)."""
    if kind == "multiclass":
        return soft_dice_loss(probs_hat, probs, smooth=_MULTICLASS_SMOOTH)
    return binary_dice_loss(probs_hat, probs)


def unit_directions(d: Tensor) -> Tensor:
    """Each sample of ``d`` divided by its L2 norm plus 1e-8 (the code's ``_l2_normalize``).
    Worked example: a sample ``[3, 4]`` becomes ``[0.6, 0.8]`` (up to the 1e-8)."""
    norms = d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1)))
    return d / (norms + 1e-8)


@contextmanager
def frozen_norm_statistics(net: nn.Module):
    """Batch norms keep normalising by the batch's statistics but stop updating their running
    ones (the code's ``_disable_tracking_bn_stats``), for the perturbed passes."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.track_running_stats for m in norms]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, s in zip(norms, saved):
            m.track_running_stats = s


def smoothness_loss(net: nn.Module, x: Tensor, target: Tensor, direction: Tensor, *, xi: float,
                    epsilon: float, iterations: int, kind: str) -> Tensor:
    """L_lds, the virtual adversarial smoothness term (Miyato et al.'s VAT with a Dice distance).

    ``target``: the clean softmax (no gradient); ``direction``: the initial random direction
    (the code draws ``U(−0.5, 0.5)``), made a unit vector per sample. ``iterations`` power steps
    replace it by the unit gradient of ``dist(softmax(net(x + xi·d)), target)`` w.r.t. ``d``;
    the loss is ``dist(softmax(net(x + epsilon·d)), target)``, a gradient for the network only.
    Every pass runs with the batch norms' running statistics frozen.
    """
    d = unit_directions(direction)
    with frozen_norm_statistics(net):
        for _ in range(iterations):
            d = d.detach().requires_grad_(True)
            distance = smoothness_dice(torch.softmax(net(x + xi * d), dim=1), target, kind)
            (grad,) = torch.autograd.grad(distance, d)
            d = unit_directions(grad)
        return smoothness_dice(torch.softmax(net(x + epsilon * d.detach()), dim=1), target, kind)


def _uniform_direction(shape: torch.Size, generator: torch.Generator) -> Tensor:
    """The initial direction's draw, ``U(0, 1)`` of ``shape`` on the host (the parity replay
    substitutes the recorded stream here)."""
    return torch.rand(shape, generator=generator)


def _mlp(in_dim: int, hidden: int, out_dim: int, activation: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), activation, nn.Linear(hidden, out_dim))


class SeparationHeads(nn.Module):
    """SS-Net's class-separation modules beside the segmentation network, and its feature memory.

    ``projection`` (``in_dim -> dim``) and ``prediction`` (``dim -> dim``) are
    ``Linear-BN-ReLU-Linear``; per class a ``selector`` and a ``memory_selector``
    (``Linear-BN-LeakyReLU(0.2)-Linear`` to one score) weigh the pixel features and the memory's
    entries. The memory (buffers, saved in checkpoints): ``memory[c, :memory_count[c]]``, the
    projected features of class ``c`` kept by the last step in which ``c`` was found.
    """

    def __init__(self, in_dim: int, dim: int, num_classes: int, memory_size: int):
        super().__init__()
        self.projection = _mlp(in_dim, dim, dim, nn.ReLU(inplace=True))
        self.prediction = _mlp(dim, dim, dim, nn.ReLU(inplace=True))
        self.selectors = nn.ModuleList(_mlp(dim, dim, 1, nn.LeakyReLU(0.2, inplace=True)) for _ in range(num_classes))
        self.memory_selectors = nn.ModuleList(_mlp(dim, dim, 1, nn.LeakyReLU(0.2, inplace=True))
                                              for _ in range(num_classes))
        self.register_buffer("memory", torch.zeros(num_classes, memory_size, dim))
        self.register_buffer("memory_count", torch.zeros(num_classes, dtype=torch.long))

    def project(self, features: Tensor) -> Tensor:
        """The prediction head's output on the projection of ``features`` ``(N, in_dim)``."""
        return self.prediction(self.projection(features))


@torch.no_grad()
def update_memory(heads: SeparationHeads, features: Tensor, labels: Tensor) -> None:
    """Replace the memory of every class found in ``labels`` ``(N,)`` by its ``features``
    ``(N, dim)`` (projected), at most ``memory_size`` of them: when more, those its selector
    scores highest. A class not found keeps its memory of an earlier step."""
    size = heads.memory.shape[1]
    for c in range(heads.memory.shape[0]):
        found = features[labels == c]
        n = found.shape[0]
        if n == 0:
            continue
        if n > size:
            scores = torch.sigmoid(heads.selectors[c](found))[:, 0]
            found = found[torch.sort(scores, descending=True).indices[:size]]
            n = size
        heads.memory[c, :n] = found.to(heads.memory.dtype)
        heads.memory_count[c] = n


def _rescaled(weights: Tensor) -> Tensor:
    """Sigmoid scores rescaled to mean 1: ``n · w / Σ w``."""
    weights = torch.sigmoid(weights)
    return weights * (weights.shape[0] / weights.sum())


def separation_loss(heads: SeparationHeads, features: Tensor, labels: Tensor) -> Tensor:
    """L_cs of one stream: per class ``c`` with more than one feature and memory entry, the mean
    over (feature, entry) pairs of the weighted cosine distance ``(1 − cos(f_i, m_j))·a_i·b_j``;
    the sum over classes divided by the number of classes.

    ``features``: the prediction head's ``(N, dim)``; ``labels`` ``(N,)``. ``a = sigmoid(
    selector_c(f))`` (on detached features) and ``b = sigmoid(memory_selector_c(m̂))`` (on the
    L2-normalised entries), each rescaled to mean 1 over its axis. The memory is constant.
    """
    num_classes = heads.memory.shape[0]
    loss = features.new_zeros(())
    for c in range(num_classes):
        count = int(heads.memory_count[c])
        f = features[labels == c]
        if count < 2 or f.shape[0] < 2:
            continue
        memory = F.normalize(heads.memory[c, :count].to(f.dtype), dim=1)
        distances = 1.0 - F.normalize(f, dim=1) @ memory.T
        a = _rescaled(heads.selectors[c](f.detach()))
        b = _rescaled(heads.memory_selectors[c](memory))
        loss = loss + (distances * a * b.T).mean()
    return loss / num_classes


def _flat(embedding: Tensor) -> Tensor:
    """``(B, C, *spatial)`` -> ``(B·spatial, C)``, pixels in the labels' order."""
    return embedding.movedim(1, -1).reshape(-1, embedding.shape[1])


def _embedding_channels(net: nn.Module) -> int:
    """Channels of the map the output convolution reads: the U-Net's first level, the V-Net's filters."""
    channels = getattr(net, "channels", None)
    return int(channels[0]) if channels is not None else int(net.n_filters)


@register("ss_net")
class SSNet(Method):
    """One network trained with a Dice loss on the labels, a smoothness term (virtual adversarial
    perturbation of the whole batch) and a class-separation term (pixel features pulled to a
    per-class memory of correctly predicted labeled features), as in the public code:

    ``L = Dice(p_l, y_l) + λ(t)·(L_lds + separation_weight·(L_cs(labeled) + L_cs(unlabeled)))``

    with ``λ(t) = consistency · exp(−5(1 − t)²)`` ramped over ``consistency_rampup`` of training
    in blocks of ``rampup_block`` iterations (both scripts: ``sigmoid_rampup(iter // 150, R)``;
    ACDC ``R = 200`` blocks of 30k iterations, λ 0.1; LA ``R = 40`` of 15k, i.e. 0.4, λ 1). Per step:

    1. The network's logits and penultimate map (``decode``) for the whole batch; the
       supervised term is the Dice alone (``dice``: the 2D script's multi-class Dice or the 3D
       script's foreground binary Dice; neither script adds the CE it logs).
    2. The memory (:func:`update_memory`): the labeled pixels predicted correctly and not as
       background, projected with the projection head in eval mode, without gradient. So the
       background never has a memory and never adds to L_cs (it still counts in the divisor).
    3. L_cs (:func:`separation_loss`) on every labeled pixel with its label and every unlabeled
       pixel with its argmax pseudo-label, through the projection and prediction heads.
    4. L_lds (:func:`smoothness_loss`): the target is a separate no-gradient forward of the
       batch (its own dropout; it updates the batch norms' running statistics, as the code's
       does); the initial direction is ``U(−0.5, 0.5)`` from the step's generator; ``xi``
       (10 in the code), ``epsilon`` (the code's ``magnitude``: 6 on ACDC, 10 on LA),
       ``power_iterations`` (1).

    The evaluated network is the segmentation network (both test scripts read its first output).

    Not reproduced, bugs of the code (its ``feature_memory.py`` and ``contrastive_losses.py``,
    taken from Alonso et al.'s SemiSeg-Contrastive):

    - the memory keeps the ``memory_size`` features its selector scores *lowest* (ascending
      sort; its own comment says the highest): here the highest;
    - the memory-side weights are rescaled along an axis of length one after the transpose,
      which makes every weight exactly 1 (the memory selectors learn nothing): here they are
      rescaled to mean 1 over the memory's entries, as the feature-side weights are.

    Smaller differences, no switch: the 3D script ramps with the 1-based iteration (its weight
    moves one iteration earlier at each 150-iteration block than here); the 2D script's VAT
    Dice is hard-coded to four classes (ACDC's), here the dataset's.

    Pancreas-CT and BraTS have no script: the LA script's settings (the catalogue entry).

    Parameters (config ``params``, workflow/schemas/params/ss_net.schema.yaml):
    ``consistency``, ``consistency_rampup``, ``rampup_block``, ``separation_weight``, ``xi``,
    ``epsilon``, ``power_iterations``, ``memory_size``, ``feature_dim``, ``dice``.
    """

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        if self.params["dice"] not in DICE_KINDS:
            raise ValueError(f"ss_net: params.dice must be one of {DICE_KINDS}, got {self.params['dice']!r}")
        if self.params["dice"] == "binary" and self.num_classes != 2:
            raise ValueError(f"ss_net: params.dice 'binary' needs a two-class dataset, got {self.num_classes} classes")
        net = net_factory()
        self.models.append(net)
        self.models.append(SeparationHeads(_embedding_channels(net), int(self.params["feature_dim"]),
                                           self.num_classes, int(self.params["memory_size"])))

    def _separation_terms(self, embedding: Tensor, logits: Tensor, label: Tensor, n_l: int) -> tuple[Tensor, Tensor]:
        """L_cs of the labeled and of the unlabeled stream, after the memory's update."""
        heads = self.models[1]
        predicted = logits.argmax(dim=1)
        labeled = _flat(embedding[:n_l])
        correct = ((predicted[:n_l] == label) & (predicted[:n_l] > 0)).reshape(-1)
        with torch.no_grad():
            was_training = heads.projection.training
            heads.projection.eval()
            projected = heads.projection(labeled[correct])
            heads.projection.train(was_training)
        update_memory(heads, projected, label.reshape(-1)[correct])
        sep_l = separation_loss(heads, heads.project(labeled), label.reshape(-1))
        sep_u = separation_loss(heads, heads.project(_flat(embedding[n_l:])), predicted[n_l:].reshape(-1))
        return sep_l, sep_u

    def training_step(self, ctx: StepContext) -> Losses:
        net, p = self.models[0], self.params
        batch = two_stream(ctx.batch)
        x, label = batch.images, batch.label.long()
        logits, embedding = net.decode(net.encode(x))
        dice = supervised_dice(torch.softmax(logits[:batch.n_labeled], dim=1), label, p["dice"])
        sep_l, sep_u = self._separation_terms(embedding, logits, label, batch.n_labeled)
        with torch.no_grad():
            target = torch.softmax(net(x), dim=1)
        direction = _uniform_direction(x.shape, ctx.generator).sub(0.5).to(x.device, x.dtype)
        lds = smoothness_loss(net, x, target, direction, xi=float(p["xi"]), epsilon=float(p["epsilon"]),
                              iterations=int(p["power_iterations"]), kind=p["dice"])
        weight = self.ramp_weight(ctx.step)
        ctx.stats["consistency_weight"] = weight
        total = dice + weight * (lds + float(p["separation_weight"]) * (sep_l + sep_u))
        return Losses(total=total, terms={"dice": dice, "lds": lds, "sep_l": sep_l, "sep_u": sep_u},
                      stats=ctx.stats)
