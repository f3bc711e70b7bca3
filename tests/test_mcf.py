"""MCF: its two networks, its loss terms by hand, and its step against the public code's figures."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from helpers import run_spec
from semiseg.methods import Step, StepContext, build_method, inference_network
from semiseg.methods.mcf import PairMean, competition_loss, review_loss
from semiseg.nets import ResNetED, VNet, build_network, count_parameters, network_for


class Fixed(nn.Module):
    """A "network" whose output is a given tensor: the loss sees exactly these logits."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x):
        return self.logits


def _method(dims=2, **params):
    spec = run_spec("mcf", 6000, params=params, dims=dims)
    return build_method(spec, lambda: network_for(spec)), spec


def _step_on(logits_a, logits_b, label, iteration=3000, **params):
    m, _ = _method(**params)
    m.models = nn.ModuleList([Fixed(logits_a), Fixed(logits_b)])
    batch = {"labeled_image": torch.zeros(2, 1), "labeled_label": label[:2], "unlabeled_image": torch.zeros(2, 1)}
    out = m.training_step(StepContext(Step(iteration, 6000), batch))
    out.total.backward()
    return m, out


# ---------------------------------------------------------------- networks


def test_the_resnet_is_the_codes_resnet34_under_the_vnet_decoder():
    net = build_network("resnet34", in_channels=1, num_classes=2, dims=3)
    # WYC-321/MCF ad20659, Resnet34(n_channels=1, n_classes=2, normalization='batchnorm', has_dropout=True)
    assert count_parameters(net) == 17_930_354
    x = torch.randn(2, 1, 16, 16, 16)
    assert [f.shape[1:] for f in net.encode(x)] == [(16, 16, 16, 16), (32, 8, 8, 8), (64, 4, 4, 4), (128, 2, 2, 2),
                                                      (256, 1, 1, 1)]
    assert net(x).shape == (2, 2, 16, 16, 16)
    # the code's initialisation: the outer network sets every batch norm's weight to 1 (no zero gamma)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm3d)]
    assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in norms)


def test_the_2d_form_has_the_unet_decoder_and_rejects_odd_sizes():
    net = ResNetED(1, 4, dims=2)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 4, 32, 32)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(2, 1, 24, 24))


def test_the_backbone_beside_the_resnet_and_the_mean_of_their_softmax_is_evaluated():
    m, spec = _method(dims=3)
    assert isinstance(m.models[0], VNet) and isinstance(m.models[1], ResNetED)
    m.eval()
    x = torch.randn(1, 1, 16, 16, 32)
    with torch.no_grad():
        mean = (torch.softmax(m.models[0](x), 1) + torch.softmax(m.models[1](x), 1)) / 2
        evaluated = m.eval_network()(x)
    assert torch.allclose(torch.softmax(evaluated, 1), mean, atol=1e-6)
    fresh = inference_network(spec, lambda: network_for(spec))
    fresh.load_state_dict(m.eval_network().state_dict())  # the infer stage's module takes model.pt as saved
    assert isinstance(fresh, PairMean)


# ---------------------------------------------------------------- loss terms by hand


def test_review_loss_is_the_squared_error_on_the_pixels_where_the_labels_differ():
    # two classes, pixels p_1 = 0.8, 0.3, 0.6 with label 1, 1, 0; the networks differ at pixels 2 and 3:
    # ((1 − 0.3)² + (0.6 − 0)²) / 2 = (0.49 + 0.36) / 2 = 0.425
    p1 = torch.tensor([0.8, 0.3, 0.6], dtype=torch.float64)
    probs = torch.stack([1 - p1, p1]).reshape(1, 2, 3)
    loss = review_loss(probs, torch.tensor([[1, 1, 0]]), torch.tensor([[False, True, True]]))
    assert loss.item() == pytest.approx(0.425, rel=1e-12)
    assert review_loss(probs, torch.tensor([[1, 1, 0]]), torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0
    # three classes: the mean over the two foreground classes of the squared error; pixel [0.2, 0.5, 0.3],
    # label 2: ((0.5 − 0)² + (0.3 − 1)²) / 2 = (0.25 + 0.49) / 2 = 0.37
    probs3 = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64).reshape(1, 3, 1)
    assert review_loss(probs3, torch.tensor([[2]]), torch.tensor([[True]])).item() == pytest.approx(0.37, rel=1e-12)


