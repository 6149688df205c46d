"""Inpaint tab: draw or pick a digit, paint over the part to erase, watch the model fill it in.

The fill is :func:`ebm_play.inpaint`: every chain starts from uniform noise in the erased region
and samples the energy with the kept pixels held exactly (mask = 1 means keep). Several fills run
side by side, each from its own noise, streamed step by step with their energies.

Endpoint ``/inpaint`` (session, image, digit, mask, fills, steps, sampler, seed, step_size, noise,
temperature) → masked input, fills, energy vs step, filling step by step, result (JSON), fills (.npz).
``mask`` is an image-editor value whose ``layers`` paint the pixels to erase (alpha, or white on an
opaque layer); ``erase`` ("top", "bottom", "left", "right") erases that half instead.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd
import torch

import ebm_play
from ebm_play import EBMError
from ebm_play.runtime import job_threads

from . import draw
from .common import thin, user_errors, whole
from .sessions import Registry

MAX_FILLS = 16
MAX_STEPS = 2000
DEFAULT_STEPS = 100
STRIP_FRAMES = 8  # columns of the "filling step by step" picture
AUTO = "auto"
ERASE = ("", *draw.HALVES)


def pick_sampler(model, sampler) -> str:
    """``auto`` (or empty): block Gibbs for an RBM, the reference Langevin for everything else."""
    if sampler in (None, "", AUTO):
        return "gibbs" if getattr(model, "kind", "") == "rbm" else "langevin"
    if sampler not in ebm_play.SAMPLERS:
        raise EBMError(f"unknown sampler {sampler!r}; known: {AUTO}, {', '.join(ebm_play.SAMPLERS)}")
    return sampler


def input_energy(model, x) -> float:
    with job_threads(1):
        return float(ebm_play.score(model, x)[0])


def seed_of(seed) -> int | None:
    return None if seed is None or seed == "" else whole("seed", seed, 0, 2**63 - 1)


def create_tab(registry: Registry, session: gr.BrowserState, page: gr.Tab | None = None) -> dict:
    gr.Markdown("Draw a digit (or pick a test digit), then **paint over the part to erase** in the mask pad, "
                "or press an *erase … half* button. The model fills the erased pixels by sampling its energy "
                "with the rest held fixed; each fill starts from its own noise.")
    mask_pad = draw.canvas_pad("inpaint-mask", "Mask: paint the part to erase", draw.CANVAS, 18, mask=True,
                               color="rgba(239,68,68,0.8)", render=False)
    api_mask = gr.ImageEditor(None, label="mask", type="pil", image_mode="RGBA", visible=False, render=False)
    with gr.Row():
        panel = draw.input_panel("inpaint", extra_outputs=[mask_pad], on_input=lambda x: (draw.mask_value(x),))
        with gr.Column(min_width=280):
            mask_pad.render()
            api_mask.render()
            with gr.Row():
                halves = {h: gr.Button(f"Erase {h} half", size="sm", min_width=60, elem_id=f"inpaint-erase-{h}")
                          for h in draw.HALVES}
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            model_dd = draw.model_picker(registry, session, page, "inpaint-model")
            with gr.Row():
                sampler = gr.Dropdown([AUTO, *draw.SAMPLERS], value=AUTO, label="Sampler", min_width=120,
                                      info="auto: Gibbs for an RBM, else Langevin; ula/mala/hmc need a small temperature")
                steps = gr.Number(DEFAULT_STEPS, precision=0, label="Steps", info=f"0 to {MAX_STEPS:,}", min_width=100)
            with gr.Row():
                fills = gr.Slider(1, MAX_FILLS, 4, step=1, label="Fills side by side")
                seed = gr.Number(0, precision=0, label="Seed", info="empty = random", min_width=100)
            step_size, noise, temperature = draw.sampler_settings()
            run_btn = gr.Button("Inpaint", variant="primary", elem_id="inpaint-run")
        with gr.Column(scale=2):
            with gr.Row():
                masked_img = gr.Image(label="Kept pixels (erased in red)", type="pil", format="png", height=220,
                                      interactive=False, elem_classes="ebm-grid", elem_id="inpaint-masked")
                fills_img = gr.Image(label="Fills (one per chain)", type="pil", format="png", height=220,
                                     interactive=False, elem_classes="ebm-grid", elem_id="inpaint-fills")
            energy_plot = gr.LinePlot(x="step", y="energy", color="fill", color_title="",
                                      label="Energy of each fill vs step", elem_id="inpaint-energy")
    with gr.Row():
        strip_img = gr.Image(label="Filling step by step (one row per fill)", type="pil", format="png", height=260,
                             interactive=False, elem_classes="ebm-grid", elem_id="inpaint-strip")
        with gr.Column():
            result_json = gr.JSON(label="Result (as /inpaint returns it)", open=True, elem_id="inpaint-result")
            result_file = gr.File(label="Fills, mask and input (.npz, key x = fills)", interactive=False)

    @user_errors
    def inpaint(session=None, image=None, digit=None, mask=None, fills=4, steps=DEFAULT_STEPS, sampler=AUTO,
                seed=0, step_size=None, noise=None, temperature=None, erase=""):
        """Fill the erased pixels of a drawing (or test digit ``digit``) with the session's current model,
        streaming the fills; the kept pixels stay exactly as given."""
        x, source = draw.model_input(panel.api_image, image, digit)
        if erase:
            keep = draw.half_keep(erase)
        else:
            keep = draw.keep_from_mask(api_mask, mask)
        n = whole("fills", fills, 1, MAX_FILLS)
        steps = whole("steps", steps, 0, MAX_STEPS)
        seed = seed_of(seed)
        model, label = registry.current_model(session)
        sampler = pick_sampler(model, sampler)
        opts = draw.sampler_kwargs(model, sampler, step_size, noise, temperature)
        draw.check_work(n, steps, sampler, opts)
        every = max(1, steps // (STRIP_FRAMES - 1)) if steps else 1
        masked = draw.masked_view(x, keep)

        def snap(rec):
            frame = rec.x.detach().cpu().clone()
            return rec.step, rec.energy.float().cpu().numpy().copy(), frame

        rows, frames, pacer, current = [], [], draw.Pacer(), None
        yield masked, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        for kind, item in draw.streamed(
                lambda cb: ebm_play.inpaint(model, x, keep, n=n, steps=steps, sampler=sampler, seed=seed,
                                            callback=cb, **opts), snap):
            if kind == "done":
                res = item
                break
            step, energy, frame = item
            rows += [(step, float(e), f"fill {i + 1}") for i, e in enumerate(energy)]
            current = frame
            if step % every == 0 or step == steps:
                frames.append(frame)
            if pacer.due():
                yield masked, ebm_play.images.grid(current, nrow=min(n, 8), scale=3), plot(rows, n), *[gr.skip()] * 3
        final = res.x.detach().cpu()
        if not frames or not torch.equal(frames[-1], final):
            frames.append(final)
        frames = [frames[i] for i in sorted(set(np.linspace(0, len(frames) - 1, STRIP_FRAMES).round().astype(int)))]
        kept = bool((final * keep == x * keep).all())  # exact: the sampler never moves a kept pixel
        result = {"model": label, "input": source, "sampler": sampler, "steps": steps, "fills": n, "seed": seed,
                  "options": opts, "kept_pixels": int(keep.sum()), "erased_pixels": int(784 - keep.sum()),
                  "kept_exactly": kept, "energy": [round(float(e), 6) for e in res.energy],
                  "input_energy": round(input_energy(model, x), 6),
                  "accept_rate": res.accept_rate}
        path = draw.result_file(registry.tmp, "inpaint", x=final, keep=keep, image=x, energy=res.energy)
        yield (masked, ebm_play.images.grid(final, nrow=min(n, 8), scale=3), plot(rows, n),
               draw.strip(frames, scale=2), result, path)

    def plot(rows, n):
        steps_seen = sorted({r[0] for r in rows})
        shown = set(thin(steps_seen, 200))
        df = pd.DataFrame([r for r in rows if r[0] in shown], columns=["step", "energy", "fill"])
        return gr.LinePlot(value=df)

    @user_errors
    def erase_half(image, digit, which):
        x, _ = draw.model_input(panel.api_image, image, digit)
        keep = draw.half_keep(which)
        return draw.mask_value(x, keep), draw.masked_view(x, keep)

    private = {"api_visibility": "private", "show_progress": "hidden", "preprocess": False}

    def sampler_steps(sid, name):
        model = registry.current_model(sid if registry.peek(sid) else None)[0]
        try:
            return draw.recommended_steps(model, pick_sampler(model, name)) if name != AUTO else DEFAULT_STEPS
        except EBMError:
            return gr.skip()

    sampler.input(sampler_steps, [session, sampler], steps, **private)
    for h, btn in halves.items():
        btn.click(draw.from_pad(lambda image, digit, h=h: erase_half(image, digit, h), 0), panel.inputs,
                  [mask_pad, masked_img], **private, show_progress_on=[])
    erase_box = gr.Textbox("", visible=False, label="erase (top, bottom, left, right; empty = the painted mask)")
    draw.wire_run(run_btn, inpaint, [session, panel.pad, panel.digit, mask_pad, fills, steps, sampler, seed, step_size,
                                     noise, temperature, erase_box],
                  [masked_img, fills_img, energy_plot, strip_img, result_json, result_file], "inpaint",
                  {panel.pad: panel.api_image, mask_pad: api_mask}, concurrency_limit=2, concurrency_id="compute",
                  show_progress="minimal", preprocess=False)
    return {"model": model_dd, "panel": panel}
