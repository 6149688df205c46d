"""What the Sample and Compose tabs share: the sampler knobs, the streamed run of chains, the plots
and status of a recording, and the controls under a finished run (a step slider that scrubs the
recorded frames, play/pause on a ``gr.Timer`` that is on only while playing, the downloads).

``/sample_files(record, fps=10)`` → (GIF, MP4, PNG, NPZ) of a recording from ``/sample`` or
``/compose``; the GIF has one frame per recorded frame; MP4 is None without PyAV.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import torch

import ebm_play
from ebm_play import settings
from ebm_play.media import chain_grid, export
from ebm_play.playground import Playground
from ebm_play.recording import MAX_FRAMES, ChainJob, Recorder, Recording

from . import draw
from .boundary import PRIVATE, Choice, Kept, Number, Text, Whole, endpoint, on
from .canvas_pad import canvas_pad, read_data_url
from .common import fmt, picture, plot_value, thin

# Quiet events show no progress on their outputs (without show_progress_on=[] Gradio 6 still puts a
# running clock on them, e.g. on the status line at every playback tick).
QUIET = {**PRIVATE, "show_progress_on": []}
MAX_CHAINS = 256
MAX_STEPS = 5000
PLOT_CHAINS = 16  # chains drawn as their own line in the energy plot
CHAIN_COLOR, MEAN_COLOR, MARK_COLOR = "#cbd5e1", "#4f46e5", "#dc2626"
TERM_COLORS = ["#2563eb", "#f59e0b", "#10b981", "#a855f7", "#ec4899", "#0ea5e9", "#84cc16", "#64748b"]
EMPTY = pd.DataFrame({"step": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64"),
                      "series": pd.Series(dtype="str")})
FILES = ("gif", "mp4", "png", "npz")

# What a run of chains takes besides its model: declared once for /sample, /compose and their pages.
RUN_SPECS = dict(
    sampler=Choice(ebm_play.SAMPLERS), steps=Whole(0, MAX_STEPS), chains=Whole(1, MAX_CHAINS),
    seed=Whole(0, 2**63 - 2, optional=True), frames=Whole(2, MAX_FRAMES),
    step_size=Number(1e-12, 1e4, optional=True).named("step size"), noise=Number(0, 10, optional=True),
    temperature=Number(1e-12, 1e6, optional=True), leapfrog=Whole(1, 100, optional=True).named("leapfrog steps"),
    t_start=Number(1e-12, 1e6, optional=True).named("start temperature"),
    base=Choice(settings.BASES, optional=True).named("base sampler"))
RECORD, FPS = Text(64).named("record"), Number(1, 60).named("frames per second")


# --- the sampler knobs ---------------------------------------------------------------------------------
def knob_state(model, sampler: str, base: str | None = None) -> tuple[list[str], str, int, list[tuple]]:
    """(samplers offered for ``model`` (those checked to give digits at their defaults, else all that
    run on it), the sampler (the model's own if the chosen one is not offered), its recommended
    steps, (value, shown) of each field of :func:`knob_fields`)."""
    choices = list(settings.offered(model) or settings.applicable(model))
    own = settings.default_sampler(model)
    sampler = sampler if sampler in choices else own if own in choices else choices[0]
    shown = settings.shown(model, sampler, base=base or None)
    o, annealed = shown.options, sampler == "annealed"
    temp = o.get("t_end" if annealed else "temperature")
    fields = [(o.get("step_size"), "step_size" in o), (o.get("noise"), "noise" in o), (temp, temp is not None),
              (o.get("leapfrog"), "leapfrog" in o), (o.get("t_start"), annealed), (o.get("base"), annealed)]
    return choices, sampler, shown.steps, fields


def knob_fields(model, sampler: str = "langevin") -> list:
    """Step size, noise, temperature; leapfrog steps, start temperature, base (shown where they apply)."""
    f = knob_state(model, sampler)[3]
    with gr.Row():
        fields = [gr.Number(f[0][0], label="Step size", min_width=90, visible=f[0][1]),
                  gr.Number(f[1][0], label="Noise σ", min_width=90, visible=f[1][1]),
                  gr.Number(f[2][0], label="Temperature", min_width=90, info="annealed: final T", visible=f[2][1])]
    with gr.Row():
        fields += [gr.Number(f[3][0], precision=0, label="Leapfrog steps", min_width=90, visible=f[3][1]),
                   gr.Number(f[4][0], label="Start temperature", min_width=90, visible=f[4][1]),
                   gr.Dropdown(list(settings.BASES), value=f[5][0], label="Base sampler", min_width=90,
                               visible=f[5][1])]
    return fields


def page_knobs(model, sampler: str, base: str | None = None, **knobs) -> dict:
    """The knobs as a person set them: a field still showing the value the form filled in (see
    :func:`knob_state`) counts as unset, so that MALA and HMC keep adapting their step (a caller's
    step size switches adaptation off) until someone types one."""
    shown = settings.shown(model, sampler, base=base or None).options
    out = {}
    for k, v in knobs.items():
        d = shown.get("t_end" if k == "temperature" and sampler == "annealed" else k)
        same = isinstance(v, (int, float)) and isinstance(d, (int, float)) and math.isclose(v, d, rel_tol=1e-9)
        out[k] = None if same else v
    return out


def knob_values(model, sampler: str, base: str | None = None) -> tuple:
    """Updates for (sampler, steps, *the knob fields) for ``sampler`` on ``model``."""
    choices, sampler, steps, f = knob_state(model, sampler, base)
    fields = [gr.Number(value=v, visible=shown) for v, shown in f[:5]]
    base = gr.Dropdown(choices=list(settings.BASES), value=f[5][0], visible=f[5][1])
    return (gr.Dropdown(choices=choices, value=sampler), steps, *fields, base)


# --- pictures from pads and uploads ----------------------------------------------------------------------
def pad(elem_id: str, label: str) -> gr.HTML:
    """A drawing pad (:mod:`ui.canvas_pad`: its value is a PNG data URL, read only by the events
    that need the drawing)."""
    return canvas_pad(elem_id, label, draw.CANVAS, draw.BRUSH_SIZE, max_bytes=draw.MAX_UPLOAD_BYTES)


def read_picture(value):
    """The picture in a raw picture input, or None if empty: a pad's PNG data URL, an uploaded file
    (an API caller's file data, whose path gradio has checked) or an image editor value. Any other
    string is refused, never opened as a path: a caller could name any file on the server."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return read_data_url(value, "picture", draw.MAX_UPLOAD_BYTES)
    background, layers, composite = draw.editor_parts(None, value)
    return composite or draw.flatten(background, layers)


def digit_of(value) -> torch.Tensor | None:
    """The picture in ``value`` made MNIST-like (1×1×28×28), or None when there is none."""
    pic = read_picture(value)
    return None if pic is None else ebm_play.preprocess(pic)


# --- the run ----------------------------------------------------------------------------------------------
def stream(pg: Playground, key: tuple, job: ChainJob):
    """Run ``job`` as the session's ``key`` job (a Stop button or a newer run ends it); yields its
    recorder while the chains run. Afterwards ``job.recording`` is the finished run, kept in ``pg.records``."""
    pg.jobs.start(key, job)
    try:
        yield from job.snapshots()
    finally:
        pg.jobs.end(key, job)


def like(fn):
    """Give the decorated function ``fn``'s parameters, and its docstring if it has none (a page and
    an API variant of one endpoint: their names stay their own)."""
    def give(g):
        g.__signature__, g.__doc__ = inspect.signature(fn), g.__doc__ or fn.__doc__
        return g
    return give


def grid_file(x: torch.Tensor) -> str:
    return picture(chain_grid(x))


def energy_frame(rec: Recording, marker: int | None = None) -> tuple[pd.DataFrame, dict, list]:
    """Long-format rows for a gr.LinePlot: one line per chain (the first ``PLOT_CHAINS``), the mean,
    and a vertical red line at the training length when the run goes past it."""
    n = min(len(rec.steps), len(rec.energies))
    k = min(PLOT_CHAINS, rec.chains)
    rows = []
    for i in thin(list(range(n))):
        e, s = rec.energies[i], rec.steps[i]
        rows += [(s, float(e[j]), f"chain {j + 1}") for j in range(k) if math.isfinite(float(e[j]))]
        finite = e[torch.isfinite(e)]
        if len(finite):
            rows.append((s, float(finite.mean()), "mean"))
    cmap = {**{f"chain {j + 1}": CHAIN_COLOR for j in range(k)}, "mean": MEAN_COLOR}
    legend = ["mean"]
    df = pd.DataFrame(rows, columns=["step", "value", "series"])
    if marker is not None and n and rec.steps[n - 1] > marker and not df.empty:
        name = f"training length ({marker} steps)"
        lo, hi = float(df["value"].min()), float(df["value"].max())
        df = pd.concat([df, pd.DataFrame([(marker, lo, name), (marker, hi, name)], columns=df.columns)],
                       ignore_index=True)
        cmap[name] = MARK_COLOR
        legend.append(name)
    return df, cmap, legend


def accept_frame(rec: Recording, window: int = 20) -> pd.DataFrame:
    """Acceptance per update (mean over chains), as a running mean over ``window`` updates and overall."""
    a = np.asarray(rec.accept[:], dtype=np.float64)
    if not len(a):
        return EMPTY
    recent = pd.Series(a).rolling(window, min_periods=1).mean().to_numpy()
    overall = np.cumsum(a) / np.arange(1, len(a) + 1)
    idx = thin(list(range(len(a))))
    rows = [(i + 1, float(recent[i]), f"last {window} updates") for i in idx]
    rows += [(i + 1, float(overall[i]), "since the start") for i in idx]
    return pd.DataFrame(rows, columns=["step", "value", "series"])


def term_label(e: dict) -> str:
    return f"{e['name']} (w {e['weight']:+.3g})"


def terms_frame(rec: Recording) -> tuple[pd.DataFrame, dict, list]:
    """Each expert's weighted energy wᵢEᵢ (mean over chains) at the recorded frames, and the total E;
    the colours and legend name this run's experts from its first frame on."""
    experts = [e for e in rec.meta.get("experts", []) if e["on"]]
    cmap = {term_label(e): TERM_COLORS[i % len(TERM_COLORS)] for i, e in enumerate(experts)}
    rows = []
    for e in experts:
        values = rec.terms.get(e["name"], [])[:len(rec.frame_at)]
        rows += [(rec.frame_at[i], e["weight"] * v, term_label(e)) for i, v in enumerate(values)
                 if math.isfinite(e["weight"] * v)]
    n = min(len(rec.steps), len(rec.energies))
    for i in thin(list(range(n))):
        v = float(rec.energies[i].float().mean())
        if math.isfinite(v):
            rows.append((rec.steps[i], v, "total E"))
    cmap["total E"] = "#111827"
    return pd.DataFrame(rows, columns=["step", "value", "series"]), cmap, list(cmap)


def energy_plot(recorder: Recorder, marker: int | None) -> gr.LinePlot:
    with recorder.lock:
        df, cmap, legend = energy_frame(recorder.rec, marker)
    return gr.LinePlot(value=plot_value(df), color_map=cmap, colors_in_legend=legend)


def accept_plot(recorder: Recorder) -> gr.LinePlot:
    with recorder.lock:
        df = accept_frame(recorder.rec)
    return gr.LinePlot(value=plot_value(df), visible=not df.empty)


def terms_chart(rec: Recording) -> gr.LinePlot:
    df, cmap, legend = terms_frame(rec)
    return gr.LinePlot(value=plot_value(df), color_map=cmap, colors_in_legend=legend)


def terms_plot(recorder: Recorder) -> gr.LinePlot:
    with recorder.lock:
        return terms_chart(recorder.rec)


def status_line(rec: Recording, running: bool) -> str:
    """State, step, mean energy and, for MALA/HMC, the acceptance and the (adapted) step size."""
    n = min(len(rec.steps), len(rec.energies))
    if not n:
        return "starting…"
    state = "running" if running else ("stopped" if rec.stopped else "done")
    parts = [state, f"step {rec.steps[n - 1]:,} of {rec.steps_planned:,}",
             f"mean energy {fmt(float(rec.energies[n - 1].float().mean()))}"]
    if rec.accept:
        recent = rec.accept[-20:]
        parts.append(f"acceptance {sum(recent) / len(recent):.2f} (last {len(recent)}), "
                     f"{sum(rec.accept) / len(rec.accept):.2f} overall")
    if rec.step_size is not None:
        how = " (adapting)" if rec.adapting else " (adapted)" if rec.meta.get("adapted") else ""
        parts.append(f"step size {fmt(rec.step_size, 3)}{how}")
    return " · ".join(parts)


def status_at(rec: Recording, i: int) -> str:
    """What the status says while scrubbing: the frame's step and its mean energy."""
    s = rec.frame_at[i]
    try:
        energy = f" · mean energy {fmt(float(rec.energies[rec.steps.index(s)].float().mean()))}"
    except ValueError:
        energy = ""
    return f"frame {i + 1} of {len(rec.frame_at)} · step {s:,} of {rec.last_step:,}{energy}"


def finished_slider(rec: Recording) -> gr.Slider:
    return gr.Slider(0, max(rec.last_step, 1), rec.last_step, step=1, interactive=True)


# --- the controls under a finished run ---------------------------------------------------------------------
@dataclass
class Playback:
    slider: gr.Slider
    play: gr.Button
    pause: gr.Button
    downloads: list[gr.DownloadButton]
    timer: gr.Timer
    clock: gr.State  # when the last frame was shown (for :func:`tick`)


def controls(prefix: str) -> Playback:
    """Lay out the slider, play/pause and downloads (inside the current column)."""
    with gr.Row(equal_height=True):
        slider = gr.Slider(0, 1, 0, step=1, label="Step (scrub the recorded chain)", interactive=False,
                           elem_id=f"{prefix}-step", scale=4)
        play = gr.Button("▶ Play", size="sm", elem_id=f"{prefix}-play", scale=1, min_width=80)
        pause = gr.Button("❚❚ Pause", size="sm", elem_id=f"{prefix}-pause", scale=1, min_width=80)
    with gr.Row():
        downloads = [gr.DownloadButton(text, visible=False, size="sm", elem_id=f"{prefix}-{key}")
                     for key, text in zip(FILES, ("GIF", "MP4", "PNG (final grid)", "Tensors (.npz)"))]
    return Playback(slider, play, pause, downloads, gr.Timer(0.1, active=False), gr.State(None))


def cleared() -> tuple:
    """Updates for (timer, slider, *downloads, plot) when a new run starts: nothing of the last one stays."""
    return (gr.Timer(active=False), gr.Slider(interactive=False), *[gr.DownloadButton(visible=False)] * 4,
            gr.LinePlot(value=None, color_map={}, colors_in_legend=[]))


@endpoint()
def reset(pg: Playground) -> tuple:
    return cleared()


def files_of(pg: Playground, record, fps) -> dict:
    return export(pg.records, record, Path(pg.tmp) / "media", fps)


@endpoint(record=RECORD, fps=FPS)
def sample_files(pg: Playground, record="", fps=10) -> tuple:
    """GIF, MP4 (None without PyAV), PNG and .npz of a recording (``record`` from /sample or /compose)."""
    f = files_of(pg, record, fps)
    return tuple(f[k] for k in FILES)


@endpoint(record=RECORD, fps=FPS)
def show_files(pg: Playground, record, fps) -> tuple:
    if not record:
        return (gr.skip(),) * 4
    f = files_of(pg, record, fps)
    return tuple(gr.DownloadButton(value=f[k], visible=f[k] is not None) for k in FILES)


def _frame(pg: Playground, record, step) -> tuple[int, Recording | None]:
    rec = pg.records.get(record)
    if rec is None or not rec.frame_at:
        return 0, None
    return rec.nearest_frame(step or 0), rec


STEP = Number(0, 1e9, optional=True).named("step")


@endpoint(record=RECORD, step=STEP)
def scrub(pg: Playground, record, step) -> tuple:
    i, rec = _frame(pg, record, step)
    if rec is None:
        return gr.skip(), gr.skip()
    return grid_file(rec.frames[i]), status_at(rec, i)


@endpoint(record=RECORD, step=STEP)
def play(pg: Playground, record, step) -> tuple:
    """Start the timer (from the first frame if at the end); the clock that :func:`tick` keeps time by."""
    i, rec = _frame(pg, record, step)
    if rec is None:
        return gr.skip(), gr.skip(), gr.skip()
    return gr.Timer(active=True), (0 if i >= len(rec.frame_at) - 1 else gr.skip()), time.monotonic()


@endpoint()
def pause(pg: Playground) -> gr.Timer:
    return gr.Timer(active=False)


@endpoint(record=RECORD, step=STEP, fps=FPS, clock=Kept())
def tick(pg: Playground, record, step, fps, clock) -> tuple:
    """The frame due now at ``fps`` frames per second since the last tick (frames are skipped when
    ticks come late, so playback keeps time on a busy server); the timer goes off at the last frame
    (it never turns itself on: a Pause may have come in meanwhile)."""
    off, skip = gr.Timer(active=False), gr.skip()
    i, rec = _frame(pg, record, step)
    if rec is None:
        return off, skip, skip, skip, None
    now, last = time.monotonic(), len(rec.frame_at) - 1
    current = i if rec.frame_at[i] <= (step or 0) else i - 1
    if current >= last:
        return off, skip, skip, skip, None
    due = max(1, round((now - clock) * fps)) if isinstance(clock, float) else 1
    nxt = min(current + due, last)
    return (off if nxt == last else skip, rec.frame_at[nxt], grid_file(rec.frames[nxt]), status_at(rec, nxt),
            now)


@endpoint(fps=FPS)
def set_fps(pg: Playground, fps) -> gr.Timer:
    return gr.Timer(value=1.0 / fps)


def wire(pg: Playground, pb: Playback, record_box, fps, grid_img, status, run_event) -> None:
    """Connect the controls to the recording whose id is in ``record_box``."""
    media = dict(concurrency_limit=2, concurrency_id="media")
    on(run_event.success, show_files, pg, [record_box, fps], pb.downloads, **media)
    on(fps.release, show_files, pg, [record_box, fps], pb.downloads, **QUIET, **media)
    on(pb.slider.input, scrub, pg, [record_box, pb.slider], [grid_img, status], trigger_mode="always_last",
       concurrency_limit=None, **QUIET)
    on(pb.play.click, play, pg, [record_box, pb.slider], [pb.timer, pb.slider, pb.clock], **QUIET)
    on(pb.pause.click, pause, pg, None, pb.timer, queue=False, **QUIET)
    on(pb.timer.tick, tick, pg, [record_box, pb.slider, fps, pb.clock], [pb.timer, pb.slider, grid_img, status,
       pb.clock], concurrency_limit=None, **QUIET)
    on(fps.change, set_fps, pg, fps, pb.timer, queue=False, **QUIET)

