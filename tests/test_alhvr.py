"""ALHVR and its region study: hand-worked γ, regions, prototypes, CG-CPCL, DTCT; gradients;
ablation switches; tiny end-to-end runs; the region figure; the catalogue entries."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import yaml

from conftest import REPO, write_yaml
from semiseg.config import load_config, run_spec, table_runs
from semiseg.engine.loop import train
from semiseg.methods import build_method
from semiseg.methods.alhvr import NORMALIZE, cg_cpcl_terms, dtct_teacher
from semiseg.methods.common.dual_branch import Branch, reduce_region
from semiseg.methods.base import Step, StepContext
from semiseg.methods.common.regions import (
    Regions,
    adaptive_threshold,
    class_prototypes,
    prototype_similarity,
    split_regions,
)
from semiseg.nets import UNet, build_network
from test_engine import _spec, _tiny_store


def schema_defaults(algorithm):
    """Every parameter's default from its schema (the methods index params without fallbacks)."""
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "params" / f"{algorithm}.schema.yaml").read_text())
    return {name: prop["default"] for name, prop in schema["properties"].items()}


ALHVR_DEFAULTS = schema_defaults("alhvr")
CPS_REGIONS_DEFAULTS = schema_defaults("cps_regions")


def t(values):
    return torch.tensor(values, dtype=torch.float32)


def tiny_method(algorithm="alhvr", **params):
    """A method over two small dropout-free U-Nets (fast, and the clean pass is deterministic)."""
    defaults = ALHVR_DEFAULTS if algorithm == "alhvr" else CPS_REGIONS_DEFAULTS
    spec = {"dataset": {"num_classes": 3, "dims": 2},
            "method": {"algorithm": algorithm, "params": {**defaults, **params}}}
    return build_method(spec, lambda: UNet(1, 3, dims=2, channels=(4, 8), dropout=(0.0, 0.0)))


def tiny_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"labeled_image": torch.rand(2, 1, 16, 16, generator=g),
            "labeled_label": torch.randint(0, 3, (2, 16, 16), generator=g),
            "unlabeled_image": torch.rand(2, 1, 16, 16, generator=g)}


# ----------------------------------------------------------------------------- γ and regions
def test_gamma_is_the_mean_of_the_lowest_k_average_confidences():
    con = t([0.9, 0.5, 0.7, 0.3, 0.8])
    # β = 0.8, N = 5 -> K = 4: (0.3 + 0.5 + 0.7 + 0.8) / 4
    assert adaptive_threshold(con, con, 0.8).item() == pytest.approx(0.575)
    # K = floor(0.5 * 5) = 2: (0.3 + 0.5) / 2; K never drops below 1
    assert adaptive_threshold(con, con, 0.5).item() == pytest.approx(0.4)
    assert adaptive_threshold(con, con, 0.01).item() == pytest.approx(0.3)
    # the average of the two networks' confidences: (0.2 + 0.4) / 2 = 0.3 is the lowest
    assert adaptive_threshold(t([0.2, 1.0]), t([0.4, 1.0]), 0.5).item() == pytest.approx(0.3)
    with pytest.raises(ValueError, match="beta"):
        adaptive_threshold(con, con, 0.0)


def test_three_regions_and_who_learns_from_whom_by_hand():
    con_a = t([0.9, 0.4, 0.8, 0.2, 0.7])
    con_b = t([0.9, 0.6, 0.3, 0.4, 0.5])
    # average [0.9, 0.5, 0.55, 0.3, 0.6]; lowest 4 -> γ = (0.3 + 0.5 + 0.55 + 0.6) / 4 = 0.4875
    r = split_regions(con_a, con_b, 0.8)
    assert r.gamma.item() == pytest.approx(0.4875)
    assert r.omega1.tolist() == [True, False, False, False, True]   # both >= γ
    assert r.omega2.tolist() == [False, True, True, False, False]   # exactly one
    assert r.omega3.tolist() == [False, False, False, True, False]  # neither
    assert r.learner(0).tolist() == [False, True, False, False, False]  # A < γ <= B: A learns from B
    assert r.learner(1).tolist() == [False, False, True, False, False]  # the mirror
    assert r.label_map().tolist() == [1, 2, 2, 3, 1]
    assert [r.region(n).tolist() for n in ("R1", "R2", "R3")] == [
        r.omega1.tolist(), r.omega2.tolist(), r.omega3.tolist()]
    assert r.fractions() == pytest.approx({"omega1": 0.4, "omega2": 0.4, "omega3": 0.2})


