"""The schedule's speed options: each leaves the loss of a few training steps where fp32 eager
puts it, within a stated tolerance (CPU, the tiny store)."""

from __future__ import annotations

import csv

import pytest
import torch

from helpers import run_spec, tiny_store


def _losses(tmp_path, name, **sched):
    from semiseg.engine.loop import train

    store, split = tiny_store(tmp_path / "store.h5")
    out = tmp_path / name
    spec = run_spec("mean_teacher", 3, **sched)
    # no dropout: its masks are drawn in memory order, so another layout draws other masks
    spec["method"]["network_args"] = {"dropout": [0.0] * 5}
    train(spec, store, split, out, progress=False)
    with open(out / "train.csv") as fh:
        return [float(row["total"]) for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    return _losses(tmp_path_factory.mktemp("eager"), "eager")


@pytest.mark.parametrize("option, tolerance", [
    ({"channels_last": True}, 1e-4),   # the same convolutions in another layout: rounding only
    ({"amp": True}, 5e-2),             # bf16 keeps 8 bits of mantissa: about 3 significant digits
    ({"compile": "aot_eager"}, 1e-4),  # traced and replayed, the same kernels
])
def test_the_loss_after_a_few_steps_agrees_with_fp32_eager(tmp_path, eager, option, tolerance):
    got = _losses(tmp_path, "run", **option)
    assert len(got) == len(eager) == 3
    assert got == pytest.approx(eager, rel=tolerance)


def test_cudnn_benchmark_is_set_and_changes_nothing_on_a_cpu(tmp_path, eager, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert _losses(tmp_path, "run", cudnn_benchmark=True) == eager
    assert torch.backends.cudnn.benchmark
