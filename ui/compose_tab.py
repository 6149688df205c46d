"""Compose tab: build an energy as a weighted sum of experts and sample from it.

E(x) = Σ wᵢ Eᵢ(x) (a product of experts, p ∝ Π pᵢ^wᵢ): energy models (shipped, trained in this
session), JEM class experts E(x, y) ("a 3"), and hand-made constraints (ink amount, left–right
symmetry, closeness to a sketch). Negative weights subtract an expert ("a 3 but not an 8"). The run
streams like the Sample tab, with each expert's weighted energy wᵢEᵢ (mean over chains) plotted
against step, so you see which term pulls where.

Endpoint (gradio_client name):

- ``/compose(session, experts, sketch=None, sampler="langevin", steps=100, step_size=None, noise=None,
  temperature=None, chains=16, seed=0, frames=60, leapfrog=None, t_start=None, base=None)`` →
  (final grid PNG, terms plot, result dict). ``experts`` is a list of objects, each with ``expert``
  and ``weight`` (−10…10) and optionally ``on`` (default true):
  ``{"expert": "model", "model": "mnist"}`` (a shipped name or "trained in this session"),
  ``{"expert": "class", "label": 3, "model": "mnist-jem"}`` (``model`` optional: the first JEM),
  ``{"expert": "ink", "target": 0.25}``, ``{"expert": "symmetry"}``, ``{"expert": "sketch"}`` (needs
  ``sketch``, an image). The result holds ``record`` for ``/sample_files`` and each expert's final
  mean energy in ``terms``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

import gradio as gr

import ebm_play
from ebm_play import EBMError
from ebm_play.samplers import GRADIENT_SAMPLERS

from . import chains as C
from . import playback as P
from .common import number, user_errors, whole
from ebm_play.media import chain_grid
from .sample_tab import resolve_model
from .sessions import TRAINED_MODEL, Registry

EXPERT_KINDS = ("model", "class", "ink", "symmetry", "sketch")
MAX_EXPERTS = 8
MAX_WEIGHT = 10.0
_previews: OrderedDict = OrderedDict()  # recipe previews: (spec, settings, model ids) → (grid, plot, status)
_previews_lock = threading.Lock()


def jem_names(registry: Registry, s=None) -> list[str]:
    names = [k for k, m in registry.models.items() if m.has_classes]
    if s is not None and s.trained is not None and s.trained.has_classes:
        names.append(TRAINED_MODEL)
    return names


def build_energy(registry: Registry, session, experts, sketch=None) -> tuple[ebm_play.ComposedEnergy, list[dict]]:
    """Validate an experts list (from the page or an API caller) and build the composed energy.
    Returns it and the normalised spec (names, weights) that the result and the plot use."""
    if isinstance(experts, str):
        try:
            experts = json.loads(experts)
        except json.JSONDecodeError as e:
            raise EBMError(f"experts must be a JSON list of objects ({e.msg})") from e
    if not isinstance(experts, list) or not experts:
        raise EBMError("experts must be a non-empty list, e.g. [{\"expert\": \"class\", \"label\": 3, \"weight\": 1}]")
    if len(experts) > MAX_EXPERTS:
        raise EBMError(f"at most {MAX_EXPERTS} experts, got {len(experts)}")
    s = registry.session(session) if session else None
    built, spec, names = [], [], set()
    for i, e in enumerate(experts, 1):
        if not isinstance(e, dict):
            raise EBMError(f"expert {i} must be an object with 'expert' and 'weight'")
        kind = e.get("expert")
        if kind not in EXPERT_KINDS:
            raise EBMError(f"expert {i}: unknown kind {kind!r}; use one of {', '.join(EXPERT_KINDS)}")
        w = number(f"expert {i} weight", e.get("weight", 1.0), -MAX_WEIGHT, MAX_WEIGHT)
        on = e.get("on", True)
        if not isinstance(on, bool):
            raise EBMError(f"expert {i}: 'on' must be true or false")
        if kind == "model":
            m, label = resolve_model(registry, session, e.get("model") or registry.default_model)
            energy, name = m, label.split(" (")[0] + (" E(x)" if m.has_classes else "")
        elif kind == "class":
            y = whole(f"expert {i} class", e.get("label"), 0, 9)
            jems = jem_names(registry, s)
            key = e.get("model") or (jems[0] if jems else None)
            if key is None:
                raise EBMError("class experts need a JEM model, and none is loaded")
            m, _ = resolve_model(registry, session, key)
            if not m.has_classes:
                raise EBMError(f"expert {i}: class experts need a JEM model; {key} is a {m.kind} model")
            energy, name = ebm_play.ClassEnergy(m, y).eval(), f"{'an' if y == 8 else 'a'} {y}"
        elif kind == "ink":
            t = number(f"expert {i} ink target", e.get("target", 0.13), 0, 1)
            energy, name = ebm_play.InkEnergy(t, number(f"expert {i} ink scale", e.get("scale", 0.05), 1e-3, 1)), \
                f"ink {t:g}"
        elif kind == "symmetry":
            energy, name = ebm_play.SymmetryEnergy(), "symmetry"
        else:
            pic = C.editor_image(sketch)
            if pic is None:
                if on and w != 0:
                    raise EBMError("the sketch expert needs a sketch: draw on the pad (API: pass sketch=<image>)")
                continue
            energy, name = ebm_play.SketchEnergy(ebm_play.preprocess(pic)), "sketch"
        base_name, k = name, 2
        while name in names:
            name, k = f"{base_name} #{k}", k + 1
        names.add(name)
        built.append(ebm_play.Expert(name, energy.to(registry.device).eval(), w, on))
        spec.append({**e, "expert": kind, "weight": w, "on": on, "name": name})
    composed = ebm_play.ComposedEnergy(built).eval()
    return composed, spec


def prepare(registry: Registry, session, experts, sketch, sampler, steps, step_size, noise, temperature, chains,
            seed, frames, leapfrog, t_start, base):
    if sampler not in GRADIENT_SAMPLERS:
        raise EBMError(f"composed energies need a gradient sampler ({', '.join(GRADIENT_SAMPLERS)}), not {sampler!r}")
    energy, spec = build_energy(registry, session, experts, sketch)
    n = whole("chains", chains, 1, C.MAX_CHAINS)
    steps = whole("steps", steps, 0, C.MAX_STEPS)
    seed = None if seed is None else whole("seed", seed, 0, 2**63 - 2)
    frames = whole("frames", frames, 2, C.MAX_FRAMES)
    _, opts = C.sampler_settings(energy, sampler, step_size, noise, temperature, leapfrog, t_start, base)
    work_experts = sum(1 for e in spec if e["on"] and e["weight"] != 0 and e["expert"] in ("model", "class"))
    C.check_work(n * max(1, work_experts), steps, sampler, opts)
    meta = {"model": "composed", "experts": spec, "sampler": sampler, "steps": steps, "chains": n, "seed": seed,
            "options": opts}
    run = C.ChainRun(energy, n, steps, sampler, seed, None, opts, frames, terms=energy.terms, meta=meta,
                     store=C.RECORDS)
    weights = {e["name"]: e["weight"] for e in spec}
    return run, meta, weights


def terms_plot(recorder, weights):
    with recorder.lock:
        df, cmap = C.terms_plot_data(recorder.rec, weights)
    return gr.LinePlot(value=df, color_map=cmap)


def final_terms(rec) -> dict:
    return {k: round(v[-1], 6) for k, v in rec.terms.items() if v}


def to_spec(m1_on, m1, m1_w, m2_on, m2, m2_w, a_on, a_label, a_w, b_on, b_label, b_w, ink_on, ink_t, ink_w,
            sym_on, sym_w, sk_on, sk_w, jem):
    """The page's rows → the experts list /compose takes (switched-off rows are kept, off)."""
    spec = [{"expert": "model", "model": m1, "weight": m1_w, "on": bool(m1_on)},
            {"expert": "model", "model": m2, "weight": m2_w, "on": bool(m2_on)}]
    if jem:
        spec += [{"expert": "class", "label": a_label, "model": jem, "weight": a_w, "on": bool(a_on)},
                 {"expert": "class", "label": b_label, "model": jem, "weight": b_w, "on": bool(b_on)}]
    spec += [{"expert": "ink", "target": ink_t, "weight": ink_w, "on": bool(ink_on)},
             {"expert": "symmetry", "weight": sym_w, "on": bool(sym_on)},
             {"expert": "sketch", "weight": sk_w, "on": bool(sk_on)}]
    return [e for e in spec if e["on"] or e["expert"] != "sketch"]


