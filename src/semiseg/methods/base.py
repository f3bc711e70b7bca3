"""The shared base of every method: a registry, the step context and the loss container.

A method is a small :class:`Method` subclass. It builds its networks in ``__init__`` (into
``self.models``, an ``nn.ModuleList`` the optimiser trains) and turns one two-stream batch into
named loss terms in :meth:`Method.training_step`. The engine (``semiseg.engine``) owns the loop,
optimiser, schedule, augmentation, validation, checkpoints and logging.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import nn

from semiseg.methods.common.losses import dice_ce_loss
from semiseg.methods.common.ramps import sigmoid_rampup

__all__ = ["METHODS", "Losses", "Method", "Step", "build_method", "register"]

METHODS: dict[str, type["Method"]] = {}


def register(name: str):
    """Class decorator: make a method available under `name` (the config's `algorithm`)."""

    def deco(cls):
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice ({METHODS[name].__module__}, {cls.__module__})")
        cls.algorithm = name
        METHODS[name] = cls
        return cls

    return deco


def build_method(spec: dict, net_factory: Callable[[], nn.Module]) -> "Method":
    """Instantiate the algorithm named by ``spec['method']['algorithm']``."""
    algo = spec["method"]["algorithm"]
    if algo not in METHODS:
        raise ValueError(f"unknown algorithm {algo!r}; registered: {', '.join(sorted(METHODS))}")
    return METHODS[algo](spec, net_factory)


@dataclass(frozen=True)
class Step:
    """Where training is: ``iteration`` (0-based, the step being taken) of ``total``."""

    iteration: int
    total: int

    @property
    def progress(self) -> float:
        return self.iteration / max(self.total, 1)

    def rampup(self, fraction: float) -> float:
        """Sigmoid ramp-up exp(-5(1-t)^2) over the first `fraction` of training (0 → 1.0 at once)."""
        return sigmoid_rampup(self.iteration, fraction * self.total)


@dataclass
class Losses:
    """The total loss the optimiser minimises and its named terms (logged, NaN-checked)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    # Scalars worth logging that are not loss terms (a ramp weight, a mask ratio).
    stats: dict[str, float] = field(default_factory=dict)


class Method(nn.Module):
    """Base class of all algorithms.

    Subclasses fill ``self.models`` with the networks the optimiser trains and implement
    :meth:`training_step`. Anything else they hold as submodules (an EMA teacher) is saved in
    checkpoints with them.
    """

    algorithm: ClassVar[str] = ""
    #: Whether the method reads the unlabeled stream (the engine skips loading it otherwise).
    uses_unlabeled: ClassVar[bool] = True

    def __init__(self, spec: dict, net_factory: Callable[[], nn.Module]):
        super().__init__()
        self.spec = spec
        self.params = dict(spec["method"]["params"])
        self.num_classes = int(spec["dataset"]["num_classes"])
        self.dims = int(spec["dataset"]["dims"])
        self.net_factory = net_factory
        self.models = nn.ModuleList()

    def training_step(self, batch: dict[str, torch.Tensor], step: Step) -> Losses:
        raise NotImplementedError

    def after_optimizer_step(self, step: Step) -> None:
        """Called after each optimiser step (EMA updates go here)."""

    def eval_network(self) -> nn.Module:
        """The network inference and validation use (the first model unless overridden)."""
        return self.models[0]

    def supervised_loss(self, logits: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The papers' supervised term, returned as (CE, Dice); the common code uses their mean."""
        return dice_ce_loss(logits, label)
