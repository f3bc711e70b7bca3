"""Ramp-up and ramp-down schedules for unsupervised loss weights.

The sigmoid-shaped ramp-up ``exp(-5 (1 - t)^2)`` is from Laine & Aila, "Temporal Ensembling for
Semi-Supervised Learning" (ICLR 2017, arXiv:1610.02242), adopted by Mean Teacher (Tarvainen &
Valpola, NeurIPS 2017) and by every SSL4MIS-derived method (``code/utils/ramps.py``); the cosine
ramp-down is from Loshchilov & Hutter, "SGDR" (ICLR 2017, arXiv:1608.03983).

Each ramp takes the current position and the ramp length in the same unit and returns a factor
in ``[0, 1]``. Positions outside ``[0, length]`` are clipped (the public ``linear_rampup`` and
``cosine_rampdown`` assert instead; clipping makes the schedule total). The one place the
formula lives is here: methods call :func:`consistency_weight` or ``Step.rampup``.
"""

from __future__ import annotations

import math

__all__ = [
    "RAMPUPS",
    "consistency_weight",
    "cosine_rampdown",
    "linear_rampup",
    "sigmoid_rampup",
]


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


def linear_rampup(current: float, length: float) -> float:
    """``t = clip(current / length, 0, 1)``; 1.0 when ``length == 0``."""
    _check_length(length)
    if length == 0:
        return 1.0
    return _phase(current, length)


def cosine_rampdown(current: float, length: float) -> float:
    """``0.5 (cos(pi t) + 1)`` with ``t = clip(current / length, 0, 1)``: 1 -> 0 over ``length``.

    A zero-length ramp-down is already over and gives 0.0.
    """
    _check_length(length)
    if length == 0:
        return 0.0
    t = _phase(current, length)
    return 0.5 * (math.cos(math.pi * t) + 1.0)


def _constant(current: float, length: float) -> float:
    return 1.0


#: Ramp-up schedules by name for :func:`consistency_weight`.
RAMPUPS = {
    "sigmoid": sigmoid_rampup,
    "linear": linear_rampup,
    "constant": _constant,
}


def consistency_weight(iteration: int, *, weight: float, rampup_length: float,
                       schedule: str = "sigmoid", iterations_per_unit: int = 1) -> float:
    """``weight * ramp(iteration // iterations_per_unit, rampup_length)``.

    Args:
        iteration: the current training iteration (0-based).
        weight: the final weight (the papers' ``consistency``, ``lambda``...).
        rampup_length: ramp length, in units of ``iterations_per_unit`` iterations.
        schedule: ``"sigmoid"`` (default), ``"linear"`` or ``"constant"``.
        iterations_per_unit: SSL4MIS's 2D scripts ramp over "epochs" of 150 iterations
            (``sigmoid_rampup(iter_num // 150, 200)``), a staircase; passing
            ``iterations_per_unit=150, rampup_length=200`` reproduces it exactly, while the
            default 1 gives the smooth ramp over ``rampup_length`` iterations.

    Example: ``consistency_weight(0, weight=0.1, rampup_length=200)`` is
    ``0.1 * exp(-5) = 0.0006737947``.
    """
    try:
        ramp = RAMPUPS[schedule]
    except KeyError:
        raise ValueError(
            f"unknown ramp-up schedule {schedule!r}; known: {', '.join(sorted(RAMPUPS))}"
        ) from None
    if iterations_per_unit < 1:
        raise ValueError(f"iterations_per_unit must be >= 1, got {iterations_per_unit}")
    return float(weight) * ramp(iteration // iterations_per_unit, rampup_length)
