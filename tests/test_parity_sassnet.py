"""Replay of SASSNet's official trajectory (``tests/parity/records/sassnet.json``, kleinzcy/SASSnet
``code/train_gan_sdfloss.py``) with the ``sassnet`` catalogue entry on Left Atrium's spec, through
the engine's own iteration and its second phase (the discriminator's own Adam step): every
iteration's lr, total loss, Dice, signed-distance MSE, adversarial term, the weight of the ramp and
the discriminator's loss, and the final weights of the network and of the discriminator, to a
relative 1e-6 in float64 (the harness of tests/test_parity_dtc.py).
"""

from __future__ import annotations

from test_parity_dtc import code_order, final_mismatches, replay_sdf
from test_parity_trajectories import mismatches, record


def test_sassnet_follows_the_sassnet_script():
    rec = record("sassnet")
    rows, method = replay_sdf(rec, "sassnet")
    bad = mismatches(rows, rec, {k: k for k in ("lr", "total", "dice", "sdf", "adversarial", "consistency_weight",
                                                "discriminator_loss")})
    bad += final_mismatches("network", code_order(method.net), rec["final"]["network"])
    bad += final_mismatches("discriminator", method.discriminator, rec["final"]["discriminator"])
    assert not bad, "\n".join(bad[:12])
