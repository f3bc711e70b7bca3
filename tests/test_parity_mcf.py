"""Replay of MCF's official trajectory (``tests/parity/records/mcf.json``, WYC-321/MCF
``code/train_MCF.py``) with the ``mcf`` catalogue entry on Left Atrium's spec, through the engine's
own iteration: every iteration's lr, total loss, each network's CE, Dice and CDR, the student's
term, the teacher chosen and the weight of the ramp, and both networks' final weights, to a
relative 1e-6 in float64 (the harness of tests/test_parity_trajectories.py, in 3D).

The official networks declare their parameters in another order than the project's (its V-Net
interleaves each encoder stage with its downsampling, its decoders each upsampling with its
stage): :func:`official_order` lists ours in the official order, which is the name map of
:func:`~parity.inputs.seeded_init` and of the recorded final weights.
"""

from __future__ import annotations

from torch import nn

from parity.inputs import seeded_init, shapes_digest, volumes, weight_stats
from semiseg.config import load_config, run_spec
from semiseg.nets import VNet
from test_parity_trajectories import _FixedStream, close, engine_run, iterate, mismatches, record


class _InOrder(nn.Module):
    """``named_parameters`` of another module in a given order (what :func:`seeded_init` and
    :func:`weight_stats` walk)."""

    def __init__(self, pairs: list[tuple[str, nn.Parameter]]):
        super().__init__()
        self.pairs = pairs

    def named_parameters(self, *args, **kwargs):
        return iter(self.pairs)

    def parameters(self, *args, **kwargs):
        return iter(p for _, p in self.pairs)


def official_order(net: nn.Module) -> _InOrder:
    """``net``'s parameters in the declaration order of the official V-Net / Resnet34."""
    decoder = [f"decoder.{part}.{j}." for j in range(4) for part in ("up", "stages")] + ["decoder.out_conv."]
    if isinstance(net, VNet):
        encoder = [f"encoder.{part}.{i}." for i in range(5) for part in ("stages", "down")]
    else:  # ResNetED: the encoder already declares its stem and blocks in the official order
        encoder = ["encoder."]
    params = dict(net.named_parameters())
    order = [name for prefix in encoder + decoder for name in params if name.startswith(prefix)]
    assert sorted(order) == sorted(params), "official_order misses or repeats a parameter"
    return _InOrder([(name, params[name]) for name in order])


class _FixedVolumes(_FixedStream):
    """:class:`_FixedStream` over the fixed volumes of :func:`~parity.inputs.volumes`."""

    def data(self, setup: dict):
        return volumes(setup["n_labeled"] + setup["n_unlabeled"], setup["depth"], setup["size"], setup["data_seed"])


def replay_mcf(rec: dict) -> tuple[list[dict], object]:
    s = rec["setup"]
    spec = run_spec(load_config(), "la", "mcf", 10, 0)
    spec["method"]["params"].update(rampup_block=s["rampup_block"],
                                    consistency_rampup=s["consistency_rampup"] * s["rampup_block"] / s["iterations"])
    spec["schedule"].update({"iterations": s["iterations"], "labeled_batch_size": s["labeled_bs"],
                             "unlabeled_batch_size": s["unlabeled_bs"]})

    def init(m):
        for k, (net, digest) in enumerate(zip(m.models, s["shapes"])):
            ordered = official_order(net)
            assert shapes_digest(ordered) == digest, f"network {k}: not the recorded network's shapes"
            seeded_init(ordered, s["init_seed"] + k)
    run = engine_run(spec, init, (_FixedVolumes(0, s), _FixedVolumes(1, s)))
    return iterate(run, s["rng_seed"]), run.method


def test_mcf_follows_the_mcf_script():
    rec = record("mcf")
    rows, method = replay_mcf(rec)
    bad = mismatches(rows, rec, {k: k for k in ("lr", "total", "ce_a", "dice_a", "cdr_a", "ce_b", "dice_b", "cdr_b",
                                                "cons", "teacher", "consistency_weight")})
    for net, name in zip(method.models, ("vnet", "resnet")):
        want = rec["final"][name]
        got = weight_stats(list(official_order(net).named_parameters()), [t["index"] for t in want["tensors"]])
        bad += [f"{name} final {k}: {got[k]!r} vs {want[k]!r}" for k in ("sum", "l2") if not close(got[k], want[k])]
        for g, w in zip(got["tensors"], want["tensors"]):
            bad += [f"{name} {w['name']} {k}: {g[k]!r} vs {w[k]!r}" for k in ("shape", "sum", "l2", "checksum")
                    if (g[k] != w[k] if k == "shape" else not close(g[k], w[k]))]
    assert not bad, "\n".join(bad[:12])
