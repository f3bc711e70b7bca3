"""SS-Net: hand-worked Dice, directions, weights and L_cs; the smoothness term, the memory and L_cs
equal to the public code's on float64 tensors; one training step; the catalogue entries."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from helpers import pixel_net, schema_defaults
from semiseg.config import load_config
from semiseg.methods import Step, StepContext, build_method
from semiseg.methods.ss_net import (
    SeparationHeads,
    _rescaled,
    binary_dice_loss,
    separation_loss,
    smoothness_loss,
    supervised_dice,
    unit_directions,
    update_memory,
)
from semiseg.nets import UNet, VNet

DEFAULTS = schema_defaults("ss_net")


def t(values):
    return torch.tensor(values, dtype=torch.float64)


# ----------------------------------------------------------------------------- shared fixtures
# The same builders made the public code's figures below (a scratch script outside the repository
# imported them), so both sides saw identical float64 weights and tensors.
def fill(module: nn.Module, phase: float = 0.0) -> nn.Module:
    """Every parameter from ``0.5·sin(1.3k + 0.7i + phase)`` (k its element, i its index)."""
    with torch.no_grad():
        for i, p in enumerate(module.parameters()):
            k = torch.arange(p.numel(), dtype=torch.float64)
            p.copy_((0.5 * torch.sin(1.3 * k + 0.7 * i + phase)).view_as(p))
    return module


def tiny_net(dims: int, classes: int) -> nn.Module:
    """conv3-BN-tanh-conv1, float64, training mode."""
    conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
    return fill(nn.Sequential(conv(1, 3, 3, padding=1), norm(3), nn.Tanh(), conv(3, classes, 1))).double().train()


def tiny_inputs(dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of two images and a direction in (−0.5, 0.5), both of shape (2, 1, 4, 4[, 2])."""
    shape = (2, 1, 4, 4) if dims == 2 else (2, 1, 4, 4, 2)
    n = math.prod(shape)
    x = torch.sin(0.9 * torch.arange(n, dtype=torch.float64)).view(shape)
    d = 0.49 * torch.cos(2.3 * torch.arange(n, dtype=torch.float64) + 0.4).view(shape)
    return x, d


def tiny_heads(num_classes: int = 3, memory_size: int = 32) -> SeparationHeads:
    """Heads on 4-channel features, width 3, filled by :func:`fill`, float64."""
    return fill(SeparationHeads(4, 3, num_classes, memory_size), phase=0.3).double().train()


def separation_inputs():
    """Ten prediction-head features (width 3), their labels and the memories of classes 1 and 2."""
    k = torch.arange(30, dtype=torch.float64)
    features = torch.sin(0.37 * k + 0.2).view(10, 3)
    labels = torch.tensor([0, 1, 1, 2, 1, 2, 2, 0, 1, 2])
    memory_1 = torch.cos(0.51 * torch.arange(9, dtype=torch.float64)).view(3, 3)
    memory_2 = torch.sin(0.83 * torch.arange(12, dtype=torch.float64) + 1.0).view(4, 3)
    return features, labels, memory_1, memory_2


def heads_with_memory(**kwargs) -> SeparationHeads:
    heads = tiny_heads(**kwargs)
    _, _, memory_1, memory_2 = separation_inputs()
    heads.memory[1, :3], heads.memory_count[1] = memory_1, 3
    heads.memory[2, :4], heads.memory_count[2] = memory_2, 4
    return heads


def flat_selector(heads: SeparationHeads, c: int) -> None:
    """Make ``memory_selector_c`` a constant score (its last layer's weights 0)."""
    with torch.no_grad():
        heads.memory_selectors[c][3].weight.zero_()


# ----------------------------------------------------------------------------- hand-worked
def test_binary_dice_has_a_linear_denominator_over_all_elements():
    # 1 − (2·0.8 + s)/(0.8 + 0.6 + 1 + s), s = 1e-8
    assert binary_dice_loss(t([0.8, 0.6]), t([1.0, 0.0])).item() == pytest.approx(1 - 1.6 / 2.4, rel=1e-7)


