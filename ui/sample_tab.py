"""Sample tab (simple version): run any sampler on the session's current model and watch it.

Sampling runs ``ebm_play.sample_chains`` in a helper thread whose callback queues the chains; the
request's generator streams them as frames. That keeps every engine check (steps, chains, options)
in one place and lets a closed page stop the chains early.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref

import gradio as gr
import numpy as np
import torch

import ebm_play
from ebm_play import EBMError
from ebm_play.api import default_sampler_settings
from ebm_play.runtime import job_threads
from ebm_play.samplers import sampler_options

from .common import long_frame, number, thin, user_errors, whole
from .sessions import Registry

SAMPLERS = list(ebm_play.SAMPLERS)
MAX_CHAINS = 256
MAX_STEPS = 10_000
FRAME_EVERY_S = 0.25
ENERGY_COLORS = {"mean": "#4f46e5", "min": "#10b981", "max": "#f59e0b"}
_reference: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → (E test digits, E noise)


def sampler_kwargs(sampler: str, step_size, noise, temperature) -> dict:
    """The UI's common knobs → the options this sampler takes (None = the model's or sampler's default).
    For ``annealed``, "temperature" is the final temperature of the schedule."""
    allowed = set(sampler_options(sampler))
    if sampler == "annealed":
        allowed |= set(sampler_options("ula")) - {"temperature"}
    out = {}
    if step_size is not None and "step_size" in allowed:
        out["step_size"] = number("step size", step_size, 0, 1e4)
    if noise is not None and "noise" in allowed:
        out["noise"] = number("noise", noise, 0, 10)
    if temperature is not None:
        key = "t_end" if sampler == "annealed" else "temperature"
        if key in allowed:
            out[key] = number("temperature", temperature, 1e-12, 1e6)
    return out


def sampler_defaults(model, sampler: str) -> tuple:
    """(steps, step size, noise, temperature) to show for ``sampler``: the model's recommended
    settings where its file has them, else the sampler's own defaults; None where it has no such knob."""
    opts = sampler_options(sampler)
    if sampler == "annealed":
        opts = {**sampler_options("ula"), **opts, "temperature": opts["t_end"]}
    rec = default_sampler_settings(model, sampler)
    temp = rec.get("t_end" if sampler == "annealed" else "temperature", opts.get("temperature"))
    return (rec["steps"], rec.get("step_size", opts.get("step_size")), rec.get("noise", opts.get("noise")),
            temp if isinstance(temp, (int, float)) else None)


def reference_energies(model) -> tuple[float, float]:
    """Mean energy of 256 real test digits and of 256 noise images, to read a score against."""
    if model not in _reference:
        digits = ebm_play.sample_digits(train=False).x[:256]
        noise = torch.rand((256, 1, 28, 28), generator=torch.Generator().manual_seed(0)) * 2 - 1
        _reference[model] = (float(ebm_play.score(model, digits).mean()), float(ebm_play.score(model, noise).mean()))
    return _reference[model]


