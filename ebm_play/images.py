"""Images in and out: PNG grids, ``.npz`` tensors and MNIST-style preprocessing of any picture.

Tensors are N×1×28×28 float32 in [−1, 1] (the ``.npz`` key is ``x``). A drawing or upload is
turned into that format the way MNIST digits were made: ink found whatever the polarity, cropped,
scaled to fit a 20×20 box and centred by mass in 28×28.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import EBMError
from .files import atomic_write

MAX_PIXELS = 25_000_000  # decompression-bomb guard: larger pictures are refused, not decoded
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def check_pixels(x: torch.Tensor, what: str = "images") -> torch.Tensor:
    """Validate a batch of model inputs: shape N×1×28×28, finite, in [−1, 1]."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.dim() == 3 and tuple(x.shape[1:]) == (28, 28):
        x = x.unsqueeze(1)
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise EBMError(f"{what} must have shape N×1×28×28, got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise EBMError(f"{what}: no images")
    if not x.is_floating_point():
        raise EBMError(f"{what} must be float in [−1, 1], got {x.dtype}")
    x = x.float()
    if not torch.isfinite(x).all():
        raise EBMError(f"{what}: NaN or infinite values")
    lo, hi = x.min().item(), x.max().item()
    if lo < -1.0001 or hi > 1.0001:
        raise EBMError(f"{what} must have pixels in [−1, 1], found [{lo:.3g}, {hi:.3g}]")
    return x.clamp(-1, 1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """N×1×28×28 in [−1, 1] → N×28×28 uint8."""
    return ((x.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).squeeze(1).numpy()


def grid(x: torch.Tensor, nrow: int | None = None, scale: int = 3, pad: int = 2) -> Image.Image:
    """Tile images into one greyscale picture, upsampled with nearest neighbour so pixels stay crisp.
    The grey (64) separators are drawn between and around tiles only when there are several: a single
    image comes out bare, so saving a digit and reading it back gives the same digit."""
    a = to_uint8(x)
    n = len(a)
    pad = pad if n > 1 else 0
    nrow = nrow or max(1, int(np.ceil(np.sqrt(n))))
    rows = int(np.ceil(n / nrow))
    h = w = 28 * scale
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad), 64, np.uint8)
    for i, img in enumerate(a):
        r, c = divmod(i, nrow)
        big = img.repeat(scale, 0).repeat(scale, 1)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = big
    return Image.fromarray(canvas, mode="L")


def open_image(data: bytes | str | os.PathLike | Image.Image) -> Image.Image:
    """Open a picture from bytes or a path, refusing non-images, truncated files and bombs."""
    if isinstance(data, Image.Image):
        img = data
    else:
        src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(src)
                if img.width * img.height > MAX_PIXELS:
                    raise EBMError(f"image is {img.width}×{img.height}, larger than {MAX_PIXELS:,} pixels")
                img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise EBMError("image is too large (decompression bomb guard)") from e
        except UnidentifiedImageError as e:
            raise EBMError("not an image file PIL can read (PNG, JPEG, GIF, BMP, WebP …)") from e
        except FileNotFoundError as e:
            raise EBMError(f"no such file: {data}") from e
        except (OSError, SyntaxError, ValueError) as e:
            raise EBMError(f"cannot read the image: {e}") from e
    if img.width < 1 or img.height < 1:
        raise EBMError("image has no pixels")
    return img


FRAME_TOLERANCE = 0.04  # grey levels (of 1) within which a ring of pixels counts as one colour


def _inside_frame(grey: np.ndarray) -> tuple[slice, slice]:
    """The part of a picture inside a uniform frame (a border of rings of one colour that differs
    from the picture's own background just inside it, like the grey padding of a saved grid); the
    whole picture when there is none. At most a quarter of each side is taken off."""
    h, w = grey.shape
    colour, k, most = None, 0, min(h, w) // 4
    while k < most:
        ring = np.concatenate([grey[k, k:w - k], grey[h - 1 - k, k:w - k], grey[k:h - k, k], grey[k:h - k, w - 1 - k]])
        if ring.max() - ring.min() > FRAME_TOLERANCE or (colour is not None and abs(ring.mean() - colour) > FRAME_TOLERANCE):
            break
        colour = ring.mean() if colour is None else colour
        k += 1
    if k == 0 or k >= most:
        return slice(None), slice(None)
    inner = grey[k:h - k, k:w - k]
    background = np.median(np.concatenate([inner[0], inner[-1], inner[:, 0], inner[:, -1]]))
    if abs(background - colour) <= FRAME_TOLERANCE:  # the rings were the picture's own background
        return slice(None), slice(None)
    return slice(k, h - k), slice(k, w - k)


def ink(img: Image.Image) -> np.ndarray:
    """A float array in [0, 1], 1 = ink, whatever the mode, alpha and polarity of the picture."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        rng = a.max() - a.min()
        a = (a - a.min()) / rng if rng > 0 else np.zeros_like(a)
        grey, alpha = a, None
    else:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255.0
        grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
        alpha = rgba[..., 3]
    inner = _inside_frame(grey)
    grey = grey[inner]
    alpha = None if alpha is None else alpha[inner]
    if alpha is not None and alpha.min() < 0.99:
        # Strokes on a transparent layer: the alpha channel is the drawing.
        return alpha if alpha.max() > 0 else np.zeros_like(alpha)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return 1.0 - grey if np.median(border) > 0.5 else grey  # dark-on-light → light-on-dark


def preprocess(data: bytes | str | os.PathLike | Image.Image | np.ndarray) -> torch.Tensor:
    """Any picture → 1×1×28×28 in [−1, 1], made the way MNIST digits were made."""
    if isinstance(data, np.ndarray):
        if data.ndim not in (2, 3) or data.size == 0:
            raise EBMError(f"image array must be H×W or H×W×C, got shape {data.shape}")
        arr = data
        if arr.dtype != np.uint8:
            arr = np.nan_to_num(arr.astype(np.float64))
            arr = (255 * (arr - arr.min()) / max(arr.max() - arr.min(), 1e-12)).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        data = Image.fromarray(arr)
    a = ink(open_image(data))
    if a.max() < 0.05:
        raise EBMError("the image is empty: draw or upload a digit")
    a = a / a.max()
    ys, xs = np.nonzero(a > 0.1)
    a = a[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    h, w = a.shape
    s = 20.0 / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    small = np.asarray(Image.fromarray((a * 255).astype(np.uint8)).resize((nw, nh), Image.LANCZOS), dtype=np.float64) / 255
    canvas = np.zeros((28, 28))
    total = small.sum()
    cy = (small.sum(1) @ np.arange(nh)) / total if total > 0 else nh / 2
    cx = (small.sum(0) @ np.arange(nw)) / total if total > 0 else nw / 2
    top = int(np.clip(round(14 - cy), 0, 28 - nh))  # MNIST's centre of mass is at pixel 14.0 (test digits: 14.0 ± 0.3)
    left = int(np.clip(round(14 - cx), 0, 28 - nw))
    canvas[top: top + nh, left: left + nw] = small
    canvas = np.clip(canvas / max(canvas.max(), 1e-12), 0, 1)
    return torch.from_numpy(canvas).float().mul(2).sub(1).view(1, 1, 28, 28)


def existing_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise EBMError(f"no such file: {p}")
    return p


def npz_array(p: Path, keys: tuple[str, ...]) -> np.ndarray:
    """The first of ``keys`` found in the ``.npz`` file ``p`` (no pickles), or one line saying why not."""
    try:
        with np.load(p, allow_pickle=False) as z:
            key = next((k for k in keys if k in z), None)
            if key is None:
                raise EBMError(f"{p.name}: no array {' or '.join(map(repr, keys))} (found: {', '.join(z.files) or 'none'})")
            return z[key]
    except (ValueError, OSError) as e:
        raise EBMError(f"{p.name}: not a readable .npz file ({e})") from e


def load_images(path: str | os.PathLike) -> torch.Tensor:
    """``.npz`` (key ``x``) or any picture file → N×1×28×28 in [−1, 1]."""
    p = existing_file(path)
    if p.suffix.lower() == ".npz":
        x = npz_array(p, ("x",))
        if x.dtype.kind != "f":
            raise EBMError(f"{p.name}: 'x' must be float32 in [−1, 1], got {x.dtype}")
        return check_pixels(torch.from_numpy(x.astype(np.float32)), f"{p.name}: 'x'")
    return preprocess(p)


IMAGE_OUTPUTS = (".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")  # the grid picture types save_images writes
OUTPUT_TYPES = (".npz", *IMAGE_OUTPUTS)


def save_images(x: torch.Tensor, path: str | os.PathLike, **arrays) -> Path:
    """``.npz`` writes the tensors (key ``x`` plus any extra arrays); an image suffix writes a grid.
    Written atomically (:func:`ebm_play.files.atomic_write`), never over a non-regular file."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        data = {"x": x.detach().cpu().float().numpy(), **{k: np.asarray(v) for k, v in arrays.items()}}

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez_compressed(f, **data)
    elif suffix in IMAGE_OUTPUTS:
        picture = grid(x)

        def write(tmp: str) -> None:
            picture.save(tmp, format=Image.registered_extensions()[suffix])
    else:
        raise EBMError(f"unknown output type {p.suffix or '(none)'}: use .png or .npz")
    return atomic_write(p, write)


def npz_count(path: str | os.PathLike, key: str = "x") -> int:
    """How many 28×28 images array ``key`` of an ``.npz`` holds, read from its header: nothing is
    decompressed, so a small file that would inflate to gigabytes is refused before it is loaded."""
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as z, z.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(f)[0]
    except KeyError:
        raise EBMError(f"{p.name}: no array '{key}'") from None
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise EBMError(f"{p.name}: not a readable .npz file ({e})") from None
    size = int(np.prod(shape, dtype=object))
    if size % 784:
        raise EBMError(f"{p.name}: '{key}' must hold 28×28 images, got shape {tuple(shape)}")
    return size // 784


def load_batch(paths: list[str | os.PathLike], names: list[str] | None = None, max_images: int = 2048,
               max_bytes: int = 20 * 2**20) -> torch.Tensor:
    """Picture files and ``.npz`` files (key ``x``) → one N×1×28×28 batch. Each file's size and image
    count are checked before it is read, and a message names the file it is about (``names``: what
    to call them, e.g. the names they were uploaded under)."""
    names = names or [Path(p).name for p in paths]
    xs, total = [], 0
    for path, name in zip(paths, names):
        try:
            if Path(path).stat().st_size > max_bytes:
                raise EBMError(f"file is larger than {max_bytes // 2**20} MB")
            npz = str(path).lower().endswith(".npz")
            total += npz_count(path) if npz else 1
            if total > max_images:
                raise EBMError(f"too many images: more than {max_images:,} in the batch")
            xs.append(load_images(path) if npz else preprocess(path))
        except EBMError as e:
            raise EBMError(f"{name}: {e}") from None
        except OSError:
            raise EBMError(f"{name}: cannot be read") from None
    if not xs:
        raise EBMError("no images in the batch")
    return torch.cat(xs)
