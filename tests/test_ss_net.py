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
from semiseg.methods.common.losses import binary_dice_loss
from semiseg.methods.ss_net import (
    SeparationHeads,
    _rescaled,
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


# ----------------------------------------------------------------------------- the public code's figures
# Figures of github.com/ycwu1997/SS-Net at c0a8bf6e535ad1166ff8f3f871dc5cb9273e4573, run on the
# fixtures above in float64 (CPU; its `.cuda()` made a no-op): code/utils/losses.py `VAT2d(epi=6)`,
# `VAT3d(epi=10)` (its `torch.rand` returning this file's direction + 0.5), `DiceLoss(4)`,
# `Binary_dice_loss`; code/utils/contrastive_losses.py
# `contrastive_class_to_class_learned_memory`; code/utils/feature_memory.py
# `FeatureMemory.add_features_from_sample_learned`. "mended": the same function with its bug
# mended (memory weights rescaled over the memory's axis; the memory sorted descending). The
# 2D Dice losses' `target = target.float()` was left out, so that their soft target stays
# float64 (in the code's float32 training the cast does nothing; with it, VAT2d gives
# 0.05062529640799576, the target's squares rounded to float32).
def _vat(dims, classes, epsilon, kind):
    net = tiny_net(dims, classes)
    x, d = tiny_inputs(dims)
    with torch.no_grad():
        target = torch.softmax(net(x), dim=1)
    return smoothness_loss(net, x, target, d, xi=10.0, epsilon=epsilon, iterations=1, kind=kind).item()


def test_smoothness_equals_the_code_s_vat():
    assert _vat(2, 4, 6.0, "multiclass") == pytest.approx(0.05062531421893934, rel=1e-9)  # VAT2d
    assert _vat(3, 2, 10.0, "binary") == pytest.approx(0.466503890663857, rel=1e-9)  # VAT3d
    assert _vat(2, 4, 5.0, "multiclass") != pytest.approx(0.05062531421893934, rel=1e-3)


def test_supervised_dice_equals_the_code_s():
    probs = torch.softmax(torch.sin(torch.arange(48, dtype=torch.float64)).view(2, 4, 3, 2), 1)
    label = torch.tensor([[[0, 1], [2, 3], [3, 1]], [[1, 1], [0, 2], [3, 3]]])
    assert supervised_dice(probs, label, "multiclass").item() == pytest.approx(0.5328633234418638, rel=1e-9)
    p2 = torch.softmax(torch.sin(torch.arange(48, dtype=torch.float64)).view(2, 2, 3, 2, 2), 1)
    l2 = (torch.cos(torch.arange(24)) > 0).long().view(2, 3, 2, 2)
    assert supervised_dice(p2, l2, "binary").item() == pytest.approx(0.5761752413065402, rel=1e-9)


def _separation(flat: bool):
    heads = heads_with_memory()
    if flat:
        for c in range(3):
            flat_selector(heads, c)
    features, labels, _, _ = separation_inputs()
    features = features.clone().requires_grad_(True)
    loss = separation_loss(heads, features, labels)
    loss.backward()
    return loss.item(), features.grad.sum().item(), heads.selectors[1][0].weight.grad.sum().item()


def test_separation_equals_the_code_s_with_its_memory_weights_mended():
    # loss, sum of d loss / d features, sum of d loss / d (class 1 selector's first weight)
    figures = (0.6827787269676312, 0.08524426432343117, 0.01822927983927544)
    assert _separation(flat=False) == pytest.approx(figures, rel=1e-9)


def test_separation_equals_the_code_s_where_its_memory_weights_are_flat_anyway():
    # the code's own function, unmended: with constant memory scores both rescalings give 1 (and
    # the code gives these same figures for any memory selector: its weights are always 1)
    figures = (0.6852598366776003, 0.07838710352889011, 0.018497452308706995)
    assert _separation(flat=True) == pytest.approx(figures, rel=1e-9)
    assert _separation(flat=False)[0] != pytest.approx(figures[0], rel=1e-4)


def _memory(size):
    heads = tiny_heads(memory_size=size)
    features = torch.sin(0.61 * torch.arange(42, dtype=torch.float64) + 0.3).view(14, 3)
    labels = torch.tensor([1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 0, 1, 2, 1])
    update_memory(heads, features, labels)
    return [heads.memory[c, :n].tolist() for c, n in enumerate(heads.memory_count.tolist())]


def test_memory_equals_the_code_s_sorted_as_its_comment_says():
    # FeatureMemory(elements_per_class=3), mended (the three highest-scored); the code keeps the
    # three lowest: class 1 [[-0.4734..., 0.1165..., 0.6644...], ...]
    assert _memory(3) == [  # the features themselves: exact
        [[-0.2469736617366209, 0.3526898101475302, 0.8251366693400644]],
        [[0.694671604087153, 0.15730716010676024, -0.4367986001383378],
         [0.9999534608048796, 0.8140830748328302, 0.3345696964916857],
         [-0.025219365143660497, -0.5933562572321768, -0.9474671950894723]],
        [[0.8476778401335698, 0.39088477889845263, -0.20690197167339933],
         [-0.26562429771168555, -0.7700065547136438, -0.9966443948864446],
         [0.9727509563950137, 0.9301341399766526, 0.5520142519295329]]]
    # with room for every feature nothing is sorted: the code's own memory, every feature in order
    features = torch.sin(0.61 * torch.arange(42, dtype=torch.float64) + 0.3).view(14, 3)
    assert _memory(32)[1] == features[[0, 2, 3, 5, 6, 8, 9, 11, 13]].tolist()


def test_the_memory_is_state_of_the_checkpoint():
    # the memory persists across steps: buffers of the heads, in the method's (resume) and the
    # models' (models.pt) state dicts, restored by loading them
    m = _method()
    m.training_step(StepContext(Step(0, 10), _batch(), torch.Generator().manual_seed(1)))
    state = m.state_dict()
    assert {"models.1.memory", "models.1.memory_count"} <= set(state) and "1.memory" in m.models.state_dict()
    fresh = _method()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.models[1].memory, m.models[1].memory)
    assert torch.equal(fresh.models[1].memory_count, m.models[1].memory_count)
