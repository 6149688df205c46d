"""Training data as tensors N×1×28×28 in [−1, 1]: MNIST, and the data a person brings.

torchvision's MNIST reads ``<root>/MNIST/raw``; the root comes from the ``root`` argument, the
``EBM_PLAY_DATA`` environment variable, or ``./data``. Without it (offline, fresh machine) the
bundled sample keeps everything working: 8,000 training and 2,000 test digits of the real MNIST
(Y. LeCun, C. Cortes, C. J. C. Burges; CC BY-SA 3.0), uint8 in ``assets/mnist_sample.npz``.

:func:`load_dataset` reads any other source into a :class:`Dataset` with a held-out part, a label
set and a content hash: a folder or ``.zip`` of pictures (labels from sub-folder names, as
torchvision's ``ImageFolder``), an ``.npz`` with ``x`` and optional ``y``, torchvision's grayscale
28×28 sets by name, or the bundled ``glyphs`` (8 rendered symbols, ``scripts/make_glyphs.py``).
Pictures go through :func:`ebm_play.images.preprocess`, exactly as a drawing does; arrays already
28×28 are taken as they are.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import socket
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .archives import CLI_LIMITS, MB, UPLOAD_LIMITS, ImageFiles, Limits
from .errors import EBMError
from .images import open_image, preprocess
from .landscapes import DATASETS as POINT_SETS
from .landscapes import MAX_POINTS, make_dataset

ASSETS = Path(__file__).resolve().parent / "assets"
SAMPLE = ASSETS / "mnist_sample.npz"
BUNDLED = {"glyphs": ASSETS / "glyphs.npz"}  # sets shipped with the package, by name
# torchvision's grayscale 28×28 sets by name: (torchvision class, EMNIST split)
TORCHVISION = {"mnist": ("MNIST", None), "fashion-mnist": ("FashionMNIST", None), "kmnist": ("KMNIST", None),
               "emnist-letters": ("EMNIST", "letters"), "emnist-digits": ("EMNIST", "digits")}
POINTS_PER_SET = 2000  # points of a named 2-D set (as the app's Landscape tab draws them, seed 0)
NAMES = (*BUNDLED, *TORCHVISION, *POINT_SETS)
MAX_CSV_BYTES = 5 * MB
HELD_OUT = 0.1  # share of a data set without an official test split that is held out
SPLIT_SEED = 0
SHRINK_TO = 512  # larger pictures are shrunk to this side before preprocessing (bounded memory)


@dataclass
class Digits:
    x: torch.Tensor  # N×1×28×28 float32 in [−1, 1]
    y: torch.Tensor | None  # (N,) int64 labels; None for unlabelled data of a Dataset
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


# --- data a person brings -------------------------------------------------------------------------
@dataclass
class Dataset:
    """Images with a held-out part, label names and a content hash (:func:`load_dataset`)."""

    name: str  # "glyphs", "fashion-mnist", "icons.zip" …
    train: Digits
    test: Digits  # the held-out part: the reference for OOD percentiles and for evaluation
    classes: list[str]  # label names, index = label; [] when unlabelled
    source: str  # where it came from, for logs
    hash: str  # sha256 of every image and label, before the split
    split: str  # how the held-out part was chosen
    arg: str  # what ``--data`` takes to load it again
    labels_from_folders: bool = False
    held_out: float = HELD_OUT
    skipped: list[str] = field(default_factory=list)  # junk entries (hidden files, __MACOSX …)

    @property
    def labelled(self) -> bool:
        return self.train.y is not None

    @property
    def size(self) -> int:
        return len(self.train.x) + len(self.test.x)

    @property
    def unit(self) -> str:
        return "points" if self.train.x.dim() == 2 else "images"

    @property
    def is_mnist(self) -> bool:
        return self.name == "mnist"

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per class: (training images, held-out images); one entry, ``all``, when unlabelled."""
        if not self.labelled:
            return {"all": (len(self.train.x), len(self.test.x))}
        tr = torch.bincount(self.train.y, minlength=len(self.classes)).tolist()
        te = torch.bincount(self.test.y, minlength=len(self.classes)).tolist()
        return {c: (a, b) for c, a, b in zip(self.classes, tr, te)}

    def summary(self) -> str:
        """One line: size, split, classes with counts, hash."""
        per = ", ".join(f"{c} {a + b}" for c, (a, b) in list(self.counts().items())[:12])
        more = f" … ({len(self.classes) - 12} more)" if len(self.classes) > 12 else ""
        labels = f"{len(self.classes)} classes ({per}{more})" if self.labelled else "no labels"
        return (f"{self.name}: {self.size:,} {self.unit} ({len(self.train.x):,} to train, {len(self.test.x):,} held out: "
                f"{self.split}), {labels}, hash {self.hash[:12]}")

    def info(self) -> dict:
        """What a weights file records about its data (``info["dataset"]``)."""
        return {"name": self.name, "arg": self.arg, "size": self.size, "unit": self.unit, "train": len(self.train.x),
                "held_out": len(self.test.x), "split": self.split, "held_out_fraction": self.held_out,
                "hash": self.hash, "classes": list(self.classes), "labels_from_folders": self.labels_from_folders}

    @property
    def nbytes(self) -> int:
        """Memory the images and labels take."""
        parts = (self.train.x, self.train.y, self.test.x, self.test.y)
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    def reference(self) -> Dataset:
        """This set without its training images: what a model of it is judged against (OOD
        percentiles among the held-out part), small enough to keep once the upload is let go."""
        y = None if self.train.y is None else self.train.y[:0].clone()
        return replace(self, train=Digits(self.train.x[:0].clone(), y, self.train.source))

    def preview(self, n: int = 64) -> torch.Tensor:
        """Up to ``n`` training images as the model sees them, the classes taking turns."""
        if not self.labelled:
            return self.train.x[:n]
        per = [torch.nonzero(self.train.y == k).flatten() for k in range(len(self.classes))]
        order = [int(ix[i]) for i in range(max(map(len, per), default=0)) for ix in per if i < len(ix)]
        return self.train.x[order[:n]]

    def check_trainable(self, kind: str, mirrored: float = 0.0) -> None:
        """Refuse, in one line, data a model kind cannot train on."""
        if mirrored and not (self.is_mnist or self.name == "emnist-digits"):
            raise EBMError("mirrored negatives mirror the digits 2–7 and 9: they are for MNIST digits only")
        if kind != "jem":
            return
        if not self.labelled:
            hint = " (add --labels-from-folders)" if self.arg and Path(self.arg).suffix.lower() != ".npz" else ""
            raise EBMError(f"JEM needs labels, and {self.name} has none{hint}")
        if len(self.classes) < 2:
            raise EBMError(f"JEM needs at least 2 classes; {self.name} has {len(self.classes)}")
        few = [(c, a + b) for c, (a, b) in self.counts().items() if a + b < 2]
        if few:
            raise EBMError(f"JEM needs at least 2 images per class (one to train on, one held out); "
                           f"class {few[0][0]!r} has {few[0][1]}")


