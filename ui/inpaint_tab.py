"""Inpaint tab: draw or pick a digit, paint over the part to erase, watch the model fill it in.

The fill is :func:`ebm_play.inpaint`: every chain starts from uniform noise in the erased region
and samples the energy with the kept pixels held exactly. Several fills run side by side, each from
its own noise, streamed step by step with their energies. Masks follow :mod:`ebm_play.masks`
(1 = keep): ``keep_half="top"`` keeps the top half and fills the bottom, as the CLI's ``--keep top``.

Endpoint ``/inpaint`` (session, image, digit, mask, fills, steps, sampler, seed, step_size, noise,
temperature, keep_half) → masked input, fills, energy vs step, filling step by step, result (JSON),
fills (.npz). ``mask`` is an image-editor value whose ``layers`` paint the pixels to erase (alpha,
or white on an opaque layer); ``keep_half`` ("top", "bottom", "left", "right") keeps that half
instead. Steps and sampler knobs left as None (the page: 0) run the engine's defaults.
"""

from __future__ import annotations

import gradio as gr

import ebm_play
from ebm_play import masks, settings
from ebm_play.playground import Playground
from ebm_play.recording import ChainJob
from ebm_play.runtime import job_threads

from . import draw
from .boundary import PRIVATE, AnySession, Choice, Picture, Whole, endpoint, on
from .canvas_pad import canvas_pad, data_url
from .common import picture

MAX_FILLS = 16
MAX_STEPS = 2000
STRIP_FRAMES = 8  # columns of the "filling step by step" picture
SAMPLERS = [draw.AUTO, *ebm_play.SAMPLERS]

SPECS = dict(session=AnySession(), image=Picture(), digit=draw.DIGIT, mask=Picture(), fills=Whole(1, MAX_FILLS),
             steps=Whole(0, MAX_STEPS, optional=True), sampler=Choice(SAMPLERS), seed=Whole(0, 2**63 - 1, optional=True),
             **draw.KNOB_SPECS, keep_half=Choice(["", *masks.HALVES]).named("keep half"))


def pick_sampler(model, sampler: str) -> str:
    """``auto``: block Gibbs for an RBM, else the model's own sampler (the ladder for a dsm model)."""
    if sampler == draw.AUTO:
        return "gibbs" if "gibbs" in settings.applicable(model) else settings.default_sampler(model)
    return settings.check_applicable(model, sampler)


def energy_plot(rec, fills: int, title: str) -> gr.LinePlot:
    """Each fill's energy against step (of the recording ``rec``, None: none yet), titled with its run."""
    steps, values = ([], []) if rec is None else (rec.steps, [e.tolist() for e in rec.energies])
    df = draw.curve_frame(steps, values, [f"fill {i + 1}" for i in range(fills)])
    return gr.LinePlot(value=df, label=f"Energy of each fill vs step · {title}")


@endpoint(**SPECS)
def inpaint(pg: Playground, session=None, image=None, digit=None, mask=None, fills=4, steps=None, sampler=draw.AUTO,
            seed=0, step_size=None, noise=None, temperature=None, keep_half=""):
    """Fill the erased pixels of a drawing (or test digit ``digit``) with the session's current model,
    streaming the fills; the kept pixels stay exactly as given."""
    x, source = draw.model_input(image, digit)
    keep = masks.keep_half(keep_half) if keep_half else draw.mask_keep(mask)
    model, label = pg.current_model(session)
    sampler = pick_sampler(model, sampler)
    knobs = dict(step_size=step_size, noise=noise, temperature=temperature)
    chosen = settings.resolve(model, sampler, steps, **knobs)
    chosen.check_work(fills)
    opts = draw.given(knobs, chosen)
    job = ChainJob.of(lambda cb: ebm_play.inpaint(model, x, keep, n=fills, steps=steps, sampler=sampler, seed=seed,
                                                  callback=cb, **opts), fills, chosen.steps, STRIP_FRAMES)
    title = f"{label}, {sampler}, {source}"
    masked, nrow = picture(draw.masked_view(x, keep)), min(fills, 8)
    yield masked, None, energy_plot(None, fills, title), None, None, None
    for rec in draw.stream(pg, (session, "inpaint"), job):
        with rec.lock:
            shown = draw.grid_file(rec.latest.cpu(), nrow), energy_plot(rec.rec, fills, title)
        yield masked, *shown, gr.skip(), gr.skip(), gr.skip()
    r = job.recording
    with job_threads(1):
        e_in = float(ebm_play.score(model, x)[0])
    result = draw.tidy({
        "model": label, "input": source, "sampler": sampler, "steps": r.last_step, "fills": fills, "seed": seed,
        "keep_half": keep_half or None, "options": chosen.options, "kept_pixels": int(keep.sum()),
        "erased_pixels": int(784 - keep.sum()), "kept_exactly": bool((r.x * keep == x * keep).all()),
        "energy": r.energies[-1].tolist(), "input_energy": e_in, "accept_rate": r.meta.get("accept_rate"),
        "stopped": r.stopped})
    path = draw.result_file(pg.tmp, "inpaint", x=r.x, keep=keep, image=x, energy=r.energies[-1])
    yield masked, draw.grid_file(r.x, nrow), energy_plot(r, fills, title), picture(draw.strip(r.frames)), result, path