def recipes(registry: Registry) -> list[tuple[str, dict]]:
    """Ready-made compositions (measured on the shipped models; see the module docs), skipping any
    whose models are not loaded. Each: name → flat values of the page's expert rows and sampler."""
    cnn = "mnist" if "mnist" in registry.models else None
    jem = "mnist-jem" if "mnist-jem" in registry.models else None
    out = []
    off = dict(m1_on=False, m2_on=False, a_on=False, b_on=False, ink_on=False, sym_on=False, sk_on=False)
    run = dict(sampler="langevin", steps=100, chains=16, seed=0)
    if jem:
        out.append(("3 AND 8", {**off, "a_on": True, "a_label": 3, "a_w": 1.0, "b_on": True, "b_label": 8,
                                "b_w": 1.0, **run}))
        out.append(("3 but not 8", {**off, "a_on": True, "a_label": 3, "a_w": 1.0, "b_on": True, "b_label": 8,
                                    "b_w": -0.3, "m2_on": True, "m2": jem, "m2_w": 0.3, **run}))
    if cnn and jem:
        out.append(("any digit but 1", {**off, "m1_on": True, "m1": cnn, "m1_w": 1.0, "a_on": True, "a_label": 1,
                                        "a_w": -0.03, **run}))
    if cnn:
        out.append(("symmetric digits", {**off, "m1_on": True, "m1": cnn, "m1_w": 1.0, "sym_on": True,
                                         "sym_w": 0.05, **run}))
    if cnn and jem:  # 63 zeros in 64 chains with the shipped models
        out.append(("thick 0", {**off, "m1_on": True, "m1": cnn, "m1_w": 1.0, "a_on": True, "a_label": 0, "a_w": 1.0,
                                "ink_on": True, "ink_t": 0.25, "ink_w": 0.3, **run}))
    return out


