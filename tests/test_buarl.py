"""BUARL on Mean Teacher and on BCP: the entropy map, the percentile threshold and its mask, URL's and
CRL's weights, the weighted CE + Dice, each against values worked out by hand; that α = 1 gives
the base method's loss; that the unlabeled term reaches the student; that each switch removes its
part; and a short real training of each through the engine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import method_on_defaults, pixel_net, schema_defaults, small_unet, squares_batch, tiny_store
from semiseg.methods import Step, StepContext
from semiseg.methods.base import StageContext
from semiseg.methods.buarl import entropy_map, percentile_threshold, region_weight, uncertain_mask
from semiseg.methods.common.losses import dice_ce_loss

LN2 = math.log(2)


_method, _small_unet, _batch = method_on_defaults, small_unet, squares_batch


def _twin(base: str, buarl: str, **params):
    """The base method and BUARL over it with the same networks (student and teacher); the base
    gets those of ``params`` it has."""
    torch.manual_seed(0)
    a = _method(base, **{k: v for k, v in params.items() if k in schema_defaults(base)})
    b = _method(buarl, **params)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():  # a teacher unlike the student, so the two masks can differ
        for p in list(a.teacher.parameters()) + list(b.teacher.parameters()):
            p.mul_(0.9)
    return a, b


def _step(method, batch, step, seed=0):
    torch.manual_seed(seed)
    return method.training_step(StepContext(step, batch))


# ---------------------------------------------------------------- the pieces, by hand


def test_entropy_map_shannon_and_largest_class_term_detached():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]]).T.reshape(1, 2, 1, 3).requires_grad_()
    h = entropy_map(p)
    expected = [LN2, 0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]  # 0.693147, 0, 0.562335
    assert h.shape == (1, 1, 3) and not h.requires_grad
    assert h.flatten().tolist() == pytest.approx(expected, abs=1e-6)
    m = entropy_map(p, "max_class")  # max(-p ln p): 0.5 ln 2, 0, max(0.25 ln 4, 0.75 ln 4/3)
    assert m.flatten().tolist() == pytest.approx([0.5 * LN2, 0.0, 0.25 * math.log(4)], abs=1e-6)
    with pytest.raises(ValueError, match="allowed: shannon, max_class"):
        entropy_map(p, "per_class")


def test_percentile_threshold_per_image_and_per_batch():
    u = torch.stack([torch.arange(5.0), torch.arange(10.0, 15.0)]).reshape(2, 1, 5)
    # numpy's linear percentile: position 0.95 * 4 = 3.8 -> 3.8 and 13.8
    assert percentile_threshold(u, 95).flatten().tolist() == pytest.approx([3.8, 13.8])
    # over the batch: position 0.95 * 9 = 8.55 of [0..4, 10..14] -> 13.55, for both images
    assert percentile_threshold(u, 95, "batch").flatten().tolist() == pytest.approx([13.55, 13.55])
    assert uncertain_mask(u, 95).reshape(2, 5).tolist() == [[False] * 4 + [True], [False] * 4 + [True]]
    assert uncertain_mask(u, 95, "batch").reshape(2, 5).tolist() == [[False] * 5, [False] * 4 + [True]]
    g = torch.Generator().manual_seed(0)
    r = torch.rand(3, 7, 9, generator=g)
    for q in (0, 37.5, 95, 99, 100):
        ours = percentile_threshold(r, q).flatten().numpy()
        assert ours == pytest.approx(np.percentile(r.reshape(3, -1).numpy(), q, axis=1), abs=1e-6)
    with pytest.raises(ValueError, match="percentile must be in"):
        percentile_threshold(u, 101)
    with pytest.raises(ValueError, match="allowed: image, batch"):
        percentile_threshold(u, 95, "volume")


def test_the_mask_is_strict_ties_at_the_threshold_and_a_constant_map_are_certain():
    u = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0]])
    # q = 50: the median is 1, and nothing exceeds it: fewer than half the pixels are uncertain
    assert percentile_threshold(u, 50).item() == 1.0
    assert uncertain_mask(u, 50).tolist() == [[False] * 5]
    # q = 20: position 0.8 between two zeros -> 0; the three ones exceed it
    assert uncertain_mask(u, 20).tolist() == [[False, False, True, True, True]]
    constant = torch.full((2, 4, 4), 0.3)
    assert torch.equal(percentile_threshold(constant, 95).flatten(), torch.full((2,), 0.3))
    assert not uncertain_mask(constant, 95).any() and not uncertain_mask(constant, 0, "batch").any()
    # so URL weighs every pixel α and CRL every pixel 1
    assert torch.equal(region_weight("url", uncertain_mask(constant, 95), 0.5), torch.full((2, 4, 4), 0.5))
    assert torch.equal(region_weight("crl", uncertain_mask(constant, 95), 0.5), torch.ones(2, 4, 4))


def test_url_and_crl_weights():
    mask = torch.tensor([[True, False, False, True]])
    assert region_weight("url", mask, 0.5).tolist() == [[1.0, 0.5, 0.5, 1.0]]
    assert region_weight("crl", mask, 0.5).tolist() == [[0.5, 1.0, 1.0, 0.5]]
    assert region_weight("crl", mask, 0.0).tolist() == [[0.0, 1.0, 1.0, 0.0]]
    assert region_weight("none", mask, 0.5) is None
    with pytest.raises(ValueError, match="allowed: url, crl, none"):
        region_weight("both", mask, 0.5)


def test_weighted_ce_and_dice_by_hand():
    # Two pixels, p = 0.5 / 0.5, labels [0, 1], weights [1, 0.5]. CE = (ln 2 + 0.5 ln 2) / 2.
    # Dice, class 0: I = 0.5, Σwp² = 0.375, Σwt² = 1 -> 1 - 1 / 1.375; class 1: I = 0.25,
    # Σwp² = 0.375, Σwt² = 0.5 -> 1 - 0.5 / 0.875; mean 0.350649.
    logits, label = torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 1]]])
    out = dice_ce_loss(logits, label, weight=torch.tensor([[[1.0, 0.5]]]))
    assert out.ce.item() == pytest.approx(0.75 * LN2)
    assert out.dice.item() == pytest.approx(((1 - 1 / 1.375) + (1 - 0.5 / 0.875)) / 2, abs=1e-5)
    # weights of 1 are the unweighted loss; with a region mask, each region's CE keeps its count
    ones = dice_ce_loss(logits, label, weight=torch.ones(1, 1, 2))
    plain = dice_ce_loss(logits, label)
    assert ones.ce.item() == pytest.approx(plain.ce.item()) and ones.dice.item() == pytest.approx(plain.dice.item())
    region = torch.tensor([[[1, 0]]])
    masked = dice_ce_loss(logits, label, mask=region, weight=torch.tensor([[[0.5, 1.0]]]))
    assert masked.ce.item() == pytest.approx(0.5 * LN2)


def test_url_on_the_supervised_loss_of_buarl_mt_by_hand():
    # Student logits [x, 0] on the image x = [0, 3, -3, 5]: P(class 0) = [0.5, 0.9526, 0.0474,
    # 0.9933], entropies [0.6931, 0.1908, 0.1908, 0.0403]. The 50th percentile is 0.1908 (the
    # two tied middle values), so only pixel 0 is uncertain (strictly above): URL weights
    # [1, 0.5, 0.5, 0.5]. Labels all 0: CE_i = ln(1 + e^-x_i).
    m = _method("buarl_mt", lambda: pixel_net(1.0), num_classes=2, batch=1, labeled_percentile=50)
    x = torch.tensor([0.0, 3.0, -3.0, 5.0]).reshape(1, 1, 1, 4)
    ctx, logits = StepContext(Step(0, 1)), m.student(x)
    ce, _ = m.supervised_loss(logits, torch.zeros(1, 1, 4, dtype=torch.long), m.supervised_weight(logits, ctx))
    per_pixel = [math.log(1 + math.exp(-v)) for v in (0.0, 3.0, -3.0, 5.0)]
    assert ce.item() == pytest.approx((per_pixel[0] + 0.5 * sum(per_pixel[1:])) / 4, rel=1e-6)
    assert ctx.stats["labeled_uncertain"].item() == 0.25


# ---------------------------------------------------------------- α = 1 is the base method


def test_alpha_one_is_mean_teacher_exactly():
    batch, step = _batch(), Step(20, 30)
    mt, ours = _twin("mean_teacher", "buarl_mt", unlabeled_loss="mse", labeled_alpha=1.0, unlabeled_alpha=1.0)
    a, b = _step(mt, batch, step), _step(ours, batch, step)
    assert b.stats["labeled_uncertain"] > 0 and b.stats["unlabeled_uncertain"] > 0  # the masks are not empty
    for name in ("ce", "dice", "consistency"):
        torch.testing.assert_close(b.terms[name], a.terms[name], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b.total, a.total, rtol=1e-6, atol=1e-7)
    # at α = 0.5 both terms move
    _, half = _twin("mean_teacher", "buarl_mt", unlabeled_loss="mse")
    c = _step(half, batch, step)
    assert c.terms["ce"] < a.terms["ce"] and c.terms["consistency"] < a.terms["consistency"]


def test_alpha_one_pseudo_label_term_is_the_plain_ce_and_dice_against_the_teacher():
    batch, step = _batch(), Step(20, 30)
    m = _method("buarl_mt", labeled_alpha=1.0, unlabeled_alpha=1.0)
    out = _step(m, batch, step)
    torch.manual_seed(0)
    logits = m.student(torch.cat([batch["labeled_image"], batch["unlabeled_image"]]))
    teacher = m.teacher_probs(batch["unlabeled_image"], StepContext(step, batch))
    expected = dice_ce_loss(logits[2:], teacher.argmax(1)).total
    torch.testing.assert_close(out.terms["consistency"], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("iteration", [2, 7])  # pre-training, self-training
def test_alpha_one_is_bcp_exactly(iteration):
    batch, step = _batch(b=4), Step(iteration, 10)
    bcp, ours = _twin("bcp", "buarl_bcp", pretrain_fraction=0.5, labeled_alpha=1.0, unlabeled_alpha=1.0)
    for m in (bcp, ours):
        m.on_stage_start("self_train", Step(5, 10), StageContext())
    a, b = _step(bcp, batch, step), _step(ours, batch, step)
    assert b.stats["labeled_uncertain"] > 0
    assert torch.equal(a.total, b.total) and torch.equal(a.terms["ce"], b.terms["ce"])
    assert torch.equal(a.terms["dice"], b.terms["dice"])
    _, half = _twin("bcp", "buarl_bcp", pretrain_fraction=0.5)
    half.on_stage_start("self_train", Step(5, 10), StageContext())
    assert not torch.equal(_step(half, batch, step).total, a.total)


@pytest.mark.parametrize("iteration", [2, 7])  # pre-training, self-training
def test_alpha_one_is_bcp_on_its_la_script_too(iteration):
    batch, step = _batch(b=4), Step(iteration, 10)
    bcp, ours = _twin("bcp", "buarl_bcp", pretrain_fraction=0.5, labeled_alpha=1.0, unlabeled_alpha=1.0, script="la")
    acdc, _ = _twin("bcp", "buarl_bcp", pretrain_fraction=0.5, script="acdc")
    for m in (bcp, ours, acdc):
        m.on_stage_start("self_train", Step(5, 10), StageContext())
    a, b = _step(bcp, batch, step), _step(ours, batch, step)
    for name in ("ce", "dice"):
        torch.testing.assert_close(b.terms[name], a.terms[name], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(_step(acdc, batch, step).total, a.total)
    _, half = _twin("bcp", "buarl_bcp", pretrain_fraction=0.5, script="la")
    half.on_stage_start("self_train", Step(5, 10), StageContext())
    assert not torch.allclose(_step(half, batch, step).total, a.total)


# ---------------------------------------------------------------- gradients and switches


def _student_grads(method, loss):
    method.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in method.student.parameters()]


@pytest.mark.parametrize("unlabeled_loss", ["pseudo_label", "mse"])
def test_buarl_mt_unlabeled_term_reaches_the_student(unlabeled_loss):
    m = _method("buarl_mt", unlabeled_loss=unlabeled_loss)
    with torch.no_grad():
        for p in m.teacher.parameters():
            p.mul_(0.9)
    out = _step(m, _batch(), Step(20, 30))
    grads = _student_grads(m, out.terms["consistency"])
    assert any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in m.teacher.parameters())


def test_buarl_bcp_crl_weights_reach_the_student_through_the_pseudo_labelled_pixels():
    batch, step = _batch(b=4), Step(7, 10)
    grads = {}
    for alpha in (0.5, 1.0):
        _, m = _twin("bcp", "buarl_bcp", pretrain_fraction=0.5, unlabeled_alpha=alpha, labeled_weighting="none")
        m.on_stage_start("self_train", Step(5, 10), StageContext())
        grads[alpha] = _student_grads(m, _step(m, batch, step).total)
    assert any(not torch.allclose(a, b) for a, b in zip(grads[0.5], grads[1.0]))


def test_buarl_mt_switches_remove_their_part():
    batch, step = _batch(), Step(20, 30)
    _, ref = _twin("mean_teacher", "buarl_mt", labeled_alpha=1.0, unlabeled_alpha=1.0)
    base = _step(ref, batch, step)
    _, no_url = _twin("mean_teacher", "buarl_mt", labeled_weighting="none", unlabeled_alpha=1.0)
    out = _step(no_url, batch, step)
    assert torch.equal(out.terms["ce"], dice_ce_loss(*_labeled(no_url, batch)).ce)
    assert "labeled_uncertain" not in out.stats
    _, no_crl = _twin("mean_teacher", "buarl_mt", unlabeled_weighting="none", labeled_alpha=1.0)
    out = _step(no_crl, batch, step)
    torch.testing.assert_close(out.terms["consistency"], base.terms["consistency"], rtol=1e-6, atol=1e-7)
    assert "unlabeled_uncertain" not in out.stats
    # the unlabeled mask from the student's prediction instead of the teacher's
    _, from_teacher = _twin("mean_teacher", "buarl_mt")
    _, from_student = _twin("mean_teacher", "buarl_mt", unlabeled_mask_from="student")
    t, s = _step(from_teacher, batch, step), _step(from_student, batch, step)
    assert torch.equal(t.terms["ce"], s.terms["ce"]) and not torch.equal(t.terms["consistency"], s.terms["consistency"])


def _labeled(method, batch):
    logits = method.student(torch.cat([batch["labeled_image"], batch["unlabeled_image"]]))
    return logits[: batch["labeled_image"].shape[0]], batch["labeled_label"]


def _bcp_weights(params, unlabeled_in="ones", seed=0):
    """The weight map BUARL(BCP) puts on one mixed 1 x 8 image: student logits [x, 0] on
    x = [0, 4, 4, 4 | 4, 4, 4, -0.2]; the teacher's logits on the unlabeled image [4, 0] at every
    column but 6 ([0, 0]: unsure there); paste mask keeps columns 0-3 (M = 1), pastes columns 4-7."""
    m = _method("buarl_bcp", lambda: pixel_net(1.0), num_classes=2, batch=1, labeled_percentile=75,
                unlabeled_percentile=75, **params)
    x = torch.tensor([0.0, 4, 4, 4, 4, 4, 4, -0.2]).reshape(1, 1, 1, 8)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0]])
    teacher_logits = torch.zeros(1, 2, 1, 8)
    teacher_logits[0, 0, 0] = torch.tensor([4.0, 4, 4, 4, 4, 4, 0, 4])
    return m.mix_weight(m.student(x), mask, unlabeled_in, teacher_logits, StepContext(Step(0, 1)))


def test_buarl_bcp_weight_map_and_its_switches():
    # Student entropy: high at columns 0 (x = 0) and 7 (x = -0.2), the 75th percentile lies
    # between the six low values and those two, so columns 0 and 7 are uncertain (URL: 1, the
    # rest 0.5). Teacher entropy: high at column 6 only; the 75th percentile (position 5.25 of
    # 8) sits among the seven tied low values, so only column 6 exceeds it (CRL: 0.5 there).
    # u_a * M + l_a * (1 - M): the unlabeled image fills columns 0-3 (CRL), the labeled 4-7 (URL).
    w = _bcp_weights({})
    assert w.flatten().tolist() == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 1.0]
    # l_b * M + u_b * (1 - M): unlabeled in columns 4-7 (column 6 uncertain), labeled in 0-3
    w = _bcp_weights({}, unlabeled_in="zeros")
    assert w.flatten().tolist() == [1.0, 0.5, 0.5, 0.5, 1.0, 1.0, 0.5, 1.0]
    # URL off on the mixed images' ground truth: weight 1 there
    w = _bcp_weights({"labeled_self_train": False}, unlabeled_in="zeros")
    assert w.flatten().tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 1.0]
    # uncertain pseudo-labelled pixels removed (Table 6)
    w = _bcp_weights({"unlabeled_alpha": 0.0}, unlabeled_in="zeros")
    assert w.flatten().tolist() == [1.0, 0.5, 0.5, 0.5, 1.0, 1.0, 0.0, 1.0]
    # the unlabeled mask from the student's mixed prediction: columns 0 and 7 -> CRL 0.5 at 7
    w = _bcp_weights({"unlabeled_mask_from": "student"}, unlabeled_in="zeros")
    assert w.flatten().tolist() == [1.0, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 0.5]
    # both streams off: no weights at all (BCP's loss)
    assert _bcp_weights({"labeled_weighting": "none", "unlabeled_weighting": "none"}) is None
    # pre-training: URL on the whole (labeled) mixed image, or nothing
    assert _bcp_weights({}, unlabeled_in=None).flatten().tolist() == [1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1.0]
    assert _bcp_weights({"labeled_pretrain": False}, unlabeled_in=None) is None


def test_buarl_bcp_pretraining_switch_gives_bcp_s_pre_training_step():
    batch, step = _batch(b=4), Step(2, 10)
    bcp, ours = _twin("bcp", "buarl_bcp", pretrain_fraction=0.5, labeled_pretrain=False)
    assert torch.equal(_step(bcp, batch, step).total, _step(ours, batch, step).total)
    _, on = _twin("bcp", "buarl_bcp", pretrain_fraction=0.5)
    assert not torch.equal(_step(bcp, batch, step).total, _step(on, batch, step).total)


# ---------------------------------------------------------------- through the engine


@pytest.mark.parametrize("algorithm", ["buarl_mt", "buarl_bcp"])
def test_buarl_trains_through_the_engine(tmp_path, algorithm):
    from helpers import run_spec
    from semiseg.engine.loop import train

    params = {**schema_defaults(algorithm), **({"pretrain_fraction": 0.5} if algorithm == "buarl_bcp" else {})}
    spec = run_spec(algorithm, 4, params=params)
    store, split = tiny_store(tmp_path / "store.h5")
    summary = train(spec, store, split, tmp_path / "run", progress=False)
    assert summary["best_val_dice"] is not None
    log = (tmp_path / "run" / "train.csv").read_text()
    assert "labeled_uncertain" in log and "unlabeled_uncertain" in log
    if algorithm == "buarl_bcp":  # the paper's Figure 5 from the run's evaluated network
        from semiseg.reporting.buarl_figure import entropy_figure

        out = entropy_figure(tmp_path / "run", store, split, tmp_path / "figs" / "entropy.png", n_slices=2)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_entropy_regions_shrink_with_the_percentile():
    from semiseg.reporting.buarl_figure import entropy_regions

    torch.manual_seed(0)
    maps = entropy_regions(_small_unet().eval(), torch.randn(2, 1, 20, 20))
    shares = [maps["masks"][q].sum(dim=(1, 2)) for q in (95, 97, 99)]
    # each image's own percentile: at most 20, 12 and 4 of its 400 pixels lie strictly above
    assert all(s.max().item() <= bound for s, bound in zip(shares, (20, 12, 4)))
    assert torch.all(shares[0] >= shares[1]) and torch.all(shares[1] >= shares[2]) and shares[2].min() > 0
    assert torch.equal(maps["masks"][99], uncertain_mask(maps["entropy"], 99))


# ---------------------------------------------------------------- the catalogue


def test_the_catalogue_resolves_the_paper_s_percentiles_and_the_tables_carry_every_value():
    from conftest import REPO
    from semiseg.config import load_config, run_spec, table_runs
    from semiseg.references import reference_values

    cfg = load_config(root=REPO)
    for method, dataset, q in (("buarl_mt", "acdc", (95, 99)), ("buarl_bcp", "acdc", (95, 99)),
                               ("buarl_mt", "la", (95, 95)), ("buarl_bcp", "la", (95, 95)),
                               ("buarl_bcp_mu_99_99", "la", (99, 99)), ("buarl_bcp_mu_95_95", "acdc", (95, 95))):
        p = run_spec(cfg, dataset, method, 10, 0)["method"]["params"]
        assert (p["labeled_percentile"], p["unlabeled_percentile"]) == q, (method, dataset)
        assert p["labeled_alpha"] == 0.5 or method == "buarl_bcp_remove"
    # BUARL on BCP keeps BCP's schedule and LA settings
    assert run_spec(cfg, "la", "buarl_bcp", 10, 0)["schedule"] == run_spec(cfg, "la", "bcp", 10, 0)["schedule"]
    full = {"dice", "jaccard", "hd95", "asd"}
    for name in ("buarl_acdc", "buarl_la", "buarl_modules", "buarl_regions", "buarl_mu", "buarl_remove"):
        table = cfg["tables"][name]
        values = reference_values(table)
        for row in table["rows"]:
            for r in row["ratios"]:
                assert set(values[row["method"]][r][0][1]) == full, (name, row["method"], r)
    # the ablation tables at 7 labeled patients share BUARL's own run: 8 runs of their own
    ablation = {m for name in ("buarl_modules", "buarl_regions", "buarl_mu", "buarl_remove")
                for _d, m, _r, _s in table_runs(cfg, name)}
    assert len(ablation - {"bcp", "buarl_bcp"}) == 8 and {"bcp", "buarl_bcp"} <= ablation


# ---------------------------------------------------------------- the tables on the real data
# built by the session fixtures `acdc_smoke` and `la_smoke` (tests/conftest.py) from the lists of
# tests/smoke_targets.py: smoke schedule, seed 0, one Snakemake call per dataset


def _rows(table: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]


def _check_table(results, name, paper):
    """Every line the build runs is measured, every other shows the papers' values only."""
    import re

    from helpers import smoke_rows

    ran, not_run = smoke_rows(results, name)
    table = (results / "tables" / f"{name}.md").read_text()
    rows = _rows(table)
    assert [r.split("|")[1].strip() for r in rows if "| not run" in r] == not_run, table
    measured = [r for r in rows if "| not run" not in r]
    assert [r.split("|")[1].strip() for r in measured] == ran, table
    assert all(re.search(r"\| \d+\.\d\d", r) for r in measured), table
    assert paper in table and "One seed (0)" in table and "arXiv:2502.07457" in table


