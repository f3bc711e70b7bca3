"""The papers' augmentations, batched on the device (semiseg.engine.augment)."""

from __future__ import annotations

import torch

from semiseg.engine.augment import affine_2d, augment_2d


def test_rot90_and_flip_are_exact_and_labels_stay_integers():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(16, 1, 8, 8)
    lab = (img[:, 0] * 3).long()
    theta = affine_2d(16, torch.Generator().manual_seed(0))
    out, out_lab = augment_2d(img, lab, g)
    for i in range(16):
        if torch.allclose(theta[i, :, :2].abs().sum(), torch.tensor(2.0)) and (theta[i, :, :2].round() == theta[i, :, :2]).all():
            # a rot90/flip or the identity: a permutation of the pixels, values preserved exactly
            assert torch.allclose(out[i].flatten().sort().values, img[i].flatten().sort().values, atol=1e-5)
    assert out_lab.dtype == lab.dtype and set(out_lab.unique().tolist()) <= {0, 1, 2}


def test_augmentation_policy_matches_ssl4mis_proportions():
    theta = affine_2d(20000, torch.Generator().manual_seed(1))
    lin = theta[:, :, :2]
    exact = (lin.round() == lin).all(dim=(1, 2))
    identity = exact & (lin == torch.eye(2)).all(dim=(1, 2))
    # P(rot/flip) = 0.5; P(rotation) = 0.25; P(nothing) = 0.25 (+ rot/flip drawing the identity: never, a flip is always applied)
    assert abs((~exact).float().mean() - 0.25) < 0.02
    assert abs(identity.float().mean() - 0.25) < 0.02
