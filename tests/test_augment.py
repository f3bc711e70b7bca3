"""The papers' augmentations, batched on the device (semiseg.engine.augment), and the zoom of the
resident 2D training slices (semiseg.engine.data): what SSL4MIS's ``RandomGenerator`` and UA-MT's
``RandomRotFlip`` do."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from semiseg.engine.augment import affine_2d, augment_2d, augment_3d, rotation_2d, warp_2d
from semiseg.engine.data import resize_slices


def _angles(theta: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.atan2(theta[:, 1, 0], theta[:, 0, 0]))


def test_rot90_and_flip_are_exact_and_labels_stay_integers():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(16, 1, 8, 8)
    lab = (img[:, 0] * 3).long()
    theta = affine_2d(16, torch.Generator().manual_seed(0))
    out, out_lab = augment_2d(img, lab, g)
    lin = theta[:, :, :2]
    exact = (lin.round() == lin).all(dim=(1, 2))
    assert exact.any()
    for i in torch.nonzero(exact).flatten().tolist():
        # a rot90/flip or the identity: a permutation of the pixels, values preserved exactly
        assert torch.equal(out[i].flatten().sort().values, img[i].flatten().sort().values)
    assert out_lab.dtype == lab.dtype and set(out_lab.unique().tolist()) <= {0, 1, 2}
    # the label moves with the image: both are the same nearest-neighbour pick
    assert torch.equal(out_lab, (out[:, 0] * 3).long())


def test_augmentation_policy_matches_ssl4mis_proportions_and_integer_angles():
    theta = affine_2d(20000, torch.Generator().manual_seed(1))
    lin = theta[:, :, :2]
    exact = (lin.round() == lin).all(dim=(1, 2))
    identity = (lin == torch.eye(2, dtype=lin.dtype)).all(dim=(1, 2))
    # P(rot/flip) = 0.5, never the identity (a flip is always applied); else P(rotation) = 0.5,
    # of which the 0° draw (1 in 40) is the identity; else nothing.
    assert abs((~exact).float().mean() - 0.25 * 39 / 40) < 0.02
    assert abs(identity.float().mean() - 0.25 * (1 + 1 / 40)) < 0.02
    # np.random.randint(-20, 20): integer degrees from -20 to 19
    angles = _angles(theta[~exact])
    assert torch.allclose(angles, angles.round(), atol=1e-9)
    assert set(angles.round().long().tolist()) == set(range(-20, 20)) - {0}


@pytest.mark.parametrize("size", [(64, 64), (33, 33), (256, 256)])
def test_rotation_reproduces_ndimage_rotate_nearest_pixel_for_pixel(size):
    # SSL4MIS's random_rotate: ndimage.rotate(image, angle, order=0, reshape=False) for the image
    # and the label alike: same sign, same centre, nearest pixel, 0 outside the input.
    rng = np.random.default_rng(0)
    img = rng.random(size).astype(np.float32)
    lab = (img * 4).astype(np.uint8)
    angles = [-20, -13, -7, -1, 3, 10, 19]
    x = torch.from_numpy(img)[None, None].repeat(len(angles), 1, 1, 1)
    y = torch.from_numpy(lab)[None].repeat(len(angles), 1, 1)
    out, out_lab = warp_2d(x, y, rotation_2d(torch.tensor(angles)))
    for i, a in enumerate(angles):
        assert np.array_equal(out[i, 0].numpy(), ndimage.rotate(img, a, order=0, reshape=False)), a
        assert np.array_equal(out_lab[i].numpy(), ndimage.rotate(lab, a, order=0, reshape=False)), a
    assert out_lab.dtype == torch.uint8


def test_images_are_nearest():
    img = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    theta = rotation_2d(torch.tensor([13]))
    values = set(img.flatten().tolist()) | {0.0}
    nearest, _ = warp_2d(img, None, theta)
    assert set(nearest.flatten().tolist()) <= values  # no new intensities, as order=0


def test_training_slices_are_zoomed_nearest_for_images_and_labels():
    # SSL4MIS zooms every training slice to 256 x 256 with order=0, image and label alike.
    image = np.array([[[0.0, 1.0], [2.0, 3.0]]], dtype=np.float32)
    label = np.array([[[0, 1], [2, 3]]], dtype=np.uint8)
    img, lab = resize_slices(image, label, (4, 4))
    assert img.dtype == np.float32 and img.shape == lab.shape == (1, 4, 4)
    assert np.array_equal(img[0], ndimage.zoom(image[0], 2, order=0))
    assert set(np.unique(img).tolist()) == {0.0, 1.0, 2.0, 3.0}
    assert np.array_equal(lab, img.astype(np.uint8))
    same, _ = resize_slices(image, None, (2, 2))
    assert np.array_equal(same, image)


def _in_plane_transforms(x: torch.Tensor, dims: tuple[int, int]) -> list[torch.Tensor]:
    """rot90 by k, then a flip along one of the two in-plane axes (each reflection twice)."""
    return [torch.flip(torch.rot90(x, k, dims=dims), dims=(d,)) for k in range(4) for d in dims]


@pytest.mark.parametrize("plane, reflections", [((6, 6), 4), ((6, 8), 2)])
def test_3d_rotates_and_flips_in_the_axial_plane_only(plane, reflections):
    # Patches (B, C, D, H, W) of the store's (Z, Y, X): UA-MT's RandomRotFlip turns and flips in
    # (X, Y) only, so every depth slice stays at its depth. One volume, augmented 64 times.
    n, d = 64, 4
    vol = torch.rand(1, d, *plane, generator=torch.Generator().manual_seed(0))
    img = vol[None].repeat(n, 1, 1, 1, 1)
    lab = (img[:, 0] * 3).long()
    out, out_lab = augment_3d(img, lab, torch.Generator().manual_seed(1))
    assert out.shape == img.shape and torch.equal(out_lab, (out[:, 0] * 3).long())
    candidates = [c for c in _in_plane_transforms(vol, (2, 3)) if c.shape == vol.shape]
    for i in range(n):
        for z in range(d):  # the same values at each depth: nothing crossed the slice axis
            assert torch.equal(out[i, 0, z].flatten().sort().values, vol[0, z].flatten().sort().values)
        assert any(torch.equal(c, out[i]) for c in candidates), f"sample {i}: not rot90 + in-plane flip"
    # a square plane gets all 4 reflections, a non-square one the 2 flips (half turns only)
    assert len({tuple(o.flatten().tolist()) for o in out}) == reflections


def test_rotation_angle_sign_follows_ndimage():
    # A bright pixel right of the centre of a 5 x 5 image: ndimage.rotate by +90 moves it up.
    img = np.zeros((5, 5), dtype=np.float32)
    img[2, 4] = 1.0
    ref = ndimage.rotate(img, 90, order=0, reshape=False)
    out, _ = warp_2d(torch.from_numpy(img)[None, None], None, rotation_2d(torch.tensor([90])))
    assert np.array_equal(out[0, 0].numpy(), ref) and ref[0, 2] == 1.0
    assert math.isclose(float(_angles(rotation_2d(torch.tensor([-20])))[0]), -20.0)


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_cached_rot90_flip_maps_give_what_the_computed_map_gives(size):
    # warp_2d takes the rot90 / flip / identity samples' pixel maps from a cache and computes the
    # others: the batch must come out as if every map were computed.
    from semiseg.engine.augment import _nearest_pixels

    n, (h, w) = 64, size
    img = torch.rand(n, 2, h, w, generator=torch.Generator().manual_seed(2))
    lab = (img[:, 0] * 4).long()
    theta = affine_2d(n, torch.Generator().manual_seed(3))
    out, out_lab = warp_2d(img, lab, theta)
    nearest, inside = _nearest_pixels(theta, h, w)
    expect = img.flatten(2).gather(2, nearest[:, None].expand(-1, 2, -1)).view(img.shape) * inside.view(n, 1, h, w)
    assert torch.equal(out, expect)
    assert torch.equal(out_lab, lab.flatten(1).gather(1, nearest).view(lab.shape) * inside.view(n, h, w))
    lin = theta[:, :, :2]
    assert 0 < int((lin.round() == lin).all(dim=(1, 2)).sum()) < n  # both kinds of sample were drawn