def test_a_confidence_equal_to_gamma_counts_as_reliable_so_regions_partition():
    r = split_regions(t([0.5, 0.5]), t([0.5, 0.5]), 1.0)  # γ = 0.5 exactly
    assert r.omega1.all() and not r.omega2.any() and not r.omega3.any()
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    r = split_regions(x, x.flip(0), 0.7)
    total = r.omega1.long() + r.omega2.long() + r.omega3.long()
    assert (total == 1).all() and torch.equal(r.omega2, r.learner(0) | r.learner(1))


# ----------------------------------------------------------------------------- prototypes
def test_prototypes_are_masked_feature_means_per_class():
    # two samples, D = 2, three pixels each; feature of each pixel as (d0, d1)
    pixels = [[(1, 0), (0, 2), (3, 0)], [(0, 4), (2, 2), (0, 0)]]
    features = t(pixels).permute(0, 2, 1).unsqueeze(2)  # (B=2, D=2, H=1, W=3)
    labels = torch.tensor([[[0, 1, 0]], [[1, 1, 2]]])
    batch = class_prototypes(features, labels, 3, pooling="batch")
    # class 0: (1,0),(3,0) -> (2,0); class 1: (0,2),(0,4),(2,2) -> (2/3, 8/3); class 2: (0,0)
    assert torch.allclose(batch, t([[2, 0], [2 / 3, 8 / 3], [0, 0]]))
    sample = class_prototypes(features, labels, 3, pooling="sample")
    # per sample: s0 = (2,0), (0,2), absent; s1 = absent, (1,3), (0,0); mean over the two samples
    assert torch.allclose(sample, t([[1, 0], [0.5, 2.5], [0, 0]]))