def create_tab(registry: Registry, session: gr.BrowserState) -> dict:
    """Build the Compose tab inside the current ``gr.Blocks``."""
    names = registry.model_names(None)
    jems = jem_names(registry)
    first = registry.default_model
    second = jems[0] if jems else first
    gr.Markdown("Add energies: **E(x) = Σ wᵢ Eᵢ(x)**. A positive weight asks for what an expert likes, a "
                "negative one for what it dislikes; switch experts on and off, or start from a recipe.")
    status = gr.Markdown("Load a recipe or set the experts, then press **Compose and sample**.",
                         elem_id="compose-status", elem_classes="ebm-status", render=False)
    grid_img = gr.Image(label="Chains", type="pil", format="png", height=320, interactive=False, render=False,
                        scale=2, min_width=240,
                        elem_classes="ebm-grid", elem_id="compose-grid", buttons=["download", "fullscreen"])
    terms_plot_c = gr.LinePlot(x="step", y="value", color="series", color_title="", render=False,
                               label="Each expert's weighted energy wᵢEᵢ (mean over chains) vs step",
                               y_title="wᵢ·Eᵢ", elem_id="compose-terms", scale=3, min_width=360)
    lv = C.shown_settings(_KIND, "langevin")[1]  # the page starts with the reference Langevin settings
    with gr.Row():
        with gr.Column(scale=5, min_width=440):
            W = dict(minimum=-3, maximum=3, step=0.01, label="weight", min_width=150, scale=4)
            col = dict(min_width=130, scale=3)
            with gr.Group():
                with gr.Row(equal_height=True):
                    m1_on = gr.Checkbox(True, label="energy model", **col)
                    m1 = gr.Dropdown(names, value=first, show_label=False, **col)
                    m1_w = gr.Slider(value=1.0, **W, elem_id="compose-m1-weight")
                with gr.Row(equal_height=True):
                    m2_on = gr.Checkbox(False, label="second model", **col)
                    m2 = gr.Dropdown(names, value=second, show_label=False, **col)
                    m2_w = gr.Slider(value=1.0, **W)
                with gr.Row(equal_height=True):
                    a_on = gr.Checkbox(False, label="a digit E(x, y)", interactive=bool(jems), **col)
                    a_label = gr.Dropdown(list(range(10)), value=3, show_label=False, **col)
                    a_w = gr.Slider(value=1.0, **W)
                with gr.Row(equal_height=True):
                    b_on = gr.Checkbox(False, label="another digit", interactive=bool(jems), **col)
                    b_label = gr.Dropdown(list(range(10)), value=8, show_label=False, **col)
                    b_w = gr.Slider(value=-0.3, **W)
                with gr.Row(equal_height=True):
                    ink_on = gr.Checkbox(False, label="ink amount", **col)
                    ink_t = gr.Slider(0.02, 0.5, 0.25, step=0.01, label="target (MNIST ≈ 0.12)", **col)
                    ink_w = gr.Slider(value=0.3, **W)
                with gr.Row(equal_height=True):
                    sym_on = gr.Checkbox(False, label="left–right symmetry", min_width=110, scale=6)
                    sym_w = gr.Slider(value=0.05, **W)
                with gr.Row(equal_height=True):
                    sk_on = gr.Checkbox(False, label="close to the sketch (pad below)", min_width=110, scale=6)
                    sk_w = gr.Slider(value=1.0, **W)
            jem_dd = gr.Dropdown(jems, value=jems[0] if jems else None, label="JEM model for the class experts",
                                 visible=len(jems) > 1)
            with gr.Accordion("Sketch pad (for the sketch expert)", open=False):
                sketch_pad = gr.Sketchpad(label="Sketch", height=240, canvas_size=(280, 280), type="numpy",
                                          image_mode="RGBA")
            with gr.Row():
                sampler = gr.Dropdown(list(GRADIENT_SAMPLERS), value="langevin", label="Sampler", min_width=110)
                steps = gr.Number(100, precision=0, label="Steps", min_width=90, elem_id="compose-steps")
                chains = gr.Slider(1, C.MAX_CHAINS, 16, step=1, label="Chains", min_width=120)
            with gr.Row():
                step_size = gr.Number(lv["step_size"], label="Step size", min_width=90)
                noise = gr.Number(lv["noise"], label="Noise σ", min_width=90)
                temperature = gr.Number(lv["temperature"], label="Temperature", min_width=90)
                seed = gr.Number(0, precision=0, label="Seed", min_width=90)
            with gr.Row():
                leapfrog = gr.Number(None, precision=0, label="Leapfrog steps", visible=False, min_width=90)
                t_start = gr.Number(None, label="Start temperature", visible=False, min_width=90)
                base = gr.Dropdown(["ula", "mala", "hmc", "langevin"], value=None, label="Base sampler",
                                   visible=False, min_width=90)
            with gr.Accordion("Recording and downloads", open=False):
                frames = gr.Slider(2, C.MAX_FRAMES, 60, step=1, label="Frames recorded")
                fps = gr.Slider(1, 30, 10, step=1, label="Frames per second (GIF, MP4, playback)")
            with gr.Row():
                run_btn = gr.Button("Compose and sample", variant="primary", elem_id="compose-run")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="compose-stop")
        with gr.Column(scale=6):
            recipe_slot = gr.Column()
            status.render()
            with gr.Row():
                grid_img.render()
                terms_plot_c.render()
            pb = P.controls("compose")
            with gr.Accordion("The experts as JSON (what /compose takes) and the result", open=False):
                spec_json = gr.JSON(label="experts")
                result_json = gr.JSON(label="result")
    flat = [m1_on, m1, m1_w, m2_on, m2, m2_w, a_on, a_label, a_w, b_on, b_label, b_w, ink_on, ink_t, ink_w, sym_on,
            sym_w, sk_on, sk_w, jem_dd]
    run_knobs = [sampler, steps, chains, seed]
    book = recipes(registry)
    keys = ["m1_on", "m1", "m1_w", "m2_on", "m2", "m2_w", "a_on", "a_label", "a_w", "b_on", "b_label", "b_w", "ink_on",
            "ink_t", "ink_w", "sym_on", "sym_w", "sk_on", "sk_w", "jem", "sampler", "steps", "chains", "seed"]
    defaults_row = {"m1_on": True, "m1": first, "m1_w": 1.0, "m2_on": False, "m2": second, "m2_w": 1.0,
                    "a_on": False, "a_label": 3, "a_w": 1.0, "b_on": False, "b_label": 8, "b_w": -0.3,
                    "ink_on": False, "ink_t": 0.25, "ink_w": 0.3, "sym_on": False, "sym_w": 0.05, "sk_on": False,
                    "sk_w": 1.0, "jem": jems[0] if jems else None, "sampler": "langevin", "steps": 100,
                    "chains": 16, "seed": 0}
    with gr.Row(visible=False):
        sketch_api = gr.Image(None, type="filepath", label="sketch")
        experts_api = gr.JSON(None, label="experts")
        record_box = gr.Textbox("", label="record")
        api_btn = gr.Button("compose (API)")
        api_knobs = [gr.Number(None, label=k) for k in ("step_size", "noise", "temperature", "leapfrog", "t_start")]
        api_base = gr.Dropdown(["ula", "mala", "hmc", "langevin"], value=None, label="base")

    def run_compose(session, experts, sketch, sampler, steps, step_size, noise, temperature, chains, seed, frames,
                    leapfrog, t_start, base):
        run, meta, weights = prepare(registry, session, experts, sketch, sampler, steps, step_size, noise,
                                     temperature, chains, seed, frames, leapfrog, t_start, base)
        C.JOBS.start((session, "compose"), run)
        try:
            for recorder in run.snapshots():
                yield recorder, weights, None
        finally:
            C.JOBS.end((session, "compose"), run)
        rec = run.recording
        yield run.recorder, weights, {**meta, **C.summary(rec), "terms": final_terms(rec)}

    @user_errors
    def compose(session=None, experts=None, sketch=None, sampler="langevin", steps=100, step_size=None, noise=None,
                temperature=None, chains=16, seed=0, frames=60, leapfrog=None, t_start=None, base=None):
        """Sample from E(x) = Σ wᵢEᵢ(x) (``experts``: see the module docs), streaming frames; the last
        output is the final grid, the per-expert energy curves and the result (``record`` for /sample_files)."""
        for recorder, weights, result in run_compose(session, experts, sketch, sampler, steps, step_size, noise,
                                                     temperature, chains, seed, frames, leapfrog, t_start, base):
            x = recorder.latest if result is None else recorder.rec.x
            yield chain_grid(x), terms_plot(recorder, weights), (result if result is not None else gr.skip())

    @user_errors
    def compose_page(session, experts, sketch, sampler, steps, step_size, noise, temperature, chains, seed, frames,
                     leapfrog, t_start, base):
        for recorder, weights, result in run_compose(session, experts, sketch, sampler, steps, step_size, noise,
                                                     temperature, chains, seed, frames, leapfrog, t_start, base):
            x = recorder.latest if result is None else recorder.rec.x
            out = [chain_grid(x), terms_plot(recorder, weights), C.status_line(recorder.rec, result is None)]
            if result is None:
                yield *out, gr.skip(), gr.skip(), gr.skip()
            else:
                yield *out, result, result["record"], P.finished_slider(recorder.rec)

    # --- recipes: load the rows in one click, with a cached result shown at once -------------------
    def preview(*values):
        """The recipe's result (computed once per recipe and set of loaded models, then cached)."""
        v = dict(zip(keys, values))
        spec = to_spec(*values[:len(flat)])
        key = (json.dumps(spec, sort_keys=True, default=str), v["sampler"], v["steps"], v["chains"], v["seed"],
               tuple(id(m) for m in registry.models.values()))
        with _previews_lock:
            hit = _previews.get(key)
        if hit is None:
            try:
                run, meta, weights = prepare(registry, None, spec, None, v["sampler"], v["steps"], None, None, None,
                                             v["chains"], v["seed"], 30, None, None, None)
                for _ in run.snapshots():
                    pass
            except EBMError as e:
                return gr.skip(), gr.skip(), f"⚠ {e}"
            rec = run.recording
            hit = (chain_grid(rec.x), terms_plot(run.recorder, weights),
                   f"Cached result of this recipe ({rec.last_step} steps, {rec.chains} chains, seed "
                   f"{v['seed']}); press **Compose and sample** to watch it run.")
            with _previews_lock:
                _previews[key] = hit
                while len(_previews) > 32:
                    _previews.popitem(last=False)
        return hit

    if book:
        with recipe_slot:
            gr.Examples([[{**defaults_row, **r}[k] for k in keys] for _, r in book], flat + run_knobs,
                        [grid_img, terms_plot_c, status], fn=preview, run_on_click=True, cache_examples=False,
                        example_labels=[name for name, _ in book], label="Recipes: one click loads the experts "
                        "and shows a cached result", elem_id="compose-recipes")

    # --- sampler knobs -------------------------------------------------------------------------
    knobs = [step_size, noise, temperature, leapfrog, t_start, base]

    def knob_defaults(name, b=None):
        try:
            _, opts = C.shown_settings(_KIND, name, base=b or None)
        except EBMError:
            return (gr.skip(),) * len(knobs)
        temp = opts.get("t_end" if name == "annealed" else "temperature")
        return (gr.Number(value=opts.get("step_size"), visible="step_size" in opts),
                gr.Number(value=opts.get("noise"), visible="noise" in opts),
                gr.Number(value=temp, visible=temp is not None),
                gr.Number(value=opts.get("leapfrog"), visible="leapfrog" in opts),
                gr.Number(value=opts.get("t_start"), visible=name == "annealed"),
                gr.Dropdown(value=opts.get("base"), visible=name == "annealed"))

    private = dict(api_visibility="private", show_progress="hidden")
    sampler.change(knob_defaults, sampler, knobs, queue=False, **private)
    base.input(knob_defaults, [sampler, base], knobs, queue=False, **private)

    def refresh(sid):
        s = registry.peek(sid)
        choices = registry.model_names(s)
        js = jem_names(registry, s)
        return (gr.Dropdown(choices=choices), gr.Dropdown(choices=choices),
                gr.Dropdown(choices=js, visible=len(js) > 1), *knob_defaults("langevin"))

    def choices(sid):  # the session's own models ("trained in this session") appear once it has one
        return gr.Dropdown(choices=registry.model_names(registry.peek(sid)))

    m1.focus(choices, session, m1, queue=False, **private)
    m2.focus(choices, session, m2, queue=False, **private)

    # preprocess=False: the engine reads raw uploads itself (see sample_tab).
    compute = dict(concurrency_limit=2, concurrency_id="compute", preprocess=False)
    # API defaults for the sampler settings are None (= recommended), so the API reads hidden copies of the knobs.
    a_ss, a_nz, a_tp, a_lf, a_ts = api_knobs
    api_btn.click(compose, [session, experts_api, sketch_api, sampler, steps, a_ss, a_nz, a_tp, chains, seed, frames,
                            a_lf, a_ts, api_base], [grid_img, terms_plot_c, result_json],
                  api_name="compose", show_progress="minimal", **compute)
    run_evt = run_btn.click(
        lambda *v: (to_spec(*v), *P.reset()), flat, [spec_json, pb.timer, pb.slider, *pb.downloads], queue=False,
        **private,
    ).then(compose_page, [session, spec_json, sketch_pad, sampler, steps, step_size, noise, temperature, chains, seed,
                          frames, leapfrog, t_start, base],
           [grid_img, terms_plot_c, status, result_json, record_box, pb.slider], api_visibility="private",
           show_progress="minimal", **compute)
    P.wire(pb, record_box, fps, grid_img, status, registry.tmp, run_evt)
    stop_btn.click(lambda sid: C.JOBS.stop((sid, "compose")) and None, session, None, queue=False, **private)
    return {"refresh": refresh, "refresh_inputs": [session],
            "refresh_outputs": [m1, m2, jem_dd, *knobs]}


class _Composed:
    """Stands for any composed energy when choosing sampler defaults (they depend on the kind only)."""

    kind = "composed"
    info: dict = {}


_KIND = _Composed()
