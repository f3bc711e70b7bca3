"""Prediction protocols of the literature: 2D slice by slice, 3D sliding window.

The predictor is separate from the trainer: validation during training and the `infer` stage
call the same functions, so the checkpoint chosen on the val split is chosen under exactly the
protocol the test split is scored with.
"""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from semiseg.data.cases import channels_first

__all__ = ["gaussian_importance", "keep_largest_component", "predict_volume", "predict_volume_2d", "predict_volume_3d",
           "predict_volume_3d_reference", "sliding_window_starts", "window_starts"]


@torch.no_grad()
def predict_volume_2d(net: nn.Module, image: np.ndarray, patch_size, device, batch_size: int = 16) -> np.ndarray:
    """ACDC protocol (SSL4MIS ``test_single_volume``): each (Y, X) slice is zoomed to
    `patch_size` with nearest interpolation, predicted, and the argmax map zoomed back to the
    native grid with nearest interpolation. `image` is (Z, Y, X), or (C, Z, Y, X) for C input
    channels (each zoomed alike). Returns a (Z, Y, X) uint8 label map."""
    image = channels_first(image)
    _, z, y, x = image.shape
    ph, pw = patch_size
    zoomed = np.stack([ndimage.zoom(channel, (1, ph / y, pw / x), order=0) for channel in image]).astype(np.float32)
    out = np.zeros((z, ph, pw), dtype=np.uint8)
    for s in range(0, z, batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(zoomed[:, s:s + batch_size].swapaxes(0, 1))).to(device)
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


def window_starts(shape, patch_size, stride) -> list[tuple[int, ...]]:
    """Every window's start corner over a (padded) volume of `shape`, in C order of the axes
    (the order UA-MT's three nested loops visit them)."""
    axes = [sliding_window_starts(s, p, st) for s, p, st in zip(shape, patch_size, stride)]
    return list(itertools.product(*axes))


def _padding(shape, patch_size) -> list[tuple[int, int]]:
    """Symmetric zero padding (the smaller half first) that brings every axis up to the patch."""
    return [(max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2) for s, p in zip(shape, patch_size)]


def gaussian_importance(patch_size, sigma_scale: float = 1 / 8) -> torch.Tensor:
    """nnU-Net's importance map for a window: a Gaussian centred on the patch, sigma =
    ``sigma_scale`` x the patch size per axis, scaled to a maximum of 1, with zeros raised to the
    smallest positive value (every voxel of a window counts a little). float32."""
    axes = []
    for p in patch_size:
        x = torch.arange(p, dtype=torch.float64) - (p - 1) / 2
        axes.append(torch.exp(-0.5 * (x / (p * sigma_scale)) ** 2))
    w = axes[0]
    for a in axes[1:]:
        w = w[..., None] * a
    w = w / w.max()
    w = torch.where(w > 0, w, w[w > 0].min())
    return w.float()


def _coverage(shape, patch_size, stride) -> torch.Tensor:
    """How many windows cover each voxel of a (padded) volume of `shape`, as float32.

    A window is a product of one interval per axis, so the count is the outer product of the
    per-axis counts. Worked example: size 10, patch 4, stride 3 -> windows at 0, 3, 6 cover the
    10 positions 1, 1, 1, 2, 1, 1, 2, 1, 1, 1 times; a (1, 1, 10) volume with patch (1, 1, 4)
    has exactly that count map. The counts are small integers, so the float32 product equals the
    window-by-window sum exactly, and it is known (and checked for uncovered voxels) before any
    window runs.
    """
    count = torch.ones((), dtype=torch.float32)
    for size, patch, st in zip(shape, patch_size, stride):
        axis = torch.zeros(size, dtype=torch.float32)
        for a in sliding_window_starts(size, patch, st):
            axis[a:a + patch] += 1
        count = count[..., None] * axis
    return count


