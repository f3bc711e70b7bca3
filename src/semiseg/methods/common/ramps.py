"""The ramp-up of unsupervised loss weights.

The sigmoid-shaped ramp-up ``exp(-5 (1 - t)^2)`` is from Laine & Aila, "Temporal Ensembling for
Semi-Supervised Learning" (ICLR 2017, arXiv:1610.02242), adopted by Mean Teacher (Tarvainen &
Valpola, NeurIPS 2017) and by every SSL4MIS-derived method (``code/utils/ramps.py``).

The ramp takes the current position and the ramp length in the same unit and returns a factor
in ``[0, 1]``; positions outside ``[0, length]`` are clipped. The one place the formula lives is
here: methods call ``Step.rampup`` (smooth, or a staircase of ``block`` iterations as the
public code's ``sigmoid_rampup(iter // 150, ...)``) through ``Method.ramp_weight``.
"""

from __future__ import annotations

import math

__all__ = ["sigmoid_rampup"]


def _phase(current: float, length: float) -> float:
    """``clip(current / length, 0, 1)`` for ``length > 0``."""
    return min(max(float(current) / float(length), 0.0), 1.0)


def _check_length(length: float) -> None:
    if length < 0:
        raise ValueError(f"ramp length must be >= 0, got {length}")


def sigmoid_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = clip(current / length, 0, 1)``; 1.0 when ``length == 0``.

    Worked values: ``t = 0 -> exp(-5) = 0.006737947``, ``t = 0.5 -> exp(-1.25) = 0.2865048``,
    ``t = 1 -> 1``.
    """
    _check_length(length)
    if length == 0:
        return 1.0
    t = _phase(current, length)
    return math.exp(-5.0 * (1.0 - t) ** 2)
