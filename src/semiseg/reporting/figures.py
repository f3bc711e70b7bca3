"""Figures drawn from trained runs.

:func:`region_figure` is ALHVR's Figure 1 for one of our runs: for a few unlabeled slices, the
image, both networks' predictions and the map of the regions Ω1 (reliable stable), Ω2 (reliable
unstable) and Ω3 (unreliable stable) that the method trains on. It needs every network of the
run, so it reads ``models.pt`` (the state of the method's ``models`` list), not ``model.pt``
(the evaluated network alone).

Matplotlib is used through its object API (``matplotlib.figure.Figure``, Agg canvas): no pyplot
state, no display, nothing happens at import.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from semiseg.io import atomic_path
from semiseg.colours import LABEL_COLOURS as _CLASS_COLOURS

__all__ = ["REGION_COLOURS", "pick_slices", "region_figure", "region_maps"]

#: Ω1, Ω2, Ω3 (colour-blind-safe Okabe-Ito hues).
REGION_COLOURS = ("#009E73", "#E69F00", "#CC79A7")


def pick_slices(store, cases: list[str], n_slices: int, dataset: dict) -> tuple[np.ndarray, list[str]]:
    """``n_slices`` network inputs ``(n, C, *patch)`` from ``cases`` (C: the store's channels), and a
    caption for each.

    Deterministic: pick ``k`` is case ``floor(k·len(cases)/n_slices)`` of the split's list, so
    the picks spread over the list (different patients where there are enough); a case picked
    ``m`` times gives the slices at ``z·(j + 1)/(m + 1)``, ``j < m`` (its middle slice if once).
    2D: the slice is resized to the patch size as for training (cubic spline). 3D: the centre
    patch of the volume (zero-padded where smaller), of which the figure shows the middle slice.
    """
    from semiseg.data.store import channels_first
    from semiseg.engine.data import resize_slices

    if not cases:
        raise ValueError("the split has no unlabeled cases to draw")
    if n_slices < 1:
        raise ValueError(f"n_slices must be >= 1, got {n_slices}")
    picks: dict[str, int] = {}
    for k in range(n_slices):
        case = cases[k * len(cases) // n_slices]
        picks[case] = picks.get(case, 0) + 1
    patch = tuple(int(p) for p in dataset["patch_size"])
    inputs, captions = [], []
    for case, m in picks.items():
        volume = channels_first(store.read_image(case))
        depth = volume.shape[1]
        if int(dataset["dims"]) == 2:
            for j in range(m):
                z = min(depth - 1, int(depth * (j + 1) / (m + 1)))
                inputs.append(np.concatenate([resize_slices(channel[z:z + 1], None, patch)[0] for channel in volume]))
                captions.append(f"{case} z={z}")
        else:
            pads = [(max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2) for s, p in zip(volume.shape[1:], patch)]
            padded = np.pad(volume, [(0, 0), *pads])
            starts = [(s - p) // 2 for s, p in zip(padded.shape[1:], patch)]
            crop = padded[(slice(None), *(slice(s, s + p) for s, p in zip(starts, patch)))]
            for _ in range(m):  # one centre patch per case; repeats show the same patch
                inputs.append(crop.astype(np.float32))
                captions.append(f"{case} centre patch")
    return np.stack(inputs), captions


def region_maps(method, images: torch.Tensor, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Both networks' clean predictions and ALHVR's regions for a batch of images.

    ``method`` is a :class:`~semiseg.methods.common.dual_branch.DualBranch` (``alhvr``, ``cps_regions``) in
    eval mode. The feature perturbation is drawn from a generator seeded with ``seed`` inside a
    forked RNG, so the figure is reproducible and the caller's RNG state is untouched. γ is
    computed over the given images, as training computes it over a batch.

    Returns ``pred_a``, ``pred_b`` (label maps), ``regions`` (1/2/3 per pixel) and ``gamma``.
    """
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        branches = method.branches(images)
    probs_p = [torch.softmax(br.logits_p, dim=1) for br in branches]
    regions = method.split(probs_p)
    return {"pred_a": branches[0].logits.argmax(1), "pred_b": branches[1].logits.argmax(1),
            "regions": regions.label_map(), "gamma": regions.gamma}


def _show(x: np.ndarray) -> np.ndarray:
    """The 2D plane to draw: itself, or the middle z slice of a 3D patch."""
    return x if x.ndim == 2 else x[x.shape[0] // 2]


def _two_network_run(run_dir: Path):
    """The method of a finished two-network run, every network loaded (``models.pt``), in eval
    mode; and the run's spec."""
    from semiseg.methods import build_method
    from semiseg.methods.common.dual_branch import DualBranch
    from semiseg.nets import network_for

    with open(run_dir / "config.json") as fh:
        spec = json.load(fh)["spec"]
    weights = run_dir / "models.pt"
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: not found; the region figure needs every network of the run "
                                "(model.pt holds only the evaluated one)")
    method = build_method(spec, lambda: network_for(spec))
    if not isinstance(method, DualBranch):
        raise ValueError(f"{run_dir}: algorithm {spec['method']['algorithm']!r} has no ALHVR regions; "
                         "the region figure needs a two-network method (alhvr, cps_regions)")
    method.models.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    method.eval()
    return method, spec


def region_figure(run_dir, store, split, out_png, n_slices: int = 4) -> Path:
    """Draw ALHVR's Figure 1 for a finished run into ``out_png``; returns its path.

    Args:
        run_dir: a finished run of a two-network method (``alhvr``, ``cps_regions``): holds
            ``config.json`` (the resolved spec) and ``models.pt`` (the networks' weights).
        store: the dataset's ``store.h5``.
        split: the run's ``splits/<dataset>/<ratio>.json``; slices come from its unlabeled cases.
        out_png: the PNG to write (atomically: a temporary file, then a rename).
        n_slices: how many slices (rows).

    One row per slice: the image, network A's and network B's predictions over it, and the
    region map (Ω1 green, Ω2 orange, Ω3 pink) of the perturbed predictions' confidences with
    the run's β; γ is computed over the slices shown.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from semiseg.data.store import Store

    out_png = Path(out_png)
    method, spec = _two_network_run(Path(run_dir))
    ds = spec["dataset"]
    with open(split) as fh:
        cases = json.load(fh)["cases"]["unlabeled"]
    with Store(store) as st:
        images, captions = pick_slices(st, cases, n_slices, ds)
    maps = region_maps(method, torch.from_numpy(images))

    labels = sorted(ds["labels"].items(), key=lambda kv: kv[1])
    class_cmap = ListedColormap(["black", *_CLASS_COLOURS[: len(labels) - 1]])
    region_cmap = ListedColormap(REGION_COLOURS)
    rows = len(captions)
    fig = Figure(figsize=(4 * 2.4, rows * 2.4 + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 4, squeeze=False)
    for r in range(rows):
        image = _show(images[r, 0])  # the first input channel
        panels = [(None, "image"), (maps["pred_a"][r], "network A"), (maps["pred_b"][r], "network B"),
                  (maps["regions"][r], "Ω1 / Ω2 / Ω3")]
        for c, (layer, title) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(image, cmap="gray", interpolation="nearest")
            if layer is not None:
                layer = _show(layer.numpy())
                if c < 3:
                    shown = np.ma.masked_equal(layer, 0)
                    ax.imshow(shown, cmap=class_cmap, vmin=0, vmax=len(labels) - 1, alpha=0.55,
                              interpolation="nearest")
                else:
                    ax.imshow(layer - 1, cmap=region_cmap, vmin=0, vmax=2, alpha=0.6, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=10)
            if c == 0:
                ax.set_ylabel(captions[r], fontsize=8)
    handles = [Patch(color=col, label=name) for col, name in
               zip(_CLASS_COLOURS, [n for n, v in labels if v > 0])]
    handles += [Patch(color=col, label=name) for col, name in zip(REGION_COLOURS, (
        "Ω1 reliable stable", "Ω2 reliable unstable", "Ω3 unreliable stable"))]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    beta = spec["method"]["params"].get("beta")
    fig.suptitle(f"{spec['method']['name']} on {ds['name']}, {spec.get('ratio')}% labeled, seed {spec.get('seed')}: "
                 f"γ = {float(maps['gamma']):.3f} (β = {beta})", fontsize=10)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return out_png
