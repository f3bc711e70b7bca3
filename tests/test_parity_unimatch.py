"""Replay of UniMatch's official trajectory (``tests/parity/records/unimatch.json``, made by
``benchmarks/parity_record.py --unimatch`` from LiheYoung/UniMatch ``more-scenarios/medical/unimatch.py``)
through the engine's own iteration: every iteration's lr, total, CE, Dice, both strong views'
terms, the feature-perturbation term and the mask ratio, and the final weights, to a relative 1e-6.

The strong views and CutMix boxes (PIL in the code's dataset) are the record's stand-ins on both
sides, the channel-dropout masks of the feature perturbation come from one stream on both sides;
the encoder's dropout draws from the global generator, seeded per iteration, as in the other records.
"""

from __future__ import annotations

from parity.inputs import PerturbStream, box_stand_in, strong_stand_in
from test_parity_trajectories import mismatches, record, replay, weight_mismatches

import semiseg.methods.unimatch as unimatch


def _replay(monkeypatch, **params) -> list[str]:
    rec = record("unimatch")
    s = rec["setup"]
    calls = {"view": 0, "box": 0}

    def view(x, generator):
        calls["view"] += 1
        return strong_stand_in(x, s["view_seed"], calls["view"] - 1)

    def boxes(n, height, width, generator):
        calls["box"] += 1
        return box_stand_in(n, height, width, s["view_seed"], calls["box"] - 1)

    stream = PerturbStream(s["fp_seed"])

    def fp_dropout(x, p, generator):
        keep = (stream.tensor(x.shape[:2]) >= p).to(x.dtype)
        return x * (keep / (1 - p)).view(*x.shape[:2], *([1] * (x.dim() - 2)))

    monkeypatch.setattr(unimatch, "strong_view", view)
    monkeypatch.setattr(unimatch, "cutmix_boxes", boxes)
    monkeypatch.setattr(unimatch, "channel_dropout", fp_dropout)
    rows, method = replay(rec, "unimatch", {"conf_thresh": s["conf_thresh"], **params},
                          {"models.0": s["init_seed"]}, monkeypatch=monkeypatch)
    bad = mismatches(rows, rec, {k: k for k in ("lr", "total", "ce", "dice", "strong1", "strong2", "fp",
                                                "mask_ratio")})
    return bad + weight_mismatches(method.models[0], rec["final"]["model"])


def test_unimatch_follows_its_medical_script(monkeypatch):
    bad = _replay(monkeypatch)
    assert not bad, "\n".join(bad[:12])

