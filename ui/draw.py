"""The drawing input the Inpaint, Denoise, OOD and Classify tabs share, and their picture helpers.

Each of those tabs gets an :class:`InputPanel`: a drawing pad (:func:`ui.canvas_pad.canvas_pad`, a
black 280×280 canvas with a white brush sized for MNIST strokes, an eraser, and image upload; not a
``gr.ImageEditor``, whose page side re-uploads its pictures on every event of the app: issue #21),
a "test digit #" field with a *random test digit* button, and a preview of what the model sees
(the 28×28 made by :func:`ebm_play.preprocess`, centred by mass in a 20×20 box like MNIST).

Which image is used (the same rule for the page and for API callers):

- ``digit`` given (0 to 1,999): that bundled MNIST test digit, exactly;
- otherwise the pad: its ``composite`` (or, when an API caller sends none, its ``background``
  with its ``layers`` on top), preprocessed MNIST-style.

Drawing on or uploading to the pad clears the digit field (an empty pad leaves it), so the page
uses what the user touched last. Events run with ``preprocess=False``: the pad's files are opened here through
:func:`ebm_play.images.open_image`, which refuses non-images and decompression bombs with a clear
message before anything large is decoded (Gradio's own preprocessing would decode first).
"""

from __future__ import annotations

import functools
import inspect
import io
import os
import queue
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

import ebm_play
from ebm_play import EBMError, settings
from ebm_play.images import MAX_PIXELS, open_image, to_uint8
from ebm_play.runtime import job_threads

from .canvas_pad import canvas_pad, data_url, read_data_url
from .common import whole
from .sessions import Registry

CANVAS = 280  # the pad: 10 canvas pixels per model pixel
BRUSH_SIZE = 13  # ≈ 2.5-pixel MNIST strokes once a full-height digit is scaled to 20 pixels
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_BLOBS = 256  # unclaimed pictures a pad keeps server-side (oldest dropped first)
MASK_COVER = 0.25  # a model pixel is erased when at least this share of it is painted
MASK_RGBA = (239, 68, 68, 200)  # how the quick "erase … half" buttons paint the mask layer
HALVES = ("top", "bottom", "left", "right")
HINT = "Draw a digit (white on black, like MNIST), upload a picture or pick a test digit."


@functools.lru_cache(maxsize=1)
def test_digits() -> ebm_play.data.Digits:
    """The 2,000 bundled MNIST test digits (loaded once)."""
    return ebm_play.sample_digits(train=False)


def n_test() -> int:
    return len(test_digits().x)


def black_canvas() -> dict:
    """An API caller's empty editor value: a black canvas (MNIST colours)."""
    return {"background": Image.new("RGB", (CANVAS, CANVAS), "black"), "layers": [], "composite": None}


EMPTY = ""  # an empty canvas pad (the page shows it black)


