"""The method kit's seams: the families' hooks, the engine's lifecycle (parameter groups, extra
optimisers, stages, views, lr policies), per-dataset method settings, network arguments, and a
method written through the public seams only."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import REPO
from helpers import run_spec, schema_defaults, tiny_store
from semiseg.config import ConfigError, load_config, method_settings, run_spec as config_run_spec
from semiseg.engine.loop import train
from semiseg.engine.lr import lr_factor
from semiseg.methods import METHODS, Losses, Method, Step, StepContext, build_method, register
from semiseg.methods.base import StageContext
from semiseg.methods.common.losses import alhvr_code_dice_loss, dice_ce_loss, one_hot
from semiseg.methods.common.teacher import TeacherStudent
from semiseg.nets import UNet, build_network, count_parameters, network_for
from semiseg.nets.heads import MultiDecoder

# ---------------------------------------------------------------- ramps and lr


def test_staircase_ramp_moves_once_per_block():
    # SSL4MIS: sigmoid_rampup(iter // 150, 200) over 30k iterations
    assert Step(149, 30000).rampup(1.0, 150) == pytest.approx(math.exp(-5))
    assert Step(15000, 30000).rampup(1.0, 150) == pytest.approx(math.exp(-5 * 0.25))
    assert Step(15149, 30000).rampup(1.0, 150) == Step(15000, 30000).rampup(1.0, 150)
    assert Step(15149, 30000).rampup(1.0) > Step(15000, 30000).rampup(1.0)  # smooth: moves every step
    with pytest.raises(ValueError, match="block"):
        Step(0, 10).rampup(1.0, 0)


def test_lr_policies_by_hand():
    poly = {"lr_policy": "poly"}
    assert [round(lr_factor(poly, t, 10), 4) for t in (0, 1, 2)] == [1.0, round(0.9 ** 0.9, 4), round(0.8 ** 0.9, 4)]
    lagged = {"lr_policy": "poly", "poly_lag": 1}  # SSL4MIS MT: step t runs with the lr of t - 1
    assert [round(lr_factor(lagged, t, 10), 4) for t in (0, 1, 2)] == [1.0, 1.0, round(0.9 ** 0.9, 4)]
    assert lr_factor({"lr_policy": "constant"}, 7, 10) == 1.0
    step = {"lr_policy": "step", "lr_step_every": 2500, "lr_step_gamma": 0.1}
    # BCP LA: counted from the start of self-training (iteration 2000 of 17000)
    assert lr_factor(step, 2000 + 2499, 17000, 2000) == 1.0
    assert lr_factor(step, 2000 + 2500, 17000, 2000) == pytest.approx(0.1)
    assert lr_factor(step, 2000 + 5000, 17000, 2000) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="poly, constant, step"):
        lr_factor({"lr_policy": "cosine"}, 0, 10)


# ---------------------------------------------------------------- reference switches


def test_alhvr_code_dice_lacks_the_factor_two():
    p = torch.tensor([0.8, 0.6]).view(1, 1, 2)
    t = torch.tensor([1.0, 0.0]).view(1, 1, 2)
    assert alhvr_code_dice_loss(p, t).item() == pytest.approx(1 - 0.8 / 2.0)  # SSL4MIS's: 0.2
    # over classes it is 0.5 + 0.5 x the standard loss (up to the smoothing terms)
    logits = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    label = torch.randint(0, 3, (2, 5, 5), generator=torch.Generator().manual_seed(1))
    standard = dice_ce_loss(logits, label).dice
    code = alhvr_code_dice_loss(torch.softmax(logits, 1), one_hot(label, 3))
    assert code.item() == pytest.approx(0.5 + 0.5 * standard.item(), abs=1e-5)


def _alhvr(**params):
    spec = {"dataset": {"num_classes": 3, "dims": 2},
            "method": {"algorithm": "alhvr", "params": {**schema_defaults("alhvr"), **params}}}
    torch.manual_seed(0)
    return build_method(spec, lambda: UNet(1, 3, channels=(4, 8, 16, 32), dropout=(0, 0, 0, 0)))


def test_alhvr_dice_form_switch_changes_only_the_dice_term():
    batch = {"labeled_image": torch.randn(2, 1, 16, 16), "labeled_label": torch.randint(0, 3, (2, 16, 16)),
             "unlabeled_image": torch.randn(2, 1, 16, 16)}
    outs = {}
    for form in ("standard", "alhvr_code"):
        m = _alhvr(dice_form=form, perturbation="noise")
        torch.manual_seed(3)
        outs[form] = m.training_step(StepContext(Step(0, 10), batch)).terms
    assert outs["standard"]["ce_a"].item() == pytest.approx(outs["alhvr_code"]["ce_a"].item())
    assert outs["alhvr_code"]["dice_a"].item() == pytest.approx(0.5 + 0.5 * outs["standard"]["dice_a"].item(),
                                                                abs=1e-5)


def test_up2_projection_is_the_one_eighth_resolution_map_of_the_second_up_block():
    net = UNet(1, 4).eval()
    projections: list = []
    logits, stages = net.decode_stages(net.encode(torch.randn(1, 1, 64, 64)), projections)
    assert logits.shape == (1, 4, 64, 64)
    assert projections[1].shape == (1, 64, 8, 8)  # SSL4MIS up2: 128 -> 64 channels at 1/8
    m = _alhvr(prototype_features="up2_projection", perturbation="noise")
    batch = {"labeled_image": torch.randn(2, 1, 16, 16), "labeled_label": torch.randint(0, 3, (2, 16, 16)),
             "unlabeled_image": torch.randn(2, 1, 16, 16)}
    branches = m.branches(torch.cat([batch["labeled_image"], batch["unlabeled_image"]]))
    # four levels here: the second up block projects 16 -> 8 channels at 1/4 of 16
    assert branches[0].features.shape == (4, 8, 4, 4)
    assert math.isfinite(m.training_step(StepContext(Step(0, 10), batch)).total.item())
    transposed = build_method({"dataset": {"num_classes": 3, "dims": 2},
                               "method": {"algorithm": "alhvr", "params": {**schema_defaults("alhvr"),
                                                                           "prototype_features": "up2_projection"}}},
                              lambda: UNet(1, 3, channels=(4, 8, 16), dropout=(0, 0, 0), up_mode="transpose"))
    with pytest.raises(ValueError, match="projection"):
        transposed.branches(torch.randn(1, 1, 16, 16))


def test_multi_decoder_heads_and_the_evaluated_prediction():
    torch.manual_seed(0)
    net = build_network("unet", in_channels=1, num_classes=3, dims=2, channels=[4, 8], dropout=[0, 0],
                        extra_decoders=["transpose", "nearest"], evaluate="mean").eval()
    assert isinstance(net, MultiDecoder) and net.num_heads == 3
    x = torch.randn(2, 1, 16, 16)
    heads = net.heads(x)
    mean = torch.stack([torch.softmax(h, 1) for h in heads]).mean(0)
    torch.testing.assert_close(torch.softmax(net(x), 1), mean)
    net.evaluate = "first"
    torch.testing.assert_close(net(x), heads[0])


# ---------------------------------------------------------------- engine lifecycle


class _Recorder(Method):
    """A supervised method that also trains a scalar outside its networks (in the main optimiser,
    at twice the lr) and a second one with an optimiser of its own, and has two stages."""

    uses_unlabeled = False
    calls: list = []

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        self.models.append(net_factory())
        self.scale = nn.Parameter(torch.ones(()))
        self.offset = nn.Parameter(torch.zeros(()))

    def param_groups(self):
        return [*super().param_groups(), {"params": [self.scale], "lr_scale": 2.0}]

    def extra_optimizers(self, schedule):
        return {"offset": torch.optim.SGD([self.offset], lr=0.5)}

    def stages(self, total):
        return [("first", 0), ("second", total // 2)]

    def on_stage_start(self, name, step, ctx):
        type(self).calls.append((name, step.iteration, ctx.best_models() is not None))
        ctx.reset_optimizer = True

    def make_views(self, batch, generator):
        return {**batch, "labeled_image_strong": batch["labeled_image"] + 1.0}

    def training_step(self, ctx):
        batch = ctx.batch
        assert torch.equal(batch["labeled_image_strong"], batch["labeled_image"] + 1.0)
        logits = self.models[0](batch["labeled_image"]) * self.scale + self.offset
        ce, dice = self.supervised_loss(logits, batch["labeled_label"])
        return Losses(total=ce + dice, terms={"ce": ce, "dice": dice})


@pytest.fixture
def recorder():
    register("test_recorder")(_Recorder)
    _Recorder.calls = []
    yield _Recorder
    del METHODS["test_recorder"]


def test_engine_trains_parameter_groups_extra_optimisers_stages_and_views(tmp_path, recorder):
    store, split = tiny_store(tmp_path / "store.h5")
    spec = run_spec("test_recorder", 4, params={}, val_interval=1, lr_policy="constant")
    train(spec, store, split, tmp_path / "run", progress=False)
    assert recorder.calls == [("second", 2, True)]  # once, at the hand-off, with the best so far
    with open(tmp_path / "run" / "train.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["lr"]) for r in rows] == [0.01] * 4
    # the parameters outside the networks are trained and checkpointed with their optimiser
    train(spec, store, split, tmp_path / "stopped", progress=False, stop_after=3)
    state = torch.load(tmp_path / "stopped" / "checkpoints" / "state.pt", weights_only=False)
    assert state["method"]["scale"].item() != 1.0 and state["method"]["offset"].item() != 0.0
    assert set(state["optimizers"]) == {"main", "offset"}


def test_stage_hooks_scalar_groups_are_optimised(tmp_path, recorder):
    m = build_method(run_spec("test_recorder", 4, params={}), lambda: UNet(1, 3, channels=(4, 8), dropout=(0, 0)))
    from semiseg.engine.loop import build_optimizers

    opts = build_optimizers(m, {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0})
    assert set(opts) == {"main", "offset"}
    assert [g["initial_lr"] for g in opts["main"].param_groups] == [0.01, 0.02]
    assert opts["offset"].param_groups[0]["initial_lr"] == 0.5


class _Phased(Method):
    """A network, and a scalar ``shift`` that only a second phase after the main step trains
    (towards the step's generator draw, logged through the context's statistics channel)."""

    uses_unlabeled = False
    phase_name = "shift"

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        self.models.append(net_factory())
        self.shift = nn.Parameter(torch.zeros(()))

    def extra_optimizers(self, schedule):
        return {"shift": torch.optim.SGD([self.shift], lr=0.5)}

    def training_step(self, ctx):
        logits = self.models[0](ctx.batch["labeled_image"])
        ce, dice = self.supervised_loss(logits, ctx.batch["labeled_label"])
        ctx.stats["draw"] = torch.rand((), generator=ctx.generator)  # read with the terms
        ctx.stats["iteration_seen"] = float(ctx.step.iteration)
        return Losses(total=ce + dice, terms={"ce": ce, "dice": dice})

    def second_phase(self, ctx):
        return {type(self).phase_name: (self.shift - ctx.stats["draw"]) ** 2}


@pytest.fixture
def phased():
    register("test_phased")(_Phased)
    yield _Phased
    _Phased.phase_name = "shift"
    del METHODS["test_phased"]


def test_the_step_context_carries_statistics_and_a_second_phase(tmp_path, phased):
    store, split = tiny_store(tmp_path / "store.h5")
    spec = run_spec("test_phased", 2, params={}, val_interval=2, lr_policy="constant")
    train(spec, store, split, tmp_path / "run", progress=False, stop_after=2)
    with open(tmp_path / "run" / "checkpoints" / "train.csv.partial") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["iteration_seen"]) for r in rows] == [0.0, 1.0]
    draws = [float(r["draw"]) for r in rows]
    assert 0 < draws[0] < 1 and draws[0] != draws[1]
    # the phase alone moves shift: (shift − d)² with lr 0.5 sets shift to d at each step
    state = torch.load(tmp_path / "run" / "checkpoints" / "state.pt", weights_only=False)
    assert state["method"]["shift"].item() == pytest.approx(draws[1], rel=1e-6)
    phased.phase_name = "nowhere"
    with pytest.raises(RuntimeError, match="names optimiser 'nowhere', not one of its extra_optimizers"):
        train(spec, store, split, tmp_path / "bad", progress=False)


def test_bcp_hands_off_from_the_best_pre_training_checkpoint():
    spec = run_spec("bcp", 10, params={"handoff": "best", "reset_optimizer": True})
    m = build_method(spec, lambda: UNet(1, 3, channels=(4, 8), dropout=(0, 0)))
    best = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in m.models.state_dict().items()}
    ctx = StageContext(best_models=lambda: best)
    m.on_stage_start("self_train", Step(5, 10), ctx)
    for (name, s), t in zip(m.models[0].state_dict().items(), m.teacher.state_dict().values()):
        assert torch.equal(s, best[f"0.{name}"]) and torch.equal(t, s)
    assert ctx.reset_optimizer is True
    last = build_method(run_spec("bcp", 10), lambda: UNet(1, 3, channels=(4, 8), dropout=(0, 0)))
    before = {k: v.clone() for k, v in last.models[0].state_dict().items()}
    ctx = StageContext(best_models=lambda: best)
    last.on_stage_start("self_train", Step(5, 10), ctx)  # handoff: last (schema default)
    assert all(torch.equal(v, last.models[0].state_dict()[k]) for k, v in before.items())
    assert ctx.reset_optimizer is False


# ---------------------------------------------------------------- a method through the seams only


class _WeightedMT(TeacherStudent):
    """Mean Teacher whose consistency counts each pixel by the teacher's confidence."""

    def pixel_weight(self, ctx):
        return ctx.teacher_probs.amax(dim=1)


