"""V-Net (3D) as used by the Left Atrium semi-supervised benchmarks.

Milletari et al., "V-Net: Fully Convolutional Neural Networks for Volumetric Medical Image
Segmentation" (3DV 2016, arXiv:1606.04797), in the plain (non-residual) variant of UA-MT
(Yu et al., MICCAI 2019, https://github.com/yulequan/UA-MT ``code/networks/vnet.py``), which
SSL4MIS, DTC, MC-Net (Wu et al., MICCAI 2021 / MedIA 2022) and BCP (Bai et al., CVPR 2023) reuse
for LA:

- encoder stages of 1, 2, 3, 3, 3 ``conv3-norm-ReLU`` layers with ``n, 2n, 4n, 8n, 16n``
  channels, joined by ``conv2/stride2-norm-ReLU`` downsampling;
- decoder stages of 3, 3, 2, 1 layers, each preceded by a ``deconv2/stride2-norm-ReLU``
  upsampling whose output is *added* to the encoder skip (V-Net's additive skips);
- ``Dropout3d(0.5)`` on the bottleneck and on the last decoder stage when ``has_dropout`` (the
  Monte-Carlo dropout UA-MT's uncertainty needs); a 1x1x1 output convolution.

With ``n_filters=16``, batch norm, one input channel and two classes it has 9,448,866 parameters
(the "9.44 M" the LA tables report for this V-Net).

``up_mode`` adds MC-Net's decoder variants (``up_type`` 0/1/2: transposed convolution,
trilinear upsampling + conv3, nearest upsampling + conv3), so MC-Net's extra decoders are
``vnet.new_decoder(up_mode=...)``.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from semiseg.nets.unet import UP_MODES, EncoderDecoder, check_spatial_divisible

__all__ = ["NORMALIZATIONS", "VNet", "VNetDecoder", "VNetEncoder"]

#: Accepted ``normalization`` values.
NORMALIZATIONS = ("batchnorm", "groupnorm", "instancenorm", "none")


def _norm(normalization: str, channels: int) -> nn.Module:
    if normalization == "batchnorm":
        return nn.BatchNorm3d(channels)
    if normalization == "groupnorm":
        return nn.GroupNorm(num_groups=16, num_channels=channels)
    if normalization == "instancenorm":
        return nn.InstanceNorm3d(channels)
    if normalization == "none":
        return nn.Identity()
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


class StageBlock(nn.Sequential):
    """``n_layers`` x ``conv3-norm-ReLU`` (UA-MT's ``ConvBlock``)."""

    def __init__(self, n_layers: int, in_channels: int, out_channels: int,
                 normalization: str) -> None:
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers += [
                nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
                _norm(normalization, out_channels),
                nn.ReLU(),
            ]
        super().__init__(*layers)


class DownConv(nn.Sequential):
    """``conv2/stride2 -> norm -> ReLU``: halves every spatial size."""

    def __init__(self, in_channels: int, out_channels: int, normalization: str) -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel_size=2, stride=2),
            _norm(normalization, out_channels),
            nn.ReLU(),
        )


class UpConv(nn.Sequential):
    """Doubles every spatial size: ``upsample -> norm -> ReLU`` (see :data:`UP_MODES`)."""

    def __init__(self, in_channels: int, out_channels: int, normalization: str,
                 up_mode: str) -> None:
        if up_mode == "transpose":
            up: list[nn.Module] = [nn.ConvTranspose3d(in_channels, out_channels, 2, stride=2)]
        elif up_mode == "linear":
            up = [nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True),
                  nn.Conv3d(in_channels, out_channels, 3, padding=1)]
        elif up_mode == "nearest":
            up = [nn.Upsample(scale_factor=2, mode="nearest"),
                  nn.Conv3d(in_channels, out_channels, 3, padding=1)]
        else:
            raise ValueError(f"up_mode must be one of {UP_MODES}, got {up_mode!r}")
        super().__init__(*up, _norm(normalization, out_channels), nn.ReLU())


# (layers per stage) of the encoder, shallow to deep, and of the decoder, deep to shallow.
_ENCODER_LAYERS = (1, 2, 3, 3, 3)
_DECODER_LAYERS = (3, 3, 2, 1)


