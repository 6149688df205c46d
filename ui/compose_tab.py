"""Compose tab: build an energy as a weighted sum of experts and sample from it.

E(x) = Σ wᵢ Eᵢ(x) (a product of experts, p ∝ Π pᵢ^wᵢ): energy models (shipped, trained in this
session), JEM class experts E(x, y) ("a 3"), and hand-made constraints (ink amount, left–right
symmetry, closeness to a sketch). Negative weights subtract an expert ("a 3 but not an 8"). The run
streams like the Sample tab, with each expert's weighted energy wᵢEᵢ (mean over chains) plotted
against step, so you see which term pulls where. Recipes load a composition in one click and show
its result at once (computed once, then kept like any recording).

Endpoint (gradio_client name):

- ``/compose(session, experts, sketch=None, sampler="langevin", steps=100, step_size=None, noise=None,
  temperature=None, chains=16, seed=0, frames=60, leapfrog=None, t_start=None, base=None)`` →
  (final grid PNG, terms plot, result dict). ``experts`` is a list of objects, each with ``expert``
  and ``weight`` (−10…10) and optionally ``on`` (default true):
  ``{"expert": "model", "model": "mnist"}`` (a shipped name or "trained in this session"),
  ``{"expert": "class", "label": 3, "model": "mnist-jem"}`` (``model`` optional: the first JEM),
  ``{"expert": "ink", "target": 0.25}``, ``{"expert": "symmetry"}``, ``{"expert": "sketch"}`` (needs
  ``sketch``, an image); see :func:`ebm_play.composition.build_energy`. The result holds ``record``
  for ``/sample_files`` and each expert's final mean energy in ``terms``.
"""

from __future__ import annotations

import functools
import inspect
import types
import weakref

import gradio as gr

from ebm_play import EBMError, composition, settings
from ebm_play.composition import MAX_WEIGHT, build_energy, evaluations
from ebm_play.playground import TRAINED_MODEL, Playground
from ebm_play.recording import MAX_FRAMES, ChainJob, Recording

from . import playback as P
from .boundary import AnySession, Choice, Flag, Json, Number, Picture, Spec, Text, Whole, endpoint, on
from .common import fmt

COMPOSED = types.SimpleNamespace(kind="composed", info={})  # any composed energy, for its sampler settings
SAMPLERS = settings.applicable(COMPOSED)  # gradient samplers only
ROWS = ["m1_on", "m1", "m1_w", "m2_on", "m2", "m2_w", "a_on", "a_label", "a_w", "b_on", "b_label", "b_w",
        "ink_on", "ink_t", "ink_w", "sym_on", "sym_w", "sk_on", "sk_w", "jem"]
KEYS = [*ROWS, "sampler", "steps", "chains", "seed"]
_previews: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # playground → {recipe key: record id}


def jem_names(pg: Playground, sid=None) -> list[str]:
    names = [k for k, m in pg.models.items() if m.has_classes]
    s = pg.sessions.peek(sid) if sid else None
    if s is not None and s.trained is not None and s.trained.has_classes:
        names.append(TRAINED_MODEL)
    return names


def _job(pg: Playground, session, experts, sketch, sampler, steps, step_size, noise, temperature, chains, seed,
         frames, leapfrog, t_start, base) -> ChainJob:
    """The composed energy from ``experts`` and a chain job on it, checked against the work budget."""
    if sampler not in SAMPLERS:
        raise EBMError(f"composed energies need a gradient sampler ({', '.join(SAMPLERS)}), not {sampler!r}")
    needs_sketch = any(isinstance(e, dict) and e.get("expert") == "sketch" for e in experts or [])
    model_of = functools.partial(_model_of, pg, session)
    energy, spec = build_energy(experts, model_of, next(iter(jem_names(pg, session)), None),
                                P.digit_of(sketch) if needs_sketch else None, pg.device)
    chosen = settings.resolve(energy, sampler, steps, base=base, **P.page_knobs(
        energy, sampler, base, step_size=step_size, noise=noise, temperature=temperature, leapfrog=leapfrog,
        t_start=t_start))
    chosen.check_work(chains * evaluations(spec))
    meta = {"model": "composed", "experts": spec, "sampler": sampler, "steps": chosen.steps, "chains": chains,
            "seed": seed, "options": chosen.options}
    return ChainJob(energy, chains, chosen.steps, sampler, seed, None, chosen.options, frames, terms=energy.terms,
                    meta=meta, store=pg.records)


