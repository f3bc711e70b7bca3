"""CRLN's rectification mechanisms (Wang et al., arXiv:2502.11456, Sec. 3.2 and Sec. 4.4.6 /
Table 7): how the relationship map ``M(x)`` of the DIM corrects the logits ``z``.

``learnable_v3`` (r-learnable-v3, the paper's CRLN, Eq. 8): ``z + (1 − a)·M(x)`` with one
learnable scalar ``a`` (:func:`rectify`).

``fixed_v1`` (r-fixed-v1, Eq. 17): the text says it "replaces the low-confidence original
pseudo-labels of the unlabelled samples with the holistic relationship map if the prediction
confidence of M(x) exceeds that of the original pseudo-labels"; Eq. 17 itself is lost in the
extraction. Chosen here (:func:`rectify_fixed`): per voxel, the confidence of a map is its
largest class probability (softmax over classes, ``M`` read as logits, as its own supervised
loss reads it), and the rectified logits are ``M`` where ``max softmax(M) > max softmax(z)``
(strictly), ``z`` elsewhere, so the pseudo-label and its confidence come from the more confident
of the two. Nothing is learned: there is no ``a`` and no loss of ``a``.

``learnable_v2`` (r-learnable-v2): the text says only that it "concatenates z and M(x), followed
by a convolution layer". Chosen here (:class:`ConcatRectifier`): the channel concatenation
``[z; M]`` ``(B, 2C, *s)`` through one ``1×1(×1)`` convolution ``2C → C`` with a bias, initialised
to ``[I | I]`` and 0, so that it starts as ``z + M`` (= r-learnable-v3 at its start, ``a = 0``).
It takes the place of ``a`` everywhere: it is trained by Eq. 16's loss (the supervised loss of
its output on the labeled images, the network's outputs detached) with ``a``'s own optimiser
settings, shared by student and teacher (not averaged by the EMA), and saved in the checkpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ConcatRectifier", "Rectified", "rectified", "rectify", "rectify_fixed"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}


def rectify(logits: Tensor, relation: Tensor, a: Tensor) -> Tensor:
    """r-learnable-v3: the rectified logits ``z + (1 − a)·M(x)`` (``a = 1`` leaves ``z`` as it is)."""
    return logits + (1.0 - a) * relation


def rectify_fixed(logits: Tensor, relation: Tensor) -> Tensor:
    """r-fixed-v1: per voxel, ``M`` where its largest class probability exceeds ``z``'s, else ``z``
    (both ``(B, C, *spatial)``)."""
    conf_z = torch.softmax(logits, dim=1).amax(dim=1, keepdim=True)
    conf_m = torch.softmax(relation, dim=1).amax(dim=1, keepdim=True)
    return torch.where(conf_m > conf_z, relation, logits)


def rectified(kind: str, logits: Tensor, relation: Tensor, a: Tensor | None = None,
              rectifier: nn.Module | None = None) -> Tensor:
    """The logits ``z`` rectified by the relationship map ``M`` as ``kind`` does it: with ``a``
    (learnable_v3), the ``rectifier`` (learnable_v2) or neither (fixed_v1)."""
    if kind == "fixed_v1":
        return rectify_fixed(logits, relation)
    if kind == "learnable_v2":
        return rectifier(logits, relation)
    return rectify(logits, relation, a)


class ConcatRectifier(nn.Module):
    """r-learnable-v2: ``conv1([z; M])``, ``2C → C`` channels, initialised to ``z + M``."""

    def __init__(self, num_classes: int, dims: int):
        super().__init__()
        self.conv = _CONV[dims](2 * num_classes, num_classes, 1)
        eye = torch.eye(num_classes)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat([eye, eye], dim=1).view(*self.conv.weight.shape))
            self.conv.bias.zero_()

    def forward(self, logits: Tensor, relation: Tensor) -> Tensor:
        return self.conv(torch.cat([logits, relation], dim=1))


class Rectified(nn.Module):
    """``forward(x)``: the rectified logits of a :class:`~semiseg.methods.crln.net.CRLNNet`
    ``net`` (the evaluated network of ``evaluate: teacher_rectified``). It holds ``net`` and what
    the ``kind`` of rectification learns (``a``, or the :class:`ConcatRectifier`), shared with the
    method, so its state dict is all that inference needs."""

    def __init__(self, net: nn.Module, kind: str, a: nn.Parameter, rectifier: nn.Module | None = None):
        super().__init__()
        self.net, self.kind = net, kind
        self.a = a if kind == "learnable_v3" else None
        self.rectifier = rectifier if kind == "learnable_v2" else None

    def forward(self, x: Tensor) -> Tensor:
        return rectified(self.kind, *self.net.logits_and_map(x), self.a, self.rectifier)
