"""What the Inpaint, Denoise, OOD and Classify tabs share: the drawing input, its endpoints, the run wiring.

Each tab gets an :class:`InputPanel`: a drawing pad (:func:`ui.canvas_pad.canvas_pad`, a black 280×280
canvas with a white brush sized for MNIST strokes; not a ``gr.ImageEditor``, whose page side
re-uploads its pictures on every event of the app: issue #21), a "test digit #" field with a
*random test digit* button, and a preview of what the model sees (the 28×28 made by
:func:`ebm_play.preprocess`, centred by mass in a 20×20 box like MNIST).

Which image is used (the same rule for the page and for API callers): a picture on the pad
(an API caller's image-editor value: its composite, else its background with its layers on top),
else the bundled MNIST test digit ``digit`` (0 to 1,999), exactly. Drawing clears the digit field
and picking a digit clears the pad, so the page uses what the user touched last.

Every run is wired twice (:func:`wire_run`): the page's event reads the canvas pads, whose values
are PNG data URLs and nothing else (:class:`Pad`: a path or a file dict sent to it by hand is
refused, never opened); the named API endpoint reads hidden image-editor inputs, whose files gradio
has checked to be uploads. Only the pads' own preview events and the Run buttons send a drawing.
"""

from __future__ import annotations

import functools
import io
import math
import random
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image

import ebm_play
from ebm_play import EBMError, masks
from ebm_play.images import MAX_PIXELS, open_image, to_uint8
from ebm_play.playground import Playground
from ebm_play.recording import ChainJob, Recorder

from .boundary import PRIVATE, AnySession, Kept, Number, Picture, Session, Spec, Text, Whole, endpoint, on  # noqa: F401 (Picture: the API image spec)
from .canvas_pad import canvas_pad, data_url, read_data_url
from .common import picture, thin

AUTO = "auto"  # the sampler choice that means "the model's own" (settings.default_sampler)
CANVAS = 280  # the pad: 10 canvas pixels per model pixel
BRUSH_SIZE = 13  # ≈ 2.5-pixel MNIST strokes once a full-height digit is scaled to 20 pixels
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_BLOBS = 256  # unclaimed pictures an image editor keeps server-side (oldest dropped first)
MASK_RGBA = (239, 68, 68, 200)  # how the "erase … half" buttons paint the mask layer
HINT = "Draw a digit (white on black, like MNIST), upload a picture or pick a test digit."
EMPTY = ""  # an empty canvas pad (the page shows it black)
KEEP_FILES = 200  # result files kept in the playground's folder


@functools.lru_cache(maxsize=1)
def test_digits() -> ebm_play.data.Digits:
    """The 2,000 bundled MNIST test digits (loaded once)."""
    return ebm_play.sample_digits(train=False)


def n_test() -> int:
    return len(test_digits().x)


def black_canvas() -> dict:
    """An API caller's empty editor value: a black canvas (MNIST colours)."""
    return {"background": Image.new("RGB", (CANVAS, CANVAS), "black"), "layers": [], "composite": None}


