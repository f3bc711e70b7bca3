"""glibc malloc settings for the compute-heavy stages (train, infer, evaluate).

A 3D network's activations are tens of MB each (a V-Net layer at 112 x 112 x 80 and 16 channels:
57 MB). glibc serves blocks that large by ``mmap`` and returns them with ``munmap`` on free, so every
forward pass maps fresh pages and the kernel zero-fills each of them on first touch: about 300,000
minor page faults per V-Net window at batch 1 on CPU. Raising three thresholds keeps freed memory in
the heap for the next pass instead:

- ``M_MMAP_THRESHOLD`` (``MALLOC_MMAP_THRESHOLD_``): blocks below it come from the heap, not ``mmap``;
- ``M_TRIM_THRESHOLD`` (``MALLOC_TRIM_THRESHOLD_``): free memory at the heap's top is kept up to it;
- ``M_TOP_PAD`` (``MALLOC_TOP_PAD_``): the heap grows by this much extra each time it grows.

:func:`tune_allocator` sets them with ``mallopt`` when ``semiseg`` starts a stage, in the process
itself: glibc reads the ``MALLOC_*_`` environment variables only when a process starts, so
putting them in a rule's environment would cover only the workflow's jobs (not ``semiseg`` run by
hand or by a cluster's own wrapper) and a re-exec of the CLI would cost a second interpreter start.
``mallopt`` applies from the call on, which is before any tensor is allocated. It is a no-op where
the C library is not glibc (macOS, musl) and can be turned off with ``SEMISEG_MALLOC=off``.

Measured on this project's 2-core CPU machine (see benchmarks/RESULTS.md): a V-Net window's page
faults fall from about 310,000 to under 5,000, at 0.1-0.2 GB more resident memory. GPU runs
allocate tensors on the device; the setting changes little there but costs nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["MALLOPT", "tune_allocator"]

log = logging.getLogger("semiseg.allocator")

#: mallopt parameter numbers (glibc's malloc.h) and the values set.
MALLOPT = {
    "M_TRIM_THRESHOLD": (-1, 2**31 - 1),
    "M_TOP_PAD": (-2, 512 * 2**20),
    "M_MMAP_THRESHOLD": (-3, 2**31 - 1),
}


def tune_allocator() -> dict[str, bool]:
    """Apply :data:`MALLOPT` with glibc's ``mallopt``; returns ``{name: accepted}`` (empty when
    not glibc or when ``SEMISEG_MALLOC=off``)."""
    if os.environ.get("SEMISEG_MALLOC", "").lower() in ("off", "0", "false", "no"):
        return {}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: musl has mallopt as a stub that does nothing
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = {name: bool(mallopt(param, value)) for name, (param, value) in MALLOPT.items()}
    log.debug("mallopt: %s", done)
    return done