def create_tab(registry: Registry, session: gr.BrowserState) -> dict:
    """Build the Sample tab inside the current ``gr.Blocks``; returns what the app wires to."""
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            model_dd = gr.Dropdown(registry.model_names(None), value=registry.default_model, label="Model",
                                   info="the session's current model (Train → 'Use this model' adds yours)")
            sampler = gr.Dropdown(SAMPLERS, value="langevin", label="Sampler",
                                  info="gibbs needs an RBM; ula/mala/hmc usually need a small temperature")
            steps = gr.Number(60, precision=0, label="Steps", info=f"0 to {MAX_STEPS:,}")
            with gr.Row():
                step_size = gr.Number(None, label="Step size", min_width=100)
                noise = gr.Number(None, label="Noise σ (langevin)", min_width=100)
                temperature = gr.Number(None, label="Temperature", min_width=100,
                                        info="annealed: final temperature")
            with gr.Row():
                chains = gr.Slider(1, 64, 16, step=1, label="Chains")
                seed = gr.Number(0, precision=0, label="Seed", info="empty = random")
            run_btn = gr.Button("Sample", variant="primary", elem_id="sample-run")
        with gr.Column(scale=2):
            with gr.Row():
                grid_img = gr.Image(label="Chains", type="pil", format="png", height=360, interactive=False,
                                    elem_classes="ebm-grid", elem_id="sample-grid")
                energy_plot = gr.LinePlot(x="step", y="value", color="series", color_title="", color_map=ENERGY_COLORS,
                                          label="Energy of the chains vs step", y_title="energy")
            with gr.Accordion("Final energies (JSON, as /sample returns them)", open=False):
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

    @user_errors
    def sample(session=None, sampler="langevin", steps=60, step_size=None, noise=None, temperature=None,
               chains=16, seed=0):
        """Run a sampler from uniform noise on the session's current model, streaming frames; the
        last output is the final grid, the energy curve and the final energies."""
        model, label = registry.current_model(session)
        n = whole("chains", chains, 1, MAX_CHAINS)
        steps = whole("steps", steps, 0, MAX_STEPS)
        seed = None if seed is None else whole("seed", seed, 0, 2**63 - 1)
        opts = sampler_kwargs(sampler, step_size, noise, temperature)
        every = max(1, steps // 50)
        q: queue.Queue = queue.Queue()
        stop = threading.Event()

        def on_step(rec):
            e = rec.energy.float()
            frame = rec.x.detach().cpu().clone() if rec.step % every == 0 or rec.step == steps else None
            q.put(("step", {"step": rec.step, "mean": e.mean().item(), "min": e.min().item(), "max": e.max().item()},
                   frame))
            return not stop.is_set()

        def work():
            try:
                with job_threads(1):
                    res = ebm_play.sample_chains(model, n, steps, sampler, seed, callback=on_step, **opts)
                q.put(("done", res, None))
            except Exception as e:  # handed to the request thread, which shows it
                q.put(("error", e, None))

        threading.Thread(target=work, name="ebm-sample", daemon=True).start()
        rows, x, shown = [], None, 0.0
        series = {"mean": "mean", "min": "min", "max": "max"}
        try:
            while True:
                kind, item, frame = q.get()
                if kind == "error":
                    raise item
                if kind == "done":
                    res = item
                    break
                rows.append(item)
                x = frame if frame is not None else x
                if x is not None and time.monotonic() - shown >= FRAME_EVERY_S:
                    shown = time.monotonic()
                    yield ebm_play.images.grid(x), long_frame(thin(rows), "step", series), gr.skip()
        finally:
            stop.set()
        energy = [round(float(v), 6) for v in res.energy]
        result = {"model": label, "sampler": sampler, "steps": steps, "chains": n, "options": opts,
                  "energy": energy, "mean_energy": float(np.mean(energy)), "accept_rate": res.accept_rate}
        yield ebm_play.images.grid(res.x), long_frame(thin(rows), "step", series), result

    @user_errors
    def score(session=None, image=None):
        """Energy of one uploaded picture (preprocessed MNIST-style) under the session's current model."""
        path = image.get("path") if isinstance(image, dict) else image
        if not path:
            raise EBMError("upload an image to score")
        x = ebm_play.preprocess(path)
        model, label = registry.current_model(session)
        with job_threads(1):
            e = float(ebm_play.score(model, x)[0])
            real, noise_e = reference_energies(model)
        note = (f"Model: {label}. For comparison, real test digits average **{real:.4g}** and uniform noise "
                f"**{noise_e:.4g}**.")
        return e, ebm_play.images.grid(x, 1, scale=6), note

    def refresh(sid, name):
        """Model list, current model and that sampler's defaults, for this session."""
        s = registry.peek(sid)
        model = registry.current_model(sid if s is not None else None)[0]
        key = s.model_key if s is not None and s.model_key in registry.model_names(s) else registry.default_model
        return (gr.Dropdown(choices=registry.model_names(s), value=key), *defaults(model, name))

    def defaults(model, name):
        try:
            st, ss, nz, tp = sampler_defaults(model, name)
        except EBMError:
            return (gr.skip(),) * 4
        return (st, gr.Number(value=ss, interactive=ss is not None), gr.Number(value=nz, interactive=nz is not None),
                gr.Number(value=tp, interactive=tp is not None))

    @user_errors
    def choose_model(sid, key, name):
        registry.use_model(sid, key)
        return defaults(registry.current_model(sid)[0], name)

    knobs = [steps, step_size, noise, temperature]
    model_dd.input(choose_model, [session, model_dd, sampler], knobs, api_visibility="private")
    sampler.input(lambda sid, name: defaults(registry.current_model(sid if registry.peek(sid) else None)[0], name),
                  [session, sampler], knobs, api_visibility="private")
    run_btn.click(sample, [session, sampler, steps, step_size, noise, temperature, chains, seed],
                  [grid_img, energy_plot, result_json], api_name="sample", concurrency_limit=2,
                  concurrency_id="compute", show_progress="minimal")
    score_btn.click(score, [session, score_in], [score_out, score_view, score_note], api_name="score",
                    preprocess=False, concurrency_limit=2, concurrency_id="compute")
    return {"refresh": refresh, "refresh_inputs": [session, sampler], "refresh_outputs": [model_dd, *knobs]}
