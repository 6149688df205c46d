"""Small data sets the tests make themselves (no network): generated glyphs of three labels as a
folder of PNGs, a zip, an npz, and a fake torchvision root in torchvision's own raw IDX format."""

from __future__ import annotations

import io
import math
import struct
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import ebm_play
from ebm_play.images import to_uint8

LABELS = ("bar", "cross", "ring")  # sorted, as ImageFolder sorts class folders


def glyph(label: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One hand-drawn-looking glyph, black on white (as a person would scan or draw it)."""
    img = Image.new("L", (size, size), 255)
    d = ImageDraw.Draw(img)
    c, r = size / 2 + rng.uniform(-6, 6, 2), rng.uniform(14, 24)
    w = int(rng.integers(3, 8))
    if label == "bar":
        a = rng.uniform(-0.4, 0.4)
        d.line([(c[0] - r * math.sin(a), c[1] - r * math.cos(a)), (c[0] + r * math.sin(a), c[1] + r * math.cos(a))], 0, w)
    elif label == "cross":
        d.line([(c[0] - r, c[1] - r), (c[0] + r, c[1] + r)], 0, w)
        d.line([(c[0] - r, c[1] + r), (c[0] + r, c[1] - r)], 0, w)
    else:
        d.ellipse([c[0] - r, c[1] - r * rng.uniform(0.7, 1), c[0] + r, c[1] + r], outline=0, width=w)
    return img


def glyphs(per_class: int = 6, seed: int = 0) -> dict[str, list[Image.Image]]:
    rng = np.random.default_rng(seed)
    return {label: [glyph(label, rng) for _ in range(per_class)] for label in LABELS}


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def make_folder(root: Path, per_class: int = 6) -> Path:
    for label, imgs in glyphs(per_class).items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(imgs):
            img.save(root / label / f"{i:03d}.png")
    return root


def make_zip(path: Path, per_class: int = 6, top: str = "glyphs", extra: dict[str, bytes] | None = None) -> Path:
    """The same pictures as :func:`make_folder`, under one top folder, plus macOS junk."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for label, imgs in glyphs(per_class).items():
            for i, img in enumerate(imgs):
                z.writestr(f"{top}/{label}/{i:03d}.png", png(img))
        z.writestr(f"__MACOSX/{top}/._x.png", b"junk")
        z.writestr(f"{top}/.DS_Store", b"junk")
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return path


def glyph_arrays(per_class: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """The glyphs preprocessed as drawings are: uint8 N×28×28 and labels 0..2."""
    xs, ys = [], []
    for k, imgs in enumerate(glyphs(per_class).values()):
        xs += [to_uint8(ebm_play.preprocess(img))[0] for img in imgs]
        ys += [k] * len(imgs)
    return np.stack(xs), np.array(ys)


def make_npz(path: Path, per_class: int = 6, **arrays) -> Path:
    x, y = glyph_arrays(per_class)
    np.savez_compressed(path, **({"x": x, "y": y} | arrays))
    return path


def _idx(data: np.ndarray) -> bytes:
    """torchvision's raw MNIST format: magic (dtype code 0x08 = uint8, number of dims), sizes, bytes."""
    return struct.pack(">HBB", 0, 8, data.ndim) + struct.pack(f">{data.ndim}I", *data.shape) + data.astype(np.uint8).tobytes()


def make_torchvision_root(root: Path, folder: str = "FashionMNIST", per_class: int = 6, prefix: str = "",
                          label_offset: int = 0) -> Path:
    """A torchvision root whose ``<folder>/raw`` holds the four IDX files (train: 2/3 of the glyphs,
    test: the rest). ``prefix`` names EMNIST's files (``emnist-letters-``), whose test split is
    ``test`` and whose images are stored transposed."""
    x, y = glyph_arrays(per_class)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    test = np.arange(len(x)) % 3 == 2
    if prefix:
        x = x.transpose(0, 2, 1)
    names = ("train", "test") if prefix else ("train", "t10k")
    for part, keep in zip(names, (~test, test)):
        (raw / f"{prefix}{part}-images-idx3-ubyte").write_bytes(_idx(x[keep]))
        (raw / f"{prefix}{part}-labels-idx1-ubyte").write_bytes(_idx(y[keep] + label_offset))
    return root
