"""The cost of every cell: what a run records of its training (config.json summary), how the
table stage reads it with the inference's time, and how a cell and the footer show it, never
averaging runs of different devices together."""

from __future__ import annotations

import json
import resource

import pytest
import torch

from helpers import run_spec, tiny_store
from semiseg.engine.cost import peak_memory, training_cost
from semiseg.engine.loop import train
from semiseg.reporting.cost import cost_cell, cost_footer, run_cost


def test_a_run_records_its_cost_in_its_summary(tmp_path):
    store, split = tiny_store(tmp_path / "store.h5")
    summary = train(run_spec("supervised", 4), store, split, tmp_path / "run", progress=False)
    written = json.loads((tmp_path / "run" / "config.json").read_text())["summary"]
    assert written == summary
    assert summary["device"] == "cpu" and summary["device_name"]
    assert summary["iterations_per_second"] == pytest.approx(4 / summary["wall_seconds"], rel=0.05)
    # the process's max RSS, which this test process has already reached: in MiB, at least torch's size
    assert summary["peak_memory_kind"] == "process max RSS"
    assert 50 < summary["peak_memory_mb"] <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + 1


def test_training_cost_by_hand():
    cost = training_cost(torch.device("cpu"), wall_seconds=8.0, iterations=300)
    assert cost["iterations_per_second"] == 37.5 and cost["peak_memory_kind"] == "process max RSS"
    assert cost["peak_memory_mb"] == pytest.approx(peak_memory(torch.device("cpu"))[0], abs=0.1)
    assert training_cost(torch.device("cpu"), wall_seconds=0.0, iterations=3)["iterations_per_second"] is None


def _run(tmp_path, name, *, seconds, infer=None, device="cpu", device_name="CPU X", memory=400.0):
    run = tmp_path / name
    (run / "predictions").mkdir(parents=True)
    summary = {"wall_seconds": seconds, "device": device, "device_name": device_name, "peak_memory_mb": memory,
               "peak_memory_kind": "process max RSS", "iterations_per_second": 300 / seconds}
    (run / "config.json").write_text(json.dumps({"spec": {}, "summary": summary}))
    if infer is not None:
        (run / "provenance.infer.json").write_text(json.dumps({"stage": "infer", "wall_seconds": infer}))
    return run


def test_the_table_stage_reads_training_and_inference_time(tmp_path):
    cost = run_cost(_run(tmp_path, "a", seconds=90.0, infer=18.0))
    assert cost == {"train_seconds": 90.0, "infer_seconds": 18.0, "iterations_per_second": 300 / 90.0,
                    "device": "cpu", "device_name": "CPU X", "peak_memory_mb": 400.0,
                    "peak_memory_kind": "process max RSS"}
    assert run_cost(_run(tmp_path, "b", seconds=90.0))["infer_seconds"] is None
    # a run trained before the cost fields existed records none
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"spec": {}, "summary": {"wall_seconds": 3.0, "device": "cpu"}}))
    assert run_cost(old) is None


def test_a_cell_averages_per_device_and_the_footer_names_every_device(tmp_path):
    a = run_cost(_run(tmp_path, "a", seconds=90.0, infer=18.0))  # 108 s
    b = run_cost(_run(tmp_path, "b", seconds=150.0, infer=30.0, memory=512.4))  # 180 s
    gpu = run_cost(_run(tmp_path, "g", seconds=36.0, infer=0.0, device="cuda:0", device_name="H100", memory=2048.0))
    # (108 + 180) / 2 s = 0.04 h
    assert cost_cell([a, b]) == "0.04 h/run, 512 MB peak (cpu: CPU X)"
    assert cost_cell([a, gpu]) == ("0.03 h/run, 400 MB peak (cpu: CPU X, 1 run); "
                                   "0.01 h/run, 2048 MB peak (cuda: H100, 1 run)")
    assert cost_cell([a, None]) == "0.03 h/run, 400 MB peak (cpu: CPU X) (1 of 2 runs not recorded)"
    assert cost_cell([None]) == "not recorded" and cost_cell([]) == "not run"
    assert "Every run on cpu: CPU X." in cost_footer([a, b])
    assert "used 2 devices (cpu: CPU X; cuda: H100)" in cost_footer([a, gpu, None])


def test_the_cost_column_in_a_table():
    from semiseg.reporting.tables import build_table

    spec = {"title": "T", "dataset": "d", "seeds": [0, 1], "columns": ["dice", "cost"],
            "rows": [{"method": "supervised", "ratios": [50]}]}
    results = {("supervised", 50, s): {"dice": 0.8, "jaccard": 0.7, "hd95": 2.0, "asd": 1.0} for s in (0, 1)}
    cost = {"train_seconds": 3240.0, "infer_seconds": 360.0, "device": "cuda", "device_name": "H100",
            "peak_memory_mb": 5000.0}
    run_info = {("supervised", 50, s): {"cost": cost} for s in (0, 1)}
    text = build_table(spec, dataset_info={"train_patients": 4, "labeled_patients": {50: 2}}, results=results,
                       footer={}, run_info=run_info)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0] == "| Method | Labeled | Unlabeled | Dice↑ (%) | Cost (device time per run, peak memory) |"
    assert rows[2] == "| supervised | 2 (50%) | 0 | 80.00 ± 0.00 | 1 h/run, 5000 MB peak (cuda: H100) |"
    assert "- Cost: device time per run is the training's wall time" in text