def _spec(results, dataset, method, ratio):
    import json

    return json.loads((results / "runs" / dataset / method / str(ratio) / "seed0" / "config.json").read_text())["spec"]


def _last_log_row(results, dataset, method, ratio) -> dict:
    import csv

    with open(results / "runs" / dataset / method / str(ratio) / "seed0" / "train.csv") as fh:
        return list(csv.DictReader(fh))[-1]


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("name, paper", [
    ("buarl_acdc", "(paper 88.42)"),     # Ours(BCP), 3 labeled
    ("buarl_modules", "(paper 89.45)"),  # + URL
    ("buarl_regions", "(paper 90.28)"),  # CRL / URL
    ("buarl_mu", "(paper 90.06)"),       # 99 / 99
    ("buarl_remove", "(paper 88.56)"),   # remove
])
def test_buarl_s_acdc_tables_build_on_the_real_data(acdc_smoke, name, paper):
    _check_table(acdc_smoke, name, paper)


@pytest.mark.slow
@pytest.mark.data
def test_buarl_s_acdc_runs_use_the_paper_s_settings_and_weights(acdc_smoke):
    # the catalogue's ACDC percentiles, and each ablation's switch, reached the runs
    params = _spec(acdc_smoke, "acdc", "buarl_bcp", 10)["method"]["params"]
    assert (params["labeled_percentile"], params["unlabeled_percentile"], params["labeled_alpha"]) == (95, 99, 0.5)
    assert _spec(acdc_smoke, "acdc", "buarl_bcp_remove", 10)["method"]["params"]["unlabeled_alpha"] == 0.0
    assert _spec(acdc_smoke, "acdc", "buarl_bcp_mu_99_99", 10)["method"]["params"]["labeled_percentile"] == 99
    assert _spec(acdc_smoke, "acdc", "buarl_mt", 5)["method"]["params"]["unlabeled_loss"] == "pseudo_label"
    # the weights were computed in training: at most ~1 % (99th percentile) of the unlabeled
    # pixels and ~5 % of the labeled ones are uncertain, and some are
    row = _last_log_row(acdc_smoke, "acdc", "buarl_bcp", 10)
    assert 0 < float(row["unlabeled_uncertain"]) <= 0.0101 and 0 < float(row["labeled_uncertain"]) <= 0.0501
    assert "unlabeled_uncertain" not in _last_log_row(acdc_smoke, "acdc", "buarl_bcp_url_only", 10)


@pytest.mark.slow
@pytest.mark.data
def test_the_entropy_figure_is_drawn_from_the_buarl_bcp_run(acdc_smoke):
    import json

    png = acdc_smoke / "figures" / "buarl_entropy_acdc_10.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads(png.with_suffix(".provenance.json").read_text())
    assert record["rule"] == "entropy_figure" and record["wildcards"] == {"dataset": "acdc", "ratio": "10"}


@pytest.mark.slow
@pytest.mark.data
def test_buarl_s_la_table_builds_on_la_mini(la_smoke):
    _check_table(la_smoke, "buarl_la", "(paper 90.21)")
    # LA's percentiles are 95 / 95 (the catalogue's `la` settings), over BCP's LA schedule
    params = _spec(la_smoke, "la", "buarl_bcp", 10)["method"]["params"]
    assert (params["labeled_percentile"], params["unlabeled_percentile"], params["reset_optimizer"]) == (95, 95, True)
    mt = _spec(la_smoke, "la", "buarl_mt", 5)["method"]["params"]
    assert (mt["unlabeled_percentile"], mt["consistency_start"]) == (95, 0.0)
