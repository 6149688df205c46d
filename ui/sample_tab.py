"""Sample tab: watch noise become digits, then scrub, replay and download the chains.

Pick a model (the session's current one, or an uploaded ``.safetensors``), a sampler and its
settings, chains, steps, seed, a class (JEM) and where the chains start. The chains run in a
helper thread (:class:`ui.chains.ChainRun`); the request streams a frame, the energy of each chain
per step and, for MALA/HMC, the acceptance rate. Afterwards a step slider and play/pause move
through the recorded frames, and the run downloads as GIF, MP4, PNG and ``.npz``.

Endpoints (gradio_client names):

- ``/sample(session, sampler, steps, step_size, noise, temperature, chains, seed, start="uniform",
  start_image=None, label=-1, frames=60, leapfrog=None, t_start=None, base=None, model="",
  model_file=None)`` → (final grid PNG, energy plot, result dict). Streams: each intermediate
  output is a frame. ``None`` for a sampler setting means the model's recommendation; ``label``
  0–9 samples E(x, y) of a JEM model; ``start`` is uniform, gaussian, buffer (the session's training
  run) or image (``start_image``); ``model`` is a shipped name or "trained in this session" ("" = the
  session's current model). The result holds the final energies, the acceptance rate and
  ``record``, the id of the recording.
- ``/sample_files(record, fps=10)`` → (GIF, MP4, PNG, NPZ) of a recording from ``/sample`` or
  ``/compose``; the GIF has one frame per recorded frame (``frames``); MP4 is None without PyAV.
- ``/score(session, image)`` → (energy, the image as the model sees it, a note).
"""

from __future__ import annotations

import weakref

import gradio as gr
import torch

import ebm_play
from ebm_play import EBMError
from ebm_play.runtime import job_threads

from . import chains as C
from . import playback as P
from .common import upload_path, user_errors, whole
from ebm_play.media import chain_grid
from .sessions import TRAINED_MODEL, Registry

SAMPLERS = list(ebm_play.SAMPLERS)
MAX_CHAINS = C.MAX_CHAINS
MAX_STEPS = C.MAX_STEPS
LONG_RUN_STEPS = 2000
LABELS = [("any digit: E(x)", -1)] + [(f"{d}: E(x, y={d})", d) for d in range(10)]
_reference: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → (E test digits, E noise)


def reference_energies(model) -> tuple[float, float]:
    """Mean energy of 256 real test digits and of 256 noise images, to read a score against."""
    if model not in _reference:
        digits = ebm_play.sample_digits(train=False).x[:256]
        noise = torch.rand((256, 1, 28, 28), generator=torch.Generator().manual_seed(0)) * 2 - 1
        _reference[model] = (float(ebm_play.score(model, digits).mean()), float(ebm_play.score(model, noise).mean()))
    return _reference[model]


def resolve_model(registry: Registry, session, model=None, model_file=None) -> tuple[ebm_play.EnergyModel, str]:
    """The model a request samples: an uploaded file, a named model, or the session's current one."""
    if model_file:
        path = upload_path(model_file)
        m = C.MODEL_FILES.load(path, registry.device)
        return m, f"uploaded {str(path).rsplit('/', 1)[-1]}"
    if model:
        s = registry.session(session) if session else None
        if model == TRAINED_MODEL:
            if s is None or s.trained is None:
                raise EBMError("no model trained in this session: train one and press 'Use this model' first")
            return s.trained, f"{TRAINED_MODEL} ({s.trained_label})"
        if model not in registry.models:
            raise EBMError(f"unknown model {model!r}; choose one of: {', '.join(registry.model_names(s))}")
        return registry.models[model], model
    return registry.current_model(session)


def resolve_label(model, label) -> int | None:
    if label is None or label == -1 or label == "":
        return None
    label = whole("class", label, 0, 9)
    if not model.has_classes:
        raise EBMError(f"a class (E(x, y)) needs a JEM model such as mnist-jem; this is a {model.kind} model")
    return label


