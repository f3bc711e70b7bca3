"""Replay of CAML's official trajectory (``tests/parity/records/caml.json``, Herschel555/CAML
``code/train_caml.py``, its bug line mended) with the ``caml`` catalogue entry on Left Atrium's
spec, through the engine's own iteration: every iteration's lr, total loss, each network's Dice,
the mutual consistency, the omni-correlation term and both ramp weights, and the final weights,
to a relative 1e-6 in float64 (the harness of tests/test_parity_mcf.py).

Both sides run without dropout and draw the whole labeled memory of each class instead of a
random subset (the record's ``setup`` says why). The official model declares its parameters in
another order than :class:`~semiseg.nets.caml.CamlNet` (both encoders, the attention, both
decoders, then the heads; each V-Net stage beside its downsampling or upsampling):
:func:`official_order` lists ours in the official order, which is the name map of
:func:`~parity.inputs.seeded_init` and of the recorded final weights.
"""

from __future__ import annotations

import torch
from torch import nn

from parity.inputs import seeded_init, shapes_digest, weight_stats
from semiseg.config import load_config, run_spec
from test_parity_mcf import _FixedVolumes, _InOrder
from test_parity_trajectories import close, engine_run, iterate, mismatches, record


def official_order(net: nn.Module) -> _InOrder:
    """``net``'s (a CamlNet) parameters in the declaration order of the official ``CAML3d_v1``."""
    def encoder(name):
        return [f"{name}.encoder.{part}.{i}." for i in range(5) for part in ("stages", "down")]

    def decoder(name):
        stages = [f"{name}.decoder.{part}.{j}." for j in range(4) for part in ("up", "stages")]
        return stages + [f"{name}.decoder.out_conv."]

    heads = [f"heads.{k}.{part}." for k in range(2) for part in ("projection", "prediction")]
    prefixes = (encoder("vanilla") + encoder("auxiliary") + ["cma.intra.", "cma.inter."] + decoder("vanilla")
                + decoder("auxiliary") + heads)
    params = dict(net.named_parameters())
    order = [name for prefix in prefixes for name in params if name.startswith(prefix)]
    assert sorted(order) == sorted(params), "official_order misses or repeats a parameter"
    return _InOrder([(name, params[name]) for name in order])


def _whole_memory(self, per_class, generator):
    """The record's stand-in for the memory's draw: every stored feature of a class (None under ``per_class``)."""
    kept = [self.features[s, c, : min(int(n), self.features.shape[2])]
            for s in range(self.features.shape[0]) for c, n in enumerate(self.counts[s])]
    classes = self.features.shape[1]
    return [f if f.shape[0] >= per_class else None for f in (torch.cat(kept[c::classes]) for c in range(classes))]


def replay_caml(rec: dict) -> tuple[list[dict], object]:
    s = rec["setup"]
    spec = run_spec(load_config(), "la", "caml", 5, 0)
    spec["method"]["network_args"] = {"n_filters": s["n_filters"]}
    spec["method"]["params"].update(rampup_block=s["rampup_block"], feat_dim=s["feat_dim"],
                                    consistency_rampup=s["consistency_rampup"] * s["rampup_block"] / s["iterations"],
                                    memory_per_class=s["memory_num"],
                                    top_k=s["num_filtered"], memory_slots=s["n_labeled"],
                                    slot_capacity=s["size"] ** 2 * s["depth"])
    spec["schedule"].update({"iterations": s["iterations"], "lr": s["lr"], "labeled_batch_size": s["labeled_bs"],
                             "unlabeled_batch_size": s["unlabeled_bs"]})
    def init(method):
        net = method.models[0]
        ordered = official_order(net)
        assert shapes_digest(ordered) == s["shapes"], "not the recorded network's shapes"
        seeded_init(ordered, s["init_seed"])
        for m in net.modules():  # dropout off, as the record
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.p = 0.0
            if isinstance(m, nn.MultiheadAttention):
                m.dropout = 0.0
        method.memory.sample = _whole_memory.__get__(method.memory)
    run = engine_run(spec, init, (_FixedVolumes(0, s), _FixedVolumes(1, s)))
    return iterate(run, s["rng_seed"]), run.method


def test_caml_follows_the_caml_script():
    rec = record("caml")
    rows, method = replay_caml(rec)
    for row in rows:
        row["dice"] = row["dice_v"] + row["dice_a"]
    bad = mismatches(rows, rec, {k: k for k in ("lr", "total", "dice_v", "dice_a", "dice", "consistency", "occ",
                                                "consistency_weight", "occ_weight")})
    want = rec["final"]["model"]
    got = weight_stats(list(official_order(method.models[0]).named_parameters()), [t["index"] for t in want["tensors"]])
    bad += [f"final {k}: {got[k]!r} vs {want[k]!r}" for k in ("sum", "l2") if not close(got[k], want[k])]
    for g, w in zip(got["tensors"], want["tensors"]):
        bad += [f"{w['name']} {k}: {g[k]!r} vs {w[k]!r}" for k in ("shape", "sum", "l2", "checksum")
                if (g[k] != w[k] if k == "shape" else not close(g[k], w[k]))]
    assert not bad, "\n".join(bad[:12])
