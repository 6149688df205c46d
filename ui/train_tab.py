"""Train tab: set up a run, start/pause/resume/step/stop it, watch it live, save or use the model.

The buttons only send commands to the session's run (:class:`ebm_play.runs.Run`), which answer at
once; a 1 s ``gr.Timer``, active only while the run has something new to show, reads what the run
published and sends only what changed since this page last looked.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import gradio as gr
import numpy as np
import pandas as pd

import ebm_play
from ebm_play import EBMError
from ebm_play.archives import UPLOAD_LIMITS as DATA_LIMITS
from ebm_play.data import load_dataset, model_for
from ebm_play.images import grid
from ebm_play.objectives import ABOUT
from ebm_play.playground import Playground
from ebm_play.reproduce import MAX_QUERY, TRAIN_STEPS, RunSettings, settings_from_info, settings_from_query
from ebm_play.runs import ImageViews, Run
from ebm_play.runtime import job_threads
from ebm_play.training import LADDER_STEPS_PER_LEVEL, NOISE_KINDS, preset
from ebm_play.training import PRESETS as ENGINE_PRESETS
from ebm_play.weights import UPLOAD_LIMITS, read_metadata

from .boundary import (
    NEWER,
    PRIVATE,
    AnySession,
    Choice,
    Choices,
    File,
    Flag,
    Kept,
    Number,
    Session,
    Whole,
    api,
    endpoint,
    on,
    on_changes,
)
from .common import fmt, histogram_frame, long_frame, picture, plot_value, thin

KINDS = [("CNN EBM", "cnn"), ("JEM (classifier + EBM)", "jem"), ("RBM", "rbm")]
KIND_NAMES = {v: k for k, v in KINDS}
DEFAULT_WIDTH = {"cnn": 16, "jem": 32, "rbm": 256}
DIGITS = list(range(10))
FIELDS = ["kind", "width", "digits", "batch_size", "sampler_steps", "step_size", "noise", "alpha", "lr",
          "buffer_size", "reinit", "seed"]
PRESET_FIELDS = [*FIELDS, "objective"]  # what a preset fills (objective last: train_start takes it last)
OBJECTIVES = [("Contrastive divergence (CD)", "cd"), ("Denoising score matching (DSM)", "dsm"),
              ("Noise-contrastive estimation (NCE)", "nce")]
OBJECTIVE_NAMES = {v: k for k, v in OBJECTIVES}
# The model kinds each objective trains (the engine's: dsm and nce train the CNN energy, not JEM or RBM).
KINDS_FOR = {o: [k for k in DEFAULT_WIDTH if o == "cd" or k in NOISE_KINDS] for o in OBJECTIVE_NAMES}
APPLIES = {"cd": "", "dsm": "Langevin steps, step size, noise σ, α, buffer and re-init do not apply; fresh samples "
                            "use the ladder sampler (annealed Langevin down the noise levels).",
           "nce": "Langevin steps, α, buffer and re-init do not apply; fresh samples use Langevin with the step "
                  "size and noise σ."}
FRESH_STEPS = 256  # fresh-sample steps when the form says 0 (cd, nce); dsm: its ladder's own default
# Fresh samples every N updates by default: dsm's ladder chains (100 steps per noise level) cost about
# 6× its 50 updates (17 s against 2.7 s at the dsm preset on one core), so it looks less often.
FRESH_EVERY = {"cd": 50, "dsm": 500, "nce": 50}
QUALITY_SERIES = {"confident": "confident (p > 0.9)", "coverage": "class coverage"}
COLORS = {"confident (p > 0.9)": "#16a34a", "class coverage": "#9333ea", "E(real)": "#2563eb", "E(fake)": "#f59e0b",
          "gap E(fake)−E(real)": "#10b981", "loss": "#6366f1", "cross-entropy": "#a855f7", "grad norm": "#0ea5e9",
          "steps/s": "#64748b"}
HIST_COLORS = {"real": "#2563eb", "buffer": "#f59e0b", "noise": "#64748b"}
ROLLBACK = "#dc2626"
POLL_S = 1.0
_REF = ebm_play.TrainConfig()


def _ui_values(c: ebm_play.TrainConfig) -> dict:
    return dict(kind=c.model, width=c.width, digits=list(DIGITS), batch_size=c.batch_size,
                sampler_steps=c.sampler_steps, step_size=c.step_size, noise=c.noise, alpha=c.alpha, lr=c.lr,
                buffer_size=c.buffer_size, reinit=c.reinit, seed=c.seed, objective=c.objective)


# The engine's presets ("fast": digits within minutes on a CPU; "reference": the TrainConfig defaults;
# "dsm" and "nce": the other objectives).
PRESETS = {name: _ui_values(preset(name)) for name in ENGINE_PRESETS}
CONFIG_SPECS = dict(
    kind=Choice(DEFAULT_WIDTH).named("model kind"), width=Whole(1, 8192).named("width (RBM: hidden units)"),
    digits=Choices(DIGITS).named("digit"), batch_size=Whole(1, 4096), sampler_steps=Whole(0, 1000).named("Langevin steps"),
    step_size=Number(0, 1e4), noise=Number(0, 10), alpha=Number(0, 1e3), lr=Number(0, 1).named("learning rate"),
    buffer_size=Whole(1, 100_000), reinit=Number(0, 1).named("re-init probability"), seed=Whole(0, 2**31 - 1))


def make_config(kind, width, digits, batch_size, sampler_steps, step_size, noise, alpha, lr, buffer_size, reinit,
                seed, objective="cd") -> ebm_play.TrainConfig:
    """Checked form values → a TrainConfig (which checks the rest, with its own messages, e.g. that dsm
    and nce train no jem or rbm)."""
    if not digits:
        raise EBMError("pick at least one digit to train on")
    if kind != "rbm" and width > 256:
        raise EBMError(f"width must be between 1 and 256 for a {kind} model, got {width}")
    classes = sorted(set(digits))
    return ebm_play.TrainConfig(
        model=kind, width=None if kind == "rbm" else width, hidden=width if kind == "rbm" else _REF.hidden,
        classes=None if len(classes) == 10 else classes, batch_size=batch_size, sampler_steps=sampler_steps,
        step_size=step_size, noise=noise, alpha=alpha, lr=lr, buffer_size=buffer_size, reinit=reinit, seed=seed,
        objective=objective)


def fresh_steps_of(cfg: ebm_play.TrainConfig, fresh_steps: int) -> int:
    """The fresh-sample steps a run uses: the form's, or for 0 the objective's default (dsm: its ladder
    sampler's 100 updates per noise level; cd and nce: ``FRESH_STEPS`` Langevin steps)."""
    if fresh_steps:
        return fresh_steps
    return LADDER_STEPS_PER_LEVEL * cfg.sigma_levels if cfg.objective == "dsm" else FRESH_STEPS


# --- the API: each call answers at once ----------------------------------------------------------------
@endpoint(session=Session(), **CONFIG_SPECS, fresh_every=Whole(0, 1_000_000).named("fresh samples every"),
          fresh_steps=Whole(0, 10_000).named("fresh-sample steps"), max_steps=Whole(0, 10_000_000).named("stop after"),
          resume=File(), objective=Choice(OBJECTIVE_NAMES).named("objective"))
def train_start(pg: Playground, session, kind, width, digits, batch_size, sampler_steps, step_size, noise, alpha, lr,
                buffer_size, reinit, seed, fresh_every=50, fresh_steps=256, max_steps=0, resume=None,
                objective="cd") -> dict:
    """Start a training run for this session in a background thread; returns the run status.
    ``objective``: cd (contrastive divergence), dsm (denoising score matching) or nce (noise-contrastive
    estimation; dsm and nce train the cnn kind only). ``fresh_steps`` 0: the objective's default."""
    cfg = make_config(kind, width, digits, batch_size, sampler_steps, step_size, noise, alpha, lr, buffer_size,
                      reinit, seed, objective)
    model = None
    if resume:
        cfg = _resumed_config(cfg, read_metadata(resume, UPLOAD_LIMITS))  # checked before any slot or memory is taken
        pg.check_room(session, "image")  # before the file's tensors are read (at most UPLOAD_LIMITS.max_params)
        model = ebm_play.load_model(resume, pg.device, UPLOAD_LIMITS)
    fresh_steps = fresh_steps_of(cfg, fresh_steps)
    cfg = dataclasses.replace(cfg, fresh_steps=fresh_steps)  # saved in the file as the sampling default
    cfg, model, data, classifier = training_data(pg, session, cfg, model)
    run = pg.start_run(session, "image", cfg, model=model, max_steps=max_steps, **data,
                       resumed_from=Path(resume).name if resume else None,
                       views=ImageViews(fresh_every, fresh_steps, classifier))
    return status_of(pg, session, run)


def _resumed_config(cfg: ebm_play.TrainConfig, meta: dict) -> ebm_play.TrainConfig:
    """The run's config with the uploaded file's shape (width or hidden units, a dsm model's noise ladder)."""
    if meta["kind"] != cfg.model_kind:
        if meta["kind"] in NOISE_KINDS.values() or cfg.objective == "dsm":
            raise EBMError(f"the uploaded model is a {meta['kind']} model, but objective {cfg.objective} trains "
                           f"{cfg.model_kind}: a noise-conditional (cnn-noise) model continues with objective dsm")
        raise EBMError(f"the uploaded model is a {meta['kind']} model, but the run trains {cfg.model}: "
                       "choose the matching model kind")
    keys = {"hidden": "hidden"} if cfg.model == "rbm" else {"width": "width", "spectral_norm": "spectral_norm"}
    if cfg.objective == "dsm":
        keys = {"width": "width", "sigma_min": "sigma_min", "sigma_max": "sigma_max", "levels": "sigma_levels"}
    return dataclasses.replace(cfg, **{ours: meta["config"][k] for k, ours in keys.items() if k in meta["config"]})


def status_of(pg: Playground, session, run: Run | None) -> dict:
    base = {"active_runs": pg.active_runs(), "max_runs": pg.limits.running}
    return {**run.status(), **base} if run is not None else {"state": "none", "step": 0, **base}


@endpoint(session=Session())
def train_pause(pg: Playground, session) -> dict:
    """Pause this session's run (within one sampler step; the update in progress is dropped)."""
    pg.run_of(session).pause()
    return status_of(pg, session, pg.run_of(session))


@endpoint(session=Session())
def train_resume(pg: Playground, session) -> dict:
    """Resume this session's paused run (when a training slot is free)."""
    return status_of(pg, session, pg.resume_run(session, "image"))


@endpoint(session=Session())
def train_step(pg: Playground, session) -> dict:
    """Ask a paused run for one update; it is taken at once in the background (see ``pending_steps``,
    then ``step`` and ``last`` in ``/train_status``)."""
    pg.run_of(session).step_once()
    return status_of(pg, session, pg.run_of(session))


@endpoint(session=Session())
def train_stop(pg: Playground, session) -> dict:
    """Stop this session's run for good (its weights stay, to save or use)."""
    pg.run_of(session).stop()
    return status_of(pg, session, pg.run_of(session))


@endpoint(session=Session())
def train_save(pg: Playground, session) -> str:
    """Save the run's latest weights (safetensors) and return the file for download."""
    run = pg.run_of(session)
    model = run.model_copy()
    folder = Path(pg.tmp) / session
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.safetensors"):  # one file per session on the server
        old.unlink(missing_ok=True)
    path = folder / f"ebm-{run.config.model}-step{run.weights_step}.safetensors"
    return str(ebm_play.save_model(model, path, info=model.info))


@endpoint(session=Session())
def train_use(pg: Playground, session) -> str:
    """A copy of the run's latest weights becomes this session's model in the other tabs."""
    return f"The other tabs now use: **{pg.use_trained(session)}**."


@endpoint(session=Session())
def train_status(pg: Playground, session: str) -> dict:
    """The session's run status: state, step, last metrics, rollbacks, error, config."""
    s = pg.sessions.get(session)
    return status_of(pg, session, s.runs.get("image"))


# --- page events ---------------------------------------------------------------------------------
@endpoint(name=Choice(PRESETS))
def fill_preset(pg: Playground, name) -> list:
    return [PRESETS[name][f] for f in PRESET_FIELDS]


def about(objective: str) -> str:
    """The objective's one sentence (the engine's ``objectives.ABOUT``) and which settings apply."""
    note = f" *{APPLIES[objective]}*" if APPLIES[objective] else ""
    return f"{ABOUT[objective]}{note}"


def kind_choices(objective: str) -> list[tuple[str, str]]:
    """The model kinds ``objective`` trains, as the Model kind dropdown lists them."""
    return [(KIND_NAMES[k], k) for k in KINDS_FOR[objective]]


@endpoint(objective=Choice(OBJECTIVE_NAMES).named("objective"), kind=Choice(DEFAULT_WIDTH).named("model kind"))
def objective_changed(pg: Playground, objective, kind) -> tuple:
    """The model kinds the objective trains (a kind it cannot train falls back to CNN, with its
    width), its explanation, and its fresh-sample defaults."""
    kinds = KINDS_FOR[objective]
    new = kind if kind in kinds else kinds[0]
    return (gr.Dropdown(choices=kind_choices(objective), value=new),
            gr.skip() if new == kind else DEFAULT_WIDTH[new], about(objective), FRESH_EVERY[objective], 0)


@endpoint(kind=Choice(DEFAULT_WIDTH))
def kind_width(pg: Playground, kind) -> int:
    return DEFAULT_WIDTH[kind]


@endpoint(path=File())
def inspect_resume(pg: Playground, path) -> tuple:
    """What an uploaded file would resume: its objective, kind and width go into the form."""
    if not path:
        return gr.skip(), gr.skip(), gr.skip(), ""
    meta = read_metadata(path, UPLOAD_LIMITS)
    k, cfg, info = meta["kind"], meta["config"], meta.get("info", {})
    base = {v: k for k, v in NOISE_KINDS.items()}.get(k, k)  # cnn-noise: a dsm-trained cnn
    if base not in DEFAULT_WIDTH:
        raise EBMError(f"a {k} model cannot be trained here (cnn, jem, rbm or a dsm-trained cnn-noise)")
    objective = "dsm" if k != base else info.get("objective") if info.get("objective") in KINDS_FOR else "cd"
    steps = info.get("train_steps")
    note = (f"Start will continue training this {KIND_NAMES[base]} ({OBJECTIVE_NAMES[objective]})"
            + (f", trained {fmt(steps)} steps," if steps else ""))
    return objective, base, cfg.get("hidden") if k == "rbm" else cfg.get("width"), note + " with the settings on the left."


# --- reproduce a run: its command line, a link that opens the page with it, a file's settings ------------
FILL_FIELDS = [*PRESET_FIELDS, "fresh_steps"]  # what a page address or a weights file fills
RUN_SPECS = dict(fresh_steps=Whole(0, 10_000).named("fresh-sample steps"),
                 max_steps=Whole(0, 10_000_000).named("stop after"), objective=Choice(OBJECTIVE_NAMES).named("objective"))
FORM_SPECS = {**CONFIG_SPECS, **RUN_SPECS}
# The TrainConfig fields the form shows (hidden: an RBM's width); a page address may set these only.
FORM_KEYS = {"model", "width", "hidden", "classes", "batch_size", "sampler_steps", "step_size", "noise", "alpha", "lr",
             "buffer_size", "reinit", "seed", "objective", "fresh_steps"}
MAX_ADDRESS_KEYS = 40


def form_config(kind, width, digits, batch_size, sampler_steps, step_size, noise, alpha, lr, buffer_size, reinit,
                seed, fresh_steps=0, objective="cd") -> ebm_play.TrainConfig:
    """The config a Start with these form values trains with (as ``train_start`` makes it, no file)."""
    cfg = make_config(kind, width, digits, batch_size, sampler_steps, step_size, noise, alpha, lr, buffer_size,
                      reinit, seed, objective)
    return dataclasses.replace(cfg, fresh_steps=fresh_steps_of(cfg, fresh_steps))


def form_values(c: ebm_play.TrainConfig) -> dict:
    """A config as the form shows it (``form_config`` reads it back): an RBM's width is its hidden
    units, all digits an empty ``classes``, the objective's default fresh-sample steps 0."""
    fresh = 0 if c.fresh_steps is None or c.fresh_steps == fresh_steps_of(c, 0) else c.fresh_steps
    return dict(kind=c.model, width=c.hidden if c.model == "rbm" else c.width,
                digits=sorted(c.classes) if c.classes else list(DIGITS), batch_size=c.batch_size,
                sampler_steps=c.sampler_steps, step_size=c.step_size, noise=c.noise, alpha=c.alpha, lr=c.lr,
                buffer_size=c.buffer_size, reinit=c.reinit, seed=c.seed, objective=c.objective, fresh_steps=fresh)


def checked_form(s: RunSettings) -> dict:
    """Settings as form values, each checked by its form field's spec, then all together (a width
    over 256 for a CNN, an objective that does not train the kind); ``max_steps`` is ``s.steps``."""
    v = {**form_values(s.config), "max_steps": s.steps}
    v = {name: spec(spec.label or name.replace("_", " "), v[name]) for name, spec in FORM_SPECS.items()}
    form_config(*(v[f] for f in FIELDS), v["fresh_steps"], v["objective"])
    return v


def _address_key(s: RunSettings, key: str) -> None:
    """Refuse a page-address key the Train tab cannot use (it trains on MNIST digits)."""
    if key == "data" and s.data not in (None, "mnist") or key in ("labels_from_folders", "held_out"):
        raise EBMError(f"{key}: the Train tab trains on MNIST digits (the command line takes --data)")
    if key not in FORM_KEYS | {"steps", "data"}:
        raise EBMError(f"{key[:40]}: not a setting of the Train tab")
    checked_form(s)


def address_values(query: Mapping) -> tuple[dict, list[str]]:
    """Form values from a page address (``?tab=train&preset=fast&lr=0.002``, TensorFlow Playground's
    convention; the names of ``reproduce.query_string``): each value parsed by the engine and checked
    by its form field's spec on its own; one that fails is left out with a note. Without a preset the
    rest applies to the reference recipe (the TrainConfig defaults); ``steps`` fills *Stop after*."""
    params = {str(k).replace("-", "_"): v for k, v in query.items() if k != "tab"}
    if not params:
        return {}, []
    if len(params) > MAX_ADDRESS_KEYS or sum(len(k) + len(str(v)) for k, v in params.items()) > MAX_QUERY:
        return {}, [f"the page address carries over {MAX_ADDRESS_KEYS} settings or {MAX_QUERY} characters: none applied"]
    notes, preset = [], params.pop("preset", None)
    if preset is not None and preset not in PRESETS:
        notes.append(f"preset {str(preset)[:40]!r} is not one of {', '.join(PRESETS)}: ignored")
        preset = None
    base, good = ({"preset": preset} if preset else {}), {}
    for key, text in params.items():
        try:
            _address_key(settings_from_query({**base, key: text}), key)
            good[key] = text
        except EBMError as e:
            notes.append(f"{e}: ignored")
    try:
        values = checked_form(settings_from_query({**base, **good}))
    except EBMError as e:
        return {}, [*notes, f"{e}: the address's settings were not applied"]
    if "steps" not in good:
        values.pop("max_steps")
    return values, notes


def page_query(cfg: ebm_play.TrainConfig, max_steps: int) -> str:
    """The page-address query that opens the Train tab with ``cfg`` (``steps`` only when the run stops)."""
    q = RunSettings(cfg, max_steps or TRAIN_STEPS).query()
    pairs = [(k, v) for k, v in parse_qsl(q.lstrip("?"), keep_blank_values=True) if max_steps or k != "steps"]
    return "?" + urlencode([("tab", "train"), *pairs], safe=",")


def page_address(request: gr.Request | None) -> str:
    """The page's own address without its query (the request's Referer), or "" when unknown."""
    ref = request.headers.get("referer", "") if request is not None else ""
    ok = ref.startswith(("http://", "https://")) and len(ref) < 2000 and not any(c.isspace() for c in ref)
    return ref.split("#")[0].split("?")[0] if ok else ""


@endpoint(**CONFIG_SPECS, **RUN_SPECS, session=AnySession(), newer=NEWER)
def reproduce(pg: Playground, kind, width, digits, batch_size, sampler_steps, step_size, noise, alpha, lr, buffer_size,
              reinit, seed, fresh_steps=0, max_steps=0, objective="cd", session=None, newer=None,
              request: gr.Request = None) -> tuple:
    """The exact ``python -m ebm_play train …`` line for the form's settings and the session's data
    (its uploaded images, else MNIST), a link that opens the page with them, and what the command
    cannot know; nothing when the page has sent a newer call (``boundary.on_changes``)."""
    if newer:
        return gr.skip(), gr.skip(), gr.skip()
    try:
        cfg = form_config(kind, width, digits, batch_size, sampler_steps, step_size, noise, alpha, lr, buffer_size,
                          reinit, seed, fresh_steps, objective)
    except EBMError as e:
        return f"# not a run yet: {e}", "", ""
    own = pg.own_data(session) if session else None
    if own is not None:  # every picture is trained on (the digit choice is for MNIST)
        run = RunSettings(dataclasses.replace(cfg, classes=None), max_steps or TRAIN_STEPS, own.arg,
                          own.labels_from_folders, own.held_out)
        data = f"Trains on your images: put `{own.arg}` (sha256 `{own.hash[:12]}`) beside the command. "
    else:
        run = RunSettings(cfg, max_steps or TRAIN_STEPS)
        data = "Trains on MNIST as this page does (under `$EBM_PLAY_DATA` or `./data`, else the 10,000 bundled digits). "
    command = run.command()
    note = (data
            + ("" if max_steps else f"The page trains until you stop it; the command runs {TRAIN_STEPS:,} updates "
                                    "(set *Stop after* to choose). ")
            + "A run that resumes a file: add `--resume FILE`.")
    return command, page_address(request) + page_query(cfg, max_steps), note



@endpoint()
def from_address(pg: Playground, request: gr.Request = None) -> list:
    """The page address's settings in the form (``?tab=train&preset=fast&lr=0.002``); what could not
    be used is listed in a note (and a warning), never an error."""
    query = dict(request.query_params) if request is not None else {}
    values, notes = address_values(query)
    if not values and not notes:
        return [gr.skip()] * (len(FILL_FIELDS) + 2)
    out = [values.get(f, gr.skip()) for f in [*FILL_FIELDS, "max_steps"]]
    if values:
        out[0] = gr.Dropdown(choices=kind_choices(values["objective"]), value=values["kind"])
    if notes:
        gr.Warning("Page address: " + "; ".join(notes)[:300])
    note = ("Settings from the page address." if values else "") + "".join(f"  \n⚠ {html.escape(n)}" for n in notes)
    return [*out, note]


@endpoint(path=File())
def fill_from_file(pg: Playground, path) -> list:
    """An uploaded weights file fills every training setting it records (``reproduce.settings_from_info``;
    files without them: its objective, kind and width) and says what it resumes."""
    if not path:
        return [gr.skip()] * len(FILL_FIELDS) + [""]
    objective, kind, width, note = inspect_resume(pg, path)  # refuses what cannot be trained here
    info = read_metadata(path, UPLOAD_LIMITS).get("info", {})
    try:
        s = settings_from_info(info if isinstance(info, dict) else {})
        values = checked_form(s)
    except EBMError as e:
        shape = {"objective": objective, "kind": kind, "width": width}
        return [*(shape.get(f, gr.skip()) for f in FILL_FIELDS), f"{note} ({e}: only its kind and width were filled)"]
    values.pop("max_steps")
    ours = form_config(*(values[f] for f in FIELDS), values["fresh_steps"], values["objective"])
    other = [f.name for f in dataclasses.fields(ours) if getattr(ours, f.name) != getattr(s.config, f.name)
             and f.name not in ("width", "hidden")]
    where = "" if s.data in (None, "mnist") else f" It was trained on {s.data}; this tab trains on MNIST digits."
    lost = f" Not in this form, so at their defaults: {', '.join(other)}." if other else ""
    out = [values[f] for f in FILL_FIELDS]
    out[0] = gr.Dropdown(choices=kind_choices(values["objective"]), value=values["kind"])
    return [*out, f"{note} Its training settings are filled in.{where}{lost}"]


def _markers(df: pd.DataFrame, run: Run) -> tuple[pd.DataFrame, dict]:
    """Rollbacks as red vertical lines across the curve (one series each, so they are not joined)."""
    steps = [int(r["step"]) for r in run.history if r.get("rolled_back")][-10:]
    if not steps or df.empty:
        return df, {}
    lo, hi = float(df["value"].min()), float(df["value"].max())
    extra = pd.DataFrame([(s, v, f"rollback @{s}") for s in steps for v in (lo, hi)], columns=["step", "value", "series"])
    return pd.concat([df, extra], ignore_index=True), {f"rollback @{s}": ROLLBACK for s in steps}


def _plot(df: pd.DataFrame, legend: list[str], run: Run | None = None, colors: dict | None = None,
          **kw) -> gr.LinePlot:
    cmap = {**COLORS, **(colors or {})}
    if run is not None:
        df, extra = _markers(df, run)
        cmap.update(extra)
    return gr.LinePlot(value=plot_value(df), color_map=cmap, colors_in_legend=legend, **kw)


def _headline(c: ebm_play.TrainConfig, m: dict) -> list[str]:
    """The last update's figures that mean something for the objective, for the status line."""
    objective = c.objective
    if objective == "dsm":
        top, bottom = m.get("dsm_loss_0"), m.get(f"dsm_loss_{c.sigma_levels - 1}")
        return [f"loss {fmt(m['loss'])}", f"at σ_max {fmt(top)}", f"at σ_min {fmt(bottom)}"]
    if objective == "nce":
        return [f"loss {fmt(m['loss'])}", f"accuracy {m['nce_accuracy']:.0%}", f"log Z {fmt(m['log_z'])}"]
    parts = [f"loss {fmt(m['loss'])}", f"E(real) {fmt(m['e_real'])}", f"E(fake) {fmt(m['e_fake'])}"]
    return parts + ([f"accuracy {m['accuracy']:.0%}"] if "accuracy" in m else [])


def status_markdown(pg: Playground, run: Run | None) -> str:
    active = f"server: {pg.active_runs()} of {pg.limits.running} training runs active"
    if run is None:
        return "**No training run in this session yet.** Pick a preset, adjust the settings and press **Start**.  \n" + active
    st, c = run.status(), run.config
    parts = [f'<span class="ebm-dot ebm-{run.state}">●</span> **{run.state.capitalize()}**',
             f"step {fmt(st['step'])}" + (f" of {fmt(run.max_steps)}" if run.max_steps else "")]
    if st["last"]:
        m = st["last"]
        parts += [f"{st['steps_per_s']:.1f} steps/s", *_headline(c, m), f"lr {fmt(m['lr'], 3)}"]
    if run.events:
        parts.append(f"**{len(run.events)} rollback(s)**")
    what = KIND_NAMES.get(c.model, c.model) + (f" {c.hidden} hidden" if c.model == "rbm" else f" width {c.width}")
    digits = "" if c.classes is None else " · digits " + ",".join(map(str, c.classes))  # (else: all of the data)
    langevin = "" if c.model == "rbm" or c.objective != "cd" else f" · {c.sampler_steps} Langevin steps"
    setup = f"{OBJECTIVE_NAMES[c.objective]} · {what}{digits} · batch {c.batch_size}{langevin}"
    lines = [" · ".join(parts), f"{setup} · {st['data']} · {st['device']}"]
    if run.error:
        lines.append(f'<span class="ebm-error">Error: {html.escape(run.error)}</span> Start a new run when ready.')
    return "  \n".join([*lines, active])


N_OUT = 17  # status, 4 curves, buffer, fresh, histogram, log, 5 buttons, quality, seen, timer
# The two main plots of each objective: (title, y axis, history keys); dsm's first is its loss per level.
PANELS = {
    "cd": [("Contrastive divergence: mean energies (red lines: divergence rollbacks)", "energy", ["e_real", "e_fake", "gap"]),
           ("Contrastive divergence: loss", "loss", ["loss", "ce"])],
    "dsm": [("Denoising score matching: loss per noise level σ (0.5 = no score learned; red: rollbacks)", "loss", []),
            ("Denoising score matching: loss (mean over the levels)", "loss", ["loss"])],
    "nce": [("Noise-contrastive estimation: accuracy telling data from noise, and the loss (red: rollbacks)", "value",
             ["nce_accuracy", "loss"]),
            ("Noise-contrastive estimation: log Z (learned log-partition constant) and mean energies", "nats",
             ["log_z", "e_real", "e_noise"])],
}
NCE_COLORS = {"classification accuracy (data vs noise)": "#16a34a", "log Z": "#be185d", "E(data)": "#2563eb",
              "E(noise)": "#64748b"}
CD_LABELS = {"e_real": "E(real)", "e_fake": "E(fake)", "gap": "gap E(fake)−E(real)", "ce": "cross-entropy"}


def _ramp(n: int, a: str = "#1e3a8a", b: str = "#f97316") -> list[str]:
    """n colours from ``a`` to ``b`` (dsm's noise levels: dark blue at σ_max, orange at σ_min)."""
    ca, cb = (np.array([int(h[i:i + 2], 16) for i in (1, 3, 5)]) for h in (a, b))
    rgb = [np.rint(ca + (cb - ca) * t).astype(int) for t in np.linspace(0, 1, max(n, 1))]
    return ["#" + "".join(f"{v:02x}" for v in c) for c in rgb][:n]


def panel_series(run: Run) -> list[tuple[str, str, dict[str, str], dict[str, str]]]:
    """(title, y axis, {history key: legend label}, {label: colour}) of the run's two main plots:
    cd's energies and loss, dsm's loss per noise level (σ in the legend) and its mean, nce's accuracy
    and loss, then log Z and the energies. Labels are the engine's (``Run.metric_names``)."""
    c, names = run.config, run.metric_names()
    labels = {**names, **CD_LABELS} if c.objective == "cd" else dict(names)
    colors = dict(NCE_COLORS)
    out = []
    for title, y, keys in PANELS[c.objective]:
        if c.objective == "dsm" and not keys:
            ladder = c.noise_ladder().tolist()
            keys = [f"dsm_loss_{i}" for i in range(len(ladder))]
            labels.update({k: f"σ = {fmt(s)}" for k, s in zip(keys, ladder)})
            colors.update(zip((labels[k] for k in keys), _ramp(len(keys))))
        out.append((title, y, {k: labels[k] for k in keys if k in labels}, colors))
    return out


def _curves(run: Run, n: int) -> list:
    rows = thin(run.history[:n])
    speed = pd.Series([r["steps_per_s"] for r in run.history[:n]]).rolling(10, min_periods=1).mean()
    srows = thin([{"step": r["step"], "sps": v} for r, v in zip(run.history[:n], speed)])
    plots = []
    for i, (title, y, series, colors) in enumerate(panel_series(run)):
        shown = [label for key, label in series.items() if rows and key in rows[-1]] or list(series.values())[:1]
        plots.append(_plot(long_frame(rows, "step", series), shown, run if i == 0 else None, colors, label=title,
                           y_title=y))
    return [*plots, _plot(long_frame(rows, "step", {"grad_norm": "grad norm"}), ["grad norm"]),
            _plot(long_frame(srows, "step", {"sps": "steps/s"}), ["steps/s"])]


def _buttons(state: str | None) -> list:
    live, paused = state in ("starting", "running", "paused"), state == "paused"
    return [gr.Button(interactive=i) for i in (not live, state in ("running", "starting"), paused, paused, live)]


def _pictures(run: Run, seen: dict, new: bool) -> list:
    """Updates of (buffer grid, fresh grid, histogram). A new run resets them: cd shows its replay
    buffer; dsm and nce keep none, so that picture is hidden and the fresh one names the sampler."""
    view, has_buffer = run.view, run.config.objective == "cd"
    label = "Energies: real digits, " + ("buffer, " if has_buffer else "") + "uniform noise"
    shown = {}
    if run.version != seen.get("version") and view.energies and (view.buffer is not None or not has_buffer):
        seen["version"] = run.version
        if view.buffer is not None:
            shown["buffer"] = picture(view.buffer)
        if view.fresh_step != seen.get("fresh") and view.fresh is not None:
            shown["fresh"], seen["fresh"] = picture(view.fresh), view.fresh_step
        hist = histogram_frame(view.energies, focus=("real", "buffer"))
        shown["hist"] = gr.LinePlot(value=hist, label=label, color_map={src: HIST_COLORS[src.split(" (")[0]]
                                                                        for src in hist["source"].unique()})
    if not new:
        return [shown.get(k, gr.skip()) for k in ("buffer", "fresh", "hist")]
    sampler = {"dsm": " (ladder sampler)", "nce": " (Langevin)"}.get(run.config.objective, "")
    return [gr.Image(value=shown.get("buffer"), visible=has_buffer),
            gr.Image(value=shown.get("fresh"), label="Fresh from noise" + sampler),
            shown.get("hist") or gr.LinePlot(value=None, label=label)]


@endpoint(session=AnySession(), seen=Kept())
def poll(pg: Playground, session, seen) -> list:
    """What changed since this page last looked (nothing at all while idle); the timer stays on
    only while the run has more to show."""
    out = [gr.skip()] * N_OUT
    s = pg.sessions.peek(session)
    run = s.runs.get("image") if s is not None else None
    seen = dict(seen or {})
    new = seen.get("run", "?") != (run.id if run else None)
    if new:
        seen = {"run": run.id if run else None}
    md = status_markdown(pg, run)
    if md != seen.get("md"):
        out[0], seen["md"] = md, md
    if run is None:
        if seen.get("state") != "none":
            seen["state"] = "none"
            out[1:9] = [None, None, None, None, None, None, None, ""]
            out[9:14] = _buttons(None)
            out[14] = None
        out[15], out[16] = seen, gr.Timer(active=False)
        return out
    run.touch()
    n = len(run.history)
    if n != seen.get("n"):
        seen["n"] = n
        out[1:5] = _curves(run, n)
    nq = len(run.quality)
    if nq != seen.get("nq"):
        seen["nq"] = nq
        last = run.quality[nq - 1]["step"] if nq else 1  # the axis from step 0: one point alone got ticks 50.000000
        out[14] = _plot(long_frame(run.quality[:nq], "step", QUALITY_SERIES), list(QUALITY_SERIES.values()),
                        x_lim=[0, last])
    out[5:8] = _pictures(run, seen, new)
    tail = run.log[-1] if run.log else ""
    if [len(run.log), tail] != seen.get("log"):
        seen["log"] = [len(run.log), tail]
        out[8] = "\n".join(run.log[-50:])
    if run.state != seen.get("state"):
        seen["state"] = run.state
        out[9:14] = _buttons(run.state)
    more = run.state in ("starting", "running") or run.status()["pending_steps"] > 0 or run.views.busy() \
        or (run.live and run.view.step != run.step)
    out[15], out[16] = seen, gr.Timer(active=more)
    return out


@endpoint()
def show_download(pg: Playground) -> gr.File:
    return gr.File(visible=True)


@endpoint()
def forget_resume(pg: Playground) -> str:
    return ""


@endpoint()
def wake(pg: Playground) -> gr.Timer:
    """A control was used: watch the run again."""
    return gr.Timer(active=True)


# --- your own images -------------------------------------------------------------------------------
PREVIEW = 64  # images in the preview grid
MNIST_NOTE = "Training on **MNIST digits**. Upload a `.zip` of pictures (a sub-folder per class) or an `.npz` to train on yours."


def training_data(pg: Playground, session, cfg: ebm_play.TrainConfig, model) -> tuple:
    """What a run trains on: the session's uploaded images (all of them: the digit choice is for MNIST;
    a JEM gets one output per class, and the MNIST classifier does not judge the samples), else
    MNIST. Returns (config, model, keyword arguments of ``Playground.start_run`` and the classifier)."""
    own = pg.own_data(session)
    if own is None:
        data = pg.data()
        return cfg, model, {"data": data.x, "labels": data.y, "source": data.source}, pg.classifier
    own.check_trainable(cfg.model, cfg.mirrored)
    cfg = dataclasses.replace(cfg, classes=None)
    model = model or model_for(cfg, own)
    return cfg, model, {"data": own.train.x, "labels": own.train.y, "source": own.source, "own_data": True,
                        "reference": own.reference(), "info": {"dataset": own.info()}}, None


def data_markdown(d) -> str:
    """The counts of an uploaded set: images, split, classes with their images, hash, what JEM says."""
    def esc(t) -> str:  # names come from the archive
        return html.escape(str(t), quote=False).replace("|", "&#124;")

    lines = [f"**{esc(d.name)}**: {d.size:,} images, {len(d.train.x):,} to train and {len(d.test.x):,} held out "
             f"({d.held_out:.0%}: {esc(d.split)}), sha256 `{d.hash[:12]}`"
             + (f", {len(d.skipped)} junk entries skipped" if d.skipped else "") + "."]
    if d.labelled:
        rows = [f"| {esc(c)} | {a + b:,} | {b:,} |" for c, (a, b) in list(d.counts().items())[:20]]
        more = [f"| … {len(d.classes) - 20} more | | |"] if len(d.classes) > 20 else []
        lines += ["", f"{len(d.classes)} classes:", "", "| class | images | held out |", "| --- | ---: | ---: |",
                  *rows, *more, ""]
    else:
        lines.append("No labels (a CNN EBM or an RBM can learn it; JEM needs a sub-folder per class).")
    try:
        d.check_trainable("jem")
        lines.append("**Start** now trains on these images (all of them: *Digits to train on* is for MNIST).")
    except EBMError as e:
        lines.append(f"**Start** now trains on these images. JEM: {esc(e)}.")
    return "\n".join(lines)


def data_view(d) -> tuple[str, str]:
    """(preview picture, counts) of an uploaded set, as the Your images block shows them."""
    return picture(grid(d.preview(PREVIEW), nrow=8, scale=2)), data_markdown(d)


@endpoint(session=Session(), file=File(DATA_LIMITS.max_file_bytes).named("your images"),
          labels_from_folders=Flag().named("labels from folders"))
def data_upload(pg: Playground, session, file=None, labels_from_folders=True) -> tuple:
    """Read an uploaded ``.zip`` of pictures (a sub-folder per class) or ``.npz`` (``x``, optional
    ``y``) within the app's limits, checked before anything is decompressed or decoded; the session
    then trains on it. Returns the preview (what the model sees) and the counts."""
    if not file:
        raise EBMError("upload a .zip of pictures or an .npz")
    name = Path(file).name  # gradio keeps the uploaded name; the server's folder must not reach the file
    with job_threads(1):
        d = load_dataset(file, DATA_LIMITS, labels_from_folders=labels_from_folders, kinds=("zip", "npz"))
    d = dataclasses.replace(d, name=name, arg=name, source=f"your images {name}")
    pg.hold_data(session, d)
    return data_view(d)


@endpoint(session=Session())
def data_forget(pg: Playground, session) -> tuple:
    """Back to MNIST: the session's uploaded images are let go."""
    pg.drop_data(session)
    return None, MNIST_NOTE, None


@endpoint(session=AnySession())
def data_shown(pg: Playground, session) -> tuple:
    """What a (re)loaded page shows: the session's uploaded images, if it holds some."""
    s = pg.sessions.peek(session)
    if s is None or s.data is None:
        return gr.skip(), gr.skip()
    return data_view(s.data)


def _data_block(pg: Playground) -> dict:
    d = {}
    with gr.Accordion("Your images", open=False, elem_id="train-data"):
        d["file"] = gr.File(label=f"A .zip of pictures or an .npz (x: N×28×28, optional y), up to "
                                  f"{DATA_LIMITS.max_file_bytes // 2**20} MB and {DATA_LIMITS.max_images:,} images",
                            file_types=[".zip", ".npz"], type="filepath", height=120, elem_id="train-data-file")
        d["folders"] = gr.Checkbox(True, label="Labels from sub-folder names (one folder per class, for JEM)")
        d["info"] = gr.Markdown(MNIST_NOTE, elem_id="train-data-info")
        d["preview"] = gr.Image(label="What the model sees (28×28, as drawings are preprocessed)", type="filepath",
                                format="png", height=240, interactive=False, elem_id="train-data-preview")
        d["mnist"] = gr.Button("Use MNIST again", size="sm", elem_id="train-data-mnist")
    return d


def _wire_data(pg: Playground, session, d: dict) -> None:
    on(d["file"].upload, data_upload, pg, [session, d["file"], d["folders"]], [d["preview"], d["info"]],
       api_name="train_data", concurrency_limit=2, concurrency_id="compute")
    on(d["mnist"].click, data_forget, pg, session, [d["preview"], d["info"], d["file"]], api_name="train_data_forget",
       concurrency_limit=None)


# --- layout and wiring -------------------------------------------------------------------------------
def _settings_column(pg: Playground) -> dict:
    p = PRESETS["fast"]
    c = {}
    gr.Markdown("### Settings")
    with gr.Row():
        c["fast"] = gr.Button("Preset: fast on CPU", size="sm")
        c["reference"] = gr.Button("Preset: reference recipe", size="sm")
    with gr.Row():
        c["dsm"] = gr.Button("Preset: score matching (DSM)", size="sm")
        c["nce"] = gr.Button("Preset: noise-contrastive (NCE)", size="sm")
    c["objective"] = gr.Radio(OBJECTIVES, value=p["objective"], label="Training objective", elem_id="train-objective")
    c["about"] = gr.Markdown(about(p["objective"]), elem_id="train-objective-about")
    c["kind"] = gr.Dropdown(kind_choices(p["objective"]), value=p["kind"], label="Model kind")
    c["width"] = gr.Number(p["width"], precision=0, label="Width", info="CNN/JEM channels c; RBM hidden units")
    c["digits"] = gr.CheckboxGroup([(str(d), d) for d in DIGITS], value=p["digits"], label="Digits to train on")
    with gr.Row():
        c["batch_size"] = gr.Number(p["batch_size"], precision=0, label="Batch size", min_width=100)
        c["seed"] = gr.Number(p["seed"], precision=0, label="Seed", min_width=100)
    with gr.Row():
        c["sampler_steps"] = gr.Number(p["sampler_steps"], precision=0, label="Langevin steps", min_width=100)
        c["step_size"] = gr.Number(p["step_size"], label="Step size", min_width=100)
        c["noise"] = gr.Number(p["noise"], label="Noise σ", min_width=100)
    with gr.Row():
        c["alpha"] = gr.Number(p["alpha"], label="α (energy penalty)", min_width=100)
        c["lr"] = gr.Number(p["lr"], label="Learning rate", min_width=100)
    with gr.Row():
        c["buffer_size"] = gr.Number(p["buffer_size"], precision=0, label="Buffer size", min_width=100)
        c["reinit"] = gr.Slider(0, 1, p["reinit"], step=0.01, label="Re-init probability", min_width=100)
    with gr.Accordion("Display and limits", open=False):
        c["fresh_every"] = gr.Number(50, precision=0, label="Fresh samples every N steps")
        c["fresh_steps"] = gr.Number(0, precision=0, label="Sampler steps for fresh samples from noise (0 = default)",
                                     info=f"{FRESH_STEPS} Langevin steps; DSM: {LADDER_STEPS_PER_LEVEL} ladder steps "
                                          "per noise level")
        c["max_steps"] = gr.Number(0, precision=0, label="Stop after N steps (0 = never)")
    c["resume"] = gr.File(label="Resume from a .safetensors model (optional)", file_types=[".safetensors"],
                          type="filepath", height=130)
    c["resume_info"] = gr.Markdown("")
    gr.Markdown("RBM runs use persistent CD-1 with block Gibbs: the Langevin settings, α and re-init do not apply.")
    return c


def _line_plot(label: str, y_title: str, elem_id: str | None = None, **kw) -> gr.LinePlot:
    return gr.LinePlot(None, x="step", y="value", color="series", color_title="", color_map=COLORS, label=label,
                       y_title=y_title, elem_id=elem_id, **kw)


def _view_column(pg: Playground) -> dict:
    v = {}
    with gr.Row():
        v["start"] = gr.Button("▶ Start", variant="primary", interactive=False, elem_id="train-start")
        v["pause"] = gr.Button("Pause", interactive=False, elem_id="train-pause")
        v["resume"] = gr.Button("Resume", interactive=False, elem_id="train-resume")
        v["step"] = gr.Button("Step once", interactive=False, elem_id="train-step")
        v["stop"] = gr.Button("■ Stop", variant="stop", interactive=False, elem_id="train-stop")
    v["status"] = gr.Markdown(status_markdown(pg, None), elem_classes="ebm-status", elem_id="train-status")
    with gr.Row():
        grid = dict(type="filepath", format="png", height=300, interactive=False, elem_classes="ebm-grid")
        v["buffer"] = gr.Image(label="Replay buffer", elem_id="train-buffer", **grid)
        v["fresh"] = gr.Image(label="Fresh from noise", elem_id="train-fresh", **grid)
        v["hist"] = gr.LinePlot(x="energy", y="fraction", color="source", color_title="", color_map=HIST_COLORS,
                                label="Energies: real digits, buffer, uniform noise", elem_id="train-hist")
    with gr.Row():
        v["energy"] = _line_plot("Mean energies (red lines: divergence rollbacks)", "energy", "train-energy")
        v["loss"] = _line_plot("Loss", "loss", "train-loss")
    with gr.Row():
        v["grad"] = _line_plot("Gradient norm (before clipping)", "‖∇θ‖")
        v["speed"] = _line_plot("Speed (mean of 10 steps)", "steps/s")
    v["quality"] = _line_plot("Fresh samples judged by the evaluation classifier (1 = best)", "fraction",
                              "train-quality", y_lim=[0, 1], visible=pg.classifier is not None)
    v["log"] = gr.Textbox(label="Log", lines=5, max_lines=8, interactive=False, autoscroll=True, elem_id="train-log")
    with gr.Row():
        v["save"] = gr.Button("Save model (.safetensors)")
        v["use"] = gr.Button("Use this model in the other tabs")
    with gr.Row():
        v["saved"] = gr.File(label="Download the saved model", interactive=False, visible=False)
        v["use_msg"] = gr.Markdown("")
    with gr.Accordion("Run status as JSON (what /train_status returns)", open=False):
        v["json"] = gr.JSON(label="status")
    return v


def _reproduce_block(pg: Playground) -> dict:
    """The command line and the link for the form's settings (both with a copy button)."""
    p = PRESETS["fast"]
    command, link, note = reproduce(pg, *(p[f] for f in FIELDS), 0, 0, p["objective"])
    r = {}
    with gr.Accordion("Reproduce: command line and link", open=True):
        r["address_note"] = gr.Markdown("", elem_id="train-address-note")
        r["command"] = gr.Code(command, language="shell", label="The same run from the command line", lines=2,
                               interactive=False, wrap_lines=True, buttons=["copy"], elem_id="train-command")
        r["command_note"] = gr.Markdown(note)
        r["link"] = gr.Textbox(link, label="Link to these settings", info="opens this page with them filled in",
                               interactive=False, buttons=["copy"], elem_id="train-link")
    return r


def _wire_reproduce(pg: Playground, session, c: dict, data_info) -> list:
    """The command and link follow every setting and the session's data (cheap: no queue; the page's
    last call wins: ``boundary.on_changes``); returns
    the outputs of the page address's fill, for the app's load event."""
    inputs = [*(c[f] for f in FIELDS), c["fresh_steps"], c["max_steps"], c["objective"], session]
    fields = [*(c[f] for f in [*FIELDS, "fresh_steps", "max_steps", "objective"]), data_info]
    on_changes(fields, reproduce, pg, inputs, [c["command"], c["link"], c["command_note"]], queue=False, **PRIVATE)
    return [*(c[f] for f in FILL_FIELDS), c["max_steps"], c["address_note"]]


def create_tab(pg: Playground, session: gr.BrowserState) -> dict:
    """Lay out the Train tab and wire its events; returns what the app wires to."""
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            d = _data_block(pg)
            c = _settings_column(pg)
            c.update(_reproduce_block(pg))
        with gr.Column(scale=3):
            v = _view_column(pg)
    seen, timer = gr.State({}), gr.Timer(POLL_S, active=False)
    config = [c[f] for f in FIELDS]
    quiet = dict(queue=False, **PRIVATE)
    for name in PRESETS:
        on(c[name].click, fill_preset, pg, gr.State(name), [c[f] for f in PRESET_FIELDS], **quiet)
    on(c["objective"].change, objective_changed, pg, [c["objective"], c["kind"]],
       [c["kind"], c["width"], c["about"], c["fresh_every"], c["fresh_steps"]], **quiet)
    on(c["kind"].input, kind_width, pg, c["kind"], c["width"], **quiet)
    on(c["resume"].upload, fill_from_file, pg, c["resume"], [*(c[f] for f in FILL_FIELDS), c["resume_info"]], **PRIVATE)
    address = _wire_reproduce(pg, session, c, d["info"])
    on(c["resume"].clear, forget_resume, pg, None, c["resume_info"], queue=False, **PRIVATE)

    control = dict(concurrency_limit=None, show_progress="hidden")
    start_inputs = [session, *config, c["fresh_every"], c["fresh_steps"], c["max_steps"], c["resume"], c["objective"]]
    for key, fn, inputs in (("start", train_start, start_inputs), ("pause", train_pause, [session]),
                            ("resume", train_resume, [session]), ("step", train_step, [session]),
                            ("stop", train_stop, [session])):
        event = on(v[key].click, fn, pg, inputs, v["json"], api_name=f"train_{key}", **control)
        on(event.then, wake, pg, None, timer, queue=False, **PRIVATE)
    saved = on(v["save"].click, train_save, pg, session, v["saved"], api_name="train_save", concurrency_limit=None)
    on(saved.success, show_download, pg, None, v["saved"], queue=False, **PRIVATE)
    use_event = on(v["use"].click, train_use, pg, session, v["use_msg"], api_name="train_use", concurrency_limit=None)
    api(train_status, pg, "train_status", concurrency_limit=None)
    _wire_data(pg, session, d)

    outputs = [v["status"], v["energy"], v["loss"], v["grad"], v["speed"], v["buffer"], v["fresh"], v["hist"],
               v["log"], v["start"], v["pause"], v["resume"], v["step"], v["stop"], v["quality"], seen, timer]
    on(timer.tick, poll, pg, [session, seen], outputs, concurrency_limit=None, **PRIVATE)
    return {"poll": ([session, seen], outputs), "use_event": use_event, "data": (session, [d["preview"], d["info"]]),
            "address": address}

