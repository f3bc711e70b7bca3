"""The replay of SS-Net's 2D script (ycwu1997/SS-Net ``code/train_ss_2d.py``, the record
``tests/parity/records/ss_net.json`` made by ``benchmarks/parity_record.py --ss-net``) with the
``ss_net`` catalogue entry, through the engine's own iteration: the network, its heads and the
feature memory, the virtual adversarial direction, the Dice, both class-separation terms, the
staircase weight and the constant lr must follow the record at every iteration, and the final
weights at the end (relative 1e-6, float64). The record mends the code's two memory bugs, which
the project does not reproduce (see the record's ``setup.mends``)."""

from __future__ import annotations

from parity.inputs import PerturbStream
from semiseg.methods import ss_net
from test_parity_trajectories import mismatches, ramp_params, record, replay, weight_mismatches


def test_ss_net_follows_the_ss_net_2d_script(monkeypatch):
    rec = record("ss_net")
    s = rec["setup"]
    stream = PerturbStream(s["direction_seed"])  # VAT's initial U(0, 1) direction, one draw per step
    monkeypatch.setattr(ss_net, "_uniform_direction", lambda shape, generator: stream.tensor(shape))
    rows, method = replay(rec, "ss_net", ramp_params(s), {"models": s["init_seed"]}, monkeypatch=monkeypatch)
    bad = mismatches(rows, rec, {k: k for k in ("lr", "total", "dice", "lds", "sep_l", "sep_u", "consistency_weight")})
    bad += weight_mismatches(method.models, rec["final"]["model"])
    assert not bad, "\n".join(bad[:12])