def test_prototype_smoothing_divides_by_count_plus_it():
    """The public code's getPrototype_2D divides by (count + 1e-5); the features as above, s = 0.5."""
    pixels = [[(1, 0), (0, 2), (3, 0)], [(0, 4), (2, 2), (0, 0)]]
    features = torch.tensor(pixels, dtype=torch.float64).permute(0, 2, 1).unsqueeze(2)
    labels = torch.tensor([[[0, 1, 0]], [[1, 1, 2]]])
    sample = class_prototypes(features, labels, 3, pooling="sample", smoothing=0.5)
    # s0: (4,0)/2.5, (0,2)/1.5, absent; s1: absent, (2,6)/2.5, (0,0)/1.5; mean over the two samples
    want = torch.tensor([[0.8, 0], [0.4, (2 / 1.5 + 2.4) / 2], [0, 0]], dtype=torch.float64)
    assert torch.allclose(sample, want, rtol=1e-12, atol=0)
    batch = class_prototypes(features, labels, 3, pooling="batch", smoothing=0.5)
    want = torch.tensor([[4 / 2.5, 0], [2 / 3.5, 8 / 3.5], [0, 0]], dtype=torch.float64)
    assert torch.allclose(batch, want, rtol=1e-12, atol=0)
    # None is the mean (the counts here are >= 1)
    assert torch.allclose(class_prototypes(features, labels, 3, pooling="sample", smoothing=None),
                          torch.tensor([[1, 0], [0.5, 2.5], [0, 0]], dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("divisor, smoothing", [("count", None), ("alhvr_code", 1e-5)])
def test_prototype_divisor_picks_the_smoothing(divisor, smoothing, monkeypatch):
    from semiseg.methods import alhvr

    seen, real = [], alhvr.class_prototypes

    def spy(*args, **kwargs):
        seen.append(kwargs["smoothing"])
        return real(*args, **kwargs)

    monkeypatch.setattr(alhvr, "class_prototypes", spy)
    tiny_method(prototype_divisor=divisor).training_step(StepContext(Step(5, 10), tiny_batch()))
    assert seen == [smoothing, smoothing]  # one set of prototypes per network


def test_prototype_similarity_is_cosine_and_zero_for_an_absent_class():
    features = t([[1, 0], [0, 2]]).T.reshape(1, 2, 1, 2)  # pixels (1,0) and (0,2)
    prototypes = t([[2, 0], [1, 1], [0, 0]])
    sim = prototype_similarity(features, prototypes)
    r = 1 / math.sqrt(2)
    assert sim.shape == (1, 3, 1, 2)
    assert torch.allclose(sim[0, :, 0], t([[1, 0], [r, r], [0, 0]]))
    assert torch.allclose(prototype_similarity(features, prototypes, scale=2.0), 2 * sim)


# ----------------------------------------------------------------------------- CG-CPCL
def test_cg_cpcl_terms_by_hand():
    sim = t([[0.8, 0.2, -0.5], [0.1, 0.6, 0.5]]).reshape(1, 2, 1, 3)  # (B, C, H, W)
    target = torch.tensor([[[0, 1, 1]]])
    mask = torch.tensor([[[True, True, False]]])
    ce0, ce1 = math.log1p(math.exp(-0.7)), math.log1p(math.exp(-0.4))  # CE of pixels 0 and 1
    ce, cos = cg_cpcl_terms(sim, target, mask)  # the public code's reductions
    assert ce.item() == pytest.approx((ce0 + ce1) / 2, rel=1e-5)
    # mean over classes of 1 - sim: 0.55, 0.6 (and 1.0, masked); divided by all 3 pixels
    assert cos.item() == pytest.approx((0.55 + 0.6) / 3, rel=1e-5)
    _, cos = cg_cpcl_terms(sim, target, mask, cos_reduction="region")
    assert cos.item() == pytest.approx(0.575, rel=1e-5)
    _, cos = cg_cpcl_terms(sim, target, mask, cosine="target", cos_reduction="region")
    assert cos.item() == pytest.approx((0.2 + 0.4) / 2, rel=1e-5)
    empty = torch.zeros_like(mask)
    assert all(v.item() == 0 for v in cg_cpcl_terms(sim, target, empty))


def test_cg_cpcl_ce_batch_broadcast_pairs_every_mask_with_every_ce_by_hand():
    # Two samples of two pixels, two classes, target 0, logits [0, ln k] -> CE = ln(1 + k):
    # sample 0: ln 2, ln 3; sample 1: ln 5, ln 4. Ω2 masks: sample 0 pixel 0, sample 1 pixel 1.
    k = t([[1, 2], [4, 3]])
    sim = torch.stack([torch.zeros_like(k), k.log()], dim=1).unsqueeze(2)  # (B=2, C=2, H=1, W=2)
    target = torch.zeros(2, 1, 2, dtype=torch.long)
    mask = torch.tensor([[[True, False]], [[False, True]]])
    ce, _ = cg_cpcl_terms(sim, target, mask)
    assert ce.item() == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-6)  # 1.0397, each sample its own
    # The public code: pixel 0 has masks (1 + 0) times CEs (ln 2 + ln 5), pixel 1 (0 + 1)(ln 3 + ln 4),
    # over Σ mask = 2: ln(2·3·4·5) / 2 = 2.3937
    paired, _ = cg_cpcl_terms(sim, target, mask, ce_broadcast=True)
    assert paired.item() == pytest.approx(math.log(120) / 2, rel=1e-6)
    assert paired.item() == pytest.approx(2.3937, abs=1e-4)
    # the same as writing out the (B, B, H, W) broadcast of a (B, 1, H, W) mask with a (B, H, W) map
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(3, 4, 5, 6, generator=g)
    target = torch.randint(0, 4, (3, 5, 6), generator=g)
    mask = torch.rand(3, 5, 6, generator=g) > 0.5
    ce_map = torch.nn.functional.cross_entropy(sim, target, reduction="none")
    m = mask.unsqueeze(1).float()
    assert (m * ce_map).shape == (3, 3, 5, 6)
    written_out = (m * ce_map).sum() / (m.sum() + 1e-16)
    assert cg_cpcl_terms(sim, target, mask, ce_broadcast=True)[0].item() == pytest.approx(written_out.item(), rel=1e-5)
    # one unlabeled image: no difference
    one = [x[:1] for x in (sim, target, mask)]
    assert cg_cpcl_terms(*one, ce_broadcast=True)[0].item() == pytest.approx(cg_cpcl_terms(*one)[0].item(), rel=1e-6)


def test_ce_batch_broadcast_changes_the_cg_cpcl_ce_only():
    def step(broadcast):
        torch.manual_seed(0)  # same weights, same perturbation draws
        m = tiny_method(ce_batch_broadcast=broadcast)
        m.train()
        return m.training_step(StepContext(Step(5, 10), tiny_batch())).terms

    own, paired = step(False), step(True)
    for name in ("pc_ce_a", "pc_ce_b"):
        assert own[name].item() != pytest.approx(paired[name].item(), rel=1e-3)
    for name in ("pc_cos_a", "pc_cos_b", "mh_mse_a", "mh_ent_b", "ce_a", "dice_b"):
        assert own[name].item() == pytest.approx(paired[name].item(), rel=1e-6)


def test_both_cg_cpcl_terms_cross_the_networks_by_hand():
    """A's perturbed features against B's prototypes and pseudo label, where A learns from B."""
    m = tiny_method(prototype_pooling="batch")
    fa, fb = t([[5, 5], [5, -5]]), t([[1, 0], [0, 1]])          # clean features, pixels x D
    fa_p, fb_p = t([[1, 1], [0, 3]]), t([[7, 7], [7, 7]])        # perturbed features

    def as_map(rows):  # pixels x D -> (B, D, H, W)
        return rows.T.reshape(1, 2, 1, 2)

    probs_a = t([[0.3, 0.7], [0.6, 0.4]]).T.reshape(1, 2, 1, 2)  # A's pseudo label [1, 0]
    probs_b = t([[0.9, 0.1], [0.2, 0.8]]).T.reshape(1, 2, 1, 2)  # B's pseudo label [0, 1]
    branches = [Branch(None, None, as_map(fa), as_map(fa_p)), Branch(None, None, as_map(fb), as_map(fb_p))]
    regions = Regions(gamma=torch.tensor(0.5), reliable=(torch.tensor([[[False, False]]]),
                                                         torch.tensor([[[True, True]]])))
    m.num_classes = 2
    out = m.cg_cpcl(branches, [probs_a, probs_b], regions, 0, NORMALIZE["reference"])
    # B's prototypes: (1,0), (0,1). A's perturbed pixels (1,1), (0,3): sim [.707, .707], [0, 1]
    r = 1 / math.sqrt(2)
    assert out["pc_ce_a"].item() == pytest.approx((math.log(2) + math.log1p(math.exp(-1))) / 2, rel=1e-5)
    assert out["pc_cos_a"].item() == pytest.approx(((1 - r) + 0.5) / 2, rel=1e-5)
    # B is reliable everywhere: it learns nowhere, so its terms are exactly zero
    assert out["pc_ce_b"].item() == 0 and out["pc_cos_b"].item() == 0


# ----------------------------------------------------------------------------- DTCT
def test_dtct_teacher_is_the_more_confident_unperturbed_prediction():
    pa = t([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]]).T.reshape(1, 2, 3)
    pb = t([[0.2, 0.8], [0.05, 0.95], [0.3, 0.7]]).T.reshape(1, 2, 3)
    teacher = dtct_teacher(pa, pb)
    # max: A 0.9 / 0.6 / 0.7, B 0.8 / 0.95 / 0.7 -> A, B, and B on the tie
    assert torch.allclose(teacher[0].T, t([[0.9, 0.1], [0.05, 0.95], [0.3, 0.7]]))


