"""The 3D sliding-window predictor: window starts, stitching by hand-worked examples, padding,
batching, the one-window reference loop, Gaussian weighting, largest-component post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from semiseg.inference.predict import (gaussian_importance, keep_largest_component, predict_volume,
                                       predict_volume_3d, predict_volume_3d_reference, sliding_window_starts,
                                       window_starts)

CPU = torch.device("cpu")


class LabelEcho(nn.Module):
    """Logit of class c = -10 (x - c)^2 per voxel: the argmax returns an integer-valued input."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.register_buffer("classes", torch.arange(num_classes, dtype=torch.float32).view(1, -1, 1, 1, 1))

    def forward(self, x):
        return -10 * (x - self.classes) ** 2


class WindowMean(nn.Module):
    """Two classes; class 1's logit is (mean of the window) - 4.4 on every voxel, class 0's is 0.
    A window's answer depends on where it is: stitching must average the windows covering a voxel."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3, 4), keepdim=True) - 4.4
        return torch.cat([torch.zeros_like(x), m.expand_as(x)], 1)


def test_window_starts_worked_example():
    # size 120, patch 80, stride 18 -> ceil(40/18) + 1 = 4 windows, the last pulled back to 40
    assert sliding_window_starts(120, 80, 18) == [0, 18, 36, 40]
    # an LA volume of (88, 140, 183) in store order, patch (80, 112, 112), stride (4, 18, 18):
    # 3 x 3 x 5 = 45 windows, visited in UA-MT's loop order (last axis fastest)
    starts = window_starts((88, 140, 183), (80, 112, 112), (4, 18, 18))
    assert len(starts) == 45 and starts[:2] == [(0, 0, 0), (0, 0, 18)] and starts[-1] == (8, 28, 71)


def test_stitching_averages_the_windows_covering_each_voxel():
    """Ramp 0..9 along X, patch 4, stride 3: windows at 0, 3, 6 with means 1.5, 4.5, 7.5, so class
    1's probability is sigma(-2.9) = 0.052, sigma(0.1) = 0.525, sigma(3.1) = 0.957. Voxel 3 is in
    windows 0 and 1: (0.052 + 0.525) / 2 < 0.5 -> 0, although window 1 alone says 1; voxel 6 is in
    windows 1 and 2 -> 1; voxels 4, 5 only in window 1 -> 1."""
    image = np.broadcast_to(np.arange(10, dtype=np.float32), (2, 2, 10)).copy()
    expected = np.broadcast_to(np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], np.uint8), (2, 2, 10))
    for batch in (1, 2, 3, 8):
        pred = predict_volume_3d(WindowMean(), image, (2, 2, 4), (1, 1, 3), 2, CPU, batch_size=batch)
        np.testing.assert_array_equal(pred, expected)
    ref = predict_volume_3d_reference(WindowMean(), image, (2, 2, 4), (1, 1, 3), 2, CPU)
    np.testing.assert_array_equal(ref, expected)


@pytest.mark.parametrize("shape", [(12, 17, 23), (5, 7, 30), (3, 4, 5)])
def test_an_identity_network_recovers_the_input(shape):
    """Every voxel is covered by windows that all return its own label: the stitched map is the
    input, including volumes smaller than the patch on some or all axes (zero-padded, cropped)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=shape).astype(np.float32)
    for gaussian in (False, True):
        pred = predict_volume_3d(LabelEcho(3), labels, (8, 8, 8), (3, 5, 4), 3, CPU, batch_size=3,
                                 gaussian=gaussian)
        assert pred.shape == shape and pred.dtype == np.uint8
        np.testing.assert_array_equal(pred, labels.astype(np.uint8))


def test_padding_is_symmetric_and_cropped_off():
    """A volume of X = 5 in a patch of 8 is padded 1 left, 2 right with zeros: a network that
    answers 1 only where the input is non-zero marks exactly the input's voxels."""
    image = np.ones((8, 8, 5), np.float32)
    pred = predict_volume_3d(LabelEcho(2), image, (8, 8, 8), (4, 4, 4), 2, CPU)
    assert pred.shape == (8, 8, 5) and pred.all()


def test_batched_equals_the_one_window_loop_on_a_convolutional_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 3, 3, padding=1)).eval()
    image = np.random.default_rng(1).standard_normal((14, 21, 19)).astype(np.float32)
    ref = predict_volume_3d_reference(net, image, (8, 10, 10), (2, 4, 4), 3, CPU)
    for batch in (1, 4, 64):
        np.testing.assert_array_equal(predict_volume_3d(net, image, (8, 10, 10), (2, 4, 4), 3, CPU,
                                                        batch_size=batch), ref)


def test_gaussian_importance_is_nnunet_s_map():
    w = gaussian_importance((9, 5, 7))
    assert w.shape == (9, 5, 7) and w.dtype == torch.float32
    assert float(w[4, 2, 3]) == 1.0 and float(w.min()) > 0
    # separable, sigma = size / 8: one step off centre along the first axis is exp(-0.5 (1 / 1.125)^2)
    assert float(w[5, 2, 3]) == pytest.approx(np.exp(-0.5 * (1 / 1.125) ** 2), rel=1e-6)


