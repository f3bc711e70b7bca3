"""Networks with several output heads (MC-Net's decoders, URPC's pyramid, DTC's level set) and
the contract the engine relies on.

A multi-head network's ``forward(x)`` returns the *evaluated* prediction, logits
``(B, C, *spatial)``: validation and inference call nothing else, so they need no knowledge of
the heads. Training reads every head with ``heads(x)``, a list of logits, the main one first.
:class:`MultiDecoder` is the common case: one encoder, several independently initialised
decoders (``UNet.new_decoder`` / ``VNet.new_decoder`` with their own upsampling), evaluated as
the first decoder (MC-Net's test scripts) or the mean of the decoders' softmax.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["EVALUATE", "MultiDecoder"]

#: How a multi-decoder network's evaluated prediction is made from its heads.
EVALUATE = ("first", "mean")


class MultiDecoder(nn.Module):
    """``base`` (an encoder–decoder network) plus ``len(up_modes)`` more decoders on its encoder.

    ``heads(x)`` runs the encoder once and every decoder on its features; ``forward(x)`` is the
    evaluated prediction: the first head's logits (``evaluate="first"``) or the log of the mean
    of the heads' softmax (``"mean"``, whose argmax is the averaged prediction's).
    """

    def __init__(self, base: nn.Module, up_modes: Sequence[str] = (), evaluate: str = "first"):
        super().__init__()
        if evaluate not in EVALUATE:
            raise ValueError(f"evaluate must be one of {EVALUATE}, got {evaluate!r}")
        self.base = base
        self.extra = nn.ModuleList(base.new_decoder(up_mode=m) for m in up_modes)
        self.evaluate = evaluate

    @property
    def num_heads(self) -> int:
        return 1 + len(self.extra)

    def heads(self, x: Tensor) -> list[Tensor]:
        features = self.base.encode(x)
        return [self.base.decode(features)[0], *(decoder(features)[0] for decoder in self.extra)]

    def forward(self, x: Tensor) -> Tensor:
        if self.evaluate == "first" or not self.extra:
            return self.base(x)
        probs = torch.stack([torch.softmax(h, dim=1) for h in self.heads(x)]).mean(dim=0)
        return torch.log(probs.clamp_min(1e-12))