def test_a_per_pixel_weighted_mean_teacher_is_a_dozen_lines(tmp_path):
    register("test_weighted_mt")(_WeightedMT)
    try:
        spec = run_spec("test_weighted_mt", 3, params=schema_defaults("mean_teacher"))
        m = build_method(spec, lambda: UNet(1, 3, channels=(4, 8), dropout=(0, 0)))
        batch = {"labeled_image": torch.randn(2, 1, 16, 16), "labeled_label": torch.randint(0, 3, (2, 16, 16)),
                 "unlabeled_image": torch.randn(2, 1, 16, 16)}
        torch.manual_seed(0)
        out = m.training_step(StepContext(Step(0, 3), batch))
        torch.manual_seed(0)
        logits = m.student(torch.cat([batch["labeled_image"], batch["unlabeled_image"]]))
        teacher = torch.softmax(m.teacher(m.teacher_input(batch["unlabeled_image"], StepContext(Step(0, 3), batch))), 1)
        per_pixel = ((torch.softmax(logits[2:], 1) - teacher) ** 2).mean(1)
        expected = (teacher.amax(1) * per_pixel).sum() / per_pixel.numel()
        assert out.terms["consistency"].item() == pytest.approx(expected.item(), rel=1e-5)
        store, split = tiny_store(tmp_path / "store.h5")
        summary = train(spec, store, split, tmp_path / "run", progress=False)
        assert summary["best_val_dice"] is not None
    finally:
        del METHODS["test_weighted_mt"]


