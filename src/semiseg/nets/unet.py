"""U-Net for 2D and 3D, as used by the semi-supervised medical segmentation literature.

The architecture follows the U-Net of Ronneberger et al., "U-Net: Convolutional Networks for
Biomedical Image Segmentation" (MICCAI 2015, arXiv:1505.04597) in the small variant that
SSL4MIS (Luo et al., https://github.com/HiLab-git/SSL4MIS, ``code/networks/unet.py``, itself
from PyMIC) made the common backbone of the ACDC benchmarks (Mean Teacher, UA-MT, CCT, URPC, CPS,
MC-Net, BCP, ALHVR all train it):

- five levels with ``(16, 32, 64, 128, 256)`` channels; each level is a block
  ``conv3-BN-LeakyReLU -> Dropout(p_level) -> conv3-BN-LeakyReLU`` with per-level dropout
  ``(0.05, 0.1, 0.2, 0.3, 0.5)``; 2x max-pooling between levels;
- the decoder upsamples by a 1x1 convolution followed by (bi|tri)linear upsampling with
  ``align_corners=True`` (SSL4MIS's ``Decoder`` never passes ``bilinear`` to its ``UpBlock``,
  whose default is ``True``; MC-Net's and ALHVR's ``up_type=1``), or, as a named option
  (``up_mode="transpose"``), a 2x transposed convolution; it concatenates the skip
  ``[skip, up]`` and applies the same block without dropout;
- a 3x3 output convolution (SSL4MIS uses kernel 3, padding 1, not the 1x1 of the original
  U-Net; ``out_kernel_size`` selects it).

One code path serves 2D and 3D: :func:`layer_types` picks the convolution, normalisation and
pooling classes from ``dims``. ``dims=3`` is this same design with 3D layers (5,648,706
parameters for one input channel and two classes with the transposed decoder); it is not
SSL4MIS's separate ``unet_3D`` (an attention-U-Net-style network), and the LA benchmarks use
:class:`~semiseg.nets.vnet.VNet`. With the defaults and ``in_channels=1, num_classes=4`` the 2D
network has 1,813,764 parameters (the reference decoder, the "1.81 M" quoted for the
SSL4MIS / ALHVR / BCP UNet), 1,944,324 with ``up_mode="transpose"``.

The network is split as ``encode(x) -> features`` and ``decode(features) -> (logits,
penultimate)`` so that methods can run one decoder on perturbed encoder features (CCT, ALHVR),
read the full-resolution feature map that feeds the output convolution (prototype methods), or
build extra decoders on the same encoder with :meth:`UNet.new_decoder` (CCT, MC-Net).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "EncoderDecoder",
    "LayerTypes",
    "UNet",
    "UNetDecoder",
    "UNetEncoder",
    "UP_MODES",
    "check_spatial_divisible",
    "layer_types",
]

#: Decoder upsampling modes: ``"transpose"`` (2x transposed convolution), ``"linear"`` (1x1
#: convolution then bilinear/trilinear upsampling, ``align_corners=True``) and ``"nearest"``
#: (1x1 convolution then nearest upsampling). MC-Net's ``up_type`` 0/1/2 in that order.
UP_MODES = ("transpose", "linear", "nearest")


@dataclass(frozen=True)
class LayerTypes:
    """The layer classes for one spatial dimensionality (see :func:`layer_types`)."""

    dims: int
    conv: type[nn.Module]
    conv_transpose: type[nn.Module]
    batch_norm: type[nn.Module]
    instance_norm: type[nn.Module]
    max_pool: type[nn.Module]
    channel_dropout: type[nn.Module]
    linear_mode: str


_LAYERS = {
    2: LayerTypes(2, nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.InstanceNorm2d,
                  nn.MaxPool2d, nn.Dropout2d, "bilinear"),
    3: LayerTypes(3, nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d, nn.InstanceNorm3d,
                  nn.MaxPool3d, nn.Dropout3d, "trilinear"),
}


def layer_types(dims: int) -> LayerTypes:
    """Return the convolution / normalisation / pooling classes for ``dims`` (2 or 3)."""
    try:
        return _LAYERS[int(dims)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}") from None


def check_spatial_divisible(x: Tensor, dims: int, factor: int, network: str) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, C, *spatial)`` with sizes divisible by ``factor``.

    Encoder-decoder networks with ``k`` 2x downsamplings need sizes divisible by ``2**k`` for the
    skip connections to line up; failing early gives a clearer message than a shape mismatch
    deep inside ``torch.cat``.
    """
    if x.dim() != dims + 2:
        raise ValueError(
            f"{network} with dims={dims} expects input (B, C, {'Z, ' if dims == 3 else ''}Y, X), "
            f"got shape {tuple(x.shape)}"
        )
    spatial = tuple(x.shape[2:])
    if any(s % factor for s in spatial):
        raise ValueError(
            f"{network} needs every spatial size divisible by {factor}, got {spatial}"
        )


