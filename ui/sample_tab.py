"""Sample tab: watch noise become digits, then scrub, replay and download the chains.

Pick a model (the session's current one, or an uploaded ``.safetensors``), a sampler (those that
apply to the model) and its settings, chains, steps, seed, a class (JEM) and where the chains start.
The chains run in a helper thread (:class:`ebm_play.recording.ChainJob`); the request streams a
frame, the energy of each chain per step and, for MALA/HMC, the acceptance rate and step size.
Afterwards a step slider and play/pause move through the recorded frames, and the run downloads as
GIF, MP4, PNG and ``.npz``.

Endpoints (gradio_client names):

- ``/sample(session, sampler, steps, step_size, noise, temperature, chains, seed, start="uniform",
  start_image=None, label=-1, frames=60, leapfrog=None, t_start=None, base=None, model="",
  model_file=None)`` → (final grid PNG, energy plot, result dict). Streams: each intermediate
  output is a frame. ``None`` for a sampler setting means the model's recommendation; ``label``
  0–9 samples E(x, y) of a JEM model; ``start`` is uniform, gaussian, buffer (the session's training
  run) or image (``start_image``); ``model`` is a shipped name or "trained in this session" ("" = the
  session's current model). The result holds the final energies, the acceptance rate, the step size
  (MALA/HMC) and ``record``, the id of the recording.
- ``/sample_files(record, fps=10)`` → (GIF, MP4, PNG, NPZ) of a recording (see :mod:`ui.playback`).
- ``/score(session, image)`` → (energy, the image as the model sees it, a note).
"""

from __future__ import annotations

import weakref
from pathlib import Path

import gradio as gr
import torch

import ebm_play
from ebm_play import EBMError, ood, settings
from ebm_play.playground import Playground
from ebm_play.recording import MAX_FRAMES, STARTS, ChainJob, start_chains
from ebm_play.runtime import job_threads

from . import playback as P
from .boundary import AnySession, Choice, File, Flag, Picture, Text, Whole, endpoint, on
from .common import fmt, picture

LONG_RUN_STEPS = 2000
FRAMES = 60
LABELS = [("any digit: E(x)", -1)] + [(f"{d}: E(x, y={d})", d) for d in range(10)]
START_LABELS = [("uniform noise", "uniform"), ("Gaussian noise (σ 0.5, clipped)", "gaussian"),
                ("replay buffer of this session's training run", "buffer"), ("an image (draw or upload)", "image")]
MODEL = Text(200).named("model")
_reference: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → (E test digits, E noise)


def reference_energies(model) -> tuple[float, float]:
    """Mean energy of 256 real test digits and of 256 noise images, to read a score against."""
    if model not in _reference:
        digits = ebm_play.sample_digits(train=False).x[:256]
        noise = torch.rand((256, 1, 28, 28), generator=torch.Generator().manual_seed(0)) * 2 - 1
        _reference[model] = (float(ebm_play.score(model, digits).mean()), float(ebm_play.score(model, noise).mean()))
    return _reference[model]


def model_for(pg: Playground, session, model: str = "", model_file: str | None = None) -> tuple:
    """(model, label) a request samples: an uploaded file, a named model, or the session's current one."""
    if model_file:
        return pg.uploads.load(model_file, pg.device), f"uploaded {Path(model_file).name}"
    if model:
        return pg.named_model(session, model)
    return pg.current_model(session)


def replay_buffer(pg: Playground, session) -> torch.Tensor:
    """Chains of the replay buffer of the session's image run, published while the run lives."""
    s = pg.sessions.peek(session) if session else None
    run = s.runs.get("image") if s is not None else None
    if run is None:
        raise EBMError("start from the replay buffer: this session has no training run (start one in the Train tab)")
    if run.config.objective != "cd":
        raise EBMError(f"start from the replay buffer: the training run's objective ({run.config.objective}) "
                       "keeps no replay buffer (only cd does)")
    if run.view.starts is None:
        raise EBMError("start from the replay buffer: the training run has ended and its buffer is gone")
    return run.view.starts


SPECS = dict(session=AnySession(), **P.RUN_SPECS, start=Choice(STARTS), start_image=Picture().named("start image"),
             label=Whole(-1, 9).named("class"), model=MODEL, model_file=File().named("model file"))


