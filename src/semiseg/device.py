"""The torch device a job runs on, and what a job says when that device cannot hold the work.

Shared by training and inference (and nothing heavier), so that the infer stage's code
fingerprint does not take in the whole training engine.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["ResourceError", "explain_out_of_memory", "select_device"]


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


@contextmanager
def explain_out_of_memory(device: torch.device, where: str, advice: str, error: type[Exception] = ResourceError):
    """Turn ``torch.OutOfMemoryError`` inside the block into ``error``, whose message says where
    the job ran out of memory and which settings to change, in place of a bare traceback."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        raise error(f"out of {device.type} memory {where}: {advice}, or use a device with more memory") from exc