def _model_of(pg: Playground, session, name):
    return pg.named_model(session, name) if name else (pg.models[pg.default_model], pg.default_model)


def result_of(rec: Recording) -> dict:
    return {**rec.meta, **rec.summary(), "terms": {k: round(v[-1], 6) for k, v in rec.terms.items() if v}}


SPECS = dict(session=AnySession(), experts=Json(max_items=100, optional=True), sketch=Picture(), **P.RUN_SPECS)


def _compose(pg: Playground, session=None, experts=None, sketch=None, sampler="langevin", steps=100, step_size=None,
             noise=None, temperature=None, chains=16, seed=0, frames=60, leapfrog=None, t_start=None, base=None):
    """Sample from E(x) = Σ wᵢEᵢ(x) (``experts``: see the module docs), streaming frames; the last
    output is the final grid, the per-expert energy curves and the result (``record`` for /sample_files)."""
    job = _job(pg, session, experts, sketch, sampler, steps, step_size, noise, temperature, chains, seed, frames,
               leapfrog, t_start, base)
    for recorder in P.stream(pg, (session, "compose"), job):
        yield recorder, None
    yield job.recorder, result_of(job.recording)


@endpoint(**SPECS)
@P.like(_compose)
def compose(pg: Playground, *args, **kwargs):
    for recorder, result in _compose(pg, *args, **kwargs):
        x = recorder.latest if result is None else recorder.rec.x
        yield P.grid_file(x), P.terms_plot(recorder), (gr.skip() if result is None else result)


@endpoint(**SPECS)
@P.like(_compose)
def compose_page(pg: Playground, *args, **kwargs):
    """/compose for the page: also the status line, the record and the slider."""
    for recorder, result in _compose(pg, *args, **kwargs):
        with recorder.lock:
            line = P.status_line(recorder.rec, result is None)
        x = recorder.latest if result is None else recorder.rec.x
        shown = (P.grid_file(x), P.terms_plot(recorder), line)
        if result is None:
            yield *shown, gr.skip(), gr.skip(), gr.skip()
        else:
            yield *shown, result, result["record"], P.finished_slider(recorder.rec)


# --- the page's rows ---------------------------------------------------------------------------------
W, ON, NAME = Number(-MAX_WEIGHT, MAX_WEIGHT).named("weight"), Flag(), Text(200).named("model")
class Digits(Spec):
    """A class row's digit, or several ("any of these": the energy −log Σ_y exp f_y(x))."""

    def check(self, name, v):
        vs = v if isinstance(v, list) else [v]
        if not 1 <= len(vs) <= 10:
            raise EBMError(f"{name} must be a digit or a list of 1 to 10 digits")
        out = [Whole(0, 9)(name, x) for x in vs]
        return out[0] if len(out) == 1 else out


ROW_SPECS = dict(m1_on=ON, m1=NAME, m1_w=W, m2_on=ON, m2=NAME, m2_w=W, a_on=ON, a_label=Digits().named("digit y"), a_w=W,
                 b_on=ON, b_label=Whole(0, 9), b_w=W, ink_on=ON, ink_t=Number(0, 1).named("ink target"), ink_w=W,
                 sym_on=ON, sym_w=W, sk_on=ON, sk_w=W, jem=Text(200, optional=True).named("JEM model"))


def to_spec(m1_on, m1, m1_w, m2_on, m2, m2_w, a_on, a_label, a_w, b_on, b_label, b_w, ink_on, ink_t, ink_w,
            sym_on, sym_w, sk_on, sk_w, jem) -> list[dict]:
    """The page's rows → the experts list /compose takes (switched-off rows are kept, off)."""
    spec = [{"expert": "model", "model": m1, "weight": m1_w, "on": m1_on},
            {"expert": "model", "model": m2, "weight": m2_w, "on": m2_on}]
    if jem:
        spec += [{"expert": "class", "label": a_label, "model": jem, "weight": a_w, "on": a_on},
                 {"expert": "class", "label": b_label, "model": jem, "weight": b_w, "on": b_on}]
    spec += [{"expert": "ink", "target": ink_t, "weight": ink_w, "on": ink_on},
             {"expert": "symmetry", "weight": sym_w, "on": sym_on},
             {"expert": "sketch", "weight": sk_w, "on": sk_on}]
    return [e for e in spec if e["on"] or e["expert"] != "sketch"]