class VNetEncoder(nn.Module):
    """Five stages, four downsamplings; returns the five stage outputs (bottleneck last)."""

    def __init__(self, in_channels: int, n_filters: int, normalization: str,
                 has_dropout: bool) -> None:
        super().__init__()
        widths = [n_filters * 2 ** i for i in range(len(_ENCODER_LAYERS))]
        self.stages = nn.ModuleList()
        self.down = nn.ModuleList()
        for i, n_layers in enumerate(_ENCODER_LAYERS):
            # The first stage maps in_channels -> n; later stages keep the width the
            # downsampling produced.
            cin = in_channels if i == 0 else widths[i]
            self.stages.append(StageBlock(n_layers, cin, widths[i], normalization))
            if i + 1 < len(_ENCODER_LAYERS):
                self.down.append(DownConv(widths[i], widths[i + 1], normalization))
        self.dropout = nn.Dropout3d(0.5) if has_dropout else nn.Identity()

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else self.down[i - 1](features[-1]))
            features.append(x)
        features[-1] = self.dropout(features[-1])
        return features


class VNetDecoder(nn.Module):
    """Four ``UpConv (+ skip) -> stage`` steps, optional dropout, 1x1x1 output convolution."""

    def __init__(self, num_classes: int, n_filters: int, normalization: str,
                 has_dropout: bool, up_mode: str = "transpose") -> None:
        super().__init__()
        widths = [n_filters * 2 ** i for i in range(len(_ENCODER_LAYERS))]
        self.up = nn.ModuleList()
        self.stages = nn.ModuleList()
        for j, n_layers in enumerate(_DECODER_LAYERS):
            deep, shallow = widths[-1 - j], widths[-2 - j]
            self.up.append(UpConv(deep, shallow, normalization, up_mode))
            self.stages.append(StageBlock(n_layers, shallow, shallow, normalization))
        self.dropout = nn.Dropout3d(0.5) if has_dropout else nn.Identity()
        self.out_conv = nn.Conv3d(n_filters, num_classes, kernel_size=1)

    def forward_stages(self, features: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """``(logits, stages)``, stages deep to shallow; the last one is after the dropout."""
        if len(features) != len(_ENCODER_LAYERS):
            raise ValueError(f"expected {len(_ENCODER_LAYERS)} feature levels, "
                             f"got {len(features)}")
        x = features[-1]
        stages = []
        for up, stage, skip in zip(self.up, self.stages, reversed(features[:-1])):
            x = stage(up(x) + skip)
            stages.append(x)
        # The penultimate map is what the output convolution reads, i.e. after the dropout.
        stages[-1] = x = self.dropout(x)
        return self.out_conv(x), stages

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        logits, stages = self.forward_stages(features)
        return logits, stages[-1]


class VNet(EncoderDecoder):
    """UA-MT / MC-Net V-Net (3D only).

    Args:
        in_channels: input image channels.
        num_classes: output classes (background included).
        n_filters: channels of the first stage; stage ``i`` has ``n_filters * 2**i``.
        normalization: one of :data:`NORMALIZATIONS` (``"groupnorm"`` uses 16 groups).
        has_dropout: ``Dropout3d(0.5)`` on the bottleneck and before the output convolution,
            active in training mode only.
        up_mode: decoder upsampling, one of :data:`~semiseg.nets.unet.UP_MODES`.

    Spatial sizes must be divisible by 16 (four stride-2 downsamplings).
    """

    size_divisor = 16

    def __init__(self, in_channels: int, num_classes: int, n_filters: int = 16,
                 normalization: str = "batchnorm", has_dropout: bool = True, *,
                 up_mode: str = "transpose") -> None:
        super().__init__()
        _norm(normalization, 16)  # validates before building anything
        if up_mode not in UP_MODES:
            raise ValueError(f"up_mode must be one of {UP_MODES}, got {up_mode!r}")
        self.dims = 3
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.n_filters = int(n_filters)
        self.normalization = normalization
        self.has_dropout = bool(has_dropout)
        self.up_mode = up_mode
        self.encoder = VNetEncoder(in_channels, self.n_filters, normalization, self.has_dropout)
        self.decoder = self.new_decoder()

    def encode(self, x: Tensor) -> list[Tensor]:
        check_spatial_divisible(x, 3, self.size_divisor, "VNet")
        return self.encoder(x)

    def new_decoder(self, **overrides: Any) -> VNetDecoder:
        """A new, independently initialised :class:`VNetDecoder`; ``up_mode`` may be overridden."""
        unknown = set(overrides) - {"up_mode"}
        if unknown:
            raise TypeError(f"new_decoder got unexpected overrides {sorted(unknown)}")
        return VNetDecoder(self.num_classes, self.n_filters, self.normalization,
                           self.has_dropout, up_mode=overrides.get("up_mode", self.up_mode))
