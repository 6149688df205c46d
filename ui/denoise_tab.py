"""Denoise tab: corrupt a drawing or test digit, then let the energy clean it up.

Noise comes from :mod:`ebm_play.corruptions` (Gaussian, salt-and-pepper, occlusion; seeded). The
restoration is :func:`ebm_play.denoise`: a gradient sampler on E(x) + λ‖x − x_noisy‖² started at
the noisy image, so λ trades "looks like a digit" against "stays close to what was observed".
The page shows noisy | restored | clean side by side, and the energy and the distance to the clean
image against step.

Endpoint ``/denoise`` (session, image, digit, corruption, strength, corruption_seed, data_weight,
steps, sampler, seed, step_size, noise, temperature) → noisy|restored|clean picture, energy vs step,
distance vs step, result (JSON with the distances), arrays (.npz).
"""

from __future__ import annotations

import math

import gradio as gr
import pandas as pd
import torch

import ebm_play
from ebm_play import EBMError
from ebm_play.corruptions import KINDS, corrupt, kind_of
from ebm_play.runtime import job_threads

from . import draw
from .common import number, thin, user_errors, whole
from .inpaint_tab import seed_of
from .sessions import Registry

MAX_STEPS = 2000
DEFAULT_STEPS = 60
DEFAULT_WEIGHT = 0.01  # λ: with the shipped models' energy scale, enough to keep the digit's shape
MAX_WEIGHT = 1000.0
GRADIENT_SAMPLERS = ["langevin", "ula", "mala", "hmc", "annealed"]
KIND_LABELS = [("Gaussian", "gaussian"), ("Salt and pepper", "salt_pepper"), ("Occlusion (white patch)", "occlusion")]
DEFAULT_STRENGTH = {"gaussian": 0.5, "salt_pepper": 0.2, "occlusion": 0.15}


def distance(x, clean):
    """‖x − x_clean‖₂ per image, over the 784 pixels in [−1, 1]."""
    return (x - clean).flatten(1).norm(dim=1)