# --- reading the pad ------------------------------------------------------------------------------
def _open(item, what: str) -> Image.Image | None:
    """One picture of an editor payload: a FileData dict (path), raw bytes (the page's blobs) or None."""
    if item is None:
        return None
    if isinstance(item, Image.Image):
        img = item
    elif isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) > MAX_UPLOAD_BYTES:
            raise EBMError(f"{what}: file is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
        img = open_image(bytes(item))
    elif isinstance(item, dict) and item.get("path"):
        size = item.get("size")
        if isinstance(size, int) and size > MAX_UPLOAD_BYTES:
            raise EBMError(f"{what}: file is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
        img = open_image(item["path"])
    elif isinstance(item, str):
        img = open_image(item)
    else:
        raise EBMError(f"{what}: expected an image file, got {type(item).__name__}")
    if img.width * img.height > MAX_PIXELS:
        raise EBMError(f"{what}: image is {img.width}×{img.height}, larger than {MAX_PIXELS:,} pixels")
    return img


def editor_parts(pad: gr.ImageEditor | None, value) -> tuple[Image.Image | None, list[Image.Image], Image.Image | None]:
    """(background, layers, composite) of a raw ``gr.ImageEditor`` payload (``preprocess=False``).
    The page may send ``{"id": …}`` whose pictures it uploaded just before as blobs (kept by the
    component, and taken out here as Gradio's own preprocessing would)."""
    if value is None:
        return None, [], None
    if isinstance(value, (str, bytes, Image.Image)) or (isinstance(value, dict) and "path" in value):
        img = _open(value, "image")  # a plain image where an editor value was expected (lenient)
        return img, [], img
    if not isinstance(value, dict):
        raise EBMError(f"image: expected an image editor value {{background, layers, composite}}, "
                       f"got {type(value).__name__}")
    blob_id = value.get("id")
    if blob_id is not None and pad is not None:
        store = pad.blob_storage
        blobs = store.pop(blob_id, None)
        try:  # the page uploads blobs on every change, also for events it then drops: keep the newest
            while len(store) > MAX_BLOBS:
                store.pop(next(iter(store)), None)
        except (RuntimeError, StopIteration):  # another request changed the store meanwhile: next time
            pass
        if blobs is not None:
            value = {"background": blobs.background, "layers": list(blobs.layers), "composite": blobs.composite}
    layers = value.get("layers") or []
    if not isinstance(layers, list):
        raise EBMError("image: 'layers' must be a list of images")
    return (_open(value.get("background"), "background"),
            [im for i, layer in enumerate(layers) if (im := _open(layer, f"layer {i + 1}")) is not None],
            _open(value.get("composite"), "composite"))


def flatten(background: Image.Image | None, layers: list[Image.Image]) -> Image.Image | None:
    """Layers painted over the background (all resized to the background's size)."""
    if background is None and not layers:
        return None
    base = (background or Image.new("RGBA", layers[0].size, (0, 0, 0, 0))).convert("RGBA")
    for layer in layers:
        base.alpha_composite(layer.convert("RGBA").resize(base.size))
    return base


def editor_picture(pad: gr.ImageEditor | None, value) -> Image.Image:
    """The picture on the pad: the composite, else background + layers; an EBMError if there is none."""
    background, layers, composite = editor_parts(pad, value)
    pic = composite or flatten(background, layers)
    if pic is None:
        raise EBMError("the drawing is empty: draw a digit, upload a picture or pick a test digit")
    return pic


def pad_picture(value) -> Image.Image | None:
    """The picture on a canvas pad (page events): its PNG data URL, or None for an empty pad. Only a
    data URL is read: the page events take the pad raw, so a path or a file dict sent to them by hand
    is refused instead of opened."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise EBMError(f"drawing: expected the pad's picture, got {type(value).__name__}")
    return read_data_url(value, "drawing", MAX_UPLOAD_BYTES)


def from_pad(fn: Callable, *positions: int) -> Callable:
    """``fn`` for a page event: the arguments at ``positions`` (canvas pad values) become pictures
    (or None) first, so ``fn`` reads them as it reads an API caller's image."""

    def read(args):
        args = list(args)
        try:
            for i in positions:
                args[i] = pad_picture(args[i])
        except EBMError as e:
            raise gr.Error(str(e), print_exception=False) from None
        return args

    if inspect.isgeneratorfunction(fn):  # a streamed run stays a generator for Gradio
        @functools.wraps(fn)
        def stream(*args):
            yield from fn(*read(args))

        return stream

    @functools.wraps(fn)
    def call(*args):
        return fn(*read(args))

    return call


def test_digit(digit) -> tuple[torch.Tensor, int]:
    """Test digit number ``digit`` (1×1×28×28) and its label."""
    i = whole("test digit", digit, 0, n_test() - 1)
    d = test_digits()
    return d.x[i: i + 1].clone(), int(d.y[i])


def has_digit(digit) -> bool:
    return digit is not None and digit != ""


def model_input(pad: gr.ImageEditor | None, value, digit) -> tuple[torch.Tensor, str]:
    """The 1×1×28×28 image in [−1, 1] the model gets, and a few words on where it came from: a
    picture on the pad wins over the test digit box (picking a digit clears the pad). So a Run pressed
    right after a stroke, before the page has blanked the digit box, still scores the drawing."""
    try:
        return ebm_play.preprocess(editor_picture(pad, value)), "your drawing"
    except EBMError as e:
        if "empty" not in str(e):
            raise
    if has_digit(digit):
        x, label = test_digit(digit)
        return x, f"test digit #{int(digit)} (a {label})"
    raise EBMError("the drawing is empty: draw a digit, upload a picture or pick a test digit")


# --- masks ----------------------------------------------------------------------------------------
def coverage(layer: Image.Image) -> np.ndarray:
    """28×28 share of each model pixel that a mask layer paints: its alpha where it has transparency,
    else its brightness (an opaque black-and-white mask: white = erase)."""
    rgba = layer.convert("RGBA")
    a = np.asarray(rgba, dtype=np.float64)
    paint = a[..., 3] if a[..., 3].min() < 250 else a[..., :3].mean(-1)
    small = Image.fromarray(paint.astype(np.float32), mode="F").resize((28, 28), Image.BOX)
    return np.clip(np.asarray(small, dtype=np.float64) / 255.0, 0, 1)


def keep_from_mask(pad: gr.ImageEditor | None, value) -> torch.Tensor:
    """The keep mask (1×1×28×28, 1 = keep) from a mask pad: pixels painted on its layers are erased."""
    _background, layers, _composite = editor_parts(pad, value)
    if isinstance(value, Image.Image):  # a canvas pad's picture is the mask layer itself
        layers = [value]
    if not layers:
        raise EBMError("no mask: paint over the part to erase (or press one of the 'erase … half' buttons)")
    cover = np.max([coverage(layer) for layer in layers], axis=0)
    erase = cover >= MASK_COVER
    if not erase.any():
        raise EBMError("the mask is empty: paint over the part to erase (or press one of the 'erase … half' buttons)")
    return torch.from_numpy(~erase).float().view(1, 1, 28, 28)


def half_keep(which: str) -> torch.Tensor:
    """Keep mask that erases the ``which`` half (top, bottom, left or right)."""
    if which not in HALVES:
        raise EBMError(f"unknown half {which!r}: use one of {', '.join(HALVES)}")
    keep = torch.ones(1, 1, 28, 28)
    sl = {"top": (slice(0, 14), slice(None)), "bottom": (slice(14, 28), slice(None)),
          "left": (slice(None), slice(0, 14)), "right": (slice(None), slice(14, 28))}[which]
    keep[0, 0][sl] = 0
    return keep


def mask_layer(keep: torch.Tensor, size: int = CANVAS) -> Image.Image:
    """An RGBA layer painting the erased pixels of ``keep`` in translucent red."""
    erase = (keep.reshape(28, 28) < 0.5).numpy()
    a = np.zeros((28, 28, 4), np.uint8)
    a[erase] = MASK_RGBA
    return Image.fromarray(a, mode="RGBA").resize((size, size), Image.NEAREST)


def mask_value(x: torch.Tensor | None, keep: torch.Tensor | None = None) -> gr.HTML:
    """The mask pad's update: the model input enlarged under the strokes, and the mask layer painting
    the erased pixels of ``keep`` (none: an empty mask; ``x`` None: an empty pad)."""
    if x is None:
        return gr.HTML(value=EMPTY, background="")
    return gr.HTML(value=EMPTY if keep is None else data_url(mask_layer(keep)), background=data_url(enlarge(x)))


# --- pictures ---------------------------------------------------------------------------------------
def enlarge(x: torch.Tensor, size: int = CANVAS) -> Image.Image:
    """One 28×28 model image as a crisp greyscale picture of ``size``×``size``."""
    return Image.fromarray(to_uint8(x[:1])[0], mode="L").resize((size, size), Image.NEAREST)


def masked_view(x: torch.Tensor, keep: torch.Tensor, scale: int = 6) -> Image.Image:
    """The model input with its erased pixels tinted red: what the fills must complete."""
    g = to_uint8(x[:1])[0].astype(np.float64)
    rgb = np.stack([g, g, g], -1)
    erase = (keep.reshape(28, 28) < 0.5).numpy()
    rgb[erase] = 0.35 * rgb[erase] + 0.65 * np.array([239, 68, 68])
    img = Image.fromarray(rgb.round().astype(np.uint8), mode="RGB")
    return img.resize((28 * scale, 28 * scale), Image.NEAREST)


def strip(frames: list[torch.Tensor], scale: int = 2) -> Image.Image:
    """Frames (each n×1×28×28) as a picture: one row per chain, one column per frame."""
    stacked = torch.stack(frames, 1).reshape(-1, 1, 28, 28)  # chain-major: row i = chain i over time
    return ebm_play.images.grid(stacked, nrow=len(frames), scale=scale)


KEEP_FILES = 200  # result files kept in the registry's folder (Gradio copies each into its own cache)


def result_file(folder: str | os.PathLike, prefix: str, **arrays) -> str:
    """Write arrays to a fresh ``.npz`` under ``folder`` (float32 tensors, key per array) for download;
    the oldest files beyond KEEP_FILES are removed."""
    d = Path(folder) / "results"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.npz"
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: (v.detach().cpu().float().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
                                for k, v in arrays.items()})
    path.write_bytes(buf.getvalue())
    old = sorted(d.glob("*.npz"), key=lambda p: p.stat().st_mtime)[:-KEEP_FILES]
    for p in old:
        p.unlink(missing_ok=True)
    return str(path)


def streamed(work: Callable[[Callable], object], snap: Callable) -> Iterator[tuple[str, object]]:
    """Run ``work(callback)`` (a sampler run) in a helper thread with one torch thread; yield
    ("step", snap(record)) for each sampler record, then ("done", result). Closing the generator
    (a closed page) stops the chains at their next step; an error in the run is re-raised here."""
    q: queue.Queue = queue.Queue()
    stop = threading.Event()

    def callback(rec):
        q.put(("step", snap(rec)))
        return not stop.is_set()

    def run():
        try:
            with job_threads(1):
                res = work(callback)
            q.put(("done", res))
        except Exception as e:  # noqa: BLE001 (handed to the request thread, which shows it)
            q.put(("error", e))

    threading.Thread(target=run, name="ebm-draw", daemon=True).start()
    try:
        while True:
            kind, item = q.get()
            if kind == "error":
                raise item
            yield kind, item
            if kind == "done":
                return
    finally:
        stop.set()


class Pacer:
    """Say when a streamed frame is due: at most one every ``every_s`` seconds."""

    def __init__(self, every_s: float = 0.2):
        self.every_s, self.last = every_s, 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            return True
        return False


# --- samplers -----------------------------------------------------------------------------------------
SAMPLERS = list(ebm_play.SAMPLERS)


def _unset(v):
    """None for an empty knob, and for 0: Gradio 6 shows an empty number field as 0 and sends 0 once
    its accordion has been opened, so 0 here means "the model's own" (noise 0 would silently stop the
    chains' noise; step size and temperature must be positive anyway)."""
    return None if v == "" or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0) else v