_PRODUCERS = (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class _OneDnnConv3d(nn.Module):
    """A zero-padded ``nn.Conv3d`` that always runs oneDNN's kernel on a CPU. PyTorch picks its
    own im2col kernel instead for a single small input (batch 1 and ``N * C * D * H`` at most
    20,480: a V-Net's two deepest stages at 112 x 112 x 80), about 20% of a window's time there."""

    def __init__(self, conv: nn.Conv3d):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mkldnn_convolution(x, self.weight, self.bias, *self.args)


def _inference_network(net: nn.Module, device: torch.device) -> nn.Module:
    """A copy of `net` (in eval mode) that predicts the same labels with fewer passes over memory:

    - a convolution followed by an eval-mode batch norm in an ``nn.Sequential`` becomes one
      convolution with the norm folded into its weights (the norm an ``nn.Identity``): one
      full-resolution pass and one activation fewer per layer;
    - every ``nn.ReLU`` that directly follows a convolution or a normalisation layer in an
      ``nn.Sequential`` runs in place: that layer's output is a fresh tensor only the ReLU reads;
    - on a CPU, a 3D network's parameters are in ``channels_last_3d``, so oneDNN convolves the
      activations in the layout it computes in instead of reordering every layer's input and
      output (a 64 MB copy each at a V-Net's full resolution), and every zero-padded
      ``nn.Conv3d`` runs oneDNN's kernel (:class:`_OneDnnConv3d`).

    The folding and the layout change the logits by float rounding only (about 1e-6 on a V-Net's);
    the benchmark (``benchmarks/sliding_window.py``) asserts that the labels equal the one-window
    loop's on a real LA case. The caller's network is not touched (a training run validates it).
    """
    copy_ = copy.deepcopy(net)
    for seq in copy_.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for prev, m in zip(seq, list(seq)[1:]):
            if isinstance(m, nn.ReLU) and isinstance(prev, _PRODUCERS):
                m.inplace = True
        for i, (conv, norm) in enumerate(zip(seq, list(seq)[1:])):
            if (isinstance(conv, nn.modules.conv._ConvNd) and isinstance(norm, nn.modules.batchnorm._BatchNorm)
                    and not conv.training and not norm.training and norm.track_running_stats):
                seq[i] = fuse_conv_bn_eval(conv, norm, transpose=isinstance(conv, nn.modules.conv._ConvTransposeNd))
                seq[i + 1] = nn.Identity()
    if device.type == "cpu" and any(isinstance(m, nn.Conv3d) for m in copy_.modules()):
        copy_.to(memory_format=torch.channels_last_3d)
        if torch.backends.mkldnn.is_available():
            for parent in list(copy_.modules()):
                for name, child in parent.named_children():
                    if type(child) is nn.Conv3d and child.padding_mode == "zeros" and not isinstance(child.padding, str):
                        setattr(parent, name, _OneDnnConv3d(child))
    return copy_


@torch.no_grad()
def predict_volume_3d(net: nn.Module, image: np.ndarray, patch_size, stride, num_classes: int, device,
                      *, batch_size: int | None = None, gaussian: bool = False) -> np.ndarray:
    """Sliding-window prediction of a (Z, Y, X) volume, or of a (C, Z, Y, X) one of C input
    channels (windowed alike), batched and on the device.

    The protocol of UA-MT's / BCP's ``test_single_case``: volumes smaller than the patch are
    zero-padded symmetrically (the padding is cropped off the result), windows start at
    :func:`sliding_window_starts` on each axis, the softmax of every window is summed into a
    score map and divided by the number of windows covering each voxel, and the label is the
    argmax. Here the volume is copied to `device` once, `batch_size` windows go through the
    network at a time, scores are accumulated on the device in float32 in the same window order
    as the one-window loop (:func:`predict_volume_3d_reference`), and only the uint8 label map
    comes back. `gaussian` weights each window by :func:`gaussian_importance` (nnU-Net) instead
    of uniformly; off by default, as in the papers.

    Nothing is allocated per window outside the network: the window batch, its softmax and the
    score map are allocated once and written in place, and the uniform count map is
    :func:`_coverage` (built once, before the windows); the network runs as
    :func:`_inference_network` prepares it (batch norm folded, ReLUs in place). `batch_size` defaults to 1 on a CPU, where a larger batch
    only multiplies the activations' memory (and, under glibc's default allocator, the page
    faults per window), and to 4 on an accelerator, where it amortises the launches.

    Returns:
        the (Z, Y, X) uint8 label map.
    """
    device = torch.device(device)
    if batch_size is None:
        batch_size = 1 if device.type == "cpu" else 4
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    image = channels_first(image)
    shape = image.shape[1:]
    pads = _padding(shape, patch_size)
    vol = torch.from_numpy(np.ascontiguousarray(np.pad(image.astype(np.float32, copy=False), [(0, 0), *pads])))
    vol = vol.to(device)
    padded = vol.shape[1:]
    starts = window_starts(padded, patch_size, stride)
    coverage = _coverage(padded, patch_size, stride)
    _check_covered(int((coverage == 0).sum()), padded, patch_size, stride)
    batch = torch.empty((min(batch_size, len(starts)), len(vol), *patch_size), dtype=torch.float32, device=device)
    probs = torch.empty((len(batch), num_classes, *patch_size), dtype=torch.float32, device=device)
    score = torch.zeros((num_classes, *padded), dtype=torch.float32, device=device)
    weight = gaussian_importance(patch_size).to(device) if gaussian else None
    count = torch.zeros(padded, dtype=torch.float32, device=device) if gaussian else None
    windows = [tuple(slice(a, a + p) for a, p in zip(corner, patch_size)) for corner in starts]
    net = _inference_network(net, device)
    for first in range(0, len(windows), len(batch)):
        chunk = windows[first:first + len(batch)]
        for i, sl in enumerate(chunk):
            batch[i].copy_(vol[(slice(None), *sl)])
        torch.softmax(net(batch[:len(chunk)]).float(), 1, out=probs[:len(chunk)])
        for sl, p in zip(chunk, probs):
            if weight is not None:
                p.mul_(weight)
                count[sl] += weight
            score[(slice(None), *sl)] += p
    count = coverage.to(device) if count is None else count
    crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(pads, shape))
    label = score.div_(count).argmax(0)[crop]
    return label.to(torch.uint8).cpu().numpy()


