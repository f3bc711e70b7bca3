"""Putting a finished run's outputs in place so that an interruption at any point is resumable.

A run ends by copying its best checkpoints out of ``checkpoints/`` to the declared outputs
(:func:`publish`): each copy is atomic (:func:`semiseg.io.atomic_copy`: a temporary file, then a
rename), ``model.pt`` is the last (its presence means the run is complete), and the checkpoint
folder is removed only after all of them, its resumable ``state.pt`` first. So a training killed
anywhere in between finds, when started again, either its state and every best checkpoint (it
resumes and publishes again), or no state (it trains from the start), never a state whose best
weights are gone.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from semiseg.io import atomic_copy

__all__ = ["publish"]


def publish(checkpoint_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
            files: Sequence[tuple[str, str]], *, state: str = "state.pt") -> None:
    """Copy each ``(checkpoint name, output name)`` of `files`, in order, from `checkpoint_dir`
    to `out_dir`, then remove `checkpoint_dir` (its `state` file first).

    A checkpoint that is no longer there but whose output is (published by an earlier attempt of
    the same run, interrupted before it removed the folder) is kept as published.

    Raises:
        FileNotFoundError: neither the checkpoint nor its output exists (names both, and how to
            start the run over).
    """
    ckpt, out = Path(checkpoint_dir), Path(out_dir)
    for src_name, dst_name in files:
        src, dst = ckpt / src_name, out / dst_name
        if src.is_file():
            atomic_copy(src, dst)
        elif not dst.is_file():
            raise FileNotFoundError(f"{src}: the run's best checkpoint is missing, and so is {dst}; the saved "
                                    f"state cannot be finished. Delete {ckpt} to train this run from the start")
    (ckpt / state).unlink(missing_ok=True)
    shutil.rmtree(ckpt, ignore_errors=True)
