"""CAML: each loss term against hand-worked values and against the official code's figures, the
labeled-feature memory, the two-network V-Net with cross-sample attention, and one step's
gradients (3D, 16³ patches)."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import schema_defaults
from semiseg.methods import Step, StepContext, build_method
from semiseg.methods.caml import LabeledMemory, correlation_matrix, occ_loss
from semiseg.methods.common.losses import binary_dice_loss
from semiseg.methods.common.pseudo import mutual_consistency, sharpen
from semiseg.nets import VNet
from semiseg.nets.caml import CamlNet


def _vnet():
    return VNet(1, 2, n_filters=4, normalization="batchnorm", has_dropout=True)


def _method(**params):
    spec = {"dataset": {"num_classes": 2, "dims": 3},
            "method": {"algorithm": "caml", "params": {**schema_defaults("caml"), "memory_per_class": 8,
                                                      "slot_capacity": 64, "top_k": 50, **params}},
            "schedule": {}}
    return build_method(spec, _vnet)


def _batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(2, 16, 16, 16, dtype=torch.long)
    label[:, 4:12, 4:12, 4:12] = 1
    image = label[:, None].float() + 0.1 * torch.randn(2, 1, 16, 16, 16, generator=g)
    return {"labeled_image": image, "labeled_label": label, "unlabeled_image": image.flip(-1)}


# ---------------------------------------------------------------- hand-worked values


def test_sharpen_and_binary_dice_by_hand():
    # T = 0.5: 0.6 -> 0.6² / (0.6² + 0.4²) = 0.36 / 0.52; 0.5 stays 0.5
    assert sharpen(torch.tensor([0.6, 0.5]), 0.5).tolist() == pytest.approx([0.36 / 0.52, 0.5])
    # p = [0.8, 0.6], t = [1, 0]: 1 - (2·0.8) / (1.4 + 1) = 1/3 (a squared denominator gives 0.2)
    assert float(binary_dice_loss(torch.tensor([0.8, 0.6]), torch.tensor([1, 0]))) == pytest.approx(1 / 3)


def test_mutual_consistency_by_hand():
    # one element each: p_v = 0.6, p_a = 0.5, T = 0.5: sharpen(0.6) = 9/13, sharpen(0.5) = 0.5;
    # (0.6 - 0.5)² + (0.5 - 9/13)² (both ordered pairs)
    got = mutual_consistency([torch.tensor([0.6]), torch.tensor([0.5])], 0.5)
    assert float(got) == pytest.approx(0.1 ** 2 + (0.5 - 9 / 13) ** 2)


def test_occ_loss_and_correlation_matrix_by_hand():
    # one row: target [0.5, 0.5], prediction [0.25, 0.75] -> -0.5 (ln 0.25 + ln 0.75)
    assert float(occ_loss(torch.tensor([[0.5, 0.5]]), torch.tensor([[0.25, 0.75]]))) == pytest.approx(0.8369882, abs=1e-6)
    # class 0 voxels f = 1, 2, 3 with confidence 0.6, 0.9, 0.8; top_k 2 keeps f = 2 then f = 3;
    # memory class 0 [1, 0], class 1 [0, -1]; T = 1: row 0 = softmax([2, 0, 0, -2]) =
    # [e², 1, 1, e⁻²] / 9.524391
    features, confidence = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([0.6, 0.9, 0.8])
    memory = [torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [-1.0]])]
    corr = correlation_matrix(features, confidence, torch.tensor([0, 0, 0]), memory, 2, 1.0, 2)
    assert corr.shape == (2, 4)
    assert corr.tolist()[0] == pytest.approx([0.775803, 0.104993, 0.104993, 0.014209], abs=1e-6)
    # one voxel left after the top_k cut gives no row (the code's shape[0] > 1); no rows -> None
    assert correlation_matrix(features, confidence, torch.tensor([0, 0, 0]), memory, 2, 1.0, 1) is None
    # a memory class with one feature is left out of the columns
    corr = correlation_matrix(features, confidence, torch.tensor([0, 0, 0]), [memory[0], memory[1][:1]], 2, 1.0, 2)
    assert corr.shape == (2, 2)


# ---------------------------------------------------------------- the official code's figures


def test_losses_equal_the_official_code_on_float64_tensors():
    # Herschel555/CAML b63547927eef5b7ae47bd62452e28517d13545e4: code/utils/correlation.py
    # cal_correlation_matrix (num_filtered 3, temperature 0.1), train_caml.py's loss_o line,
    # losses.Binary_dice_loss of the foreground softmax (labeled_bs 1, both networks summed) and
    # loss_c (mse_loss against sharpening, T = 0.1, both ordered pairs), run on CPU on these
    # tensors (the same seeded draws, in this order).
    g = torch.Generator().manual_seed(0)
    dt = torch.float64
    fv, fa = torch.randn(7, 3, generator=g, dtype=dt), torch.randn(7, 3, generator=g, dtype=dt)
    prob = torch.tensor([0.91, 0.62, 0.77, 0.85, 0.55, 0.99, 0.70], dtype=dt)
    label = torch.tensor([0, 1, 0, 1, 1, 0, 1])
    memory = [torch.randn(4, 3, generator=g, dtype=dt), torch.randn(5, 3, generator=g, dtype=dt)]
    for bank, shape, figure in ((memory, (6, 9), 13.734732650032948),
                                ([memory[0], None], (6, 4), 10.31677604485526)):
        cv = correlation_matrix(fv, prob, label, bank, 2, 0.1, 3)
        ca = correlation_matrix(fa, prob, label, bank, 2, 0.1, 3)
        assert cv.shape == shape
        assert float(occ_loss(ca, cv)) == pytest.approx(figure, rel=1e-9)
    out_v = torch.randn(2, 2, 3, 3, 3, generator=g, dtype=dt)
    out_a = torch.randn(2, 2, 3, 3, 3, generator=g, dtype=dt)
    lab = (torch.rand(2, 3, 3, 3, generator=g) > 0.5).long()
    probs = [torch.softmax(o, dim=1) for o in (out_v, out_a)]
    dice = sum(binary_dice_loss(p[:1, 1], lab[:1] == 1) for p in probs)
    assert float(dice) == pytest.approx(0.9721273584787498, rel=1e-9)
    assert float(mutual_consistency(probs, 0.1)) == pytest.approx(0.6137600275067052, rel=1e-9)


# ---------------------------------------------------------------- the memory


def test_memory_keeps_counts_caps_each_class_and_replaces_the_oldest_patch():
    g = torch.Generator().manual_seed(0)
    mem = LabeledMemory(slots=2, num_classes=2, capacity=3, dim=1)
    mem.write(torch.arange(5.0)[:, None], torch.tensor([0, 0, 0, 0, 1]), g)  # 4 of class 0: 3 kept
    assert mem.counts.tolist() == [[4, 1], [0, 0]]
    assert set(mem.features[0, 0, :, 0].tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert mem.features[0, 1, 0, 0] == 4.0
    mem.write(torch.tensor([[10.0], [11.0]]), torch.tensor([1, 1]), g)
    mem.write(torch.tensor([[20.0], [21.0]]), torch.tensor([0, 1]), g)      # replaces slot 0
    assert mem.counts.tolist() == [[1, 1], [0, 2]]
    # class 0 has 1 feature in all (< 2 asked): None; class 1's three are all drawn, each once
    drawn = mem.sample(2, g)
    assert drawn[0] is None
    assert sorted(drawn[1][:, 0].tolist()) in ([10.0, 11.0], [10.0, 21.0], [11.0, 21.0])
    every = mem.sample(3, g)[1][:, 0].tolist()
    assert sorted(every) == [10.0, 11.0, 21.0]


def test_memory_draws_are_uniform_over_every_voxel_not_over_the_stored_ones():
    # slot 0 holds 100 voxels of class 0 (2 stored), slot 1 holds 2 (both stored): a uniform draw
    # of 2 from the 102 takes slot 1's features rarely (P(any) = 1 - (100·99)/(102·101) ≈ 0.039)
    g = torch.Generator().manual_seed(0)
    mem = LabeledMemory(slots=2, num_classes=1, capacity=2, dim=1)
    mem.write(torch.zeros(100, 1), torch.zeros(100, dtype=torch.long), g)
    mem.write(torch.ones(2, 1), torch.zeros(2, dtype=torch.long), g)
    hits = sum(float(mem.sample(2, g)[0].sum()) > 0 for _ in range(400))
    assert hits < 40  # stored-only draws would hit slot 1 in 5/6 of the draws


# ---------------------------------------------------------------- the network


def test_network_evaluates_the_vanilla_vnet_and_attends_across_samples_in_training_only():
    torch.manual_seed(0)
    net = CamlNet(_vnet(), _vnet(), feat_dim=8)
    x = torch.randn(2, 1, 16, 16, 16)
    net.eval()
    assert torch.equal(net(x), net.vanilla(x))
    assert net.auxiliary.decoder.up[0][0].__class__.__name__ == "Upsample"
    # the CMA is the identity in eval mode: sample 0's auxiliary output ignores sample 1
    y = x.clone()
    y[1] += 1.0
    assert torch.allclose(net.branches(x)[1][0][0], net.branches(y)[1][0][0])
    # in training mode (dropout off to compare) it does not
    net.train()
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout) or isinstance(m, torch.nn.Dropout3d):
            m.p = 0.0
    torch.manual_seed(1)
    a = net.branches(x)[1][0][0]
    torch.manual_seed(1)
    b = net.branches(y)[1][0][0]
    assert not torch.allclose(a, b)


# ---------------------------------------------------------------- the step


def _grads(m, batch, step):
    m.zero_grad(set_to_none=True)
    losses = m.training_step(StepContext(step, batch, torch.Generator().manual_seed(0)))
    losses.total.backward()
    return losses, {n: p.grad for n, p in m.models.named_parameters()}


def test_step_terms_reach_the_networks_and_the_memory_is_checkpointed():
    torch.manual_seed(0)
    m = _method()
    m.train()
    for mod in m.modules():
        if isinstance(mod, (torch.nn.Dropout, torch.nn.Dropout3d)):
            mod.p = 0.0
    plain = _method(consistency=0.0, occ_weight=0.0)
    plain.load_state_dict(m.state_dict())
    losses, grads = _grads(m, _batch(), Step(9000, 10000))
    assert set(losses.terms) == {"dice_v", "dice_a", "consistency", "occ"}
    assert float(losses.terms["occ"].detach()) > 0
    assert losses.stats["occ_weight"] == pytest.approx(0.05)
    # the OCC term is the only one through the prediction heads
    assert grads["0.heads.0.prediction.0.weight"] is not None
    assert grads["0.heads.1.prediction.0.weight"].abs().sum() > 0
    # the unsupervised terms change the vanilla network's gradient
    plain.train()
    for mod in plain.modules():
        if isinstance(mod, (torch.nn.Dropout, torch.nn.Dropout3d)):
            mod.p = 0.0
    _, plain_grads = _grads(plain, _batch(), Step(9000, 10000))
    key = "0.vanilla.encoder.stages.0.0.weight"
    assert not torch.allclose(grads[key], plain_grads[key])
    # the memory is method state: saved and restored with the method
    state = m.state_dict()
    assert int(state["memory.cursor"]) == 2 and int(state["memory.counts"].sum()) > 0
    fresh = _method()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.memory.features, m.memory.features)


def test_slot_capacity_below_the_draw_is_refused():
    with pytest.raises(ValueError, match="slot_capacity"):
        _method(slot_capacity=4, memory_per_class=8)


def test_ramp_is_the_codes_staircase():
    # consistency_rampup 0.4 of 15k in blocks of 150: 40 blocks; iteration 3000 is block 20
    m = _method()
    assert m.ramp_weight(Step(3000, 15000), "occ_weight", "consistency_rampup") == pytest.approx(
        0.05 * math.exp(-5 * 0.5 ** 2))


def test_one_step_equals_the_official_training_loop_on_the_same_weights():
    # Herschel555/CAML b63547927eef5b7ae47bd62452e28517d13545e4, code/train_caml.py's loop body
    # (lines 152-272) run as written on CPU in float64, on CAML3d_v1(n_filters=4, feat_dim=8,
    # has_dropout=False, every dropout of the attention layers set to 0) loaded with these weights (the names
    # mapped), these inputs, labeled_bs 2 with dataset indices 0 and 1, num_filtered 500,
    # λ_c = 1 and λ_o = 0.05 (the end of the ramp), the memory's random draw replaced on both sides
    # by the whole memory (sample_labeled_features(2): 6396 background, 6 foreground features).
    # 571 rows (500 background after the top-k cut, 71 foreground) x 6402 columns. One line of
    # the script is corrected there: it projects the auxiliary network's labeled embedding
    # (B, C, H, W, D) with .view(-1, C) without permuting the channels last, so its memory
    # features mix channels and voxels (a bug, not reproduced here); as written, the script's
    # loss_o is 11.950527255126751 and its total 1.6851031624302255.
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        spec = {"dataset": {"num_classes": 2, "dims": 3},
                "method": {"algorithm": "caml", "params": {**schema_defaults("caml"), "memory_per_class": 2,
                                                          "top_k": 500, "feat_dim": 8, "memory_slots": 2}},
                "schedule": {}}
        m = build_method(spec, lambda: VNet(1, 2, n_filters=4, normalization="batchnorm", has_dropout=False))
        g = torch.Generator().manual_seed(1)
        label = torch.zeros(4, 16, 16, 16, dtype=torch.long)
        label[:, 4:12, 3:11, 5:13] = 1
        image = label[:, None].double() + 0.5 * torch.randn(4, 1, 16, 16, 16, generator=g, dtype=torch.float64)
    finally:
        torch.set_default_dtype(default)
    for mod in m.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
        if isinstance(mod, torch.nn.MultiheadAttention):
            mod.dropout = 0.0  # a float, not a module

    def whole_memory(self, per_class, generator):
        kept = [self.features[s, c, : n] for s, c, n in
                ((s, c, min(int(n), self.features.shape[2])) for s in range(self.features.shape[0])
                 for c, n in enumerate(self.counts[s]))]
        by_class = [torch.cat(kept[c::self.features.shape[1]]) for c in range(self.features.shape[1])]
        return [f if f.shape[0] >= per_class else None for f in by_class]

    m.memory.sample = whole_memory.__get__(m.memory)
    m.train()
    batch = {"labeled_image": image[:2], "labeled_label": label[:2], "unlabeled_image": image[2:]}
    losses = m.training_step(StepContext(Step(14999, 15000), batch, torch.Generator().manual_seed(0)))
    losses.total.backward()
    t = {k: float(v.detach()) for k, v in losses.terms.items()}
    assert t["dice_v"] + t["dice_a"] == pytest.approx(1.6628467311819786, rel=1e-9)
    assert t["consistency"] == pytest.approx(0.25615343408289876, rel=1e-9)
    assert t["occ"] == pytest.approx(11.895745735843915, rel=1e-9)
    assert t["occ"] != pytest.approx(11.950527255126751, rel=1e-3)
    assert float(losses.total.detach()) == pytest.approx(1.6823640864660838, rel=1e-9)
    grads = {n: p.grad for n, p in m.models[0].named_parameters()}
    for name, total, absolute in (
            ("vanilla.encoder.stages.0.0.weight", -6.166878070977755, 14.616005708927542),
            ("auxiliary.encoder.stages.0.0.weight", 5.982103230293357, 30.205653783553004),
            ("heads.0.prediction.3.weight", 1.0163406385701235, 3.028014142332225),
            ("heads.1.prediction.3.weight", -0.26939642116877244, 1.4906842432215464),
            ("heads.0.projection.0.weight", -0.46087763683293015, 1.1893918030766062),
            ("cma.inter.linear1.weight", 0.0, 5.266870136800994)):
        assert float(grads[name].sum()) == pytest.approx(total, rel=1e-9, abs=1e-12), name
        assert float(grads[name].abs().sum()) == pytest.approx(absolute, rel=1e-9), name


def test_catalogue_settings_per_dataset_and_ratio():
    # the LA script: 15k iterations, 2 + 2 patches, constant lr 0.01; ramp 40 / 20 blocks of 150
    # at 4 / 8 labeled volumes; one memory slot per labeled volume (Pancreas-CT 3 / 6, BraTS 12 / 25)
    from semiseg.config import load_config, run_spec

    cfg = load_config()
    for dataset, ratio, rampup, slots in (("la", 5, 0.4, 4), ("la", 10, 0.2, 8), ("pancreas", 5, 0.4, 3),
                                          ("brats", 10, 0.2, 25)):
        spec = run_spec(cfg, dataset, "caml", ratio, 0)
        assert spec["method"]["network"] == "vnet"
        assert (spec["method"]["params"]["consistency_rampup"], spec["method"]["params"]["memory_slots"]) == (rampup, slots)
        sched = spec["schedule"]
        assert (sched["iterations"], sched["labeled_batch_size"], sched["unlabeled_batch_size"], sched["lr"],
                sched["lr_policy"]) == (15000, 2, 2, 0.01, "constant")