def compose_start(pg: Playground, *rows) -> tuple:
    """A run is starting: the experts it samples, and nothing of the last run left on the page."""
    return (to_spec(*rows), *P.cleared())


# one declared parameter per row (what @endpoint checks and names in messages)
compose_start.__signature__ = inspect.Signature(
    [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in ["pg", *ROWS]])
compose_start = endpoint(**ROW_SPECS)(compose_start)


def defaults(pg: Playground) -> dict:
    jems = jem_names(pg)
    first = pg.default_model
    return {"m1_on": True, "m1": first, "m1_w": 1.0, "m2_on": False, "m2": jems[0] if jems else first, "m2_w": 1.0,
            "a_on": False, "a_label": [3], "a_w": 1.0, "b_on": False, "b_label": 8, "b_w": -0.3, "ink_on": False,
            "ink_t": 0.25, "ink_w": 0.3, "sym_on": False, "sym_w": 0.05, "sk_on": False, "sk_w": 1.0,
            "jem": jems[0] if jems else None, "sampler": "langevin", "steps": 100, "chains": 16, "seed": 0}


def recipes(pg: Playground) -> dict[str, dict]:
    """The engine's recipes (:data:`ebm_play.composition.RECIPES`, each checked on 64 chains) whose
    models are loaded, as the values of the page's rows and run settings: name → values."""
    off = dict(m1_on=False, m2_on=False, a_on=False, b_on=False, ink_on=False, sym_on=False, sk_on=False)
    base = defaults(pg)
    book = {}
    for name, r in composition.recipes(pg.models).items():
        v = {**base, **off, "sampler": r.sampler, "steps": r.steps}
        models, classes = iter(("m1", "m2")), iter(("a", "b"))
        for e in r.experts:
            kind = e["expert"]
            if kind == "model":
                row = next(models)
                v.update({f"{row}_on": True, row: e["model"], f"{row}_w": e["weight"]})
            elif kind == "class":
                row = next(classes)
                label = e["label"] if row == "b" or isinstance(e["label"], list) else [e["label"]]  # a: multiselect
                v.update({f"{row}_on": True, f"{row}_label": label, f"{row}_w": e["weight"], "jem": e["model"]})
            elif kind == "ink":
                v.update(ink_on=True, ink_t=e["target"], ink_w=e["weight"])
            elif kind == "symmetry":
                v.update(sym_on=True, sym_w=e["weight"])
        book[name] = v
    return book


def preview(pg: Playground, name: str) -> Recording:
    """The recipe's result: computed once per set of loaded models, then kept in ``pg.records``
    (computed again should the store have dropped it)."""
    v = recipes(pg)[name]
    key = (name, tuple(id(m) for m in pg.models.values()))
    kept = _previews.setdefault(pg, {})
    rec = pg.records.get(kept.get(key))
    if rec is None:
        job = _job(pg, None, to_spec(*(v[k] for k in ROWS)), None, v["sampler"], v["steps"], None, None, None,
                   v["chains"], v["seed"], 30, None, None, None)
        for _ in job.snapshots():
            pass
        rec = job.recording
        kept[key] = rec.id
    return rec


@endpoint(name=Text(100).named("recipe"))
def load_recipe(pg: Playground, name) -> tuple:
    """The recipe's rows and run settings, its result, and the experts as /compose takes them."""
    book = recipes(pg)
    if name not in book:
        raise EBMError(f"unknown recipe {name[:40]!r}; choose one of: {', '.join(book)}")
    v, rec = book[name], preview(pg, name)
    line = (f"Cached result of this recipe ({rec.last_step} steps, {rec.chains} chains, seed {v['seed']}, mean "
            f"energy {fmt(rec.summary()['mean_energy'])}); press **Compose and sample** to watch it run.")
    return (*[v[k] for k in KEYS], P.grid_file(rec.x), P.terms_chart(rec), line, rec.id, P.finished_slider(rec),
            rec.meta["experts"], result_of(rec))


