"""The shared base of every method: a registry, the step context, the loss container and the
hooks through which the engine drives a method.

A method is a small :class:`Method` subclass. It builds its networks in ``__init__`` (into
``self.models``, an ``nn.ModuleList``) and turns one two-stream batch into named loss terms in
:meth:`Method.training_step`. The engine (``semiseg.engine``) owns the loop, optimiser, lr
policy, augmentation, validation, checkpoints and logging, and calls the method's hooks. Every
per-step hook gets the one :class:`StepContext` of the iteration (the step, the batch and its
views, the random generator, the statistics channel), so a method keeps nothing of a step on
``self``:

=========================  ==================================================================
hook                       what the engine does with it
=========================  ==================================================================
``param_groups()``         the groups of the main SGD optimiser (default: every trainable
                           parameter of ``models``; a method may add modules outside the
                           networks, e.g. learned prototypes, each group with an ``lr_scale``)
``extra_optimizers()``     optimisers the method owns besides the main one (a separately
                           optimised scalar): stepped, lr-scheduled (unless a group is
                           ``fixed_lr``) and checkpointed with it
``stages(total)``          named stages and the iteration each starts at (BCP: pre-training,
                           then self-training); ``on_stage_start`` runs before a stage's first
                           step and may ask for a fresh optimiser
``make_views(batch, g)``   extra views of a batch (weak / strong) before ``training_step``;
                           they are the context's ``batch``
``training_step(ctx)``     the named loss terms of one iteration
``second_phase(ctx)``      losses the engine minimises after the main step, each with one
                           optimiser of ``extra_optimizers()`` (CRLN's Eq. 16 step of ``a``)
``after_optimizer_step``   after every optimiser step and phase (EMA updates)
``eval_network()``         the network validation and inference run (a wrapper for
                           multi-head networks, see :mod:`semiseg.nets.heads`)
``inference_network()``    a fresh module of ``eval_network()``'s shape for the infer stage to
                           load ``model.pt`` into (default: the plain network)
=========================  ==================================================================

Families that share more than this live in :mod:`semiseg.methods.common`: the teacher–student
base (:mod:`~semiseg.methods.common.teacher`) and the two-network base
(:mod:`~semiseg.methods.common.dual_branch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from semiseg.methods.common.losses import dice_ce_loss
from semiseg.methods.common.ramps import sigmoid_rampup

__all__ = ["METHODS", "Losses", "Method", "StageContext", "Step", "StepContext", "TwoStream", "build_method",
           "inference_network", "register", "two_stream"]

METHODS: dict[str, type["Method"]] = {}


def register(name: str):
    """Class decorator: make a method available under `name` (the config's `algorithm`).

    The decorator must be written literally as ``@register("<name>")`` on the class, in a
    module ``methods/<name>.py`` or a package's ``methods/<name>/__init__.py``: the workflow
    finds a method's source file by that text, without importing torch
    (:func:`semiseg.fingerprint.method_files`).
    """

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


def inference_network(spec: dict, net_factory: Callable[[], nn.Module]) -> nn.Module:
    """A fresh module of the shape the run's ``eval_network()`` had, for its ``model.pt``
    (:meth:`Method.inference_network` of the spec's algorithm)."""
    algo = spec["method"]["algorithm"]
    if algo not in METHODS:
        raise ValueError(f"unknown algorithm {algo!r}; registered: {', '.join(sorted(METHODS))}")
    return METHODS[algo].inference_network(spec, net_factory)


@dataclass(frozen=True)
class Step:
    """Where training is: ``iteration`` (0-based, the step being taken) of ``total``."""

    iteration: int
    total: int

    @property
    def progress(self) -> float:
        return self.iteration / max(self.total, 1)

    def rampup(self, fraction: float, block: int = 1) -> float:
        """Sigmoid ramp-up ``exp(-5(1 - t)^2)`` over the first ``fraction`` of training (0: 1.0 at once).

        ``block > 1`` makes it a staircase that moves once per ``block`` iterations, as the
        public code's ``sigmoid_rampup(iter_num // 150, 200)`` does (SSL4MIS, ALHVR, SGRS-Net:
        ``block = 150``, 200 blocks = all of 30k iterations, ``fraction = 1``). Worked example,
        ``total = 30000, fraction = 1, block = 150``: iteration 149 -> ``exp(-5) = 0.006738``
        (block 0), 15000 -> ``exp(-5 · 0.5²) = 0.286505`` (block 100 of 200).
        """
        if block < 1:
            raise ValueError(f"ramp block must be >= 1 iteration, got {block}")
        return sigmoid_rampup(self.iteration // block, fraction * self.total / block)


@dataclass
class StepContext:
    """Everything of one iteration that a method's hooks may use, made by the engine per step.

    ``step``: where training is (:class:`Step`); ``batch``: the engine's two-stream batch with
    the method's views (:meth:`Method.make_views`); ``generator``: the step's random generator
    (seeded from the run's seed and the iteration, its state after the batch and the views were
    drawn: a method's own draws from it are reproducible and resume exactly); ``stats``: the
    statistics channel, scalars worth logging that are not loss terms (a ramp weight, a mask
    ratio), written by any hook. A 0-dim tensor there is read with the loss terms in the
    engine's one transfer per step (no host sync of its own). Tests that draw nothing may leave
    ``batch`` and ``generator`` out.
    """

    step: Step
    batch: dict[str, Tensor] = field(default_factory=dict)
    generator: torch.Generator = field(default_factory=torch.Generator)
    stats: dict[str, float | Tensor] = field(default_factory=dict)


@dataclass
class Losses:
    """The total loss the optimiser minimises and its named terms (logged, NaN-checked)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    # The step's statistics as returned (usually its context's ``stats``); the engine logs these
    # and every other entry of the context's channel, in one transfer.
    stats: dict[str, float | torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class TwoStream:
    """A batch's labeled images and labels and its unlabeled images; ``images`` is both, labeled first."""

    labeled: Tensor
    label: Tensor
    unlabeled: Tensor

    @property
    def n_labeled(self) -> int:
        return self.labeled.shape[0]

    @property
    def images(self) -> Tensor:
        return torch.cat([self.labeled, self.unlabeled])


def two_stream(batch: dict[str, Tensor]) -> TwoStream:
    """The two streams of an engine batch (``labeled_image``, ``labeled_label``, ``unlabeled_image``)."""
    return TwoStream(batch["labeled_image"], batch["labeled_label"], batch["unlabeled_image"])


@dataclass
class StageContext:
    """What the engine offers a method when a stage starts.

    ``best_models`` returns the state dict of ``models`` that scored best on validation so far
    (``None`` before any validation, or without a val split); ``reset_optimizer``, set by the
    hook, makes the engine start the main optimiser afresh (momentum dropped); ``reset_best``
    (default true) makes the stage's own validation choose the final checkpoint.
    """

    best_models: Callable[[], dict | None] = lambda: None
    reset_optimizer: bool = False
    reset_best: bool = True


class Method(nn.Module):
    """Base class of all algorithms (see the module docstring for the hooks).

    Subclasses fill ``self.models`` with the networks they train and implement
    :meth:`training_step`. Anything else they hold as submodules (an EMA teacher, prototypes)
    is saved in checkpoints with them.
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

    # ---- what the engine calls

    def training_step(self, ctx: StepContext) -> Losses:
        raise NotImplementedError

    def second_phase(self, ctx: StepContext) -> dict[str, Tensor]:
        """Losses to minimise after the main step, by the name of the optimiser (one of
        :meth:`extra_optimizers`) that minimises each alone: the engine zeroes it, back-propagates
        the loss and steps it, outside autocast, in the order given (none by default). Each loss
        is computed here, so it sees the networks the main step just updated."""
        return {}

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """Called after each step, second phase included (EMA updates go here)."""

    def eval_network(self) -> nn.Module:
        """The network inference and validation use (the first model unless overridden)."""
        return self.models[0]

    @classmethod
    def inference_network(cls, spec: dict, net_factory: Callable[[], nn.Module]) -> nn.Module:
        """A fresh module of :meth:`eval_network`'s shape, into which inference loads the run's
        ``model.pt``: the plain network, unless a method evaluates something else."""
        return net_factory()

    def param_groups(self) -> list[dict[str, Any]]:
        """The main optimiser's parameter groups: by default every trainable parameter of
        ``models``. A group may carry ``lr_scale`` (its lr is the schedule's times that)."""
        return [{"params": [p for p in self.models.parameters() if p.requires_grad]}]

    def extra_optimizers(self, schedule: dict) -> dict[str, torch.optim.Optimizer]:
        """Optimisers the method owns besides the main one, by name (none by default). The lr
        policy scales their groups' lr as the main one's, except a group with ``fixed_lr: True``."""
        return {}

    def stages(self, total: int) -> list[tuple[str, int]]:
        """``(name, first iteration)`` of each stage of a ``total``-iteration run, in order."""
        return [("train", 0)]

    def on_stage_start(self, name: str, step: Step, ctx: StageContext) -> None:
        """Runs before the first step of every stage but the first (a hand-off)."""

    def make_views(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        """Extra views of the batch (e.g. ``unlabeled_image_strong``); the batch as is by default."""
        return batch

    # ---- shared pieces

    def supervised_loss(self, logits: Tensor, label: Tensor, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The papers' supervised term, returned as (CE, Dice); the common code uses their mean.
        ``weight``: per-pixel weights ``(B, *spatial)`` (:func:`dice_ce_loss`; None: all 1)."""
        return dice_ce_loss(logits, label, weight=weight)

    def ramp_weight(self, step: Step, weight: str = "consistency", rampup: str = "consistency_rampup") -> float:
        """``params[weight]`` times the sigmoid ramp over ``params[rampup]`` of training, as a
        staircase of ``params['rampup_block']`` iterations (1: smooth)."""
        block = int(self.params["rampup_block"])
        return float(self.params[weight]) * step.rampup(float(self.params[rampup]), block)
