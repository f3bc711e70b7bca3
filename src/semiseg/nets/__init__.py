"""Segmentation networks and feature perturbations.

Every network is an :class:`~semiseg.nets.unet.EncoderDecoder`: ``encode(x) -> features``
(shallow to deep), ``decode(features) -> (logits, penultimate)``, ``forward(x) -> logits``,
``decode_stages(features) -> (logits, stages)`` and ``new_decoder(**overrides)`` for methods
that hang several decoders on one encoder.

Networks are built by name with :func:`build_network`, so the method catalogue can say
``network: unet`` and pass its keyword arguments through.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from semiseg.nets.perturb import (
    PERTURBATIONS,
    choose_perturbation,
    feature_dropout,
    feature_noise,
    perturb_features,
    random_perturbation,
)
from semiseg.nets.heads import MultiDecoder
from semiseg.nets.pyramid import PyramidNet
from semiseg.nets.resnet import ResNetED
from semiseg.nets.sdf import Discriminator, SignedDistanceNet
from semiseg.nets.unet import UP_MODES, EncoderDecoder, UNet, UNetDecoder, layer_types
from semiseg.nets.vnet import VNet, VNetDecoder

__all__ = [
    "NETWORKS",
    "PERTURBATIONS",
    "UP_MODES",
    "Discriminator",
    "EncoderDecoder",
    "MultiDecoder",
    "PyramidNet",
    "ResNetED",
    "SignedDistanceNet",
    "UNet",
    "UNetDecoder",
    "VNet",
    "VNetDecoder",
    "build_network",
    "choose_perturbation",
    "count_parameters",
    "network_for",
    "feature_dropout",
    "feature_noise",
    "init_weights",
    "input_channels",
    "layer_types",
    "perturb_features",
    "random_perturbation",
]


def _build_unet(*, in_channels: int, num_classes: int, dims: int, **kwargs: Any) -> UNet:
    return UNet(in_channels, num_classes, dims=dims, **kwargs)


def _build_vnet(*, in_channels: int, num_classes: int, dims: int, **kwargs: Any) -> VNet:
    if dims != 3:
        raise ValueError(f"network 'vnet' is 3D only, got dims={dims}")
    return VNet(in_channels, num_classes, **kwargs)


def _build_resnet(*, in_channels: int, num_classes: int, dims: int, **kwargs: Any) -> ResNetED:
    return ResNetED(in_channels, num_classes, dims=dims, **kwargs)


#: Registry: lowercase name -> factory ``(*, in_channels, num_classes, dims, **kwargs)``.
NETWORKS: dict[str, Callable[..., EncoderDecoder]] = {
    "unet": _build_unet,
    "vnet": _build_vnet,
    "resnet34": _build_resnet,
}


def build_network(name: str, *, in_channels: int, num_classes: int, dims: int,
                  **kwargs: Any) -> EncoderDecoder:
    """Build the network registered as ``name`` (``"unet"``, ``"vnet"`` or ``"resnet34"``).

    ``kwargs`` go to the network's constructor (e.g. ``channels``, ``up_mode`` for the U-Net;
    ``n_filters``, ``normalization``, ``has_dropout`` for the V-Net; ``n_filters``, ``has_dropout``
    for the ResNet-34 encoder–decoder of MCF), except ``extra_decoders``
    (a list of up modes) and ``evaluate``, which wrap it in a
    :class:`~semiseg.nets.heads.MultiDecoder` (MC-Net's several decoders on one encoder), and
    ``pyramid`` (a dict of :class:`~semiseg.nets.pyramid.PyramidNet`'s arguments, ``{}`` for its
    defaults), which wraps it in URPC's deep-supervision pyramid, and ``sdf_head`` (true: a
    :class:`~semiseg.nets.sdf.SignedDistanceNet`, DTC's and SASSNet's signed distance head beside
    the segmentation head); at most one of the three wrappers. Raises ``ValueError`` for
    an unknown name, listing the known ones, and for a V-Net asked for ``dims != 3``.
    """
    try:
        factory = NETWORKS[name]
    except KeyError:
        raise ValueError(
            f"unknown network {name!r}; known networks: {', '.join(sorted(NETWORKS))}"
        ) from None
    extra_decoders = kwargs.pop("extra_decoders", None)
    evaluate = kwargs.pop("evaluate", "first")
    pyramid = kwargs.pop("pyramid", None)
    sdf_head = bool(kwargs.pop("sdf_head", False))
    if sum((bool(extra_decoders), pyramid is not None, sdf_head)) > 1:
        raise ValueError("network_args extra_decoders, pyramid and sdf_head cannot be combined")
    net = factory(in_channels=in_channels, num_classes=num_classes, dims=dims, **kwargs)
    if pyramid is not None:
        return PyramidNet(net, **pyramid)
    if sdf_head:
        return SignedDistanceNet(net, num_classes)
    if extra_decoders:
        return MultiDecoder(net, extra_decoders, evaluate)
    return net


def network_for(spec: dict) -> EncoderDecoder:
    """A fresh network for a run spec: its method's ``network`` and ``network_args`` (the dataset
    entry's, under the method entry's), the dataset's input channels (``channels``, 1 where the
    spec has none), classes and dims. The one place training, inference and figures build a run's
    network, so the three agree."""
    return build_network(spec["method"]["network"], in_channels=spec["dataset"].get("channels", 1),
                         num_classes=spec["dataset"]["num_classes"],
                         dims=spec["dataset"]["dims"], **(spec["method"].get("network_args") or {}))


def input_channels(net: nn.Module) -> int:
    """The input channels of a network built here: its own ``in_channels``, or that of the network a
    wrapper (:class:`SignedDistanceNet`, :class:`MultiDecoder`, :class:`PyramidNet`) holds as ``base``."""
    while not hasattr(net, "in_channels") and hasattr(net, "base"):
        net = net.base
    if not hasattr(net, "in_channels"):
        raise ValueError(f"{type(net).__name__} says neither its in_channels nor its base network")
    return int(net.in_channels)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (all of them, or only those requiring grad)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def init_weights(module: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise convolution weights in place and reset normalisation affine parameters.

    ``scheme`` is ``"kaiming"`` (``kaiming_normal_``) or ``"xavier"`` (``xavier_normal_``).
    SSL4MIS's cross pseudo supervision (Chen et al., CVPR 2021, arXiv:2106.01226) gives its two
    networks these two different initialisations so that they start apart; as there, only
    (non-transposed) convolution weights are redrawn, their biases are left as PyTorch set them,
    and batch-norm weights/biases are set to 1/0. Returns ``module``.
    """
    inits = {"kaiming": nn.init.kaiming_normal_, "xavier": nn.init.xavier_normal_}
    if scheme not in inits:
        raise ValueError(f"unknown init scheme {scheme!r}; known: {', '.join(sorted(inits))}")
    init = inits[scheme]
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            init(m.weight)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module
