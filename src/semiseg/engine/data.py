"""Training data kept resident on the training device, and the two-stream batch sampler.

The benchmarks' training sets are small (ACDC: 1312 slices of 256×256, 344 MB as float32), so
they are loaded once, resized to the network input, and kept on the device; a batch is then an
index into tensors plus a batched augmentation (``semiseg.engine.augment``), never a CPU-side
per-sample pipeline.

Batches follow the common code's ``TwoStreamBatchSampler``: the labeled stream walks through
random permutations of the labeled samples, the unlabeled stream through permutations of the
unlabeled ones, each epoch a fresh permutation. Permutations are a pure function of
(seed, stream, epoch), so the batch of iteration *i* is the same whether or not the run was
interrupted before it.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from scipy import ndimage

from semiseg.data.store import Store, channels_first
from semiseg.engine.augment import augment_2d, augment_3d

__all__ = ["ResidentSet", "StreamSampler", "load_resident", "resize_slices"]


def resize_slices(image: np.ndarray, label: np.ndarray | None, size) -> tuple[np.ndarray, np.ndarray | None]:
    """Zoom (Z, Y, X) slices to (Z, *size): nearest neighbour for images and labels.

    SSL4MIS's ``RandomGenerator`` (the ACDC papers' training transform) zooms each slice with
    ``zoom(..., order=0)`` for the image as for the label, as does its validation; the
    predictor (``semiseg.inference.predict``) zooms with order 0 too.

    The result is exactly ``ndimage.zoom(image, (1, size[0] / Y, size[1] / X), order=0)``, taken
    as a gather through that zoom's pixel map (:func:`_nearest_map`, computed once per slice shape)
    rather than by zooming each volume: about three times faster on ACDC, and the label costs one
    more gather instead of a second zoom.
    """
    z, y, x = image.shape
    size = tuple(int(s) for s in size)
    if (y, x) == size:
        return image.astype(np.float32), label
    pixel = _nearest_map((y, x), size)
    if pixel is None:
        f = (1, size[0] / y, size[1] / x)
        img = ndimage.zoom(image, f, order=0).astype(np.float32)
        lab = ndimage.zoom(label, f, order=0) if label is not None else None
        return img, lab
    img = np.take(image.reshape(z, y * x), pixel, axis=1).reshape(z, *size).astype(np.float32, copy=False)
    lab = np.take(label.reshape(z, y * x), pixel, axis=1).reshape(z, *size) if label is not None else None
    return img, lab


@functools.lru_cache(maxsize=256)
def _nearest_map(shape: tuple[int, int], size: tuple[int, int]) -> np.ndarray | None:
    """The flat source pixel (``y * X + x``) of every output pixel of an order-0 ``ndimage.zoom``
    of a (Y, X) slice to `size`, or None where that zoom would fill a pixel with its ``cval``.

    Order 0 copies one source pixel per output pixel, and which one depends on the shapes alone;
    zooming the slice of pixel numbers (1-based, so that 0 marks a filled pixel) gives the map.
    """
    y, x = shape
    numbers = np.arange(1, y * x + 1, dtype=np.int64).reshape(y, x)
    pixel = ndimage.zoom(numbers, (size[0] / y, size[1] / x), order=0)
    if pixel.shape != size or not pixel.all():
        return None
    pixel = (pixel - 1).ravel()
    pixel.flags.writeable = False  # shared by every call for these shapes
    return pixel


class ResidentSet:
    """One stream's samples on the device: 2D slices (N, C, H, W) or a list of 3D volumes (C, Z, Y, X)."""

    def __init__(self, dims: int, patch_size, device, images, labels):
        self.dims = dims
        self.patch_size = tuple(patch_size)
        self.device = device
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0] if self.dims == 2 else len(self.images)

    def batch(self, index: list[int], generator: torch.Generator, with_label: bool):
        """Augmented images (B, C, *patch) and labels (B, *patch) long, or None."""
        if self.dims == 2:
            idx = torch.as_tensor(index, device=self.device)
            img = self.images[idx]
            lab = self.labels[idx] if with_label else None
            img, lab = augment_2d(img, lab, generator)
        else:
            crops_i, crops_l = [], []
            for i in index:
                vol = self.images[i]
                starts = [int(torch.randint(0, s - p + 1, (1,), generator=generator)) for s, p in
                          zip(vol.shape[1:], self.patch_size)]
                sl = tuple(slice(s, s + p) for s, p in zip(starts, self.patch_size))
                crops_i.append(vol[(slice(None), *sl)])
                if with_label:
                    crops_l.append(self.labels[i][sl])
            img = torch.stack(crops_i)
            lab = torch.stack(crops_l) if with_label else None
            img, lab = augment_3d(img, lab, generator)
        return img, (lab.long() if lab is not None else None)


def _pad_to(vol: np.ndarray, shape) -> np.ndarray:
    pads = [(max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2) for s, p in zip(vol.shape, shape)]
    return np.pad(vol, pads) if any(a or b for a, b in pads) else vol


def load_resident(store: Store, case_ids: list[str], dims: int, patch_size, device, with_label: bool) -> ResidentSet:
    """Load `case_ids` from the store onto `device` in the form the networks train on, with the
    store's channels as the input channels."""
    if not case_ids:
        raise ValueError("no cases to load for this stream")
    if dims == 2:
        # one array per stream, filled case by case (no concatenation copy); the unlabeled
        # stream's labels are never read
        n = sum(store.shape(cid)[0] for cid in case_ids)
        images = np.empty((n, store.channels, *patch_size), dtype=np.float32)
        labels = np.empty((n, *patch_size), dtype=np.uint8) if with_label else None
        start = 0
        for cid in case_ids:
            image, label = store.read(cid) if with_label else (store.read_image(cid), None)
            image = channels_first(image)
            for c, channel in enumerate(image):  # every channel through the same pixel map as the label
                resized, lab = resize_slices(channel, label if c == 0 else None, patch_size)
                images[start:start + len(resized), c] = resized
                if c == 0 and with_label:
                    labels[start:start + len(resized)] = lab
            start += image.shape[1]
        return ResidentSet(2, patch_size, device, torch.from_numpy(images).to(device),
                           torch.from_numpy(labels).to(device) if with_label else None)
    images, labels = [], []
    for cid in case_ids:
        image, label = store.read(cid) if with_label else (store.read_image(cid), None)
        image = channels_first(image)
        padded = np.stack([_pad_to(channel, patch_size) for channel in image]).astype(np.float32, copy=False)
        images.append(torch.from_numpy(padded).to(device))
        labels.append(torch.from_numpy(_pad_to(label, patch_size)).to(device) if with_label else None)
    return ResidentSet(3, patch_size, device, images, labels)


class StreamSampler:
    """Indices of iteration *i*'s batch from an endless sequence of seeded permutations."""

    def __init__(self, n: int, batch_size: int, seed: int, stream: int):
        if n < 1:
            raise ValueError("a stream needs at least one sample")
        self.n, self.batch_size, self.seed, self.stream = n, batch_size, seed, stream
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.stream * 7_919 + epoch) % 2**63)
            # a batch can straddle two epochs: keep the last two permutations
            self._cache = {e: p for e, p in self._cache.items() if e == epoch - 1}
            self._cache[epoch] = torch.randperm(self.n, generator=g)
        return self._cache[epoch]

    def indices(self, iteration: int) -> list[int]:
        start = iteration * self.batch_size
        out = []
        for pos in range(start, start + self.batch_size):
            epoch, offset = divmod(pos, self.n)
            out.append(int(self._perm(epoch)[offset]))
        return out