def test_gaussian_weighting_changes_the_average():
    """Ramp 0..9, patch 4, stride 2: windows at 0, 2, 4, 6 with class-1 probabilities sigma(-2.9),
    sigma(-0.9) = 0.289, sigma(1.1) = 0.750, sigma(3.1). Voxel 4 is the centre of window 1 and the
    edge of window 2: uniformly (0.289 + 0.750) / 2 > 0.5 -> 1; with the Gaussian (sigma = 4 / 8,
    weights 1 at the centre, exp(-4.5) / exp(-0.5) = 0.0183 at the edge) 0.297 -> 0."""
    image = np.broadcast_to(np.arange(10, dtype=np.float32), (2, 2, 10)).copy()
    uniform = predict_volume_3d(WindowMean(), image, (2, 2, 4), (1, 1, 2), 2, CPU)
    weighted = predict_volume_3d(WindowMean(), image, (2, 2, 4), (1, 1, 2), 2, CPU, gaussian=True)
    np.testing.assert_array_equal(uniform[0, 0], [0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(weighted[0, 0], [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="batch_size"):
        predict_volume_3d(WindowMean(), image, (2, 2, 4), (1, 1, 2), 2, CPU, batch_size=0)


def test_largest_component_option_of_the_protocol():
    image = np.zeros((10, 10, 10), np.float32)
    image[1:4, 1:4, 1:4] = 1  # 27 voxels
    image[7:9, 7:9, 7:9] = 1  # 8 voxels, not touching the first
    dataset = {"dims": 3, "patch_size": [8, 8, 8], "stride": [2, 2, 2], "num_classes": 2}
    plain = predict_volume(LabelEcho(2), image, dataset, CPU)
    assert plain.sum() == 35
    kept = predict_volume(LabelEcho(2), image, {**dataset, "largest_component": True}, CPU)
    assert kept.sum() == 27 and kept[1:4, 1:4, 1:4].all()
    # diagonal neighbours are one component (26-connectivity, skimage's default)
    diag = np.zeros((3, 3, 3), np.uint8)
    diag[0, 0, 0] = diag[1, 1, 1] = 1
    np.testing.assert_array_equal(keep_largest_component(diag), diag)


def test_coverage_is_the_window_count_per_voxel():
    """Size 10, patch 4, stride 3: windows at 0, 3, 6 cover positions 3 and 6 twice, the rest
    once; along a second axis of size 3 with patch 2, stride 1 (windows 0, 1) the middle row is
    covered twice, so the product there is 4."""
    from semiseg.inference.predict import _coverage

    count = _coverage((3, 10), (2, 4), (1, 3))
    np.testing.assert_array_equal(count[0], [1, 1, 1, 2, 1, 1, 2, 1, 1, 1])
    np.testing.assert_array_equal(count[1], [2, 2, 2, 4, 2, 2, 4, 2, 2, 2])
    assert count.dtype == torch.float32


def test_the_inference_network_is_a_folded_copy_with_the_same_logits():
    """Batch norm folded into the convolutions, ReLUs in place, channels_last_3d and oneDNN
    convolutions on a CPU: logits agree to float rounding, the caller's network is untouched."""
    from semiseg.inference.predict import _inference_network

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
                        nn.ConvTranspose3d(4, 4, 2, stride=2), nn.BatchNorm3d(4), nn.ReLU(),
                        nn.Conv3d(4, 3, 1))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 2)
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 1, 6, 7, 8)
    with torch.no_grad():
        fast = _inference_network(net, CPU)
        assert not any(isinstance(m, nn.BatchNorm3d) for m in fast.modules())
        assert all(m.inplace for m in fast.modules() if isinstance(m, nn.ReLU))
        torch.testing.assert_close(fast(x), net(x), rtol=1e-5, atol=1e-5)
    assert not any(m.inplace for m in net.modules() if isinstance(m, nn.ReLU))
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]) and v.is_contiguous()


def test_a_stride_past_the_patch_is_refused_rather_than_leaving_voxels_background():
    """X = 20, patch 4, stride 6: windows at 0, 6, 12 and 16 (pulled back) cover 0..3, 6..9 and
    12..19; voxels 4, 5, 10 and 11 of each of the 2 x 2 rows are in no window (16 voxels)."""
    image = np.ones((2, 2, 20), np.float32)
    for predict in (predict_volume_3d, predict_volume_3d_reference):
        with pytest.raises(ValueError, match=r"stride \[1, 1, 6\]\) leaves 16 of the 80 voxels of a \[2, 2, 20\] "
                                             r"volume in no window"):
            predict(LabelEcho(2), image, (2, 2, 4), (1, 1, 6), 2, CPU)
    # a stride equal to the patch tiles the volume: every voxel is predicted
    assert predict_volume_3d(LabelEcho(2), image, (2, 2, 4), (1, 1, 4), 2, CPU).all()
