"""What a training run must keep to be resumed bit for bit: seeds, RNG states, SIGTERM and the
resumable state file.

A run's resumable state (``checkpoints/state.pt``) holds the method (networks, EMA teachers,
anything else it registered), every optimiser, the iteration, the RNG states, the best
validation score and its iteration. It is written every ``checkpoint_interval`` iterations and
on SIGTERM, and resumed only when it was written for the same spec and code fingerprint.
"""

from __future__ import annotations

import logging
import random
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from semiseg.io import atomic_write

__all__ = ["Preempted", "ResumeState", "SigtermFlag", "load_state", "rng_state", "save_state",
           "seed_everything", "set_rng_state"]

log = logging.getLogger("semiseg.train")


class Preempted(SystemExit):
    """Raised after SIGTERM once the checkpoint is written; exits with status 143 (128 + 15)."""

    def __init__(self):
        super().__init__(143)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class SigtermFlag:
    """Turns SIGTERM (SLURM's warning before a time limit or preemption) into a flag the loop checks."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@dataclass
class ResumeState:
    """Where a run stands: the next iteration and the best validation so far."""

    iteration: int = 0
    best: float = -1.0
    best_iteration: int = -1


def save_state(path: Path, fingerprint: str, progress: ResumeState, method: torch.nn.Module,
               optimizers: dict[str, torch.optim.Optimizer], device: torch.device) -> None:
    atomic_write(path, {"fingerprint": fingerprint, "iteration": progress.iteration, "method": method.state_dict(),
                        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                        "rng": rng_state(device), "best": progress.best, "best_iteration": progress.best_iteration})


def load_state(path: Path, fingerprint: str, method: torch.nn.Module,
               optimizers: dict[str, torch.optim.Optimizer], device: torch.device) -> ResumeState:
    """Restore ``method``, ``optimizers`` and the RNGs from ``path`` if it was written for
    ``fingerprint``; the progress to continue from (iteration 0 when nothing was resumed)."""
    if not path.exists():
        return ResumeState()
    state = torch.load(path, map_location=device, weights_only=False)
    if state["fingerprint"] != fingerprint:
        log.warning("%s was written for another spec (%s != %s); starting over", path, state["fingerprint"],
                    fingerprint)
        return ResumeState()
    method.load_state_dict(state["method"])
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    set_rng_state(state["rng"], device)
    log.info("resuming from %s at iteration %d", path, state["iteration"])
    return ResumeState(state["iteration"], state["best"], state["best_iteration"])