def test_competition_loss_is_the_mse_to_the_sharpened_teacher():
    # q = [0.6, 0.4], T = 0.5: [0.36, 0.16] / 0.52; p = [0.5, 0.5]: mean of (0.5 − 9/13)², (0.5 − 4/13)²
    q = torch.tensor([0.6, 0.4], dtype=torch.float64).reshape(1, 2, 1)
    p = torch.tensor([0.5, 0.5], dtype=torch.float64).reshape(1, 2, 1)
    expected = ((0.5 - 9 / 13) ** 2 + (0.5 - 4 / 13) ** 2) / 2  # 0.0369822
    assert competition_loss(p, q, 0.5).item() == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- the step against the public code

# WYC-321/MCF at ad20659b9842dbc8fbcaca307ee7d7fec34938f6, code/train_MCF.py: its loss lines run on
# float64 outputs (4, 2, 3, 3, 2) of the V-Net and the ResNet, 2 labeled, iter_num 3000 (its
# λ = 0.1 · sigmoid_rampup(3000 // 150, 40)), with utils/losses.py (dice_loss, softmax_mse_loss)
# and utils/ramps.py; drawn by torch.Generator().manual_seed(seed): randn V-Net outputs, randn ResNet
# outputs, randint(0, 2) labels. v_loss + r_loss as "total", the sums of the squared gradients of
# v_loss.backward() and r_loss.backward() on the outputs. Seed 0: the ResNet's Dice is lower (it
# teaches); seed 1: the V-Net's.
OFFICIAL = {
    0: dict(teacher=1, ce_a=1.0711083783314563, dice_a=0.4763144544760731, cdr_a=0.4029830352164141,
            ce_b=0.8054981524691284, dice_b=0.35208127272139855, cdr_b=0.28956965646253846,
            cons=0.3189799004338616, total=3.0604175309951613, grad_a=0.0517091536954471,
            grad_b=0.0414706496908924),
    1: dict(teacher=0, ce_a=0.7125271961007938, dice_a=0.3828138272403686, cdr_a=0.27581722813663195,
            ce_b=0.878477334706246, dice_b=0.4399523626952053, cdr_b=0.3237432007877936,
            cons=0.31411773451376773, total=2.7225505589765318, grad_a=0.04018330064318461,
            grad_b=0.04919039915901301),
}


@pytest.mark.parametrize("seed", sorted(OFFICIAL))
def test_the_step_equals_the_public_codes(seed):
    want = OFFICIAL[seed]
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(4, 2, 3, 3, 2, generator=g, dtype=torch.float64)
    b = torch.randn(4, 2, 3, 3, 2, generator=g, dtype=torch.float64)
    label = torch.randint(0, 2, (4, 3, 3, 2), generator=g)
    m, out = _step_on(a, b, label)
    assert out.stats["consistency_weight"] == pytest.approx(0.1 * math.exp(-5 * 0.5 ** 2), rel=1e-12)
    assert out.stats["teacher"].item() == want["teacher"]
    for name in ("ce_a", "dice_a", "cdr_a", "ce_b", "dice_b", "cdr_b", "cons"):
        assert out.terms[name].item() == pytest.approx(want[name], rel=1e-9), name
    assert out.total.item() == pytest.approx(want["total"], rel=1e-9)
    for net, name in zip(m.models, ("grad_a", "grad_b")):
        assert (net.logits.grad ** 2).sum().item() == pytest.approx(want[name], rel=1e-9), name


def test_only_the_student_learns_from_the_unlabeled_images():
    g = torch.Generator().manual_seed(1)  # the backbone (network a) teaches, as above
    a = torch.randn(4, 2, 3, 3, 2, generator=g, dtype=torch.float64)
    b = torch.randn(4, 2, 3, 3, 2, generator=g, dtype=torch.float64)
    label = torch.randint(0, 2, (4, 3, 3, 2), generator=g)
    with_u, _ = _step_on(a, b, label)
    without, _ = _step_on(a, b, label, consistency=0.0)
    grads = [(x.logits.grad, y.logits.grad) for x, y in zip(with_u.models, without.models)]
    assert torch.equal(*grads[0])  # the teacher's gradient is its supervised one
    assert not torch.allclose(grads[1][0][2:], grads[1][1][2:])  # the student's on the unlabeled part moves
    assert torch.equal(grads[1][0][:2], grads[1][1][:2])