class EncoderDecoder(nn.Module):
    """Common interface of the segmentation networks: ``encode``, ``decode``, ``forward``.

    Subclasses set ``self.encoder`` (``x -> list of features``, shallow to deep) and
    ``self.decoder`` (``features -> (logits, penultimate)``) and implement
    :meth:`new_decoder`.
    """

    encoder: nn.Module
    decoder: nn.Module
    dims: int

    def encode(self, x: Tensor) -> list[Tensor]:
        """Encoder features per level, from full resolution (index 0) to the bottleneck (-1)."""
        return self.encoder(x)

    def decode(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Run the decoder: ``(logits, penultimate)``.

        ``penultimate`` is the full-resolution feature map that the output convolution reads.
        """
        return self.decoder(features)

    def decode_stages(self, features: Sequence[Tensor], projections: list | None = None
                      ) -> tuple[Tensor, list[Tensor]]:
        """Run the decoder and also return every decoder stage's output.

        Returns ``(logits, stages)`` with ``stages`` ordered deep to shallow; the last entry is
        the penultimate map of :meth:`decode`. Deep-supervision methods (URPC) attach their
        auxiliary heads to these. ``projections``, a list, also collects the up blocks'
        1x1-projection outputs where the decoder has them (the U-Net's interpolating modes).
        """
        if projections is None:
            return self.decoder.forward_stages(features)
        return self.decoder.forward_stages(features, projections)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes, *spatial)`` for input ``(B, in_channels, *spatial)``."""
        logits, _ = self.decode(self.encode(x))
        return logits

    def new_decoder(self, **overrides: Any) -> nn.Module:  # pragma: no cover - abstract
        """A freshly initialised decoder compatible with this network's encoder."""
        raise NotImplementedError


class ConvBlock(nn.Sequential):
    """``conv3-BN-LeakyReLU -> Dropout(p) -> conv3-BN-LeakyReLU`` (SSL4MIS ``ConvBlock``).

    Dropout is element-wise (``nn.Dropout``), as in SSL4MIS, in 2D and 3D alike; ``p == 0``
    gives an identity in its place.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float, dims: int) -> None:
        L = layer_types(dims)
        super().__init__(
            L.conv(in_channels, out_channels, kernel_size=3, padding=1),
            L.batch_norm(out_channels),
            nn.LeakyReLU(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            L.conv(out_channels, out_channels, kernel_size=3, padding=1),
            L.batch_norm(out_channels),
            nn.LeakyReLU(),
        )


class DownBlock(nn.Sequential):
    """2x max-pooling followed by a :class:`ConvBlock`."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, dims: int) -> None:
        L = layer_types(dims)
        super().__init__(L.max_pool(2), ConvBlock(in_channels, out_channels, dropout, dims))


class UpBlock(nn.Module):
    """Upsample the deeper map to the skip's channels, concatenate ``[skip, up]``, ConvBlock.

    ``up_mode`` is one of :data:`UP_MODES`. For the interpolating modes the 1x1 convolution
    comes before the upsampling, as in SSL4MIS (it is 4x cheaper there).
    """

    def __init__(self, deep_channels: int, skip_channels: int, out_channels: int,
                 dropout: float, dims: int, up_mode: str) -> None:
        super().__init__()
        L = layer_types(dims)
        if up_mode == "transpose":
            self.up = L.conv_transpose(deep_channels, skip_channels, kernel_size=2, stride=2)
        elif up_mode == "linear":
            self.up = nn.Sequential(
                L.conv(deep_channels, skip_channels, kernel_size=1),
                nn.Upsample(scale_factor=2, mode=L.linear_mode, align_corners=True),
            )
        elif up_mode == "nearest":
            self.up = nn.Sequential(
                L.conv(deep_channels, skip_channels, kernel_size=1),
                nn.Upsample(scale_factor=2, mode="nearest"),
            )
        else:
            raise ValueError(f"up_mode must be one of {UP_MODES}, got {up_mode!r}")
        self.conv = ConvBlock(2 * skip_channels, out_channels, dropout, dims)

    def forward(self, deep: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([skip, self.up(deep)], dim=1))

    def forward_with_projection(self, deep: Tensor, skip: Tensor) -> tuple[Tensor, Tensor]:
        """``(output, projection)``: the projection is the 1x1 convolution's output at the deep
        map's resolution, before upsampling (interpolating modes only)."""
        if not isinstance(self.up, nn.Sequential):
            raise ValueError("a transposed-convolution up block has no 1x1 projection")
        projection = self.up[0](deep)
        return self.conv(torch.cat([skip, self.up[1](projection)], dim=1)), projection


class UNetEncoder(nn.Module):
    """Input block plus one :class:`DownBlock` per deeper level; returns every level's output."""

    def __init__(self, in_channels: int, channels: Sequence[int], dropout: Sequence[float],
                 dims: int) -> None:
        super().__init__()
        self.in_block = ConvBlock(in_channels, channels[0], dropout[0], dims)
        self.down = nn.ModuleList(
            DownBlock(channels[i - 1], channels[i], dropout[i], dims)
            for i in range(1, len(channels))
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        features = [self.in_block(x)]
        for block in self.down:
            features.append(block(features[-1]))
        return features


class UNetDecoder(nn.Module):
    """Decoder of :class:`UNet`: ``features -> (logits, penultimate)``.

    The decoder blocks carry no dropout (SSL4MIS passes ``dropout_p=0.0``).
    """

    def __init__(self, num_classes: int, channels: Sequence[int], dims: int,
                 up_mode: str = "transpose", out_kernel_size: int = 3) -> None:
        super().__init__()
        if out_kernel_size % 2 != 1:
            raise ValueError(f"out_kernel_size must be odd, got {out_kernel_size}")
        L = layer_types(dims)
        self.num_levels = len(channels)
        self.up = nn.ModuleList(
            UpBlock(channels[i], channels[i - 1], channels[i - 1], 0.0, dims, up_mode)
            for i in range(len(channels) - 1, 0, -1)
        )
        self.out_conv = L.conv(channels[0], num_classes, kernel_size=out_kernel_size,
                               padding=out_kernel_size // 2)

    def forward_stages(self, features: Sequence[Tensor], projections: list | None = None
                       ) -> tuple[Tensor, list[Tensor]]:
        """``(logits, stages)``: each up block's output, deep to shallow. A list passed as
        ``projections`` receives each up block's 1x1-projection output (before upsampling),
        deep to shallow: index 1 is SSL4MIS's ``up2`` projection, 1/8 resolution (64 channels
        by default), the map ALHVR's code takes its prototypes from."""
        if len(features) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} feature levels, got {len(features)}")
        x = features[-1]
        stages = []
        for block, skip in zip(self.up, reversed(features[:-1])):
            if projections is None:
                x = block(x, skip)
            else:
                x, projection = block.forward_with_projection(x, skip)
                projections.append(projection)
            stages.append(x)
        return self.out_conv(x), stages

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        logits, stages = self.forward_stages(features)
        return logits, stages[-1]


class UNet(EncoderDecoder):
    """SSL4MIS-style U-Net for 2D (``dims=2``) or 3D (``dims=3``) inputs.

    Args:
        in_channels: input image channels.
        num_classes: output classes (background included).
        dims: spatial dimensionality, 2 or 3.
        channels: feature channels per level, shallow to deep (at least two levels).
        dropout: encoder dropout probability per level (same length as ``channels``).
        bilinear: SSL4MIS's flag: true is ``up_mode="linear"``, false ``"transpose"``.
        up_mode: decoder upsampling, one of :data:`UP_MODES`; default ``"linear"`` (the
            reference decoder), unless ``bilinear`` is false.
        out_kernel_size: kernel of the output convolution; 3 as in SSL4MIS.

    Spatial sizes must be divisible by ``2 ** (len(channels) - 1)`` (16 by default).
    """

    def __init__(self, in_channels: int, num_classes: int, dims: int = 2,
                 channels: Sequence[int] = (16, 32, 64, 128, 256),
                 dropout: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
                 bilinear: bool | None = None, *, up_mode: str | None = None,
                 out_kernel_size: int = 3) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        dropout = tuple(float(p) for p in dropout)
        layer_types(dims)  # validates dims
        if len(channels) < 2:
            raise ValueError(f"channels needs at least two levels, got {channels}")
        if len(dropout) != len(channels):
            raise ValueError(
                f"dropout has {len(dropout)} entries for {len(channels)} levels: {dropout}; "
                "pass one dropout probability per entry of channels"
            )
        if up_mode is None:
            up_mode = "transpose" if bilinear is False else "linear"
        elif bilinear is not None and bilinear != (up_mode == "linear"):
            raise ValueError(f"bilinear={bilinear} contradicts up_mode={up_mode!r}")
        if up_mode not in UP_MODES:
            raise ValueError(f"up_mode must be one of {UP_MODES}, got {up_mode!r}")
        self.dims = int(dims)
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.channels = channels
        self.dropout = dropout
        self.up_mode = up_mode
        self.out_kernel_size = int(out_kernel_size)
        self.encoder = UNetEncoder(in_channels, channels, dropout, self.dims)
        self.decoder = self.new_decoder()

    @property
    def size_divisor(self) -> int:
        """Every spatial input size must be a multiple of this."""
        return 2 ** (len(self.channels) - 1)

    def encode(self, x: Tensor) -> list[Tensor]:
        check_spatial_divisible(x, self.dims, self.size_divisor, "UNet")
        return self.encoder(x)

    def new_decoder(self, **overrides: Any) -> UNetDecoder:
        """A new, independently initialised :class:`UNetDecoder` for this encoder.

        ``overrides`` may set ``up_mode`` or ``out_kernel_size`` (MC-Net's decoders differ only
        in their upsampling).
        """
        unknown = set(overrides) - {"up_mode", "out_kernel_size"}
        if unknown:
            raise TypeError(f"new_decoder got unexpected overrides {sorted(unknown)}")
        return UNetDecoder(
            self.num_classes, self.channels, self.dims,
            up_mode=overrides.get("up_mode", self.up_mode),
            out_kernel_size=overrides.get("out_kernel_size", self.out_kernel_size),
        )
