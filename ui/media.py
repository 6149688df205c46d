"""Recording a run of chains and exporting it: frames, GIF, MP4, PNG grid and ``.npz`` tensors.

Nothing here knows about Gradio; it is engine-level code kept in ``ui/`` for now (candidates for
``ebm_play``): :class:`Recorder` is a sampler callback that keeps every step's energies and
acceptance plus evenly spaced frames; :class:`Recording` is what it produces; the writers turn a
recording into files; :class:`RecordStore` keeps recent recordings in memory so a page (or an API
client, by id) can scrub through them and download them after the run.

Pictures are upsampled with nearest neighbour and written losslessly (PNG, GIF with a grey
palette), so 28×28 pixels stay crisp; the MP4 is H.264 at high quality from the same pixels.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ebm_play.images import grid

MAX_FRAMES = 200  # recorded frames per run, whatever the number of steps
MAX_FRAME_BYTES = 48 * 2**20  # frames of one recording (float32) stay under this; fewer frames for many chains


def frame_steps(steps: int, frames: int) -> list[int]:
    """``frames`` distinct step numbers evenly spread over 0…steps, both ends included."""
    frames = max(1, min(int(frames), steps + 1))
    if frames == 1:
        return [steps]
    return sorted({round(i * steps / (frames - 1)) for i in range(frames)})


def frame_budget(chains: int, frames: int) -> int:
    """How many frames of ``chains`` chains fit the memory budget (at least 2)."""
    per_frame = chains * 28 * 28 * 4
    return max(2, min(int(frames), MAX_FRAMES, MAX_FRAME_BYTES // per_frame))


# Frames are pictures: half precision (3 significant digits, ≤ 0.0005 off in [−1, 1]) halves what a
# kept recording costs; the final chains ``x`` stay float32.
FRAME_DTYPE = torch.float16


@dataclass
class Recording:
    """One run of chains: what the Sample and Compose tabs show, scrub and export."""

    steps_planned: int
    chains: int
    frames: list[torch.Tensor] = field(default_factory=list)  # N×1×28×28 CPU float32 at ``frame_at``
    frame_at: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # every recorded step …
    energies: list[torch.Tensor] = field(default_factory=list)  # … and each chain's energy there (N,)
    accept: list[float] = field(default_factory=list)  # mean acceptance of each update (MALA, HMC)
    terms: dict[str, list[float]] = field(default_factory=dict)  # mean per expert at ``frame_at`` (compose)
    x: torch.Tensor | None = None  # the final chains
    meta: dict = field(default_factory=dict)
    stopped: bool = False  # stopped before ``steps_planned``
    id: str = field(default_factory=lambda: secrets.token_urlsafe(9))

    @property
    def last_step(self) -> int:
        return self.steps[-1] if self.steps else 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.frames, *self.energies))

    def nearest_frame(self, step) -> int:
        """Index of the recorded frame closest to ``step``."""
        if not self.frame_at:
            raise IndexError("no frames recorded")
        a = np.asarray(self.frame_at)
        return int(np.abs(a - float(step)).argmin())

    def energy_matrix(self) -> np.ndarray:
        """(records, N) float array of the chains' energies."""
        if not self.energies:
            return np.zeros((0, self.chains), np.float32)
        return torch.stack(self.energies).float().numpy()


class Recorder:
    """A sampler callback (``ebm_play.sample_chains(..., callback=recorder)``) that records into a
    :class:`Recording`. ``should_stop()`` returning True ends the run early (the callback returns
    False); ``terms`` (x → {name: (N,)}) is evaluated at frame steps, for composed energies."""

    def __init__(self, steps: int, chains: int, frames: int,
                 terms: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None,
                 should_stop: Callable[[], bool] | None = None, meta: dict | None = None):
        self.rec = Recording(steps_planned=int(steps), chains=int(chains), meta=dict(meta or {}))
        self.targets = set(frame_steps(steps, frame_budget(chains, frames)))
        self.terms, self.should_stop = terms, should_stop
        self.latest: torch.Tensor | None = None  # the newest chains, for live frames
        self.lock = threading.Lock()

    def __call__(self, step) -> bool:
        x = step.x.detach()
        with self.lock:
            self.rec.steps.append(int(step.step))
            self.rec.energies.append(step.energy.detach().float().cpu())
            if step.accept is not None:
                self.rec.accept.append(float(step.accept.float().mean()))
            if step.step in self.targets:
                self.rec.frames.append(x.to("cpu", FRAME_DTYPE, copy=True))
                self.rec.frame_at.append(int(step.step))
                if self.terms is not None:
                    for name, e in self.terms(x).items():
                        self.rec.terms.setdefault(name, []).append(float(e.float().mean()))
            self.latest = x
        if self.should_stop is not None and self.should_stop():
            self.rec.stopped = True
            return False
        return True

    def finish(self, x: torch.Tensor) -> Recording:
        """Close the recording with the final chains (a stopped run's last state becomes a frame)."""
        with self.lock:
            self.rec.x = x.detach().float().cpu()
            if not self.rec.frame_at or self.rec.frame_at[-1] != self.rec.last_step:
                self.rec.frames.append(self.rec.x.to(FRAME_DTYPE, copy=True))
                self.rec.frame_at.append(self.rec.last_step)
                if self.terms is not None and self.rec.terms:
                    for name, e in self.terms(x).items():
                        self.rec.terms.setdefault(name, []).append(float(e.float().mean()))
            self.rec.stopped = self.rec.stopped or self.rec.last_step < self.rec.steps_planned
        return self.rec


# --- pictures ---------------------------------------------------------------------------------------


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


class RecordStore:
    """Recent recordings by id (an unguessable token), least recently used dropped first, within a
    count and a memory budget."""

    def __init__(self, max_items: int = 32, max_bytes: int = 64 * 2**20):
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: OrderedDict[str, tuple[Recording, float]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, rec: Recording) -> str:
        with self._lock:
            self._items[rec.id] = (rec, time.monotonic())
            self._items.move_to_end(rec.id)
            while len(self._items) > self.max_items or (
                    len(self._items) > 1 and sum(r.nbytes() for r, _ in self._items.values()) > self.max_bytes):
                self._items.popitem(last=False)
        return rec.id

    def get(self, rid) -> Recording | None:
        if not isinstance(rid, str):
            return None
        with self._lock:
            item = self._items.get(rid)
            if item is None:
                return None
            self._items.move_to_end(rid)
            return item[0]