def _check_covered(uncovered: int, shape, patch_size, stride) -> None:
    """Refuse a prediction in which some voxels lie in no window (a stride larger than the patch):
    their score would be 0 / 0 and their label background, a wrong number that looks right."""
    if uncovered:
        raise ValueError(f"the sliding window (patch {list(patch_size)}, stride {list(stride)}) leaves {uncovered} "
                         f"of the {math.prod(shape)} voxels of a {list(shape)} volume in no window; the stride must "
                         "be at most the patch on each axis (config/datasets/ `stride`, a schedule's `test_stride`)")


@torch.no_grad()
def predict_volume_3d_reference(net: nn.Module, image: np.ndarray, patch_size, stride, num_classes: int,
                                device) -> np.ndarray:
    """The one-window loop of UA-MT's ``test_single_case``, as this project ran it before the
    batched predictor: each window to the device and its softmax back to numpy, accumulated on
    the host. Kept as the reference the batched :func:`predict_volume_3d` is checked and
    benchmarked against (``benchmarks/sliding_window.py``); not used by the stages."""
    shape = image.shape
    pads = _padding(shape, patch_size)
    vol = np.pad(image, pads).astype(np.float32)
    score = np.zeros((num_classes, *vol.shape), dtype=np.float32)
    count = np.zeros(vol.shape, dtype=np.float32)
    for corner in window_starts(vol.shape, patch_size, stride):
        sl = tuple(slice(a, a + p) for a, p in zip(corner, patch_size))
        x = torch.from_numpy(np.ascontiguousarray(vol[sl]))[None, None].to(device)
        score[(slice(None), *sl)] += torch.softmax(net(x), 1)[0].float().cpu().numpy()
        count[sl] += 1
    _check_covered(int((count == 0).sum()), vol.shape, patch_size, stride)
    label = (score / count).argmax(0).astype(np.uint8)
    crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(pads, shape))
    return label[crop]


def keep_largest_component(label: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected (8 in 2D) component of each foreground class; its other
    voxels become background. SS-Net's and BCP's LA post-processing (``skimage.measure.label``'s
    default, full connectivity); ties go to the component met first in raster order."""
    structure = ndimage.generate_binary_structure(label.ndim, label.ndim)
    out = label.copy()
    for c in np.unique(label):
        if c == 0:
            continue
        components, n = ndimage.label(label == c, structure=structure)
        if n > 1:
            keep = int(np.argmax(np.bincount(components.ravel())[1:])) + 1
            out[(components > 0) & (components != keep)] = 0
    return out


def predict_volume(net: nn.Module, image: np.ndarray, dataset: dict, device) -> np.ndarray:
    """Predict a (Z, Y, X) volume (or a (C, Z, Y, X) one of C input channels) under the dataset's
    protocol (``run_spec()['dataset']``): slice by slice (``dims`` 2) or by the batched sliding
    window (``dims`` 3), then, where the dataset sets ``largest_component``,
    :func:`keep_largest_component`. Validation during training and the infer stage both call this."""
    was_training = net.training
    net.eval()
    try:
        if dataset["dims"] == 2:
            label = predict_volume_2d(net, image, dataset["patch_size"], device)
        else:
            label = predict_volume_3d(net, image, dataset["patch_size"], dataset["stride"],
                                      dataset["num_classes"], device)
    finally:
        net.train(was_training)
    return keep_largest_component(label) if dataset.get("largest_component") else label
