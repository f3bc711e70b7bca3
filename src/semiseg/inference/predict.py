"""Prediction protocols of the literature: 2D slice by slice, 3D sliding window.

The predictor is separate from the trainer: validation during training and the `infer` stage
call the same functions, so the checkpoint chosen on the val split is chosen under exactly the
protocol the test split is scored with.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch import nn

__all__ = ["predict_volume", "predict_volume_2d", "predict_volume_3d", "sliding_window_starts"]


@torch.no_grad()
def predict_volume_2d(net: nn.Module, image: np.ndarray, patch_size, device, batch_size: int = 16) -> np.ndarray:
    """ACDC protocol (SSL4MIS ``test_single_volume``): each (Y, X) slice is zoomed to
    `patch_size` with nearest interpolation, predicted, and the argmax map zoomed back to the
    native grid with nearest interpolation. Returns a (Z, Y, X) uint8 label map."""
    z, y, x = image.shape
    ph, pw = patch_size
    zoomed = ndimage.zoom(image, (1, ph / y, pw / x), order=0).astype(np.float32)
    out = np.zeros((z, ph, pw), dtype=np.uint8)
    for s in range(0, z, batch_size):
        chunk = torch.from_numpy(zoomed[s:s + batch_size])[:, None].to(device)
        out[s:s + batch_size] = net(chunk).argmax(1).to("cpu", torch.uint8).numpy()
    if (ph, pw) == (y, x):
        return out
    return ndimage.zoom(out, (1, y / ph, x / pw), order=0)


def sliding_window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Window starts along one axis, as in the UA-MT/BCP ``test_single_case``.

    ``n = ceil((size - patch) / stride) + 1`` windows, the last one flush with the end.
    Worked example: size 120, patch 80, stride 18 → n = ceil(40/18) + 1 = 4 windows starting
    at 0, 18, 36 and 40 (the fourth would start at 54 but is pulled back to 120 − 80 = 40).
    A volume smaller than the patch is padded first, so ``size >= patch`` here.
    """
    if size < patch:
        raise ValueError(f"axis of size {size} is smaller than the patch {patch}; pad first")
    n = math.ceil((size - patch) / stride) + 1
    return [min(stride * i, size - patch) for i in range(n)]


@torch.no_grad()
def predict_volume_3d(net: nn.Module, image: np.ndarray, patch_size, stride, num_classes: int, device) -> np.ndarray:
    """Sliding-window prediction of a (Z, Y, X) volume: softmax averaged over overlapping
    windows (uniform weights, as the LA papers), argmax. Volumes smaller than the patch are
    zero-padded symmetrically and the padding cropped off the result."""
    shape = image.shape
    pads = [(max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2) for s, p in zip(shape, patch_size)]
    vol = np.pad(image, pads).astype(np.float32)
    score = np.zeros((num_classes, *vol.shape), dtype=np.float32)
    count = np.zeros(vol.shape, dtype=np.float32)
    starts = [sliding_window_starts(s, p, st) for s, p, st in zip(vol.shape, patch_size, stride)]
    for a in starts[0]:
        for b in starts[1]:
            for c in starts[2]:
                sl = (slice(a, a + patch_size[0]), slice(b, b + patch_size[1]), slice(c, c + patch_size[2]))
                x = torch.from_numpy(np.ascontiguousarray(vol[sl]))[None, None].to(device)
                score[(slice(None), *sl)] += torch.softmax(net(x), 1)[0].float().cpu().numpy()
                count[sl] += 1
    label = (score / count).argmax(0).astype(np.uint8)
    crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(pads, shape))
    return label[crop]


def predict_volume(net: nn.Module, image: np.ndarray, dataset: dict, device) -> np.ndarray:
    """Predict a (Z, Y, X) volume under the dataset's protocol (``run_spec()['dataset']``)."""
    was_training = net.training
    net.eval()
    try:
        if dataset["dims"] == 2:
            return predict_volume_2d(net, image, dataset["patch_size"], device)
        return predict_volume_3d(net, image, dataset["patch_size"], dataset["stride"],
                                 dataset["num_classes"], device)
    finally:
        net.train(was_training)
