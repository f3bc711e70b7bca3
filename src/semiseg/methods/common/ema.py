"""Exponential moving average of weights: the Mean Teacher update.

Tarvainen & Valpola, "Mean teachers are better role models: Weight-averaged consistency targets
improve semi-supervised deep learning results" (NeurIPS 2017, arXiv:1703.01780): after every
optimiser step the teacher's parameters become ``theta_t <- alpha * theta_t + (1 - alpha) *
theta_s``. The public code (Mean Teacher, UA-MT, SSL4MIS ``update_ema_variables``) warms the
decay up with ``alpha = min(1 - 1 / (step + 1), decay)``: at step 0 the teacher is a copy of the
student, then it averages uniformly over the steps so far until ``1 - 1/(step+1)`` reaches
``decay`` (step 99 for 0.99), and from there on it is a true EMA.

Buffers (batch-norm running mean / variance / ``num_batches_tracked``) are not parameters and
the public code treats them in three different ways, so :func:`ema_update` makes it a choice:

- ``"copy"`` (default): the teacher takes the student's buffers. A teacher that is only ever run
  in ``eval()`` mode, or under ``no_grad`` in eval mode for inference, would otherwise keep
  its initial statistics (mean 0, variance 1) forever and normalise with them; the student's
  running statistics are themselves a moving average (BN momentum 0.1) over recent batches of
  nearly the same weights, so copying them is a good, cheap estimate that never lags behind.
- ``"ema"``: floating-point buffers are averaged with the same ``alpha`` as the parameters
  (integer ones are copied); BCP's ``update_model_ema`` averages the whole ``state_dict``.
- ``"keep"``: buffers are left alone, so they are whatever the teacher's own forward passes in
  train mode accumulated; this is SSL4MIS / UA-MT, whose teacher is forwarded in train mode on
  every step (and then normalises with batch statistics anyway).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BUFFER_MODES", "ema_alpha", "ema_update"]

BUFFER_MODES = ("copy", "ema", "keep")


def ema_alpha(decay: float, step: int) -> float:
    """The warmed-up EMA factor ``min(1 - 1 / (step + 1), decay)``.

    Worked values for ``decay = 0.99``: step 0 -> 0.0, step 9 -> 0.9, step 99 -> 0.99,
    step 1000 -> 0.99.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return min(1.0 - 1.0 / (step + 1), float(decay))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, step: int, *,
               buffers: str = "copy", warmup: bool = True) -> float:
    """Move ``teacher``'s weights towards ``student``'s in place; return the ``alpha`` used.

    ``teacher <- alpha * teacher + (1 - alpha) * student`` on every parameter, with
    ``alpha = ema_alpha(decay, step)``, or ``decay`` itself from the first update when
    ``warmup`` is false (BCP); buffers follow ``buffers`` (see the module docstring).
    ``step`` is the 0-based count of optimiser steps taken before this update (SSL4MIS passes
    ``iter_num`` after incrementing it, i.e. 1 on the first update; passing the engine's
    0-based iteration makes the first update a plain copy).

    The two modules must have the same architecture: parameters and buffers are matched by
    name and shape, and a mismatch raises ``ValueError`` instead of silently pairing the
    wrong tensors.
    """
    if buffers not in BUFFER_MODES:
        raise ValueError(f"buffers must be one of {BUFFER_MODES}, got {buffers!r}")
    alpha = ema_alpha(decay, step)  # also validates decay and step
    if not warmup:
        alpha = float(decay)

    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    _check_same(t_params, s_params, "parameters")
    # lerp(t, s, w) = t + w * (s - t) = (1 - w) * t + w * s, with w = 1 - alpha; one fused call
    # over every parameter (one kernel launch per device and dtype group on a GPU instead of one
    # per tensor), bit-identical to a loop of Tensor.lerp_.
    _lerp_all(list(t_params.values()), [s_params[name] for name in t_params], 1.0 - alpha)

    if buffers != "keep":
        t_bufs = dict(teacher.named_buffers())
        s_bufs = dict(student.named_buffers())
        _check_same(t_bufs, s_bufs, "buffers")
        averaged = [name for name, t in t_bufs.items() if buffers == "ema" and t.is_floating_point()]
        _lerp_all([t_bufs[name] for name in averaged], [s_bufs[name] for name in averaged], 1.0 - alpha)
        for name, t in t_bufs.items():
            if name not in averaged:
                t.copy_(s_bufs[name].detach())
    return alpha


def _lerp_all(targets: list[torch.Tensor], ends: list[torch.Tensor], weight: float) -> None:
    """``t.lerp_(e, weight)`` for every pair, as one ``torch._foreach_lerp_`` call."""
    if targets:
        torch._foreach_lerp_(targets, [e.detach().to(t.dtype) for t, e in zip(targets, ends)], weight)


def _check_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], kind: str) -> None:
    if a.keys() != b.keys():
        missing = sorted(a.keys() ^ b.keys())
        raise ValueError(f"teacher and student {kind} differ in names: {missing[:5]}")
    for name, t in a.items():
        if t.shape != b[name].shape:
            raise ValueError(
                f"teacher and student {kind} {name!r} differ in shape: "
                f"{tuple(t.shape)} vs {tuple(b[name].shape)}"
            )
