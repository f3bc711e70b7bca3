"""URPC's record (SSL4MIS ``train_uncertainty_rectified_pyramid_consistency_2D.py``,
``tests/parity/records/urpc_code.json``) replayed with the ``urpc_code`` catalogue entry through
the engine's own iteration: same initial weights (every parameter but the script's unused
``out_conv_dp4``), batches, dropout masks and feature-perturbation draws. See
``tests/test_parity_trajectories.py`` for the harness and ``docs/fidelity.md`` for what it proves."""

from __future__ import annotations

from test_parity_trajectories import mismatches, ramp_params, record, replay, weight_mismatches


def _replay(monkeypatch, **switches):
    rec = record("urpc_code")
    s = rec["setup"]
    rows, method = replay(rec, "urpc_code", {**ramp_params(s), **switches}, {"models.0": s["init_seed"]},
                          monkeypatch=monkeypatch)
    bad = mismatches(rows, rec, {k: k for k in ("lr", "total", "ce", "dice", "consistency", "consistency_weight")})
    return bad + weight_mismatches(method.models[0], rec["final"]["model"])


def test_urpc_code_follows_ssl4mis(monkeypatch):
    bad = _replay(monkeypatch)
    assert not bad, "\n".join(bad[:12])


def test_the_paper_s_consistency_departs_from_the_record(monkeypatch):
    # the paper's KL(p_s || p_c) and class sum instead of the code's: the consistency differs from
    # the first step, and through the weight λ the total and the weights after it
    bad = _replay(monkeypatch, divergence="scale_mean", class_reduction="sum")
    assert any(line.startswith("iteration 0: consistency ") for line in bad)
    assert any("final weights" in line for line in bad)
