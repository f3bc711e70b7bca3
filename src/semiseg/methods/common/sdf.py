"""The signed-distance family (DTC, SASSNet): the normalised signed distance map of a label, the
transform from a level set back to a segmentation, and the base both methods share.

Both codes (HiLab-git/DTC and kleinzcy/SASSnet, ``code/utils/util.py`` ``compute_sdf``) turn a
binary mask ``M`` into its normalised signed distance map

    ``sdf = d_out / max d_out − d_in / max d_in``, then ``sdf = 0`` on the inner boundary of ``M``,

with ``d_in`` the Euclidean distance of each voxel of ``M`` to the nearest voxel outside it (0
outside; ``scipy.ndimage.distance_transform_edt(M)``), ``d_out`` that of each voxel outside ``M``
to ``M`` (``distance_transform_edt(~M)``), both in voxels, and the inner boundary the voxels of
``M`` with a face neighbour outside it (``skimage.segmentation.find_boundaries(M, mode='inner')``:
its grey erosion with the face-connected cross, the image border reflected, is 0 there). So the
map is negative inside, positive outside, in ``[−1, 1]``, and each image of the batch is
normalised alone. An empty mask gives 0 everywhere (the codes skip it). Here each foreground
class is one such mask (the codes have one class). Worked example, the 1 × 5 mask
``[0, 1, 1, 1, 0]``: ``d_in = [0, 1, 2, 1, 0]``, ``d_out = [1, 0, 0, 0, 1]``, inner boundary at
positions 1 and 3: ``sdf = [1, 0, −1, 0, 1]``.

A mask that fills the whole image has no outside: the codes' ``d_out`` is then 0 everywhere and
``0 / 0`` makes the map NaN (and the loss with it). Here such a mask gets −1 everywhere (all
inside, no boundary in view), a choice the codes never made.

The level set is turned back into a probability by ``T⁻¹(s) = σ(−k·s)`` (DTC, k = 1500: a steep
step at the boundary, 1 inside where ``s < 0``); the sign is the codes' ``sigmoid(-1500 * s)``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from semiseg.methods.base import Method
from semiseg.methods.common.losses import one_hot, soft_dice_loss
from semiseg.nets.sdf import SignedDistanceNet

__all__ = ["SignedDistanceMethod", "inner_boundary", "level_set_probability", "normalized_sdf", "sdf_targets"]


def inner_boundary(mask: np.ndarray) -> np.ndarray:
    """The voxels of the boolean ``mask`` with a face neighbour outside it (the image border
    counts as inside): ``skimage.segmentation.find_boundaries(mask, mode='inner')``."""
    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=1)


def normalized_sdf(mask: np.ndarray) -> np.ndarray:
    """The normalised signed distance map of one boolean mask (float64; module docstring)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros(mask.shape)
    if mask.all():
        return -np.ones(mask.shape)
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    sdf = outside / outside.max() - inside / inside.max()
    sdf[inner_boundary(mask)] = 0.0
    return sdf


def sdf_targets(label: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(B, num_classes − 1, *spatial)`` maps of the labels ``(B, *spatial)``: one
    :func:`normalized_sdf` per image and foreground class, on the labels' device. It is computed
    on the CPU, as the codes do (one transfer of the labels per step)."""
    labels = label.detach().cpu().numpy()
    out = np.zeros((labels.shape[0], num_classes - 1, *labels.shape[1:]))
    for b, image in enumerate(labels):
        for c in range(1, num_classes):
            out[b, c - 1] = normalized_sdf(image == c)
    return torch.from_numpy(out).to(device=label.device, dtype=dtype)


def level_set_probability(sdf: Tensor, k: float) -> Tensor:
    """``T⁻¹(s) = σ(−k·s)``: the segmentation a level set implies (DTC's task transform).
    Worked values at k = 1500: s = −0.001 -> σ(1.5) = 0.8176, s = 0 -> 0.5, s = 0.01 -> σ(−15) = 3.1e-7."""
    return torch.sigmoid(-k * sdf)


class SignedDistanceMethod(Method):
    """One network with a segmentation and a signed-distance head (``models[0]``, a
    :class:`~semiseg.nets.sdf.SignedDistanceNet`: the catalogue's ``network_args: {sdf_head: true}``,
    or the head added to a plain network) and the codes' supervised term on the labeled images:

    ``L_sup = Dice(softmax(z_L), y) + sdf_weight · MSE(tanh head_L, sdf(y))``

    with the Dice of the foreground classes (the codes: of their one sigmoid channel, the batch's
    sums, squared denominator, smoothing 1e-5: :func:`~semiseg.methods.common.losses.soft_dice_loss`
    without background) and the MSE over every labeled pixel and foreground class. The codes
    compute a cross-entropy too but leave it out of the loss; so does this. Validation and
    inference run the segmentation head.
    """

    def __init__(self, spec, net_factory):
        super().__init__(spec, net_factory)
        self.models.append(self.inference_network(spec, net_factory))

    @classmethod
    def inference_network(cls, spec, net_factory) -> SignedDistanceNet:
        """The run's network if it has the head (``network_args: {sdf_head: true}``, as the
        catalogue entries build it), else the run's network with the head added."""
        net = net_factory()
        return net if isinstance(net, SignedDistanceNet) else SignedDistanceNet(net, int(spec["dataset"]["num_classes"]))

    @property
    def net(self) -> SignedDistanceNet:
        return self.models[0]

    def supervised_terms(self, logits: Tensor, sdf: Tensor, label: Tensor) -> dict[str, Tensor]:
        """``{"dice": …, "sdf": …}`` of the labeled ``logits``, maps ``sdf`` and ``label``."""
        dice = soft_dice_loss(torch.softmax(logits, dim=1), one_hot(label.long(), self.num_classes),
                              include_background=False)
        target = sdf_targets(label, self.num_classes, sdf.dtype)
        return {"dice": dice, "sdf": torch.mean((sdf - target) ** 2)}

    def supervised_total(self, terms: dict[str, Tensor]) -> Tensor:
        return terms["dice"] + float(self.params["sdf_weight"]) * terms["sdf"]