def content_hash(xs: list[torch.Tensor], ys: list[torch.Tensor | None], classes: list[str]) -> str:
    """sha256 of the images (float32), the labels (int64) and the class names, in order."""
    h = hashlib.sha256()
    for x in xs:
        h.update(np.ascontiguousarray(x.numpy(), dtype=np.float32).data)
    for y in ys:
        if y is not None:
            h.update(np.ascontiguousarray(y.numpy(), dtype="<i8").data)
    h.update(json.dumps(list(classes)).encode())
    return h.hexdigest()


def split_indices(n: int, y: torch.Tensor | None, fraction: float = HELD_OUT,
                  seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(training, held-out) indices: ``fraction`` of each class held out at random (at least one
    image of every class with two or more, never its last one)."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if y is None else [np.flatnonzero(y.numpy() == k) for k in range(int(y.max()) + 1)]
    held = [rng.permutation(g)[: min(len(g) - 1, max(1, round(fraction * len(g))))] for g in groups if len(g) >= 2]
    held = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(n), held)
    return torch.from_numpy(train), torch.from_numpy(held)


def _own(name: str, x: torch.Tensor, y: torch.Tensor | None, classes: list[str], source: str, arg: str,
         held_out: float, labels_from_folders: bool = False, skipped: list[str] | None = None) -> Dataset:
    """A Dataset from all its images: hash first, then a seeded per-class split."""
    if len(x) < 2:
        raise EBMError(f"{name}: {len(x)} image; at least 2 are needed (one to train on, one held out)")
    digest = content_hash([x], [y], classes)
    tr, te = split_indices(len(x), y, held_out)
    train, test = (Digits(x[i], None if y is None else y[i], f"{source} ({what})")
                   for i, what in ((tr, "train"), (te, "held out")))
    split = f"{held_out:.0%} {'per class ' if y is not None else ''}at random, seed {SPLIT_SEED}"
    return Dataset(name, train, test, classes, source, digest, split, arg, labels_from_folders, held_out, skipped or [])


