"""BUARL's Figure 5 for one of our runs: the entropy of the trained network's prediction on a few
unlabeled slices, and the regions above its 95th, 97th and 99th percentiles (the uncertain
regions URL and CRL weight), from the run's evaluated network (``model.pt``).

The slices are picked as ALHVR's region figure picks them (:func:`~semiseg.reporting.figures.pick_slices`);
the entropy and the per-image percentile threshold are BUARL's own functions
(:mod:`semiseg.methods.buarl`), with the run's ``entropy`` form.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from semiseg.io import atomic_path

__all__ = ["ENTROPY_PERCENTILES", "entropy_figure", "entropy_regions"]

#: The percentiles of the paper's Figure 5.
ENTROPY_PERCENTILES = (95, 97, 99)
#: The uncertain pixels (above μ): the paper's green.
UNCERTAIN = "#009E73"


def entropy_regions(net: torch.nn.Module, images: torch.Tensor, percentiles: Sequence[float] = ENTROPY_PERCENTILES,
                    form: str = "shannon") -> dict:
    """The entropy map ``(n, *spatial)`` of ``net``'s softmax on ``images`` and, per percentile q,
    the mask ``U > μ_q`` with μ_q each image's own q-th percentile (:func:`uncertain_mask`)."""
    from semiseg.methods.buarl import entropy_map, uncertain_mask

    with torch.no_grad():
        u = entropy_map(torch.softmax(net(images), dim=1), form)
    return {"entropy": u, "masks": {q: uncertain_mask(u, float(q), "image") for q in percentiles}}


def _show(x: np.ndarray) -> np.ndarray:
    """The 2D plane to draw: itself, or the middle z slice of a 3D patch."""
    return x if x.ndim == 2 else x[x.shape[0] // 2]


def entropy_figure(run_dir, store, split, out_png, n_slices: int = 4,
                   percentiles: Sequence[float] = ENTROPY_PERCENTILES) -> Path:
    """Draw BUARL's Figure 5 for a finished run into ``out_png`` (atomically); returns its path.

    One row per unlabeled slice of ``split`` (3D: the middle slice of the volume's centre patch):
    the image, the entropy map (nats, the run's ``entropy`` form; ``shannon`` for a run of another
    method; each image in its own range, printed above it), and per percentile the image with the
    pixels above that image's μ in green (the paper draws the rest in red; here the image shows
    through), titled with the share above (strictly above μ: under 100 − q % where values tie).
    3D: μ is the whole patch's percentile, as in training; the share printed is the shown
    slice's, which may differ from 100 − q %.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from semiseg.data.store import Store
    from semiseg.inference.run import load_run_network
    from semiseg.reporting.figures import pick_slices

    run_dir, out_png = Path(run_dir), Path(out_png)
    if not (run_dir / "model.pt").exists():
        raise FileNotFoundError(f"{run_dir / 'model.pt'}: not found; the entropy figure needs the run's evaluated network")
    net, spec = load_run_network(run_dir, "cpu")
    form = spec["method"]["params"].get("entropy", "shannon")
    with open(split) as fh:
        cases = json.load(fh)["cases"]["unlabeled"]
    with Store(store) as st:
        images, captions = pick_slices(st, cases, n_slices, spec["dataset"])
    maps = entropy_regions(net, torch.from_numpy(images), percentiles, form)
    entropy = maps["entropy"].numpy()

    rows, cols = len(captions), 2 + len(percentiles)
    fig = Figure(figsize=(cols * 2.4, rows * 2.4 + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    green = ListedColormap([UNCERTAIN])
    for r in range(rows):
        image, u = _show(images[r, 0]), _show(entropy[r])
        axes[r, 0].imshow(image, cmap="gray", interpolation="nearest")
        axes[r, 0].set_ylabel(captions[r], fontsize=8)
        # each image's own range: an early network's entropy is near ln C everywhere, and its
        # structure is what the percentiles cut
        axes[r, 1].imshow(u, cmap="magma", vmin=float(u.min()), vmax=float(u.max()), interpolation="nearest")
        axes[r, 1].set_title(("entropy U (nats)\n" if r == 0 else "") + f"{u.min():.3f} to {u.max():.3f}", fontsize=9)
        if r == 0:
            axes[r, 0].set_title("image", fontsize=10)
        for c, q in enumerate(percentiles, start=2):
            mask = _show(maps["masks"][q][r].numpy())
            ax = axes[r, c]
            ax.imshow(image, cmap="gray", interpolation="nearest")
            ax.imshow(np.ma.masked_equal(mask.astype(np.int64), 0), cmap=green, vmin=1, vmax=1, alpha=0.8,
                      interpolation="nearest")
            ax.set_title((f"{q:g}th percentile\n" if r == 0 else "") + f"U > μ: {100 * mask.mean():.1f} %", fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.legend(handles=[Patch(color=UNCERTAIN, label="uncertain: U above the image's q-th percentile μ (Eq. 4)")],
               loc="outside lower center", ncol=1, fontsize=8, frameon=False)
    fig.suptitle(f"{spec['method']['name']} on {spec['dataset']['name']}, {spec.get('ratio')}% labeled, "
                 f"seed {spec.get('seed')}: entropy of the prediction and its per-image percentile regions",
                 fontsize=10)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return out_png
