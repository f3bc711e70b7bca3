"""Pieces the methods share: ramp-ups, EMA, loss terms and pseudo-label helpers.

Each lives in one place so that a formula (the sigmoid ramp-up, the EMA warm-up, SSL4MIS's
Dice) is written once and tested once, not pasted into every algorithm.
"""

from semiseg.methods.common.ema import BUFFER_MODES, ema_alpha, ema_update
from semiseg.methods.common.losses import (
    DiceCE,
    dice_ce_loss,
    masked_mean,
    one_hot,
    soft_dice_loss,
)
from semiseg.methods.common.pseudo import (
    entropy,
    largest_connected_component,
    sharpen,
    sharpen_distribution,
)
from semiseg.methods.common.ramps import sigmoid_rampup

__all__ = [
    "BUFFER_MODES",
    "DiceCE",
    "dice_ce_loss",
    "ema_alpha",
    "ema_update",
    "entropy",
    "largest_connected_component",
    "masked_mean",
    "one_hot",
    "sharpen",
    "sharpen_distribution",
    "sigmoid_rampup",
    "soft_dice_loss",
]
