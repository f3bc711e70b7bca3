"""Semi-supervised segmentation methods, one small class per algorithm over :class:`Method`."""

from semiseg.methods.base import METHODS, Losses, Method, Step, build_method, register

# Importing the algorithm modules registers them.
from semiseg.methods import supervised, mean_teacher  # noqa: E402,F401

__all__ = ["METHODS", "Losses", "Method", "Step", "build_method", "register"]
