"""MNIST as tensors N×1×28×28 in [−1, 1], from torchvision or from the sample shipped in the package.

torchvision's MNIST reads ``<root>/MNIST/raw``; the root comes from the ``root`` argument, the
``EBM_PLAY_DATA`` environment variable, or ``./data``. Without it (offline, fresh machine) the
bundled sample keeps everything working: 8,000 training and 2,000 test digits of the real MNIST
(Y. LeCun, C. Cortes, C. J. C. Burges; CC BY-SA 3.0), uint8 in ``assets/mnist_sample.npz``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import EBMError

SAMPLE = Path(__file__).resolve().parent / "assets" / "mnist_sample.npz"


@dataclass
class Digits:
    x: torch.Tensor  # N×1×28×28 float32 in [−1, 1]
    y: torch.Tensor  # (N,) int64 labels
    source: str  # where they came from, for logs and model cards


def to_unit(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 N×28×28 → float N×1×28×28 in [−1, 1]."""
    t = torch.as_tensor(np.asarray(images))
    return (t.float() / 127.5 - 1.0).reshape(-1, 1, 28, 28)


def default_root() -> str:
    return os.environ.get("EBM_PLAY_DATA", "data")


def sample_digits(train: bool = True) -> Digits:
    """The real MNIST digits shipped with the package (8,000 train / 2,000 test)."""
    with np.load(SAMPLE) as z:
        split = "train" if train else "test"
        return Digits(to_unit(z[f"{split}_x"]), torch.as_tensor(z[f"{split}_y"]).long(),
                      f"bundled MNIST sample ({split})")


def mnist(train: bool = True, root: str | os.PathLike | None = None, download: bool = False,
          classes: list[int] | None = None, limit: int | None = None) -> Digits:
    """Full MNIST when torchvision finds it under ``root`` (or can download it, if asked);
    otherwise the bundled sample, which is reported in ``source``."""
    root = str(root or default_root())
    digits = None
    try:
        from torchvision.datasets import MNIST

        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)  # a download attempt offline must fail, not hang
        try:
            ds = MNIST(root=root, train=train, download=download)
        finally:
            socket.setdefaulttimeout(old)
        digits = Digits(to_unit(ds.data), ds.targets.long(), f"MNIST {'train' if train else 'test'} ({root})")
    except Exception:  # missing, partial or unreachable: fall back to the bundled digits
        digits = sample_digits(train)
    if classes is not None:
        keep = torch.isin(digits.y, torch.tensor(sorted(set(classes))))
        if not keep.any():
            raise EBMError(f"no digits of classes {classes}")
        digits = Digits(digits.x[keep], digits.y[keep], digits.source + f", digits {sorted(set(classes))}")
    if limit is not None:
        digits = Digits(digits.x[:limit], digits.y[:limit], digits.source)
    return digits


def uniform_noise(n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """Where fresh chains start: uniform noise in [−1, 1]."""
    return torch.rand((n, 1, 28, 28), generator=generator, device=device) * 2 - 1
