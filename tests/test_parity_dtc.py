"""Replay of DTC's official trajectory (``tests/parity/records/dtc.json``, HiLab-git/DTC
``code/train_la_dtc.py``) with the ``dtc`` catalogue entry on Left Atrium's spec, through the
engine's own iteration: every iteration's lr, total loss, Dice, signed-distance MSE, dual-task
consistency and the weight of the ramp, and the network's final weights, to a relative 1e-6 in
float64 (the harness of tests/test_parity_mcf.py). 24 iterations: the ramp's ten 2-iteration
blocks and the lr's drop at iteration 16, at the script's ``--base_lr 0.001 --consistency 0.01``
(``DTC_ARGUMENTS`` in benchmarks/parity_record.py says why; the losses at the defaults' weight
are equal to the code's in tests/test_sdf_family.py).

The codes' ``networks/vnet_sdf.py`` declares the V-Net's parameters in its own order
(:func:`~test_parity_mcf.official_order`), then its two output convolutions, the tanh head
(``out_conv``) before the segmentation head (``out_conv2``): :func:`code_order` lists ours so.
"""

from __future__ import annotations

from parity.inputs import seeded_init, shapes_digest, weight_stats
from semiseg.config import load_config, run_spec
from semiseg.nets.sdf import SignedDistanceNet
from test_parity_mcf import _FixedVolumes, _InOrder, official_order
from test_parity_trajectories import close, engine_run, iterate, mismatches, record


def code_order(net: SignedDistanceNet) -> _InOrder:
    """``net``'s parameters in the declaration order of the codes' ``VNet`` of ``vnet_sdf.py``."""
    base = [(f"base.{name}", p) for name, p in official_order(net.base).named_parameters()]
    seg = [(name, p) for name, p in base if name.startswith("base.decoder.out_conv.")]
    head = [(f"sdf_head.{name}", p) for name, p in net.sdf_head.named_parameters()]
    return _InOrder([pair for pair in base if pair not in seg] + head + seg)


def replay_sdf(rec: dict, method: str) -> tuple[list[dict], object]:
    """Train catalogue entry ``method`` (``dtc``, ``sassnet``) on LA's spec for the record's setup:
    its ramp and lr step shortened as the record's edits shorten the script's, its widths."""
    s = rec["setup"]
    spec = run_spec(load_config(), "la", method, 10, 0)
    params = spec["method"]["params"]
    params.update(rampup_block=s["rampup_block"],
                  consistency_rampup=s["consistency_rampup"] * s["rampup_block"] / s["iterations"])
    if "discriminator_width" in params:
        params["discriminator_width"] = s["discriminator_width"]
    arguments = s.get("arguments", {})  # the script's arguments the record sets
    if "consistency" in arguments:
        params["consistency"] = arguments["consistency"]
    spec["method"]["network_args"]["n_filters"] = s["n_filters"]
    spec["schedule"].update({"iterations": s["iterations"], "labeled_batch_size": s["labeled_bs"],
                             "unlabeled_batch_size": s["unlabeled_bs"], "lr_step_every": s["lr_step_every"],
                             "lr": arguments.get("base_lr", spec["schedule"]["lr"])})

    def init(m):
        nets = [code_order(m.net)] + ([m.discriminator] if method == "sassnet" else [])
        for k, (net, digest) in enumerate(zip(nets, s["shapes"], strict=True)):
            assert shapes_digest(net) == digest, f"network {k}: not the recorded network's shapes"
            seeded_init(net, s["init_seed"] + k)
    run = engine_run(spec, init, (_FixedVolumes(0, s), _FixedVolumes(1, s)))
    return iterate(run, s["rng_seed"]), run.method


def final_mismatches(name: str, net, want: dict) -> list[str]:
    got = weight_stats(list(net.named_parameters()), [t["index"] for t in want["tensors"]])
    bad = [f"{name} final {k}: {got[k]!r} vs {want[k]!r}" for k in ("sum", "l2") if not close(got[k], want[k])]
    for g, w in zip(got["tensors"], want["tensors"]):
        bad += [f"{name} {w['name']} {k}: {g[k]!r} vs {w[k]!r}" for k in ("shape", "sum", "l2", "checksum")
                if (g[k] != w[k] if k == "shape" else not close(g[k], w[k]))]
    return bad


def test_dtc_follows_the_dtc_script():
    rec = record("dtc")
    rows, method = replay_sdf(rec, "dtc")
    bad = mismatches(rows, rec, {k: k for k in ("lr", "total", "dice", "sdf", "consistency", "consistency_weight")})
    bad += final_mismatches("network", code_order(method.net), rec["final"]["network"])
    assert not bad, "\n".join(bad[:12])