inpaint_page = draw.page_twin(inpaint, image=draw.Pad(), mask=draw.Pad(), steps=draw.ZeroIsDefault(SPECS["steps"]))


@endpoint(which=Choice(masks.HALVES))
def erase_half(pg: Playground, which) -> gr.HTML:
    """Paint the ``which`` half on the mask pad: it is filled, the other half kept."""
    return gr.HTML(value=data_url(draw.mask_layer(masks.keep_half(masks.opposite(which)))))


def create_tab(pg: Playground, session: gr.BrowserState, page: gr.Tab | None = None) -> dict:
    gr.Markdown("Draw a digit (or pick a test digit), then **paint over the part to erase** in the mask pad, "
                "or press an *erase … half* button. The model fills the erased pixels by sampling its energy "
                "with the rest held fixed; each fill starts from its own noise.")
    mask_pad = canvas_pad("inpaint-mask", "Mask: paint the part to erase", draw.CANVAS, 18, mask=True,
                          color="rgba(239,68,68,0.8)", render=False)
    with gr.Row():
        panel = draw.input_panel(pg, "inpaint", mask_pad)
        with gr.Column(min_width=290):
            mask_pad.render()
            api_mask = gr.ImageEditor(None, label="mask", type="pil", image_mode="RGBA", visible=False)
            halves = {}
            for pair in (masks.HALVES[:2], masks.HALVES[2:]):
                with gr.Row():
                    halves |= {h: gr.Button(f"Erase {h} half", size="sm", min_width=100, elem_id=f"inpaint-erase-{h}")
                               for h in pair}
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            draw.model_picker(pg, session, page, "inpaint-model")
            with gr.Row():
                sampler = gr.Dropdown(SAMPLERS, value=draw.AUTO, label="Sampler", min_width=140,
                                      info="auto: Gibbs for an RBM, else the engine's default")
                seed = gr.Number(0, precision=0, label="Seed", info="empty = random", min_width=100)
            fills = gr.Slider(1, MAX_FILLS, 4, step=1, label="Fills side by side")
            knobs = draw.sampler_knobs(f"0 = the default; at most {MAX_STEPS:,}")
            run_btn = gr.Button("Inpaint", variant="primary", elem_id="inpaint-run")
        with gr.Column(scale=2):
            with gr.Row():
                with gr.Column(min_width=200):
                    masked_img = draw.image_box("Kept pixels (erased in red)", "inpaint-masked")
                with gr.Column(min_width=200):
                    fills_img = draw.image_box("Fills (one per chain)", "inpaint-fills")
            energy = gr.LinePlot(x="step", y="value", color="series", color_title="", y_title="energy",
                                 label="Energy of each fill vs step", elem_id="inpaint-energy")
    with gr.Row():
        with gr.Column():
            strip_img = draw.image_box("Filling step by step (one row per fill)", "inpaint-strip", height=260)
        with gr.Column():
            result_json = gr.JSON(label="Result (as /inpaint returns it)", open=True, elem_id="inpaint-result")
            result_file = gr.File(label="Fills, mask and input (.npz, key x = fills)", interactive=False)
    keep_box = gr.Textbox("", visible=False, label="keep half (top, bottom, left, right; empty = the painted mask)")
    for h, btn in halves.items():
        on(btn.click, erase_half, pg, gr.State(h), mask_pad, concurrency_limit=None, **PRIVATE)
    common = [fills, knobs[0], sampler, seed, *knobs[1:]]
    draw.wire_run(pg, run_btn, (inpaint, inpaint_page), [session, panel.pad, panel.digit, mask_pad, *common],
                  [session, panel.api_image, panel.digit, api_mask, *common, keep_box],
                  [masked_img, fills_img, energy, strip_img, result_json, result_file], "inpaint")
    return {"panel": panel}
