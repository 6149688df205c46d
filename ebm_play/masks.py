"""Inpainting masks. One convention everywhere: a mask is 1×1×28×28 float, **1 = keep** the pixel (it is
held fixed while sampling), 0 = fill it in.

Every way a mask arrives ends here: half of the image (``keep_half``), an array or file where
bright means keep (``from_array``, ``from_file``: the CLI's ``--mask``), and strokes painted over
the part to erase on a drawing pad (``from_paint``: the app's mask pad).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from .errors import EBMError
from .images import existing_file, npz_array, open_image

HALVES = ("top", "bottom", "left", "right")
PAINT_COVER = 0.25  # a model pixel is erased when at least this share of it is painted


def keep_half(which: str) -> torch.Tensor:
    """The mask that keeps the ``which`` half (top, bottom, left or right) and fills the other."""
    if which not in HALVES:
        raise EBMError(f"unknown half {which!r}: use one of {', '.join(HALVES)}")
    keep = torch.zeros(1, 1, 28, 28)
    region = {"top": (slice(0, 14), slice(None)), "bottom": (slice(14, 28), slice(None)),
              "left": (slice(None), slice(0, 14)), "right": (slice(None), slice(14, 28))}[which]
    keep[0, 0][region] = 1
    return keep


def opposite(which: str) -> str:
    """The other half: erasing the top half means keeping the bottom one."""
    if which not in HALVES:
        raise EBMError(f"unknown half {which!r}: use one of {', '.join(HALVES)}")
    return {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}[which]


def from_array(m, what: str = "mask") -> torch.Tensor:
    """28×28 values (any float or int array) → mask; values above 0.5 keep their pixel."""
    a = np.asarray(m, dtype=np.float64)
    if a.size != 784:
        raise EBMError(f"{what} must have 28×28 values, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise EBMError(f"{what} contains NaN or infinite values")
    return torch.from_numpy((a.reshape(28, 28) > 0.5).astype(np.float32)).view(1, 1, 28, 28)


def from_file(path: str | os.PathLike) -> torch.Tensor:
    """A mask file: ``.npz`` (array ``mask`` or ``x``, above 0.5 = keep) or a picture (white = keep),
    read at 28×28 with nearest-neighbour so a mask stays a mask."""
    p = existing_file(path)
    if p.suffix.lower() == ".npz":
        return from_array(npz_array(p, ("mask", "x")), f"{p.name}: mask")
    img = open_image(p).convert("L").resize((28, 28), resample=Image.NEAREST)
    return from_array(np.asarray(img) > 127, p.name)


def paint_coverage(layer: Image.Image) -> np.ndarray:
    """28×28 share of each model pixel that a paint layer covers: its alpha where it has transparency,
    else its brightness (an opaque black-and-white layer: white = painted)."""
    a = np.asarray(layer.convert("RGBA"), dtype=np.float64)
    paint = a[..., 3] if a[..., 3].min() < 250 else a[..., :3].mean(-1)
    small = Image.fromarray(paint.astype(np.float32), mode="F").resize((28, 28), Image.BOX)
    return np.clip(np.asarray(small, dtype=np.float64) / 255.0, 0, 1)


def from_paint(layers: list[Image.Image]) -> torch.Tensor:
    """Strokes painted over the part to erase (one or more layers) → mask; painted pixels are filled."""
    if not layers:
        raise EBMError("no mask: paint over the part to erase (or choose a half)")
    erase = np.max([paint_coverage(layer) for layer in layers], axis=0) >= PAINT_COVER
    if not erase.any():
        raise EBMError("the mask is empty: paint over the part to erase (or choose a half)")
    return torch.from_numpy(~erase).float().view(1, 1, 28, 28)
