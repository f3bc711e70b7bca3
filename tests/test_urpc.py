"""URPC: its pyramid network, the uncertainty-rectified consistency by hand and against SSL4MIS's
figures, the step's terms and gradient, and its catalogue entries."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import REPO
from helpers import method_on_defaults, squares_batch, unet3
from semiseg.config import load_config, run_spec
from semiseg.methods import Step, StepContext, inference_network
from semiseg.methods.common.losses import dice_ce_loss
from semiseg.methods.urpc import pyramid_uncertainty, rectified_consistency
from semiseg.nets import PyramidNet, UNet, VNet, build_network


def _pyramid(**kwargs) -> PyramidNet:
    return PyramidNet(unet3(), **kwargs)


def _two_heads() -> list[torch.Tensor]:
    """Two heads on two pixels of two classes: at pixel A head 1 says [0.8, 0.2] (logits
    [ln 4, 0]) and head 2 [0.5, 0.5]; at pixel B both say [0.5, 0.5]."""
    h1 = torch.tensor([[[math.log(4.0), 0.0]], [[0.0, 0.0]]], dtype=torch.float64)  # (C, 1, 2)
    h2 = torch.zeros(2, 1, 2, dtype=torch.float64)
    return [h1.unsqueeze(0), h2.unsqueeze(0)]


# ---------------------------------------------------------------- network


def test_pyramid_has_ssl4mis_s_heads_on_the_default_unet():
    base = UNet(1, 4)
    net = PyramidNet(base)
    # 3x3 heads on the 128-, 64- and 32-channel stages: 4612 + 2308 + 1156 parameters more
    assert sum(p.numel() for p in net.parameters()) == 1_813_764 + 4612 + 2308 + 1156
    heads = net.heads(torch.randn(2, 1, 32, 32))
    assert net.num_heads == 4 and all(h.shape == (2, 4, 32, 32) for h in heads)


def test_pyramid_forward_is_the_unperturbed_main_head():
    torch.manual_seed(0)
    net = _pyramid().train()
    x = torch.randn(2, 1, 16, 16)
    heads = net.heads(x)
    assert torch.equal(heads[0], net.base(x)) and torch.equal(net(x), net.base(x))
    net.eval()
    # in eval mode the heads read the stages as they are: no perturbation left
    assert all(torch.equal(a, b) for a, b in zip(net.heads(x), net.heads(x)))


def test_pyramid_perturbs_only_the_auxiliary_heads_in_training():
    net = _pyramid(perturbations=["dropout", "none", "feature_noise"])
    x = torch.randn(2, 1, 16, 16)
    torch.manual_seed(1)
    a = net.train().heads(x)
    torch.manual_seed(2)
    b = net.heads(x)
    # the main and the unperturbed 1/4 head (index 2: heads are main, 1/2, 1/4, 1/8) draw nothing
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert not torch.equal(a[1], b[1]) and not torch.equal(a[3], b[3])


def test_pyramid_resizes_with_nearest_or_linear():
    net = _pyramid(upsample="nearest").eval()
    x = torch.randn(1, 1, 16, 16)
    deepest = net.heads(x)[-1]  # the 1/8 stage's head, 2 x 2 before resizing: 8 x 8 blocks
    assert torch.equal(deepest[..., :8, :8], deepest[..., :1, :1].expand(-1, -1, 8, 8))
    smooth = PyramidNet(net.base, upsample="linear")
    smooth.load_state_dict(net.state_dict())
    assert not torch.equal(smooth.eval().heads(x)[-1][..., :8, :8], deepest[..., :8, :8])


def test_pyramid_on_the_vnet_has_one_by_one_heads():
    net = PyramidNet(VNet(1, 2, n_filters=4), upsample="linear")
    assert [tuple(h.kernel_size) for h in net.aux] == [(1, 1, 1)] * 3
    heads = net.heads(torch.randn(2, 1, 16, 16, 16))
    assert [h.shape for h in heads] == [(2, 2, 16, 16, 16)] * 4


def test_pyramid_arguments_are_checked():
    with pytest.raises(ValueError, match="one entry per decoder stage"):
        _pyramid(perturbations=["dropout"])
    with pytest.raises(ValueError, match="unknown"):
        _pyramid(perturbations=["dropout", "blur", "none"])
    with pytest.raises(ValueError, match="upsample"):
        _pyramid(upsample="cubic")
    net = build_network("unet", in_channels=1, num_classes=4, dims=2, pyramid={"dropout": 0.3})
    assert isinstance(net, PyramidNet) and net.dropout == 0.3


# ---------------------------------------------------------------- the consistency by hand


def test_uncertainty_is_either_kl_by_hand():
    # p_s = [0.8, 0.2], p_c = [0.5, 0.5]: KL(p_s || p_c) = 0.8 ln 1.6 + 0.2 ln 0.4 = 0.1927448;
    # KL(p_c || p_s) = 0.5 ln 0.625 + 0.5 ln 2.5 = 0.2231436
    log_p = torch.log(torch.tensor([0.8, 0.2], dtype=torch.float64)).view(1, 2, 1)
    mean = torch.tensor([0.5, 0.5], dtype=torch.float64).view(1, 2, 1)
    assert pyramid_uncertainty(log_p, mean, "scale_mean").item() == pytest.approx(0.19274475702175753, rel=1e-12)
    assert pyramid_uncertainty(log_p, mean, "mean_scale").item() == pytest.approx(0.22314355131420976, rel=1e-12)


@pytest.mark.parametrize("divergence, class_reduction, expected", [
    # p_c = [0.65, 0.35] at A, [0.5, 0.5] at B (D = d = 0, w = 1 there). At A both heads are
    # 0.15 from p_c in each class: d = 0.0225 + 0.0225 = 0.045 (sum), 0.0225 (mean).
    # Paper, KL(p_s || p_c): D_1 = 0.8 ln(0.8/0.65) + 0.2 ln(0.2/0.35) = 0.0541883,
    # D_2 = 0.5 ln(0.5/0.65) + 0.5 ln(0.5/0.35) = 0.0471553; per head
    # w·d / (w + 1) + D / 2 (the means over the two pixels), w = e^-D = 0.9472537, 0.9539392:
    # (0.0218906 + 0.0270942 + 0.0219765 + 0.0235777) / 2 = 0.0472660
    ("scale_mean", "sum", 0.047265983806429546),
    # SSL4MIS: KL(p_c || p_s): D_1 = 0.65 ln(0.65/0.8) + 0.35 ln(0.35/0.2) = 0.0608999,
    # D_2 = 0.0457005, w = 0.9409174, 0.9553280, d = 0.0225:
    # (0.0109078 + 0.0304500 + 0.0109972 + 0.0228503) / 2 = 0.0376004
    ("mean_scale", "mean", 0.03760038136973246),
])
def test_rectified_consistency_on_two_pixels_by_hand(divergence, class_reduction, expected):
    got = rectified_consistency(_two_heads(), divergence=divergence, class_reduction=class_reduction)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_rectified_consistency_is_zero_when_the_scales_agree():
    z = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert rectified_consistency([z, z.clone(), z.clone()]).item() == pytest.approx(0.0, abs=1e-15)


# ---------------------------------------------------------------- SSL4MIS's figures


def _ssl4mis_inputs():
    """The seeded float64 tensors the figures below were computed on: 4 heads' logits of
    2 labeled + 2 unlabeled 2 x 3 images, 3 classes, and the labels."""
    g = torch.Generator().manual_seed(2021)
    heads = [torch.randn(4, 3, 2, 3, generator=g, dtype=torch.float64) * 2 for _ in range(4)]
    return heads, torch.randint(0, 3, (4, 2, 3), generator=g)


def test_losses_equal_ssl4mis_s_on_identical_tensors():
    # HiLab-git/SSL4MIS @06df6047a59aba9988ced8331998b5957ecb356b,
    # code/train_uncertainty_rectified_pyramid_consistency_2D.py: its lines from the softmax of the
    # four outputs to `consistency_loss` run on these tensors (labeled_bs 2, its DiceLoss,
    # CrossEntropyLoss and KLDivLoss(reduction='none')) gave supervised_loss 1.5328064911469679
    # and consistency_loss 0.8603591105669395.
    heads, label = _ssl4mis_inputs()
    supervised = [dice_ce_loss(h[:2], label[:2]) for h in heads]
    assert sum(0.5 * (t.ce + t.dice) for t in supervised).item() / 4 == pytest.approx(1.5328064911469679, rel=1e-12)
    unlabeled = [h[2:] for h in heads]
    code = rectified_consistency(unlabeled, divergence="mean_scale", class_reduction="mean")
    assert code.item() == pytest.approx(0.8603591105669395, rel=1e-12)
    # each of the code's two departures from the paper changes the figure
    for switches in ({"divergence": "scale_mean", "class_reduction": "mean"},
                     {"divergence": "mean_scale", "class_reduction": "sum"}):
        assert rectified_consistency(unlabeled, **switches).item() != pytest.approx(0.8603591105669395, rel=1e-3)


def test_losses_equal_ssl4mis_s_3d_script_on_identical_tensors():
    # The same commit's train_uncertainty_rectified_pyramid_consistency_3D.py (four auxiliary
    # outputs, no separate main one; the same losses): its lines from the softmax of the outputs to
    # `consistency_loss`, run on these 2-class 2 x 2 x 3 volumes (labeled_bs 2), gave
    # supervised_loss 0.850001060852705 and consistency_loss 0.4965733924054043.
    g = torch.Generator().manual_seed(2022)
    heads = [torch.randn(4, 2, 2, 2, 3, generator=g, dtype=torch.float64) * 2 for _ in range(4)]
    label = torch.randint(0, 2, (4, 2, 2, 3), generator=g)
    supervised = [dice_ce_loss(h[:2], label[:2]) for h in heads]
    assert sum(0.5 * (t.ce + t.dice) for t in supervised).item() / 4 == pytest.approx(0.850001060852705, rel=1e-12)
    code = rectified_consistency([h[2:] for h in heads], divergence="mean_scale", class_reduction="mean")
    assert code.item() == pytest.approx(0.4965733924054043, rel=1e-12)


# ---------------------------------------------------------------- the method


def _urpc(**params):
    return method_on_defaults("urpc", _pyramid, num_classes=3, batch=2, **params)


def test_step_is_the_heads_mean_supervision_plus_the_weighted_consistency():
    m = _urpc(consistency=0.5, consistency_rampup=0.0)
    batch = squares_batch()
    torch.manual_seed(0)
    losses = m.training_step(StepContext(Step(0, 10), batch))
    torch.manual_seed(0)
    heads = m.models[0].heads(torch.cat([batch["labeled_image"], batch["unlabeled_image"]]))
    sup = [dice_ce_loss(h[:2], batch["labeled_label"]) for h in heads]
    ce = sum(t.ce for t in sup) / 4
    dice = sum(t.dice for t in sup) / 4
    cons = rectified_consistency([h[2:] for h in heads])
    assert losses.terms["ce"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert losses.terms["dice"].item() == pytest.approx(dice.item(), rel=1e-6)
    assert losses.terms["consistency"].item() == pytest.approx(cons.item(), rel=1e-6)
    assert losses.total.item() == pytest.approx((0.5 * (ce + dice) + 0.5 * cons).item(), rel=1e-6)


def test_consistency_changes_the_gradient_of_every_head():
    batch = squares_batch()

    def grads(weight):
        m = _urpc(consistency=weight, consistency_rampup=0.0)
        torch.manual_seed(0)
        m.models[0].load_state_dict(base_state)
        torch.manual_seed(1)
        m.training_step(StepContext(Step(0, 10), batch)).total.backward()
        return [p.grad.clone() for p in m.models[0].aux.parameters()], m.models[0].base.decoder.out_conv.weight.grad

    base_state = _urpc().models[0].state_dict()
    (aux0, main0), (aux1, main1) = grads(0.0), grads(1.0)
    assert not torch.allclose(main0, main1)
    assert all(not torch.allclose(a, b) for a, b in zip(aux0, aux1))


def test_a_plain_network_is_trained_and_inferred_in_the_default_pyramid():
    m = method_on_defaults("urpc", unet3)
    assert isinstance(m.models[0], PyramidNet) and m.models[0].perturbations == ["dropout", "feature_dropout",
                                                                                  "feature_noise"]
    spec = {"method": {"algorithm": "urpc"}}
    fresh = inference_network(spec, unet3)
    fresh.load_state_dict(m.eval_network().state_dict())  # the infer stage loads model.pt into it
    x = torch.randn(1, 1, 16, 16)
    assert torch.equal(fresh.eval()(x), m.eval_network().eval()(x))


# ---------------------------------------------------------------- catalogue


def test_catalogue_entries_take_the_paper_and_the_code():
    cfg = load_config(root=REPO)
    paper = run_spec(cfg, "acdc", "urpc", 10, 0)["method"]
    code = run_spec(cfg, "acdc", "urpc_code", 10, 0)["method"]
    assert (paper["params"]["divergence"], paper["params"]["class_reduction"]) == ("scale_mean", "sum")
    assert (code["params"]["divergence"], code["params"]["class_reduction"]) == ("mean_scale", "mean")
    # SSL4MIS's 2D script: λ 0.1 over 200 "epochs" of 150 iterations = all of its 30k
    assert (paper["params"]["consistency"], paper["params"]["rampup_block"]) == (0.1, 150)
    assert paper["network"] == "unet" and "pyramid" not in paper["network_args"]  # the default pyramid
    for dataset in ("la", "pancreas", "brats"):
        spec = run_spec(cfg, dataset, "urpc", 10, 0)["method"]
        assert spec["network"] == "vnet" and spec["network_args"]["pyramid"] == {"upsample": "linear"}