def test_supervised_dice_kinds():
    probs = t([[[[0.2, 0.6]], [[0.8, 0.4]]]])  # (1, 2, 1, 2): background, foreground
    label = torch.tensor([[[1, 0]]])
    # binary: foreground p = [0.8, 0.4], t = [1, 0]: 1 − 1.6/2.2
    assert supervised_dice(probs, label, "binary").item() == pytest.approx(1 - 1.6 / 2.2, rel=1e-7)
    # multiclass, squared denominator: bg p = [0.2, 0.6], t = [0, 1]: 1 − 1.2/(0.4 + 1) = 1/7;
    # fg 1 − 1.6/(0.8 + 1) = 1/9; mean
    assert supervised_dice(probs, label, "multiclass").item() == pytest.approx((1 / 7 + 1 / 9) / 2, rel=1e-7)


def test_unit_directions_are_per_sample():
    d = unit_directions(t([[3.0, 4.0], [0.0, -2.0]]))
    assert torch.allclose(d, t([[0.6, 0.8], [0.0, -1.0]]), atol=1e-8)


def test_rescaled_weights_have_mean_one():
    # sigmoid([0, ln 3]) = [0.5, 0.75]; times 2 / 1.25
    assert torch.allclose(_rescaled(t([[0.0], [math.log(3.0)]])), t([[0.8], [1.2]]))


