"""Denoise tab: corrupt a drawing or test digit, then let the energy clean it up.

Noise comes from :mod:`ebm_play.corruptions` (Gaussian, salt-and-pepper, occlusion; seeded). The
restoration is :func:`ebm_play.denoise` at the engine's defaults unless a knob is set: a gradient
sampler on E(x) + λ‖x − x_noisy‖² started at the noisy image, so λ trades "looks like a digit"
against "stays close to what was observed". The page shows noisy | restored | clean side by side,
and the energy and the distance to the clean image against step.

Endpoint ``/denoise`` (session, image, digit, corruption, strength, corruption_seed, data_weight,
steps, sampler, seed, step_size, noise, temperature) → noisy|restored|clean picture, energy vs step,
distance vs step, summary, result (JSON with the distances), arrays (.npz). ``data_weight``,
``steps`` and the knobs left as None (the page: 0) run the engine's defaults.
"""

from __future__ import annotations

import math

import gradio as gr
import torch

import ebm_play
from ebm_play import settings
from ebm_play.corruptions import KINDS, corrupt, kind_of
from ebm_play.playground import Playground
from ebm_play.recording import MAX_FRAMES, ChainJob
from ebm_play.runtime import job_threads
from ebm_play.samplers import GRADIENT_SAMPLERS

from . import draw
from .boundary import PRIVATE, AnySession, Choice, Number, Picture, Spec, Whole, endpoint, on
from .common import fmt, picture

MAX_STEPS = 2000
MAX_WEIGHT = 1000.0
SAMPLERS = [draw.AUTO, *GRADIENT_SAMPLERS]
KIND_LABELS = [("Gaussian", "gaussian"), ("Salt and pepper", "salt_pepper"), ("Occlusion (white patch)", "occlusion")]
DEFAULT_STRENGTH = {"gaussian": 0.5, "salt_pepper": 0.2, "occlusion": 0.15}


class NoiseKind(Spec):
    def check(self, name, v):
        return kind_of(v)


SPECS = dict(session=AnySession(), image=Picture(), digit=draw.DIGIT, corruption=NoiseKind(),
             strength=Number(0, max(hi for _, hi, _ in KINDS.values())).named("noise strength"),
             corruption_seed=Whole(0, 2**63 - 1).named("noise seed"),
             data_weight=Number(0, MAX_WEIGHT, optional=True).named("λ (data weight)"),
             steps=Whole(0, MAX_STEPS, optional=True), sampler=Choice(SAMPLERS).named("gradient sampler"),
             seed=Whole(0, 2**63 - 1, optional=True), **draw.KNOB_SPECS)