def test_dtct_sharpened_mse_and_masked_entropy_by_hand():
    m = tiny_method()
    # two pixels; Ω3 = pixel 0 only (neither network reliable there)

    def as_map(rows):  # pixels x classes -> (B, C, H, W)
        return t(rows).T.reshape(1, 2, 1, 2)

    pa, pb = as_map([[0.5, 0.5], [0.9, 0.1]]), as_map([[0.6, 0.4], [0.1, 0.9]])
    pa_p, pb_p = as_map([[0.8, 0.2], [0.5, 0.5]]), as_map([[0.5, 0.5], [0.3, 0.7]])
    regions = Regions(gamma=torch.tensor(0.5), reliable=(torch.tensor([[[False, True]]]),
                                                         torch.tensor([[[False, True]]])))
    out = m.dtct([pa, pb], [pa_p, pb_p], regions, NORMALIZE["reference"])
    # pixel 0: teacher = B's [0.6, 0.4]; sharpened with T = 0.1: 0.6^10 / (0.6^10 + 0.4^10)
    s = 0.6 ** 10 / (0.6 ** 10 + 0.4 ** 10)
    assert s == pytest.approx(0.982954, abs=1e-6)

    def mse(p):  # summed over the classes
        return (p[0] - s) ** 2 + (p[1] - (1 - s)) ** 2

    assert out["mh_mse_a"].item() == pytest.approx(mse([0.8, 0.2]), rel=1e-4)  # averaged over Ω3
    assert out["mh_mse_b"].item() == pytest.approx(mse([0.5, 0.5]), rel=1e-4)

    def h(p):
        return -sum(q * math.log(q) for q in p)

    # entropy of ŷ_a1 and ŷ_a2 on Ω3, divided by all 2 pixels (the public code's reduction)
    assert out["mh_ent_a"].item() == pytest.approx((h([0.5, 0.5]) + h([0.8, 0.2])) / 2, rel=1e-4)
    out = m.dtct([pa, pb], [pa_p, pb_p], regions, NORMALIZE["region"])
    assert out["mh_ent_b"].item() == pytest.approx(h([0.6, 0.4]) + h([0.5, 0.5]), rel=1e-4)


