"""Semi-supervised segmentation methods, one home per algorithm over :class:`Method`.

Every module and subpackage of this package but ``base`` and ``common`` is one method, imported
here, which registers its algorithm: adding a method is adding a file (or, for a method with
helpers of its own, a package such as ``crln/``, whose ``__init__`` registers it and whose other
modules are its helpers), a params schema and a catalogue entry.
"""

import importlib
import pkgutil

from semiseg.methods.base import (METHODS, Losses, Method, Step, StepContext, build_method, inference_network,
                                  register)

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("base", "common"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["METHODS", "Losses", "Method", "Step", "StepContext", "build_method", "inference_network", "register"]
