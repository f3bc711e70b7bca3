"""What each table cell cost: the ``cost`` column of a table and its footer line.

A run's cost (:func:`run_cost`) is read from what it wrote: its training's ``config.json``
summary (wall time, iterations per second, device name, peak memory:
:mod:`semiseg.engine.cost`) and its infer job's provenance record (``provenance.infer.json``:
the inference's wall time). A cell shows the mean over the row's runs of the device time per run
(training plus inference) in hours, and the largest peak memory of its runs, naming the device::

    0.0167 h/run, 412 MB peak (cpu: AMD EPYC 7B13)

Runs of one cell on different devices are not averaged together: the cell gives each device its
own figure, and the footer names every device the table's runs used.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from semiseg.provenance import read_record
from semiseg.reporting.notes import escape

__all__ = ["cost_cell", "cost_footer", "run_cost"]


def run_cost(run_dir: Path) -> dict | None:
    """``train_seconds``, ``infer_seconds`` (None without an infer record), ``iterations_per_second``,
    ``device`` (``cpu``/``cuda``), ``device_name``, ``peak_memory_mb``, ``peak_memory_kind`` of
    the run in ``run_dir``; None where its ``config.json`` records no cost (a run trained before
    the cost fields existed)."""
    config = Path(run_dir) / "config.json"
    if not config.is_file():
        return None
    with open(config) as fh:
        summary = json.load(fh).get("summary") or {}
    if "peak_memory_mb" not in summary:
        return None
    infer = read_record("infer", Path(run_dir) / "predictions")
    return {"train_seconds": float(summary["wall_seconds"]),
            "infer_seconds": float(infer["wall_seconds"]) if infer and infer.get("wall_seconds") is not None else None,
            "iterations_per_second": summary.get("iterations_per_second"),
            "device": str(summary.get("device", "")).split(":")[0], "device_name": summary.get("device_name"),
            "peak_memory_mb": float(summary["peak_memory_mb"]), "peak_memory_kind": summary.get("peak_memory_kind")}


def _device(cost: Mapping) -> str:
    return f"{cost.get('device') or '?'}: {cost.get('device_name') or 'unknown'}"


def cost_cell(costs: Sequence[Mapping | None]) -> str:
    """The ``cost`` cell of one row from its finished runs' :func:`run_cost` (None: not recorded).

    >>> run = {"train_seconds": 50.0, "infer_seconds": 10.0, "device": "cpu", "device_name": "X",
    ...        "peak_memory_mb": 400.0}
    >>> cost_cell([run, {**run, "train_seconds": 110.0, "peak_memory_mb": 412.4}])
    '0.025 h/run, 412 MB peak (cpu: X)'
    >>> cost_cell([run, {**run, "device": "cuda", "device_name": "H100"}])
    '0.0167 h/run, 400 MB peak (cpu: X, 1 run); 0.0167 h/run, 400 MB peak (cuda: H100, 1 run)'
    """
    if not costs:
        return "not run"
    recorded = [c for c in costs if c is not None]
    if not recorded:
        return "not recorded"
    by_device: dict[str, list[Mapping]] = {}
    for cost in recorded:
        by_device.setdefault(_device(cost), []).append(cost)
    parts = []
    for device, runs in by_device.items():
        hours = statistics.fmean((c["train_seconds"] + (c.get("infer_seconds") or 0.0)) / 3600 for c in runs)
        peak = max(c["peak_memory_mb"] for c in runs)
        where = escape(device) + (f", {len(runs)} run{'s' if len(runs) > 1 else ''}" if len(by_device) > 1 else "")
        parts.append(f"{hours:.3g} h/run, {peak:.0f} MB peak ({where})")
    text = "; ".join(parts)
    if len(recorded) < len(costs):
        text += f" ({len(costs) - len(recorded)} of {len(costs)} runs not recorded)"
    return text


def cost_footer(costs: Sequence[Mapping | None]) -> str:
    """The footer line of the ``cost`` column, naming every device of the table's runs."""
    devices = sorted({_device(c) for c in costs if c is not None})
    kinds = sorted({c.get("peak_memory_kind") or "?" for c in costs if c is not None})
    line = ("Cost: device time per run is the training's wall time (its config.json summary) plus the "
            "inference's (its infer record), in hours, the mean over the row's runs; peak memory is the largest "
            "of the row's trainings' peaks: on a GPU the CUDA allocator's peak, on a CPU the process's maximum "
            f"resident size (here: {', '.join(kinds) if kinds else 'none recorded'}).")
    if len(devices) > 1:
        line += (f" The runs used {len(devices)} devices ({escape('; '.join(devices))}): their times are not "
                 "comparable and are never averaged together; a cell with runs on several gives each its own.")
    elif devices:
        line += f" Every run on {escape(devices[0])}."
    return line