@endpoint(sampler=Choice(SAMPLERS), base=Choice(settings.BASES, optional=True))
def compose_knobs(pg: Playground, sampler, base) -> tuple:
    """The recommended settings of ``sampler`` for composed energies, and which knobs it has."""
    return P.knob_values(COMPOSED, sampler, base)


@endpoint(session=AnySession())
def refresh(pg: Playground, session) -> tuple:
    """The session's models (one trained meanwhile shows up) for the model rows and the class experts."""
    names, jems = pg.model_names(pg.sessions.peek(session)), jem_names(pg, session)
    return gr.Dropdown(choices=names), gr.Dropdown(choices=names), gr.Dropdown(choices=jems, visible=len(jems) > 1)


@endpoint(session=AnySession())
def compose_stop(pg: Playground, session) -> None:
    pg.jobs.stop((session, "compose"))


# --- layout and wiring -------------------------------------------------------------------------------
WEIGHT = dict(minimum=-3, maximum=3, step=0.01, label="weight", min_width=160, scale=3)


def _row(r: dict, key: str, label: str, control=None, **check) -> None:
    """One expert: a switch with its name, its own setting (if any) and its weight."""
    d = r["defaults"]
    with gr.Row(equal_height=True):
        r[f"{key}_on"] = gr.Checkbox(d[f"{key}_on"], label=label, min_width=150, scale=2 if control else 4, **check)
        if control is not None:
            name, make = control
            r[name] = make()
        r[f"{key}_w"] = gr.Slider(value=d[f"{key}_w"], elem_id=f"compose-{key}-weight", **WEIGHT)


def _experts(pg: Playground) -> dict:
    d = defaults(pg)
    r, names, jems = {"defaults": d}, pg.model_names(None), jem_names(pg)
    pick = dict(show_label=False, min_width=120, scale=2)
    with gr.Group():
        _row(r, "m1", "energy model", ("m1", lambda: gr.Dropdown(names, value=d["m1"], **pick)))
        _row(r, "m2", "second model", ("m2", lambda: gr.Dropdown(names, value=d["m2"], **pick)))
        digits = [(str(k), k) for k in range(10)]
        _row(r, "a", "digit(s) y",
             ("a_label", lambda: gr.Dropdown(digits, value=d["a_label"], multiselect=True, **{**pick, "scale": 3})),
             interactive=bool(jems))
        _row(r, "b", "another digit", ("b_label", lambda: gr.Dropdown(digits, value=d["b_label"], **pick)),
             interactive=bool(jems))
        _row(r, "ink", "ink amount", ("ink_t", lambda: gr.Slider(0.02, 0.5, d["ink_t"], step=0.01, min_width=120,
                                                                scale=2, label="target (MNIST 0.12)")))
        _row(r, "sym", "left–right symmetry")
        _row(r, "sk", "close to the sketch (pad below)")
    r["jem"] = gr.Dropdown(jems, value=d["jem"], label="JEM model for the class experts", visible=len(jems) > 1)
    with gr.Accordion("Sketch pad (for the sketch expert)", open=False):
        r["pad"] = P.pad("compose-sketch", "Sketch")
    return r


def _run_settings() -> dict:
    c = {}
    with gr.Row():
        c["sampler"] = gr.Dropdown(SAMPLERS, value="langevin", label="Sampler", min_width=110)
        c["steps"] = gr.Number(100, precision=0, label="Steps", min_width=90, elem_id="compose-steps")
        c["chains"] = gr.Slider(1, P.MAX_CHAINS, 16, step=1, label="Chains", min_width=120)
        c["seed"] = gr.Number(0, precision=0, label="Seed", min_width=90)
    c["knobs"] = P.knob_fields(COMPOSED)
    with gr.Accordion("Recording and downloads", open=False):
        c["frames"] = gr.Slider(2, MAX_FRAMES, 60, step=1, label="Frames recorded")
        c["fps"] = gr.Slider(1, 30, 10, step=1, label="Frames per second (GIF, MP4, playback)")
    with gr.Row():
        c["run"] = gr.Button("Compose and sample", variant="primary", elem_id="compose-run")
        c["stop"] = gr.Button("Stop", variant="stop", elem_id="compose-stop")
    return c


