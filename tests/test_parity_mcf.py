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

import json
from pathlib import Path

import torch
from torch import nn

from parity.inputs import batch_at, seed_iteration, seeded_init, shapes_digest, volumes, weight_stats
from semiseg.config import load_config, run_spec
from semiseg.engine import loop
from semiseg.engine.state import ResumeState
from semiseg.methods import build_method
from semiseg.nets import VNet, network_for
from test_parity_trajectories import close, mismatches, record


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


class _FixedVolumes:
    """Stands in for the engine's resident set and sampler: iteration ``t``'s fixed volumes."""

    def __init__(self, part: int, setup: dict):
        self.part, self.setup = part, setup
        self.images, self.labels = volumes(setup["n_labeled"] + setup["n_unlabeled"], setup["depth"],
                                           setup["size"], setup["data_seed"])

    def indices(self, t: int) -> int:
        return t

    def batch(self, t: int, generator, with_label: bool):
        s = self.setup
        xl, yl, xu = batch_at(t, self.images, self.labels, s["n_labeled"], s["labeled_bs"], s["unlabeled_bs"])
        return (xl, yl) if self.part == 0 else (xu, None)


def replay_mcf(rec: dict) -> tuple[list[dict], object]:
    s = rec["setup"]
    spec = run_spec(load_config(), "la", "mcf", 10, 0)
    spec["method"]["params"].update(rampup_block=s["rampup_block"],
                                    consistency_rampup=s["consistency_rampup"] * s["rampup_block"] / s["iterations"])
    spec["schedule"].update({"iterations": s["iterations"], "labeled_batch_size": s["labeled_bs"],
                             "unlabeled_batch_size": s["unlabeled_bs"]})
    spec = json.loads(json.dumps(spec))
    run = loop._Run(spec, Path("."), Path("."), Path("/nonexistent-parity-replay"), sigterm=None)
    run.device, run.seed = torch.device("cpu"), 0
    run.method = build_method(spec, lambda: network_for(spec)).to(torch.float64)
    for k, (net, digest) in enumerate(zip(run.method.models, s["shapes"])):
        ordered = official_order(net)
        assert shapes_digest(ordered) == digest, f"network {k}: not the recorded network's shapes"
        seeded_init(ordered, s["init_seed"] + k)
    run.optimizers = loop.build_optimizers(run.method, run.sched)
    run.stages = sorted(run.method.stages(run.total), key=lambda st: st[1])
    run.labeled, run.unlabeled = _FixedVolumes(0, s), _FixedVolumes(1, s)
    run.lab_sampler, run.unl_sampler = run.labeled, run.unlabeled
    run.val_cases, run.progress = [], ResumeState()
    run.method.train()
    rows = []
    for t in range(run.total):
        seed_iteration(s["rng_seed"], t)
        rows.append(run._iteration(t, store=None))
    return rows, run.method


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
