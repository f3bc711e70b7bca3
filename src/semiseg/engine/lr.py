"""Learning-rate policies: the factor on each parameter group's initial lr at an iteration.

- ``poly``: ``(1 − max(t − poly_lag, 0) / T)^0.9``. ``poly_lag`` is when the reference code
  updates its lr: SSL4MIS's Mean Teacher / UA-MT 2D scripts set it *before* incrementing the
  iteration counter, so step ``t`` runs with the lr of ``t − 1`` (lag 1: steps 0 and 1 both at
  the base lr); its CPS script increments first (lag 0). Worked example, ``T = 10``, lag 1:
  steps 0, 1, 2 -> 1, 1, ``0.9^0.9 = 0.9095``.
- ``constant``: 1 (BCP's ACDC script).
- ``step``: ``lr_step_gamma ^ ((t − stage start) // lr_step_every)``, counted from the start of
  the current stage (BCP's LA self-training: x0.1 every 2.5k iterations).
"""

from __future__ import annotations

__all__ = ["LR_POLICIES", "lr_factor"]

LR_POLICIES = ("poly", "constant", "step")


def lr_factor(schedule: dict, iteration: int, total: int, stage_start: int = 0) -> float:
    policy = schedule["lr_policy"]
    if policy == "poly":
        lag = int(schedule.get("poly_lag", 0))
        return (1.0 - max(iteration - lag, 0) / total) ** 0.9
    if policy == "constant":
        return 1.0
    if policy == "step":
        every = int(schedule.get("lr_step_every") or total)
        return float(schedule.get("lr_step_gamma", 0.1)) ** ((iteration - stage_start) // every)
    raise ValueError(f"unknown lr_policy {policy!r}; known: {', '.join(LR_POLICIES)}")
