"""Feature-space perturbations of Cross-Consistency Training and its medical descendants.

Ouali et al., "Semi-Supervised Semantic Segmentation with Cross-Consistency Training" (CVPR
2020, arXiv:2003.09005, https://github.com/yassouali/CCT) train auxiliary decoders on perturbed
encoder features and ask them to agree with the main decoder. Two of its perturbations are the
ones the medical literature kept:

- **feature noise** (:func:`feature_noise`): ``x + x * n`` with ``n ~ U(-r, r)``, ``r = 0.3``.
  In the public code (CCT ``FeatureNoiseDecoder``, SSL4MIS ``FeatureNoise``, ALHVR) the noise is
  drawn with shape ``x.shape[1:]`` and broadcast over the batch: it is independent per channel
  *and* per position, and shared by the samples of a batch. We follow that code.
- **feature dropout** (:func:`feature_dropout`): the channel-mean of ``x`` is an attention map;
  positions whose attention reaches ``gamma`` times the per-sample maximum are zeroed in every
  channel, with one ``gamma ~ U(0.7, 0.9)`` drawn per call (shared by the batch, as the public
  code draws it once with ``np.random.uniform``). Dropping the most activated region forces the
  decoder to use the rest of the context.

Which features are perturbed:

- CCT itself perturbs only the encoder output (its decoders read a single feature map);
- the U-Net adaptations perturb **every encoder level**, skips included: SSL4MIS ``UNet_CCT``
  builds ``[FeatureNoise()(f) for f in features]`` (likewise dropout and feature dropout) for
  its three auxiliary decoders, and ALHVR (Lei et al., "Adaptive Learning of High-Value Regions
  for Semi-Supervised Medical Image Segmentation", https://github.com/ziziyao/ALHVR,
  ``UNet_fea_aux``) draws one coin per forward pass (``random() > 0.5`` -> feature dropout,
  else feature noise) and applies that one perturbation to all five levels, each level with its
  own noise draw;
- URPC (Luo et al., MICCAI 2021) does not perturb encoder features: it applies dropout, feature
  dropout and feature noise to *decoder* stage outputs before its deep-supervision heads (use
  :meth:`~semiseg.nets.unet.EncoderDecoder.decode_stages` for those maps).

:func:`perturb_features` therefore defaults to all levels, and its ``"random"`` choice makes
one draw for the whole list, as ALHVR does.

Randomness: every function takes an optional ``torch.Generator``. Random tensors are drawn on
the generator's device and moved to ``x``'s device, so a CPU generator seeds CUDA features
reproducibly; without a generator the global torch RNG is used.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "PERTURBATIONS",
    "choose_perturbation",
    "feature_dropout",
    "feature_noise",
    "perturb_features",
    "random_perturbation",
]

Perturbation = Callable[..., Tensor]


def _rand(shape: Sequence[int], generator: torch.Generator | None,
          device: torch.device) -> Tensor:
    """``U[0, 1)`` float32 tensor of ``shape`` on ``device``, drawn from ``generator`` if given."""
    draw_device = generator.device if generator is not None else device
    return torch.rand(tuple(shape), generator=generator, device=draw_device).to(device)


def _uniform_scalar(low: float, high: float, generator: torch.Generator | None) -> float:
    """One draw from ``U[low, high)`` as a Python float (host side, like ``np.random.uniform``)."""
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((), generator=generator, device=device)
    return low + (high - low) * float(u)


def feature_noise(x: Tensor, uniform_range: float = 0.3, *,
                  generator: torch.Generator | None = None) -> Tensor:
    """Multiplicative uniform noise ``x * (1 + n)``, ``n ~ U(-r, r)`` of shape ``(1, C, *spatial)``.

    Args:
        x: features ``(B, C, *spatial)``.
        uniform_range: ``r``; CCT uses 0.3.
        generator: optional RNG for reproducible draws.

    The noise is independent per channel and spatial position and shared over the batch, which
    is what CCT / SSL4MIS / ALHVR's ``FeatureNoise`` does (it samples ``x.shape[1:]``).
    Gradients flow to ``x``; the noise itself is a constant.
    """
    if uniform_range < 0:
        raise ValueError(f"uniform_range must be >= 0, got {uniform_range}")
    u = _rand((1, *x.shape[1:]), generator, x.device)
    noise = (2.0 * u - 1.0) * uniform_range
    return x * (1.0 + noise.to(x.dtype))


def feature_dropout(x: Tensor, low: float = 0.7, high: float = 0.9, *,
                    generator: torch.Generator | None = None) -> Tensor:
    """Zero the most activated positions: keep where ``mean_c(x) < gamma * max(mean_c(x))``.

    Args:
        x: features ``(B, C, *spatial)``.
        low, high: range of ``gamma``; CCT uses ``[0.7, 0.9]``.
        generator: optional RNG for reproducible draws.

    ``gamma`` is one draw per call; the maximum is taken per sample over all positions; the
    mask is shared by all channels. Gradients flow to the kept positions.
    """
    if not 0.0 <= low <= high:
        raise ValueError(f"need 0 <= low <= high, got low={low}, high={high}")
    gamma = _uniform_scalar(low, high, generator)
    attention = x.detach().mean(dim=1, keepdim=True)
    peak = attention.flatten(1).amax(dim=1).view(-1, *([1] * (x.dim() - 1)))
    keep = attention < peak * gamma
    return x * keep.to(x.dtype)


#: Perturbations by name, for configuration.
PERTURBATIONS: dict[str, Perturbation] = {
    "noise": feature_noise,
    "dropout": feature_dropout,
}


def choose_perturbation(generator: torch.Generator | None = None) -> Perturbation:
    """Draw one of :func:`feature_dropout` / :func:`feature_noise` with probability 1/2 each.

    ALHVR's rule: a uniform draw above 0.5 selects feature dropout, otherwise feature noise.
    """
    return feature_dropout if _uniform_scalar(0.0, 1.0, generator) > 0.5 else feature_noise


def random_perturbation(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Apply feature dropout or feature noise to ``x``, chosen at random (see above)."""
    return choose_perturbation(generator)(x, generator=generator)


