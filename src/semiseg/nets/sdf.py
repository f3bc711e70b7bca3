"""The signed-distance family's networks: a segmentation network with a second head that regresses
the signed distance map (DTC, SASSNet), and SASSNet's discriminator.

:class:`SignedDistanceNet` follows DTC's and SASSNet's ``networks/vnet_sdf.py``: the base network's
decoder ends in two output convolutions side by side on the same penultimate map (after the
V-Net's dropout), one giving the segmentation logits, the other, through ``tanh``, one signed
distance map per foreground class. For two classes the segmentation head is the codes' single
sigmoid channel ``z``: the network returns the logits ``[0, z]``, whose softmax is
``[1 − σ(z), σ(z)]`` (the codes' probability, and their test's ``σ(z) > 0.5`` is the argmax). For
more classes it has one logit per class (softmax), as the base network.

:class:`Discriminator` is SASSNet's ``FC3DDiscriminator`` (its 2D form for 2D networks).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from semiseg.nets.unet import layer_types

__all__ = ["Discriminator", "SignedDistanceNet"]


class SignedDistanceNet(nn.Module):
    """``base`` (an encoder–decoder network) with a ``tanh`` head of ``num_classes − 1`` signed
    distance maps beside its segmentation head.

    ``heads(x)`` is ``(logits, sdf)``: logits ``(B, num_classes, *spatial)`` and the maps
    ``(B, num_classes − 1, *spatial)`` in ``(−1, 1)``; ``forward(x)`` the logits alone (what the
    codes' test scripts evaluate). Both heads copy the base's output convolution (its kernel: 1 for
    the V-Net, 3 for the U-Net); for two classes the segmentation head is replaced by a
    one-channel convolution (see the module docstring).
    """

    def __init__(self, base: nn.Module, num_classes: int):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a signed distance head needs at least two classes, got {num_classes}")
        out = base.decoder.out_conv
        conv = type(out)
        self.base = base
        self.single_logit = num_classes == 2
        if self.single_logit:
            base.decoder.out_conv = conv(out.in_channels, 1, out.kernel_size, padding=out.padding)
        self.sdf_head = conv(out.in_channels, num_classes - 1, out.kernel_size, padding=out.padding)

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits, features = self.base.decode(self.base.encode(x))
        if self.single_logit:
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        return logits, torch.tanh(self.sdf_head(features))

    def forward(self, x: Tensor) -> Tensor:
        return self.heads(x)[0]


class Discriminator(nn.Module):
    """SASSNet's discriminator: is a signed distance map (with its image) from a labeled image?

    ``forward(maps, image)``: ``conv4/2(maps) + conv4/2(image)``, then LeakyReLU(0.2) and channel
    dropout(0.5), three more ``conv4/2``–LeakyReLU stages (``2·ndf, 4·ndf, 8·ndf`` channels; dropout
    after the first two), an average over what is left of the image and a linear layer to two
    logits (class 1: labeled). The code's ``AvgPool3d((7, 7, 5))`` is the average over the whole
    7 × 7 × 5 map its 112 × 112 × 80 patches leave; here it is that global average for any patch
    size (equal on LA's). ``dims=2`` builds the same layers in 2D (the code's 2D ``FCDiscriminator``
    is unused by its script and pools 7 × 7 for 224² inputs only).
    """

    def __init__(self, map_channels: int, image_channels: int = 1, ndf: int = 64, dims: int = 3):
        super().__init__()
        conv = layer_types(dims).conv
        self.conv0 = conv(map_channels, ndf, kernel_size=4, stride=2, padding=1)
        self.conv1 = conv(image_channels, ndf, kernel_size=4, stride=2, padding=1)
        self.conv2 = conv(ndf, ndf * 2, kernel_size=4, stride=2, padding=1)
        self.conv3 = conv(ndf * 2, ndf * 4, kernel_size=4, stride=2, padding=1)
        self.conv4 = conv(ndf * 4, ndf * 8, kernel_size=4, stride=2, padding=1)
        self.classifier = nn.Linear(ndf * 8, 2)
        self.leaky_relu = nn.LeakyReLU(negative_slope=0.2)
        self.dropout = layer_types(dims).channel_dropout(0.5)

    def forward(self, maps: Tensor, image: Tensor) -> Tensor:
        x = self.dropout(self.leaky_relu(self.conv0(maps) + self.conv1(image)))
        x = self.dropout(self.leaky_relu(self.conv2(x)))
        x = self.dropout(self.leaky_relu(self.conv3(x)))
        x = self.leaky_relu(self.conv4(x))
        return self.classifier(x.flatten(2).mean(dim=2))