def _shrunk(img: Image.Image) -> Image.Image:
    if max(img.size) <= SHRINK_TO:
        return img
    try:
        img = img.copy()
        img.thumbnail((SHRINK_TO, SHRINK_TO), Image.LANCZOS)
    except (ValueError, OSError):  # a mode PIL cannot resample: preprocessed at full size
        pass
    return img


def picture(data: bytes, name: str, limits: Limits = UPLOAD_LIMITS) -> torch.Tensor:
    """One picture file's bytes → 1×1×28×28, as a drawing is preprocessed; the size is checked
    from the header before anything is decoded, and one-colour pictures are refused."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the size is judged here, against our own limit
            with Image.open(io.BytesIO(data)) as probe:
                w, h = probe.size
    except Exception:  # noqa: BLE001 - open_image below says what is wrong
        w = h = 0
    if w * h > limits.max_pixels:
        raise EBMError(f"{name}: {w}×{h} pixels, over the limit of {limits.max_pixels:,} per picture")
    try:
        img = open_image(data)
        lo_hi = img.getextrema()
        pairs = lo_hi if isinstance(lo_hi[0], tuple) else (lo_hi,)
        if all(lo == hi for lo, hi in pairs):
            raise EBMError("the picture is all one colour")
        return preprocess(_shrunk(img))
    except EBMError as e:
        raise EBMError(f"{name}: {e}") from e


def folder_labels(paths: list[tuple[str, ...]], limits: Limits = UPLOAD_LIMITS) -> tuple[torch.Tensor, list[str]]:
    """Labels from sub-folder names, as torchvision's ``ImageFolder``: below a common top folder
    (a zip usually has one), each picture's first folder is its class; classes sorted by name."""
    depth = 0  # strip a top folder all share while something sits deeper than class/picture below it
    while (all(len(p) > depth + 1 for p in paths) and any(len(p) > depth + 2 for p in paths)
           and len({p[depth] for p in paths}) == 1):
        depth += 1
    loose = next((p for p in paths if len(p) - depth < 2), None)
    if loose is not None:
        raise EBMError(f"{'/'.join(loose)}: not in a class folder (with labels from folders, each picture "
                       "sits in a sub-folder named after its class)")
    names = sorted({p[depth] for p in paths})
    if len(names) > limits.max_classes:
        raise EBMError(f"{len(names):,} class folders, over the limit of {limits.max_classes:,}")
    index = {c: i for i, c in enumerate(names)}
    return torch.tensor([index[p[depth]] for p in paths], dtype=torch.long), names


def _pictures(path: Path, limits: Limits, labels_from_folders: bool, held_out: float, arg: str) -> Dataset:
    with ImageFiles(path, limits) as files:
        if not files.paths:
            raise EBMError(f"{path.name}: no pictures in it")
        y, classes = folder_labels(files.paths, limits) if labels_from_folders else (None, [])
        x = torch.empty(len(files.paths), 1, 28, 28)
        for i, parts in enumerate(files.paths):
            x[i] = picture(files.read(i), "/".join(parts), limits)[0]
        skipped = files.skipped
    kind = "folder" if path.is_dir() else "zip"
    return _own(path.name, x, y, classes, f"{kind} {path.name}", arg, held_out, labels_from_folders, skipped)