def _chains(pg: Playground, session=None, sampler="langevin", steps=60, step_size=None, noise=None,
            temperature=None, chains=16, seed=0, start="uniform", start_image=None, label=-1, frames=FRAMES,
            leapfrog=None, t_start=None, base=None, model="", model_file=None):
    """Run a sampler on the session's current model (or ``model`` / ``model_file``), streaming frames;
    the last output is the final grid, the energy curves and the result (final energies, acceptance,
    step size, ``record`` for /sample_files)."""
    m, name = model_for(pg, session, model, model_file)
    settings.check_applicable(m, sampler, name)
    y = None if label == -1 else label
    if y is not None and not m.has_classes:
        raise EBMError(f"a class (E(x, y)) needs a JEM model such as mnist-jem; this is a {m.kind} model")
    chosen = settings.resolve(m, sampler, steps, base=base, **P.page_knobs(
        m, sampler, base, step_size=step_size, noise=noise, temperature=temperature, leapfrog=leapfrog, t_start=t_start))
    chosen.check_work(chains)
    x0 = start_chains(start, chains, seed, P.digit_of(start_image) if start == "image" else None,
                      replay_buffer(pg, session) if start == "buffer" else None)
    energy = m if y is None else ebm_play.ClassEnergy(m, y).eval()
    meta = {"model": name, "sampler": sampler, "steps": chosen.steps, "chains": chains, "seed": seed, "start": start,
            "class": y, "options": chosen.options}
    job = ChainJob(energy, chains, chosen.steps, sampler, seed, x0, chosen.options, frames, meta=meta,
                   store=pg.records)
    marker = settings.training_length(m)
    for recorder in P.stream(pg, (session, "sample"), job):
        yield recorder, marker, None
    yield job.recorder, marker, {**meta, **job.recording.summary()}


@endpoint(**SPECS)
@P.like(_chains)
def sample(pg: Playground, *args, **kwargs):
    for recorder, marker, result in _chains(pg, *args, **kwargs):
        x = recorder.latest if result is None else recorder.rec.x
        yield P.grid_file(x), P.energy_plot(recorder, marker), (gr.skip() if result is None else result)


@endpoint(**SPECS)
@P.like(_chains)
def sample_page(pg: Playground, *args, **kwargs):
    """/sample for the page: also the acceptance plot, the status line, the record and the slider."""
    for recorder, marker, result in _chains(pg, *args, **kwargs):
        with recorder.lock:
            line = P.status_line(recorder.rec, result is None)
        x = recorder.latest if result is None else recorder.rec.x
        shown = (P.grid_file(x), P.energy_plot(recorder, marker), P.accept_plot(recorder), line)
        if result is None:
            yield *shown, gr.skip(), gr.skip(), gr.skip()
        else:
            yield *shown, result, result["record"], P.finished_slider(recorder.rec)


@endpoint(session=AnySession())
def sample_stop(pg: Playground, session) -> None:
    pg.jobs.stop((session, "sample"))


@endpoint(session=AnySession(), image=Picture())
def score(pg: Playground, session=None, image=None) -> tuple:
    """Energy of one uploaded picture (preprocessed MNIST-style) under the session's current model."""
    x = P.digit_of(image)
    if x is None:
        raise EBMError("upload an image to score")
    model, name = pg.current_model(session)
    with job_threads(1):
        e = float(ebm_play.score(model, x)[0])
        real, noise = reference_energies(model)
    note = (f"**E(x) = {fmt(e)}** under {name}. For comparison, real test digits average **{fmt(real)}** and "
            f"uniform noise **{fmt(noise)}** (lower = more digit-like).")
    return e, picture(ebm_play.images.grid(x, 1, scale=6)), note


# --- the page's model, sampler and knobs ---------------------------------------------------------------
def labels_of(model) -> list | None:
    """The class choices of a JEM of other data than digits (its own class names), else None."""
    n = model.config.get("n_classes", 10)
    names = ood.class_names(model, n)
    if n == 10 and names == [str(d) for d in range(10)]:
        return None
    return [("any class: E(x)", -1)] + [(f"{c}: E(x, y={k})", k) for k, c in enumerate(names)]


def knobs_for(model, sampler: str, base=None) -> tuple:
    """(sampler, steps, *knob fields, class) updates for ``sampler`` on ``model``."""
    own = labels_of(model) if model.has_classes else None
    label = (gr.Dropdown(own, value=-1, interactive=True) if own else gr.Dropdown(LABELS, interactive=True)
             if model.has_classes else gr.Dropdown(LABELS, value=-1, interactive=False))
    return (*P.knob_values(model, sampler, base), label)


PAGE = dict(session=AnySession(), model=MODEL, sampler=Choice(ebm_play.SAMPLERS),
            base=Choice(settings.BASES, optional=True), upload=File())


@endpoint(**PAGE)
def knobs(pg: Playground, session, model, sampler, base, upload) -> tuple:
    """The samplers that apply to the page's model, and the recommended settings of the chosen one."""
    return knobs_for(model_for(pg, session, model, upload)[0], sampler, base)