# --- reading pictures -----------------------------------------------------------------------------
def _open(item, what: str) -> Image.Image | None:
    """One picture of an editor value: a checked FileData dict, raw bytes (a page's blobs) or None."""
    if item is None:
        return None
    if isinstance(item, Image.Image):
        img = item
    elif isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) > MAX_UPLOAD_BYTES:
            raise EBMError(f"{what}: file is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
        img = open_image(bytes(item))
    elif isinstance(item, dict) and isinstance(item.get("path"), str):
        size = item.get("size")
        if isinstance(size, int) and size > MAX_UPLOAD_BYTES:
            raise EBMError(f"{what}: file is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
        img = open_image(item["path"])
    else:  # a bare path is never opened: files arrive as file data, whose paths gradio has checked
        raise EBMError(f"{what}: expected an uploaded picture, got {type(item).__name__}")
    if img.width * img.height > MAX_PIXELS:
        raise EBMError(f"{what}: image is {img.width}×{img.height}, larger than {MAX_PIXELS:,} pixels")
    return img


def editor_parts(pad: gr.ImageEditor | None, value) -> tuple[Image.Image | None, list[Image.Image], Image.Image | None]:
    """(background, layers, composite) of a raw image-editor value (``preprocess=False``). A page's
    editor sends ``{"id": …}`` of pictures it uploaded before as blobs, which ``pad`` keeps: they are
    taken out here, as gradio's own preprocessing would."""
    if value is None:
        return None, [], None
    if isinstance(value, Image.Image) or (isinstance(value, dict) and "path" in value):
        img = _open(value, "image")  # a plain picture where an editor value was expected
        return img, [], img
    if not isinstance(value, dict):
        raise EBMError(f"image: expected an image editor value {{background, layers, composite}}, "
                       f"got {type(value).__name__}")
    blob_id = value.get("id")
    if blob_id is not None and pad is not None:
        store = pad.blob_storage
        blobs = store.pop(blob_id, None)
        try:  # blobs of events the page dropped: keep the newest
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


def picture_of(value) -> Image.Image | None:
    """The picture in an image input: a canvas pad's (already read by :class:`Pad`) or an API
    caller's image-editor value; None when there is none."""
    if value is None or isinstance(value, Image.Image):
        return value
    background, layers, composite = editor_parts(None, value)
    return composite or flatten(background, layers)


def pad_picture(value) -> Image.Image | None:
    """The picture on a canvas pad: its PNG data URL, or None for an empty pad. Only a data URL is
    read, so a path or a file dict sent to a page event by hand is refused instead of opened."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise EBMError(f"drawing: expected the pad's picture, got {type(value).__name__}")
    return read_data_url(value, "drawing", MAX_UPLOAD_BYTES)


class Pad(Spec):
    """A canvas pad's value (page events): "" or a ``data:image/…;base64`` URL → a picture or None."""

    def __call__(self, name, v):
        return pad_picture(v)


class ZeroIsDefault(Spec):
    """A page's number field where 0 means "the default": gradio shows an empty number field as 0
    and sends 0. (API callers send None for the default, and 0 means 0.)"""

    def __init__(self, spec: Spec):
        super().__init__(optional=True, label=spec.label)
        self.spec = spec

    def __call__(self, name, v):
        return None if isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0 else self.spec(name, v)


DIGIT = Whole(0, 1999, optional=True).named("test digit")


def test_digit(digit: int) -> tuple[torch.Tensor, int]:
    """Test digit number ``digit`` (1×1×28×28) and its label."""
    d = test_digits()
    return d.x[digit: digit + 1].clone(), int(d.y[digit])


def model_input(image, digit: int | None) -> tuple[torch.Tensor, str]:
    """The 1×1×28×28 image in [−1, 1] the model gets, and a few words on where it came from: a
    picture wins over the test digit (so a Run pressed right after a stroke, before the page has
    blanked the digit field, uses the drawing). A black pad counts as empty."""
    pic = picture_of(image)
    if pic is not None:
        try:
            return ebm_play.preprocess(pic), "your drawing"
        except EBMError as e:
            if "empty" not in str(e):
                raise
    if digit is not None:
        x, label = test_digit(digit)
        return x, f"test digit #{digit} (a {label})"
    raise EBMError("the drawing is empty: draw a digit, upload a picture or pick a test digit")


def mask_keep(value) -> torch.Tensor:
    """The keep mask (1 = keep) painted on a mask pad (its picture is the paint layer itself) or on
    the layers of an API caller's image-editor value: painted pixels are erased and filled."""
    if value is None or isinstance(value, Image.Image):
        layers = [] if value is None else [value]
    else:
        layers = editor_parts(None, value)[1]
    return masks.from_paint(layers)


# --- pictures -------------------------------------------------------------------------------------------
def enlarge(x: torch.Tensor, size: int = CANVAS) -> Image.Image:
    """One 28×28 model image as a crisp greyscale picture of ``size``×``size``."""
    return Image.fromarray(to_uint8(x[:1])[0], mode="L").resize((size, size), Image.NEAREST)


def mask_layer(keep: torch.Tensor, size: int = CANVAS) -> Image.Image:
    """An RGBA layer painting the erased pixels of ``keep`` in translucent red."""
    erase = (keep.reshape(28, 28) < 0.5).numpy()
    a = np.zeros((28, 28, 4), np.uint8)
    a[erase] = MASK_RGBA
    return Image.fromarray(a, mode="RGBA").resize((size, size), Image.NEAREST)


def masked_view(x: torch.Tensor, keep: torch.Tensor, scale: int = 6) -> Image.Image:
    """The model input with its erased pixels tinted red: what the fills must complete."""
    g = to_uint8(x[:1])[0].astype(np.float64)
    rgb = np.stack([g, g, g], -1)
    erase = (keep.reshape(28, 28) < 0.5).numpy()
    rgb[erase] = 0.35 * rgb[erase] + 0.65 * np.array([239, 68, 68])
    return Image.fromarray(rgb.round().astype(np.uint8), mode="RGB").resize((28 * scale, 28 * scale), Image.NEAREST)


def strip(frames: list[torch.Tensor], scale: int = 2) -> Image.Image:
    """Frames (each n×1×28×28) as a picture: one row per chain, one column per frame."""
    stacked = torch.stack([f.float() for f in frames], 1).reshape(-1, 1, 28, 28)  # row i = chain i over time
    return ebm_play.images.grid(stacked, nrow=len(frames), scale=scale)


def grid_file(x: torch.Tensor, nrow: int, scale: int = 3) -> str:
    return picture(ebm_play.images.grid(x.float(), nrow=nrow, scale=scale))


def result_file(folder, prefix: str, **arrays) -> str:
    """Arrays as float32 in a fresh ``.npz`` under ``folder``/results for download; the oldest
    files beyond KEEP_FILES are removed."""
    d = Path(folder) / "results"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.npz"
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: (v.detach().cpu().float().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
                                for k, v in arrays.items()})
    path.write_bytes(buf.getvalue())
    for p in sorted(d.glob("*.npz"), key=lambda p: p.stat().st_mtime)[:-KEEP_FILES]:
        p.unlink(missing_ok=True)
    return str(path)


def tidy(v):
    """A result for JSON with its floats at 6 significant digits (no float noise such as
    0.027048498392105103); non-finite numbers become None."""
    if isinstance(v, dict):
        return {k: tidy(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [tidy(x) for x in v]
    if isinstance(v, float):
        return float(f"{v:.6g}") if math.isfinite(v) else None
    return v


# --- runs of chains ---------------------------------------------------------------------------------
def stream(pg: Playground, key: tuple, job: ChainJob) -> Iterator[Recorder]:
    """Run ``job`` as the session's ``key`` job (a newer run from the same tab stops it); yields its
    recorder while the chains run. Afterwards ``job.recording`` is the finished run."""
    pg.jobs.start(key, job)
    try:
        yield from job.snapshots()
    finally:
        pg.jobs.end(key, job)


def given(knobs: dict, chosen: ebm_play.settings.Settings) -> dict:
    """The sampler options to pass: none while no knob is set (the engine's own defaults run), else
    the resolved settings with the knobs applied."""
    return dict(chosen.options) if any(v is not None for v in knobs.values()) else {}


def curve_frame(steps: list[int], values, names: list[str], limit: int = 200) -> pd.DataFrame | None:
    """Long format (step, value, series) of ``values`` (records × series), at most ``limit`` steps;
    None when there is nothing to draw (gradio 6.31's page draws no line in a plot whose value was
    once set to an empty frame, whatever comes next; None clears it without that)."""
    idx = thin(list(range(len(steps))), limit)
    rows = [(steps[i], float(values[i][j]), n) for i in idx for j, n in enumerate(names)
            if math.isfinite(float(values[i][j]))]
    return pd.DataFrame(rows, columns=["step", "value", "series"]) if rows else None


def engine_default(fn: Callable, param: str):
    """The default of ``param`` in the engine function ``fn`` (what runs when a knob is left alone)."""
    import inspect

    return inspect.signature(fn).parameters[param].default


# --- the panel's endpoints ----------------------------------------------------------------------------
def _shown(x: torch.Tensor | None, note: str, mask: bool) -> tuple:
    """(preview, note[, mask pad]) for the model input ``x`` (None: none yet)."""
    preview = None if x is None else picture(enlarge(x, 168))
    return (preview, note, gr.HTML(background=EMPTY if x is None else data_url(enlarge(x)))) if mask else (preview, note)


def _digit_view(digit: int | None, mask: bool) -> tuple:
    if digit is None:
        return _shown(None, HINT, mask)
    x, label = test_digit(digit)
    return _shown(x, f"Using **test digit #{digit} (a {label})**; draw on the pad to use your drawing instead.", mask)


@endpoint(pad=Pad(), digit=DIGIT, mask=Kept())
def drawn(pg: Playground, pad, digit, mask=False) -> tuple:
    """The pad changed (a stroke, an upload, the eraser or Clear): a picture replaces the test digit;
    an empty pad leaves it. Outputs: digit field, preview, note (, the mask pad's background)."""
    if pad is None:
        return gr.skip(), *_digit_view(digit, mask)
    try:
        x = ebm_play.preprocess(pad)
    except EBMError as e:
        if "empty" not in str(e):
            raise
        return gr.skip(), *_digit_view(digit, mask)
    return None, *_shown(x, "Using **your drawing**.", mask)


@endpoint(digit=DIGIT, mask=Kept())
def picked(pg: Playground, digit, mask=False) -> tuple:
    """A test digit typed in replaces the drawing (the pad goes blank). Outputs: pad, preview, note (, mask)."""
    if digit is None:
        return (gr.skip(),) * (4 if mask else 3)
    return EMPTY, *_digit_view(digit, mask)


@endpoint(mask=Kept())
def random_digit(pg: Playground, mask=False) -> tuple:
    """Pick a random test digit. Outputs: pad, digit field, preview, note (, mask)."""
    i = random.randrange(n_test())
    return EMPTY, i, *_digit_view(i, mask)


MODEL_NAME = Text(200).named("model")


@endpoint(session=Session(), model=MODEL_NAME)
def choose_model(pg: Playground, session, model) -> None:
    """The session's current model (shared by the Sample, Inpaint and Denoise tabs)."""
    pg.use_model(session, model)


@endpoint(session=AnySession())
def refresh_models(pg: Playground, session) -> gr.Dropdown:
    """The model choices when the tab is opened (a model trained meanwhile shows up)."""
    s = pg.sessions.peek(session) if session else None
    key = s.choices.get("model") if s is not None else None
    names = pg.model_names(s)
    return gr.Dropdown(choices=names, value=key if key in names else pg.default_model)


# --- layout and wiring ------------------------------------------------------------------------------------
@dataclass
class InputPanel:
    pad: gr.HTML  # the page's canvas pad (value: a PNG data URL)
    api_image: gr.ImageEditor  # hidden: the API endpoints' image input (an editor value, checked by gradio)
    digit: gr.Number
    random_btn: gr.Button
    preview: gr.Image
    note: gr.Markdown


def image_box(caption: str, elem_id: str, height: int = 220, **kw) -> gr.Image:
    """A picture output with its caption above it, not laid over its top row."""
    gr.Markdown(f"**{caption}**", elem_classes="ebm-caption")
    return gr.Image(type="filepath", format="png", height=height, interactive=False, show_label=False,
                    elem_classes="ebm-grid", elem_id=elem_id, buttons=[], **kw)


def input_panel(pg: Playground, prefix: str, mask_pad: gr.HTML | None = None) -> InputPanel:
    """Pad, test-digit picker and preview, wired so the preview shows what the model will see
    (and ``mask_pad``, if given, shows it under its strokes)."""
    with gr.Column(min_width=290):
        pad = canvas_pad(f"{prefix}-pad", "Draw a digit (or upload a picture)", CANVAS, BRUSH_SIZE,
                         max_bytes=MAX_UPLOAD_BYTES)
        # never shown, so never mounted: the page never reads it (see ui.canvas_pad)
        api_image = gr.ImageEditor(black_canvas(), label="image", type="pil", image_mode="RGBA", visible=False)
        digit = gr.Number(None, precision=0, minimum=0, maximum=n_test() - 1, label="…or MNIST test digit #",
                          info=f"0 to {n_test() - 1:,}", elem_id=f"{prefix}-digit")
        random_btn = gr.Button("Random test digit", size="md", elem_id=f"{prefix}-random")
    with gr.Column(min_width=200, scale=0):
        preview = image_box("What the model sees (28×28)", f"{prefix}-preview", height=200, width=200)
        note = gr.Markdown(HINT, elem_id=f"{prefix}-note")
    panel = InputPanel(pad, api_image, digit, random_btn, preview, note)
    extra = [mask_pad] if mask_pad is not None else []
    flag = [gr.State(True)] if mask_pad is not None else []
    outs = [preview, note, *extra]
    quiet = dict(PRIVATE, concurrency_limit=None)
    on(pad.input, drawn, pg, [pad, digit, *flag], [digit, *outs], trigger_mode="always_last", **quiet)
    on(digit.input, picked, pg, [digit, *flag], [pad, *outs], trigger_mode="always_last", **quiet)
    on(random_btn.click, random_digit, pg, flag or None, [pad, digit, *outs], **quiet)
    return panel


def model_picker(pg: Playground, session: gr.BrowserState, page: gr.Tab | None, elem_id: str) -> gr.Dropdown:
    """A dropdown bound to the session's current model (the Sample tab's, too), refreshed when the
    tab is opened."""
    dd = gr.Dropdown(pg.model_names(None), value=pg.default_model, label="Model",
                     info="the session's current model (shared with the Sample tab)", elem_id=elem_id)
    on(dd.input, choose_model, pg, [session, dd], None, **PRIVATE)
    if page is not None:
        on(page.select, refresh_models, pg, session, dd, **PRIVATE)
    return dd


KNOB_SPECS = dict(step_size=Number(1e-12, 1e4, optional=True, zero_is_none=True).named("step size"),
                  noise=Number(0, 10, optional=True, zero_is_none=True),
                  temperature=Number(1e-12, 1e6, optional=True, zero_is_none=True))


def sampler_knobs(steps_info: str) -> list:
    """Steps, step size, noise and temperature: 0 (an empty field) = the engine's own setting."""
    with gr.Accordion("Sampler settings (0 = the engine's default for the model)", open=False):
        with gr.Row():
            steps = gr.Number(None, precision=0, label="Steps", info=steps_info, min_width=90)
            step_size = gr.Number(None, label="Step size", min_width=90)
        with gr.Row():
            noise = gr.Number(None, label="Noise σ (langevin)", min_width=90)
            temperature = gr.Number(None, label="Temperature", min_width=90)
    return [steps, step_size, noise, temperature]


def page_twin(ep: Callable, **specs: Spec) -> Callable:
    """The page's variant of the endpoint ``ep``: the same function with ``specs`` in place of some
    of its parameters' (canvas pads for image inputs, 0 = default for number fields)."""
    twin = endpoint(**{**ep.specs, **specs})(ep.__wrapped__)
    twin.__name__ = twin.__qualname__ = f"{ep.__name__}_page"
    return twin


def wire_run(pg: Playground, btn: gr.Button, fns: tuple[Callable, Callable], inputs: list, api_inputs: list,
             outputs: list, api_name: str, **kw) -> None:
    """``btn`` runs the page's function on ``inputs`` (canvas pads); a hidden button gives the API
    endpoint ``api_name`` the API function on ``api_inputs`` (hidden image editors). The API event
    is wired first, so it keeps its name."""
    run = dict(concurrency_limit=2, concurrency_id="compute", show_progress="minimal", **kw)
    on(gr.Button(visible=False).click, fns[0], pg, api_inputs, outputs, api_name=api_name, **run)
    on(btn.click, fns[1], pg, inputs, outputs, **run)
