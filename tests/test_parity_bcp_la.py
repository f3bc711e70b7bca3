"""Replay of BCP's Left Atrium trajectory (``tests/parity/records/bcp_la.json``,
DeepMed-Lab-ECNU/BCP ``code/LA_BCP_train.py``) with the ``bcp`` catalogue entry on Left Atrium's
spec (its ``datasets: la`` settings), through the engine's own iteration: pre-training, the
hand-off with a fresh optimiser, self-training with the step lr and the EMA teacher; every
iteration's lr, total loss, CE and Dice, and the final student's and teacher's weights, to a
relative 1e-6 in float64 (the harness of tests/test_parity_mcf.py, with BCP's paste-block
corners from the record's stream as tests/test_parity_trajectories.py replays the ACDC script).
"""

from __future__ import annotations

from parity.inputs import seeded_init, shapes_digest
from semiseg.config import load_config, run_spec
from test_parity_mcf import _FixedVolumes, official_order
from test_parity_trajectories import engine_run, iterate, mismatches, paste_corners, record, weight_mismatches


def _replay_bcp_la(monkeypatch, upto: int | None = None, **switches) -> list[str]:
    """Where the replay leaves the record, over its first ``upto`` iterations (None: all, and the
    final weights)."""
    rec = record("bcp_la")
    s = rec["setup"]
    spec = run_spec(load_config(), "la", "bcp", 10, 0)
    spec["method"]["params"].update(pretrain_fraction=s["pretrain_iterations"] / s["iterations"], **switches)
    spec["schedule"].update({"iterations": s["iterations"], "labeled_batch_size": s["labeled_bs"],
                             "unlabeled_batch_size": s["unlabeled_bs"], "lr_step_every": s["lr_step_every"]})

    def init(m):
        student = official_order(m.student)
        assert shapes_digest(student) == s["shapes"], "not the recorded network's shapes"
        seeded_init(student, s["init_seed"])
    run = engine_run(spec, init, (_FixedVolumes(0, s), _FixedVolumes(1, s)))
    paste_corners(monkeypatch, s["mask_seed"])  # the paste block's corners, as the record drew them
    rows = iterate(run, s["rng_seed"], upto)
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