def prepare(registry: Registry, session, sampler, steps, step_size, noise, temperature, chains, seed, start,
            start_image, label, frames, leapfrog, t_start, base, model,
            model_file) -> tuple[C.ChainRun, dict, int | None]:
    """Validate everything (API callers bypass the sliders) and set up the chains."""
    m, name = resolve_model(registry, session, model, model_file)
    if sampler not in ebm_play.SAMPLERS:
        raise EBMError(f"unknown sampler {sampler!r}; known: {', '.join(ebm_play.SAMPLERS)}")
    if sampler == "gibbs" and m.kind != "rbm":
        raise EBMError(f"Gibbs sampling needs an RBM model (mnist-rbm); {name} is a {m.kind} model")
    n = whole("chains", chains, 1, MAX_CHAINS)
    steps = whole("steps", steps, 0, MAX_STEPS)
    seed = None if seed is None else whole("seed", seed, 0, 2**63 - 2)
    frames = whole("frames", frames, 2, C.MAX_FRAMES)
    y = resolve_label(m, label)
    _, opts = C.sampler_settings(m, sampler, step_size, noise, temperature, leapfrog, t_start, base)
    C.check_work(n, steps, sampler, opts)
    start = start or "uniform"
    x0 = C.start_images(start, n, seed, start_image, registry, session)
    energy = m if y is None else ebm_play.ClassEnergy(m, y).eval()
    meta = {"model": name, "sampler": sampler, "steps": steps, "chains": n, "seed": seed, "start": start,
            "class": y, "options": opts}
    run = C.ChainRun(energy, n, steps, sampler, seed, x0, opts, frames, meta=meta, store=C.RECORDS)
    return run, meta, C.training_length(m)


def stream(run: C.ChainRun, key, marker):
    """(live chains, recording, finished?) every frame, then once at the end."""
    C.JOBS.start(key, run)
    try:
        for recorder in run.snapshots():
            yield recorder.latest, recorder, False
    finally:
        C.JOBS.end(key, run)
    yield run.recording.x, run.recorder, True


def energy_plot(recorder, marker):
    with recorder.lock:
        df, cmap, legend = C.energy_plot_data(recorder.rec, marker)
    return gr.LinePlot(value=df, color_map=cmap, colors_in_legend=legend)


def accept_plot(recorder):
    with recorder.lock:
        df = C.accept_plot_data(recorder.rec)
    return gr.LinePlot(value=df, visible=not df.empty)