@endpoint(**PAGE)
def choose_model(pg: Playground, session, model, sampler, base, upload) -> tuple:
    """The page's model becomes the session's current one (in every tab)."""
    if session is not None:
        pg.use_model(session, model)
    return knobs(pg, session, model, sampler, base, upload)


@endpoint(session=AnySession(), sampler=Choice(ebm_play.SAMPLERS), upload=File())
def refresh(pg: Playground, session, sampler, upload) -> tuple:
    """The session's models (a model trained meanwhile shows up) and the current one's knobs."""
    s = pg.sessions.peek(session)
    names = pg.model_names(s)
    key = s.choices.get("model") if s is not None else None
    key = key if key in names else pg.default_model
    return (gr.Dropdown(choices=names, value=key), *knobs(pg, session, key, sampler, None, upload))


@endpoint(long=Flag(), session=AnySession(), model=MODEL, sampler=Choice(ebm_play.SAMPLERS), upload=File())
def long_toggle(pg: Playground, long, session, model, sampler, upload) -> tuple:
    if long:
        return LONG_RUN_STEPS, MAX_FRAMES
    return settings.resolve(model_for(pg, session, model, upload)[0], sampler).steps, FRAMES


@endpoint(start=Choice(STARTS))
def show_pad(pg: Playground, start) -> gr.Column:
    return gr.Column(visible=start == "image")


# --- layout and wiring -------------------------------------------------------------------------------
def _settings_column(pg: Playground) -> dict:
    c = {}
    model = pg.models[pg.default_model]
    c["model"] = gr.Dropdown(pg.model_names(None), value=pg.default_model, label="Model",
                             info="the session's current model (Train → 'Use this model' adds yours)")
    with gr.Accordion("…or upload a model (.safetensors)", open=False):
        c["model_file"] = gr.File(label="Model file", file_types=[".safetensors"], type="filepath", height=100)
    with gr.Row():
        choices, first = P.knob_state(model, "langevin")[:2]
        c["sampler"] = gr.Dropdown(choices, value=first, label="Sampler", min_width=120,
                                   info="those that suit this model (checked on the shipped ones)")
        c["label"] = gr.Dropdown(LABELS, value=-1, label="Class (JEM)", min_width=120, info="samples E(x, y)",
                                 interactive=model.has_classes)
    with gr.Row():
        c["steps"] = gr.Number(settings.resolve(model, "langevin").steps, precision=0, label="Steps",
                               info=f"0 to {P.MAX_STEPS:,}", min_width=100, elem_id="sample-steps")
        c["long"] = gr.Checkbox(False, label=f"Long run ({LONG_RUN_STEPS:,} steps)", min_width=100,
                                info="far past the training length")
    c["knobs"] = P.knob_fields(model)
    with gr.Row():
        c["chains"] = gr.Slider(1, P.MAX_CHAINS, 16, step=1, label="Chains")
        c["seed"] = gr.Number(0, precision=0, label="Seed", min_width=90)
    c["start"] = gr.Radio(START_LABELS, value="uniform", label="Start from")
    with gr.Column(visible=False) as c["pad_box"]:  # (shown through its column: a gr.HTML update loses its props)
        c["pad"] = P.pad("sample-start-pad", "Start image: draw a digit (or upload)")
    with gr.Accordion("Recording and downloads", open=False):
        c["frames"] = gr.Slider(2, MAX_FRAMES, FRAMES, step=1, label="Frames recorded",
                                info="evenly spaced over the run; the GIF and MP4 have this many")
        c["fps"] = gr.Slider(1, 30, 10, step=1, label="Frames per second (GIF, MP4, playback)")
    with gr.Row():
        c["run"] = gr.Button("Sample", variant="primary", elem_id="sample-run")
        c["stop"] = gr.Button("Stop", variant="stop", elem_id="sample-stop")
    return c


def _view_column() -> dict:
    v = {}
    v["status"] = gr.Markdown("Press **Sample** to start chains from noise.", elem_id="sample-status",
                              elem_classes="ebm-status")
    with gr.Row():
        v["grid"] = gr.Image(type="filepath", format="png", height=340, interactive=False, scale=2, min_width=240,
                             show_label=False, elem_classes="ebm-grid", elem_id="sample-grid", buttons=[])
        with gr.Column(scale=3, min_width=360):
            v["energy"] = gr.LinePlot(x="step", y="value", color="series", color_title="", y_title="energy",
                                      label="Energy of each chain vs step (grey) and the mean", elem_id="sample-energy")
            v["accept"] = gr.LinePlot(x="step", y="value", color="series", color_title="", y_title="accepted",
                                      label="Acceptance rate (MALA, HMC)", y_lim=[0, 1], visible=False,
                                      elem_id="sample-accept", height=200)
    v["pb"] = P.controls("sample")
    with gr.Accordion("Result (JSON, as /sample returns it)", open=False):
        v["json"] = gr.JSON(label="result")
    return v