def _npy_header(zf: zipfile.ZipFile, member: str) -> tuple[tuple, np.dtype]:
    with zf.open(member) as f:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise EBMError(f"{member}: unsupported .npy version {version}")
        shape, _, dtype = read(f)
    return shape, dtype


def unit_images(x: np.ndarray, name: str = "x") -> torch.Tensor:
    """An array of N 28×28 images → N×1×28×28 in [−1, 1]. Integers are 0–255; floats in [−1, 1]
    (with negative values), [0, 1] or [0, 255]. One-colour images are refused."""
    x = x.reshape(len(x), 28, 28)
    if x.dtype.kind in "ui":
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise EBMError(f"{name}: integer pixels must be 0–255, found {lo}–{hi}")
        t = torch.from_numpy(x.astype(np.float32)) / 127.5 - 1
    else:
        t = torch.from_numpy(x.astype(np.float32))
        if not torch.isfinite(t).all():
            raise EBMError(f"{name}: NaN or infinite pixels")
        lo, hi = t.min().item(), t.max().item()
        if lo >= 0 and hi <= 1:
            t = t * 2 - 1
        elif lo >= 0 and hi <= 255:
            t = t / 127.5 - 1
        elif not (lo >= -1 and hi <= 1):
            raise EBMError(f"{name}: float pixels must lie in [−1, 1], [0, 1] or [0, 255], found [{lo:.3g}, {hi:.3g}]")
    flat = t.flatten(1)
    flat_bad = torch.nonzero(flat.amax(1) == flat.amin(1)).flatten()
    if len(flat_bad):
        raise EBMError(f"{name}[{int(flat_bad[0])}]: the image is all one colour")
    return t.unsqueeze(1).clamp(-1, 1)


def _labels(z, n: int, name: str) -> tuple[torch.Tensor | None, list[str]]:
    """Optional ``y`` (whole numbers or names) and ``classes`` (names, indexed by y) → (0..K−1, names)."""
    if "y" not in z.files:
        return None, []
    y = z["y"]
    if y.shape != (n,):
        raise EBMError(f"{name}: 'y' must hold one label per image, shape ({n},), got {y.shape}")
    if "classes" in z.files:
        names = [str(c) for c in z["classes"].reshape(-1)]
        if y.dtype.kind not in "ui" or (len(y) and (y.min() < 0 or y.max() >= len(names))):
            raise EBMError(f"{name}: with 'classes', 'y' must be whole numbers from 0 to {len(names) - 1}")
        return torch.from_numpy(y.astype(np.int64)), names
    if y.dtype.kind not in "uiU":
        raise EBMError(f"{name}: 'y' must be whole numbers or names, got {y.dtype}")
    values, index = np.unique(y, return_inverse=True)
    return torch.from_numpy(index.astype(np.int64).reshape(-1)), [str(v) for v in values]


