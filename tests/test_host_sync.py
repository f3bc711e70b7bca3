"""One host synchronisation per step: a method's training step reads nothing from the device.

The engine reads the loss terms and the tensors of the statistics channel in one transfer
(``engine.loop._loss_values``); a step that calls ``.item()``, ``float(t)``, ``bool(t)`` (a Python
``if`` on a tensor), ``.tolist()``, ``.cpu()`` or ``nonzero`` waits for the device once more. On a
CPU nothing waits, so the guard counts the calls themselves: every Tensor method that brings data
to the host is wrapped while ``training_step(ctx)`` runs.
"""

from __future__ import annotations

import sys
from collections import Counter
from contextlib import contextmanager

import pytest
import torch

from helpers import tiny_step
from semiseg.methods import METHODS, bcp, caml, crln, ss_net
from semiseg.methods.common import pseudo, sdf
from semiseg.methods.crln import views
from semiseg.nets import perturb

# the Tensor methods that read data to the host (a Python ``if`` on a tensor is ``__bool__``)
READS = ("item", "__float__", "__bool__", "__int__", "__index__", "tolist", "cpu", "numpy", "nonzero")

# functions whose tensors are born on the host and read there, so no device is waited for: draws
# from the step's generator (the engine makes it on the CPU) or from the CPU's global one
HOST_SIDE = {
    perturb._uniform_scalar.__code__: "a U(low, high) draw for the feature perturbation",
    bcp.paste_mask.__code__: "the zero block's corner",
    views.strong_view.__code__: "CRLN's strong view: its scales, boxes, flips and photometric draws",
}

# methods whose algorithm needs the host: the functions that may read, why, and what the step
# may read outside them
EXCEPTIONS = {
    "bcp": ({pseudo.largest_connected_component.__code__}, Counter(),
            "the pseudo-label's largest connected component is labelled by scipy"),
    "buarl_bcp": ({pseudo.largest_connected_component.__code__}, Counter(),
                  "the pseudo-label's largest connected component is labelled by scipy"),
    "crln": ({crln.contrastive_loss.__code__}, Counter({"__int__": 1}),
             "the contrastive sampling draws a data-dependent number of pixels per class; the "
             "step's own stream is seeded by one int drawn from the host generator"),
    "caml": ({caml.Caml.remember.__code__, caml.Caml.omni_correlation.__code__}, Counter(),
             "the memory of labeled features keeps and draws a data-dependent number of voxels per class "
                        "(those predicted right), and the correlation's memory side is as long as the memory holds"),
    "dtc": ({sdf.sdf_targets.__code__}, Counter(),
            "the labels' signed distance maps are computed by scipy on the host, as the codes do"),
    "sassnet": ({sdf.sdf_targets.__code__}, Counter(),
                "the labels' signed distance maps are computed by scipy on the host, as the codes do"),
    "ss_net": ({ss_net.update_memory.__code__, ss_net.separation_loss.__code__}, Counter({"boolean mask": 2}),
               "the memory and the class-separation term take a data-dependent number of pixels per class "
               "(the labeled pixels predicted right: the step's two boolean masks)"),
}


def _within(codes) -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


@contextmanager
def host_reads(allowed=frozenset()):
    """Count the calls of :data:`READS` (and boolean-mask indexing, whose shape the host must
    learn) made on any tensor inside the block, but those within :data:`HOST_SIDE` or
    ``allowed`` (code objects); yields the :class:`Counter`."""
    counts: Counter = Counter()
    skip = set(HOST_SIDE) | set(allowed)
    names = READS + ("__getitem__",)
    own = {name: torch.Tensor.__dict__[name] for name in names if name in torch.Tensor.__dict__}
    saved = {name: getattr(torch.Tensor, name) for name in names}

    def counting(name):
        original = saved[name]

        def wrapper(self, *args, **kwargs):
            if not _within(skip):
                counts[name] += 1
            return original(self, *args, **kwargs)
        return wrapper

    def indexing(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts) and not _within(skip):
            counts["boolean mask"] += 1
        return saved["__getitem__"](self, index)

    try:
        for name in READS:
            setattr(torch.Tensor, name, counting(name))
        torch.Tensor.__getitem__ = indexing
        yield counts
    finally:
        for name in names:
            if name in own:
                setattr(torch.Tensor, name, own[name])
            else:
                delattr(torch.Tensor, name)


def _step_reads(algorithm: str, params: dict | None = None, allowed=frozenset()) -> Counter:
    m, ctx = tiny_step(algorithm, params)
    with host_reads(allowed) as counts:
        losses = m.training_step(ctx)
    losses.total.backward()
    with host_reads() as after:  # the second phase and the EMA read nothing either
        m.second_phase(ctx)
        m.after_optimizer_step(ctx)
    assert not after, f"{algorithm}'s post-step hooks read the device: {dict(after)}"
    return counts


def test_the_guard_counts_every_kind_of_read_and_puts_tensor_back():
    t = torch.ones(3)
    before = {name: getattr(torch.Tensor, name) for name in READS + ("__getitem__",)}
    with host_reads() as counts:
        t.sum().item(), float(t[0]), int(t[1]), t.tolist(), t.cpu(), t.nonzero(), t[t > 0], t.numpy()
        if t.any():
            pass
    assert counts == Counter({"item": 1, "__float__": 1, "__int__": 1, "tolist": 1, "cpu": 1,
                              "nonzero": 1, "boolean mask": 1, "__bool__": 1, "numpy": 1})
    with host_reads() as counts:
        perturb._uniform_scalar(0.0, 1.0, torch.Generator().manual_seed(0))
    assert not counts  # a draw from a host generator, read on the host
    assert {name: getattr(torch.Tensor, name) for name in before} == before


ALGORITHMS = sorted(k for k in METHODS if not k.startswith(("test_", "_test")))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_training_step_reads_nothing_from_the_device(algorithm):
    allowed, expected, reason = EXCEPTIONS.get(algorithm, (frozenset(), Counter(), ""))
    counts = _step_reads(algorithm, allowed=allowed)
    assert counts == expected, f"{algorithm}'s training step read the device: {dict(counts)}"
    if allowed:  # an exception still needs the host, or it is no longer one
        assert _step_reads(algorithm), f"{algorithm} is listed as needing the host ({reason}) but read nothing"


@pytest.mark.parametrize("algorithm, params", [
    ("alhvr", {"normalize": "region", "prototype_features": "up2_projection", "sharpen": "distribution"}),
    ("cps_regions", {"drop_regions": ["R1"], "normalize": "region"}),
    ("sgrs", {"mix_lambda": "sample", "pseudo_labels": "student", "omega_loss": "nr",
              "delta_rule": "background_band", "region_dice": "per_sample"}),
    ("sgrs", {"augment": "flip_h"}),
    ("ua_mt", {"uncertainty_max": "log_two"}),
])
def test_the_variants_read_nothing_either(algorithm, params):
    assert not _step_reads(algorithm, params)
