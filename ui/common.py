"""Shared pieces of the UI: theme, header, error handling and the small converters the tabs share."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from gradio import processing_utils

import ebm_play
from ebm_play.runtime import FOREGROUND

log = logging.getLogger("ebm_play.app")

TITLE = "ebm_play: energy-based models you can watch"

# System fonts only: the app must work offline, and a web font would be fetched from the internet.
THEME = gr.themes.Soft(
    primary_hue="indigo", secondary_hue="amber", neutral_hue="slate",
    font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
)

CSS = """
.ebm-banner {background: #fff7ed; border: 1px solid #fdba74; border-radius: 8px; padding: 0.4rem 0.8rem;}
.ebm-banner p {margin: 0;}
.ebm-grid img {image-rendering: pixelated;}
.ebm-status p {margin: 0.1rem 0;}
.ebm-error {color: #b91c1c; font-weight: 600;}
.ebm-dot {font-size: 1.1em;}
.ebm-running {color: #16a34a;} .ebm-paused {color: #d97706;} .ebm-stopped, .ebm-finished {color: #475569;}
.ebm-failed {color: #b91c1c;}
footer {visibility: visible;}
"""

HEADER = """\
# ebm_play: energy-based models you can watch
An **energy-based model** (EBM) learns one number per image, its energy E(x): low for images that \
look like the training digits, high for everything else, so that p(x) ∝ exp(−E(x)). \
New images are made by MCMC, e.g. Langevin dynamics sliding noise downhill in energy, and training \
pushes the energy down on real digits and up on the model's own samples.

**Tabs:** [Train](?tab=train) · [Sample](?tab=sample) · [Compose](?tab=compose) · [Inpaint](?tab=inpaint) · [Denoise](?tab=denoise) · [OOD check](?tab=ood) · [Classify](?tab=classify) · [Landscape](?tab=landscape) · every action is also an API endpoint \
(footer: *Use via API*).
"""


def _save_pil_to_cache_once(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """gradio's ``save_pil_to_cache``, written once and atomically. gradio names a picture by the
    hash of its bytes and rewrites that file in place on every request, so two users who get the
    same picture race: one downloads while the other truncates the file ("peer closed connection
    without sending complete message body" under benchmarks/load.py)."""
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    if path.exists():
        with contextlib.suppress(OSError):
            os.utime(path)  # delete_cache ages files by their time stamps
        return str(path)
    fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(staging, path)
    return str(path)


def patch_gradio_cache() -> None:
    """Install :func:`_save_pil_to_cache_once` (every image component goes through it)."""
    processing_utils.save_pil_to_cache = _save_pil_to_cache_once


class _WithoutBlocks:
    """What gradio's ``SessionState`` constructor reads from the app, minus the block list."""

    def __init__(self, app: gr.Blocks):
        self.default_config = app.default_config
        self.blocks: dict = {}


def _lazy_session_init(original: Callable) -> Callable:
    @functools.wraps(original)
    def init(self, blocks):
        try:
            original(self, _WithoutBlocks(blocks))
        except AttributeError:  # a gradio whose constructor reads more: its own way
            original(self, blocks)
    init.lazy = True
    return init


def patch_gradio_sessions() -> None:
    """Make gradio's per-session state cheap. Its constructor renders the configuration of every
    block (552 here) for deep links, which this app does not offer: 25 ms of interpreter-locked
    CPU and 2,750 Python objects per session, and every REST call without a session hash is a new
    session. The configurations it needs later it builds on demand (``_update_value_in_config``)."""
    from gradio.state_holder import SessionState

    if not getattr(SessionState.__init__, "lazy", False):
        SessionState.__init__ = _lazy_session_init(SessionState.__init__)


def launch_style() -> dict:
    """Gradio 6 takes the theme and CSS at launch, not in ``gr.Blocks``."""
    return {"theme": THEME, "css": CSS}


def user_errors(fn: Callable) -> Callable:
    """Turn engine errors into a short ``gr.Error`` (a toast in the page, an ``AppError`` in
    gradio_client) instead of a traceback; unexpected errors are logged and summarised in one line.
    The call counts as a request in flight (``runtime.FOREGROUND``): training runs wait for it."""

    def convert(e: Exception) -> gr.Error:
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, ebm_play.EBMError):
            return gr.Error(str(e), print_exception=False)
        log.exception("unexpected error in %s", fn.__name__)
        return gr.Error(f"unexpected error ({type(e).__name__}): {e}", print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                with FOREGROUND.active():
                    yield from fn(*args, **kwargs)
            except Exception as e:
                raise convert(e) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with FOREGROUND.active():
                return fn(*args, **kwargs)
        except Exception as e:
            raise convert(e) from None
    return wrapper


def upload_path(value) -> str | None:
    """The server path of an uploaded file from a raw API payload (gradio's FileData dict, whose path
    gradio has already checked is inside its upload folder) or a preprocessed path; None if empty."""
    if isinstance(value, dict):
        value = value.get("path")
    return str(value) if value else None


def whole(name: str, v, lo: int, hi: int) -> int:
    """A whole number from a UI/API field, or an EBMError that names the field."""
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or int(v) != v:
        raise ebm_play.EBMError(f"{name} must be a whole number, got {v!r}")
    if not lo <= v <= hi:
        raise ebm_play.EBMError(f"{name} must be between {lo} and {hi}, got {int(v)}")
    return int(v)


def number(name: str, v, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite number from a UI/API field, or an EBMError that names the field."""
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ebm_play.EBMError(f"{name} must be a number, got {v!r}")
    if not lo <= v <= hi:
        raise ebm_play.EBMError(f"{name} must be between {lo:g} and {hi:g}, got {v:g}")
    return float(v)


def thin(rows: list, limit: int = 300) -> list:
    """Every k-th row (and the last) so a plot stays light however long the run."""
    if len(rows) <= limit:
        return list(rows)
    k = math.ceil(len(rows) / limit)
    out = rows[::k]
    return out if out[-1] is rows[-1] else [*out, rows[-1]]


def long_frame(rows: list[dict], x: str, series: dict[str, str]) -> pd.DataFrame:
    """Rows of metrics → the long format a gr.LinePlot with ``color`` wants (x, value, series)."""
    data = [(r[x], float(r[key]), label) for r in rows for key, label in series.items()
            if key in r and math.isfinite(float(r[key]))]
    return pd.DataFrame(data, columns=[x, "value", "series"])


def histogram_frame(energies: dict[str, np.ndarray], focus: tuple[str, ...] = (), bins: int = 50) -> pd.DataFrame:
    """Step-shaped histograms (fraction per bin) of several energy samples on shared bins, for a
    gr.LinePlot. The axis spans the ``focus`` groups (all if empty), so a far-off group (noise, at
    high energy) cannot squash the comparison that matters; such a group only gets a legend entry
    with its mean."""
    finite = {k: v[np.isfinite(v)] for k, v in energies.items()}
    span = [v for k, v in finite.items() if len(v) and (not focus or k in focus)] or [np.zeros(1)]
    lo, hi = np.percentile(np.concatenate(span), [0.5, 99.5])
    pad = max(hi - lo, 1e-3) * 0.25
    lo, hi = lo - pad, hi + pad
    edges = np.linspace(lo, hi, bins + 1)
    rows = []
    for name, v in finite.items():
        if not len(v):
            continue
        if np.mean((v < lo) | (v > hi)) > 0.5:  # off the axis: only a legend entry that gives its mean
            far = f"{name} (at {v.mean():.3g})"
            rows += [(float(edges[-2]), 0.0, far), (float(edges[-1]), 0.0, far)]
            continue
        frac = np.histogram(np.clip(v, lo, hi), edges)[0] / len(v)
        for a, b, c in zip(edges[:-1], edges[1:], frac):
            rows += [(float(a), float(c), name), (float(b), float(c), name)]
    return pd.DataFrame(rows, columns=["energy", "fraction", "source"])
