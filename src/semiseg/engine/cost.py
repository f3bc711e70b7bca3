"""What a training run cost: wall time, speed, the device it ran on and its peak memory.

Written into the run's ``config.json`` summary (:mod:`semiseg.engine.loop`); the tables' ``cost``
column (:mod:`semiseg.reporting.cost`) reads it back. Peak memory is what the device's own
accounting reports: on a GPU the CUDA caching allocator's peak of allocated tensors
(``torch.cuda.max_memory_allocated``, which leaves out the allocator's cached-but-free blocks and
the CUDA context), on a CPU the process's maximum resident set size (``getrusage``'s
``ru_maxrss``: everything the process held, Python and torch included). The two are not the same
quantity; the summary says which it is.
"""

from __future__ import annotations

import resource
import sys

import torch

from semiseg.provenance import environment

__all__ = ["device_name", "peak_memory", "training_cost"]


def device_name(device: torch.device) -> str:
    """The GPU's name (``NVIDIA H100 80GB HBM3``) or the CPU's model, as the provenance records say it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return str(environment()["device"])


def peak_memory(device: torch.device) -> tuple[float, str]:
    """``(MiB, what was measured)``: the CUDA allocator's peak, or the process's maximum RSS.

    ``ru_maxrss`` is in KiB on Linux and in bytes on macOS.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda allocator peak"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "process max RSS"


def training_cost(device: torch.device, *, wall_seconds: float, iterations: int) -> dict:
    """The cost fields of a run's summary: ``iterations_per_second`` (the iterations this process
    ran over its wall time, validation included), ``device_name``, ``peak_memory_mb`` and
    ``peak_memory_kind``.

    >>> cost = training_cost(torch.device("cpu"), wall_seconds=20.0, iterations=300)
    >>> cost["iterations_per_second"], cost["peak_memory_kind"]
    (15.0, 'process max RSS')
    """
    memory, kind = peak_memory(device)
    return {"iterations_per_second": round(iterations / wall_seconds, 3) if wall_seconds > 0 else None,
            "device_name": device_name(device), "peak_memory_mb": round(memory, 1), "peak_memory_kind": kind}