def _view(pg: Playground) -> dict:
    v = {}
    gr.Markdown("**Recipes**: one click loads the experts and shows a cached result.")
    with gr.Row(elem_id="compose-recipes"):
        v["recipes"] = {name: gr.Button(name, size="sm", min_width=100) for name in recipes(pg)}
    v["status"] = gr.Markdown("Load a recipe or set the experts, then press **Compose and sample**.",
                              elem_id="compose-status", elem_classes="ebm-status")
    with gr.Row():
        v["grid"] = gr.Image(type="filepath", format="png", height=320, interactive=False, scale=2, min_width=240,
                             show_label=False, elem_classes="ebm-grid", elem_id="compose-grid", buttons=[])
        v["terms"] = gr.LinePlot(x="step", y="value", color="series", color_title="", y_title="wᵢ·Eᵢ",
                                 label="Each expert's weighted energy wᵢEᵢ (mean over chains) vs step",
                                 elem_id="compose-terms", scale=3, min_width=360)
    v["pb"] = P.controls("compose")
    with gr.Accordion("The experts as JSON (what /compose takes) and the result", open=False):
        v["spec"], v["json"] = gr.JSON(label="experts"), gr.JSON(label="result")
    return v


def _api(pg: Playground, session, c: dict, v: dict) -> None:
    """/compose with API-only inputs (hidden): the experts, a sketch, knobs whose default is None."""
    with gr.Row(visible=False):
        sketch, experts, run = gr.Image(None, type="filepath", label="sketch"), gr.JSON(None, label="experts"), \
            gr.Button("compose (API)")
        k = [gr.Number(None, label=n) for n in ("step_size", "noise", "temperature", "leapfrog", "t_start")]
        base = gr.Dropdown(list(settings.BASES), value=None, label="base")
    inputs = [session, experts, sketch, c["sampler"], c["steps"], *k[:3], c["chains"], c["seed"], c["frames"], k[3],
              k[4], base]
    on(run.click, compose, pg, inputs, [v["grid"], v["terms"], v["json"]], api_name="compose",
       show_progress="minimal", concurrency_limit=2, concurrency_id="compute")


def create_tab(pg: Playground, session: gr.BrowserState) -> dict:
    """Lay out the Compose tab and wire its events; returns what the app wires its refresh to."""
    gr.Markdown("Add energies: **E(x) = Σ wᵢ Eᵢ(x)**. A positive weight asks for what an expert likes, a "
                "negative one for what it dislikes; switch experts on and off, or start from a recipe.")
    with gr.Row():
        with gr.Column(scale=1, min_width=480):
            r = _experts(pg)
            c = _run_settings()
        with gr.Column(scale=1, min_width=480):
            v = _view(pg)
    _api(pg, session, c, v)
    pb, rows, kn = v["pb"], [r[k] for k in ROWS], c["knobs"]
    record = gr.Textbox("", visible=False)
    run_knobs = [c["sampler"], c["steps"], c["chains"], c["seed"]]
    media = dict(concurrency_limit=2, concurrency_id="media")
    for name, button in v["recipes"].items():
        loaded = on(button.click, load_recipe, pg, gr.State(name), [*rows, *run_knobs, v["grid"], v["terms"],
                    v["status"], record, pb.slider, v["spec"], v["json"]], concurrency_limit=2, concurrency_id="compute")
        on(loaded.success, P.show_files, pg, [record, c["fps"]], pb.downloads, **media)
    for trigger in (c["sampler"].input, kn[5].input):
        on(trigger, compose_knobs, pg, [c["sampler"], kn[5]], [c["sampler"], c["steps"], *kn], queue=False, **P.QUIET)
    started = on(c["run"].click, compose_start, pg, rows, [v["spec"], pb.timer, pb.slider, *pb.downloads, v["terms"]],
                 queue=False, **P.QUIET)
    run = on(started.then, compose_page, pg, [session, v["spec"], r["pad"], c["sampler"], c["steps"], *kn[:3],
             c["chains"], c["seed"], c["frames"], *kn[3:]], [v["grid"], v["terms"], v["status"], v["json"], record,
             pb.slider], show_progress="minimal", concurrency_limit=2, concurrency_id="compute")
    P.wire(pg, pb, record, c["fps"], v["grid"], v["status"], run)
    on(c["stop"].click, compose_stop, pg, session, None, queue=False, **P.QUIET)
    return {"refresh": ([session], [r["m1"], r["m2"], r["jem"]])}