def _npz(path: Path, limits: Limits, held_out: float, arg: str, name: str | None = None) -> Dataset:
    """``x`` (N×28×28 or N×1×28×28) and optional ``y``, ``classes``; shapes and sizes are read from
    the headers before any array is decompressed."""
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise EBMError(f"{path.name}: {size / MB:.1f} MB, over the {limits.max_file_bytes / MB:.0f} MB upload limit")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            if sum(i.file_size for i in infos.values()) > limits.max_total_bytes:
                raise EBMError(f"{path.name}: arrays of over {limits.max_total_bytes / MB:.0f} MB uncompressed (zip bomb guard)")
            if "x.npy" not in infos:
                raise EBMError(f"{path.name}: no array 'x' (found: {', '.join(n[:-4] for n in infos) or 'none'})")
            shapes = {k: _npy_header(zf, f"{k}.npy") for k in ("x", "y", "classes") if f"{k}.npy" in infos}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise EBMError(f"{path.name}: not a readable .npz file ({e})") from e
    (shape, dtype), n = shapes["x"], shapes["x"][0][0] if shapes["x"][0] else 0
    if len(shape) not in (3, 4) or tuple(shape[-2:]) != (28, 28) or (len(shape) == 4 and shape[1] != 1):
        raise EBMError(f"{path.name}: 'x' must be N×28×28 or N×1×28×28, got {'×'.join(map(str, shape))}")
    if dtype.kind not in "uif":
        raise EBMError(f"{path.name}: 'x' must hold numbers (uint8 or float), got {dtype}")
    if n > limits.max_images:
        raise EBMError(f"{path.name}: {n:,} images, over the limit of {limits.max_images:,}")
    if "y" in shapes and shapes["y"][0] != (n,):
        raise EBMError(f"{path.name}: 'y' must hold one label per image, shape ({n},), got {shapes['y'][0]}")
    if "classes" in shapes and math.prod(shapes["classes"][0]) > limits.max_classes:
        raise EBMError(f"{path.name}: over {limits.max_classes:,} classes, the limit")
    try:
        with np.load(path, allow_pickle=False) as z:
            x = unit_images(z["x"], f"{path.name}: x")
            y, classes = _labels(z, len(x), path.name)
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise EBMError(f"{path.name}: not a readable .npz file ({e})") from e
    if len(classes) > limits.max_classes:
        raise EBMError(f"{path.name}: {len(classes):,} classes, over the limit of {limits.max_classes:,}")
    return _own(name or path.name, x, y, classes, f"{'bundled ' if name else ''}{path.name}", arg, held_out)


@contextlib.contextmanager
def _timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)  # a download attempt offline must fail, not hang
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _official(name: str, train: Digits, test: Digits, classes: list[str], arg: str) -> Dataset:
    digest = content_hash([train.x, test.x], [train.y, test.y], classes)
    return Dataset(name, train, test, classes, train.source, digest, "the official test split", arg, held_out=0.0)


def _torchvision(name: str, root: str | os.PathLike | None, download: bool, arg: str) -> Dataset:
    """One of torchvision's grayscale 28×28 sets, its test split held out; MNIST falls back to the
    bundled sample as :func:`mnist` does, the others say where they were looked for."""
    if name == "mnist":
        train = mnist(True, root, download)
        test = sample_digits(False) if "bundled" in train.source else mnist(False, root)
        return _official(name, train, test, [str(d) for d in range(10)], arg)
    root = str(root or default_root())
    cls_name, split = TORCHVISION[name]
    try:
        import torchvision.datasets as tvd

        kw = {"split": split} if split else {}
        with _timeout(20):
            parts = [getattr(tvd, cls_name)(root=root, train=t, download=download, **kw) for t in (True, False)]
    except RuntimeError as e:
        raise EBMError(f"{name} not found under {root} (torchvision looks in {Path(root) / cls_name / 'raw'}); "
                       "add --download where the machine is online, or point --data-root at it") from e
    except (OSError, ValueError) as e:
        raise EBMError(f"{name}: cannot read or download it under {root} ({e})") from e
    xs = [p.data.transpose(1, 2) if cls_name == "EMNIST" else p.data for p in parts]  # EMNIST is stored transposed
    values, index = torch.unique(torch.cat([p.targets for p in parts]).long(), return_inverse=True)
    classes = [str(parts[0].classes[v]) for v in values.tolist()]
    n = len(xs[0])
    train = Digits(to_unit(xs[0]), index[:n], f"{cls_name}{f' {split}' if split else ''} train ({root})")
    test = Digits(to_unit(xs[1]), index[n:], f"{cls_name}{f' {split}' if split else ''} test ({root})")
    return _official(name, train, test, classes, arg)


