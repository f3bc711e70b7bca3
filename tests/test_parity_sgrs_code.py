"""Replay of SGRS-Net's official trajectory (``tests/parity/records/sgrs_code.json``,
ortonwang/SGRS-Net ``code/train.py --dataset_name LA``) with the ``sgrs_code`` catalogue entry on
Left Atrium's spec, through the engine's own iteration: every iteration's lr, total loss,
supervised CE and Dice, the pseudo-label CE and Dice (the entry's ``con_*`` and ``nr_*`` terms
summed) and the ramp's weight, and the final student's and teacher's weights after both EMAs, to
a relative 1e-6 in float64 (the harness of tests/test_parity_mcf.py).

The record's random draws on both sides: the input noise from
:class:`~parity.inputs.NoiseStream` (call ``2t`` the unlabeled images', ``2t + 1`` the labeled
ones'), each mix's λ and the partners' permutation from a :class:`~parity.inputs.PerturbStream`
each, each network's dropout masks from its own (the code runs the teacher before the student,
the project after it).
"""

from __future__ import annotations

import torch

from parity.inputs import NoiseStream, PerturbStream, seeded_init, shapes_digest, stream_dropout
from semiseg.config import load_config, run_spec
from test_parity_mcf import _FixedVolumes, official_order
from test_parity_trajectories import engine_run, iterate, mismatches, record, weight_mismatches


class _Beta:
    """``torch.distributions.Beta`` whose samples are the record's λ stream's scalars."""

    def __init__(self, stream: PerturbStream):
        self.stream = stream

    def __call__(self, *args, **kwargs):
        return self

    def sample(self, shape=()):
        n = int(torch.Size(shape).numel())
        return torch.tensor([self.stream.scalar(0.0, 1.0) for _ in range(n)], dtype=torch.float64).reshape(shape)


def _replay_sgrs_code(monkeypatch, upto: int | None = None, **switches) -> list[str]:
    """Where the replay leaves the record, over its first ``upto`` iterations (None: all, and the
    final weights)."""
    rec = record("sgrs_code")
    s = rec["setup"]
    spec = run_spec(load_config(), "la", "sgrs_code", 10, 0)
    spec["method"]["params"].update(rampup_block=s["rampup_block"],
                                    consistency_rampup=s["consistency_rampup"] * s["rampup_block"] / s["iterations"],
                                    **switches)
    spec["schedule"].update({"iterations": s["iterations"], "labeled_batch_size": s["labeled_bs"],
                             "unlabeled_batch_size": s["unlabeled_bs"]})

    def init(m):
        for k, net in enumerate((m.student, m.teacher)):
            ordered = official_order(net)
            assert shapes_digest(ordered) == s["shapes"], "not the recorded network's shapes"
            seeded_init(ordered, s["init_seed"])
            stream_dropout(net, PerturbStream(s["dropout_seed"] + k))
    run = engine_run(spec, init, (_FixedVolumes(0, s), _FixedVolumes(1, s)))
    perm = PerturbStream(s["perm_seed"])
    monkeypatch.setattr(torch, "randn_like", NoiseStream(s["noise_seed"]))
    monkeypatch.setattr(torch.distributions, "Beta", _Beta(PerturbStream(s["beta_seed"])))
    monkeypatch.setattr(torch, "randperm", lambda n, **kwargs: perm.tensor((n,)).argsort())
    rows = iterate(run, s["rng_seed"], upto)
    for row in rows:
        row["unsup_ce"] = row.get("con_ce", 0.0) + row.get("nr_ce", 0.0)
        row["unsup_dice"] = row.get("con_dice", 0.0) + row.get("nr_dice", 0.0)
    rec["iterations"] = rec["iterations"][:len(rows)]
    bad = mismatches(rows, rec, {k: k for k in ("lr", "total", "ce", "dice", "unsup_ce", "unsup_dice",
                                                "consistency_weight")})
    if upto is not None:
        return bad
    bad += weight_mismatches(official_order(run.method.student), rec["final"]["student"])
    bad += weight_mismatches(official_order(run.method.teacher), rec["final"]["teacher"])
    return bad


def test_sgrs_code_follows_the_sgrs_script(monkeypatch):
    bad = _replay_sgrs_code(monkeypatch)
    assert not bad, "\n".join(bad[:12])


def test_sgrs_code_needs_the_code_s_loss_reduction(monkeypatch):
    """With the paper's sum of the unsupervised terms (``unsup_reduction: sum``) the replay leaves
    the record at its first step."""
    bad = _replay_sgrs_code(monkeypatch, upto=1, unsup_reduction="sum")
    assert any(b.startswith("iteration 0: total") for b in bad)


def test_sgrs_code_needs_the_code_s_two_emas(monkeypatch):
    """With one Mean Teacher update per step (``double_ema: false``) instead of the code's two
    (WeightEMA, which also shrinks the student, then Mean Teacher's) the replay leaves the
    record at the second step."""
    bad = _replay_sgrs_code(monkeypatch, upto=2, double_ema=False)
    assert bad and all(b.startswith("iteration 1:") for b in bad)


def test_sgrs_code_needs_the_agreement_mask_of_the_ce(monkeypatch):
    """With L_con's CE on Ω only (``omega_ce: omega``) instead of the code's "argmaxes agree"
    (Δ included) the replay leaves the record at its first step."""
    bad = _replay_sgrs_code(monkeypatch, upto=1, omega_ce="omega")
    assert any(b.startswith("iteration 0: unsup_ce") for b in bad)