# ---------------------------------------------------------------- per-dataset settings, network arguments


def _cfg(tmp_path, methods: dict, network_args=None):
    from conftest import TINY_DATASET, make_workflow, write_yaml

    root = make_workflow(tmp_path / "wf", methods_extra=methods)
    if network_args is not None:
        ds = {k: {**v, "network_args": network_args} for k, v in TINY_DATASET.items()}
        write_yaml(root / "config" / "datasets" / "tiny.yaml", ds)
    return root


def test_a_method_entry_may_override_params_schedule_and_network_per_dataset(tmp_path):
    root = _cfg(tmp_path, {"mt_tiny": {
        "algorithm": "mean_teacher", "description": "t", "params": {"consistency": 0.3, "ema_decay": 0.9},
        "network_args": {"channels": [4, 8, 16, 32, 64]},
        "schedule": {"smoke": {"iterations": 5}},
        "datasets": {"tiny2d": {"params": {"consistency": 0.7}, "schedule": {"smoke": {"iterations": 6}},
                                "network_args": {"up_mode": "transpose"}}}}}, network_args={"dropout": [0] * 5})
    cfg = load_config(root=root)
    settings = method_settings(cfg, "tiny2d", "mt_tiny")
    assert settings["params"]["consistency"] == 0.7 and settings["params"]["ema_decay"] == 0.9
    assert settings["network_args"] == {"dropout": [0] * 5, "channels": [4, 8, 16, 32, 64], "up_mode": "transpose"}
    spec = config_run_spec(cfg, "tiny2d", "mt_tiny", 25, 0)
    assert spec["schedule"]["iterations"] == 6 and spec["method"]["params"]["consistency"] == 0.7
    assert cfg["methods"]["mt_tiny"]["datasets"]["tiny2d"]["params"] == {"consistency": 0.7}  # no defaults leaked in
    net = network_for(spec)
    assert net.up_mode == "transpose" and net.channels == (4, 8, 16, 32, 64)
    assert count_parameters(network_for(config_run_spec(cfg, "tiny2d", "mean_teacher", 25, 0))) == \
        count_parameters(UNet(1, 4, dropout=[0] * 5))