def test_dtct_sharpening_elementwise_and_distribution_differ_for_three_classes():
    # One pixel in Ω3; teacher = A's [0.5, 0.3, 0.2] (more confident than B's); T = 0.5.
    # elementwise: p^2 / (p^2 + (1 - p)^2) = [0.5, 0.09/0.58, 0.04/0.68] (sums to 0.714, not 1);
    # distribution: p^2 / Σ p^2 = [0.25, 0.09, 0.04] / 0.38. (With two classes they coincide.)
    def as_map(p):
        return t(p).reshape(1, 3, 1, 1)

    pa, pb = as_map([0.5, 0.3, 0.2]), as_map([0.4, 0.35, 0.25])
    pa_p, pb_p = as_map([0.6, 0.3, 0.1]), as_map([1 / 3, 1 / 3, 1 / 3])
    regions = Regions(gamma=torch.tensor(0.9), reliable=(torch.tensor([[[False]]]), torch.tensor([[[False]]])))

    def mse(p, q):  # summed over the classes
        return sum((a - b) ** 2 for a, b in zip(p, q))

    elementwise = [0.5, 0.09 / 0.58, 0.04 / 0.68]
    distribution = [0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38]
    expected = {"elementwise": (mse([0.6, 0.3, 0.1], elementwise), mse([1 / 3] * 3, elementwise)),
                "distribution": (mse([0.6, 0.3, 0.1], distribution), mse([1 / 3] * 3, distribution))}
    assert expected["elementwise"][0] == pytest.approx(0.0326705, abs=1e-6)
    assert expected["distribution"][0] == pytest.approx(0.0073684, abs=1e-6)
    for how, (a, b) in expected.items():
        m = tiny_method(sharpen=how, temperature=0.5)
        out = m.dtct([pa, pb], [pa_p, pb_p], regions, NORMALIZE["reference"])
        assert out["mh_mse_a"].item() == pytest.approx(a, rel=1e-5), how
        assert out["mh_mse_b"].item() == pytest.approx(b, rel=1e-5), how


def test_reduce_region_choices():
    loss, mask = t([1.0, 2.0, 3.0, 4.0]), torch.tensor([True, False, True, False])
    assert reduce_region(loss, mask, "region").item() == pytest.approx(2.0)
    assert reduce_region(loss, mask, "all_pixels").item() == pytest.approx(1.0)
    assert reduce_region(loss, torch.zeros(4, dtype=torch.bool), "region").item() == 0.0


