"""What a training run must keep to be resumed bit for bit: seeds, RNG states, SIGTERM and the
resumable state file.

A run's resumable state (``checkpoints/state.pt``) holds the method (networks, EMA teachers,
anything else it registered), every optimiser, the iteration, the RNG states, the best
validation score and its iteration. It is written every ``checkpoint_interval`` iterations and
on SIGTERM, and resumed only when it was written for the same spec and code fingerprint.

Each write keeps the state it replaces as ``state.previous.pt`` (a hard link, or a copy where
the file system has none). A state that cannot be read (truncated by a full disk, damaged) is
moved aside to ``state.pt.damaged``, named in the log, and the run resumes from the previous
state, or from the start when that cannot be read either (the log says which): no retry, with
``--forcerun`` or not, is stuck on it.
"""

from __future__ import annotations

import logging
import os
import random
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from semiseg.io import atomic_copy, atomic_write, temp_name

__all__ = ["Preempted", "ResumeState", "SigtermFlag", "damaged_path", "load_state", "previous_path", "rng_state",
           "save_state", "seed_everything", "set_rng_state"]

#: What a state file must hold (see :func:`save_state`).
_STATE_KEYS = ("fingerprint", "iteration", "method", "optimizers", "rng", "best", "best_iteration")

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


def previous_path(path: Path) -> Path:
    """Where the state that ``path`` replaced is kept: ``state.previous.pt`` beside ``state.pt``."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def damaged_path(path: Path) -> Path:
    """Where an unreadable state is moved aside: ``state.pt.damaged``."""
    return path.with_name(f"{path.name}.damaged")


def save_state(path: Path, fingerprint: str, progress: ResumeState, method: torch.nn.Module,
               optimizers: dict[str, torch.optim.Optimizer], device: torch.device) -> None:
    """Write the resumable state to ``path`` atomically, keeping the one it replaces as
    :func:`previous_path` (``state.pt`` exists throughout: a kill at any point leaves both
    readable or the new one not yet in place)."""
    if path.exists():
        previous, link = previous_path(path), temp_name(previous_path(path))
        link.unlink(missing_ok=True)
        try:
            os.link(path, link)  # the same bytes under a second name; the write below gets a new inode
            os.replace(link, previous)
        except OSError:
            atomic_copy(path, previous)
    atomic_write(path, {"fingerprint": fingerprint, "iteration": progress.iteration, "method": method.state_dict(),
                        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                        "rng": rng_state(device), "best": progress.best, "best_iteration": progress.best_iteration})


def _read_state(path: Path, device: torch.device) -> dict:
    """The state in ``path``; ValueError (with the reason) when it cannot be read or lacks a key."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, UnpicklingError, ...
        reason = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:300]  # torch's first sentence
        raise ValueError(f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__) from None
    if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
        missing = [k for k in _STATE_KEYS if not isinstance(state, dict) or k not in state]
        raise ValueError(f"not a state file: no {', '.join(missing)}")
    return state


def load_state(path: Path, fingerprint: str, method: torch.nn.Module,
               optimizers: dict[str, torch.optim.Optimizer], device: torch.device) -> ResumeState:
    """Restore ``method``, ``optimizers`` and the RNGs from ``path`` if it was written for
    ``fingerprint``; the progress to continue from (iteration 0 when nothing was resumed).

    A ``path`` that cannot be read is moved to :func:`damaged_path` (a warning names both) and the
    state it replaced (:func:`previous_path`) is resumed instead, if that one can be read."""
    if not path.exists():
        return ResumeState()
    try:
        state = _read_state(path, device)
    except ValueError as exc:
        os.replace(path, damaged_path(path))
        previous = previous_path(path)
        try:
            state = _read_state(previous, device) if previous.exists() else None
        except ValueError:
            state = None
        if state is None:
            log.warning("%s cannot be read (%s); moved it aside to %s. No earlier state to resume from: "
                        "training this run from the start", path, exc, damaged_path(path))
            return ResumeState()
        log.warning("%s cannot be read (%s); moved it aside to %s and resuming from the state before it, %s "
                    "(iteration %d)", path, exc, damaged_path(path), previous, state["iteration"])
        atomic_copy(previous, path)
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