@pytest.mark.parametrize("override, message", [
    ({"nowhere": {"params": {"ema_decay": 2}}}, "datasets.nowhere: unknown dataset"),
    ({"tiny2d": {"params": {"consistency": -1}}}, "datasets.tiny2d.params"),
    ({"tiny2d": {"schedule": {"fast": {}}}}, "datasets.tiny2d.schedule.fast: unknown schedule"),
    ({"tiny2d": {"schedule": {"smoke": {"iterations": 0}}}}, "datasets.tiny2d.schedule.smoke"),
])
def test_per_dataset_settings_are_validated(tmp_path, override, message):
    root = _cfg(tmp_path, {"mt_bad": {"algorithm": "mean_teacher", "description": "t", "datasets": override}})
    with pytest.raises(ConfigError, match=message):
        load_config(root=root)


def test_settings_for_a_dataset_the_catalogue_lacks_never_apply(tmp_path):
    # the shipped method catalogue names the Left Atrium; a catalogue without it that lists it in
    # catalogues.other_datasets (as make_workflow does) still loads
    root = _cfg(tmp_path, {"mt_la": {"algorithm": "mean_teacher", "description": "t",
                                     "datasets": {"la": {"params": {"consistency": 0.9}}}}})
    cfg = load_config(root=root)
    assert method_settings(cfg, "tiny2d", "mt_la")["params"]["consistency"] == 0.1


