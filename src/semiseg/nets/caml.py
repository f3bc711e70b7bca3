"""CAML's pair of V-Nets (Gao et al., "Correlation-Aware Mutual Learning for Semi-supervised
Medical Image Segmentation", MICCAI 2023, arXiv:2307.06312; code: Herschel555/CAML
``code/networks/VNet.py``, ``CAML3d_v1``).

Two V-Nets of the run's settings, each with its own encoder and decoder:

- the *vanilla* network: the plain V-Net (transposed-convolution decoder); it is the one the
  official test script evaluates (``test_single_case_first_output``: the first output), so
  :meth:`CamlNet.forward` returns its logits and nothing else;
- the *auxiliary* network: a trilinear-upsampling decoder (``up_mode="linear"``) and the
  cross-sample mutual attention (CMA) on the output of its fourth encoder stage (``8n``
  channels, 1/8 resolution), before that stage's downsampling: first attention among the
  positions of each sample (``intra``), then among the samples of the batch at each position
  (``inter``), each a post-norm transformer encoder layer (4 heads, feed-forward ``4 × 8n``,
  dropout 0.5). As in the code, the CMA runs in training mode only (eval: identity).

Each network has a projection head (``n -> d``: Linear, BatchNorm1d, ReLU, Linear) and a
prediction head (``d -> d``, the same layers) for the per-voxel embeddings of its decoder's last
stage (after its dropout): the method (``semiseg.methods.caml``) builds its labeled-feature
memory and correlation matrices from them. ``d`` is ``feat_dim``: 32 in the code (the network's
default; the training script's ``--embedding_dim 64`` is never passed to the network).
"""

from __future__ import annotations

from torch import Tensor, nn

from semiseg.nets.unet import check_spatial_divisible
from semiseg.nets.vnet import VNet

__all__ = ["CamlNet", "CrossSampleAttention", "Heads", "feature_head"]


def feature_head(in_dim: int, out_dim: int) -> nn.Sequential:
    """``Linear -> BatchNorm1d -> ReLU -> Linear`` (the code's projection / prediction heads)."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))


class CrossSampleAttention(nn.Module):
    """CMA: intra-sample then inter-sample self-attention over a ``(B, C, *spatial)`` map.

    ``intra`` attends over the positions of each sample, ``inter`` over the ``B`` samples at each
    position. Identity in eval mode (the code's ``if self.training``).
    """

    def __init__(self, channels: int, heads: int = 4, dropout: float = 0.5):
        super().__init__()
        self.intra = nn.TransformerEncoderLayer(channels, heads, 4 * channels, dropout, batch_first=True)
        self.inter = nn.TransformerEncoderLayer(channels, heads, 4 * channels, dropout, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        b, c, *spatial = x.shape
        tokens = x.flatten(2).transpose(1, 2)                     # (B, N, C): a sequence per sample
        tokens = self.intra(tokens)
        tokens = self.inter(tokens.transpose(0, 1)).transpose(0, 1)  # (N, B, C): a sequence per position
        return tokens.transpose(1, 2).reshape(b, c, *spatial)


class Heads(nn.Module):
    """One network's projection and prediction heads."""

    def __init__(self, in_dim: int, feat_dim: int):
        super().__init__()
        self.projection = feature_head(in_dim, feat_dim)
        self.prediction = feature_head(feat_dim, feat_dim)


#: The encoder stage (0-based) after which the auxiliary network's CMA runs (the code's insert_idx 4).
CMA_STAGE = 3


class CamlNet(nn.Module):
    """The vanilla V-Net and the auxiliary V-Net with CMA, with their feature heads.

    ``vanilla`` and ``auxiliary`` are two independently initialised V-Nets of the run's
    settings; the auxiliary one's decoder is replaced by a trilinear one. ``forward(x)`` is the
    evaluated prediction (the vanilla network's logits); training calls :meth:`branches`.
    """

    def __init__(self, vanilla: VNet, auxiliary: VNet, feat_dim: int = 32):
        super().__init__()
        for net in (vanilla, auxiliary):
            if not isinstance(net, VNet):
                raise ValueError(f"CAML needs V-Nets (network: vnet), got {type(net).__name__}")
        self.vanilla = vanilla
        self.auxiliary = auxiliary
        self.auxiliary.decoder = auxiliary.new_decoder(up_mode="linear")
        self.cma = CrossSampleAttention(auxiliary.n_filters * 2 ** CMA_STAGE)
        self.heads = nn.ModuleList(Heads(net.n_filters, int(feat_dim)) for net in (vanilla, auxiliary))

    def _encode_auxiliary(self, x: Tensor) -> list[Tensor]:
        """The auxiliary encoder's stages with the CMA after stage :data:`CMA_STAGE`."""
        check_spatial_divisible(x, 3, VNet.size_divisor, "CAML's auxiliary V-Net")
        encoder = self.auxiliary.encoder
        features: list[Tensor] = []
        for i, stage in enumerate(encoder.stages):
            h = stage(x if i == 0 else encoder.down[i - 1](features[-1]))
            features.append(self.cma(h) if i == CMA_STAGE else h)
        features[-1] = encoder.dropout(features[-1])
        return features

    def branches(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``[(logits, embedding)]`` of the vanilla then the auxiliary network; the embedding is
        the decoder's last stage ``(B, n, *spatial)`` (after its dropout)."""
        vanilla = self.vanilla.decoder(self.vanilla.encode(x))
        auxiliary = self.auxiliary.decoder(self._encode_auxiliary(x))
        return [vanilla, auxiliary]

    def forward(self, x: Tensor) -> Tensor:
        return self.vanilla(x)