def perturb_features(features: Sequence[Tensor], fn: Union[str, Perturbation], *,
                     generator: torch.Generator | None = None,
                     levels: Iterable[int] | None = None) -> list[Tensor]:
    """Perturb a list of encoder features; untouched levels are passed through as they are.

    Args:
        features: encoder output, shallow to deep (``EncoderDecoder.encode``).
        fn: a perturbation ``fn(x, generator=...)`` or a name: ``"noise"``, ``"dropout"`` or
            ``"random"``. ``"random"`` draws *one* perturbation for the whole list (ALHVR).
        generator: optional RNG passed to every draw.
        levels: indices of the levels to perturb (negative indices allowed); ``None`` perturbs
            every level, as SSL4MIS's ``UNet_CCT`` and ALHVR do. ``levels=[-1]`` perturbs only
            the bottleneck, as CCT's single-feature decoders did.

    Each level gets its own random draw (a fresh noise tensor / ``gamma``), as in the public
    code, where a new ``FeatureNoise`` / ``FeatureDropout`` call is made per level.
    """
    if isinstance(fn, str):
        if fn == "random":
            fn = choose_perturbation(generator)
        elif fn in PERTURBATIONS:
            fn = PERTURBATIONS[fn]
        else:
            known = ", ".join(sorted([*PERTURBATIONS, "random"]))
            raise ValueError(f"unknown perturbation {fn!r}; known: {known}")
    n = len(features)
    if levels is None:
        selected = set(range(n))
    else:
        selected = set()
        for level in levels:
            if not -n <= level < n:
                raise IndexError(f"level {level} out of range for {n} feature levels")
            selected.add(level % n)
    return [fn(f, generator=generator) if i in selected else f for i, f in enumerate(features)]