def sampler_kwargs(model, sampler: str, step_size=None, noise=None, temperature=None) -> dict:
    """Options for ``sampler`` on ``model``: the settings the Sample tab uses for it (the model file's
    recommendation, else a per-kind table, e.g. small temperatures for ula/mala/hmc), overridden by
    the tabs' optional knobs (None, "" or 0 = keep; knobs the sampler lacks are ignored; validated with names)."""
    return settings.resolve(model, sampler, step_size=_unset(step_size), noise=_unset(noise),
                            temperature=_unset(temperature)).options


def recommended_steps(model, sampler: str) -> int:
    return settings.recommended(model, sampler)["steps"]


def check_work(n: int, steps: int, sampler: str, opts: dict) -> None:
    """Chains × steps × gradients per step within the per-request budget the Sample tab uses."""
    settings.Settings(sampler, steps, opts).check_work(n)


# --- the session's model ------------------------------------------------------------------------------
def model_picker(registry: Registry, session: gr.BrowserState, page: gr.Tab | None, elem_id: str) -> gr.Dropdown:
    """A dropdown bound to the session's current model (the Sample tab's, too), refreshed when the
    tab is opened so a model trained meanwhile shows up."""
    dd = gr.Dropdown(registry.model_names(None), value=registry.default_model, label="Model",
                     info="the session's current model (shared with the Sample tab)", elem_id=elem_id)

    def refresh(sid):
        s = registry.peek(sid)
        key = s.model_key if s is not None and s.model_key in registry.model_names(s) else registry.default_model
        return gr.Dropdown(choices=registry.model_names(s), value=key)

    def choose(sid, key):
        try:
            registry.use_model(sid, key)
        except EBMError as e:
            raise gr.Error(str(e), print_exception=False) from None

    dd.input(choose, [session, dd], None, api_visibility="private", show_progress="hidden")
    if page is not None:
        page.select(refresh, session, dd, api_visibility="private", show_progress="hidden")
    return dd


