"""The training engine: sampling, resume equivalence, the NaN guard, SIGTERM."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from helpers import LABELS, run_spec, tiny_store
from semiseg.data.store import Case, Store, write_store
from semiseg.engine.data import ResidentSet, StreamSampler, load_resident
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


def test_the_3d_crop_reaches_every_offset_and_crops_the_label_with_the_image():
    # a (4, 3, 5) volume whose voxel (z, y, x) holds 100z + 10y + x, as image and as label; crops
    # of 2 x 2 x 2 start at z 0-2, y 0-1, x 0-3 (24 offsets). Rotations and flips move the voxels
    # of a crop but keep its smallest value, 100z + 10y + x of its start.
    z, y, x = torch.meshgrid(torch.arange(4), torch.arange(3), torch.arange(5), indexing="ij")
    code = 100 * z + 10 * y + x
    volumes = ResidentSet(3, (2, 2, 2), "cpu", [code[None].float()], [code])
    g = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(100):
        image, label = volumes.batch([0, 0, 0], g, with_label=True)
        assert image.shape == (3, 1, 2, 2, 2) and label.shape == (3, 2, 2, 2) and label.dtype == torch.long
        assert torch.equal(image[:, 0], label.float())  # the label's crop, turned as the image's
        for crop in label:
            start = int(crop.min())
            starts.add(start)
            s = torch.tensor([start // 100, start // 10 % 10, start % 10])
            assert sorted(crop.flatten().tolist()) == sorted(code[s[0]:s[0] + 2, s[1]:s[1] + 2, s[2]:s[2] + 2]
                                                           .flatten().tolist())
    assert starts == {100 * a + 10 * b + c for a in range(3) for b in range(2) for c in range(4)}


def _refuse(case_id):
    raise AssertionError(f"label of {case_id} read")


def test_resident_slices_are_each_slices_order0_zoom_and_the_unlabeled_stream_reads_no_labels(tmp_path):
    # cases of other in-plane shapes than the patch, up and down, odd and even; the resident set is
    # every slice zoomed with ndimage.zoom(order=0) on its own (the training transform), bit for bit
    rng = np.random.default_rng(1)
    cases = []
    for i, shape in enumerate([(2, 20, 28), (3, 24, 32), (1, 45, 17), (2, 24, 32)]):
        label = rng.integers(0, 3, shape, dtype=np.uint8)
        cases.append(Case(f"p{i}_frame01", f"p{i}", rng.random(shape, dtype=np.float32), label))
    write_store(tmp_path / "store.h5", name="tiny", dims=2, labels=LABELS, cases=cases)
    patch = (24, 32)
    ids = [c.case_id for c in cases]
    zoom = [(ndimage.zoom(c.image[k], (patch[0] / c.image.shape[1], patch[1] / c.image.shape[2]), order=0),
             ndimage.zoom(c.label[k], (patch[0] / c.image.shape[1], patch[1] / c.image.shape[2]), order=0))
            for c in cases for k in range(len(c.image))]
    with Store(tmp_path / "store.h5") as store:
        labeled = load_resident(store, ids, 2, patch, "cpu", with_label=True)
        store.read = _refuse  # the unlabeled stream must not read a label
        unlabeled = load_resident(store, ids, 2, patch, "cpu", with_label=False)
    assert labeled.images.shape == (8, 1, *patch) and labeled.images.dtype == torch.float32
    assert labeled.labels.shape == (8, *patch) and labeled.labels.dtype == torch.uint8
    assert np.array_equal(labeled.images[:, 0].numpy(), np.stack([img for img, _ in zoom]))
    assert np.array_equal(labeled.labels.numpy(), np.stack([lab for _, lab in zoom]))
    assert torch.equal(unlabeled.images, labeled.images) and unlabeled.labels is None


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


def _scripted_validation(monkeypatch, scores, real=False):
    """Validation that answers ``scores`` in turn (after running the real one if ``real``), and
    the weights it was shown at each call."""
    import semiseg.engine.loop as loop

    shown, answers, validate = [], iter(scores), loop.validate

    def scripted(net, *args):
        if real:
            validate(net, *args)
        shown.append({k: v.clone() for k, v in net.state_dict().items()})
        return next(answers)

    monkeypatch.setattr(loop, "validate", scripted)
    return shown


def test_training_writes_outputs_only_at_the_end(tmp_path, monkeypatch):
    store, split = _tiny_store(tmp_path / "store.h5")
    out = tmp_path / "run"
    shown = _scripted_validation(monkeypatch, [0.8, 0.6], real=True)  # at iterations 3 and 6
    summary = train(_spec(), store, split, out, progress=False)
    assert (out / "model.pt").exists() and (out / "train.csv").exists() and (out / "config.json").exists()
    assert not (out / "checkpoints").exists()
    assert summary["best_iteration"] == 3 and summary["best_val_dice"] == 0.8
    model = torch.load(out / "model.pt")
    assert all(torch.equal(model[k], shown[0][k]) for k in model)  # the weights of iteration 3, not 6
    rows = (out / "train.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,lr,total,ce,dice,consistency") and len(rows) == 7


def test_the_best_validation_is_kept_not_the_latest(tmp_path, monkeypatch):
    # validated after every iteration; the best score, 0.9, comes at iteration 3 and again at 5:
    # a tie keeps the earlier network
    store, split = _tiny_store(tmp_path / "store.h5")
    shown = _scripted_validation(monkeypatch, [0.2, 0.5, 0.9, 0.4, 0.9, 0.1])
    summary = train(_spec(val_interval=1), store, split, tmp_path / "run", progress=False)
    assert (summary["best_iteration"], summary["best_val_dice"]) == (3, 0.9) and len(shown) == 6
    model = torch.load(tmp_path / "run" / "model.pt")
    assert model.keys() == shown[2].keys()
    assert all(torch.equal(model[k], shown[2][k]) for k in model)
    assert not all(torch.equal(model[k], shown[-1][k]) for k in model)  # the weights moved after it
    rows = list(csv.DictReader(open(tmp_path / "run" / "train.csv")))
    assert [float(r["val_dice"]) for r in rows] == [0.2, 0.5, 0.9, 0.4, 0.9, 0.1]


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


def test_training_on_the_cpu_turns_on_deterministic_algorithms_without_loading_the_inductor(tmp_path):
    """A CPU training job asks torch for deterministic algorithms (warnings only) as the public call
    does, without importing torch._inductor (seconds of every job's start-up), checked in a fresh
    interpreter so that no other test's imports count."""
    import subprocess
    import sys

    code = ("import sys, torch; from semiseg.device import deterministic_algorithms; deterministic_algorithms(); "
            "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), "
            "'torch._inductor' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "False"]
    # with the inductor loaded already, the public call (which also sets its flag) is made
    code = "import torch._inductor.config as c; from semiseg.device import deterministic_algorithms; " \
           "deterministic_algorithms(); print(c.deterministic)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"
