"""Pictures and files of recorded chains: grids, captioned frames, GIF, MP4 (PyAV), PNG and ``.npz``.

Pictures are upsampled with nearest neighbour and written losslessly (PNG, GIF with a grey
palette), so 28×28 pixels stay crisp; the MP4 is H.264 at high quality from the same pixels.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import validate
from .errors import EBMError
from .images import grid
from .recording import Recording, RecordStore


def grid_layout(chains: int) -> tuple[int, int]:
    """(columns, scale) so a grid stays around 400–900 pixels wide whatever the number of chains."""
    cols = max(1, math.ceil(math.sqrt(chains)))
    scale = max(1, min(4, 900 // (cols * 30)))
    return cols, scale


def chain_grid(x: torch.Tensor) -> Image.Image:
    """The chains as one crisp greyscale grid (nearest-neighbour upsampling)."""
    cols, scale = grid_layout(len(x))
    return grid(x.float(), cols, scale=scale)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def captioned(img: Image.Image, text: str, progress: float) -> Image.Image:
    """The grid with a caption strip below (text and a progress bar), as in the GIF and MP4."""
    strip = 22
    out = Image.new("L", (img.width, img.height + strip), 32)
    out.paste(img, (0, 0))
    d = ImageDraw.Draw(out)
    bar = round((img.width - 1) * min(max(progress, 0.0), 1.0))
    d.rectangle([0, img.height, bar, img.height + 2], fill=200)
    d.text((4, img.height + 5), text, fill=235, font=_font(12))
    return out


def frame_images(rec: Recording) -> list[Image.Image]:
    """One captioned picture per recorded frame (step, mean energy, progress through the run)."""
    total = max(rec.last_step, 1)
    steps = {s: i for i, s in enumerate(rec.steps)}
    out = []
    for x, s in zip(rec.frames, rec.frame_at):
        i = steps.get(s)
        e = f"   mean E {float(rec.energies[i].mean()):.4g}" if i is not None else ""
        out.append(captioned(chain_grid(x), f"step {s:,}{e}", s / total))
    return out


def _even(img: Image.Image) -> Image.Image:
    """Pad to even width and height (H.264 with 4:2:0 chroma needs them)."""
    w, h = img.width + img.width % 2, img.height + img.height % 2
    if (w, h) == img.size:
        return img
    out = Image.new(img.mode, (w, h), 32)
    out.paste(img, (0, 0))
    return out


def write_gif(images: list[Image.Image], path: str | Path, fps: float = 10.0) -> Path:
    """Animated GIF, one picture per frame (every frame kept: captions make them distinct), looping."""
    path = Path(path)
    frames = [im.convert("L") for im in images]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=max(20, round(1000 / fps)), loop=0,
                   optimize=False, disposal=1)
    return path


def video_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def write_mp4(images: list[Image.Image], path: str | Path, fps: float = 10.0) -> Path | None:
    """H.264 MP4 (yuv420p, high quality, fast start) through PyAV; None when PyAV is not installed."""
    try:
        import av
    except ImportError:
        return None
    from fractions import Fraction

    path = Path(path)
    first = _even(images[0])
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = first.size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast", "tune": "animation"}
        for im in images:
            frame = av.VideoFrame.from_ndarray(np.asarray(_even(im).convert("RGB")), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_npz(rec: Recording, path: str | Path) -> Path:
    """The tensors: ``x`` (final chains, N×1×28×28 float32 in [−1, 1], readable by ``ebm_play.load_images``),
    ``frames`` (F×N×1×28×28), ``frame_steps`` (F,), ``energies`` (records×N), ``steps`` (records,),
    ``accept`` (per update, MALA/HMC), ``term_<name>`` (compose) and ``meta`` (JSON text)."""
    path = Path(path)
    arrays = {
        "x": rec.x.clamp(-1, 1).numpy().astype(np.float32),
        "frames": torch.stack(rec.frames).float().clamp(-1, 1).numpy(),
        "frame_steps": np.asarray(rec.frame_at, np.int64),
        "energies": rec.energy_matrix().astype(np.float32),
        "steps": np.asarray(rec.steps, np.int64),
        "accept": np.asarray(rec.accept, np.float32),
        "meta": np.asarray(json.dumps(rec.meta, default=str)),
    }
    for name, values in rec.terms.items():
        arrays["term_" + "".join(c if c.isalnum() else "_" for c in name)] = np.asarray(values, np.float32)
    np.savez_compressed(path, **arrays)
    return path


def write_all(rec: Recording, folder: str | Path, fps: float = 10.0, stem: str = "chains") -> dict[str, Path | None]:
    """GIF, MP4 (if PyAV is installed), PNG of the final grid and ``.npz`` of a recording, in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = frame_images(rec)
    png = folder / f"{stem}.png"
    chain_grid(rec.x).save(png)
    return {"gif": write_gif(images, folder / f"{stem}.gif", fps),
            "mp4": write_mp4(images, folder / f"{stem}.mp4", fps),
            "png": png, "npz": write_npz(rec, folder / f"{stem}.npz")}


def export(store: RecordStore, rid, folder: str | Path, fps) -> dict[str, str | None]:
    """GIF, MP4 (None without PyAV), PNG and ``.npz`` of the recording ``rid`` in ``store``, under
    ``folder``/<id>/fps<fps>/: written once per recording and frame rate; the files of recordings the
    store no longer keeps are removed."""
    rec = store.get(rid)
    if rec is None:
        raise EBMError("unknown or expired recording: run the chains again (recordings are kept for a while only)")
    fps = validate.number("frames per second", fps, 1, 60)
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if old.is_dir() and store.get(old.name) is None:
            shutil.rmtree(old, ignore_errors=True)
    out = root / rec.id / f"fps{fps:g}"
    kinds = ("gif", "mp4", "png", "npz")
    if (out / ".done").exists():
        files = {k: next(iter(out.glob(f"*.{k}")), None) for k in kinds}
    else:
        name = f"{rec.meta.get('model', 'model')}-{rec.meta.get('sampler', '')}-{rec.chains}x{rec.last_step}"
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:80] or "chains"
        files = write_all(rec, out, fps, stem)
        (out / ".done").touch()
    return {k: None if files[k] is None else str(files[k]) for k in kinds}
