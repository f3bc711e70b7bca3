"""Mean Teacher, UA-MT, CPS and BCP: each loss term against values worked out by hand, each
unsupervised term's gradient, and a short real training of each method (2D; UA-MT and BCP also
3D with the V-Net)."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from conftest import REPO
from helpers import pixel_net, schema_defaults, tiny_store
from semiseg.config import load_config
from semiseg.engine.loop import train
from semiseg.methods import Step, StepContext, build_method
from semiseg.methods.base import StageContext
from semiseg.methods.bcp import copy_paste, halves, mixed_loss, paste_mask
from semiseg.methods.cps import cross_pseudo_loss
from semiseg.methods.ua_mt import masked_consistency, mc_uncertainty, uncertainty_threshold
from semiseg.nets import UNet

LN2, LN4 = math.log(2), math.log(4)


_defaults = schema_defaults


def _method(algorithm, net_factory, num_classes=2, batch=2, **params):
    spec = {"dataset": {"num_classes": num_classes, "dims": 2},
            "method": {"algorithm": algorithm, "params": {**_defaults(algorithm), **params}},
            "schedule": {"labeled_batch_size": batch, "unlabeled_batch_size": batch}}
    return build_method(spec, net_factory)


def _small_unet():
    return UNet(1, 3, dims=2, channels=(4, 8), dropout=(0.0, 0.0))


def _batch(seed=0, b=2, size=16):
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(b, size, size, dtype=torch.long)
    label[:, 4:12, 4:12] = 1
    label[:, 6:10, 6:10] = 2
    image = label[:, None].float() / 2 + 0.1 * torch.randn(b, 1, size, size, generator=g)
    return {"labeled_image": image, "labeled_label": label,
            "unlabeled_image": image.flip(-1) + 0.05 * torch.randn(b, 1, size, size, generator=g)}


def _grads(method, batch, step, seed=0):
    """Student(s)' gradient of the step's total loss, with every random draw seeded."""
    method.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    losses = method.training_step(StepContext(step, batch))
    losses.total.backward()
    return losses, [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                    for p in method.models.parameters()]


def _differ(a, b):
    return any(not torch.allclose(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------- Mean Teacher


def test_mean_teacher_consistency_is_the_mse_over_unlabeled_pixels_and_classes():
    # Student logits [x, 0]; teacher [x + ln 3, 0]; noise off. Unlabeled pixels x = ln 3, 0:
    # student p = [0.75, 0.25], [0.5, 0.5]; teacher p = [0.9, 0.1], [0.75, 0.25].
    # MSE over 2 pixels x 2 classes = (0.15^2 + 0.15^2 + 0.25^2 + 0.25^2) / 4 = 0.17 / 4 = 0.0425.
    # The labeled pixels (x = 5) are not in it: counted, they would make it a mean over 8 elements.
    m = _method("mean_teacher", lambda: pixel_net(1.0), batch=1, noise_std=0.0, consistency=0.1)
    with torch.no_grad():
        m.teacher.bias[0] = math.log(3)
    batch = {"labeled_image": torch.full((1, 1, 1, 2), 5.0), "labeled_label": torch.zeros(1, 1, 2, dtype=torch.long),
             "unlabeled_image": torch.tensor([[[[math.log(3), 0.0]]]])}
    out = m.training_step(StepContext(Step(0, 100), batch))
    assert out.terms["consistency"].item() == pytest.approx(0.0425, abs=1e-7)
    assert out.stats["consistency_weight"] == pytest.approx(0.1 * math.exp(-5))  # 0.0006737947
    assert out.total.item() == pytest.approx(
        0.5 * (out.terms["ce"] + out.terms["dice"]).item() + 0.1 * math.exp(-5) * 0.0425, rel=1e-6)


def test_mean_teacher_consistency_starts_after_consistency_start():
    # SSL4MIS's 2D script: no consistency while iter_num < 1000 of 30000 (consistency_start 1/30).
    m = _method("mean_teacher", _small_unet, num_classes=3, consistency_start=1 / 30)
    assert m.consistency_weight(Step(999, 30000)) == 0.0
    # the ramp has run since iteration 0: 0.1 * exp(-5 (1 - 1000/30000)^2) = 0.0009351
    assert m.consistency_weight(Step(1000, 30000)) == pytest.approx(0.1 * math.exp(-5 * (29 / 30) ** 2))
    assert m.consistency_weight(Step(1000, 30000)) == pytest.approx(0.0009351, abs=1e-7)
    # a fraction of the schedule: round(100 / 30) = 3 iterations of 100
    assert m.consistency_weight(Step(2, 100)) == 0.0 and m.consistency_weight(Step(3, 100)) > 0
    m.params["consistency_start"] = 0.0  # the schema default: from iteration 0
    assert m.consistency_weight(Step(0, 100)) == pytest.approx(0.1 * math.exp(-5))
    m.params["consistency_start"] = 1 / 30
    batch = _batch()
    m.params["consistency"] = 1.0
    _, before = _grads(m, batch, Step(2, 90))  # start = round(90 / 30) = 3: weight 0, no effect
    m.params["consistency"] = 0.0
    _, off = _grads(m, batch, Step(2, 90))
    assert not _differ(before, off)


def test_mean_teacher_consistency_reaches_the_student_and_not_the_teacher():
    m = _method("mean_teacher", _small_unet, num_classes=3)
    with torch.no_grad():  # a teacher apart from the student, so the consistency is not ~0
        for p in m.teacher.parameters():
            p.mul_(0.9)
    batch, step = _batch(), Step(10, 10)
    m.params["consistency"] = 0.0
    _, g0 = _grads(m, batch, step)
    m.params["consistency"] = 1.0
    out, g1 = _grads(m, batch, step)
    assert out.terms["consistency"].item() > 0 and out.stats["consistency_weight"] == 1.0
    assert _differ(g0, g1)
    assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())


def test_mean_teacher_first_ema_update_copies_the_student_then_averages():
    # SSL4MIS updates with the iteration count before incrementing it: alpha = 1 - 1/(0 + 1) = 0
    # after the first optimiser step, then 1 - 1/2 = 0.5 after the second.
    m = _method("mean_teacher", _small_unet, num_classes=3)
    opt = torch.optim.SGD(m.models.parameters(), lr=0.1)
    m.training_step(StepContext(Step(0, 10), _batch())).total.backward()
    opt.step()
    assert not all(torch.equal(t, s) for t, s in zip(m.teacher.parameters(), m.models[0].parameters()))
    m.after_optimizer_step(StepContext(Step(0, 10)))
    assert all(torch.equal(t, s) for t, s in zip(m.teacher.parameters(), m.models[0].parameters()))
    before = [p.clone() for p in m.teacher.parameters()]
    with torch.no_grad():
        for p in m.models[0].parameters():
            p.add_(1.0)
    m.after_optimizer_step(StepContext(Step(1, 10)))
    for t0, t, s in zip(before, m.teacher.parameters(), m.models[0].parameters()):
        assert torch.allclose(t, 0.5 * t0 + 0.5 * s, atol=1e-6)


# ---------------------------------------------------------------- UA-MT


def test_ua_mt_threshold_ramps_from_three_quarters_of_ln_c_to_ln_c():
    assert uncertainty_threshold(0, 100, 2) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * LN2)  # 0.5210280
    assert uncertainty_threshold(0, 100, 2) == pytest.approx(0.5210280, abs=1e-7)
    assert uncertainty_threshold(50, 100, 2) == pytest.approx(0.5695079, abs=1e-7)  # (0.75 + 0.25 e^-1.25) ln 2
    assert uncertainty_threshold(100, 100, 2) == pytest.approx(LN2)
    assert uncertainty_threshold(100, 100, 4) == pytest.approx(LN4)  # ln C, not the binary code's ln 2
    assert uncertainty_threshold(30, 100, 4, start=1.0) == pytest.approx(LN4)
    assert uncertainty_threshold(50, 100, 2, rampup=0.5) == pytest.approx(LN2)


def test_ua_mt_uncertainty_mask_on_a_2x2_image():
    # T = 2 passes, two classes; per pixel the two passes' P(class 0):
    p0 = torch.tensor([[[0.9, 1.0], [0.8, 0.99]],    # pass 1
                       [[0.9, 0.0], [0.6, 0.99]]])   # pass 2
    samples = torch.stack([p0, 1 - p0], dim=1)[:, None]  # (T, B=1, C=2, 2, 2)
    u = mc_uncertainty(samples)
    assert u.shape == (1, 1, 2, 2)
    # means 0.9 | 0.5 / 0.7 | 0.99 -> entropies (nats, 1e-6 inside the log)
    expected = torch.tensor([[0.3250830, 0.6931452], [0.6108643, 0.0560012]])
    assert torch.allclose(u[0, 0], expected, atol=2e-6)
    # iteration 0 of 100: threshold 0.521 keeps the two confident pixels ...
    assert (u < uncertainty_threshold(0, 100, 2))[0, 0].tolist() == [[True, False], [False, True]]
    # ... at the end ln 2 keeps all (0.5/0.5 is 0.6931452 < ln 2 because of the 1e-6)
    assert (u < uncertainty_threshold(100, 100, 2)).all()


@pytest.mark.parametrize("passes", [8, 3])
def test_ua_mt_uncertainty_is_each_unlabeled_image_s_own(passes):
    # Teacher logits [x, 0], noise off: every pass of an image gives the same p0 = sigmoid(x), so
    # its uncertainty is the entropy (1e-6 inside the log) of its own p0, whichever images share
    # the batch. Three images of two pixels: p0 = (0.5, 0.75), (0.9, 0.7), (0.75, 0.5).
    # Passes mixed across images would average them: (0.5 + 0.9) / 2 = 0.7 at image 1's pixel 1.
    m = _method("ua_mt", lambda: pixel_net(1.0), batch=3, noise_std=0.0, passes=passes)
    x = torch.tensor([[0.0, math.log(3)], [math.log(9), math.log(7 / 3)], [math.log(3), 0.0]]).view(3, 1, 1, 2)
    u = m.teacher_uncertainty(x, StepContext(Step(0, 100), {"unlabeled_image": x}))
    h = {0.5: 0.6931452, 0.75: 0.5623331, 0.9: 0.3250810, 0.7: 0.6108623}  # -p ln p - (1-p) ln(1-p)
    expected = torch.tensor([[h[0.5], h[0.75]], [h[0.9], h[0.7]], [h[0.75], h[0.5]]]).view(3, 1, 1, 2)
    assert u.shape == (3, 1, 1, 2)
    assert torch.allclose(u, expected, atol=1e-6)


def test_ua_mt_consistency_is_the_mse_over_certain_pixels():
    # Student logits [x, 0]; teacher [x + ln(8/3), 0]; noise off. Unlabeled pixels x = ln 1.5, 0:
    # student p = [0.6, 0.4], [0.5, 0.5]; teacher p = [0.8, 0.2] (entropy 0.5004),
    # [8/11, 3/11] (entropy 0.5860). At iteration 0 the threshold 0.5210 keeps pixel 1 only:
    # consistency = ((0.6 - 0.8)^2 + (0.4 - 0.2)^2) / 2 = 0.04.
    m = _method("ua_mt", lambda: pixel_net(1.0), batch=1, noise_std=0.0, consistency=0.1)
    with torch.no_grad():
        m.teacher.bias[0] = math.log(8 / 3)
    batch = {"labeled_image": torch.zeros(1, 1, 1, 2), "labeled_label": torch.zeros(1, 1, 2, dtype=torch.long),
             "unlabeled_image": torch.tensor([[[[math.log(1.5), 0.0]]]])}
    out = m.training_step(StepContext(Step(0, 100), batch))
    assert out.terms["consistency"].item() == pytest.approx(0.04, abs=1e-6)
    assert out.stats["certain_fraction"] == 0.5
    assert out.stats["threshold"] == pytest.approx(0.5210280, abs=1e-7)
    assert out.stats["consistency_weight"] == pytest.approx(0.1 * math.exp(-5))


def test_ua_mt_masked_consistency_normalizers_by_hand():
    # C = 4, two pixels; pixel 0 kept: (0.25 - 0.97)^2 + 3 (0.25 - 0.01)^2 = 0.5184 + 0.1728 = 0.6912
    student = torch.full((1, 4, 1, 2), 0.25)
    teacher = torch.tensor([[0.97, 0.01, 0.01, 0.01], [0.0, 0.0, 0.0, 1.0]]).T.reshape(1, 4, 1, 2)
    mask = torch.tensor([[[[True, False]]]])
    assert masked_consistency(student, teacher, mask, 4).item() == pytest.approx(0.6912 / 4)  # 0.1728
    assert masked_consistency(student, teacher, mask, 2).item() == pytest.approx(0.6912 / 2)  # 0.3456
    assert masked_consistency(student, teacher, torch.zeros_like(mask), 2).item() == 0.0


def _class_net(weight0: float, num_classes: int = 4) -> nn.Module:
    """1x1 convolution with logits ``[weight0 * x, 0, ..., 0]`` at every pixel."""
    net = nn.Conv2d(1, num_classes, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[0] = weight0
    return net


@pytest.mark.parametrize("uncertainty_max, mse_normalizer, kept, expected", [
    ("log_classes", "classes", 1.0, (0.6912 + 1 / 3) / 8),  # 0.1280667, the paper's rule for C = 4
    ("log_two", "two", 0.5, 0.6912 / 2),                    # 0.3456, the code (SSL4MIS ACDC, ua_mt entry)
    ("log_two", "classes", 0.5, 0.6912 / 4),
    ("log_classes", "two", 1.0, (0.6912 + 1 / 3) / 4),
])
def test_ua_mt_four_classes_threshold_ceiling_and_normalizer(uncertainty_max, mse_normalizer, kept, expected):
    # Student logits 0 -> p = 0.25 everywhere. Teacher logits [x, 0, 0, 0], noise off, at
    # x = ln 97 -> p = [0.97, 0.01, 0.01, 0.01], entropy 0.1677 (squared difference summed over
    # classes 0.6912); x = ln 9 -> p = [0.75, 1/12 x 3], entropy 0.8370 (0.25 + 3/36 = 1/3).
    # At iteration 0 of 100 the threshold is 0.7518·ln 2 = 0.5210 (log_two), keeping pixel 0,
    # or 0.7518·ln 4 = 1.0421 (log_classes), keeping both.
    m = _method("ua_mt", lambda: _class_net(0.0), num_classes=4, batch=1, noise_std=0.0,
                uncertainty_max=uncertainty_max, mse_normalizer=mse_normalizer)
    with torch.no_grad():
        m.teacher.weight[0] = 1.0
    batch = {"labeled_image": torch.zeros(1, 1, 1, 2), "labeled_label": torch.zeros(1, 1, 2, dtype=torch.long),
             "unlabeled_image": torch.tensor([[[[math.log(97), math.log(9)]]]])}
    out = m.training_step(StepContext(Step(0, 100), batch))
    ceiling = LN4 if uncertainty_max == "log_classes" else LN2
    assert out.stats["threshold"] == pytest.approx((0.75 + 0.25 * math.exp(-5)) * ceiling)
    assert out.stats["certain_fraction"] == kept
    assert out.terms["consistency"].item() == pytest.approx(expected, rel=1e-5)


def test_ua_mt_consistency_reaches_the_student_and_not_the_teacher():
    m = _method("ua_mt", _small_unet, num_classes=3, threshold_start=1.0)
    batch, step = _batch(), Step(10, 10)
    m.params["consistency"] = 0.0
    _, g0 = _grads(m, batch, step)
    m.params["consistency"] = 1.0
    out, g1 = _grads(m, batch, step)
    assert out.stats["certain_fraction"] > 0 and out.terms["consistency"].item() > 0
    assert _differ(g0, g1)
    assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())


def test_ua_mt_ema_moves_the_teacher():
    m = _method("ua_mt", _small_unet, num_classes=3)
    with torch.no_grad():
        for p in m.models[0].parameters():
            p.add_(1.0)
    m.after_optimizer_step(StepContext(Step(0, 10)))  # step 0: alpha = 0, the teacher becomes the student
    for t, s in zip(m.teacher.parameters(), m.models[0].parameters()):
        assert torch.equal(t, s)


# ---------------------------------------------------------------- CPS


def test_cps_cross_term_on_two_pixels():
    # net 1 logits [x ln 3, 0]: x = 1 -> p = [0.75, 0.25], x = -1 -> [0.25, 0.75]
    # net 2 logits [-x ln 4, 0]: x = 1 -> p = [0.2, 0.8] (label 1), x = -1 -> [0.8, 0.2] (label 0)
    x = torch.tensor([[[[1.0, -1.0]]]])
    l1, l2 = pixel_net(math.log(3))(x), pixel_net(-math.log(4))(x)
    assert cross_pseudo_loss(l1, l2).item() == pytest.approx(LN4)  # -ln 0.25 at both pixels
    assert cross_pseudo_loss(l2, l1).item() == pytest.approx(math.log(5))  # -ln 0.2 at both pixels


@pytest.mark.parametrize("on_labeled, expected", [(False, LN4), (True, 1.5 * LN2)])
def test_cps_method_applies_the_cross_term_to_the_chosen_images(on_labeled, expected):
    nets = iter([pixel_net(math.log(3)), pixel_net(-math.log(4))])
    m = _method("cps", lambda: next(nets), batch=1, inits=["default", "default"], on_labeled=on_labeled)
    # labeled pixels x = 0: both nets say [0.5, 0.5] -> argmax 0 -> CE ln 2 each
    batch = {"labeled_image": torch.zeros(1, 1, 1, 2), "labeled_label": torch.zeros(1, 1, 2, dtype=torch.long),
             "unlabeled_image": torch.tensor([[[[1.0, -1.0]]]])}
    out = m.training_step(StepContext(Step(0, 10), batch))
    assert out.terms["cps1"].item() == pytest.approx(expected)  # (2 ln 4 + 2 ln 2) / 4 with labeled
    assert set(out.terms) == {"ce1", "dice1", "cps1", "ce2", "dice2", "cps2"}
    assert m.eval_network() is m.models[0]


def test_cps_each_cross_term_trains_only_its_own_network():
    m = _method("cps", _small_unet, num_classes=3)
    assert not torch.equal(next(m.models[0].parameters()), next(m.models[1].parameters()))  # apart from the start
    batch, step = _batch(), Step(10, 10)
    m.params["consistency"] = 0.0
    _, g0 = _grads(m, batch, step)
    m.params["consistency"] = 1.0
    _, g1 = _grads(m, batch, step)
    n1 = len(list(m.models[0].parameters()))
    assert _differ(g0[:n1], g1[:n1]) and _differ(g0[n1:], g1[n1:])  # both networks learn from it
    m.zero_grad(set_to_none=True)
    m.training_step(StepContext(step, batch)).terms["cps1"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.models[0].parameters())
    assert all(p.grad is None for p in m.models[1].parameters())  # the pseudo-label is detached


# ---------------------------------------------------------------- BCP


@pytest.mark.parametrize("spatial, side", [((32, 32), (21, 21)), ((16, 32, 32), (10, 21, 21)),
                                           ((256, 256), (170, 170)), ((112, 112, 80), (74, 74, 53)),
                                           ((96,), (64,))])
def test_bcp_mask_is_one_block_of_two_thirds_of_each_side(spatial, side):
    starts = set()
    for seed in range(40):
        mask = paste_mask(spatial, 2 / 3, generator=torch.Generator().manual_seed(seed))
        assert mask.shape == spatial and mask.dtype == torch.long
        zeros = (mask == 0).nonzero()
        lo, hi = zeros.min(0).values, zeros.max(0).values
        assert (hi - lo + 1).tolist() == list(side) and len(zeros) == math.prod(side)  # a full box
        assert all(0 <= a and a + s <= n - 1 for a, s, n in zip(lo.tolist(), side, spatial))
        starts.add(tuple(lo.tolist()))
    assert len(starts) > 5  # the corner is drawn, not fixed
    assert (paste_mask(spatial, 1.0) == 0).all()


def test_bcp_copy_paste_composes_images_and_labels():
    mask = torch.ones(4, 4, dtype=torch.long)
    mask[1:3, 1:3] = 0
    bg_lab, fg_lab = torch.ones(2, 4, 4, dtype=torch.long), torch.full((2, 4, 4), 2)
    mixed = copy_paste(bg_lab, fg_lab, mask)
    assert mixed.dtype == torch.long
    assert mixed[0].tolist() == [[1, 1, 1, 1], [1, 2, 2, 1], [1, 2, 2, 1], [1, 1, 1, 1]]
    img = copy_paste(torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4), mask)
    assert img.shape == (2, 1, 4, 4) and img.sum().item() == 2 * 4
    a, b = halves(torch.arange(4))
    assert a.tolist() == [0, 1] and b.tolist() == [2, 3]
    a, b = halves(torch.arange(1))
    assert a.tolist() == b.tolist() == [0]


def test_bcp_mixed_loss_weights_each_region():
    # Two pixels, uniform logits (p = 0.5 / 0.5); pixel 0 from the background (label 0),
    # pixel 1 pasted (label 1). Each region: CE = ln 2; Dice = mean(1 - 1/1.25, 1 - 0) = 0.6.
    logits = torch.zeros(1, 2, 1, 2)
    mask = torch.tensor([[1, 0]])
    bg, fg = torch.tensor([[[0, 1]]]), torch.tensor([[[0, 1]]])
    out = mixed_loss(logits, bg, fg, mask, background_weight=0.5, foreground_weight=1.0)
    assert out.ce.item() == pytest.approx(1.5 * LN2)
    assert out.dice.item() == pytest.approx(0.5 * 0.6 + 0.6, abs=1e-4)
    # the other region's label does not matter
    out2 = mixed_loss(logits, torch.tensor([[[0, 0]]]), torch.tensor([[[1, 1]]]), mask,
                      background_weight=0.5, foreground_weight=1.0)
    assert out2.ce.item() == pytest.approx(out.ce.item()) and out2.dice.item() == pytest.approx(out.dice.item())


def test_bcp_dice_smoothing_is_each_script_s_by_hand():
    # Uniform logits (p = 0.5 / 0.5) on two pixels, both label 0, both in the background region
    # (the pasted region is empty: CE and Dice 0 there). Background Dice with smoothing s: class 0
    # 1 - (2 + s)/(0.5 + 2 + s), class 1 (absent) 1 - s/(0.5 + s); CE ln 2.
    def by_hand(s):
        return 0.5 * ((1 - (2 + s) / (2.5 + s)) + (1 - s / (0.5 + s)))

    logits, mask, label = torch.zeros(1, 2, 1, 2, dtype=torch.float64), torch.ones(1, 2), torch.zeros(1, 1, 2)
    for (script, smoothing), s in {("acdc", "script"): 1e-10, ("la", "script"): 1e-5,
                                   ("acdc", "ssl4mis"): 1e-5, ("la", "ssl4mis"): 1e-5}.items():
        m = _method("bcp", _small_unet, script=script, dice_smoothing=smoothing)
        assert m.dice_smooth == s, (script, smoothing)
        out = mixed_loss(logits, label, label, mask, background_weight=1.0, foreground_weight=1.0, smooth=m.dice_smooth)
        assert out.ce.item() == pytest.approx(LN2, rel=1e-12)
        assert out.dice.item() == pytest.approx(by_hand(s), rel=1e-12)
    # the ACDC script's 1e-10 and SSL4MIS's 1e-5 give Dice losses 1.04e-5 apart here, mostly
    # the absent class's 1 - s/(0.5 + s)
    assert by_hand(1e-10) - by_hand(1e-5) == pytest.approx(1.04e-5, rel=1e-3)


def test_bcp_stages_teacher_copy_and_unlabeled_gradient():
    m = _method("bcp", _small_unet, num_classes=3, pretrain_fraction=0.5)
    teacher0 = [p.clone() for p in m.teacher.parameters()]
    batch = _batch()
    # pre-training (iterations 0..4 of 10): labeled only, the teacher untouched
    out = m.training_step(StepContext(Step(2, 10), batch))
    out.total.backward()
    m.after_optimizer_step(StepContext(Step(2, 10)))
    assert out.stats["stage"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(teacher0, m.teacher.parameters()))
    with torch.no_grad():
        for p in m.models[0].parameters():
            p.add_(0.01)
    # the hand-off to self-training (the engine's stage hook, before iteration 5) copies the
    # pre-trained student into the teacher
    assert m.stages(10) == [("pretrain", 0), ("self_train", 5)]
    m.on_stage_start("self_train", Step(5, 10), StageContext())
    m.params["u_weight"] = 0.0
    out, g0 = _grads(m, batch, Step(5, 10))
    assert out.stats["stage"] == 1.0
    assert all(torch.equal(t, s) for t, s in zip(m.teacher.parameters(), m.models[0].parameters()))
    m.params["u_weight"] = 0.5
    _, g1 = _grads(m, batch, Step(6, 10))
    assert _differ(g0, g1)  # the pseudo-labelled regions reach the student's gradient
    assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())
    # constant EMA decay (no warm-up): teacher <- 0.99 teacher + 0.01 student
    t = [p.clone() for p in m.teacher.parameters()]
    with torch.no_grad():
        for p in m.models[0].parameters():
            p.add_(1.0)
    m.after_optimizer_step(StepContext(Step(6, 10)))
    for before, now, s in zip(t, m.teacher.parameters(), m.models[0].parameters()):
        assert torch.allclose(now, 0.99 * before + 0.01 * s, atol=1e-6)


def _bcp_pixel_method(u_weight=0.5, largest_component=False):
    """BCP over 1x1-convolution networks (student logits ``[x, 0]``) with a fixed paste mask that
    keeps columns 0-1 (M = 1) and pastes columns 2-3 (M = 0) of a 1 x 4 image."""
    m = _method("bcp", lambda: pixel_net(1.0), batch=2, u_weight=u_weight,
                largest_component=largest_component)
    m._mask = lambda image: torch.tensor([[1, 1, 0, 0]])
    return m


def test_bcp_self_training_weights_the_pseudo_labelled_region_of_each_mixed_image():
    # Every image is the same ramp x = [ln 3, 0, -ln 3, ln 9], so each mixed image is that ramp
    # too and the student's P(class 0) is [0.75, 0.5, 0.25, 0.9] at columns 0..3 whatever was
    # pasted. Labels: ground truth 0 everywhere; the teacher (logits [-ln 4, 0]) pseudo-labels 1
    # everywhere. CE at column i: label 0 -> -ln p_i, label 1 -> -ln(1 - p_i).
    # BCP (ACDC_BCP_train.py, mix_loss with unlab=True for the first image):
    # - u_a * M + l_a * (1 - M): columns 0-1 (unlabeled) against the pseudo label, weight u;
    #   columns 2-3 (labeled) against the ground truth, weight 1;
    # - l_b * M + u_b * (1 - M): columns 0-1 (labeled) against the ground truth, weight 1;
    #   columns 2-3 (unlabeled) against the pseudo label, weight u.
    m = _bcp_pixel_method(u_weight=0.5)
    with torch.no_grad():
        m.teacher.weight.zero_()
        m.teacher.bias[0] = -math.log(4)
    ramp = torch.tensor([math.log(3), 0.0, -math.log(3), math.log(9)]).reshape(1, 1, 1, 4).repeat(2, 1, 1, 1)
    batch = {"labeled_image": ramp, "labeled_label": torch.zeros(2, 1, 4, dtype=torch.long),
             "unlabeled_image": ramp.clone()}
    out = m._self_train_step(StepContext(Step(5, 10), batch))
    first = 0.5 * (math.log(4) + math.log(2)) / 2 + (math.log(4) + math.log(10 / 9)) / 2       # 1.2657
    second = (math.log(4 / 3) + math.log(2)) / 2 + 0.5 * (math.log(4 / 3) + math.log(10)) / 2  # 1.1380
    assert first + second == pytest.approx(2.4037, abs=1e-4)
    assert out.terms["ce"].item() == pytest.approx(first + second, rel=1e-5)
    # the weights the other way round (u on the labeled parts) would give 2.9530
    swapped = (math.log(4) + math.log(2)) / 2 + 0.5 * (math.log(4) + math.log(10 / 9)) / 2 + \
        0.5 * (math.log(4 / 3) + math.log(2)) / 2 + (math.log(4 / 3) + math.log(10)) / 2
    assert swapped == pytest.approx(2.9530, abs=1e-4)


def test_bcp_pseudo_labels_keep_the_largest_component_when_asked():
    # Teacher logits [0.5 - x, 0]: class 1 where x = 1. The image [1, 0, 1, 1, 0, 0] gives class 1
    # in two components, {0} and {2, 3}; the largest-component step keeps {2, 3} only.
    image = torch.tensor([1.0, 0, 1, 1, 0, 0]).reshape(1, 1, 1, 6)
    labels = {}
    for keep in (False, True):
        m = _method("bcp", lambda: pixel_net(-1.0, 0.5), batch=1, largest_component=keep)
        labels[keep] = m.pseudo_label(image)[0, 0].tolist()
    assert labels[False] == [1, 0, 1, 1, 0, 0]
    assert labels[True] == [0, 0, 1, 1, 0, 0]


def test_bcp_self_training_step_uses_the_largest_component_pseudo_labels():
    # The unlabeled image [1, 0, 1, 1] is pseudo-labelled [1, 0, 1, 1] by the teacher (logits
    # [0.5 - x, 0]), [0, 0, 1, 1] after the largest-component step. The first mixed image learns
    # its columns 0-1 from that pseudo label: column 0 is class 1 without the step, background
    # with it. The student outputs logits [0, 0] (every CE is ln 2), so the Dice tells them apart:
    # on columns 0-1, labels [0, 0] give mean(1 - 2/2.5, 1 - 0) = 0.6 and [1, 0] give
    # mean(1 - 1/1.5, 1 - 1/1.5) = 1/3 (classes 0 and 1, probabilities 0.5).
    dice = {}
    for keep in (False, True):
        m = _bcp_pixel_method(u_weight=1.0, largest_component=keep)
        with torch.no_grad():
            m.models[0].weight.zero_()
            m.teacher.weight[0] = -1.0
            m.teacher.bias[0] = 0.5
        batch = {"labeled_image": torch.zeros(2, 1, 1, 4), "labeled_label": torch.zeros(2, 1, 4, dtype=torch.long),
                 "unlabeled_image": torch.tensor([1.0, 0, 1, 1]).reshape(1, 1, 1, 4).repeat(2, 1, 1, 1)}
        dice[keep] = m._self_train_step(StepContext(Step(5, 10), batch)).terms["dice"].item()
    # Only the first image's columns 0-1 differ between the two runs (the second image pastes the
    # pseudo label's columns 2-3, [1, 1] either way): the difference is 0.6 - 1/3.
    assert dice[True] - dice[False] == pytest.approx(0.6 - 1 / 3, abs=1e-4)


def _bcp_script_method(script):
    """BCP on 4 + 4 float64 3D patches (6 x 6 x 4) of two classes with a fixed paste mask (zeros
    on [1:5, 2:6, 0:3]), student and teacher the 1x1x1 convolution with logits
    [1.5·x + 0.2, −x − 0.1], no largest-component step; iterations 0-4 of 10 pre-train."""
    def conv():
        net = nn.Conv3d(1, 2, 1).double()
        with torch.no_grad():
            net.weight.copy_(torch.tensor([1.5, -1.0]).view(2, 1, 1, 1, 1))
            net.bias.copy_(torch.tensor([0.2, -0.1]))
        return net

    spec = {"dataset": {"num_classes": 2, "dims": 3},
            "method": {"algorithm": "bcp", "params": {**_defaults("bcp"), "script": script, "largest_component": False,
                                                      "pretrain_fraction": 0.5}},
            "schedule": {"labeled_batch_size": 4, "unlabeled_batch_size": 4}}
    m = build_method(spec, conv)
    mask = torch.ones(6, 6, 4, dtype=torch.long)
    mask[1:5, 2:6, 0:3] = 0
    m._mask = lambda image: mask
    g = torch.Generator().manual_seed(31)
    batch = {"labeled_image": torch.randn(4, 1, 6, 6, 4, generator=g, dtype=torch.float64),
             "labeled_label": torch.randint(0, 2, (4, 6, 6, 4), generator=g)}
    batch["unlabeled_image"] = torch.randn(4, 1, 6, 6, 4, generator=g, dtype=torch.float64)
    return m, batch


# BCP's LA_BCP_train.py (DeepMed-Lab-ECNU/BCP @7879f98) on these tensors, run with its
# utils/BCP_utils.py mix_loss and utils/losses.py mask_DiceLoss: pre_train's
# (CE + mask_DiceLoss)/2 of a_l·M + b_l·(1 − M) against the mixed label, and self_train's
# mix_loss(l_a·M + u_a·(1 − M), y_a, p_a) + mix_loss(u_b·M + l_b·(1 − M), p_b, y_b, unlab=True),
# its pseudo-labels p_1 ≥ 0.5 without the largest component
CODE_LA_PRETRAIN = 0.8462800961412202
CODE_LA_SELF_TRAIN = 1.893290916458343


def test_bcp_la_script_equals_bcp_s_la_code():
    m, batch = _bcp_script_method("la")
    assert m.training_step(StepContext(Step(0, 10), batch)).total.item() == pytest.approx(CODE_LA_PRETRAIN, rel=1e-12)
    assert m.training_step(StepContext(Step(5, 10), batch)).total.item() == pytest.approx(CODE_LA_SELF_TRAIN, rel=1e-12)
    # the ACDC script's losses on the same tensors are another loss (about twice the
    # pre-training one: the masked form adds the two regions' means)
    m, batch = _bcp_script_method("acdc")
    pre, self_train = (m.training_step(StepContext(Step(i, 10), batch)).total.item() for i in (0, 5))
    assert pre > 1.5 * CODE_LA_PRETRAIN and self_train != pytest.approx(CODE_LA_SELF_TRAIN, rel=1e-2)


def test_bcp_s_la_settings_take_the_la_script_and_acdc_keeps_its_own():
    from semiseg.config import run_spec as config_run_spec

    cfg = load_config(root=REPO)
    script = {(m, d): config_run_spec(cfg, d, m, 10, 0)["method"]["params"]["script"]
              for m in ("bcp", "buarl_bcp", "buarl_bcp_mu_95_95", "buarl_bcp_url_only") for d in ("acdc", "la")}
    assert {k for k, v in script.items() if v == "la"} == {(m, "la") for m, _ in script}


def test_bcp_refuses_unequal_batches():
    spec = {"dataset": {"num_classes": 3, "dims": 2},
            "method": {"algorithm": "bcp", "params": _defaults("bcp")},
            "schedule": {"labeled_batch_size": 4, "unlabeled_batch_size": 2}}
    with pytest.raises(ValueError, match="must equal unlabeled_batch_size"):
        build_method(spec, _small_unet)


# ---------------------------------------------------------------- catalogue


def test_catalogue_baselines_follow_the_reference_code():
    """The ACDC table's rows run what SSL4MIS's 2D scripts do, where a parameter allows a choice."""
    methods = load_config(root=REPO)["methods"]
    assert methods["mean_teacher"]["params"]["consistency_start"] * 30000 == pytest.approx(1000)
    ua_mt = methods["ua_mt"]["params"]
    assert (ua_mt["uncertainty_max"], ua_mt["mse_normalizer"]) == ("log_two", "two")
    assert methods["cps"]["params"]["on_labeled"] is False
    # SSL4MIS's 2D CPS script builds both networks with PyTorch's default initialisation
    assert methods["cps"]["params"]["inits"] == ["default", "default"]
    # the consistency ramps are SSL4MIS's staircases of 150 iterations
    assert {methods[m]["params"]["rampup_block"] for m in ("mean_teacher", "ua_mt", "cps", "alhvr")} == {150}
    # BCP starts self-training from its best pre-training checkpoint
    assert methods["bcp"]["params"]["handoff"] == "best"


# ---------------------------------------------------------------- end to end

LABELS = {"background": 0, "a": 1, "b": 2}


def _tiny_store(path, dims):
    return tiny_store(path, dims=dims, shape3d=(20, 36, 36), box=(8, 24), core=(12, 20))


def _spec(algorithm, dims, iterations, params):
    three_d = dims == 3
    return {"dataset": {"name": "tiny", "dims": dims, "labels": LABELS, "num_classes": 3,
                        "patch_size": [16, 32, 32] if three_d else [32, 32],
                        "stride": [8, 16, 16] if three_d else None},
            "method": {"name": algorithm, "algorithm": algorithm, "network": "vnet" if three_d else "unet",
                       "params": {**_defaults(algorithm), **params}},
            "schedule": {"name": "test", "iterations": iterations, "labeled_batch_size": 2,
                         "unlabeled_batch_size": 2, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
                         "lr_policy": "poly", "val_interval": iterations, "checkpoint_interval": iterations,
                         "amp": False},
            "ratio": 50, "labeled_patients": 2, "seed": 3, "device": "cpu"}


@pytest.mark.parametrize("algorithm, dims, params, terms", [
    ("ua_mt", 2, {}, ["ce", "dice", "consistency"]),
    ("cps", 2, {}, ["ce1", "dice1", "cps1", "ce2", "dice2", "cps2"]),
    ("bcp", 2, {"pretrain_fraction": 0.5}, ["ce", "dice"]),
    ("ua_mt", 3, {"passes": 2}, ["ce", "dice", "consistency"]),
    ("bcp", 3, {"pretrain_fraction": 0.5}, ["ce", "dice"]),
])
def test_method_trains_end_to_end(tmp_path, algorithm, dims, params, terms):
    store, split = _tiny_store(tmp_path / "store.h5", dims)
    out = tmp_path / "run"
    summary = train(_spec(algorithm, dims, 4, params), store, split, out, progress=False)
    assert (out / "model.pt").exists() and summary["best_val_dice"] is not None
    with open(out / "train.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and all(t in rows[0] for t in terms)
    assert all(math.isfinite(float(r["total"])) for r in rows)
    if algorithm == "bcp":
        assert [float(r["stage"]) for r in rows] == [0.0, 0.0, 1.0, 1.0]
