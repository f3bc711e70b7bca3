"""The test-selection oracle's scoring: every snapshot of a replayed run on the TEST set, and the
best of them (docs/metrics.md).

``oracle_evaluate(snapshots, store, split, out_dir, summary)`` predicts the run's test cases with
each snapshot (:func:`semiseg.inference.run.infer`, the infer stage's own function) and scores
them (:func:`semiseg.metrics.evaluate.evaluate`, the evaluate stage's), into
``test/iter<N>/predictions/`` and ``test/iter<N>/metrics.csv``; the summary (``oracle.json``)
lists every snapshot's summary metrics and names the best, the one a selection on the test set
would print. That choice reads the test labels: it is what the honest pipeline never does, and
the table shows it only in its own column, titled as what it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from semiseg.inference.run import infer
from semiseg.io import atomic_dir, atomic_write
from semiseg.metrics.csv_io import read_metrics_csv
from semiseg.metrics.evaluate import evaluate
from semiseg.metrics.summary import summarise
from semiseg.paths import oracle_snapshot

__all__ = ["SELECTED_BY", "best_snapshot", "oracle_evaluate"]

#: The summary metric the oracle selects on: the tables' Dice (mean over test cases and classes).
SELECTED_BY = "dice"


def best_snapshot(scores: list[dict]) -> dict:
    """The entry of ``scores`` (each with ``iteration`` and :data:`SELECTED_BY`) with the highest
    Dice; on a tie the earliest iteration (the first a selection would meet).

    >>> best_snapshot([{"iteration": 1, "dice": 0.5}, {"iteration": 2, "dice": 0.7},
    ...                {"iteration": 3, "dice": 0.7}])["iteration"]
    2
    """
    if not scores:
        raise ValueError("no snapshot scores to select from")
    return max(sorted(scores, key=lambda s: s["iteration"]), key=lambda s: s[SELECTED_BY])


def _snapshot_iteration(folder: Path) -> int:
    with open(folder / "config.json") as fh:
        return int(json.load(fh)["summary"]["iteration"])


def oracle_evaluate(snapshots: Path, store_path: Path, split_path: Path, out_dir: Path, summary_path: Path, *,
                    distance_unit: str = "voxel", device: str | None = None) -> dict:
    """Score every snapshot folder of ``snapshots`` on the test cases of ``split_path`` into
    ``out_dir`` (written whole or not at all) and write the summary to ``summary_path``; returns it."""
    folders = sorted((f for f in Path(snapshots).iterdir() if (f / "model.pt").is_file()), key=_snapshot_iteration)
    if not folders:
        raise FileNotFoundError(f"{snapshots}: no snapshot (<folder>/model.pt) to score; the oracle_train job "
                                "of the run writes them")
    scores = []
    with atomic_dir(out_dir) as tmp:
        for folder in folders:
            iteration = _snapshot_iteration(folder)
            test = tmp / oracle_snapshot(iteration)
            infer(folder, store_path, split_path, test / "predictions", device=device)
            evaluate(test / "predictions", store_path, test / "metrics.csv", distance_unit=distance_unit)
            values = summarise(read_metrics_csv(test / "metrics.csv"))
            scores.append({"iteration": iteration, "metrics": f"{Path(out_dir).name}/{oracle_snapshot(iteration)}/"
                                                              "metrics.csv", **values})
    best = best_snapshot(scores)
    summary = {"selected_by": SELECTED_BY, "on": "test", "best_iteration": best["iteration"], "best": best,
               "snapshots": scores}
    atomic_write(summary_path, json.dumps(summary, indent=1))
    return summary

