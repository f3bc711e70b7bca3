"""The signed-distance family (DTC, SASSNet): the normalised signed distance map, the task
transform, the losses by hand and against the official codes' figures, the network with its
signed-distance head, SASSNet's discriminator and its own optimiser."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import method_on_defaults, run_spec, small_unet, squares_batch, tiny_store
from semiseg.engine.loop import build_optimizers, run_second_phase, train
from semiseg.methods.base import Step, StepContext
from semiseg.methods.common.losses import one_hot, soft_dice_loss
from semiseg.methods.common.sdf import inner_boundary, level_set_probability, normalized_sdf, sdf_targets
from semiseg.methods.dtc import dual_task_consistency
from semiseg.methods.sassnet import discriminator_loss, shape_adversarial_loss
from semiseg.nets import build_network
from semiseg.nets.sdf import Discriminator, SignedDistanceNet


def sdf_unet():
    return SignedDistanceNet(small_unet(), 3)


# ---- the normalised signed distance map, by hand


def test_normalized_sdf_worked_example():
    # d_in = [0, 1, 2, 1, 0] (max 2), d_out = [1, 0, 0, 0, 1] (max 1): d_out − d_in/2 =
    # [1, −0.5, −1, −0.5, 1], the inner boundary (positions 1, 3) set to 0
    mask = np.array([[0, 1, 1, 1, 0]], bool)
    assert normalized_sdf(mask).tolist() == [[1.0, 0.0, -1.0, 0.0, 1.0]]


def test_normalized_sdf_of_an_empty_and_of_a_full_mask():
    assert (normalized_sdf(np.zeros((3, 4), bool)) == 0).all()
    # the codes' 0/0 (NaN) is not reproduced: all inside, no boundary in view
    assert (normalized_sdf(np.ones((3, 4), bool)) == -1).all()


def test_inner_boundary_is_the_ring_and_the_image_border_counts_as_inside():
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    ring = mask.copy()
    ring[2, 2] = False
    assert (inner_boundary(mask) == ring).all()
    corner = np.zeros((4, 4), bool)
    corner[:2, :2] = True  # touches the top and left borders: only the inner edges are boundary
    assert inner_boundary(corner).tolist() == [[False, True, False, False], [True, True, False, False],
                                               [False] * 4, [False] * 4]


def test_sdf_targets_have_one_map_per_foreground_class():
    label = torch.zeros(2, 1, 5, dtype=torch.long)
    label[0, 0, 1:4] = 1
    label[1, 0, 1:4] = 2
    maps = sdf_targets(label, 3, torch.float64)
    assert maps.shape == (2, 2, 1, 5) and maps.dtype == torch.float64
    assert maps[0, 0, 0].tolist() == [1.0, 0.0, -1.0, 0.0, 1.0] and (maps[0, 1] == 0).all()
    assert maps[1, 1, 0].tolist() == [1.0, 0.0, -1.0, 0.0, 1.0] and (maps[1, 0] == 0).all()


# ---- the loss terms, by hand


def test_level_set_probability_worked_values():
    s = torch.tensor([-0.001, 0.0, 0.01], dtype=torch.float64)
    p = level_set_probability(s, 1500)
    assert p[0].item() == pytest.approx(1 / (1 + math.exp(-1.5)))  # 0.8176
    assert p[1].item() == 0.5
    assert p[2].item() == pytest.approx(1 / (1 + math.exp(15)))  # 3.1e-7


def test_dual_task_consistency_worked_example():
    logits = torch.zeros(1, 2, 1, 1, dtype=torch.float64)  # p_1 = 0.5
    sdf = torch.full((1, 1, 1, 1), -0.001, dtype=torch.float64)
    expected = (1 / (1 + math.exp(-1.5)) - 0.5) ** 2  # 0.100853
    assert dual_task_consistency(logits, sdf, 1500).item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.100853, abs=1e-6)


def test_adversarial_and_discriminator_losses_worked_examples():
    scores = torch.tensor([[0.0, math.log(3)], [0.0, math.log(3)]], dtype=torch.float64)  # P(labeled) = 3/4
    assert shape_adversarial_loss(scores[:1]).item() == pytest.approx(math.log(4 / 3), rel=1e-12)  # 0.287682
    # one labeled (target 1: −ln 3/4), one unlabeled (target 0: −ln 1/4)
    assert discriminator_loss(scores, 1).item() == pytest.approx((math.log(4 / 3) + math.log(4)) / 2, rel=1e-12)


# ---- equal to the official codes on identical float64 tensors


def _code_inputs():
    """Four 16³ images: seg logits z, tanh maps and images as fixed functions of the voxel index,
    and three labels (a ball, an ellipsoid cut by the border, a slab; the fourth empty)."""
    n = torch.arange(4 * 16 ** 3, dtype=torch.float64)
    z_logit = (2.0 * torch.sin(0.37 * n)).reshape(4, 1, 16, 16, 16)
    sdf = (0.9 * torch.cos(0.11 * n)).reshape(4, 1, 16, 16, 16)
    image = torch.sin(0.05 * n + 1.0).reshape(4, 1, 16, 16, 16)
    z, y, x = np.meshgrid(np.arange(16), np.arange(16), np.arange(16), indexing="ij")
    label = np.zeros((4, 16, 16, 16), dtype=np.int64)
    label[0] = ((z - 7) ** 2 + (y - 8) ** 2 + (x - 6) ** 2) < 20
    label[1] = ((z - 2) ** 2 / 4 + (y - 12) ** 2 + (x - 13) ** 2 / 9) < 10
    label[2] = (z > 8) & (y < 5)
    return z_logit, sdf, image, torch.from_numpy(label)


def _set_weights(module):
    for i, (_, p) in enumerate(module.named_parameters()):
        with torch.no_grad():
            p.copy_((0.05 * torch.sin(0.7 * torch.arange(p.numel(), dtype=torch.float64) + i)).reshape(p.shape))


def test_signed_distance_maps_equal_the_codes():
    # HiLab-git/DTC @2525b9c and kleinzcy/SASSnet @1761aa8 (the same function), code/utils/util.py
    # compute_sdf(label, (2, 16, 16, 16)) of the first two labels (scipy 1.17, scikit-image 0.26)
    _, _, _, label = _code_inputs()
    maps = sdf_targets(label[:2], 2, torch.float64)[:, 0]
    assert maps.sum().item() == pytest.approx(2762.5821232854678, rel=1e-12)
    assert (maps ** 2).sum().item() == pytest.approx(1610.0886590390573, rel=1e-12)
    assert maps[0, 7, 8, 6].item() == -1.0 and maps[1, 2, 12, 13].item() == -1.0
    assert maps[0, 0, 0, 0].item() == pytest.approx(0.78173595997057166, rel=1e-12)
    assert maps[1, 5, 3, 3].item() == pytest.approx(0.49700297000242871, rel=1e-12)


def test_dtc_losses_equal_the_code():
    # HiLab-git/DTC @2525b9c, code/train_la_dtc.py's loss lines (labeled_bs 2, beta 0.3,
    # consistency 1, ramp sigmoid_rampup(3000 // 150, 40)), float64, the .float() of the maps left out:
    # loss_sdf, loss_seg_dice (utils/losses.py dice_loss), consistency_loss, weight, loss
    z, sdf, _, label = _code_inputs()
    m = method_on_defaults("dtc", sdf_unet, num_classes=2)
    logits = torch.cat([torch.zeros_like(z), z], dim=1)  # the network's logits [0, z]
    terms = m.supervised_terms(logits[:2], sdf[:2], label[:2])
    terms["consistency"] = dual_task_consistency(logits, sdf, 1500)
    weight = m.ramp_weight(Step(3000, 6000))
    total = m.supervised_total(terms) + weight * terms["consistency"]
    assert terms["sdf"].item() == pytest.approx(0.60161704720063769, rel=1e-12)
    assert terms["dice"].item() == pytest.approx(0.75318783533930267, rel=1e-12)
    assert terms["consistency"].item() == pytest.approx(0.33230085533636805, rel=1e-12)
    assert weight == pytest.approx(0.28650479686019009, rel=1e-12)
    assert total.item() == pytest.approx(1.0288787385541076, rel=1e-12)


def test_sassnet_discriminator_and_losses_equal_the_code():
    # kleinzcy/SASSnet @1761aa8, code/networks/discriminator.py FC3DDiscriminator(num_classes=1, ndf=8)
    # with the weights of _set_weights, eval mode, float64, its AvgPool3d((7, 7, 5)) set to (1, 1, 1)
    # for 16³ inputs (LA's 112 x 112 x 80 leave 7 x 7 x 5); code/train_gan_sdfloss.py's loss_adv,
    # loss (consistency 0.01, same ramp) and D_loss with Dtarget [1, 1, 0, 0]
    z, sdf, image, label = _code_inputs()
    d = Discriminator(1, 1, 8, dims=3).double()
    _set_weights(d)
    d.eval()
    with torch.no_grad():
        scores = d(sdf[2:], image[2:])
        every = d(sdf, image)
    assert scores.flatten().tolist() == pytest.approx(
        [-0.024232362472403138, -0.051713394406951184, -0.02504490077625874, -0.05190488260161093], rel=1e-12)
    adversarial = shape_adversarial_loss(scores)
    assert adversarial.item() == pytest.approx(0.70682472276807062, rel=1e-12)
    m = method_on_defaults("sassnet", sdf_unet, num_classes=2)
    logits = torch.cat([torch.zeros_like(z), z], dim=1)
    weight = m.ramp_weight(Step(3000, 6000))
    total = m.supervised_total(m.supervised_terms(logits[:2], sdf[:2], label[:2])) + weight * adversarial
    assert weight == pytest.approx(0.0028650479686019008, rel=1e-12)
    assert total.item() == pytest.approx(0.9356980362356182, rel=1e-12)
    assert discriminator_loss(every, 2).item() == pytest.approx(0.6931222037185073, rel=1e-12)


def test_the_code_s_binary_dice_is_the_foreground_dice_of_the_logits_zero_z():
    z = torch.tensor([[[1.0, -2.0, 0.5]]], dtype=torch.float64)
    label = torch.tensor([[1, 0, 1]])
    p = torch.sigmoid(z[:, 0])
    t = label.double()
    code = 1 - (2 * (p * t).sum() + 1e-5) / ((p * p).sum() + (t * t).sum() + 1e-5)
    ours = soft_dice_loss(torch.softmax(torch.stack([torch.zeros_like(z[:, 0]), z[:, 0]], 1), 1),
                          one_hot(label, 2), include_background=False)
    assert ours.item() == pytest.approx(code.item(), rel=1e-12)


# ---- the network


def test_binary_network_has_the_code_s_single_logit_and_a_map_per_foreground_class():
    torch.manual_seed(0)
    net = build_network("vnet", in_channels=1, num_classes=2, dims=3, n_filters=4, sdf_head=True)
    assert isinstance(net, SignedDistanceNet) and net.base.decoder.out_conv.out_channels == 1
    net.eval()
    x = torch.randn(1, 1, 16, 16, 16)
    logits, maps = net.heads(x)
    assert logits.shape == (1, 2, 16, 16, 16) and (logits[:, 0] == 0).all()
    assert maps.shape == (1, 1, 16, 16, 16) and maps.abs().max() < 1
    assert torch.equal(net(x), logits)


def test_multiclass_network_has_a_logit_per_class_and_a_map_per_foreground_class():
    net = sdf_unet()
    logits, maps = net.heads(torch.randn(2, 1, 16, 16))
    assert logits.shape == (2, 3, 16, 16) and maps.shape == (2, 2, 16, 16)
    assert net.sdf_head.kernel_size == (3, 3)  # the U-Net's output convolution's


def test_sdf_head_and_extra_decoders_do_not_combine():
    with pytest.raises(ValueError, match="extra_decoders, pyramid and sdf_head cannot be combined"):
        build_network("unet", in_channels=1, num_classes=3, dims=2, sdf_head=True, extra_decoders=["linear"])


def test_methods_add_the_head_to_a_plain_network_and_infer_with_the_same_shape():
    m = method_on_defaults("dtc", small_unet)
    assert isinstance(m.net, SignedDistanceNet) and m.net.sdf_head.out_channels == 2
    fresh = type(m).inference_network(m.spec, small_unet)
    assert fresh.state_dict().keys() == m.eval_network().state_dict().keys()


# ---- the methods' steps


def _grads(m, batch, weight):
    m.params["consistency"] = weight
    m.params["consistency_rampup"] = 0.0  # λ = consistency at once
    m.zero_grad()
    torch.manual_seed(0)
    m.training_step(StepContext(Step(0, 10), batch)).total.backward()
    return [p.grad.clone() for p in m.net.parameters()]


@pytest.mark.parametrize("algorithm", ["dtc", "sassnet"])
def test_the_unsupervised_term_changes_the_network_s_gradient(algorithm):
    torch.manual_seed(0)
    m = method_on_defaults(algorithm, sdf_unet)
    batch = squares_batch()
    off, on = _grads(m, batch, 0.0), _grads(m, batch, 1.0)
    assert any(not torch.allclose(a, b) for a, b in zip(off, on))


def test_sassnet_main_step_leaves_the_discriminator_and_its_own_step_moves_it_alone():
    torch.manual_seed(0)
    m = method_on_defaults("sassnet", sdf_unet, discriminator_width=8)
    opts = build_optimizers(m, {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0})
    assert set(opts) == {"main", "discriminator"}
    ctx = StepContext(Step(0, 10), squares_batch())
    losses = m.training_step(ctx)
    losses.total.backward()
    assert all(p.grad is None for p in m.discriminator.parameters())
    assert not m.discriminator.training  # scored without dropout
    net_before = [p.detach().clone() for p in m.net.parameters()]
    d_before = [p.detach().clone() for p in m.discriminator.parameters()]
    m.zero_grad()
    run_second_phase(m, opts, ctx)
    assert all(torch.equal(a, b) for a, b in zip(net_before, m.net.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, m.discriminator.parameters()))
    assert m.net.training and float(ctx.stats["discriminator_loss"]) > 0


def test_sassnet_discriminator_lr_is_fixed_while_the_main_lr_steps(tmp_path):
    store, split = tiny_store(tmp_path / "store.h5")
    spec = run_spec("sassnet", 4, {"discriminator_width": 8}, lr_policy="step", lr_step_every=1, lr_step_gamma=0.5,
                    val_interval=4)
    spec["method"]["network_args"] = {"channels": [4, 8], "dropout": [0.0, 0.0], "sdf_head": True}
    # stopped after 3 iterations (0, 1, 2): the state holds the lr of iteration 2
    assert train(spec, store, split, tmp_path / "run", progress=False, stop_after=3) == {"stopped_at": 3}
    state = torch.load(tmp_path / "run" / "checkpoints" / "state.pt", weights_only=False)
    assert state["optimizers"]["main"]["param_groups"][0]["lr"] == pytest.approx(0.01 * 0.5 ** 2)
    assert state["optimizers"]["discriminator"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert any(k.startswith("discriminator.") for k in state["method"])


# ---- three training steps of DTC's LA script at its full consistency weight, replayed
# (tests/test_parity_dtc.py replays 24 iterations of the script, at consistency 0.01: at its default
# 1 the trajectory is chaotic past a few steps; SASSNet's record, tests/test_parity_sassnet.py, runs
# its script's defaults, both phases)


def _code_order(net: SignedDistanceNet) -> list[torch.nn.Parameter]:
    """The parameters in the order of the codes' ``networks/vnet_sdf.py`` VNet: block_one,
    block_one_dw, ..., block_five, block_five_up, block_six, ..., block_nine, out_conv (the tanh
    head), out_conv2 (the segmentation head)."""
    enc, dec = net.base.encoder, net.base.decoder
    modules = [m for i in range(5) for m in (enc.stages[i], *(enc.down[i:i + 1]))]
    modules += [m for j in range(4) for m in (dec.up[j], dec.stages[j])]
    modules += [net.sdf_head, dec.out_conv]
    return [p for m in modules for p in m.parameters()]


# HiLab-git/DTC @2525b9c code/train_la_dtc.py, its loop body on _code_inputs' images and first two
# labels (2 + 2), float64: networks/vnet_sdf.py VNet(n_filters=4, batchnorm, has_dropout=False),
# every weight set by _set_weights in the code's parameter order, SGD(0.01, 0.9, 1e-4),
# iterations 0, 1500, 3000 of 6000 (the ramp's steps 0, 10, 20 of 40). Per step: total, Dice,
# SDF MSE, consistency; then the summed |change| of the network's parameters.
DTC_STEPS = [(0.79227526569584039, 0.72412202210128285, 0.2214383256106017, 0.25552974987942106),
             (0.80537249290748625, 0.72408474302664305, 0.2197761301074414, 0.25568222066232466),
             (0.86234602750319067, 0.72402228419506298, 0.21665452953444331, 0.25593771989645731)]
DTC_NET_MOVED = 0.12465832216299157


def test_three_dtc_steps_equal_the_code_s_training_loop():
    from semiseg.nets import VNet

    net = SignedDistanceNet(VNet(1, 2, n_filters=4, has_dropout=False), 2).double()
    m = method_on_defaults("dtc", lambda: net, num_classes=2)
    torch.set_default_dtype(torch.float64)
    try:
        for i, p in enumerate(_code_order(net)):
            with torch.no_grad():
                p.copy_((0.05 * torch.sin(0.7 * torch.arange(p.numel()) + i)).reshape(p.shape))
        start = [p.detach().clone() for p in m.parameters()]
        opts = build_optimizers(m, {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4})
        _, _, image, label = _code_inputs()
        batch = {"labeled_image": image[:2], "labeled_label": label[:2], "unlabeled_image": image[2:]}
        for k, it in enumerate((0, 1500, 3000)):
            torch.manual_seed(100 + it)
            m.train()
            losses = m.training_step(StepContext(Step(it, 6000), batch))
            got = (losses.total.item(), losses.terms["dice"].item(), losses.terms["sdf"].item(),
                   losses.terms["consistency"].item())
            assert got == pytest.approx(DTC_STEPS[k], rel=1e-9), k
            for opt in opts.values():
                opt.zero_grad(set_to_none=True)
            losses.total.backward()
            for opt in opts.values():
                opt.step()
        moved = sum((p - q).abs().sum().item() for p, q in zip(m.parameters(), start))
        assert moved == pytest.approx(DTC_NET_MOVED, rel=1e-6)
    finally:
        torch.set_default_dtype(torch.float32)
