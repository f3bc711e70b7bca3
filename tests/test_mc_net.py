"""MC-Net / MC-Net+: the sharpening, the mutual consistency and the Dice losses against values
worked out by hand, the decoders each entry builds and what is evaluated, and the whole loss of a
step against the official code's on identical float64 logits."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import method_on_defaults, small_unet, squares_batch
from semiseg.methods import Step, StepContext
from semiseg.methods.common.pseudo import mutual_consistency, sharpen
from semiseg.methods.mc_net import extra_up_modes, linear_dice_loss
from semiseg.nets import UNet, VNet


def _method(num_classes=3, **params):
    return method_on_defaults("mc_net", small_unet, num_classes, 2, **params)


def test_sharpen_lifts_confident_probabilities_and_keeps_one_half():
    # T = 0.5: 0.75² / (0.75² + 0.25²) = 0.5625 / 0.625 = 0.9; 0.25 -> 0.0625 / 0.625 = 0.1.
    p = torch.tensor([0.75, 0.25, 0.5], dtype=torch.float64)
    assert torch.allclose(sharpen(p, 0.5), torch.tensor([0.9, 0.1, 0.5], dtype=torch.float64))
    # T = 0.1: 0.75^10 / (0.75^10 + 0.25^10) = 1 / (1 + 3^-10) = 0.99998306...
    assert sharpen(torch.tensor(0.75, dtype=torch.float64), 0.1).item() == pytest.approx(1 / (1 + 3 ** -10), rel=1e-12)


def test_mutual_consistency_sums_each_decoder_against_the_others_sharpened_maps():
    # One pixel, two classes, T = 0.5: p1 = [0.75, 0.25] sharpens to [0.9, 0.1], p2 = [0.5, 0.5]
    # to itself. (p1 − s(p2))² = [0.0625, 0.0625], (p2 − s(p1))² = [0.16, 0.16]: 0.0625 + 0.16.
    p1 = torch.tensor([[0.75, 0.25]], dtype=torch.float64)
    p2 = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    assert mutual_consistency([p1, p2], 0.5).item() == pytest.approx(0.2225, rel=1e-12)
    # A third decoder equal to p2 adds (p1, p3) 0.0625, (p2, p3) 0, (p3, p1) 0.16, (p3, p2) 0.
    assert mutual_consistency([p1, p2, p2.clone()], 0.5).item() == pytest.approx(0.445, rel=1e-12)


def test_mutual_consistency_gradient_flows_through_the_sharpened_target_too():
    # d/dp2 of (p1 − s(p2))² + (p2 − s(p1))², per element: −2(p1 − s(p2))·s'(p2) + 2(p2 − s(p1)).
    # At p2 = 0.5, T = 0.5: s'(0.5) = 2 (s = p²/(p² + (1−p)²): s' = 2p(1−p)/(p²+(1−p)²)² = 0.5/0.25).
    # Class 0: −2·0.25·2 + 2·(−0.4) = −1.8; class 1: −2·(−0.25)·2 + 2·0.4 = 1.8; mean over 2: /2.
    # Detaching the target would leave only 2(p2 − s(p1))/2 = ∓0.4.
    p1 = torch.tensor([[0.75, 0.25]], dtype=torch.float64)
    p2 = torch.tensor([[0.5, 0.5]], dtype=torch.float64, requires_grad=True)
    mutual_consistency([p1, p2], 0.5).backward()
    assert torch.allclose(p2.grad, torch.tensor([[-0.9, 0.9]], dtype=torch.float64))


def test_linear_dice_loss_is_the_foreground_dice_with_a_linear_denominator():
    # Foreground p = [0.8, 0.6], t = [1, 0]: 1 − 2·0.8 / (1.4 + 1) = 1 − 1.6/2.4 = 1/3. The
    # background channel is not in it (there: 1 − 2·0.4/(0.6 + 1) = 0.5).
    probs = torch.tensor([[[0.2, 0.4], [0.8, 0.6]]], dtype=torch.float64)
    target = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    assert linear_dice_loss(probs, target).item() == pytest.approx(1 / 3, rel=1e-7)
    # Two foreground classes: the mean of theirs.
    probs3 = torch.tensor([[[0.0, 0.0], [0.8, 0.6], [0.2, 0.4]]], dtype=torch.float64)
    target3 = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    # class 2: 1 − 2·0.4 / (0.6 + 1) = 0.5; mean with 1/3 = 5/12.
    assert linear_dice_loss(probs3, target3).item() == pytest.approx(5 / 12, rel=1e-7)


def test_extra_decoders_follow_the_code_order_of_up_modes():
    assert extra_up_modes("transpose", 2) == ["linear"]             # mcnet3d_v1
    assert extra_up_modes("transpose", 3) == ["linear", "nearest"]  # mcnet3d_v2
    assert extra_up_modes("linear", 2) == ["transpose"]             # mcnet2d_v1
    assert extra_up_modes("linear", 3) == ["transpose", "nearest"]  # mcnet2d_v2
    with pytest.raises(ValueError, match="decoders"):
        extra_up_modes("linear", 4)
    with pytest.raises(ValueError, match="up_mode='nearest'"):
        extra_up_modes("nearest", 2)


def test_mc_net_plus_builds_three_decoders_and_evaluates_the_plain_first_one():
    m = _method(decoders=3)
    net = m.models[0]
    assert net.base.up_mode == "linear"
    assert net.num_heads == 3
    evaluated = m.eval_network()
    assert isinstance(evaluated, UNet)
    # model.pt is the plain network's state: it loads into a fresh one, as the infer stage does
    small_unet().load_state_dict(evaluated.state_dict())
    x = torch.randn(1, 1, 16, 16)
    net.eval()
    assert torch.equal(evaluated(x), net.heads(x)[0])


def test_mc_net_3d_decoders_on_the_vnet():
    spec = {"dataset": {"num_classes": 2, "dims": 3},
            "method": {"algorithm": "mc_net", "params": {**_method().params, "decoders": 3}}}
    from semiseg.methods import build_method
    m = build_method(spec, lambda: VNet(1, 2, n_filters=2))
    ups = [type(d.up[0][0]).__name__ for d in [m.models[0].base.decoder, *m.models[0].extra]]
    assert ups == ["ConvTranspose3d", "Upsample", "Upsample"]
    assert [d.up[0][0].mode for d in m.models[0].extra] == ["trilinear", "nearest"]


def test_consistency_changes_the_gradient_and_the_ramp_reads_the_code_counter():
    m = _method(consistency=1.0, rampup_block=1, consistency_rampup=1.0)
    batch = squares_batch()

    def grads(weight):
        m.params["consistency"] = weight
        m.zero_grad(set_to_none=True)
        m.training_step(StepContext(Step(50, 100), batch)).total.backward()
        return [p.grad.clone() for p in m.models.parameters() if p.grad is not None]

    assert any(not torch.allclose(a, b) for a, b in zip(grads(1.0), grads(0.0)))
    # iteration 149 of 15000 at blocks of 150 over 0.4: the code's counter is 150 -> block 1 of 40
    m.params.update(consistency=1.0, rampup_block=150, consistency_rampup=0.4)
    ctx = StepContext(Step(149, 15000), batch)
    m.training_step(ctx)
    assert ctx.stats["consistency_weight"] == pytest.approx(math.exp(-5 * (39 / 40) ** 2), rel=1e-12)


# Figures of the official code's loss block (ycwu1997/MC-Net fee453ca299a5d2c845cc2f3de4e416fd667d9c2,
# code/train_mcnet_3d.py and code/train_mcnet_2d.py, the lines from `outputs = model(volume_batch)`
# to `loss = args.lamda * loss_seg_dice + consistency_weight * loss_consist`, with its
# utils/losses.py and utils/ramps.py), run on these seeded float64 logits with its y_ori /
# y_pseudo_label buffers allocated in float64: (heads, logits shape, iter_num before the
# increment, loss, loss_seg_dice, loss_consist, sum of squared gradients of each head's logits).
OFFICIAL = {
    # mcnet3d_v2 (MC-Net+), LA's settings: lamda 0.5, consistency 1 over 40 blocks, T 0.1
    "3d_plus": dict(seed=0, heads=3, shape=(4, 2, 3, 3, 2), iteration=2999, total=15000,
                    params=dict(decoders=3),
                    loss=1.270815989071345, dice=1.315114743667766, consist=2.140482895777563,
                    grad_sq=[0.0021437663782827455, 0.0011493969348571466, 0.00194393779755813]),
    # mcnet3d_v1 (MC-Net)
    "3d": dict(seed=1, heads=2, shape=(4, 2, 3, 3, 2), iteration=2999, total=15000, params=dict(decoders=2),
               loss=0.753521194544186, dice=1.063579838649371, consist=0.7739181949114169,
               grad_sq=[0.0009248990853035497, 0.001316574791764072]),
    # mcnet2d_v1 on ACDC's four classes: lamda 1, consistency 0.1 over 200 blocks, the 2D DiceLoss
    "2d": dict(seed=2, heads=2, shape=(4, 4, 4, 4), iteration=14999, total=30000,
               params=dict(decoders=2, dice="squared_code", seg_weight=1.0, consistency=0.1, consistency_rampup=1.0),
               loss=1.7146087161664028, dice=1.7023311376945953, consist=0.4285295955375852,
               grad_sq=[0.00030332189339563997, 0.0004065308726515547]),
}


@pytest.mark.parametrize("case", sorted(OFFICIAL))
def test_step_loss_equals_the_official_code(case):
    c = OFFICIAL[case]
    g = torch.Generator().manual_seed(c["seed"])
    shape = c["shape"]
    heads = [(2.0 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(c["heads"])]
    label = torch.randint(0, shape[1], (shape[0],) + shape[2:], generator=g)
    m = _method(num_classes=shape[1], **c["params"])
    m.models[0].heads = lambda images: heads
    image = torch.zeros(2, 1, *shape[2:])
    batch = {"labeled_image": image, "labeled_label": label[:2], "unlabeled_image": image}
    losses = m.training_step(StepContext(Step(c["iteration"], c["total"]), batch))
    losses.total.backward()
    assert losses.total.item() == pytest.approx(c["loss"], rel=1e-9)
    assert losses.terms["dice"].item() == pytest.approx(c["dice"], rel=1e-9)
    assert losses.terms["consistency"].item() == pytest.approx(c["consist"], rel=1e-9)
    assert [(h.grad ** 2).sum().item() for h in heads] == pytest.approx(c["grad_sq"], rel=1e-9)
