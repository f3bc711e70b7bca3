"""The test-selection oracle's training: a run's very training again, keeping a snapshot every K
iterations (a table's ``oracle: {every: K}``; docs/metrics.md).

``oracle_train(spec, store, split, out_dir, every=K)`` runs the one training loop
(:mod:`semiseg.engine.loop`) on the run's resolved spec: the same seed, the same data stream, the
same validations (a method's hand-off may read the best validated weights: BCP), so on the CPU it
replays the honest run bit for bit. After every K-th iteration, and after the last, it keeps the
evaluated network's weights (what ``model.pt`` would hold, had the run stopped there). At the end
it writes, under the oracle's own folder (:func:`semiseg.paths.oracle_file`), never the run's:

- ``snapshots/iter<N>/``: ``model.pt`` and ``config.json`` (the spec, and the iteration in its
  summary), laid out as a run's, so the infer stage's own functions predict from each;
- ``train.csv``: the replay's loss terms, to set beside the honest run's;
- ``config.json``: the spec and a summary naming every snapshot's iteration.

Snapshots are written to the checkpoint folder while the training goes on, beside its resumable
state, and published together at the end: an interrupted replay resumes like any run, and a
snapshot after its last state is made again on the way.
"""

from __future__ import annotations

import json
from pathlib import Path

from semiseg.config import spec_hash
from semiseg.engine.loop import _Run
from semiseg.engine.outputs import publish
from semiseg.engine.progress import write_rows_csv
from semiseg.engine.runlock import run_folder_lock
from semiseg.engine.state import SigtermFlag
from semiseg.io import atomic_copy, atomic_dir, atomic_write
from semiseg.paths import oracle_snapshot

__all__ = ["oracle_train", "snapshot_iterations"]


def snapshot_iterations(total: int, every: int) -> list[int]:
    """The iterations after which a run of ``total`` iterations is kept: every ``every``-th and the last.

    >>> snapshot_iterations(2500, 1000)
    [1000, 2000, 2500]
    >>> snapshot_iterations(3, 5)
    [3]
    """
    return sorted({*range(every, total + 1, every), total})


def oracle_train(spec: dict, store_path: Path, split_path: Path, out_dir: Path, *, every: int, **kwargs) -> dict:
    """Train the run of ``spec`` again into ``out_dir``, keeping a snapshot after each of
    :func:`snapshot_iterations`; returns the summary written into ``config.json``. Keyword
    arguments are :func:`semiseg.engine.loop.train`'s."""
    if int(every) < 1:
        raise ValueError(f"oracle: every must be a positive number of iterations, got {every!r}")
    ckpt_dir = Path(kwargs.get("checkpoint_dir") or Path(out_dir) / "checkpoints")
    with SigtermFlag() as sigterm, run_folder_lock(ckpt_dir):
        return _OracleRun(spec, store_path, split_path, out_dir, sigterm=sigterm, every=int(every), **kwargs).run()


class _OracleRun(_Run):
    """The training loop of :class:`semiseg.engine.loop._Run`, keeping snapshots; its own outputs."""

    def __init__(self, *args, every: int, code_fingerprint: str = "", **kwargs):
        super().__init__(*args, code_fingerprint=code_fingerprint, **kwargs)
        self.snapshot_every = every
        self.keep = set(snapshot_iterations(self.total, every))
        self.snapshot_dir = self.ckpt_dir / "snapshots"
        # a state saved for another K lacks this K's snapshots: it is not resumed
        self.fingerprint = spec_hash({"spec": self.spec, "code": code_fingerprint, "oracle_every": every})

    def _iteration(self, it: int, store) -> dict:
        row = super()._iteration(it, store)
        if it + 1 in self.keep:
            atomic_write(self.snapshot_dir / f"{it + 1}.pt", self.method.eval_network().state_dict())
        return row

    def _finish(self) -> dict:
        kept = sorted(self.keep)
        summary = {"iterations": self.total, "oracle_every": self.snapshot_every, "snapshots": kept,
                   **self._cost_summary()}
        out = self.out_dir
        with atomic_dir(out / "snapshots") as tmp:
            for iteration in kept:
                folder = tmp / oracle_snapshot(iteration)
                folder.mkdir()
                atomic_copy(self.snapshot_dir / f"{iteration}.pt", folder / "model.pt")
                atomic_write(folder / "config.json", json.dumps(
                    {"spec": self.spec, "summary": {"iteration": iteration, "oracle_every": self.snapshot_every}},
                    indent=2))
        write_rows_csv(self.rows, out / "train.csv")
        atomic_write(out / "config.json", json.dumps({"spec": self.spec, "summary": summary}, indent=2))
        publish(self.ckpt_dir, out, [])  # the resumable state and the snapshots' copies go
        return summary
