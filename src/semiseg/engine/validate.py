"""Validation during training: the test split's inference protocol on the val cases, scored by
the mean foreground Dice that chooses the kept checkpoint."""

from __future__ import annotations

import numpy as np
import torch

from semiseg.data.store import Store
from semiseg.inference.predict import predict_volume

__all__ = ["mean_dice", "validate"]


def mean_dice(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    """Mean foreground Dice over classes (both empty counts as 1, as in ``metrics.csv``)."""
    scores = []
    for c in range(1, num_classes):
        p, g = pred == c, gt == c
        denom = p.sum() + g.sum()
        scores.append(1.0 if denom == 0 else 2.0 * np.logical_and(p, g).sum() / denom)
    return float(np.mean(scores))


def validate(net: torch.nn.Module, store: Store, cases: list[str], dataset: dict, device) -> float:
    """Mean over ``cases`` of :func:`mean_dice` of ``net``'s prediction (the inference protocol)."""
    scores = []
    for cid in cases:
        image, label = store.read(cid)
        pred = predict_volume(net, image, dataset, device)
        scores.append(mean_dice(pred, label, dataset["num_classes"]))
    return float(np.mean(scores))