def source_kind(data: str | os.PathLike | None) -> str:
    """What ``--data`` names: ``mnist`` (a name, a folder that holds ``MNIST/raw``, nothing or a
    path that does not exist: torchvision's root, with the bundled fallback), ``torchvision``,
    ``bundled``, ``zip``, ``npz``, ``folder``; 2-D points: ``points`` (a named set) or ``csv``."""
    if data is None:
        return "mnist"
    text, p = str(data), Path(data)
    if p.exists():
        if p.is_dir():
            if (p / "MNIST" / "raw").is_dir():
                return "mnist"
            held = [n for n, (cls, _) in TORCHVISION.items() if (p / cls / "raw").is_dir()]
            if held:
                raise EBMError(f"{text} is a torchvision root; name a set in it: --data {held[0]} --data-root {text}")
            return "folder"
        if p.suffix.lower() in (".zip", ".npz", ".csv"):
            return p.suffix.lower()[1:]
        raise EBMError(f"{text}: not a data file (use a folder of pictures, a .zip, an .npz, a .csv of 2-D points "
                       f"or one of: {', '.join(NAMES)})")
    if text in BUNDLED:
        return "bundled"
    if text in POINT_SETS:
        return "points"
    if text in TORCHVISION:
        return "mnist" if text == "mnist" else "torchvision"
    if p.suffix:
        raise EBMError(f"no such file: {text}")
    return "mnist"  # a root torchvision may download into (the bundled sample when it cannot)


def load_dataset(data: str | os.PathLike | None = None, limits: Limits = UPLOAD_LIMITS, *,
                 root: str | os.PathLike | None = None, download: bool = False, labels_from_folders: bool = False,
                 held_out: float = HELD_OUT, kinds: tuple[str, ...] | None = None) -> Dataset:
    """Any data source → :class:`Dataset` (see :func:`source_kind` for what ``data`` may be).
    ``root`` is torchvision's root for a set named; ``kinds`` restricts what is accepted (an app
    passes ``("zip", "npz")`` for an upload)."""
    if not (isinstance(held_out, (int, float)) and 0 < held_out <= 0.5):
        raise EBMError(f"the held-out share must be in (0, 0.5], got {held_out!r}")
    kind = source_kind(data)
    if kinds is not None and kind not in kinds:
        raise EBMError(f"{data}: expected {' or '.join(kinds)} data, not {kind}")
    arg = "mnist" if data is None else str(data)
    if kind == "mnist":
        return _torchvision("mnist", root if data is None or str(data) == "mnist" else data, download, arg)
    if kind == "torchvision":
        return _torchvision(str(data), root, download, arg)
    if kind == "bundled":
        return _npz(BUNDLED[str(data)], CLI_LIMITS, held_out, arg, name=str(data))
    if kind == "npz":
        return _npz(Path(data), limits, held_out, arg)
    if kind == "points":
        x, _ = make_dataset(arg, POINTS_PER_SET, seed=0)
        return _points(arg, x, f"{arg}, {POINTS_PER_SET} points, seed 0", arg)
    if kind == "csv":
        return points_from_csv(Path(data), limits.max_images, min(limits.max_file_bytes, MAX_CSV_BYTES), arg=arg)
    return _pictures(Path(data), limits, labels_from_folders, held_out, arg)


def model_for(config, data: Dataset):
    """The model to train on ``data`` when the Trainer's own would not fit it: a JEM with one output
    per class when there are not 10 (seeded as the Trainer seeds its own). None: let the Trainer build it."""
    from .models import build_model

    if config.model != "jem" or not data.labelled or len(data.classes) == 10:
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_model("jem", width=config.width, spectral_norm=config.spectral_norm, n_classes=len(data.classes))


def dataset_of(info: dict, allow_paths: bool = False, root: str | os.PathLike | None = None) -> Dataset | None:
    """The data a weights file says its model was trained on (``info["dataset"]``), when it can be
    found again with the same content hash; None for MNIST or when it cannot. Only names (bundled
    sets, torchvision sets already on disk) are followed unless ``allow_paths``: an app must never
    read a path that an uploaded file chose."""
    d = info.get("dataset") if isinstance(info, dict) else None
    if not isinstance(d, dict) or d.get("name") == "mnist" or not isinstance(d.get("arg"), str):
        return None
    arg = d["arg"]
    if not (arg in BUNDLED or arg in TORCHVISION or (allow_paths and Path(arg).exists())):
        return None
    held = d.get("held_out_fraction")
    try:
        data = load_dataset(arg, CLI_LIMITS, root=root, labels_from_folders=bool(d.get("labels_from_folders")),
                            held_out=held if isinstance(held, float) and 0 < held <= 0.5 else HELD_OUT)
    except EBMError:
        return None
    return data if data.hash == d.get("hash") else None