# ----------------------------------------------------------------------------- gradients and switches
def _grads(term, module):
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def test_unsupervised_terms_reach_each_networks_gradient():
    torch.manual_seed(0)
    m = tiny_method()
    m.train()
    losses = m.training_step(StepContext(Step(0, 10), tiny_batch()))
    assert losses.stats["omega2"] > 0 and losses.stats["omega3"] > 0, "the test needs non-empty Ω2 and Ω3"
    for i, name in enumerate("ab"):
        for term in ("pc_ce", "pc_cos", "mh_mse", "mh_ent"):
            g = _grads(losses.terms[f"{term}_{name}"], m.models[i])
            assert torch.isfinite(g).all() and g.abs().sum() > 0, f"{term}_{name} gives network {name} no gradient"
    sup = sum(v for k, v in losses.terms.items() if k.startswith(("ce_", "dice_")))
    unsup = sum(v for k, v in losses.terms.items() if k.startswith(("pc_", "mh_")))
    weight = 0.1 * math.exp(-5)  # λ at step 0 of a full-length ramp
    assert losses.stats["lambda"] == pytest.approx(weight)
    assert losses.total.item() == pytest.approx((sup + weight * unsup).item(), rel=1e-6)


@pytest.mark.parametrize("cg_cpcl, dtct", [(False, True), (True, False), (False, False)])
def test_ablation_switches_remove_their_terms_and_gradient(cg_cpcl, dtct):
    torch.manual_seed(0)
    m = tiny_method(cg_cpcl=cg_cpcl, dtct=dtct)
    m.train()
    losses = m.training_step(StepContext(Step(5, 10), tiny_batch()))
    names = set(losses.terms)
    assert any(n.startswith("pc_") for n in names) == cg_cpcl
    assert any(n.startswith("mh_") for n in names) == dtct
    # the total's gradient is exactly that of the terms still present: nothing else contributes
    kept = sum(v if k.startswith(("ce_", "dice_")) else losses.stats["lambda"] * v
               for k, v in losses.terms.items())
    for net in m.models:
        assert torch.allclose(_grads(losses.total, net), _grads(kept, net), atol=1e-7)


def test_cps_regions_drops_exactly_the_chosen_regions():
    def step(drop):
        torch.manual_seed(3)  # same weights and the same perturbation draw, hence the same regions
        m = tiny_method("cps_regions", drop_regions=drop)
        m.train()
        return m, m.training_step(StepContext(Step(0, 10), tiny_batch()))

    _, full = step([])
    _, no_r1 = step(["R1"])
    _, only_r1 = step(["R2", "R3"])
    assert 0 < no_r1.stats["kept"] < 1 and no_r1.stats["kept"] + only_r1.stats["kept"] == pytest.approx(1.0)
    for name in ("cps_a", "cps_b"):  # all_pixels: the kept regions' shares add up to plain CPS
        assert (no_r1.terms[name] + only_r1.terms[name]).item() == pytest.approx(full.terms[name].item(), rel=1e-5)
    m, losses = step(["R3"])
    # each CPS term trains its own network only: the pseudo label is the other's, detached
    assert _grads(losses.terms["cps_a"], m.models[0]).abs().sum() > 0
    assert _grads(losses.terms["cps_a"], m.models[1]).abs().sum() == 0
    assert _grads(losses.terms["cps_b"], m.models[1]).abs().sum() > 0


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return _tiny_store(tmp_path_factory.mktemp("alhvr") / "store.h5")


@pytest.mark.parametrize("algorithm, params", [("alhvr", ALHVR_DEFAULTS),
                                               ("cps_regions", {**CPS_REGIONS_DEFAULTS, "drop_regions": ["R1"]})])
def test_tiny_training_run(tmp_path, tiny_data, algorithm, params):
    store, split = tiny_data
    summary = train(_spec(algorithm, iterations=2, params=params, val_interval=2), store, split,
                    tmp_path / "run", progress=False)
    assert summary["iterations"] == 2 and (tmp_path / "run" / "model.pt").exists()
    header = (tmp_path / "run" / "train.csv").read_text().splitlines()[0].split(",")
    expected = {"alhvr": ["pc_ce_a", "pc_cos_b", "mh_mse_a", "mh_ent_b"], "cps_regions": ["cps_a", "cps_b"]}
    assert {"ce_a", "dice_b", "gamma", "omega2", *expected[algorithm]} <= set(header)