def create_tab(registry: Registry, session: gr.BrowserState, page: gr.Tab | None = None) -> dict:
    gr.Markdown("Add noise to a drawing or a test digit, then restore it by minimising "
                "**E(x) + λ‖x − x_noisy‖²** with a sampler, starting at the noisy image. Small λ trusts the "
                "model, large λ the observation.")
    with gr.Row():
        panel = draw.input_panel("denoise")
        with gr.Column(scale=1, min_width=300):
            model_dd = draw.model_picker(registry, session, page, "denoise-model")
            with gr.Row():
                kind = gr.Radio(KIND_LABELS, value="gaussian", label="Noise")
            with gr.Row():
                strength = gr.Slider(0, KINDS["gaussian"][1], DEFAULT_STRENGTH["gaussian"], step=0.01,
                                     label="Strength", info=KINDS["gaussian"][2], elem_id="denoise-strength")
                noise_seed = gr.Number(0, precision=0, label="Noise seed", min_width=100)
            with gr.Row():
                weight = gr.Number(DEFAULT_WEIGHT, label="λ (data weight)", info=f"0 to {MAX_WEIGHT:g}", min_width=100)
                sampler = gr.Dropdown(GRADIENT_SAMPLERS, value="langevin", label="Sampler", min_width=120,
                                      info="ula/mala/hmc: set a small temperature")
                steps = gr.Number(DEFAULT_STEPS, precision=0, label="Steps", info=f"0 to {MAX_STEPS:,}", min_width=100)
            with gr.Row():
                seed = gr.Number(0, precision=0, label="Sampler seed", info="empty = random", min_width=100)
            step_size, noise, temperature = draw.sampler_settings()
            run_btn = gr.Button("Add noise and denoise", variant="primary", elem_id="denoise-run")
    with gr.Row():
        trio = gr.Image(label="Noisy | restored | clean", type="pil", format="png", height=240, interactive=False,
                        elem_classes="ebm-grid", elem_id="denoise-images")
        energy_plot = gr.LinePlot(x="step", y="value", color="series", color_title="", y_title="energy",
                                  label="Energy E(x) vs step", elem_id="denoise-energy")
        dist_plot = gr.LinePlot(x="step", y="value", color="series", color_title="", y_title="distance",
                                label="Distance ‖x − clean‖ vs step", elem_id="denoise-distance")
    with gr.Row():
        summary = gr.Markdown("", label="summary", elem_id="denoise-summary")
        result_json = gr.JSON(label="Result (as /denoise returns it)", open=True, elem_id="denoise-result")
        result_file = gr.File(label="Noisy, restored and clean (.npz)", interactive=False)

    def on_kind(k):
        lo, hi, what = KINDS[k]
        return gr.Slider(minimum=lo, maximum=hi, value=DEFAULT_STRENGTH[k], info=what)

    kind.input(on_kind, kind, strength, api_visibility="private", show_progress="hidden")

    def sampler_steps(sid, name):
        model = registry.current_model(sid if registry.peek(sid) else None)[0]
        try:
            return DEFAULT_STEPS if name == "langevin" else draw.recommended_steps(model, name)
        except EBMError:
            return gr.skip()

    sampler.input(sampler_steps, [session, sampler], steps, api_visibility="private", show_progress="hidden")

    @user_errors
    def denoise(session=None, image=None, digit=None, corruption="gaussian", strength=0.5, corruption_seed=0,
                data_weight=DEFAULT_WEIGHT, steps=DEFAULT_STEPS, sampler="langevin", seed=0, step_size=None,
                noise=None, temperature=None):
        """Corrupt a drawing (or test digit ``digit``) and restore it with the session's current model,
        streaming noisy | restored | clean with the energy and distance to the clean image per step."""
        clean, source = draw.model_input(panel.api_image, image, digit)
        corruption = kind_of(corruption)
        noisy = corrupt(clean, corruption, strength, seed=whole("noise seed", corruption_seed, 0, 2**63 - 1))
        lam = number("λ (data weight)", data_weight, 0, MAX_WEIGHT)
        steps = whole("steps", steps, 0, MAX_STEPS)
        if sampler not in GRADIENT_SAMPLERS:
            raise EBMError(f"denoising needs a gradient sampler: {', '.join(GRADIENT_SAMPLERS)} (got {sampler!r})")
        seed = seed_of(seed)
        model, label = registry.current_model(session)
        opts = draw.sampler_kwargs(model, sampler, step_size, noise, temperature)
        draw.check_work(1, steps, sampler, opts)

        def snap(rec):
            x = rec.x.detach().cpu()
            return rec.step, float(rec.energy[0]), float(distance(x, clean)[0]), x.clone()

        def picture(x):
            return ebm_play.images.grid(torch.cat([noisy, x, clean]), nrow=3, scale=6)

        rows, pacer = [], draw.Pacer()
        yield picture(noisy), *[gr.skip()] * 5
        for kind_, item in draw.streamed(
                lambda cb: ebm_play.denoise(model, noisy, data_weight=lam, steps=steps, sampler=sampler, seed=seed,
                                            callback=cb, **opts), snap):
            if kind_ == "done":
                res = item
                break
            step, e, d, x = item
            rows.append({"step": step, "energy": e, "distance": d})
            if pacer.due():
                yield picture(x), *plots(rows), gr.skip(), gr.skip(), gr.skip()
        restored = res.x.detach().cpu()
        d0, d1 = float(distance(noisy, clean)[0]), float(distance(restored, clean)[0])
        with job_threads(1):
            e_clean, e_noisy = (float(v) for v in ebm_play.score(model, torch.cat([clean, noisy])))
        e1 = float(res.energy[0])
        result = {"model": label, "input": source, "corruption": corruption, "strength": float(strength),
                  "data_weight": lam, "sampler": sampler, "steps": steps, "seed": seed, "options": opts,
                  "distance_noisy": round(d0, 6), "distance_restored": round(d1, 6),
                  "energy_clean": round(e_clean, 6), "energy_noisy": round(e_noisy, 6),
                  "energy_restored": round(e1, 6), "accept_rate": res.accept_rate}
        change = (f"{100 * (d0 - d1) / d0:.0f}% closer" if d1 < d0 else "not closer") if d0 > 0 else "no noise added"
        text = (f"**Distance to the clean image: {d0:.3g} → {d1:.3g}** ({change}).  \n"
                f"Energy: clean {e_clean:.4g} · noisy {e_noisy:.4g} · restored {e1:.4g}.  \nModel: {label}.")
        if not math.isfinite(d1):
            text = "The restoration diverged (non-finite pixels): lower the step size."
        path = draw.result_file(registry.tmp, "denoise", noisy=noisy, restored=restored, clean=clean)
        yield picture(restored), *plots(rows), text, result, path

    def plots(rows):
        rows = thin(rows, 300)
        e = pd.DataFrame([(r["step"], r["energy"], "E(x)") for r in rows], columns=["step", "value", "series"])
        d = pd.DataFrame([(r["step"], r["distance"], "‖x − clean‖") for r in rows], columns=["step", "value", "series"])
        return gr.LinePlot(value=e), gr.LinePlot(value=d)

    draw.wire_run(run_btn, denoise, [session, panel.pad, panel.digit, kind, strength, noise_seed, weight, steps,
                                     sampler, seed, step_size, noise, temperature],
                  [trio, energy_plot, dist_plot, summary, result_json, result_file], "denoise",
                  {panel.pad: panel.api_image}, concurrency_limit=2, concurrency_id="compute",
                  show_progress="minimal", preprocess=False)
    return {"model": model_dd, "panel": panel}
