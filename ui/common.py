"""What the tabs share to show things: theme, header, pictures, plot frames and number formats."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import math
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from gradio.utils import get_upload_folder
from PIL import Image

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
.ebm-table th, .ebm-table td {word-break: normal; overflow-wrap: normal;} .ebm-table th {white-space: nowrap;}
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


MAX_PICTURE_BYTES = 256 * 2**20  # pictures kept in the cache folder; live views make a few every second


class _Pictures:
    """The pictures this process wrote, oldest first, so that live views (several a second per
    watching page) cannot fill the disk: past ``MAX_PICTURE_BYTES`` the oldest are deleted
    (gradio's own ``delete_cache`` would keep them for two hours)."""

    def __init__(self):
        self.files: OrderedDict[Path, int] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()

    def used(self, path: Path, size: int | None = None) -> None:
        with self.lock:
            if path in self.files:
                self.files.move_to_end(path)
            elif size is not None:
                self.files[path] = size
                self.bytes += size
            while self.bytes > MAX_PICTURE_BYTES and len(self.files) > 1:
                old, n = self.files.popitem(last=False)
                self.bytes -= n
                with contextlib.suppress(OSError):
                    old.unlink()


_PICTURES = _Pictures()


def picture(img: Image.Image, jpeg: bool = False) -> str:
    """A picture as a file in gradio's cache folder, for an image output. gradio would write a
    returned PIL image itself, in place under the hash of its bytes, so two users getting the same
    picture raced (one downloaded while the other rewrote the file). Files already in its cache folder
    are served as they are: this one is written once, to a temporary name, then renamed into place.
    ``jpeg``: for live views of smooth pictures (a 520 px heat map: 6 ms and 90 kB, against 230 ms
    and 210 kB as PNG)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85) if jpeg else img.save(buf, format="PNG")
    data = buf.getvalue()
    folder = Path(get_upload_folder()) / "ebm_play"
    path = folder / f"{hashlib.sha256(data).hexdigest()[:32]}.{'jpg' if jpeg else 'png'}"
    if path.exists():
        with contextlib.suppress(OSError):
            os.utime(path)  # gradio's delete_cache ages files by their time stamps
        _PICTURES.used(path)
        return str(path)
    folder.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=folder, prefix=".picture.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(staging, path)
    _PICTURES.used(path, len(data))
    return str(path)


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
        except AttributeError:  # a gradio whose constructor reads more: its own way, and said so
            init.fallbacks += 1
            log.warning("gradio's SessionState reads more than this patch assumes: the patch is not in effect")
            original(self, blocks)
    init.lazy, init.fallbacks = True, 0
    return init


def patch_gradio_sessions() -> None:
    """Make gradio's per-session state cheap. Its constructor renders the configuration of every
    block (552 here) for deep links, which this app does not offer: 25 ms of interpreter-locked
    CPU and 2,750 Python objects per session, and every REST call without a session hash is a new
    session. The configurations it needs later it builds on demand (``_update_value_in_config``).
    No supported setting does this; ``tests/test_common.py`` fails as soon as gradio's
    constructor reads more than the patch provides, and ``benchmarks/load.py --no-patch`` shows the gain."""
    from gradio.state_holder import SessionState

    if not getattr(SessionState.__init__, "lazy", False):
        SessionState.__init__ = _lazy_session_init(SessionState.__init__)


def launch_style() -> dict:
    """Gradio 6 takes the theme and CSS at launch, not in ``gr.Blocks``."""
    return {"theme": THEME, "css": CSS}


def thin(rows: list, limit: int = 300) -> list:
    """Every k-th row (and the last) so a plot stays light however long the run."""
    if len(rows) <= limit:
        return list(rows)
    k = math.ceil(len(rows) / limit)
    out = rows[::k]
    return out if out[-1] is rows[-1] else [*out, rows[-1]]


def plot_value(df: pd.DataFrame) -> pd.DataFrame | None:
    """What a plot shows for ``df``: nothing at all while it has no rows (an empty frame makes the
    page's chart library draw axes of ±1.8e308 and log errors)."""
    return None if df.empty else df


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


def fmt(v, digits: int = 4) -> str:
    """A number as people read it: 4 significant digits, no float noise ("0.02705", not
    "0.027048498392105103")."""
    if v is None:
        return "–"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{int(v):,}"
    v = float(v)
    return f"{v:.{digits}g}" if math.isfinite(v) else str(v)

