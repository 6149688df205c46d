"""Render the bundled non-digit data set, ``ebm_play/assets/glyphs.npz``: 8 symbols × 500 images.

    python scripts/make_glyphs.py [--per-class 500] [--out ebm_play/assets/glyphs.npz]

Each image is one symbol (♥ ♠ ♣ ♦ ★ ☺ ♪ ✓) drawn in one of four DejaVu fonts (Debian's
fonts-dejavu-core; Bitstream Vera licence, free to use and redistribute), randomly rotated (±15°),
sheared (±0.25), stretched (0.75–1.25 in width) and made bolder or thinner, then made MNIST-like by
``ebm_play.preprocess`` exactly as a drawing is. The run is deterministic (seed 0) for a given
Pillow and FreeType; the file records both. Keys: x (N×28×28 uint8, white on black), y (N,) int64,
classes (names), about (where it came from).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import PIL
from PIL import features
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere, no install needed

from ebm_play.images import preprocess, to_uint8  # noqa: E402
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf")
SYMBOLS = {"heart": "♥", "spade": "♠", "club": "♣", "diamond": "♦", "star": "★", "smiley": "☺", "note": "♪",
           "check": "✓"}
CANVAS = 128


def glyph(font: ImageFont.FreeTypeFont, ch: str, rng: np.random.Generator) -> Image.Image:
    """One jittered rendering of ``ch``, white on black, before preprocessing."""
    img = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(img).text((CANVAS / 2, CANVAS / 2), ch, fill=255, font=font, anchor="mm")
    angle = math.radians(rng.uniform(-15, 15))
    shear, stretch = rng.uniform(-0.25, 0.25), rng.uniform(0.75, 1.25)
    # the inverse map output → input about the centre: rotation · shear · 1/stretch in x
    a, b = math.cos(angle) / stretch, -math.sin(angle) + shear
    d, e = math.sin(angle) / stretch, math.cos(angle)
    c0 = CANVAS / 2
    img = img.transform(img.size, Image.AFFINE, (a, b, c0 - a * c0 - b * c0, d, e, c0 - d * c0 - e * c0),
                        resample=Image.BILINEAR)
    weight = rng.integers(-1, 2)  # thinner, as drawn, bolder
    if weight:
        img = img.filter(ImageFilter.MaxFilter(5) if weight > 0 else ImageFilter.MinFilter(3))
    return img


def check_font(font: ImageFont.FreeTypeFont, name: str) -> None:
    """Refuse a font that lacks a symbol (it would draw its empty-box glyph instead)."""
    def mask(ch):
        img = Image.new("L", (CANVAS, CANVAS), 0)
        ImageDraw.Draw(img).text((CANVAS / 2, CANVAS / 2), ch, fill=255, font=font, anchor="mm")
        return np.asarray(img)
    missing = mask("\ue000")  # a private-use code point: no font here draws it
    for sym, ch in SYMBOLS.items():
        if np.array_equal(mask(ch), missing):
            raise SystemExit(f"{name} has no glyph for {sym} ({ch})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", type=int, default=500)
    ap.add_argument("--out", default=str(ROOT / "ebm_play" / "assets" / "glyphs.npz"))
    args = ap.parse_args()
    fonts = []
    for name in FONTS:
        if not (FONT_DIR / name).is_file():
            raise SystemExit(f"missing font {FONT_DIR / name} (apt-get install fonts-dejavu-core)")
        font = ImageFont.truetype(str(FONT_DIR / name), 72)
        check_font(font, name)
        fonts.append(font)
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for label, ch in enumerate(SYMBOLS.values()):
        for i in range(args.per_class):
            xs.append(to_uint8(preprocess(glyph(fonts[i % len(fonts)], ch, rng)))[0])
            ys.append(label)
    x, y = np.stack(xs), np.array(ys, dtype=np.int64)
    about = (f"ebm_play glyphs: {len(SYMBOLS)} symbols × {args.per_class}, rendered by scripts/make_glyphs.py "
             f"(seed 0, Pillow {PIL.__version__}, FreeType {features.version_module('freetype2')}) in DejaVu fonts "
             "(Bitstream Vera / DejaVu licence); the images: CC0")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, x=x, y=y, classes=np.array(list(SYMBOLS)), about=np.array(about))
    print(f"wrote {args.out}: {len(x)} images, {Path(args.out).stat().st_size / 1024:.0f} kB")


if __name__ == "__main__":
    main()
