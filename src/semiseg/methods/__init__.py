"""Semi-supervised segmentation methods, one small module per algorithm over :class:`Method`.

Every module of this package (but ``base`` and ``common``) is imported here, which registers
its algorithm: adding a method is adding a file, a params schema and a catalogue entry.
"""

import importlib
import pkgutil

from semiseg.methods.base import (METHODS, Losses, Method, Step, StepContext, build_method, inference_network,
                                  register)

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("base", "common"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["METHODS", "Losses", "Method", "Step", "StepContext", "build_method", "inference_network", "register"]
