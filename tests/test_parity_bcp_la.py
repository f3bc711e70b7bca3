"""Replay of BCP's Left Atrium trajectory (``tests/parity/records/bcp_la.json``,
DeepMed-Lab-ECNU/BCP ``code/LA_BCP_train.py``) with the ``bcp`` catalogue entry on Left Atrium's
spec (its ``datasets: la`` settings), through the engine's own iteration: pre-training, the
hand-off with a fresh optimiser, self-training with the step lr and the EMA teacher; every
iteration's lr, total loss, CE and Dice, and the final student's and teacher's weights, to a
relative 1e-6 in float64 (the harness of tests/test_parity_mcf.py, with BCP's paste-block
corners from the record's stream as tests/test_parity_trajectories.py replays the ACDC script).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from parity.inputs import PerturbStream, seed_iteration, seeded_init, shapes_digest
from semiseg.config import load_config, run_spec
from semiseg.engine import loop
from semiseg.engine.state import ResumeState
from semiseg.methods import build_method
from semiseg.nets import network_for
from test_parity_mcf import _FixedVolumes, official_order
from test_parity_trajectories import mismatches, record, weight_mismatches


def _replay_bcp_la(monkeypatch, upto: int | None = None, **switches) -> list[str]:
    """Where the replay leaves the record, over its first ``upto`` iterations (None: all, and the
    final weights)."""
    rec = record("bcp_la")
    s = rec["setup"]
    spec = run_spec(load_config(), "la", "bcp", 10, 0)
    spec["method"]["params"].update(pretrain_fraction=s["pretrain_iterations"] / s["iterations"], **switches)
    spec["schedule"].update({"iterations": s["iterations"], "labeled_batch_size": s["labeled_bs"],
                             "unlabeled_batch_size": s["unlabeled_bs"], "lr_step_every": s["lr_step_every"]})
    spec = json.loads(json.dumps(spec))
    run = loop._Run(spec, Path("."), Path("."), Path("/nonexistent-parity-replay"), sigterm=None)
    run.device, run.seed = torch.device("cpu"), 0
    run.method = build_method(spec, lambda: network_for(spec)).to(torch.float64)
    student = official_order(run.method.student)
    assert shapes_digest(student) == s["shapes"], "not the recorded network's shapes"
    seeded_init(student, s["init_seed"])
    run.optimizers = loop.build_optimizers(run.method, run.sched)
    run.stages = sorted(run.method.stages(run.total), key=lambda st: st[1])
    run.labeled, run.unlabeled = _FixedVolumes(0, s), _FixedVolumes(1, s)
    run.lab_sampler, run.unl_sampler = run.labeled, run.unlabeled
    run.val_cases, run.progress = [], ResumeState()
    run.method.train()
    corners, randint = PerturbStream(s["mask_seed"]), torch.randint

    def corner(low, high, size, generator=None, **kwargs):  # the paste block's corner, as the record drew it
        if tuple(size) == () and generator is None:
            return torch.tensor(corners.integer(low, high))
        return randint(low, high, size, generator=generator, **kwargs)
    monkeypatch.setattr(torch, "randint", corner)
    rows = []
    for t in range(run.total if upto is None else upto):
        seed_iteration(s["rng_seed"], t)
        rows.append(run._iteration(t, store=None))
    rec["iterations"] = rec["iterations"][:len(rows)]
    assert [int(r["stage"]) for r in rows] == [r["stage"] for r in rec["iterations"]]
    bad = mismatches(rows, rec, {k: k for k in ("lr", "total", "ce", "dice")})
    if upto is not None:
        return bad
    bad += weight_mismatches(official_order(run.method.student), rec["final"]["student"])
    bad += weight_mismatches(official_order(run.method.teacher), rec["final"]["teacher"])
    return bad


def test_bcp_la_follows_the_bcp_la_script(monkeypatch):
    bad = _replay_bcp_la(monkeypatch)
    assert not bad, "\n".join(bad[:12])


def test_bcp_la_needs_the_la_script_s_losses(monkeypatch):
    """With the ACDC script's losses (``script: acdc``: SSL4MIS's Dice, the two-region masked
    pre-training loss) the replay leaves the record at its first step."""
    bad = _replay_bcp_la(monkeypatch, upto=1, script="acdc")
    assert any(b.startswith("iteration 0: total") for b in bad)


def test_bcp_la_needs_a_fresh_optimiser_at_the_hand_off(monkeypatch):
    """Carrying the pre-training optimiser's momentum into self-training (``reset_optimizer:
    false``, the ACDC script) leaves the record at the second self-training step."""
    rec = record("bcp_la")
    first = rec["setup"]["pretrain_iterations"] + 1
    bad = _replay_bcp_la(monkeypatch, upto=first + 1, reset_optimizer=False)
    assert bad and all(b.startswith(f"iteration {first}:") for b in bad)
