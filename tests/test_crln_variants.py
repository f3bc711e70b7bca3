"""CRLN's variants on tiny tensors: Table 7's rectification mechanisms, the evaluated network, the
per-ratio ξ of its code's LA entry, the update of a; and a pinned step of the default."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import crln_method as _method
from helpers import crln_context as _context
from helpers import run_spec, tiny_store
from semiseg.engine.loop import build_optimizers, run_second_phase, train
from semiseg.methods import Step, build_method
from semiseg.methods.common.losses import dice_ce_loss
from semiseg.methods.crln import contrastive_loss
from semiseg.methods.crln.rectify import ConcatRectifier, rectify_fixed
from semiseg.nets import UNet




# ---------------------------------------------------------------- a pinned step of the default


def _pinned_step(**params):
    torch.manual_seed(0)
    m = _method(rectify_start=0.0, confidence_threshold=0.35, **params)
    with torch.no_grad():
        m.a.fill_(0.25)
    return m, m.training_step(_context(m, Step(5, 10)))


def test_the_default_step_is_eq_15_of_its_parts():
    # The step of the default (v3 rectification, L_a in the step) rebuilt from its parts: the
    # teacher's rectified pseudo-labels z_T + (1 − a)·M_T at a = 0.25, their strong view (drawn
    # from the step's seed), then L_sup = ½[CE + Dice_fg of z_L and of M_L], the voxel-masked
    # L_u (conf ≥ 0.35 over the valid voxels), L_a = ½[CE + Dice_fg](z_L + 0.75·M_L) and the
    # total L_sup + ½L_u + ½L_cps + L_a (L_cps, by hand in test_crln.py, read from the step).
    # No optimiser is involved: the values do not depend on the optimiser of a.
    import torch.nn.functional as F

    from semiseg.methods.crln import strong_view

    m, losses = _pinned_step(a_step="same")
    ctx = _context(m, Step(5, 10))  # the same seeded views and generator as _pinned_step's
    b = ctx.batch
    seed = int(torch.randint(0, 2 ** 62, (), generator=ctx.generator))  # the step's first draw
    xl, yl, xu = b["labeled_image"], b["labeled_label"], b["unlabeled_image"]
    with torch.no_grad():
        zt, mt, _ = m.teacher.outputs(xu)
        conf, pseudo = torch.softmax(zt + 0.75 * mt, dim=1).max(dim=1)
        xs, ys, cs = strong_view(xu, pseudo, conf, torch.Generator().manual_seed(seed))
        z, rel, _ = m.student.outputs(torch.cat([xl, xs]))
    parts = {"ce": 0, "dice": 1, "ce_map": 0, "dice_map": 1}
    expected = {k: dice_ce_loss((z if k in ("ce", "dice") else rel)[:2], yl, include_background=False)[i]
                for k, i in parts.items()}
    valid = ys >= 0
    ce_u = F.cross_entropy(z[2:], ys.clamp_min(0), reduction="none")
    expected["unsup"] = (ce_u * valid * (cs >= 0.35)).sum() / valid.sum()
    expected["a_loss"] = 0.5 * sum(dice_ce_loss(z[:2] + 0.75 * rel[:2], yl, include_background=False))
    assert set(losses.terms) == set(expected) | {"cps"}
    for k, v in expected.items():
        assert float(losses.terms[k].detach()) == pytest.approx(float(v), rel=1e-5), k
    cps = losses.terms["cps"].detach()
    total = 0.5 * sum(expected[k] for k in parts) + 0.5 * expected["unsup"] + 0.5 * cps + expected["a_loss"]
    assert float(losses.total.detach()) == pytest.approx(float(total), rel=1e-5)
    assert 0 < float(expected["unsup"]) and 0 < float(cps)
    assert float(losses.stats["confident"]) == pytest.approx(float((cs >= 0.35).float().mean()))
    assert 0.0 < float(losses.stats["confident"]) < 1.0  # the threshold splits the voxels
    assert float(losses.stats["a"]) == 0.25 and float(losses.stats["rectifying"]) == 1.0
    assert m.rectification == "learnable_v3" and not hasattr(m, "rectifier")


def test_a_step_after_leaves_the_steps_other_terms_as_they_were():
    _, same = _pinned_step(a_step="same")
    m, after = _pinned_step()
    assert "a_loss" not in after.terms and set(after.terms) == set(same.terms) - {"a_loss"}
    for k, v in after.terms.items():
        assert torch.equal(v, same.terms[k]), k
    assert torch.allclose(after.total, same.total - same.terms["a_loss"])
    ctx = _context(m, Step(5, 10))
    assert set(m.second_phase(ctx)) == {"a"}  # the step of a after the optimiser's
    # the statistics are tensors (no host sync in the step); the engine reads them with the terms
    from semiseg.engine.loop import _loss_values

    assert all(isinstance(after.stats[k], torch.Tensor) for k in ("a", "confident"))
    values = _loss_values(after, 5, "crln")
    assert set(values) == {"total", *after.terms}
    assert after.stats == {"a": 0.25, "rectifying": 1.0, "confident": pytest.approx(0.87646484375)}


def test_a_step_after_learns_from_the_updated_student_in_eval_mode():
    torch.manual_seed(0)
    m = _method(rectify_start=0.0)
    opts = build_optimizers(m, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01})
    with torch.no_grad():
        m.a.fill_(0.25)
    ctx = _context(m, Step(5, 10))
    b = ctx.batch
    losses = m.training_step(ctx)
    for opt in opts.values():
        opt.zero_grad(set_to_none=True)
    losses.total.backward()
    assert m.a.grad is None  # Eq. 15 does not reach a
    for opt in opts.values():
        opt.step()
    assert float(m.a.detach()) == 0.25
    # what the step of a must be: Eq. 16 on the updated student's eval-mode outputs
    stats = {k: v.clone() for k, v in m.student.state_dict().items() if "running" in k}
    m.student.eval()
    with torch.no_grad():
        z, rel = m.student.logits_and_map(b["labeled_image"])
    m.student.train()
    a = torch.tensor(0.25, requires_grad=True)
    ce, dice = dice_ce_loss(z + (1 - a) * rel, b["labeled_label"], include_background=False)
    (grad,) = torch.autograd.grad(0.5 * (ce + dice), a)
    run_second_phase(m, opts, ctx)
    assert float(m.a.detach()) == pytest.approx(0.25 - 0.1 * (float(grad) + 0.01 * 0.25), rel=1e-6) and float(grad) != 0
    assert m.student.training and m.a.grad is None
    for k, v in m.student.state_dict().items():  # the extra pass leaves the batch-norm statistics
        if "running" in k:
            assert torch.equal(v, stats[k]), k
    with pytest.raises(RuntimeError, match="names optimiser 'a', not one of its extra_optimizers"):
        fresh = _method()
        run_second_phase(fresh, {}, _context(fresh, Step(5, 10)))


def _two_class_crln(**params):
    spec = run_spec("crln", 10, params=params)
    spec["dataset"].update(num_classes=2, labels={"background": 0, "a": 1})
    return build_method(spec, lambda: UNet(1, 2, channels=(4, 8, 16, 32, 64), dropout=(0,) * 5))


def test_a_learns_with_the_main_optimisers_nesterov_momentum_as_the_code():
    # Yaan-Wang/CRLN @2ca4e3c8, every train_semisup.py: optimizer_op = SGD(op_module, lr, wd,
    # momentum 0.9, nesterov) and op_loss = ½[CE + dice_loss(p_1, y == 1)] of z + (1 − a)·M.
    # 200 steps of that optimiser (its poly lr is stepped per 200-iteration epoch, so constant
    # here) on these float64 inputs, run with the code's opmoudle and dice_loss: a = 0.29231...
    # (plain SGD, the earlier form here: 0.034498)
    g = torch.Generator().manual_seed(31)
    z = torch.randn(2, 2, 6, 6, 4, generator=g, dtype=torch.float64)
    rel = torch.rand(2, 2, 6, 6, 4, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 2, (2, 6, 6, 4), generator=g)
    m = _two_class_crln().double()
    opt = build_optimizers(m, {"lr": 2.5e-3, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4})["a"]
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["nesterov"] is True
    for _ in range(200):
        opt.zero_grad(set_to_none=True)
        m.loss_of_a(z, rel, y).backward()
        opt.step()
    assert float(m.a.detach()) == pytest.approx(0.2923111264245452, rel=1e-9)


def _cps_case():
    """6 voxels, representation dim 3: class 0 = multiples of one vector (never uncertain, so no
    anchors, and any negative has the same cosine to an anchor), class 1 = three vectors whose
    first is uncertain (every anchor); (C, K, D) prototypes. Sampling cannot change the loss."""
    u0 = torch.tensor([1.0, 0.2, -0.5], dtype=torch.float64)
    rep = torch.stack([u0, 2 * u0, 3 * u0, torch.tensor([0.3, 1.0, 0.4], dtype=torch.float64),
                       torch.tensor([2.0, 0.5, 1.5], dtype=torch.float64),
                       torch.tensor([-0.4, 3.0, 0.1], dtype=torch.float64)])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    p1 = torch.tensor([0.01, 0.01, 0.01, 0.6, 0.99, 0.99], dtype=torch.float64)
    protos = torch.tensor([[[0.5, -1.0, 0.3], [0.1, 0.4, 0.9]], [[1.0, 0.0, -0.2], [0.3, 0.8, 0.6]]],
                          dtype=torch.float64)
    return rep, labels, p1, protos


# Yaan-Wang/CRLN @2ca4e3c8 VnetLA/module_list.py compute_cps_loss on _cps_case (as (1, 3, 1, 1, 6)
# tensors, all voxels valid, strong_threshold 0.97, temp 0.5, 4 queries, 3 negatives; cls the
# prototypes as its (1, C, R, K) layout, con_xi 0.6), run five times each (sampling-free):
CODE_CPS_PLAIN = 0.2528576738026526
CODE_CPS_MIXED = 0.26076757844393794


def test_cps_code_forms_equal_the_code_and_the_defaults_differ():
    rep, labels, p1, protos = _cps_case()
    valid, uncertain = torch.ones(6, dtype=torch.bool), torch.tensor([False] * 3 + [True, False, False])
    kw = dict(num_classes=2, anchors=4, negatives=3, temperature=0.5)

    def loss(protos_, **switches):
        return float(contrastive_loss(F.normalize(rep, dim=1), labels, valid, uncertain, protos_,
                                      None if protos_ is None else torch.tensor([0.6, 0.6], dtype=torch.float64),
                                      generator=torch.Generator().manual_seed(0), **kw, **switches))

    code = dict(positive_rep=rep, divide_by="present")
    assert loss(None, **code) == pytest.approx(CODE_CPS_PLAIN, rel=1e-12)
    assert loss(protos, **code) == pytest.approx(CODE_CPS_MIXED, rel=1e-12)
    # each of the two forms matters: class 0 is present without anchors (sum / 2, not / 1) and
    # class 1's raw and normalised means point differently
    assert loss(None, positive_rep=rep) == pytest.approx(2 * CODE_CPS_PLAIN, rel=1e-12)
    assert loss(None, divide_by="present") != pytest.approx(CODE_CPS_PLAIN, rel=1e-3)
    assert loss(protos) != pytest.approx(2 * CODE_CPS_MIXED, rel=1e-3)


def test_crln_code_selects_the_codes_cps_forms_through_the_step():
    from conftest import REPO
    from semiseg.config import load_config, run_spec as config_run_spec

    cfg = load_config(root=REPO)
    params = {m: config_run_spec(cfg, "la", m, 10, 0)["method"]["params"] for m in ("crln_code", "crln")}
    assert (params["crln_code"]["positive_mean"], params["crln_code"]["contrast_divisor"]) == ("raw", "present")
    assert (params["crln"]["positive_mean"], params["crln"]["contrast_divisor"]) == ("normalized", "sampled")
    rep, labels, p1, protos = _cps_case()
    m = _two_class_crln(prototypes=2, prototype_dim=3, xi=0.6, xi_draw="fixed", anchors=4, negatives=3,
                        positive_mean="raw", contrast_divisor="present").double()
    with torch.no_grad():
        m.teacher.prototypes.copy_(protos)
    z = torch.log(torch.stack([1 - p1, p1])).view(1, 2, 1, 6)  # the student's probabilities p1
    none = torch.zeros(0, 1, 6)
    out = m._contrast(z, rep.T.reshape(1, 3, 1, 6), labels.view(1, 1, 6), none.long(), none.double(), True,
                      torch.Generator().manual_seed(0))
    assert float(out) == pytest.approx(CODE_CPS_MIXED, rel=1e-8)  # ξ is drawn in float32 by the method


# ---------------------------------------------------------------- Table 7: rectification variants


def test_fixed_v1_takes_the_more_confident_map_per_voxel():
    # two voxels, two classes: voxel 0 z = [2, 0] (p 0.881) beats M = [0, 1] (0.731);
    # voxel 1 M = [0, 3] (0.953) beats z = [0.5, 0] (0.622); a tie keeps z
    z = torch.tensor([[2.0, 0.5, 1.0], [0.0, 0.0, 0.0]]).view(1, 2, 1, 3)
    rel = torch.tensor([[0.0, 0.0, 0.0], [1.0, 3.0, 1.0]]).view(1, 2, 1, 3)
    out = rectify_fixed(z, rel)
    assert out.view(2, 3).tolist() == [[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]]
    assert out.argmax(dim=1).flatten().tolist() == [0, 1, 0]
    m = _method(rectification="fixed_v1")
    assert torch.equal(m.rectified(z, rel), out)
    assert build_optimizers(m, {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0}).keys() == {"main"}
    terms = m.training_step(_context(m, Step(9, 10))).terms
    assert "a_loss" not in terms and "rectifier_loss" not in terms and "ce_map" in terms


def test_learnable_v2_is_a_convolution_over_the_concatenation():
    r = ConcatRectifier(2, dims=2)
    z = torch.tensor([[1.0, -2.0], [0.5, 4.0]]).view(1, 2, 1, 2)
    rel = torch.tensor([[3.0, 0.0], [1.0, 2.0]]).view(1, 2, 1, 2)
    assert torch.equal(r(z, rel), z + rel)  # it starts as z + M (v3 at a = 0)
    with torch.no_grad():  # out0 = z0 + 2·M0 + 0.5, out1 = z1 − M1
        r.conv.weight.copy_(torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, -1.0]]).view(2, 4, 1, 1))
        r.conv.bias.copy_(torch.tensor([0.5, 0.0]))
    assert r(z, rel).view(2, 2).tolist() == [[7.5, -1.5], [-0.5, 2.0]]


def test_learnable_v2_conv_learns_from_the_loss_of_a_and_is_checkpointed(tmp_path):
    m = _method(rectification="learnable_v2", rectify_start=0.0, a_step="same")
    losses = m.training_step(_context(m, Step(5, 10)))
    assert "rectifier_loss" in losses.terms and "a_loss" not in losses.terms
    losses.total.backward()
    assert m.rectifier.conv.weight.grad.abs().sum() > 0 and m.rectifier.conv.bias.grad.abs().sum() > 0
    assert m.a.grad is None
    # the gradient by the chain rule: with r = conv([z; M]), dL/dW[o, i] = Σ dL/dr_o · [z; M]_i
    # over the voxels, dL/db[o] = Σ dL/dr_o
    g = torch.Generator().manual_seed(1)
    z, rel, y = torch.randn(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g), \
        torch.randint(0, 3, (2, 8, 8), generator=g)
    m.rectifier.zero_grad()
    m.loss_of_a(z, rel, y).backward()
    r = m.rectifier(z, rel).detach().requires_grad_()
    (0.5 * sum(dice_ce_loss(r, y, include_background=False))).backward()
    weight = torch.einsum("bohw,bihw->oi", r.grad, torch.cat([z, rel], dim=1))
    assert torch.allclose(m.rectifier.conv.weight.grad.view(3, 6), weight, atol=1e-7)
    assert torch.allclose(m.rectifier.conv.bias.grad, r.grad.sum(dim=(0, 2, 3)), atol=1e-7)
    opts = build_optimizers(m, {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0})
    assert set(opts) == {"main", "rectifier"}
    assert {id(p) for p in opts["rectifier"].param_groups[0]["params"]} == {id(p) for p in m.rectifier.parameters()}
    main = {id(p) for g in opts["main"].param_groups for p in g["params"]}
    assert not main & {id(p) for p in m.rectifier.parameters()}
    # in the training state: saved, moved by its optimiser
    store, split = tiny_store(tmp_path / "store.h5")
    spec = run_spec("crln", 3, params={"rectification": "learnable_v2", "rectify_start": 0.0, "anchors": 8,
                                       "negatives": 4}, val_interval=3)
    assert train(spec, store, split, tmp_path / "run", progress=False, stop_after=2) == {"stopped_at": 2}
    state = torch.load(tmp_path / "run" / "checkpoints" / "state.pt", weights_only=False)
    assert {"rectifier.conv.weight", "rectifier.conv.bias"} <= set(state["method"])
    assert "rectifier" in state["optimizers"]
    start = torch.cat([torch.eye(3), torch.eye(3)], dim=1).view(3, 6, 1, 1)
    assert not torch.equal(state["method"]["rectifier.conv.weight"], start)


def test_the_rectification_variants_reach_the_teachers_pseudo_labels(monkeypatch):
    import semiseg.methods.crln as crln

    seen, expected = {}, {}
    for kind in ("learnable_v3", "fixed_v1", "learnable_v2"):
        monkeypatch.setattr(crln, "strong_view", lambda x, y, c, g, k=kind: (seen.__setitem__(k, c), (x, y, c))[1])
        torch.manual_seed(0)
        m = _method(rectification=kind, rectify_start=0.0)
        with torch.no_grad():
            m.a.fill_(-50.0)
        ctx = _context(m, Step(5, 10))
        b = ctx.batch
        m.training_step(ctx)
        with torch.no_grad():
            z, rel, _ = m.teacher.outputs(b["unlabeled_image"])
        expected[kind] = {  # each variant's confidence, from the teacher's z and M by its definition
            "learnable_v3": torch.softmax(z + 51.0 * rel, dim=1).amax(dim=1),  # a = -50
            "fixed_v1": torch.maximum(torch.softmax(z, dim=1).amax(dim=1), torch.softmax(rel, dim=1).amax(dim=1)),
            "learnable_v2": torch.softmax(z + rel, dim=1).amax(dim=1),  # the convolution starts as z + M
        }[kind]
    for kind in seen:
        assert torch.allclose(seen[kind], expected[kind], atol=1e-6), kind
    assert not torch.equal(seen["learnable_v3"], seen["fixed_v1"])
    assert not torch.equal(seen["learnable_v3"], seen["learnable_v2"])


def test_the_table_7_entries_run_their_variant():
    from conftest import REPO
    from semiseg.config import load_config, method_settings, table_runs

    cfg = load_config(root=REPO)
    kinds = {m: method_settings(cfg, "la", m)["params"]["rectification"]
             for m in ("crln", "crln_r_fixed_v1", "crln_r_learnable_v2")}
    assert kinds == {"crln": "learnable_v3", "crln_r_fixed_v1": "fixed_v1", "crln_r_learnable_v2": "learnable_v2"}
    assert {m for _, m, _, _ in table_runs(cfg, "crln_rectify")} == set(kinds)


# ---------------------------------------------------------------- the evaluated network


def test_evaluate_switch_chooses_the_network_and_logits_inference_runs(tmp_path):
    from semiseg.inference.run import load_run_network
    from semiseg.methods.crln.rectify import Rectified

    torch.manual_seed(0)
    m = _method()
    assert m.eval_network() is m.models[0].backbone  # the default: the student's plain logits
    with torch.no_grad():  # teacher and student apart, and a visible rectification
        for p in m.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
        m.a.fill_(-3.0)
    x = torch.randn(1, 1, 32, 32)
    m.eval()
    student = m.eval_network()(x)
    m.params["evaluate"] = "teacher"
    assert m.eval_network() is m.teacher.backbone
    teacher = m.eval_network()(x)
    m.params["evaluate"] = "teacher_rectified"
    net = m.eval_network()
    assert isinstance(net, Rectified) and net.net is m.teacher and net.a is m.a
    z, rel, _ = m.teacher.outputs(x)
    rectified = net(x)
    assert torch.allclose(rectified, z + 4.0 * rel) and torch.allclose(teacher, z)
    assert not torch.allclose(student, teacher) and not torch.allclose(teacher, rectified)
    assert "a" in net.state_dict() and "net.prototypes" in net.state_dict()
    assert not any(k.startswith("net.") for k in m.state_dict())  # not a second copy in checkpoints
    # the infer stage builds the same module from the run's spec and loads model.pt into it
    spec = run_spec("crln", 10, params={"evaluate": "teacher_rectified"})
    spec["method"]["network_args"] = {"channels": [4, 8, 16, 32, 64], "dropout": [0] * 5}
    (tmp_path / "config.json").write_text(__import__("json").dumps({"spec": spec}))
    torch.save(net.state_dict(), tmp_path / "model.pt")
    loaded, _ = load_run_network(tmp_path, "cpu")
    assert isinstance(loaded, Rectified) and torch.allclose(loaded(x), rectified)
    plain = run_spec("crln", 10, params={"evaluate": "teacher"})
    plain["method"]["network_args"] = spec["method"]["network_args"]
    (tmp_path / "config.json").write_text(__import__("json").dumps({"spec": plain}))
    torch.save(m.teacher.backbone.state_dict(), tmp_path / "model.pt")
    assert isinstance(load_run_network(tmp_path, "cpu")[0], UNet)
    with pytest.raises(ValueError, match="teacher_rectified needs rectify: true"):
        _method(evaluate="teacher_rectified", rectify=False)


def test_teacher_rectified_runs_each_rectification_variant():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 32, 32)
    for kind in ("fixed_v1", "learnable_v2"):
        m = _method(evaluate="teacher_rectified", rectification=kind).eval()
        z, rel, _ = m.teacher.outputs(x)
        assert torch.allclose(m.eval_network()(x), m.rectified(z, rel))
    assert "rectifier.conv.weight" in m.eval_network().state_dict()


# ---------------------------------------------------------------- params per ratio (ξ of the code's LA entry)


def _ratio_cfg(tmp_path, entry: dict):
    from conftest import make_workflow

    return make_workflow(tmp_path / "wf", methods_extra={"mt_ratio": {"algorithm": "mean_teacher", "description": "t",
                                                                      **entry}})


def test_ratio_params_apply_at_their_ratio_only_and_reach_the_run_spec(tmp_path):
    from semiseg.config import load_config, method_settings, run_spec as config_run_spec, spec_hash

    root = _ratio_cfg(tmp_path, {"params": {"consistency": 0.3},
                                 "datasets": {"tiny2d": {"params": {"ema_decay": 0.9}}},
                                 "ratio_params": {"tiny2d": {50: {"consistency": 0.8}}}})
    cfg = load_config(root=root)
    at25 = config_run_spec(cfg, "tiny2d", "mt_ratio", 25, 0)["method"]["params"]
    at50 = config_run_spec(cfg, "tiny2d", "mt_ratio", "50", 0)["method"]["params"]  # a wildcard is a string
    assert (at25["consistency"], at25["ema_decay"]) == (0.3, 0.9)
    assert (at50["consistency"], at50["ema_decay"]) == (0.8, 0.9)
    assert method_settings(cfg, "tiny2d", "mt_ratio")["params"]["consistency"] == 0.3  # no ratio: none applies
    # the run spec is the train job's fingerprint: only the 50 % runs change with the ratio's params
    plain = load_config(root=_ratio_cfg(tmp_path / "b", {"params": {"consistency": 0.3},
                                                         "datasets": {"tiny2d": {"params": {"ema_decay": 0.9}}}}))
    same = [spec_hash(config_run_spec(c, "tiny2d", "mt_ratio", r, 0)) for c in (cfg, plain) for r in (25, 50)]
    assert same[0] == same[2] and same[1] != same[3]


@pytest.mark.parametrize("ratio_params, message", [
    ({"tiny2d": {30: {"consistency": 0.5}}}, r"mt_ratio\.ratio_params\.tiny2d\.30: ratio 30 is not defined for tiny2d; allowed: 25, 50"),
    ({"tiny2d": {50: {"consistency": -1}}}, r"mt_ratio\.ratio_params\.tiny2d\.50"),
    ({"tiny2d": {50: {"no_such_param": 1}}}, r"mt_ratio\.ratio_params\.tiny2d\.50"),
    ({"tiny2d": {50: 0.5}}, r"ratio_params"),
])
def test_ratio_params_are_validated(tmp_path, ratio_params, message):
    from semiseg.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(root=_ratio_cfg(tmp_path, {"ratio_params": ratio_params}))


def test_the_code_entry_uses_xi_0_6_at_8_labeled_and_0_9_at_16():
    from conftest import REPO
    from semiseg.config import load_config, run_spec as config_run_spec

    cfg = load_config(root=REPO)
    xi = {(m, r): config_run_spec(cfg, "la", m, r, 0)["method"]["params"]["xi"]
          for m in ("crln_code", "crln") for r in (10, 20)}
    assert xi == {("crln_code", 10): 0.6, ("crln_code", 20): 0.9, ("crln", 10): 0.6, ("crln", 20): 0.6}


def test_a_teacher_rectified_run_validates_saves_and_loads_its_evaluated_module(tmp_path):
    from semiseg.inference.run import load_run_network
    from semiseg.methods.crln.rectify import Rectified

    store, split = tiny_store(tmp_path / "store.h5")
    spec = run_spec("crln", 2, params={"evaluate": "teacher_rectified", "rectify_start": 0.0, "anchors": 8,
                                       "negatives": 4}, val_interval=2)
    summary = train(spec, store, split, tmp_path / "run", progress=False)
    assert summary["best_val_dice"] is not None
    net, _ = load_run_network(tmp_path / "run", "cpu")
    assert isinstance(net, Rectified) and float(net.a.detach()) != 0.0  # a moved and was saved with the teacher
    saved = torch.load(tmp_path / "run" / "model.pt")
    assert "a" in saved and any(k.startswith("net.attn.") for k in saved)
