"""The torch device a job runs on, and what a job says when that device cannot hold the work.

Shared by training and inference (and nothing heavier), so that the infer stage's code
fingerprint does not take in the whole training engine.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import torch

__all__ = ["ResourceError", "deterministic_algorithms", "explain_out_of_memory", "select_device"]


class ResourceError(RuntimeError):
    """A job cannot run on what it was given (no such device, memory exhausted); the message
    says what to change."""


def select_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, or ``auto`` (CUDA when torch sees a GPU, else the CPU)."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        raise ResourceError(f"unknown device {name!r}; allowed: auto, cuda, cpu")
    if not torch.cuda.is_available():
        raise ResourceError("device 'cuda' was asked for but torch sees no CUDA device")
    return torch.device("cuda")


def deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)``, without the import of
    ``torch._inductor`` that the public call makes only to set the inductor's own ``deterministic``
    flag: that flag concerns ``torch.compile``, which semiseg does not use, and the import costs
    every training job about 1.6 s of a CPU core. Where the inductor is loaded already, the public
    call is made."""
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)


@contextmanager
def explain_out_of_memory(device: torch.device, where: str, advice: str, error: type[Exception] = ResourceError):
    """Turn ``torch.OutOfMemoryError`` inside the block into ``error``, whose message says where
    the job ran out of memory and which settings to change, in place of a bare traceback."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        raise error(f"out of {device.type} memory {where}: {advice}, or use a device with more memory") from exc
