"""A ResNet-34 encoder under the decoder of the run's backbone: MCF's second, heterogeneous network.

MCF (Wang et al., CVPR 2023, https://github.com/WYC-321/MCF at ad20659,
``code/networks/ResNet34.py`` and ``resnet.py``) trains a V-Net beside a network whose encoder is a
3D ResNet-34 and whose decoder is a copy of the V-Net's, so that the two differ in their encoders
only. As the code builds it:

- stem: ``conv7 (stride 1, no bias) -> BN -> ReLU`` to ``n`` channels at full resolution (no max
  pooling: the code computes one and discards it);
- four stages of 3, 4, 6, 3 basic blocks (``conv3-BN-ReLU-conv3-BN`` plus the identity, or a
  ``conv1/stride-BN`` projection where the shape changes, then ReLU) with ``2n, 4n, 8n, 16n``
  channels, the first block of each with stride 2: features at ``1, 1/2, ..., 1/16`` of the input
  with the V-Net encoder's widths ``n ... 16n``, which the V-Net decoder reads unchanged;
- the decoder: :class:`~semiseg.nets.vnet.VNetDecoder` (additive skips, ``Dropout3d(0.5)`` before
  the output convolution with ``has_dropout``; the ResNet has no bottleneck dropout);
- initialisation (:func:`kaiming_init`): every convolution and transposed convolution weight
  Kaiming-normal, batch norms weight 1 and bias 0. The code's ResNet zeroes the last batch norm's
  weight of every block ("zero gamma"), but the outer network's initialisation runs afterwards
  and sets it back to 1, so no gamma starts at zero.

The 2D form (``dims=2``, MCF's code is 3D only) is the same encoder with 2D layers under the
decoder of the 2D backbone of this project's ACDC / AbdomenCT-1K rows, the SSL4MIS U-Net's
(:class:`~semiseg.nets.unet.UNetDecoder`: concatenated skips, linear upsampling, 3x3 output
convolution), whose widths ``16 ... 256`` are the encoder's with ``n = 16``: the same rule, a
ResNet-34 encoder beside the backbone, sharing its decoder design.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from semiseg.nets.unet import EncoderDecoder, UNetDecoder, check_spatial_divisible, layer_types
from semiseg.nets.vnet import VNetDecoder

__all__ = ["BasicBlock", "ResNetED", "ResNetEncoder", "kaiming_init"]

#: Basic blocks per stage of ResNet-34.
RESNET34_BLOCKS = (3, 4, 6, 3)


def kaiming_init(module: nn.Module) -> nn.Module:
    """MCF's initialisation, in place: Kaiming-normal weights (fan in, ReLU gain) for every
    convolution and transposed convolution, batch norms weight 1 and bias 0; convolution biases
    keep PyTorch's draw. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


class BasicBlock(nn.Module):
    """``relu(bn(conv3(relu(bn(conv3(x))))) + shortcut(x))``; the shortcut is a strided 1x1
    convolution and batch norm where the stride or the width changes, else the identity."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dims: int) -> None:
        super().__init__()
        L = layer_types(dims)
        self.body = nn.Sequential(
            L.conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            L.batch_norm(out_channels), nn.ReLU(),
            L.conv(out_channels, out_channels, 3, padding=1, bias=False), L.batch_norm(out_channels))
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(L.conv(in_channels, out_channels, 1, stride=stride, bias=False),
                                          L.batch_norm(out_channels))
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """Stem plus four strided stages of basic blocks; returns the five levels, bottleneck last."""

    def __init__(self, in_channels: int, n_filters: int, dims: int, blocks=RESNET34_BLOCKS) -> None:
        super().__init__()
        L = layer_types(dims)
        self.stem = nn.Sequential(L.conv(in_channels, n_filters, 7, padding=3, bias=False),
                                  L.batch_norm(n_filters), nn.ReLU())
        self.stages = nn.ModuleList()
        width = n_filters
        for i, n_blocks in enumerate(blocks):
            out = n_filters * 2 ** (i + 1)
            self.stages.append(nn.Sequential(*(BasicBlock(width if b == 0 else out, out, 2 if b == 0 else 1, dims)
                                               for b in range(n_blocks))))
            width = out

    def forward(self, x: Tensor) -> list[Tensor]:
        features = [self.stem(x)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features


class ResNetED(EncoderDecoder):
    """ResNet-34 encoder with the V-Net decoder (3D) or the U-Net decoder (2D).

    Args:
        in_channels: input image channels.
        num_classes: output classes (background included).
        dims: 3 (MCF's network) or 2 (its 2D form, see the module docstring).
        n_filters: the stem's channels; stage ``i`` has ``n_filters * 2**(i+1)``.
        has_dropout: 3D: ``Dropout3d(0.5)`` before the output convolution (the code's setting).

    Spatial sizes must be divisible by 16 (four stride-2 stages).
    """

    size_divisor = 16

    def __init__(self, in_channels: int, num_classes: int, dims: int = 3, n_filters: int = 16,
                 has_dropout: bool = True) -> None:
        super().__init__()
        layer_types(dims)  # validates dims
        self.dims = int(dims)
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.n_filters = int(n_filters)
        self.has_dropout = bool(has_dropout)
        self.encoder = ResNetEncoder(in_channels, self.n_filters, self.dims)
        self.decoder = self.new_decoder()
        kaiming_init(self)

    def encode(self, x: Tensor) -> list[Tensor]:
        check_spatial_divisible(x, self.dims, self.size_divisor, "ResNetED")
        return self.encoder(x)

    def new_decoder(self, **overrides: Any) -> nn.Module:
        """A new decoder for this encoder (no overrides)."""
        if overrides:
            raise TypeError(f"new_decoder got unexpected overrides {sorted(overrides)}")
        if self.dims == 3:
            return VNetDecoder(self.num_classes, self.n_filters, "batchnorm", self.has_dropout)
        widths = [self.n_filters * 2 ** i for i in range(len(RESNET34_BLOCKS) + 1)]
        return UNetDecoder(self.num_classes, widths, 2, up_mode="linear", out_kernel_size=3)
