"""Corruptions for the denoising demos: Gaussian, salt-and-pepper and occlusion noise.

Every function takes images N×1×28×28 in [−1, 1] and returns a new tensor of the same shape, still
in [−1, 1]; the input is never modified. Randomness comes only from the ``generator`` (or
``seed``) given, so the same seed always gives the same corruption, and each image of a batch gets
its own draw.

Strength means, by kind:

- ``gaussian``: σ of additive Gaussian noise in pixel units (the pixel range [−1, 1] is 2 wide),
  then clamped to [−1, 1];
- ``salt_pepper``: the fraction of pixels replaced, exactly round(strength·784) per image, half of
  them (rounded down) by black (−1, "pepper") and the rest by white (+1, "salt");
- ``occlusion``: the fraction of the image covered by one square patch of side
  round(28·√strength) at a uniformly random position, filled with ``fill`` (default +1, a white
  blot of ink over the digit).
"""

from __future__ import annotations

import math

import torch

from .errors import EBMError
from .images import check_pixels
from .runtime import make_generator

# kind → (lowest, highest strength, what the strength means); the UI builds its sliders from this.
KINDS: dict[str, tuple[float, float, str]] = {
    "gaussian": (0.0, 2.0, "σ of the noise (pixels span 2, from −1 to 1)"),
    "salt_pepper": (0.0, 1.0, "fraction of pixels set to black or white"),
    "occlusion": (0.0, 1.0, "fraction of the image covered by a square patch"),
}
ALIASES = {"gauss": "gaussian", "normal": "gaussian", "salt-and-pepper": "salt_pepper",
           "salt and pepper": "salt_pepper", "salt_and_pepper": "salt_pepper", "s&p": "salt_pepper",
           "salt-pepper": "salt_pepper", "occlude": "occlusion", "patch": "occlusion"}
PIXELS = 28 * 28


def kind_of(kind: str) -> str:
    """The canonical name of a corruption kind (accepts a few spellings), or an EBMError."""
    k = ALIASES.get(str(kind).strip().lower(), str(kind).strip().lower()) if isinstance(kind, str) else None
    if k not in KINDS:
        raise EBMError(f"unknown noise kind {kind!r}; choose one of: {', '.join(KINDS)}")
    return k


def check_strength(kind: str, strength) -> float:
    kind = kind_of(kind)
    lo, hi, what = KINDS[kind]
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise EBMError(f"noise strength must be a number, got {strength!r}")
    if not lo <= strength <= hi:
        raise EBMError(f"{kind} noise strength ({what}) must be between {lo:g} and {hi:g}, got {strength:g}")
    return float(strength)


def _rand(shape, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device)


def gaussian(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """x + σ·ξ with ξ ~ N(0, 1) per pixel, clamped to [−1, 1]."""
    xi = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
    return (x + sigma * xi).clamp(-1, 1)


def salt_pepper(x: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """round(amount·784) distinct pixels per image replaced: the first half (rounded down) of a random
    order by −1, the rest by +1."""
    n = x.shape[0]
    k = round(amount * PIXELS)
    out = x.clone().reshape(n, PIXELS)
    if k == 0:
        return out.reshape(x.shape)
    order = _rand((n, PIXELS), generator).argsort(dim=1).to(x.device)  # a random permutation per image
    pepper, salt = order[:, : k // 2], order[:, k // 2: k]
    out.scatter_(1, pepper, -1.0)
    out.scatter_(1, salt, 1.0)
    return out.reshape(x.shape)


def occlusion(x: torch.Tensor, amount: float, generator: torch.Generator, fill: float = 1.0) -> torch.Tensor:
    """One square patch of side round(28·√amount) per image, at a uniformly random position,
    set to ``fill``."""
    if not (isinstance(fill, (int, float)) and -1 <= fill <= 1):
        raise EBMError(f"occlusion fill must be between −1 and 1, got {fill!r}")
    side = min(28, round(28 * math.sqrt(amount)))
    out = x.clone()
    if side == 0:
        return out
    span = 28 - side + 1
    corners = (_rand((x.shape[0], 2), generator) * span).long().clamp(max=span - 1).tolist()
    for i, (top, left) in enumerate(corners):
        out[i, :, top: top + side, left: left + side] = float(fill)
    return out


FUNCTIONS = {"gaussian": gaussian, "salt_pepper": salt_pepper, "occlusion": occlusion}


def corrupt(x: torch.Tensor, kind: str, strength: float, seed: int | None = None,
            generator: torch.Generator | None = None, **options) -> torch.Tensor:
    """Corrupt images with noise of ``kind`` (``gaussian``, ``salt_pepper``, ``occlusion``) and
    ``strength`` (see the module docstring). Pass a ``generator`` or a ``seed`` for reproducible noise."""
    kind = kind_of(kind)
    strength = check_strength(kind, strength)
    x = check_pixels(x, "images to corrupt")
    if generator is None:
        generator = make_generator(seed, torch.device("cpu"))
    unknown = set(options) - ({"fill"} if kind == "occlusion" else set())
    if unknown:
        raise EBMError(f"{kind} noise has no option {min(unknown)!r}")
    return FUNCTIONS[kind](x, strength, generator, **options)
