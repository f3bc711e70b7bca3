"""URPC's pyramid of predictions: deep-supervision heads on a U-Net's or V-Net's decoder stages.

Luo et al., "Efficient Semi-supervised Gross Target Volume of Nasopharyngeal Carcinoma
Segmentation via Uncertainty Rectified Pyramid Consistency" (MICCAI 2021; MedIA 2022), public
code HiLab-git/SSL4MIS ``UNet_URPC`` / ``Decoder_URPC`` (``code/networks/unet.py``). The decoder's
stages are deep to shallow (:meth:`~semiseg.nets.unet.EncoderDecoder.decode_stages`); the last
one feeds the network's own output convolution (the main head), every earlier one gets an
auxiliary head. With the default five-level U-Net that is SSL4MIS's four outputs: the main one
at full resolution and heads on the 1/2, 1/4 and 1/8 resolution stages; likewise for the V-Net's
four decoder stages. Each auxiliary head is

    perturbation (training only)  ->  convolution to C classes  ->  resize to the input size

- ``perturbations``: one name per auxiliary head, deep to shallow (SSL4MIS: ``dropout`` on the
  1/8 stage, ``feature_dropout`` on the 1/4, ``feature_noise`` on the 1/2): ``dropout`` is
  element-wise dropout with probability ``dropout`` (0.5), ``feature_dropout`` and
  ``feature_noise`` are :func:`~semiseg.nets.perturb.feature_dropout` (γ ~ U(0.7, 0.9)) and
  :func:`~semiseg.nets.perturb.feature_noise` (U(±0.3)), ``none`` reads the stage as it is.
  The main head is never perturbed.
- ``kernel_size``: the heads' convolution; by default the base network's output convolution's
  (SSL4MIS's 2D heads are 3x3 like its U-Net's; its 3D network's and the V-Net's are 1x1x1).
- ``upsample``: how the heads' logits reach the input size, ``nearest`` (SSL4MIS's 2D
  ``F.interpolate`` default) or ``linear`` (bi/trilinear, ``align_corners=False``, as its 3D
  network's ``UnetDsv3``).

``heads(x)`` returns the logits of every head at the input size, main first, then the auxiliary
ones shallow to deep (SSL4MIS's order: main, 1/2, 1/4, 1/8). ``forward(x)`` is the main head
alone: what SSL4MIS's validation and test scripts evaluate (``output_main, _, _, _ = net(x)``,
their ensemble of the heads commented out).
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from semiseg.nets.perturb import feature_dropout, feature_noise
from semiseg.nets.unet import EncoderDecoder, UNet, layer_types
from semiseg.nets.vnet import VNet

__all__ = ["HEAD_PERTURBATIONS", "PyramidNet", "UPSAMPLE_MODES"]

#: What an auxiliary head may do to its stage's features in training.
HEAD_PERTURBATIONS = ("dropout", "feature_dropout", "feature_noise", "none")
#: How the auxiliary heads' logits are resized to the input.
UPSAMPLE_MODES = ("nearest", "linear")


def stage_channels(base: EncoderDecoder) -> list[int]:
    """Channels of ``base``'s decoder stages, deep to shallow (the last feeds the output convolution)."""
    if isinstance(base, UNet):
        return list(base.channels[-2::-1])
    if isinstance(base, VNet):
        return [base.n_filters * 2 ** i for i in range(3, -1, -1)]
    raise ValueError(f"a pyramid needs a U-Net or V-Net base, got {type(base).__name__}")


class PyramidNet(nn.Module):
    """``base`` plus an auxiliary head on each decoder stage but the last (see the module docstring)."""

    def __init__(self, base: EncoderDecoder, perturbations: Sequence[str] = ("dropout", "feature_dropout",
                                                                           "feature_noise"),
                 dropout: float = 0.5, upsample: str = "nearest", kernel_size: int | None = None):
        super().__init__()
        channels = stage_channels(base)
        perturbations = list(perturbations)
        if len(perturbations) != len(channels) - 1:
            raise ValueError(f"network_args.pyramid.perturbations needs one entry per decoder stage but the last "
                             f"({len(channels) - 1} for this network), got {perturbations}")
        unknown = [p for p in perturbations if p not in HEAD_PERTURBATIONS]
        if unknown:
            raise ValueError(f"network_args.pyramid.perturbations: unknown {unknown}; known: {HEAD_PERTURBATIONS}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"network_args.pyramid.upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"network_args.pyramid.dropout must be in [0, 1), got {dropout}")
        out_conv = base.decoder.out_conv
        kernel = int(kernel_size if kernel_size is not None else out_conv.kernel_size[0])
        if kernel % 2 != 1:
            raise ValueError(f"network_args.pyramid.kernel_size must be odd, got {kernel}")
        conv = layer_types(base.dims).conv
        self.base = base
        self.perturbations = perturbations
        self.dropout = float(dropout)
        self.upsample = upsample
        # declared deep to shallow, as SSL4MIS's out_conv_dp3, dp2, dp1
        self.aux = nn.ModuleList(conv(c, base.num_classes, kernel_size=kernel, padding=kernel // 2)
                                 for c in channels[:-1])

    @property
    def num_heads(self) -> int:
        return 1 + len(self.aux)

    def _perturb(self, x: Tensor, kind: str) -> Tensor:
        if not self.training or kind == "none":
            return x
        if kind == "dropout":
            return F.dropout(x, self.dropout, training=True)
        return feature_dropout(x) if kind == "feature_dropout" else feature_noise(x)

    def _resize(self, logits: Tensor, size: Sequence[int]) -> Tensor:
        if self.upsample == "nearest":
            return F.interpolate(logits, size=tuple(size), mode="nearest")
        mode = "bilinear" if logits.dim() == 4 else "trilinear"
        return F.interpolate(logits, size=tuple(size), mode=mode, align_corners=False)

    def heads(self, x: Tensor) -> list[Tensor]:
        """Logits of every head at ``x``'s size: main, then the auxiliary heads shallow to deep."""
        main, stages = self.base.decode_stages(self.base.encode(x))
        # perturbed and read deep to shallow, the order in which SSL4MIS draws their randomness
        aux = [self._resize(head(self._perturb(stage, kind)), x.shape[2:])
               for head, kind, stage in zip(self.aux, self.perturbations, stages)]
        return [main, *reversed(aux)]

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x)