def test_separation_with_flat_weights_is_the_mean_cosine_distance_over_classes():
    heads = tiny_heads(num_classes=2, memory_size=4)
    for c in range(2):
        with torch.no_grad():
            heads.selectors[c][3].weight.zero_()
        flat_selector(heads, c)
    heads.memory[1, :2] = t([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    heads.memory_count[1] = 2
    features = t([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([1, 1, 0])
    # class 0: no memory; class 1: distances [[0, 0], [1, 1]], mean 0.5; over 2 classes: 0.25
    assert separation_loss(heads, features, labels).item() == pytest.approx(0.25)
    heads.memory_count[1] = 1  # one entry is not enough
    assert separation_loss(heads, features, labels).item() == 0.0


def test_smoothness_of_a_one_pixel_net_moves_by_epsilon():
    # logits [x, 0] at x = 0: target [0.5, 0.5]; the unit direction is ±1 and epsilon = ln 3 gives
    # p = [0.75, 0.25] (or its mirror): Dice per class 1 − 0.75/(0.5625 + 0.25) = 1/13 and
    # 1 − 0.25/(0.0625 + 0.25) = 1/5 (smoothing 1e-10): mean 9/65, up to the 1e-8 the unit
    # direction's norm is raised by (relative to the gradient's, ~0.1 at xi = 1)
    net = pixel_net(1.0).double()
    x = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    target = torch.softmax(net(x), dim=1)
    lds = smoothness_loss(net, x, target, t([[[[0.3]]]]), xi=1.0, epsilon=math.log(3.0), iterations=1,
                          kind="multiclass")
    assert lds.item() == pytest.approx(9 / 65, rel=1e-6)
    assert smoothness_loss(net, x, target, t([[[[0.3]]]]), xi=10.0, epsilon=0.0, iterations=1,
                           kind="multiclass").item() == pytest.approx(0.0, abs=1e-12)


def test_memory_keeps_the_highest_scored_and_the_classes_not_found():
    heads = tiny_heads(memory_size=2)
    heads.memory[0, :2], heads.memory_count[0] = t([[9.0, 9.0, 9.0], [8.0, 8.0, 8.0]]), 2
    features = torch.sin(0.7 * torch.arange(15, dtype=torch.float64)).view(5, 3)
    labels = torch.tensor([1, 1, 1, 2, 1])
    with torch.no_grad():  # the selector in training mode: its scores do not read running statistics
        scores = torch.sigmoid(heads.selectors[1](features[labels == 1]))[:, 0]
    update_memory(heads, features, labels)
    best = features[labels == 1][scores.argsort(descending=True)[:2]]
    assert not torch.equal(best, features[labels == 1][:2])  # the order matters here
    assert torch.equal(heads.memory[1, :2], best)
    assert torch.equal(heads.memory[2, :1], features[3:4]) and heads.memory_count.tolist() == [2, 2, 1]
    assert heads.memory[0, 0, 0].item() == 9.0  # class 0 absent: its memory stays


# ----------------------------------------------------------------------------- the step
def _method(dims=2, **params):
    spec = {"dataset": {"num_classes": 2 if dims == 3 else 3, "dims": dims},
            "method": {"algorithm": "ss_net", "params": {**DEFAULTS, "memory_size": 4, **params}}}
    if dims == 2:
        return build_method(spec, lambda: UNet(1, 3, dims=2, channels=(4, 8), dropout=(0.0, 0.0)))
    return build_method(spec, lambda: VNet(1, 2, n_filters=4, has_dropout=False))


def _batch(dims=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (2, 1, 16, 16) if dims == 2 else (1, 1, 16, 16, 16)
    classes = 3 if dims == 2 else 2
    return {"labeled_image": torch.rand(shape, generator=g),
            "labeled_label": torch.randint(0, classes, (shape[0], *shape[2:]), generator=g),
            "unlabeled_image": torch.rand(shape, generator=g)}


@pytest.mark.parametrize("dims", [2, 3])
def test_a_step_fills_the_memory_and_weighs_its_terms(dims):
    params = {} if dims == 2 else {"dice": "binary", "consistency": 1.0, "consistency_rampup": 0.4}
    m = _method(dims, **params)
    with torch.no_grad():  # a bias towards the foreground: some labeled pixels are predicted right
        m.models[0].decoder.out_conv.bias.copy_(torch.tensor([-1.0] + [0.5] * (m.num_classes - 1)))
    step = Step(300, 3000)
    losses = m.training_step(StepContext(step, _batch(dims), torch.Generator().manual_seed(1)))
    terms = losses.terms
    weight = m.ramp_weight(step)
    # λ = consistency·exp(−5(1 − 2/R)²), the staircase of 150-iteration blocks: R = 20 (2D), 8 (3D)
    blocks = 20 if dims == 2 else 8
    assert weight == pytest.approx(params.get("consistency", 0.1) * math.exp(-5 * (1 - 2 / blocks) ** 2))
    expected = terms["dice"] + weight * (terms["lds"] + 0.1 * (terms["sep_l"] + terms["sep_u"]))
    assert losses.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert m.models[1].memory_count[0].item() == 0 and m.models[1].memory_count[1:].min().item() > 0
    assert terms["sep_l"].item() > 0 and terms["lds"].item() > 0
    losses.total.backward()
    heads = m.models[1]
    assert heads.prediction[0].weight.grad.abs().sum() > 0 and heads.selectors[1][0].weight.grad.abs().sum() > 0
    assert heads.memory_selectors[1][0].weight.grad.abs().sum() > 0  # the code's memory weights learn nothing


def test_the_adversarial_direction_comes_from_the_step_generator():
    m = _method()
    batch = _batch()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    lds = []
    for seed in (1, 1, 2):
        m.load_state_dict(state)
        lds.append(m.training_step(StepContext(Step(0, 10), batch, torch.Generator().manual_seed(seed))).terms["lds"])
    assert lds[0].item() == lds[1].item() != lds[2].item()


def test_binary_dice_needs_two_classes():
    with pytest.raises(ValueError, match="two-class"):
        _method(2, dice="binary")


# ----------------------------------------------------------------------------- catalogue
def test_the_catalogue_takes_each_script_s_settings():
    from conftest import REPO
    from semiseg.config import run_spec

    cfg = load_config(root=REPO)
    cfg = {**cfg, "settings": {**cfg["settings"], "schedule": "paper"}}
    acdc, la, brats = (run_spec(cfg, d, "ss_net", 10, 0) for d in ("acdc", "la", "brats"))
    assert acdc["method"]["params"] == {**DEFAULTS, "consistency": 0.1, "epsilon": 6.0, "dice": "multiclass"}
    assert {k: acdc["schedule"][k] for k in ("iterations", "labeled_batch_size", "lr_policy", "lr")} == {
        "iterations": 30000, "labeled_batch_size": 12, "lr_policy": "constant", "lr": 0.01}
    assert la["method"]["params"] == {**DEFAULTS, "consistency": 1.0, "consistency_rampup": 0.4, "epsilon": 10.0,
                                      "dice": "binary"}
    assert {k: la["schedule"][k] for k in ("iterations", "labeled_batch_size", "lr_policy", "lr_step_every")} == {
        "iterations": 15000, "labeled_batch_size": 2, "lr_policy": "step", "lr_step_every": 2500}
    assert brats["method"]["params"] == la["method"]["params"] and la["method"]["network"] == "vnet"