def test_region_figure_draws_a_png(tmp_path, tiny_data):
    from semiseg.reporting.figures import region_figure

    store, split = tiny_data
    spec = _spec("alhvr", params=ALHVR_DEFAULTS)
    ds = spec["dataset"]
    torch.manual_seed(0)
    method = build_method(spec, lambda: build_network("unet", in_channels=1, num_classes=ds["num_classes"], dims=2))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"spec": spec}))
    with pytest.raises(FileNotFoundError, match="models.pt"):
        region_figure(run, store, split, tmp_path / "fig.png")
    torch.save(method.models.state_dict(), run / "models.pt")
    out = region_figure(run, store, split, tmp_path / "figs" / "regions.png", n_slices=3)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "figs").glob(".*"))  # no temporary file left behind


# ----------------------------------------------------------------------------- catalogue
def test_the_code_entry_takes_the_code_s_four_switches_and_is_a_row_of_table_2():
    cfg = load_config(root=REPO)
    code, paper = (run_spec(cfg, "acdc", m, 10, 0) for m in ("alhvr_code", "alhvr"))
    assert {k: v for k, v in code["method"]["params"].items() if paper["method"]["params"][k] != v} == {
        "dice_form": "alhvr_code", "prototype_features": "up2_projection", "prototype_divisor": "alhvr_code",
        "ce_batch_broadcast": True}
    assert code["schedule"] == paper["schedule"] and code["method"]["network"] == "unet"
    assert {(m, r) for _d, m, r, _s in table_runs(cfg, "alhvr_acdc") if m.startswith("alhvr")} == {
        ("alhvr", 10), ("alhvr", 20), ("alhvr_code", 10)}
    # the four together run a step on a U-Net
    spec = {"dataset": {"num_classes": 3, "dims": 2},
            "method": {"algorithm": "alhvr", "params": code["method"]["params"]}}
    torch.manual_seed(0)
    m = build_method(spec, lambda: UNet(1, 3, channels=(4, 8, 16, 32), dropout=(0, 0, 0, 0)))
    assert math.isfinite(m.training_step(StepContext(Step(5, 10), tiny_batch())).total.item())


def test_catalogue_entries_and_tables(tmp_path):
    root = tmp_path / "wf"
    shutil.copytree(REPO / "workflow", root / "workflow")
    shutil.copytree(REPO / "config", root / "config")
    if not (root / "config" / "datasets" / "acdc.yaml").exists():  # until the ACDC entry lands
        write_yaml(root / "config" / "datasets" / "acdc_stub.yaml", {"acdc": {
            "description": "stub", "source": {"layout": "slices"}, "dims": 2, "network": "unet",
            "labels": {"background": 0, "RV": 1, "Myo": 2, "LV": 3},
            "ratios": {"5": 3, "10": 7, "20": 14, "100": 70}, "patch_size": [256, 256]}})
    cfg = load_config(yaml.safe_load((root / "config" / "config.yaml").read_text()), root=root)
    methods = cfg["methods"]
    baseline = methods["alhvr_baseline"]["params"]
    assert baseline["cg_cpcl"] is False and baseline["dtct"] is False
    assert [methods[f"alhvr_beta_0{b}"]["params"]["beta"] for b in (5, 6, 7, 9)] == [0.5, 0.6, 0.7, 0.9]
    drops = sorted(tuple(e["params"]["drop_regions"]) for e in methods.values() if e["algorithm"] == "cps_regions")
    assert drops == [(), ("R1",), ("R1", "R2"), ("R1", "R3"), ("R2",), ("R2", "R3"), ("R3",)]
    paper = {**cfg, "settings": {**cfg["settings"], "schedule": "paper"}}
    sched = run_spec(paper, "acdc", "alhvr", 10, 0)["schedule"]
    assert (sched["labeled_batch_size"], sched["unlabeled_batch_size"]) == (8, 8)
    for table in ("alhvr_acdc", "alhvr_ablation", "alhvr_beta", "alhvr_regions"):
        assert cfg["tables"][table]["dataset"] == "acdc" and table_runs(cfg, table)
