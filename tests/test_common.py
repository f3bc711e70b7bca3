"""Method building blocks, each checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from semiseg.methods.common import (
    DiceCE,
    dice_ce_loss,
    ema_alpha,
    ema_update,
    entropy,
    largest_connected_component,
    masked_mean,
    one_hot,
    sharpen,
    sharpen_distribution,
    sigmoid_rampup,
    soft_dice_loss,
)
from semiseg.methods.common.losses import per_sample_dice_loss

# ---------------------------------------------------------------- ramps


def test_sigmoid_rampup_worked_values():
    assert sigmoid_rampup(0, 200) == pytest.approx(0.006737947, abs=1e-9)  # exp(-5)
    assert sigmoid_rampup(100, 200) == pytest.approx(math.exp(-1.25))  # 0.2865048
    assert sigmoid_rampup(150, 200) == pytest.approx(math.exp(-5 * 0.25 ** 2))
    assert sigmoid_rampup(200, 200) == 1.0
    assert sigmoid_rampup(10_000, 200) == 1.0  # clipped
    assert sigmoid_rampup(-5, 200) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(7, 0) == 1.0  # no ramp-up
    assert sigmoid_rampup(30, 60.0) == pytest.approx(math.exp(-1.25))  # float lengths


# ---------------------------------------------------------------- EMA


class _Tiny(nn.Module):
    def __init__(self, w: float, mean: float):
        super().__init__()
        self.lin = nn.Linear(1, 1, bias=False)
        self.bn = nn.BatchNorm1d(1)
        with torch.no_grad():
            self.lin.weight.fill_(w)
            self.bn.running_mean.fill_(mean)
            self.bn.num_batches_tracked.fill_(int(mean))


def test_ema_alpha_warmup():
    assert ema_alpha(0.99, 0) == 0.0
    assert ema_alpha(0.99, 9) == pytest.approx(0.9)
    assert ema_alpha(0.99, 99) == pytest.approx(0.99)
    assert ema_alpha(0.99, 1000) == 0.99
    with pytest.raises(ValueError):
        ema_alpha(1.5, 0)


def test_ema_update_hand_worked():
    teacher, student = _Tiny(1.0, 0.0), _Tiny(3.0, 4.0)
    # step 9: alpha = min(1 - 1/10, 0.99) = 0.9 -> 0.9 * 1 + 0.1 * 3 = 1.2
    assert ema_update(teacher, student, 0.99, 9) == pytest.approx(0.9)
    assert teacher.lin.weight.item() == pytest.approx(1.2)
    # default buffers="copy": the student's statistics, integer counter included
    assert teacher.bn.running_mean.item() == 4.0
    assert teacher.bn.num_batches_tracked.item() == 4
    # step 1000: alpha = 0.99 -> 0.99 * 1.2 + 0.01 * 3 = 1.218
    ema_update(teacher, student, 0.99, 1000)
    assert teacher.lin.weight.item() == pytest.approx(1.218)
    # step 0: the teacher becomes a copy of the student
    ema_update(teacher, student, 0.99, 0)
    assert teacher.lin.weight.item() == 3.0
    assert student.lin.weight.item() == 3.0  # the student is never touched


def test_ema_buffer_modes():
    teacher, student = _Tiny(1.0, 2.0), _Tiny(3.0, 6.0)
    ema_update(teacher, student, 0.5, 100, buffers="ema")  # alpha = 0.5
    assert teacher.bn.running_mean.item() == pytest.approx(4.0)  # 0.5 * 2 + 0.5 * 6
    assert teacher.bn.num_batches_tracked.item() == 6  # integers are copied
    teacher, student = _Tiny(1.0, 2.0), _Tiny(3.0, 6.0)
    ema_update(teacher, student, 0.5, 100, buffers="keep")
    assert teacher.bn.running_mean.item() == 2.0
    assert teacher.lin.weight.item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="buffers"):
        ema_update(teacher, student, 0.5, 1, buffers="average")


def test_ema_update_builds_no_graph_and_checks_architecture():
    teacher, student = _Tiny(1.0, 0.0), _Tiny(3.0, 0.0)
    ema_update(teacher, student, 0.99, 5)
    assert teacher.lin.weight.grad_fn is None and teacher.lin.weight.requires_grad
    with pytest.raises(ValueError, match="shape"):
        ema_update(nn.Linear(2, 1), nn.Linear(3, 1), 0.99, 1)
    with pytest.raises(ValueError, match="names"):
        ema_update(nn.Linear(2, 1), nn.Sequential(nn.Linear(2, 1)), 0.99, 1)


def test_ema_update_is_one_fused_call_equal_to_the_loop(monkeypatch):
    """All parameters move in one ``torch._foreach_lerp_`` (and the averaged buffers in one more),
    bit-identical to a loop of ``Tensor.lerp_`` per tensor."""
    torch.manual_seed(0)
    make = lambda: nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 3, 1))  # noqa: E731
    teacher, student = make(), make()
    student(torch.randn(2, 2, 6, 6))  # running statistics of its own
    expected = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_state = student.state_dict()
    for k, v in expected.items():
        v.lerp_(s_state[k], 1 - 0.9) if v.is_floating_point() else v.copy_(s_state[k])
    calls = []
    fused = torch._foreach_lerp_
    monkeypatch.setattr(torch, "_foreach_lerp_", lambda *a: calls.append(len(a[0])) or fused(*a))
    ema_update(teacher, student, 0.99, 9, buffers="ema")  # alpha = 0.9
    assert calls == [len(list(teacher.parameters())), 2]  # the running mean and variance
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, expected[k]), k


# ---------------------------------------------------------------- losses


def test_one_hot():
    t = torch.tensor([[0, 2, 1]])
    expected = torch.tensor([[[1.0, 0, 0], [0, 0, 1], [0, 1, 0]]])
    assert torch.equal(one_hot(t, 3), expected)


def test_soft_dice_hand_worked():
    # Two classes, one sample, two pixels; class 1: p = [0.8, 0.6], t = [1, 0]
    #   I = 0.8, sum p^2 = 0.64 + 0.36 = 1.0, sum t^2 = 1 -> 1 - 1.6 / 2 = 0.2
    # class 0: p = [0.2, 0.4], t = [0, 1]
    #   I = 0.4, sum p^2 = 0.04 + 0.16 = 0.2, sum t^2 = 1 -> 1 - 0.8 / 1.2 = 1/3
    probs = torch.tensor([[[0.2, 0.4], [0.8, 0.6]]])
    target = one_hot(torch.tensor([[1, 0]]), 2)
    assert soft_dice_loss(probs, target, smooth=0).item() == pytest.approx((0.2 + 1 / 3) / 2)
    assert soft_dice_loss(probs, target, smooth=0, include_background=False).item() == \
        pytest.approx(0.2)
    # The default smooth 1e-5 moves it by less than 1e-5.
    assert soft_dice_loss(probs, target).item() == pytest.approx((0.2 + 1 / 3) / 2, abs=1e-5)
    # Perfect prediction -> 0; an absent class predicted absent -> 0 thanks to smooth.
    perfect = one_hot(torch.tensor([[1, 1]]), 2)
    assert soft_dice_loss(perfect, perfect).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_dice_pools_the_batch():
    # SSL4MIS sums over the batch before dividing: sample 1 has no foreground and predicts
    # none, sample 2 is predicted perfectly -> foreground Dice loss 0 (a per-sample mean
    # without smoothing would be undefined for sample 1).
    probs = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
    target = probs.clone()
    assert soft_dice_loss(probs, target, smooth=0, include_background=False).item() == 0.0
    # Batch-pooled, not averaged per sample: p1 = [0.5, 0], t1 = [1, 0]; p2 = [1, 0], t2 = [1, 0]
    # I = 1.5, sum p^2 = 1.25, sum t^2 = 2 -> 1 - 3 / 3.25 = 1/13
    probs = torch.tensor([[[0.5, 1.0], [0.5, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
    target = one_hot(torch.tensor([[1, 0], [1, 0]]), 2)
    fg = soft_dice_loss(probs, target, smooth=0, include_background=False)
    assert fg.item() == pytest.approx(1 / 13)


def test_soft_dice_mask():
    probs = torch.tensor([[[0.2, 0.4], [0.8, 0.6]]])
    target = one_hot(torch.tensor([[1, 0]]), 2)
    # Keep only pixel 0: class 1 -> 1 - 1.6 / (0.64 + 1) ; class 0 -> 1 - 0 / 0.04 = 1
    mask = torch.tensor([[1.0, 0.0]])
    expected = ((1 - 1.6 / 1.64) + 1.0) / 2
    assert soft_dice_loss(probs, target, smooth=0, mask=mask).item() == pytest.approx(expected)
    assert soft_dice_loss(probs, target, smooth=0, mask=mask[:, None]).item() == \
        pytest.approx(expected)
    with pytest.raises(ValueError, match="same shape"):
        soft_dice_loss(probs, target[:, :1])


def test_per_sample_dice_hand_worked():
    # sample 0 as test_soft_dice_hand_worked, linear denominator: class 1 p = [0.8, 0.6],
    # t = [1, 0]: 1 - 1.6 / (1.4 + 1) = 1/3; class 0 p = [0.2, 0.4], t = [0, 1]:
    # 1 - 0.8 / (0.6 + 1) = 1/2. Sample 1 predicts [1, 0] for class 1 where t = [1, 0]: 0 and 0.
    probs = torch.tensor([[[0.2, 0.4], [0.8, 0.6]], [[0.0, 1.0], [1.0, 0.0]]])
    target = one_hot(torch.tensor([[1, 0], [1, 0]]), 2)
    assert per_sample_dice_loss(probs, target, smooth=0).item() == pytest.approx((1 / 3 + 1 / 2 + 0 + 0) / 4)
    assert per_sample_dice_loss(probs, target, smooth=0, include_background=False).item() == pytest.approx(1 / 6)
    # the mask multiplies every sum; an empty one gives 1 - s / (s + eps)
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    # sample 0, pixel 0: class 1 1 - 1.6 / 1.8, class 0 1 - 0 / 0.2 = 1; sample 1: 1 - s / (s + eps)
    s, eps = 1.0, 1e-8
    expected = ((1 - (1.6 + s) / (1.8 + s + eps)) + (1 - s / (0.2 + s + eps)) + 2 * (1 - s / (s + eps))) / 4
    assert per_sample_dice_loss(probs, target, s, mask=mask, eps=eps).item() == pytest.approx(expected, rel=1e-6)
    # dice_ce_loss's per_sample switch takes it instead of SSL4MIS's
    logits = torch.log(probs)
    ce, dice = dice_ce_loss(logits, torch.tensor([[1, 0], [1, 0]]), per_sample=True, smooth=0)
    assert dice.item() == pytest.approx((1 / 3 + 1 / 2) / 4, rel=1e-6)


def test_dice_ce_loss_hand_worked():
    # logits [0, ln 3] -> p = [1/4, 3/4]; label 1 -> CE = -ln(3/4)
    logits = torch.tensor([[[0.0], [math.log(3.0)]]])
    label = torch.tensor([[1]])
    result = dice_ce_loss(logits, label)
    assert isinstance(result, DiceCE)
    ce, dice = result  # unpacks as a pair
    assert ce.item() == pytest.approx(-math.log(0.75))
    # class 0: I = 0, p^2 = 1/16, t = 0 -> 1 - s / (1/16 + s) ~ 1
    # class 1: I = 3/4, p^2 = 9/16, t^2 = 1 -> 1 - 1.5 / (25/16) = 0.04
    assert dice.item() == pytest.approx((1.0 + 0.04) / 2, abs=1e-4)
    assert result.total.item() == pytest.approx(0.5 * (ce.item() + dice.item()))


def test_dice_ce_loss_mask_and_gradient():
    logits = torch.tensor([[[0.0, 5.0], [math.log(3.0), -5.0]]], requires_grad=True)
    label = torch.tensor([[1, 1]])
    ce, _ = dice_ce_loss(logits, label, mask=torch.tensor([[1.0, 0.0]]))
    assert ce.item() == pytest.approx(-math.log(0.75), rel=1e-5)  # pixel 1 is masked out
    ce.backward()
    assert logits.grad[..., 1].abs().sum() == 0 and logits.grad[..., 0].abs().sum() > 0


def test_masked_mean():
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (B=1, C=2, N=2)
    mask = torch.tensor([[[1.0, 0.0]]])  # (1, 1, 2): keeps pixel 0 in both channels
    # (1 + 3) / (2 + eps): the count is over the broadcast mask
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0
    assert masked_mean(x, mask.bool()).item() == pytest.approx(2.0)
    # UA-MT: sum(mask * d) / (2 * sum(mask) + 1e-16) for two channels
    d = torch.rand(2, 2, 4, 4)
    m = (torch.rand(2, 1, 4, 4) > 0.5).float()
    m[0, 0, 0, 0] = 1.0
    torch.testing.assert_close(masked_mean(d, m), (m * d).sum() / (2 * m.sum() + 1e-16))


# ---------------------------------------------------------------- pseudo-label helpers


def test_sharpen_hand_worked():
    p = torch.tensor([0.8, 0.5, 0.2, 1.0])
    out = sharpen(p, 0.5)
    torch.testing.assert_close(out, torch.tensor([0.64 / 0.68, 0.5, 0.04 / 0.68, 1.0]))
    assert out[0].item() == pytest.approx(0.9411765)
    torch.testing.assert_close(sharpen(p, 1.0), p)
    with pytest.raises(ValueError):
        sharpen(p, 0.0)


def test_sharpen_distribution_hand_worked():
    p = torch.tensor([[0.8, 0.2], [0.5, 0.5]])
    out = sharpen_distribution(p, 0.5, dim=1)
    torch.testing.assert_close(out, torch.tensor([[0.64 / 0.68, 0.04 / 0.68], [0.5, 0.5]]))
    # Agrees with the binary form for two classes and sums to one.
    torch.testing.assert_close(out[:, 0], sharpen(p[:, 0], 0.5))
    q = torch.tensor([[0.5, 0.3, 0.2, 0.0]])
    s = sharpen_distribution(q, 0.1)
    assert s.sum().item() == pytest.approx(1.0) and s[0, 3] == 0
    expected = q ** 10 / (q ** 10).sum()
    torch.testing.assert_close(s, expected)


def test_entropy_hand_worked():
    p = torch.tensor([[[0.5], [0.5]], [[1.0], [0.0]]])  # (B=2, C=2, N=1)
    h = entropy(p, eps=0.0)
    assert h.shape == (2, 1)
    assert h[0, 0].item() == pytest.approx(math.log(2))
    assert h[1, 0].item() == 0.0
    assert entropy(p)[0, 0].item() == pytest.approx(-math.log(0.500001), rel=1e-6)
    assert entropy(p, keepdim=True).shape == (2, 1, 1)
    assert entropy(p, eps=0.0, normalize=True)[0, 0].item() == pytest.approx(1.0)
    # [0.25] * 4 -> ln 4
    assert entropy(torch.full((1, 4, 1), 0.25), eps=0.0).item() == pytest.approx(math.log(4))


def test_largest_connected_component_2d():
    lm = torch.tensor([[
        [1, 1, 0, 0, 1],
        [1, 1, 0, 0, 0],
        [0, 0, 0, 2, 0],
        [2, 0, 0, 2, 2],
        [0, 3, 0, 0, 0],
    ]], dtype=torch.uint8)
    out = largest_connected_component(lm)
    expected = torch.tensor([[
        [1, 1, 0, 0, 0],  # the lone 1 at the corner goes
        [1, 1, 0, 0, 0],
        [0, 0, 0, 2, 0],
        [0, 0, 0, 2, 2],  # the lone 2 goes
        [0, 3, 0, 0, 0],  # a single component stays
    ]], dtype=torch.uint8)
    assert torch.equal(out, expected) and out.dtype == torch.uint8
    assert torch.equal(largest_connected_component(lm, classes=[2])[0, 0], lm[0, 0])


def test_largest_connected_component_connectivity_and_batch():
    # A diagonal pair is one component with full (8-) connectivity, two with 4-connectivity.
    lm = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 0]],
                       [[0, 0, 0], [0, 0, 0], [0, 0, 0]]])
    assert torch.equal(largest_connected_component(lm), lm)
    faces = largest_connected_component(lm, connectivity=1)
    assert faces[0].sum() == 1 and faces[0, 0, 0] == 1  # tie -> first in raster order
    assert torch.equal(faces[1], lm[1])  # an empty sample stays empty
    with pytest.raises(ValueError, match="integer"):
        largest_connected_component(lm.float())


def test_largest_connected_component_3d():
    lm = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    lm[0, :2, :2, :2] = 1  # 8 voxels
    lm[0, 3, 3, 3] = 1  # 1 voxel, separate
    out = largest_connected_component(lm)
    assert out.sum() == 8 and out[0, 3, 3, 3] == 0


def test_device_side_labelling_worked_example_and_ties():
    """``1 1 0 1 1``: two components of 2, ids settle at 5 5 0 2 2, the first is kept (scipy's tie
    rule); a 4-connected pair on the diagonal is two components, an 8-connected one is one."""
    row = torch.tensor([[1, 1, 0, 1, 1]])
    assert largest_connected_component(row, on_device=True).tolist() == [[1, 1, 0, 0, 0]]
    diag = torch.tensor([[[0, 1], [1, 0]]])
    assert largest_connected_component(diag, on_device=True).sum() == 2
    assert largest_connected_component(diag, connectivity=1, on_device=True).tolist() == [[[0, 1], [0, 0]]]


@pytest.mark.parametrize("shape, connectivity", [((3, 24, 20), None), ((3, 24, 20), 1),
                                                  ((2, 9, 12, 10), None), ((2, 9, 12, 10), 1),
                                                  ((2, 9, 12, 10), 2)])
def test_device_side_labelling_equals_scipy(shape, connectivity):
    """Random multi-class maps with many components (snakes and ties included): the device-side
    labelling keeps exactly what scipy's does, per sample and class."""
    gen = torch.Generator().manual_seed(sum(shape) + (connectivity or 0))
    lm = (torch.rand(shape, generator=gen) * 5).long() * (torch.rand(shape, generator=gen) > 0.45)
    lm[0] = 0
    lm[0].view(-1)[::7] = 2  # a lattice of equal one-voxel components in the first sample
    expected = largest_connected_component(lm, connectivity=connectivity)
    assert not torch.equal(expected, lm)
    assert torch.equal(largest_connected_component(lm, connectivity=connectivity, on_device=True), expected)
    assert torch.equal(largest_connected_component(lm, connectivity=connectivity, classes=[1, 3],
                                                   on_device=True),
                       largest_connected_component(lm, connectivity=connectivity, classes=[1, 3]))