def create_tab(registry: Registry, session: gr.BrowserState) -> dict:
    """Build the Sample tab inside the current ``gr.Blocks``; returns what the app wires to."""
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            model_dd = gr.Dropdown(registry.model_names(None), value=registry.default_model, label="Model",
                                   info="the session's current model (Train → 'Use this model' adds yours)")
            with gr.Accordion("…or upload a model (.safetensors)", open=False):
                model_file = gr.File(label="Model file", file_types=[".safetensors"], type="filepath", height=100)
            with gr.Row():
                sampler = gr.Dropdown(SAMPLERS, value="langevin", label="Sampler", min_width=120,
                                      info="gibbs: RBM only; ula/mala/hmc: small temperature")
                label = gr.Dropdown(LABELS, value=-1, label="Class (JEM)", min_width=120, interactive=False,
                                    info="samples E(x, y) of a JEM model")
            with gr.Row():
                steps = gr.Number(60, precision=0, label="Steps", info=f"0 to {MAX_STEPS:,}", min_width=100,
                                  elem_id="sample-steps")
                long_run = gr.Checkbox(False, label=f"Long run ({LONG_RUN_STEPS:,} steps)", min_width=100,
                                       info="far past the training length")
            lv = C.shown_settings(registry.models[registry.default_model], "langevin")[1]
            with gr.Row():
                step_size = gr.Number(lv.get("step_size"), label="Step size", min_width=90)
                noise = gr.Number(lv.get("noise"), label="Noise σ", min_width=90)
                temperature = gr.Number(lv.get("temperature"), label="Temperature", min_width=90,
                                        info="annealed: final T")
            with gr.Row():
                leapfrog = gr.Number(None, precision=0, label="Leapfrog steps", min_width=90, visible=False)
                t_start = gr.Number(None, label="Start temperature", min_width=90, visible=False)
                base = gr.Dropdown(["ula", "mala", "hmc", "langevin"], value=None, label="Base sampler",
                                   min_width=90, visible=False)
            with gr.Row():
                chains = gr.Slider(1, MAX_CHAINS, 16, step=1, label="Chains")
                seed = gr.Number(0, precision=0, label="Seed", info="empty = random", min_width=90)
            start = gr.Radio(C.STARTS, value="uniform", label="Start from")
            start_pad = gr.Sketchpad(label="Start image: draw a digit (or upload)", sources=["upload"], height=260,
                                     canvas_size=(280, 280), visible=False, type="numpy", image_mode="RGBA")
            with gr.Accordion("Recording and downloads", open=False):
                frames = gr.Slider(2, C.MAX_FRAMES, 60, step=1, label="Frames recorded",
                                   info="evenly spaced over the run; the GIF and MP4 have this many")
                fps = gr.Slider(1, 30, 10, step=1, label="Frames per second (GIF, MP4, playback)")
            with gr.Row():
                run_btn = gr.Button("Sample", variant="primary", elem_id="sample-run")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="sample-stop")
        with gr.Column(scale=2):
            status = gr.Markdown("Press **Sample** to start chains from noise.", elem_id="sample-status",
                                 elem_classes="ebm-status")
            with gr.Row():
                grid_img = gr.Image(label="Chains", type="pil", format="png", height=340, interactive=False, scale=2,
                                    min_width=240, elem_classes="ebm-grid", elem_id="sample-grid",
                                    buttons=["download", "fullscreen"])
                with gr.Column(scale=3, min_width=360):
                    energy_plot_c = gr.LinePlot(x="step", y="value", color="series", color_title="",
                                                label="Energy of each chain vs step (grey) and the mean",
                                                y_title="energy", elem_id="sample-energy")
                    accept_plot_c = gr.LinePlot(x="step", y="value", color="series", color_title="",
                                                label="Acceptance rate (MALA, HMC)", y_title="accepted",
                                                y_lim=[0, 1], visible=False, elem_id="sample-accept", height=200)
            pb = P.controls("sample")
            with gr.Accordion("Result (JSON, as /sample returns it)", open=False):
                result_json = gr.JSON(label="result")
    gr.Markdown("### Score an image\nAny picture of a digit, made MNIST-like (cropped, scaled, centred); "
                "lower energy = more digit-like under the current model.")
    with gr.Row():
        score_in = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=220)
        score_view = gr.Image(label="As the model sees it (28×28)", type="pil", format="png", height=220,
                              interactive=False, elem_classes="ebm-grid")
        with gr.Column():
            score_btn = gr.Button("Score", variant="primary")
            score_out = gr.Number(None, label="Energy E(x)", interactive=False)
            score_note = gr.Markdown("")
    # API-only inputs (hidden): a plain image for start_image, a model name, and the recording id.
    with gr.Row(visible=False):
        start_image = gr.Image(None, type="filepath", label="start image")
        model_name = gr.Textbox("", label="model")
        record_box = gr.Textbox("", label="record")
        api_btn = gr.Button("sample (API)")
        files_btn = gr.Button("sample files (API)")
        api_files = [gr.File(label=k) for k in ("gif", "mp4", "png", "npz")]
        # API defaults for the sampler settings are None (= the model's recommendation): hidden copies of the knobs.
        a_ss, a_nz, a_tp, a_lf, a_ts = [gr.Number(None, label=k) for k in ("step_size", "noise", "temperature",
                                                                             "leapfrog", "t_start")]
        a_base = gr.Dropdown(["ula", "mala", "hmc", "langevin"], value=None, label="base")

    # --- the streamed run -------------------------------------------------------------------------
    def run_chains(session, sampler, steps, step_size, noise, temperature, chains, seed, start, start_image, label,
                   frames, leapfrog, t_start, base, model, model_file):
        run, meta, marker = prepare(registry, session, sampler, steps, step_size, noise, temperature, chains, seed,
                                    start, start_image, label, frames, leapfrog, t_start, base, model, model_file)
        for x, recorder, done in stream(run, (session, "sample"), marker):
            result = {**meta, **C.summary(recorder.rec)} if done else None
            yield x, recorder, marker, result

    @user_errors
    def sample(session=None, sampler="langevin", steps=60, step_size=None, noise=None, temperature=None,
               chains=16, seed=0, start="uniform", start_image=None, label=-1, frames=60, leapfrog=None,
               t_start=None, base=None, model="", model_file=None):
        """Run a sampler on the session's current model (or ``model`` / ``model_file``), streaming frames;
        the last output is the final grid, the energy curves and the result (final energies, acceptance,
        ``record`` for /sample_files)."""
        for x, recorder, marker, result in run_chains(session, sampler, steps, step_size, noise, temperature,
                                                      chains, seed, start, start_image, label, frames, leapfrog,
                                                      t_start, base, model, model_file):
            yield chain_grid(x), energy_plot(recorder, marker), (result if result is not None else gr.skip())

    @user_errors
    def sample_page(session, sampler, steps, step_size, noise, temperature, chains, seed, start, pad, label,
                    frames, leapfrog, t_start, base, model_file):
        for x, recorder, marker, result in run_chains(session, sampler, steps, step_size, noise, temperature,
                                                      chains, seed, start, pad, label, frames, leapfrog, t_start,
                                                      base, "", model_file):
            line = C.status_line(recorder.rec, result is None)
            common = [chain_grid(x), energy_plot(recorder, marker), accept_plot(recorder), line]
            if result is None:
                yield *common, gr.skip(), gr.skip(), gr.skip()
            else:
                yield *common, result, result["record"], P.finished_slider(recorder.rec)

    @user_errors
    def sample_files(record="", fps=10):
        """GIF, MP4 (None without PyAV), PNG and .npz of a recording (``record`` from /sample or /compose)."""
        f = C.export_files(registry.tmp, record, fps)
        return f["gif"], f["mp4"], f["png"], f["npz"]

    # --- model, sampler and defaults -------------------------------------------------------------
    knobs = [steps, step_size, noise, temperature, leapfrog, t_start, base, label]

    def defaults(model, name, base_name=None):
        """The knobs for ``name`` on ``model``: recommended values, and which knobs apply."""
        try:
            st, opts = C.shown_settings(model, name, base=base_name or None)
        except EBMError:
            return (gr.skip(),) * len(knobs)
        b = opts.get("base")
        temp = opts.get("t_end" if name == "annealed" else "temperature")
        jem = model.has_classes
        return (st,
                gr.Number(value=opts.get("step_size"), visible="step_size" in opts),
                gr.Number(value=opts.get("noise"), visible="noise" in opts),
                gr.Number(value=temp, visible=temp is not None),
                gr.Number(value=opts.get("leapfrog"), visible="leapfrog" in opts),
                gr.Number(value=opts.get("t_start"), visible=name == "annealed"),
                gr.Dropdown(value=b, visible=name == "annealed"),
                gr.Dropdown(value=-1, interactive=jem) if not jem else gr.Dropdown(interactive=True))

    def page_model(sid, upload):
        if upload:
            try:
                return resolve_model(registry, None, None, upload)[0]
            except EBMError:
                pass
        return registry.current_model(sid if registry.peek(sid) else None)[0]

    def refresh(sid, name):
        """Model list, current model and that sampler's defaults, for this session."""
        s = registry.peek(sid)
        model = registry.current_model(sid if s is not None else None)[0]
        key = s.model_key if s is not None and s.model_key in registry.model_names(s) else registry.default_model
        return (gr.Dropdown(choices=registry.model_names(s), value=key), *defaults(model, name))

    @user_errors
    def choose_model(sid, key, name, upload):
        registry.use_model(sid, key)
        return defaults(page_model(sid, upload), name)

    @user_errors
    def upload_model(sid, upload, name):
        if upload:
            resolve_model(registry, None, None, upload)  # a bad file says why at once
        return defaults(page_model(sid, upload), name)

    def long_toggle(on, sid, name, upload):
        if on:
            return LONG_RUN_STEPS, C.MAX_FRAMES
        st, _ = C.sampler_settings(page_model(sid, upload), name)
        return st, 60

    private = dict(api_visibility="private", show_progress="hidden")
    model_dd.input(choose_model, [session, model_dd, sampler, model_file], knobs, **private)
    sampler.input(lambda sid, name, up: defaults(page_model(sid, up), name), [session, sampler, model_file], knobs,
                  **private)
    base.input(lambda sid, name, b, up: defaults(page_model(sid, up), name, b), [session, sampler, base, model_file],
               knobs, **private)
    model_file.upload(upload_model, [session, model_file, sampler], knobs, **private)
    model_file.clear(lambda sid, name: defaults(page_model(sid, None), name), [session, sampler], knobs, **private)
    long_run.input(long_toggle, [long_run, session, sampler, model_file], [steps, frames], **private)
    start.change(lambda s: gr.Sketchpad(visible=s == "image"), start, start_pad, queue=False, **private)

    compute = dict(concurrency_limit=2, concurrency_id="compute")
    api_inputs = [session, sampler, steps, a_ss, a_nz, a_tp, chains, seed, start, start_image, label, frames, a_lf,
                  a_ts, a_base, model_name, model_file]
    # preprocess=False everywhere: the engine reads the raw upload itself (gradio's own image
    # preprocessing would open hostile files before our checks see them).
    api_btn.click(sample, api_inputs, [grid_img, energy_plot_c, result_json], api_name="sample",
                  show_progress="minimal", preprocess=False, **compute)
    page_inputs = [session, sampler, steps, step_size, noise, temperature, chains, seed, start, start_pad, label,
                   frames, leapfrog, t_start, base, model_file]
    run_evt = run_btn.click(P.reset, None, [pb.timer, pb.slider, *pb.downloads], queue=False, **private).then(
        sample_page, page_inputs, [grid_img, energy_plot_c, accept_plot_c, status, result_json, record_box, pb.slider],
        api_visibility="private", show_progress="minimal", preprocess=False, **compute)
    P.wire(pb, record_box, fps, grid_img, status, registry.tmp, run_evt)
    stop_btn.click(lambda sid: C.JOBS.stop((sid, "sample")) and None, session, None, queue=False, **private)
    files_btn.click(sample_files, [record_box, fps], api_files, api_name="sample_files", preprocess=False, concurrency_limit=2,
                    concurrency_id="media")

    # --- score ---------------------------------------------------------------------------------
    @user_errors
    def score(session=None, image=None):
        """Energy of one uploaded picture (preprocessed MNIST-style) under the session's current model."""
        path = upload_path(image)
        if not path:
            raise EBMError("upload an image to score")
        x = ebm_play.preprocess(path)
        model, name = registry.current_model(session)
        with job_threads(1):
            e = float(ebm_play.score(model, x)[0])
            real, noise_e = reference_energies(model)
        note = (f"Model: {name}. For comparison, real test digits average **{real:.4g}** and uniform noise "
                f"**{noise_e:.4g}**.")
        return e, ebm_play.images.grid(x, 1, scale=6), note

    score_btn.click(score, [session, score_in], [score_out, score_view, score_note], api_name="score",
                    preprocess=False, **compute)
    return {"refresh": refresh, "refresh_inputs": [session, sampler], "refresh_outputs": [model_dd, *knobs]}