# --- the panel --------------------------------------------------------------------------------------
@dataclass
class InputPanel:
    pad: gr.HTML  # the page's canvas pad (value: a PNG data URL); page events read it through from_pad
    api_image: gr.ImageEditor  # hidden: the API endpoints' image input (an editor value, checked by Gradio)
    digit: gr.Number
    random_btn: gr.Button
    preview: gr.Image
    note: gr.Markdown

    @property
    def inputs(self) -> list:
        return [self.pad, self.digit]

    def read(self, value, digit) -> tuple[torch.Tensor, str]:
        return model_input(self.pad, value, digit)


def input_panel(prefix: str, label: str = "Draw a digit (or upload a picture)", extra_outputs: list | None = None,
                on_input=None) -> InputPanel:
    """Pad, test-digit picker and preview, wired so the preview shows what the model will see.
    ``on_input(x or None)`` may return updates for ``extra_outputs`` (e.g. the inpaint mask pad)."""
    with gr.Column(min_width=280):
        pad = canvas_pad(f"{prefix}-pad", label, CANVAS, BRUSH_SIZE, max_bytes=MAX_UPLOAD_BYTES)
        # never shown, so never mounted: the page never reads it (see ui.canvas_pad)
        api_image = gr.ImageEditor(black_canvas(), label="image", type="pil", image_mode="RGBA", visible=False)
        with gr.Row(equal_height=True):
            digit = gr.Number(None, precision=0, minimum=0, maximum=n_test() - 1,
                              label=f"…or MNIST test digit # (0–{n_test() - 1:,})", elem_id=f"{prefix}-digit",
                              min_width=120, scale=2)
            random_btn = gr.Button("Random test digit", size="md", elem_id=f"{prefix}-random", min_width=100,
                                   scale=1)
    with gr.Column(min_width=200, scale=0):
        preview = gr.Image(label="What the model sees (28×28)", type="pil", format="png", height=200, width=200,
                           interactive=False, elem_classes="ebm-grid", elem_id=f"{prefix}-preview",
                           buttons=["download"])
        note = gr.Markdown(HINT, elem_id=f"{prefix}-note")
    panel = InputPanel(pad, api_image, digit, random_btn, preview, note)
    extra_outputs = list(extra_outputs or [])

    def extra(x):
        return list(on_input(x)) if on_input is not None else []

    def show(value, digit):
        try:
            x, source = model_input(pad, value, digit)
        except EBMError as e:
            return (None, HINT if "empty" in str(e) else f"⚠ {e}", *extra(None))
        msg = f"Using **{source}**" + ("; draw on the pad to use your drawing instead." if source != "your drawing" else ".")
        return (enlarge(x, 168), msg, *extra(x))

    def drawn(value, digit):
        """The pad changed: a stroke, an upload, the eraser or Clear. A picture on the pad replaces a
        picked test digit; an empty pad keeps it."""
        try:
            x = ebm_play.preprocess(editor_picture(pad, value))
        except EBMError as e:
            if "empty" in str(e):
                return (gr.skip(), *show(None, digit))
            return (None, None, f"⚠ {e}", *extra(None))
        return (None, enlarge(x, 168), "Using **your drawing**.", *extra(x))

    def picked(value, digit):  # a test digit replaces the drawing: the pad goes back to its black canvas
        if has_digit(digit):
            return (EMPTY, *show(None, digit))
        return (gr.skip(), *show(value, None))

    def pick_random():
        i = random.randrange(n_test())
        return (EMPTY, i, *show(None, i))

    outs = [preview, note, *extra_outputs]
    # show_progress_on=[]: no component of these quick events joins the page's loading-status table
    quiet = {"api_visibility": "private", "show_progress": "hidden", "show_progress_on": [], "preprocess": False,
             "concurrency_limit": None}
    pad.input(from_pad(drawn, 0), [pad, digit], [digit, *outs], trigger_mode="always_last", **quiet)
    digit.input(from_pad(picked, 0), [pad, digit], [pad, *outs], trigger_mode="always_last", **quiet)
    random_btn.click(pick_random, None, [pad, digit, *outs], **quiet)
    return panel


def wire_run(btn: gr.Button, fn: Callable, inputs: list, outputs: list, api_name: str, pads: dict, **kw):
    """``btn`` runs ``fn`` for the page on its canvas pads (read through :func:`from_pad`); a hidden
    button gives the API endpoint ``api_name`` the same ``fn`` on the hidden editor inputs
    (``pads`` maps each canvas pad to its API twin), so API callers send editor values as before."""
    gr.Button(visible=False).click(fn, [pads.get(c, c) for c in inputs], outputs, api_name=api_name, **kw)
    # (second: the page event, private, must not take the endpoint's name)
    btn.click(from_pad(fn, *[inputs.index(p) for p in pads]), inputs, outputs, api_visibility="private", **kw)


def sampler_settings() -> tuple[gr.Number, gr.Number, gr.Number]:
    """Step size, noise and temperature fields, empty by default so the model's own settings apply."""
    with gr.Accordion("Sampler settings (empty or 0 = the model's own)", open=False), gr.Row():
        step_size = gr.Number(None, label="Step size", min_width=90)
        noise = gr.Number(None, label="Noise σ (langevin)", min_width=90)
        temperature = gr.Number(None, label="Temperature", min_width=90)
    return step_size, noise, temperature
