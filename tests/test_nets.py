"""Networks (U-Net 2D/3D, V-Net), the network registry and feature perturbations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from semiseg.nets import (
    NETWORKS,
    UNet,
    VNet,
    build_network,
    count_parameters,
    feature_dropout,
    feature_noise,
    init_weights,
    perturb_features,
    random_perturbation,
)


def ssl4mis_unet_parameters(in_ch: int, n_cls: int, ch=(16, 32, 64, 128, 256),
                            bilinear: bool = False, k: int = 2) -> int:
    """Parameter count of SSL4MIS's 2D ``UNet``, layer by layer, written out independently.

    conv(a->b, kernel s) has a*b*s^k + b parameters, batch norm 2b.
    """
    def conv(a, b, s):
        return a * b * s ** k + b

    def block(a, b):  # conv-bn-act-drop-conv-bn-act
        return conv(a, b, 3) + 2 * b + conv(b, b, 3) + 2 * b

    total = block(in_ch, ch[0])
    total += sum(block(ch[i - 1], ch[i]) for i in range(1, len(ch)))
    for i in range(len(ch) - 1, 0, -1):
        deep, skip = ch[i], ch[i - 1]
        total += conv(deep, skip, 1) if bilinear else conv(deep, skip, 2)  # 1x1 or deconv 2
        total += block(2 * skip, skip)
    total += conv(ch[0], n_cls, 3)  # SSL4MIS's output conv is 3x3
    return total


# ---------------------------------------------------------------- shapes and interface


def test_unet2d_shapes():
    torch.manual_seed(0)
    net = UNet(1, 4).eval()
    x = torch.randn(1, 1, 64, 64)
    assert net(x).shape == (1, 4, 64, 64)
    features = net.encode(x)
    assert [tuple(f.shape) for f in features] == [
        (1, 16, 64, 64), (1, 32, 32, 32), (1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4)]
    logits, penultimate = net.decode(features)
    assert logits.shape == (1, 4, 64, 64)
    assert penultimate.shape == (1, 16, 64, 64)  # full resolution, channels[0]


@pytest.mark.parametrize("up_mode", ["transpose", "linear", "nearest"])
def test_unet2d_up_modes(up_mode):
    net = UNet(1, 3, up_mode=up_mode).eval()
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 3, 32, 32)


def test_unet3d_shapes():
    torch.manual_seed(0)
    net = UNet(1, 2, dims=3).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    logits, penultimate = net.decode(net.encode(x))
    assert logits.shape == (1, 2, 32, 32, 32)
    assert penultimate.shape == (1, 16, 32, 32, 32)
    assert isinstance(net.encoder.in_block[0], nn.Conv3d)


def test_vnet_shapes():
    torch.manual_seed(0)
    net = VNet(1, 2).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    features = net.encode(x)
    assert [f.shape[1] for f in features] == [16, 32, 64, 128, 256]
    assert features[-1].shape[2:] == (2, 2, 2)
    logits, penultimate = net.decode(features)
    assert logits.shape == (1, 2, 32, 32, 32)
    assert penultimate.shape == (1, 16, 32, 32, 32)


def test_vnet_smallest_input_in_eval_mode():
    # Four stride-2 downsamplings: 16 is the smallest size (bottleneck 1x1x1).
    net = VNet(1, 2).eval()
    assert net(torch.randn(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


@pytest.mark.parametrize("make, shape", [
    (lambda: UNet(1, 4), (2, 1, 32, 32)),
    (lambda: UNet(1, 2, dims=3, channels=(4, 8, 16), dropout=(0.0, 0.1, 0.2)), (1, 1, 8, 8, 8)),
    (lambda: VNet(1, 2, n_filters=4, normalization="instancenorm"), (1, 1, 32, 32, 32)),
])
def test_forward_equals_encode_decode(make, shape):
    torch.manual_seed(0)
    net = make().eval()
    x = torch.randn(shape)
    with torch.no_grad():
        logits, penultimate = net.decode(net.encode(x))
        staged_logits, stages = net.decode_stages(net.encode(x))
        direct = net(x)
    torch.testing.assert_close(direct, logits)
    torch.testing.assert_close(staged_logits, logits)
    torch.testing.assert_close(stages[-1], penultimate)
    assert len(stages) == len(net.encode(x)) - 1


def test_decoder_reads_penultimate():
    """The logits are the output convolution applied to the penultimate map."""
    net = UNet(1, 4).eval()
    with torch.no_grad():
        logits, penultimate = net.decode(net.encode(torch.randn(1, 1, 32, 32)))
        torch.testing.assert_close(net.decoder.out_conv(penultimate), logits)


def test_new_decoder_is_independent_and_compatible():
    torch.manual_seed(0)
    net = UNet(1, 4).eval()
    extra = net.new_decoder(up_mode="nearest").eval()
    assert extra is not net.decoder
    with torch.no_grad():
        features = net.encode(torch.randn(1, 1, 32, 32))
        a, _ = net.decode(features)
        b, _ = extra(features)
    assert a.shape == b.shape and not torch.allclose(a, b)
    assert not set(map(id, extra.parameters())) & set(map(id, net.parameters()))
    with pytest.raises(TypeError):
        net.new_decoder(channels=(1, 2))
    v = VNet(1, 2, n_filters=4)
    assert v.new_decoder(up_mode="linear").up[0][0].__class__ is nn.Upsample


def test_gradient_reaches_encoder():
    net = UNet(1, 2, channels=(4, 8, 16), dropout=(0.0, 0.1, 0.2))
    net(torch.randn(2, 1, 16, 16)).sum().backward()
    assert net.encoder.in_block[0].weight.grad.abs().sum() > 0


def test_vnet_dropout_only_in_training():
    torch.manual_seed(0)
    net = VNet(1, 2, n_filters=4)
    x = torch.randn(2, 1, 16, 16, 16)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.allclose(net(x), net(x))  # Monte-Carlo dropout (UA-MT)
    assert not any(isinstance(m, nn.Dropout3d) for m in VNet(1, 2, 4, has_dropout=False).modules())


# ---------------------------------------------------------------- parameter counts


def test_unet2d_parameter_count_matches_ssl4mis():
    # Default decoder = the reference's: SSL4MIS's Decoder builds UpBlock with its default
    # bilinear=True (1x1 conv + upsampling), the "1.81 M" of SSL4MIS's / ALHVR's / BCP's UNet.
    assert count_parameters(UNet(1, 4)) == 1_813_764
    assert ssl4mis_unet_parameters(1, 4, bilinear=True) == 1_813_764
    assert count_parameters(UNet(1, 4, bilinear=True)) == 1_813_764
    # The transposed-convolution decoder stays a named option.
    assert count_parameters(UNet(1, 4, up_mode="transpose")) == 1_944_324
    assert count_parameters(UNet(1, 4, bilinear=False)) == 1_944_324
    assert ssl4mis_unet_parameters(1, 4) == 1_944_324


def test_unet3d_and_vnet_parameter_counts():
    assert count_parameters(UNet(1, 2, dims=3, up_mode="transpose")) == 5_648_706
    assert ssl4mis_unet_parameters(1, 2, k=3) == 5_648_706
    assert count_parameters(UNet(1, 2, dims=3)) == ssl4mis_unet_parameters(1, 2, bilinear=True, k=3)
    # UA-MT's VNet(n_channels=1, n_classes=2, normalization="batchnorm"): ~9.44 M.
    assert count_parameters(VNet(1, 2)) == 9_448_866


# ---------------------------------------------------------------- registry and validation


def test_build_network_registry():
    assert set(NETWORKS) == {"unet", "vnet", "resnet34"}
    net = build_network("unet", in_channels=1, num_classes=4, dims=2, bilinear=True)
    assert isinstance(net, UNet) and net.up_mode == "linear"
    net3 = build_network("unet", in_channels=1, num_classes=2, dims=3, channels=[4, 8],
                         dropout=[0.0, 0.1])
    assert net3.dims == 3 and net3.channels == (4, 8)
    assert isinstance(build_network("vnet", in_channels=1, num_classes=2, dims=3, n_filters=4),
                      VNet)
    with pytest.raises(ValueError, match="unet, vnet"):
        build_network("resnet", in_channels=1, num_classes=2, dims=2)
    with pytest.raises(ValueError, match="3D only"):
        build_network("vnet", in_channels=1, num_classes=2, dims=2)


def test_invalid_arguments_and_sizes():
    with pytest.raises(ValueError, match="dims"):
        UNet(1, 2, dims=1)
    with pytest.raises(ValueError, match="dropout"):
        UNet(1, 2, channels=(4, 8), dropout=(0.1,))
    with pytest.raises(ValueError, match="contradicts"):
        UNet(1, 2, bilinear=True, up_mode="transpose")
    with pytest.raises(ValueError, match="normalization"):
        VNet(1, 2, normalization="layernorm")
    with pytest.raises(ValueError, match="divisible by 16"):
        UNet(1, 2)(torch.randn(1, 1, 40, 40))
    with pytest.raises(ValueError, match="expects input"):
        UNet(1, 2)(torch.randn(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="divisible by 16"):
        VNet(1, 2, n_filters=4)(torch.randn(1, 1, 16, 16, 24))


def test_init_weights():
    net = init_weights(UNet(1, 2, channels=(4, 8), dropout=(0.0, 0.0)), "kaiming")
    bn = net.encoder.in_block[1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    init_weights(net, "xavier")
    with pytest.raises(ValueError, match="kaiming"):
        init_weights(net, "orthogonal")


# ---------------------------------------------------------------- perturbations


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_feature_noise_shape_bounds_and_batch_sharing():
    x = torch.rand(2, 3, 8, 8) + 0.5
    y = feature_noise(x, 0.3, generator=_gen(0))
    assert y.shape == x.shape and not torch.equal(x, y)
    ratio = y / x
    assert ratio.min() >= 0.7 - 1e-6 and ratio.max() <= 1.3 + 1e-6
    # One noise tensor of shape (1, C, *spatial): shared over the batch, varying by channel.
    torch.testing.assert_close(ratio[0], ratio[1])
    assert not torch.allclose(ratio[:, 0], ratio[:, 1])
    assert torch.equal(feature_noise(x, 0.0, generator=_gen(0)), x)


def test_feature_dropout_hand_worked():
    # One sample, two channels whose mean is 0, 0.1, ..., 1.0 along x: gamma in [0.7, 0.9]
    # so positions with attention >= 0.9 are always dropped and those < 0.7 always kept.
    ramp = torch.linspace(0, 1, 11)
    x = torch.stack([ramp * 0.5, ramp * 1.5]).view(1, 2, 1, 11)
    for seed in range(20):
        y = feature_dropout(x, generator=_gen(seed))
        kept = (y != 0).any(dim=1).view(-1)
        assert kept[1:7].all()  # attention 0.1 .. 0.6 (0 stays 0 either way)
        assert not kept[9:].any()  # attention 0.9, 1.0
        # Dropping is all-or-nothing per position, across channels.
        torch.testing.assert_close(y[:, :, :, kept.view(-1)], x[:, :, :, kept.view(-1)])


def test_feature_dropout_per_sample_maximum():
    x = torch.stack([torch.linspace(0, 1, 10), torch.linspace(0, 100, 10)]).view(2, 1, 10)
    y = feature_dropout(x, generator=_gen(0))
    # The same relative positions are dropped in both samples despite the 100x scale.
    assert torch.equal(y[0] == 0, y[1] == 0)


def test_perturbations_are_deterministic_with_a_seeded_generator():
    x = torch.randn(2, 4, 8, 8)
    for fn in (feature_noise, feature_dropout):
        torch.testing.assert_close(fn(x, generator=_gen(3)), fn(x, generator=_gen(3)))
    a = [random_perturbation(x, _gen(s)) for s in range(6)]
    b = [random_perturbation(x, _gen(s)) for s in range(6)]
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v)
    assert not torch.allclose(feature_noise(x, generator=_gen(1)),
                              feature_noise(x, generator=_gen(2)))


def _kind(x: torch.Tensor, y: torch.Tensor) -> str:
    """'dropout' if y is x with some positions zeroed, else 'noise'."""
    return "dropout" if bool(((y == x) | (y == 0)).all()) else "noise"


def test_random_perturbation_uses_both():
    x = torch.rand(1, 2, 8, 8) + 0.1
    kinds = {_kind(x, random_perturbation(x, _gen(s))) for s in range(30)}
    assert kinds == {"dropout", "noise"}


def test_perturb_features_levels_and_one_draw_for_random():
    torch.manual_seed(0)
    features = UNet(1, 2).eval().encode(torch.randn(1, 1, 32, 32))
    features = [f.abs() + 0.1 for f in features]
    out = perturb_features(features, "noise", generator=_gen(0))
    assert all(o.shape == f.shape and not torch.equal(o, f) for o, f in zip(out, features))
    only_deep = perturb_features(features, feature_dropout, levels=[-1], generator=_gen(0))
    assert all(o is f for o, f in zip(only_deep[:-1], features[:-1]))
    assert not torch.equal(only_deep[-1], features[-1])
    # "random" makes one choice for the whole list (ALHVR), fresh draws per level.
    for seed in range(10):
        out = perturb_features(features, "random", generator=_gen(seed))
        assert len({_kind(f, o) for f, o in zip(features, out)}) == 1
    with pytest.raises(ValueError, match="known"):
        perturb_features(features, "cutout")
    with pytest.raises(IndexError):
        perturb_features(features, "noise", levels=[5])


def test_perturbed_decoder_pass_has_gradient():
    net = UNet(1, 2, channels=(4, 8, 16), dropout=(0.0, 0.0, 0.0))
    features = net.encode(torch.randn(2, 1, 16, 16))
    logits, _ = net.decode(perturb_features(features, "noise", generator=_gen(0)))
    logits.sum().backward()
    assert net.encoder.in_block[0].weight.grad.abs().sum() > 0
