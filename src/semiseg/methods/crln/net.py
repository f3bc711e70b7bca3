"""CRLN's network parts (Wang et al., "Leveraging Labelled Data Knowledge: A Cooperative
Rectification Learning Network for Semi-supervised 3D Medical Image Segmentation",
arXiv:2502.11456): learned class prototypes, the Dynamic Interaction Module (DIM) and the
representation head, around an encoder–decoder backbone (V-Net for LA; a 2D U-Net works too).

:class:`CRLNNet` holds the backbone (whose state dict is what inference loads), the prototypes
``P`` ``(C, K, D)`` (``K`` per class, ``D`` = the representation dimension, so that the
prototypes' mean lives in the contrastive space), one :class:`PairAttention` per decoder level
the DIM reads, the aggregation that turns attention maps into the relationship map ``M(x)``
``(B, C, *spatial)``, and the representation head on the last decoder map.

One DIM level ``i`` with decoder map ``f_i`` (:class:`PairAttention` then :class:`Aggregation`):

1. tokens ``T = LN(Conv1(f_i))`` ``(B, N, D)``; ``q = W_q LN(P)``, ``k = W_k T``, ``v = W_v T``;
2. ``A = q kᵀ / √D`` ``(B, C·K, N)`` (pre-softmax pair-wise attention);
3. prototype update ``P' = P + W_o softmax_N(A) v``, then ``P' += MLP(LN P')`` (ratio 4, GELU);
   the next level starts from ``P'``;
4. attention-map update ``A' = A + norm_N(A)`` (a normalisation over the spatial axis without
   affine weights, so it works at any resolution);
5. aggregation, per class with weights shared by the classes: ``A'`` as ``(B·C, K, *s)`` →
   spatial-aware depthwise 3-conv → BN → ReLU (``spatial``) → cross-prototype pointwise
   ``K→K`` → BN → ReLU (``cross``) → ``K→1`` (the class map) → ``(B, C, *s)``;
6. upsampled to the input size by a transposed convolution (stride = the level's factor) and a
   ReLU, so ``M(x) ≥ 0``; with ``levels="both"`` the two levels' maps are averaged.

Departures from the public code (see also :class:`semiseg.methods.crln.CRLN`):

- The code *reshapes* the queries from ``(B, C, R, d)`` to ``(B, R, C, d)`` instead of permuting
  them, which mixes class and prototype slots: a bug, not reproduced (queries keep their
  class/prototype order).
- Its residuals are ``2·x`` (``x + drop_path(x)`` of the same tensor) and its spatial layer norm
  has a hard-coded size per dataset; here plain residuals and a parameter-free norm. No DropPath.
- Its prototypes have a 64-dim feature axis that the contrastive positive averages away to fit
  its R-dim representations; here prototypes live in the ``D``-dim representation space.
- ``levels="last"`` keeps only the ½-resolution map, as the code (the paper combines both).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Aggregation", "CRLNNet", "LEVELS", "PairAttention"]

#: Which decoder levels' relationship maps make ``M(x)``.
LEVELS = ("both", "last")

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_UP = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


class PairAttention(nn.Module):
    """Pair-wise attention between ``C·K`` prototypes (queries) and the tokens of one decoder map.

    ``forward(prototypes (B, C·K, D), features (B, c_in, *s)) -> (prototypes', A')`` with
    ``A'`` ``(B, C·K, N)``, ``N = prod(s)``: steps 1–4 of the module docstring.
    """

    def __init__(self, in_channels: int, dim: int, dims: int, *, update: bool = True):
        super().__init__()
        self.update = update
        self.embed = _CONV[dims](in_channels, dim, 1)
        self.norm_tokens = nn.LayerNorm(dim)
        self.norm_q = nn.LayerNorm(dim)
        self.q, self.k = nn.Linear(dim, dim), nn.Linear(dim, dim)
        if update:  # the last level's updated prototypes are not read: no update there
            self.v = nn.Linear(dim, dim)
            self.out = nn.Linear(dim, dim)
            self.norm_mlp = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.scale = dim ** -0.5

    def attention(self, prototypes: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        """``(A, v)``: the pre-softmax map ``q kᵀ·scale`` ``(B, C·K, N)`` and the values ``(B, N, D)``
        (None without a prototype update)."""
        tokens = self.norm_tokens(self.embed(features).flatten(2).transpose(1, 2))
        q = self.q(self.norm_q(prototypes))
        return q @ self.k(tokens).transpose(1, 2) * self.scale, (self.v(tokens) if self.update else None)

    def forward(self, prototypes: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        attn, v = self.attention(prototypes, features)
        updated = prototypes
        if self.update:
            updated = prototypes + self.out(torch.softmax(attn, dim=-1) @ v)
            updated = updated + self.mlp(self.norm_mlp(updated))
        return updated, attn + F.layer_norm(attn, attn.shape[-1:])


class Aggregation(nn.Module):
    """Step 5: ``(B, C·K, N)`` attention maps of spatial size ``s`` → class maps ``(B, C, *s)``.

    ``spatial`` (SA: depthwise 3-conv + BN + ReLU) and ``cross`` (the prototypes' pointwise
    interaction + BN + ReLU) may be switched off (identity), the last ``K → 1`` projection (CR,
    the class relation) always runs.
    """

    def __init__(self, k: int, dims: int, *, spatial: bool = True, cross: bool = True):
        super().__init__()
        conv, bn = _CONV[dims], _BN[dims]
        self.spatial = nn.Sequential(conv(k, k, 3, padding=1, groups=k), bn(k), nn.ReLU()) if spatial else nn.Identity()
        self.cross = nn.Sequential(conv(k, k, 1), bn(k), nn.ReLU()) if cross else nn.Identity()
        self.to_class = conv(k, 1, 1)
        self.k = k

    def forward(self, attn: Tensor, spatial: tuple[int, ...], num_classes: int) -> Tensor:
        b = attn.shape[0]
        x = attn.reshape(b * num_classes, self.k, *spatial)
        return self.to_class(self.cross(self.spatial(x))).reshape(b, num_classes, *spatial)


class CRLNNet(nn.Module):
    """Backbone + prototypes + DIM + representation head (see the module docstring).

    ``forward(x)`` is the backbone's logits (what validation and inference see);
    :meth:`outputs` gives ``(logits, M(x), representations (B, D, *spatial))``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, dims: int, *, prototypes: int, dim: int,
                 levels: str = "both", spatial: bool = True, cross: bool = True):
        super().__init__()
        if levels not in LEVELS:
            raise ValueError(f"crln dim_levels must be one of {LEVELS}, got {levels!r}")
        self.backbone, self.num_classes, self.dims, self.k = backbone, num_classes, dims, prototypes
        self.levels = levels
        # A random start (the code's zeros give every prototype the same query).
        self.prototypes = nn.Parameter(torch.randn(num_classes, prototypes, dim) / math.sqrt(dim))
        widths = self._decoder_widths()
        self.attn = nn.ModuleList(PairAttention(w, dim, dims, update=i + 1 < len(widths)) for i, w in enumerate(widths))
        # the levels whose maps make M(x) (at 1/4 and 1/2 of the input size), each with its own
        # aggregation and upsampling
        self.used = [0, 1] if levels == "both" else [1]
        self.aggregate = nn.ModuleList(Aggregation(prototypes, dims, spatial=spatial, cross=cross) for _ in self.used)
        self.upsample = nn.ModuleList(
            nn.Sequential(_UP[dims](num_classes, num_classes, (4, 2)[i], stride=(4, 2)[i]), nn.ReLU()) for i in self.used)
        last = self._probe_channels()[-1]
        conv, bn = _CONV[dims], _BN[dims]
        self.rep_head = nn.Sequential(conv(last, dim, 3, padding=1, bias=False), bn(dim), nn.ReLU(), conv(dim, dim, 1))

    def _probe_channels(self) -> list[int]:
        """Channels of the decoder's stages, deep to shallow, read off its layers' shapes."""
        dec = self.backbone.decoder
        out = []
        for module in dec.stages if hasattr(dec, "stages") else dec.up:
            convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
            out.append(convs[-1].out_channels)
        return out

    def _decoder_widths(self) -> list[int]:
        return self._probe_channels()[-3:-1]  # the 1/4 and 1/2 resolution maps

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def outputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits, stages = self.backbone.decoder.forward_stages(self.backbone.encode(x))
        return logits, self.relation_map(stages[-3:-1]), self.rep_head(stages[-1])

    def logits_and_map(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits, M(x))`` without the representation head (what rectification reads)."""
        logits, stages = self.backbone.decoder.forward_stages(self.backbone.encode(x))
        return logits, self.relation_map(stages[-3:-1])

    def relation_map(self, maps: list[Tensor]) -> Tensor:
        """``M(x)`` from the ¼ and ½ resolution decoder maps (module docstring, steps 1–6)."""
        b = maps[0].shape[0]
        protos = self.prototypes.reshape(1, -1, self.prototypes.shape[-1]).expand(b, -1, -1)
        out = []
        for i, f in enumerate(maps):
            protos, attn = self.attn[i](protos, f)
            if i in self.used:
                j = self.used.index(i)
                out.append(self.upsample[j](self.aggregate[j](attn, tuple(f.shape[2:]), self.num_classes)))
        return torch.stack(out).mean(dim=0)
