"""Replays of MC-Net's and MC-Net+'s 2D script (ycwu1997/MC-Net ``code/train_mcnet_2d.py``,
records ``tests/parity/records/mc_net_code.json`` and ``mc_net_plus_code.json``) with the
``mc_net_code`` / ``mc_net_plus_code`` catalogue entries, through the engine's own iteration
(see ``test_parity_trajectories``)."""

from __future__ import annotations

import pytest

import json

from test_parity_trajectories import acdc_spec, mismatches, ramp_params, record, replay, weight_mismatches


def _replay(monkeypatch, name: str, entry: str, **switches) -> list[str]:
    rec = record(name)
    s = rec["setup"]
    rows, method = replay(rec, entry, {**ramp_params(s), **switches}, {"models.0": s["init_seed"]},
                          monkeypatch=monkeypatch)
    bad = mismatches(rows, rec, {k: k for k in ("lr", "total", "dice", "consistency", "consistency_weight")})
    return bad + weight_mismatches(method.models[0], rec["final"]["model"])


@pytest.mark.parametrize("name", ["mc_net_code", "mc_net_plus_code"])
def test_mc_net_code_follows_the_2d_script(monkeypatch, name):
    """Decoders, sharpening, mutual consistency over the whole batch with its gradient through the
    sharpened targets, the script's Dice without the factor 2, its ramp counter and the constant
    lr agree at every one of 24 steps, and so do the final weights."""
    bad = _replay(monkeypatch, name, name)
    assert not bad, "\n".join(bad[:12])


def test_mc_net_departs_from_the_script_by_its_dice_only(monkeypatch):
    """The ``mc_net`` entry's Dice (with the factor 2) leaves the record; on ACDC the two
    entries differ in nothing else."""
    paper, code = json.loads(acdc_spec("mc_net")), json.loads(acdc_spec("mc_net_code"))
    for spec, name, dice in ((paper, "mc_net", "squared"), (code, "mc_net_code", "squared_code")):
        assert (spec["method"].pop("name"), spec["method"]["params"].pop("dice")) == (name, dice)
    assert paper["method"] == code["method"] and paper["schedule"] == code["schedule"]
    assert _replay(monkeypatch, "mc_net_code", "mc_net")
