"""UniMatch: its loss terms against hand-worked values and against figures of its official code, its
strong views, its step (gradients, the eval-mode partner pass, the CutMix targets) and a short real
training."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from helpers import method_on_defaults, run_spec, small_unet, squares_batch, tiny_store
from semiseg.engine.loop import train
from semiseg.methods import Step, StepContext
from semiseg.methods.unimatch import (channel_dropout, colour_jitter, confident_loss, cutmix_boxes, evaluating,
                                      gaussian_blur, mixed_targets, unimatch_total)
from semiseg.methods.unimatch.views import gaussian_kernels


def _method(**params):
    return method_on_defaults("unimatch", small_unet, 3, 2, **params)


def _logits_of(p1):
    """Two-class logits ``(1, 2, N)`` whose class-1 softmax is ``p1``."""
    p1 = torch.tensor(p1, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p1), torch.log(p1 / (1 - p1))])[None]


# ---------------------------------------------------------------- loss terms, by hand


def test_confident_dice_counts_only_the_confident_pixels():
    # p1 = [0.8, 0.6, 0.3], t = [1, 0, 1], the third pixel below τ (it must not count).
    # class 1: 1 - (2·0.8 + s) / (0.64 + 0.36 + 1 + s) = 0.2; class 0: p0 = [0.2, 0.4], t0 = [0, 1]:
    # 1 - (2·0.4 + s) / (0.04 + 0.16 + 1 + s) = 1/3; mean over the two classes 0.266667 (s = 1e-5).
    s = 1e-5
    want = 0.5 * ((1 - (1.6 + s) / (2.0 + s)) + (1 - (0.8 + s) / (1.2 + s)))
    logits, target = _logits_of([0.8, 0.6, 0.3]), torch.tensor([[1, 0, 1]])
    conf = torch.tensor([[0.99, 0.95, 0.5]], dtype=torch.float64)
    assert confident_loss(logits, target, conf, 0.95, "dice").item() == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(0.266667, abs=1e-5)
    # all three pixels counted: a different value
    assert confident_loss(logits, target, conf, 0.4, "dice").item() != pytest.approx(want, rel=1e-3)


def test_confident_ce_divides_by_every_pixel():
    # CE of the two confident pixels: -ln 0.8 - ln 0.4 = 1.139434, over all 3 pixels: 0.379811
    logits, target = _logits_of([0.8, 0.6, 0.3]), torch.tensor([[1, 0, 1]])
    conf = torch.tensor([[0.99, 0.95, 0.5]], dtype=torch.float64)
    got = confident_loss(logits, target, conf, 0.95, "ce").item()
    assert got == pytest.approx((-math.log(0.8) - math.log(0.4)) / 3, rel=1e-12)
    with pytest.raises(ValueError, match="'dice' or 'ce'"):
        confident_loss(logits, target, conf, 0.95, "mse")


def test_total_weighs_the_strong_views_and_the_perturbed_pass():
    # (0.4 + 0.5·(0.2 + 0.6)/2 + 0.5·0.3) / 2 = (0.4 + 0.2 + 0.15) / 2 = 0.375, the code's
    # (loss_x + 0.25·s1 + 0.25·s2 + 0.5·fp) / 2
    t = torch.tensor
    assert unimatch_total(t(0.4), (t(0.2), t(0.6)), t(0.3), 0.5, 0.5).item() == pytest.approx(0.375)
    assert unimatch_total(t(0.4), (t(0.2), t(0.6)), t(0.3), 1.0, 0.0).item() == pytest.approx(0.4)


def test_mixed_targets_take_the_partner_inside_the_box():
    label, mix = torch.tensor([[0, 1, 2]]), torch.tensor([[3, 3, 3]])
    conf, mix_conf = torch.tensor([[0.1, 0.2, 0.3]]), torch.tensor([[0.9, 0.9, 0.9]])
    box = torch.tensor([[False, True, False]])
    y, c = mixed_targets(label, conf, mix, mix_conf, box)
    assert y.tolist() == [[0, 3, 2]] and c[0].tolist() == pytest.approx([0.1, 0.9, 0.3])


def test_channel_dropout_zeroes_whole_channels_and_scales_the_rest():
    x = torch.ones(4, 8, 3, 3)
    y = channel_dropout(x, 0.5, torch.Generator().manual_seed(0))
    per_channel = y.flatten(2)
    assert torch.all(per_channel.amax(-1) == per_channel.amin(-1))  # constant over each channel
    assert set(per_channel[..., 0].unique().tolist()) == {0.0, 2.0}
    assert torch.equal(channel_dropout(x, 0.0, torch.Generator()), x)


# ---------------------------------------------------------------- strong views


def test_colour_jitter_is_brightness_and_contrast_clipped_to_the_unit_range():
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(colour_jitter(x, torch.Generator().manual_seed(0), p=0.0), x)
    y = colour_jitter(x, torch.Generator().manual_seed(0), p=1.0)
    assert y.min() >= 0 and y.max() <= 1 and not torch.allclose(y, x)
    # replay the draws: apply, b, c, order (the docstring's worked example is the unclipped case)
    g = torch.Generator().manual_seed(0)
    torch.rand(6, generator=g)
    b = 0.5 + torch.rand(6, generator=g, dtype=torch.float64)
    c = 0.5 + torch.rand(6, generator=g, dtype=torch.float64)
    first = torch.rand(6, generator=g) < 0.5
    for i in range(6):
        xi = x[i].double()
        if first[i]:
            xi = (xi * b[i]).clamp(0, 1)
            xi = (xi.mean() + c[i] * (xi - xi.mean())).clamp(0, 1)
        else:
            xi = (xi.mean() + c[i] * (xi - xi.mean())).clamp(0, 1)
            xi = (xi * b[i]).clamp(0, 1)
        assert torch.allclose(y[i].double(), xi, atol=1e-6)


def test_gaussian_kernel_and_blur():
    # σ = 1, radius 1: [e^-1/2, 1, e^-1/2] / (1 + 2e^-1/2) = [0.274068, 0.451863, 0.274068]
    k = gaussian_kernels(torch.tensor([1.0, 0.0]), 1)
    assert k[0].tolist() == pytest.approx([0.274068, 0.451863, 0.274068], abs=1e-6)
    assert k[1].tolist() == [0.0, 1.0, 0.0]  # σ 0: the identity
    flat = torch.full((3, 1, 10, 12), 0.3)
    assert torch.allclose(gaussian_blur(flat, torch.Generator().manual_seed(0), p=1.0), flat)  # borders replicated
    img = torch.zeros(1, 1, 9, 9)
    img[0, 0, 4, 4] = 1.0
    out = gaussian_blur(img, torch.Generator().manual_seed(0), p=1.0)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5) and out[0, 0, 4, 4] < 1.0
    assert torch.allclose(out[0, 0], out[0, 0].T, atol=1e-6)  # separable and symmetric
    assert torch.equal(gaussian_blur(img, torch.Generator().manual_seed(0), p=0.0), img)


def test_cutmix_boxes_are_one_rectangle_of_two_to_forty_percent():
    boxes = cutmix_boxes(200, 64, 64, torch.Generator().manual_seed(0))
    filled = boxes.flatten(1).any(1)
    assert 70 < int(filled.sum()) < 130  # p = 0.5
    for box in boxes[filled]:
        rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert int(box.sum()) == h * w and rows[-1] - rows[0] + 1 == h and cols[-1] - cols[0] + 1 == w
        assert h * w <= 0.4 * 64 * 64 and h * w >= 0.02 * 64 * 64 * 0.7  # int() truncates each side
    assert not cutmix_boxes(5, 16, 16, torch.Generator(), p=0.0).any()


# ---------------------------------------------------------------- the step


def _step(m, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = m.make_views(dict(batch), g)
    return m.training_step(StepContext(Step(5, 10), views, g))


def test_views_split_the_unlabeled_batch_into_images_and_partners():
    m, batch = _method(), squares_batch(b=4, size=16)
    views = m.make_views(dict(batch), torch.Generator().manual_seed(0))
    assert views["unlabeled_image"].shape == (2, 1, 16, 16) and views["mix_image"].shape == (2, 1, 16, 16)
    assert views["strong_image"].shape == (4, 1, 16, 16) and views["cutmix_box"].shape == (4, 16, 16)
    with pytest.raises(ValueError, match="must be even"):
        m.make_views(squares_batch(b=3), torch.Generator())


def test_every_unsupervised_term_reaches_the_gradient():
    torch.manual_seed(0)
    m, batch = _method(conf_thresh=0.0), squares_batch(b=4, size=16)
    losses = _step(m, batch)
    assert set(losses.terms) == {"ce", "dice", "strong1", "strong2", "fp"}
    assert m.models[0].training  # the eval-mode partner pass restores training mode
    for term in ("strong1", "fp"):
        m.zero_grad(set_to_none=True)
        _step(m, batch).terms[term].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.models.parameters())
    assert 0.0 <= float(losses.stats["mask_ratio"]) <= 1.0
    # at τ above every confidence no pixel counts: the Dice of an empty set is 1 - s/s = 0
    assert float(_step(_method(conf_thresh=1.0), batch).terms["fp"].detach()) == 0.0


def test_evaluating_restores_the_mode():
    net = small_unet()
    net.train()
    with evaluating(net):
        assert not net.training
    assert net.training


def test_unimatch_trains_end_to_end(tmp_path):
    store, split = tiny_store(tmp_path / "store.h5")
    out = tmp_path / "run"
    summary = train(run_spec("unimatch", 4, unlabeled_batch_size=2), store, split, out, progress=False)
    assert (out / "model.pt").exists() and summary["best_val_dice"] is not None
    with open(out / "train.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and all(t in rows[0] for t in ("strong1", "strong2", "fp", "mask_ratio"))
    assert all(math.isfinite(float(r["total"])) for r in rows)


# ---------------------------------------------------------------- the official code's figures


def _wave(shape, a, b, amp):
    """Deterministic float64 inputs (no random generator: the same on every platform)."""
    n = math.prod(shape)
    return amp * torch.sin(torch.arange(n, dtype=torch.float64) * a + b).reshape(shape)


def _code_inputs():
    b, c, h, w = 2, 4, 6, 6
    boxes = torch.zeros(2 * b, h, w, dtype=torch.bool)
    boxes[0, 1:4, 2:6] = True  # strong view 1 of image 0
    boxes[b + 1, 0:3, 0:2] = True  # strong view 2 of image 1
    return dict(pred_x=_wave((b, c, h, w), 0.37, 0.1, 3.0),
                label_x=(_wave((b, h, w), 0.91, 0.3, 1.0).abs() * 4).long().clamp(max=3),
                pred_w=_wave((b, c, h, w), 0.57, 0.7, 12.0), pred_fp=_wave((b, c, h, w), 0.29, 1.1, 3.0),
                pred_strong=torch.cat([_wave((b, c, h, w), 0.61, 0.2, 3.0), _wave((b, c, h, w), 0.43, 0.9, 3.0)]),
                mix_logits=_wave((b, c, h, w), 0.71, 0.5, 12.0), boxes=boxes)


def test_step_terms_equal_the_official_medical_code():
    # Figures of LiheYoung/UniMatch at 0324f3dd4a22128105a5eb135d2586c0bb3cc647,
    # more-scenarios/medical/unimatch.py's loss lines (from the predictions on: pseudo labels and
    # confidences of pred_u_w and pred_u_w_mix, their CutMix, loss_x, loss_u_s1, loss_u_s2,
    # loss_u_w_fp, loss, mask_ratio) with its util/utils.py DiceLoss and nn.CrossEntropyLoss, on
    # these float64 inputs (cutmix_box1 = boxes[:2], cutmix_box2 = boxes[2:], conf_thresh 0.95).
    m = _method()
    t = m.loss_terms(**_code_inputs())
    loss_x = 0.5 * (t["ce"] + t["dice"])
    assert loss_x.item() == pytest.approx(1.5408277297087316, rel=1e-9)
    assert t["strong1"].item() == pytest.approx(0.6786273035336731, rel=1e-9)
    assert t["strong2"].item() == pytest.approx(0.6350324074811067, rel=1e-9)
    assert t["fp"].item() == pytest.approx(0.6893107021261238, rel=1e-9)
    total = unimatch_total(loss_x, (t["strong1"], t["strong2"]), t["fp"], 0.5, 0.5)
    assert total.item() == pytest.approx(1.1069490042627441, rel=1e-9)
    assert (t["conf"] >= 0.95).double().mean().item() == pytest.approx(0.7638888888888888, rel=1e-12)


def test_ce_terms_equal_the_official_natural_image_code():
    # The same inputs through LiheYoung/UniMatch (same commit) unimatch.py's criterion_u lines
    # (per-pixel CE times the confidence mask, summed, over the non-ignored pixels: all here).
    t = _method(unlabeled_loss="ce").loss_terms(**_code_inputs())
    assert t["strong1"].item() == pytest.approx(1.9636742435031362, rel=1e-9)
    assert t["strong2"].item() == pytest.approx(1.931063776400132, rel=1e-9)
    assert t["fp"].item() == pytest.approx(2.2310898597992264, rel=1e-9)


def test_feature_perturbed_pass_equals_the_official_need_fp_forward(monkeypatch):
    # LiheYoung/UniMatch (same commit) more-scenarios/medical/model/unet.py: UNet(1, 4) with its
    # parameters, in declaration order, set to _wave(shape, 0.1 + 0.01·i, i, 0.3), its dropout at
    # p = 0 and nn.Dropout2d(0.5) replaced by the fixed mask below, in training mode, float64:
    # model(x, need_fp=True) on x = _wave((4, 1, 16, 16), 0.13, 0, 1), two labeled images first.
    # Its clean logits and the perturbed logits of the two unlabeled images, as sums and sums of
    # squares. The same weights in the project's U-Net (same layers, same order).
    def fixed_dropout(x, p, generator):  # keep channel c of sample b iff b + c is even
        b, c = x.shape[:2]
        keep = ((torch.arange(b)[:, None] + torch.arange(c)[None]) % 2 == 0).to(x.dtype)
        return x * (keep / (1 - p)).view(b, c, 1, 1)

    import semiseg.methods.unimatch as unimatch
    from semiseg.nets import UNet

    monkeypatch.setattr(unimatch, "channel_dropout", fixed_dropout)
    net = UNet(1, 4, dims=2, dropout=(0.0,) * 5).double()
    params = list(net.parameters())
    assert len(params) == 82
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(_wave(p.shape, 0.1 + 0.01 * i, float(i), 0.3))
    m = method_on_defaults("unimatch", lambda: net, 4, 2)
    m.train()
    clean, fp = m.weak_pass(_wave((4, 1, 16, 16), 0.13, 0.0, 1.0), 2, torch.Generator())
    assert clean.sum().item() == pytest.approx(512.096833265031, rel=1e-9)
    assert (clean ** 2).sum().item() == pytest.approx(798.6155207173219, rel=1e-9)
    assert fp.sum().item() == pytest.approx(260.3198074530922, rel=1e-9)
    assert (fp ** 2).sum().item() == pytest.approx(436.8723670326086, rel=1e-9)


def test_each_strong_view_takes_its_box_from_the_same_view_of_the_partner(monkeypatch):
    import semiseg.methods.unimatch as unimatch

    shift = iter([10.0, 20.0])  # strong view 1 adds 10, view 2 adds 20
    monkeypatch.setattr(unimatch, "strong_view", lambda x, g: x + next(shift))
    box = torch.zeros(2, 4, 4, dtype=torch.bool)
    box[0, :2] = True  # image 0: its top half from partner 0
    monkeypatch.setattr(unimatch, "cutmix_boxes", lambda n, h, w, g: box)
    u = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 4, 4)  # images 0, 1; partners 2, 3
    views = _method().make_views({"unlabeled_image": u}, torch.Generator())
    s1, s2 = views["strong_image"].chunk(2)
    assert s1[0, 0, :2].eq(12).all() and s1[0, 0, 2:].eq(10).all() and s1[1].eq(11).all()
    assert s2[0, 0, :2].eq(22).all() and s2[0, 0, 2:].eq(20).all() and s2[1].eq(21).all()
    assert torch.equal(views["mix_image"], u[2:]) and torch.equal(views["cutmix_box"], torch.cat([box, box]))
