"""CRLN on tiny tensors: the DIM's attention, the rectification and the loss of a, the weak-to-strong
term, the contrastive loss and its sampling, gradients and checkpoints, resume, the switches."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import crln_method as _method
from helpers import crln_context as _context
from helpers import run_spec, smoke_rows, table_cells, tiny_store
from helpers import unet3 as _unet
from semiseg.engine.loop import build_optimizers, train
from semiseg.methods import Step, StepContext
from semiseg.methods.common.losses import dice_ce_loss
from semiseg.methods.crln import (contrastive_loss, info_nce, rectify, sample_contrast, strong_view,
                                  unsupervised_loss)
from semiseg.methods.crln.net import CRLNNet, PairAttention
from semiseg.nets import VNet

SQ2 = math.sqrt(2.0)




# ---------------------------------------------------------------- the DIM


def _identity_attention():
    att = PairAttention(2, 2, dims=2)
    with torch.no_grad():
        att.embed.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        att.embed.bias.zero_()
        for lin in (att.q, att.k):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
    return att


def test_pair_attention_by_hand():
    # tokens [3, 1] and [0, 2] normalise to [1, -1] and [-1, 1]; so do prototypes [5, 0] and [0, 5]
    att = _identity_attention()
    features = torch.tensor([[3.0, 0.0], [1.0, 2.0]]).view(1, 2, 2, 1)  # (B, c, H, W): 2 tokens
    protos = torch.tensor([[[5.0, 0.0], [0.0, 5.0]]])
    attn, v = att.attention(protos, features)
    expect = torch.tensor([[[SQ2, -SQ2], [-SQ2, SQ2]]])
    assert attn.shape == (1, 2, 2) and v.shape == (1, 2, 2)
    assert torch.allclose(attn, expect, atol=1e-4)
    updated, attn2 = att(protos, features)
    # A' = A + norm_N(A): each row [√2, −√2] normalises to [1, −1]
    assert torch.allclose(attn2, expect + torch.tensor([[[1.0, -1.0], [-1.0, 1.0]]]), atol=1e-4)
    assert updated.shape == protos.shape and not torch.equal(updated, protos)


def test_crln_net_shapes_on_a_v_net():
    net = CRLNNet(VNet(1, 2, n_filters=4), 2, 3, prototypes=3, dim=5)
    x = torch.randn(2, 1, 16, 32, 32)
    logits, m, rep = net.outputs(x)
    assert logits.shape == m.shape == (2, 2, 16, 32, 32) and rep.shape == (2, 5, 16, 32, 32)
    assert (m >= 0).all()  # ReLU after the transposed convolution
    assert net.prototypes.shape == (2, 3, 5)
    net.eval()
    assert torch.equal(net(x), net.backbone(x))  # what validation and inference see


def test_dim_levels_last_uses_the_half_resolution_map_only():
    torch.manual_seed(0)
    both = CRLNNet(_unet(), 3, 2, prototypes=2, dim=4, levels="both")
    torch.manual_seed(0)
    last = CRLNNet(_unet(), 3, 2, prototypes=2, dim=4, levels="last")
    assert len(both.aggregate) == 2 and len(last.aggregate) == 1
    x = torch.randn(1, 1, 32, 32)
    _, m_last, _ = last.outputs(x)
    m_last.sum().backward()
    assert last.attn[1].q.weight.grad is not None
    # the 1/4 level only passes its updated prototypes on; its own map is not aggregated
    assert last.upsample[0][0].stride == (2, 2)


# ---------------------------------------------------------------- rectification and a


def test_a_equal_to_one_leaves_the_logits_unchanged():
    z, m = torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    assert torch.equal(rectify(z, m, torch.tensor(1.0)), z)
    assert torch.allclose(rectify(z, m, torch.tensor(0.25)), z + 0.75 * m)


def test_the_loss_of_a_reaches_a_only():
    m = _method()
    z = torch.randn(2, 3, 8, 8, requires_grad=True)
    rel = torch.rand(2, 3, 8, 8, requires_grad=True)
    y = torch.randint(0, 3, (2, 8, 8))
    with torch.no_grad():
        m.a.fill_(0.3)
    loss = m.loss_of_a(z, rel, y)
    ce, dice = dice_ce_loss(z.detach() + 0.7 * rel.detach(), y, include_background=False)
    assert torch.allclose(loss, 0.5 * (ce + dice))
    loss.backward()
    # by the chain rule, dL/da = −Σ dL/dr · M at r = z + 0.7·M
    r = (z.detach() + 0.7 * rel.detach()).requires_grad_()
    ce, dice = dice_ce_loss(r, y, include_background=False)
    (0.5 * (ce + dice)).backward()
    assert float(m.a.grad) == pytest.approx(float(-(r.grad * rel.detach()).sum()), rel=1e-5)
    assert m.a.grad != 0 and z.grad is None and rel.grad is None


# ---------------------------------------------------------------- the weak-to-strong term


def test_unsupervised_loss_voxel_mask_and_image_weight_by_hand():
    logits = torch.zeros(1, 2, 1, 4)  # CE = ln 2 everywhere
    target = torch.tensor([[[0, 1, 1, -1]]])
    conf = torch.tensor([[[0.99, 0.5, 0.98, 0.99]]])
    ln2 = math.log(2)
    # voxel: two confident valid voxels of three valid
    assert math.isclose(float(unsupervised_loss(logits, target, conf, 0.97, "voxel")), 2 * ln2 / 3, rel_tol=1e-6)
    # image: w = 2/3, mean of w·ℓ over the three voxels with ℓ > 0
    assert math.isclose(float(unsupervised_loss(logits, target, conf, 0.97, "image")), 2 / 3 * ln2, rel_tol=1e-6)
    two = torch.cat([logits, logits]), torch.cat([target, torch.tensor([[[0, 0, 0, 0]]])]), \
        torch.cat([conf, torch.full((1, 1, 4), 0.5)])
    # a second, unconfident image: the mask counts its voxels as valid, the image weight zeroes it
    assert math.isclose(float(unsupervised_loss(*two, 0.97, "voxel")), 2 * ln2 / 7, rel_tol=1e-6)
    assert math.isclose(float(unsupervised_loss(*two, 0.97, "image")), 2 / 3 * ln2 * 3 / 7, rel_tol=1e-6)


def test_a_confidence_exactly_on_the_threshold_counts():
    # the code (VnetLA/module_list.py, compute_unsupervised_loss) counts logits.ge(strong_threshold):
    # a voxel at exactly τ = 0.97 is confident. Two valid voxels, CE = ln 2 each, one on τ.
    logits = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    conf = torch.tensor([[[0.97, 0.5]]])
    ln2 = math.log(2)
    assert math.isclose(float(unsupervised_loss(logits, target, conf, 0.97, "voxel")), ln2 / 2, rel_tol=1e-6)
    # image: w = 1/2, the mean of w·ℓ over both voxels
    assert math.isclose(float(unsupervised_loss(logits, target, conf, 0.97, "image")), ln2 / 2, rel_tol=1e-6)


def test_strong_view_moves_labels_and_confidences_with_the_image():
    g = torch.Generator().manual_seed(3)
    label = torch.randint(0, 3, (4, 6, 16, 16))
    image = label[:, None].float()
    conf = label.float() / 2
    xs, ys, cs = strong_view(image, label, conf, g)
    assert xs.shape == image.shape and ys.shape == label.shape and cs.shape == conf.shape
    valid = ys >= 0
    assert torch.equal(cs[valid], ys[valid].float() / 2)  # the same geometry for both
    assert (cs[~valid] == 0).all()
    assert not torch.equal(xs, image)


# ---------------------------------------------------------------- CPS


def test_info_nce_by_hand():
    anchor = torch.tensor([[1.0, 0.0]])
    loss = info_nce(anchor, torch.tensor([2.0, 0.0]), torch.tensor([[[0.0, 3.0], [-1.0, 0.0]]]), 0.5)
    # logits [1, 0, -1] / 0.5 = [2, 0, -2]
    assert math.isclose(float(loss), -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-2))), rel_tol=1e-6)


def test_anchor_and_negative_sampling():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    valid = torch.tensor([1, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    uncertain = torch.tensor([1, 0, 1, 0, 1, 1, 1, 0], dtype=torch.bool)
    drawn = sample_contrast(labels, valid, uncertain, 3, 20, 7, torch.Generator().manual_seed(0))
    assert set(drawn) == {0, 2}  # class 1's only uncertain voxel is not valid
    for c, (a, n) in drawn.items():
        assert a.shape == (20,) and n.shape == (20, 7)
        assert (labels[a] == c).all() and valid[a].all() and uncertain[a].all()
        assert (labels[n] != c).all() and valid[n].all()
    assert set(drawn[0][0].tolist()) == {0, 2}


def test_contrastive_loss_against_a_hand_built_info_nce():
    rep = F.normalize(torch.randn(6, 3, generator=torch.Generator().manual_seed(1)), dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    valid = torch.ones(6, dtype=torch.bool)
    uncertain = torch.tensor([1, 0, 0, 0, 0, 0], dtype=torch.bool)  # class 0's anchor is voxel 0
    protos = torch.randn(2, 4, 3)
    xi = torch.tensor([0.6, 0.6])
    loss = contrastive_loss(rep, labels, valid, uncertain, protos, xi, num_classes=2, anchors=2, negatives=3,
                            temperature=0.5, generator=torch.Generator().manual_seed(0))
    drawn = sample_contrast(labels, valid, uncertain, 2, 2, 3, torch.Generator().manual_seed(0))
    pos = (rep[:3].mean(0) + 0.6 * protos[0].mean(0)) / 1.6
    assert torch.allclose(loss, info_nce(rep[drawn[0][0]], pos, rep[drawn[0][1]], 0.5))
    plain = contrastive_loss(rep, labels, valid, uncertain, None, None, num_classes=2, anchors=2, negatives=3,
                             temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(plain, info_nce(rep[drawn[0][0]], rep[:3].mean(0), rep[drawn[0][1]], 0.5))


def test_confidence_thresholds_choose_valid_voxels_and_anchors(monkeypatch):
    import semiseg.methods.crln as crln

    seen = {}

    def spy(labels, valid, uncertain, *args, **kw):
        seen.update(labels=labels, valid=valid, uncertain=uncertain)
        return {}

    monkeypatch.setattr(crln, "sample_contrast", spy)
    m = _method(contrast_threshold=0.7, anchor_threshold=0.97)
    y = torch.zeros(1, 2, 2, dtype=torch.long)
    ys = torch.tensor([[[0, 1], [1, -1]]])
    cs = torch.tensor([[[0.9, 0.6, 0.8, 0.9]]]).view(1, 2, 2)
    z = torch.zeros(2, 3, 2, 2)
    z[:, 0, 0, 0] = 10.0  # the student is sure of class 0 at the first voxel of each image
    m._contrast(z, torch.randn(2, 4, 2, 2), y, ys, cs, False, torch.Generator())
    assert seen["valid"].tolist() == [True] * 4 + [True, False, True, False]
    assert seen["uncertain"].tolist() == [False, True, True, True, False, True, True, True]


# ---------------------------------------------------------------- parameters, checkpoints, resume


def _assert_gradient_is_the_slope(loss, params, step=1e-6):
    """The central difference of ``loss()`` along the gradient ``g`` already in ``params``' grads
    (normalised) equals ``|g|``; the parameters are left as they were."""
    norm = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params))
    assert norm > 0
    direction = [p.grad / norm for p in params]
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(step * d)
        up = float(loss())
        for p, d in zip(params, direction):
            p.sub_(2 * step * d)
        down = float(loss())
        for p, d in zip(params, direction):
            p.add_(step * d)
    assert (up - down) / (2 * step) == pytest.approx(norm, rel=1e-4)


def test_every_new_parameter_gets_a_gradient():
    m = _method(rectify_start=0.0, a_step="same")  # a_step: after is tested in test_crln_variants.py
    losses = m.training_step(_context(m, Step(5, 10)))
    losses.total.backward()
    net = m.models[0]
    for name, p in net.named_parameters():
        if not name.startswith("backbone."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert m.a.grad is not None and m.a.grad != 0
    assert all(p.grad is None for p in m.teacher.parameters())
    # In float64 the gradients are the total's: its central difference along the gradient (steps
    # of 1e-6) is the gradient's norm. For the new parameters, without the two terms that stop
    # gradients by design (CPS's positives and negatives, L_a's inputs); for a, with L_a.
    for params, switches in (("new", {"contrast_weight": 0.0}), ("a", {"a_step": "same"})):
        m64 = _method(rectify_start=0.0, **switches).double()
        b64 = {k: v.double() if v.is_floating_point() else v for k, v in _context(m64, Step(5, 10)).batch.items()}

        def total(m64=m64, b64=b64):  # the same draws at every evaluation
            return m64.training_step(StepContext(Step(5, 10), b64, torch.Generator().manual_seed(0))).total

        total().backward()
        chosen = [m64.a] if params == "a" else \
            [p for name, p in m64.models[0].named_parameters()
             if not name.startswith("backbone.") and p.grad is not None]  # the head for CPS has none
        _assert_gradient_is_the_slope(total, chosen)
    opts = build_optimizers(m, {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0})
    main = {id(p) for g in opts["main"].param_groups for p in g["params"]}
    assert id(net.prototypes) in main and id(m.a) not in main
    assert opts["a"].param_groups[0]["params"] == [m.a]


def test_nesterov_is_a_schedule_switch():
    m = _method()
    assert build_optimizers(m, {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0,
                                "nesterov": True})["main"].defaults["nesterov"] is True
    assert build_optimizers(m, {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0})["main"].defaults["nesterov"] is False


def test_resume_is_bit_identical_and_the_state_holds_prototypes_dim_and_a(tmp_path):
    store, split = tiny_store(tmp_path / "store.h5")
    # rectification starts at iteration 3, after the interruption
    spec = run_spec("crln", 6, params={"rectify_start": 0.5, "anchors": 8, "negatives": 4}, val_interval=6)
    train(spec, store, split, tmp_path / "a", progress=False)
    assert train(spec, store, split, tmp_path / "b", progress=False, stop_after=2) == {"stopped_at": 2}
    state = torch.load(tmp_path / "b" / "checkpoints" / "state.pt", weights_only=False)
    keys = state["method"].keys()
    assert "a" in keys and "models.0.prototypes" in keys and "teacher.prototypes" in keys
    assert any(k.startswith("models.0.attn.") for k in keys) and any(k.startswith("models.0.aggregate.") for k in keys)
    assert set(state["optimizers"]) == {"main", "a"} and float(state["method"]["a"]) != 0.0
    summary = train(spec, store, split, tmp_path / "b", progress=False)
    assert summary["resumed_from"] == 2
    for name in ("model.pt", "models.pt"):
        a, b = torch.load(tmp_path / "a" / name), torch.load(tmp_path / "b" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    assert (tmp_path / "a" / "train.csv").read_text() == (tmp_path / "b" / "train.csv").read_text()


# ---------------------------------------------------------------- switches


def test_xi_draw_random_or_fixed():
    g = torch.Generator().manual_seed(0)
    fixed = _method(xi=0.6, xi_draw="fixed").xi(g, "cpu")
    assert fixed.tolist() == pytest.approx([0.6] * 3)
    drawn = _method(xi=0.6).xi(g, "cpu")
    assert ((drawn >= 0) & (drawn <= 0.6)).all() and len(set(drawn.tolist())) == 3
    assert torch.isinf(_method(positive="prototypes").xi(g, "cpu")).all()


def test_rectification_starts_at_its_iteration_and_can_be_switched_off():
    m = _method(rectify_start=0.5)
    assert not m.rectifying(Step(4, 10)) and m.rectifying(Step(5, 10))
    off = _method(rectify=False)
    terms = off.training_step(_context(off, Step(9, 10))).terms
    assert "ce_map" not in terms and "a_loss" not in terms
    same = _method(a_step="same")
    assert {"ce_map", "a_loss", "cps"} <= set(same.training_step(_context(same, Step(9, 10))).terms)
    assert "cps" not in _method(contrast_weight=0.0).training_step(_context(off, Step(9, 10))).terms


def test_rectified_teacher_changes_the_pseudo_labels(monkeypatch):
    import semiseg.methods.crln as crln

    seen = []
    monkeypatch.setattr(crln, "strong_view", lambda x, y, c, g: (seen.append((y, c)), (x, y, c))[1])
    m = _method(rectify_start=0.5)
    with torch.no_grad():
        m.a.fill_(-50.0)  # a large (1 − a)·M makes the rectification visible
    ctx = _context(m, Step(0, 10))
    b = ctx.batch
    m.training_step(ctx)
    m.training_step(StepContext(Step(9, 10), b, ctx.generator))
    with torch.no_grad():
        z, rel, _ = m.teacher.outputs(b["unlabeled_image"])
    # before rectify_start the teacher's own argmax, after it the argmax of z + 51·M
    assert torch.equal(seen[0][0], z.argmax(dim=1)) and torch.equal(seen[1][0], (z + 51.0 * rel).argmax(dim=1))
    assert not torch.equal(seen[0][0], seen[1][0])


class _Seen(Exception):
    pass


@pytest.mark.parametrize("strong", [True, False])
def test_strong_augmentation_switch(strong):
    m = _method(strong_augmentation=strong)
    seen = []

    def capture(x):
        seen.append(x)
        raise _Seen

    m.student.outputs = capture
    ctx = _context(m, Step(0, 10))
    with pytest.raises(_Seen):
        m.training_step(ctx)
    assert torch.equal(seen[0][2:], ctx.batch["unlabeled_image"]) is not strong


# ---------------------------------------------------------------- the LA table (CRLN Tables 1-2)


_cells = table_cells


def test_the_crln_la_table_shows_both_checkpoint_groups_of_the_paper():
    from conftest import REPO
    from semiseg.config import load_config
    from semiseg.reporting.tables import build_table

    cfg = load_config(root=REPO)
    table = cfg["tables"]["crln_la"]
    assert table["bootstrap"]["resamples"] == 100
    results = {(row["method"], int(r), s): None for row in table["rows"] if row.get("run", True)
               for r in row["ratios"] for s in table["seeds"]}
    info = {"train_patients": 80, "labeled_patients": {int(k): v for k, v in cfg["datasets"]["la"]["ratios"].items()}}
    cells = _cells(build_table(table, dataset_info=info, results=results, footer={}))
    assert len(cells) == 10
    assert cells[("CRLN", "8 (10%)")][0] == "not run (paper: CRLN T1 91.74; CRLN T1 best 91.85)"
    assert cells[("CRLN", "16 (20%)")][0] == "not run (paper: CRLN T2 91.88; CRLN T2 best 91.95)"
    # the paper prints ASD before 95HD: each lands in its own column
    assert cells[("CRLN", "8 (10%)")][2:] == ["not run (paper: CRLN T1 4.60; CRLN T1 best 4.62)",
                                              "not run (paper: CRLN T1 1.46; CRLN T1 best 1.41)"]
    assert cells[("BCP", "8 (10%)")][0] == "not run (paper: CRLN T1 best 89.83)"
    assert cells[("CRLN (code's version)", "8 (10%)")] == ["not run"] * 4


@pytest.mark.slow
@pytest.mark.data
def test_the_crln_la_smoke_table_on_la_mini(la_smoke):
    res = la_smoke
    table = (res / "tables" / "crln_la.md").read_text()
    cells = _cells(table)
    ran_here, paper_only = smoke_rows(res, "crln_la")
    assert len(cells) == len(ran_here) + len(paper_only), table
    for label, labeled in (("CRLN", "8 (10%)"), ("CRLN", "16 (20%)"), ("CRLN (code's version)", "8 (10%)"),
                           ("UA-MT", "8 (10%)"), ("BCP", "8 (10%)")):
        dice = cells[(label, labeled)][0]
        assert dice[0].isdigit() and "% CI " in dice, table  # measured, with its bootstrap interval
    assert "(paper: CRLN T1 91.74; CRLN T1 best 91.85)" in cells[("CRLN", "8 (10%)")][0], table
    assert "100 resamples" in table, table
    config = json.loads((res / "runs" / "la" / "crln" / "10" / "seed0" / "config.json").read_text())
    assert config["spec"]["method"]["params"]["xi_draw"] == "random"
    assert config["summary"]["best_iteration"] == config["summary"]["iterations"]  # no val split: the last weights
    code = json.loads((res / "runs" / "la" / "crln_code" / "10" / "seed0" / "config.json").read_text())
    assert code["spec"]["method"]["params"]["confidence_weight"] == "image"


def test_the_ablation_entries_switch_what_their_rows_say():
    from conftest import REPO
    from semiseg.config import load_config, method_settings

    cfg = load_config(root=REPO)
    p = {m: method_settings(cfg, "la", m)["params"] for m in cfg["methods"] if m.startswith("crln")}
    assert (p["crln_baseline"]["strong_augmentation"], p["crln_baseline"]["rectify"],
            p["crln_baseline"]["contrast_weight"]) == (False, False, 0.0)
    assert (p["crln_strong"]["strong_augmentation"], p["crln_strong"]["rectify"]) == (True, False)
    assert p["crln_strong_dim"]["rectify"] and p["crln_strong_dim"]["contrast_weight"] == 0.0
    assert (p["crln_mr"]["positive"], p["crln_lp"]["positive"], p["crln"]["positive"]) == ("mean", "prototypes", "mixed")
    assert (p["crln_dim_none"]["dim_spatial"], p["crln_dim_none"]["dim_cross"]) == (False, False)
    assert (p["crln_dim_sa"]["dim_spatial"], p["crln_dim_sa"]["dim_cross"]) == (True, False)
    assert [p[f"crln_k{k}"]["prototypes"] for k in (1, 4, 8)] + [p["crln"]["prototypes"]] == [1, 4, 8, 16]
    assert (p["crln_code"]["xi_draw"], p["crln_code"]["confidence_weight"], p["crln_code"]["dim_levels"]) == \
        ("fixed", "image", "last")
    assert (p["crln"]["xi_draw"], p["crln"]["confidence_weight"], p["crln"]["dim_levels"]) == ("random", "voxel", "both")
    from semiseg.config import run_spec as config_run_spec

    paper = config_run_spec(load_config({"schedule": "paper"}, root=REPO), "la", "crln", 10, 0)["schedule"]
    assert (paper["lr"], paper["weight_decay"], paper["nesterov"], paper["labeled_batch_size"],
            paper["iterations"]) == (0.0025, 0.0005, True, 2, 40000)
    for t in ("crln_la", "crln_components", "crln_dim", "crln_rectify", "crln_prototypes"):
        assert cfg["tables"][t]["bootstrap"]["resamples"] == 100


def test_dim_aggregation_switches_drop_their_steps():
    from semiseg.methods.crln.net import Aggregation

    assert isinstance(Aggregation(4, 2, spatial=False).spatial, nn.Identity)
    assert isinstance(Aggregation(4, 2, cross=False).cross, nn.Identity)
    full = Aggregation(4, 2)
    assert full.spatial[0].groups == 4 and full.cross[0].kernel_size == (1, 1)
