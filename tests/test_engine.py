"""The training engine: sampling, resume equivalence, the NaN guard, SIGTERM."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from helpers import run_spec, tiny_store
from semiseg.engine.data import StreamSampler
from semiseg.engine.loop import TrainingError, mean_dice, train
from semiseg.inference.predict import sliding_window_starts
from semiseg.methods import Losses, Method, register
from semiseg.methods.base import METHODS

# the tiny store and spec are shared with other test modules (tests/helpers.py)
_tiny_store = tiny_store


def _spec(algorithm="mean_teacher", iterations=6, params=None, **sched):
    """A tiny run spec; Mean Teacher with consistency from iteration 0 unless ``params`` says otherwise."""
    if params is None and algorithm == "mean_teacher":
        params = {"ema_decay": 0.99, "consistency": 0.1, "consistency_rampup": 1.0, "noise_std": 0.1,
                  "noise_clip": 0.2, "consistency_start": 0.0, "rampup_block": 1}
    spec = run_spec(algorithm, iterations, **sched)
    spec["method"]["params"] = params if params is not None else spec["method"]["params"]
    return spec


def test_stream_sampler_walks_permutations_and_is_a_function_of_the_iteration():
    s = StreamSampler(5, 2, seed=3, stream=0)
    first_epoch = s.indices(0) + s.indices(1) + s.indices(2)[:1]
    assert sorted(first_epoch) == [0, 1, 2, 3, 4]
    again = StreamSampler(5, 2, seed=3, stream=0)
    assert again.indices(7) == s.indices(7)
    assert StreamSampler(5, 2, seed=4, stream=0).indices(0) != s.indices(0) or \
        StreamSampler(5, 2, seed=4, stream=0).indices(1) != s.indices(1)


def test_sliding_window_worked_example():
    assert sliding_window_starts(120, 80, 18) == [0, 18, 36, 40]
    assert sliding_window_starts(80, 80, 18) == [0]
    with pytest.raises(ValueError):
        sliding_window_starts(70, 80, 18)


def test_mean_dice_by_hand():
    pred = np.array([[1, 1, 0, 2]])
    gt = np.array([[1, 0, 0, 0]])
    # class 1: 2·1/(2+1) = 2/3; class 2: 0 (predicted, absent)
    assert math.isclose(mean_dice(pred, gt, 3), (2 / 3 + 0) / 2)


def test_training_writes_outputs_only_at_the_end(tmp_path):
    store, split = _tiny_store(tmp_path / "store.h5")
    out = tmp_path / "run"
    summary = train(_spec(), store, split, out, progress=False)
    assert (out / "model.pt").exists() and (out / "train.csv").exists() and (out / "config.json").exists()
    assert not (out / "checkpoints").exists()
    assert summary["best_iteration"] in (3, 6)
    rows = (out / "train.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,lr,total,ce,dice,consistency") and len(rows) == 7


def test_resume_is_equivalent_to_an_uninterrupted_run(tmp_path):
    store, split = _tiny_store(tmp_path / "store.h5")
    # validated only at the end, so model.pt holds the weights after the last, resumed, iteration
    spec = _spec(val_interval=6)
    train(spec, store, split, tmp_path / "a", progress=False)
    # interrupted after 3 iterations (state written), then started again
    assert train(spec, store, split, tmp_path / "b", progress=False, stop_after=3) == {"stopped_at": 3}
    assert not (tmp_path / "b" / "model.pt").exists()
    summary = train(spec, store, split, tmp_path / "b", progress=False)
    assert summary["resumed_from"] == 3 and summary["best_iteration"] == 6
    a = torch.load(tmp_path / "a" / "model.pt")
    b = torch.load(tmp_path / "b" / "model.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "a" / "train.csv").read_text() == (tmp_path / "b" / "train.csv").read_text()


def test_state_from_another_spec_is_not_resumed(tmp_path):
    store, split = _tiny_store(tmp_path / "store.h5")
    train(_spec(), store, split, tmp_path / "r", progress=False, stop_after=2)
    summary = train(_spec(lr=0.02), store, split, tmp_path / "r", progress=False)
    assert summary["resumed_from"] is None


@pytest.fixture
def exploding_method():
    @register("_test_exploding")
    class Exploding(Method):
        uses_unlabeled = False

        def __init__(self, spec, net_factory):
            super().__init__(spec, net_factory)
            self.models.append(net_factory())

        def training_step(self, ctx):
            logits = self.models[0](ctx.batch["labeled_image"])
            ce, dice = self.supervised_loss(logits, ctx.batch["labeled_label"])
            bad = ce * (float("nan") if ctx.step.iteration == 2 else 1.0)
            return Losses(total=bad + dice, terms={"ce_scaled": bad, "dice": dice})

    yield "_test_exploding"
    del METHODS["_test_exploding"]


def test_nan_loss_stops_with_iteration_and_term_named(tmp_path, exploding_method):
    store, split = _tiny_store(tmp_path / "store.h5")
    with pytest.raises(TrainingError, match=r"iteration 2: loss term 'ce_scaled' is nan") as err:
        train(_spec(exploding_method), store, split, tmp_path / "run", progress=False)
    assert "'total'" not in str(err.value)  # the term to blame, not the sum it spoils
    assert not (tmp_path / "run" / "model.pt").exists()


def test_unlabeled_method_refuses_a_split_without_unlabeled_data(tmp_path):
    store, split = _tiny_store(tmp_path / "store.h5")
    s = json.loads(split.read_text())
    s["cases"]["unlabeled"] = []
    split.write_text(json.dumps(s))
    with pytest.raises(TrainingError, match="needs unlabeled data"):
        train(_spec(), store, split, tmp_path / "run", progress=False)