# ---------------------------------------------------------------- the DAG without torch


def test_methods_are_found_by_their_source_and_the_dag_never_imports_torch():
    from semiseg.fingerprint import registered_algorithms

    assert set(registered_algorithms()) == set(METHODS) - {k for k in METHODS if k.startswith("test_")}
    code = ("import sys\n"
            "from semiseg.config import load_config, table_fingerprint\n"
            f"cfg = load_config(root={str(REPO)!r})\n"
            "[table_fingerprint(cfg, t) for t in cfg['tables']]\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ---------------------------------------------------------------- no per-step state on self


@pytest.mark.parametrize("algorithm", sorted(k for k in METHODS if not k.startswith(("test_", "_test"))))
def test_a_step_leaves_no_state_on_the_method(algorithm):
    # everything of a step travels in its context: a step and its post-step hooks add or rebind
    # no plain attribute of the method (parameters, buffers and submodules are its state)
    from helpers import tiny_step

    m, ctx = tiny_step(algorithm)
    before = {k: v for k, v in vars(m).items() if not k.startswith("_")}
    m.training_step(ctx).total.backward()
    m.second_phase(ctx)
    m.after_optimizer_step(ctx)
    after = {k: v for k, v in vars(m).items() if not k.startswith("_")}
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    # nor any private attribute beyond nn.Module's own
    assert not [k for k in set(vars(m)) - set(vars(nn.Module())) if k.startswith("_")]


def test_buarl_on_mean_teacher_is_only_its_weighting():
    from semiseg.methods.buarl import BUARLMeanTeacher
    from semiseg.methods.crln import CRLN

    assert BUARLMeanTeacher.training_step is TeacherStudent.training_step
    assert "__init__" not in vars(BUARLMeanTeacher)
    # CRLN builds through the family's constructor and keeps its EMA step
    assert CRLN.after_optimizer_step is TeacherStudent.after_optimizer_step
    assert "build_student" in vars(CRLN)