# --- 2-D points, for the landscapes -----------------------------------------------------------------
def _points(name: str, x: torch.Tensor, source: str, arg: str) -> Dataset:
    """2-D points as a Dataset: all of them are trained on (nothing is held out)."""
    return Dataset(name, Digits(x, None, source), Digits(x[:0], None, source), [], source,
                   content_hash([x], [None], []), "none (2-D points are all trained on)", arg, held_out=0.0)


def _csv_rows(text: str, name: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise EBMError(f"{name}: no points in it")
    delim = next((d for d in (",", ";", "\t") if d in lines[0]), None)
    return list(csv.reader(lines, delimiter=delim)) if delim else [ln.split() for ln in lines]


def points_from_csv(source: bytes | str | os.PathLike, max_points: int = MAX_POINTS,
                    max_bytes: int = MAX_CSV_BYTES, name: str | None = None, arg: str | None = None) -> Dataset:
    """2-D points from CSV text (a file path or its bytes): columns ``x`` and ``y`` by header, else
    the first two; a header row is optional, ``#`` lines and blank lines are skipped. Points inside
    [−1, 1]² are kept as they are; others are shifted and scaled by one factor (the shape kept) to
    fill [−0.95, 0.95]² (``source`` says how). ``arg``: what ``--data`` should say (default: the name)."""
    if isinstance(source, (bytes, bytearray)):
        raw, name = bytes(source), name or "points.csv"
    else:
        p = Path(source)
        name = name or p.name
        if not p.is_file():
            raise EBMError(f"no such file: {p}")
        if p.stat().st_size > max_bytes:
            raise EBMError(f"{name}: {p.stat().st_size / MB:.1f} MB, over the {max_bytes / MB:.0f} MB limit")
        raw = p.read_bytes()
    if len(raw) > max_bytes:
        raise EBMError(f"{name}: {len(raw) / MB:.1f} MB, over the {max_bytes / MB:.0f} MB limit")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise EBMError(f"{name}: not UTF-8 text") from e
    rows = _csv_rows(text, name)  # bounded by max_bytes
    head = [c.strip().lower() for c in rows[0]]
    has_header = any(not _is_number(c) for c in head)
    cols = (head.index("x"), head.index("y")) if has_header and {"x", "y"} <= set(head) else (0, 1)
    body = rows[1:] if has_header else rows
    if not body:
        raise EBMError(f"{name}: a header but no points")
    if len(body) > max_points:
        raise EBMError(f"{name}: {len(body):,} points, over {max_points:,}, the limit")
    pts = np.empty((len(body), 2), np.float64)
    for i, row in enumerate(body):
        try:
            pts[i] = [float(row[cols[0]]), float(row[cols[1]])]
        except (IndexError, ValueError):
            raise EBMError(f"{name}, row {i + 1 + has_header}: expected two numbers (x, y), got {','.join(row)[:40]!r}") from None
    if not np.isfinite(pts).all():
        raise EBMError(f"{name}: NaN or infinite coordinates")
    return _points(name, *_fitted(pts, name), arg or name)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _fitted(pts: np.ndarray, name: str) -> tuple[torch.Tensor, str]:
    """Points in [−1, 1]² as they are; others shifted and scaled into [−0.95, 0.95]²."""
    if np.abs(pts).max() <= 1:
        return torch.from_numpy(pts.astype(np.float32)), f"{name}, {len(pts):,} points"
    lo, hi = pts.min(0), pts.max(0)
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2
    if half == 0:
        raise EBMError(f"{name}: every point is the same")
    scale = 0.95 / half
    x = torch.from_numpy(((pts - centre) * scale).astype(np.float32)).clamp(-0.95, 0.95)
    return x, f"{name}, {len(pts):,} points, shifted by {-centre[0]:.4g}, {-centre[1]:.4g} and scaled by {scale:.4g}"


def points_csv(x: torch.Tensor) -> str:
    """N×2 points as CSV text with an ``x,y`` header (what :func:`points_from_csv` reads back)."""
    return "x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in x.double().tolist())