def _score_row() -> dict:
    gr.Markdown("### Score an image\nAny picture of a digit, made MNIST-like (cropped, scaled, centred); "
                "lower energy = more digit-like under the current model.")
    s = {}
    with gr.Row():
        s["image"] = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=220)
        s["view"] = gr.Image(label="As the model sees it (28×28)", type="filepath", format="png", height=220,
                             interactive=False, elem_classes="ebm-grid")
        with gr.Column():
            s["run"] = gr.Button("Score", variant="primary")
            s["note"] = gr.Markdown("")
            s["energy"] = gr.Number(None, label="Energy E(x)", interactive=False, visible=False)
    return s


def _api(pg: Playground, session, c: dict, v: dict) -> gr.Textbox:
    """The API-only inputs (hidden): a start image, a model name, knobs whose default is None (the
    model's recommendation); /sample and /sample_files. Returns the box holding the page's record id."""
    with gr.Row(visible=False):
        start_image, model_name = gr.Image(None, type="filepath", label="start image"), gr.Textbox("", label="model")
        record = gr.Textbox("", label="record")
        run, files = gr.Button("sample (API)"), gr.Button("sample files (API)")
        outs = [gr.File(label=k) for k in P.FILES]
        k = [gr.Number(None, label=n) for n in ("step_size", "noise", "temperature", "leapfrog", "t_start")]
        base = gr.Dropdown(list(settings.BASES), value=None, label="base")
    inputs = [session, c["sampler"], c["steps"], *k[:3], c["chains"], c["seed"], c["start"], start_image, c["label"],
              c["frames"], k[3], k[4], base, model_name, c["model_file"]]
    on(run.click, sample, pg, inputs, [v["grid"], v["energy"], v["json"]], api_name="sample",
       show_progress="minimal", concurrency_limit=2, concurrency_id="compute")
    on(files.click, P.sample_files, pg, [record, c["fps"]], outs, api_name="sample_files", concurrency_limit=2,
       concurrency_id="media")
    return record


def create_tab(pg: Playground, session: gr.BrowserState) -> dict:
    """Lay out the Sample tab and wire its events; returns what the app wires its refresh to."""
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            c = _settings_column(pg)
        with gr.Column(scale=2):
            v = _view_column()
    s = _score_row()
    record, pb = _api(pg, session, c, v), v["pb"]
    knob_out = [c["sampler"], c["steps"], *c["knobs"], c["label"]]
    page = [session, c["model"], c["sampler"], c["knobs"][5], c["model_file"]]
    on(c["model"].input, choose_model, pg, page, knob_out, **P.QUIET)
    for trigger in (c["sampler"].input, c["knobs"][5].input, c["model_file"].upload, c["model_file"].clear):
        on(trigger, knobs, pg, page, knob_out, **P.QUIET)
    on(c["long"].input, long_toggle, pg, [c["long"], session, c["model"], c["sampler"], c["model_file"]],
       [c["steps"], c["frames"]], **P.QUIET)
    on(c["start"].change, show_pad, pg, c["start"], c["pad_box"], queue=False, **P.QUIET)

    run_inputs = [session, c["sampler"], c["steps"], *c["knobs"][:3], c["chains"], c["seed"], c["start"], c["pad"],
                  c["label"], c["frames"], c["knobs"][3], c["knobs"][4], c["knobs"][5], c["model"], c["model_file"]]
    cleared = on(c["run"].click, P.reset, pg, None, [pb.timer, pb.slider, *pb.downloads, v["energy"]], queue=False,
                 **P.QUIET)
    run = on(cleared.then, sample_page, pg, run_inputs,
             [v["grid"], v["energy"], v["accept"], v["status"], v["json"], record, pb.slider],
             show_progress="minimal", concurrency_limit=2, concurrency_id="compute")
    P.wire(pg, pb, record, c["fps"], v["grid"], v["status"], run)
    on(c["stop"].click, sample_stop, pg, session, None, queue=False, **P.QUIET)
    on(s["run"].click, score, pg, [session, s["image"]], [s["energy"], s["view"], s["note"]], api_name="score",
       concurrency_limit=2, concurrency_id="compute")
    return {"refresh": ([session, c["sampler"], c["model_file"]], [c["model"], *knob_out])}