def distance(x: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """‖x − x_clean‖₂ per image, over the 784 pixels in [−1, 1]."""
    return (x.detach().float().cpu() - clean).flatten(1).norm(dim=1)


def plots(rec, title: str) -> tuple[gr.LinePlot, gr.LinePlot]:
    """Energy at every step and distance to the clean image at each frame, titled with their run."""
    steps, energies = ([], []) if rec is None else (rec.steps, [e.tolist() for e in rec.energies])
    at, dist = ([], []) if rec is None else (rec.frame_at, [[d] for d in rec.terms.get("distance", [])])
    return (gr.LinePlot(value=draw.curve_frame(steps, energies, ["E(x)"]), label=f"Energy E(x) vs step · {title}"),
            gr.LinePlot(value=draw.curve_frame(at[:len(dist)], dist, ["‖x − clean‖"]),
                        label=f"Distance ‖x − clean‖ vs step · {title}"))


def summary(d0: float, d1: float, energies: tuple[float, float, float], label: str) -> str:
    if not math.isfinite(d1):
        return "The restoration diverged (non-finite pixels): lower the step size."
    change = (f"{100 * (d0 - d1) / d0:.0f}% closer" if d1 < d0 else "not closer") if d0 > 0 else "no noise added"
    e_clean, e_noisy, e1 = (fmt(e) for e in energies)
    return (f"**Distance to the clean image: {fmt(d0)} → {fmt(d1)}** ({change}).  \n"
            f"Energy: clean {e_clean} · noisy {e_noisy} · restored {e1}.  \nModel: {label}.")


@endpoint(**SPECS)
def denoise(pg: Playground, session=None, image=None, digit=None, corruption="gaussian", strength=0.5,
            corruption_seed=0, data_weight=None, steps=None, sampler=draw.AUTO, seed=0, step_size=None, noise=None,
            temperature=None):
    """Corrupt a drawing (or test digit ``digit``) and restore it with the session's current model,
    streaming noisy | restored | clean with the energy and distance to the clean image per step."""
    clean, source = draw.model_input(image, digit)
    noisy = corrupt(clean, corruption, strength, seed=corruption_seed)
    model, label = pg.current_model(session)
    sampler = settings.default_sampler(model) if sampler == draw.AUTO else sampler
    knobs = dict(step_size=step_size, noise=noise, temperature=temperature)
    chosen = settings.resolve(model, sampler, steps, **knobs)
    chosen.check_work(1)
    opts = draw.given(knobs, chosen) | ({} if data_weight is None else {"data_weight": data_weight})
    job = ChainJob.of(lambda cb: ebm_play.denoise(model, noisy, steps=steps, sampler=sampler, seed=seed, callback=cb,
                                                  **opts),
                      1, chosen.steps, MAX_FRAMES, terms=lambda x: {"distance": distance(x, clean)})
    title = f"{label}, {sampler}, {source}"

    def trio(x):
        return picture(ebm_play.images.grid(torch.cat([noisy, x.detach().float().cpu(), clean]), nrow=3, scale=6))

    yield trio(noisy), *plots(None, title), "", None, None
    for rec in draw.stream(pg, (session, "denoise"), job):
        with rec.lock:
            shown = trio(rec.latest), *plots(rec.rec, title)
        yield *shown, gr.skip(), gr.skip(), gr.skip()
    r = job.recording
    d0, d1 = float(distance(noisy, clean)[0]), float(distance(r.x, clean)[0])
    with job_threads(1):
        e_clean, e_noisy = (float(v) for v in ebm_play.score(model, torch.cat([clean, noisy])))
    e1 = float(r.energies[-1][0])
    weight = draw.engine_default(ebm_play.denoise, "data_weight") if data_weight is None else data_weight
    result = draw.tidy({
        "model": label, "input": source, "corruption": corruption, "strength": strength, "data_weight": weight,
        "sampler": sampler, "steps": r.last_step, "seed": seed, "options": chosen.options, "distance_noisy": d0,
        "distance_restored": d1, "energy_clean": e_clean, "energy_noisy": e_noisy, "energy_restored": e1,
        "accept_rate": r.meta.get("accept_rate"), "stopped": r.stopped})
    path = draw.result_file(pg.tmp, "denoise", noisy=noisy, restored=r.x, clean=clean)
    yield trio(r.x), *plots(r, title), summary(d0, d1, (e_clean, e_noisy, e1), label), result, path


denoise_page = draw.page_twin(denoise, image=draw.Pad(), data_weight=draw.ZeroIsDefault(SPECS["data_weight"]),
                              steps=draw.ZeroIsDefault(SPECS["steps"]))


@endpoint(kind=NoiseKind())
def strength_for(pg: Playground, kind) -> gr.Slider:
    """The strength slider's range and meaning for a noise kind."""
    lo, hi, what = KINDS[kind]
    return gr.Slider(minimum=lo, maximum=hi, value=DEFAULT_STRENGTH[kind], info=what)


def create_tab(pg: Playground, session: gr.BrowserState, page: gr.Tab | None = None) -> dict:
    gr.Markdown("Add noise to a drawing or a test digit, then restore it by minimising "
                "**E(x) + λ‖x − x_noisy‖²** with a sampler, starting at the noisy image. Small λ trusts the "
                "model, large λ the observation.")
    with gr.Row():
        panel = draw.input_panel(pg, "denoise")
        with gr.Column(scale=1, min_width=300):
            draw.model_picker(pg, session, page, "denoise-model")
            kind = gr.Radio(KIND_LABELS, value="gaussian", label="Noise")
            strength = gr.Slider(0, KINDS["gaussian"][1], DEFAULT_STRENGTH["gaussian"], step=0.01,
                                 label="Strength", info=KINDS["gaussian"][2], elem_id="denoise-strength")
            with gr.Row():
                weight = gr.Number(None, label="λ (data weight)", info="0 = the engine's default", min_width=120)
                sampler = gr.Dropdown(SAMPLERS, value=draw.AUTO, label="Sampler", min_width=120)
            with gr.Row():
                noise_seed = gr.Number(0, precision=0, label="Noise seed", min_width=100)
                seed = gr.Number(0, precision=0, label="Sampler seed", info="empty = random", min_width=100)
            knobs = draw.sampler_knobs(f"0 = the default; at most {MAX_STEPS:,}")
            run_btn = gr.Button("Add noise and denoise", variant="primary", elem_id="denoise-run")
    with gr.Row():
        with gr.Column(min_width=300):
            trio = draw.image_box("Noisy | restored | clean", "denoise-images", height=240)
        energy_plot = gr.LinePlot(x="step", y="value", color="series", color_title="", y_title="energy",
                                  label="Energy E(x) vs step", elem_id="denoise-energy")
        dist_plot = gr.LinePlot(x="step", y="value", color="series", color_title="", y_title="distance",
                                label="Distance ‖x − clean‖ vs step", elem_id="denoise-distance")
    with gr.Row():
        text = gr.Markdown("", elem_id="denoise-summary")
        result_json = gr.JSON(label="Result (as /denoise returns it)", open=True, elem_id="denoise-result")
        result_file = gr.File(label="Noisy, restored and clean (.npz)", interactive=False)
    on(kind.input, strength_for, pg, kind, strength, concurrency_limit=None, **PRIVATE)
    common = [kind, strength, noise_seed, weight, knobs[0], sampler, seed, *knobs[1:]]
    draw.wire_run(pg, run_btn, (denoise, denoise_page), [session, panel.pad, panel.digit, *common],
                  [session, panel.api_image, panel.digit, *common],
                  [trio, energy_plot, dist_plot, text, result_json, result_file], "denoise")
    return {"panel": panel}
