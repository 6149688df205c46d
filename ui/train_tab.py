"""Train tab: set up a run, start/pause/resume/step/stop it, watch it live, save or use the model.

The buttons only send commands to the session's run (:class:`ebm_play.runs.Run`), which answer at
once; a 1 s ``gr.Timer``, active only while the run has something new to show, reads what the run
published and sends only what changed since this page last looked.
"""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path

import gradio as gr
import pandas as pd

import ebm_play
from ebm_play import EBMError
from ebm_play.playground import Playground
from ebm_play.runs import ImageViews, Run
from ebm_play.training import PRESETS as ENGINE_PRESETS
from ebm_play.training import preset
from ebm_play.weights import UPLOAD_LIMITS, read_metadata

from .boundary import PRIVATE, AnySession, Choice, Choices, File, Kept, Number, Session, Whole, api, endpoint, on
from .common import fmt, histogram_frame, long_frame, picture, thin

KINDS = [("CNN EBM", "cnn"), ("JEM (classifier + EBM)", "jem"), ("RBM", "rbm")]
KIND_NAMES = {v: k for k, v in KINDS}
DEFAULT_WIDTH = {"cnn": 16, "jem": 32, "rbm": 256}
DIGITS = list(range(10))
FIELDS = ["kind", "width", "digits", "batch_size", "sampler_steps", "step_size", "noise", "alpha", "lr",
          "buffer_size", "reinit", "seed"]
QUALITY_SERIES = {"confident": "confident (p > 0.9)", "coverage": "class coverage"}
ENERGY_SERIES = {"e_real": "E(real)", "e_fake": "E(fake)", "gap": "gap E(fake)−E(real)"}
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
                buffer_size=c.buffer_size, reinit=c.reinit, seed=c.seed)


# The engine's presets ("fast": digits within minutes on a CPU; "reference": the TrainConfig defaults).
PRESETS = {name: _ui_values(preset(name)) for name in ENGINE_PRESETS}
CONFIG_SPECS = dict(
    kind=Choice(DEFAULT_WIDTH).named("model kind"), width=Whole(1, 8192).named("width (RBM: hidden units)"),
    digits=Choices(DIGITS).named("digit"), batch_size=Whole(1, 4096), sampler_steps=Whole(0, 1000).named("Langevin steps"),
    step_size=Number(0, 1e4), noise=Number(0, 10), alpha=Number(0, 1e3), lr=Number(0, 1).named("learning rate"),
    buffer_size=Whole(1, 100_000), reinit=Number(0, 1).named("re-init probability"), seed=Whole(0, 2**31 - 1))


def make_config(kind, width, digits, batch_size, sampler_steps, step_size, noise, alpha, lr, buffer_size, reinit,
                seed) -> ebm_play.TrainConfig:
    """Checked form values → a TrainConfig (which checks the rest, with its own messages)."""
    if not digits:
        raise EBMError("pick at least one digit to train on")
    if kind != "rbm" and width > 256:
        raise EBMError(f"width must be between 1 and 256 for a {kind} model, got {width}")
    classes = sorted(set(digits))
    return ebm_play.TrainConfig(
        model=kind, width=None if kind == "rbm" else width, hidden=width if kind == "rbm" else _REF.hidden,
        classes=None if len(classes) == 10 else classes, batch_size=batch_size, sampler_steps=sampler_steps,
        step_size=step_size, noise=noise, alpha=alpha, lr=lr, buffer_size=buffer_size, reinit=reinit, seed=seed)


# --- the API: each call answers at once ----------------------------------------------------------------
@endpoint(session=Session(), **CONFIG_SPECS, fresh_every=Whole(0, 1_000_000).named("fresh samples every"),
          fresh_steps=Whole(1, 10_000).named("fresh-sample steps"), max_steps=Whole(0, 10_000_000).named("stop after"),
          resume=File())
def train_start(pg: Playground, session, kind, width, digits, batch_size, sampler_steps, step_size, noise, alpha, lr,
                buffer_size, reinit, seed, fresh_every=50, fresh_steps=256, max_steps=0, resume=None) -> dict:
    """Start a training run for this session in a background thread; returns the run status."""
    cfg = make_config(kind, width, digits, batch_size, sampler_steps, step_size, noise, alpha, lr, buffer_size,
                      reinit, seed)
    cfg = dataclasses.replace(cfg, fresh_steps=fresh_steps)  # saved in the file as the sampling default
    model = None
    if resume:
        meta = read_metadata(resume, UPLOAD_LIMITS)  # checked before any slot or memory is taken
        if meta["kind"] != cfg.model:
            raise EBMError(f"the uploaded model is a {meta['kind']} model, but the run trains {cfg.model}: "
                           "choose the matching model kind")
        keys = ("hidden",) if cfg.model == "rbm" else ("width", "spectral_norm")  # the file decides the shape
        cfg = dataclasses.replace(cfg, **{k: meta["config"][k] for k in keys if k in meta["config"]})
        pg.check_room(session, "image")  # before the file's tensors are read (at most UPLOAD_LIMITS.max_params)
        model = ebm_play.load_model(resume, pg.device, UPLOAD_LIMITS)
    data = pg.data()
    run = pg.start_run(session, "image", cfg, data.x, data.y, model=model, source=data.source, max_steps=max_steps,
                       resumed_from=Path(resume).name if resume else None,
                       views=ImageViews(fresh_every, fresh_steps, pg.classifier))
    return status_of(pg, session, run)


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
    return [PRESETS[name][f] for f in FIELDS]


@endpoint(kind=Choice(DEFAULT_WIDTH))
def kind_width(pg: Playground, kind) -> int:
    return DEFAULT_WIDTH[kind]


@endpoint(path=File())
def inspect_resume(pg: Playground, path) -> tuple:
    """What an uploaded file would resume: its kind and width go into the form."""
    if not path:
        return gr.skip(), gr.skip(), ""
    meta = read_metadata(path, UPLOAD_LIMITS)
    k, cfg = meta["kind"], meta["config"]
    if k not in DEFAULT_WIDTH:
        raise EBMError(f"a {k} model cannot be trained here (cnn, jem or rbm)")
    steps = meta.get("info", {}).get("train_steps")
    note = f"Start will continue training this {KIND_NAMES[k]}" + (f" (trained {fmt(steps)} steps)" if steps else "")
    return k, cfg.get("hidden") if k == "rbm" else cfg.get("width"), note + " with the settings on the left."


def _markers(df: pd.DataFrame, run: Run) -> tuple[pd.DataFrame, dict]:
    """Rollbacks as red vertical lines across the curve (one series each, so they are not joined)."""
    steps = [int(r["step"]) for r in run.history if r.get("rolled_back")][-10:]
    if not steps or df.empty:
        return df, {}
    lo, hi = float(df["value"].min()), float(df["value"].max())
    extra = pd.DataFrame([(s, v, f"rollback @{s}") for s in steps for v in (lo, hi)], columns=["step", "value", "series"])
    return pd.concat([df, extra], ignore_index=True), {f"rollback @{s}": ROLLBACK for s in steps}


def _plot(df: pd.DataFrame, legend: list[str], run: Run | None = None) -> gr.LinePlot:
    cmap = dict(COLORS)
    if run is not None:
        df, extra = _markers(df, run)
        cmap.update(extra)
    return gr.LinePlot(value=df, color_map=cmap, colors_in_legend=legend)


def status_markdown(pg: Playground, run: Run | None) -> str:
    active = f"server: {pg.active_runs()} of {pg.limits.running} training runs active"
    if run is None:
        return "**No training run in this session yet.** Pick a preset, adjust the settings and press **Start**.  \n" + active
    st, c = run.status(), run.config
    parts = [f'<span class="ebm-dot ebm-{run.state}">●</span> **{run.state.capitalize()}**',
             f"step {fmt(st['step'])}" + (f" of {fmt(run.max_steps)}" if run.max_steps else "")]
    if st["last"]:
        m = st["last"]
        parts += [f"{st['steps_per_s']:.1f} steps/s", f"loss {fmt(m['loss'])}", f"E(real) {fmt(m['e_real'])}",
                  f"E(fake) {fmt(m['e_fake'])}", f"lr {fmt(m['lr'], 3)}"]
        if "accuracy" in m:
            parts.append(f"accuracy {m['accuracy']:.0%}")
    if run.events:
        parts.append(f"**{len(run.events)} rollback(s)**")
    what = KIND_NAMES.get(c.model, c.model) + (f" {c.hidden} hidden" if c.model == "rbm" else f" width {c.width}")
    digits = "all digits" if c.classes is None else "digits " + ",".join(map(str, c.classes))
    langevin = "" if c.model == "rbm" else f" · {c.sampler_steps} Langevin steps"
    lines = [" · ".join(parts), f"{what} · {digits} · batch {c.batch_size}{langevin} · {st['data']} · {st['device']}"]
    if run.error:
        lines.append(f'<span class="ebm-error">Error: {html.escape(run.error)}</span> Start a new run when ready.')
    return "  \n".join([*lines, active])


EMPTY = pd.DataFrame({"step": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64"),
                      "series": pd.Series(dtype="str")})
N_OUT = 17  # status, 4 curves, buffer, fresh, histogram, log, 5 buttons, quality, seen, timer


def _curves(run: Run, n: int) -> list:
    rows = thin(run.history[:n])
    loss_series = {"loss": "loss", "ce": "cross-entropy"}
    speed = pd.Series([r["steps_per_s"] for r in run.history[:n]]).rolling(10, min_periods=1).mean()
    srows = thin([{"step": r["step"], "sps": v} for r, v in zip(run.history[:n], speed)])
    return [_plot(long_frame(rows, "step", ENERGY_SERIES), list(ENERGY_SERIES.values()), run),
            _plot(long_frame(rows, "step", loss_series), ["loss", "cross-entropy"] if rows and "ce" in rows[0] else ["loss"], run),
            _plot(long_frame(rows, "step", {"grad_norm": "grad norm"}), ["grad norm"]),
            _plot(long_frame(srows, "step", {"sps": "steps/s"}), ["steps/s"])]


def _buttons(state: str | None) -> list:
    live, paused = state in ("starting", "running", "paused"), state == "paused"
    return [gr.Button(interactive=i) for i in (not live, state in ("running", "starting"), paused, paused, live)]


@endpoint(session=AnySession(), seen=Kept())
def poll(pg: Playground, session, seen) -> list:
    """What changed since this page last looked (nothing at all while idle); the timer stays on
    only while the run has more to show."""
    out = [gr.skip()] * N_OUT
    s = pg.sessions.peek(session)
    run = s.runs.get("image") if s is not None else None
    seen = dict(seen or {})
    if seen.get("run", "?") != (run.id if run else None):
        seen = {"run": run.id if run else None}
    md = status_markdown(pg, run)
    if md != seen.get("md"):
        out[0], seen["md"] = md, md
    if run is None:
        if seen.get("state") != "none":
            seen["state"] = "none"
            out[1:9] = [EMPTY, EMPTY, EMPTY, EMPTY, None, None, None, ""]
            out[9:14] = _buttons(None)
            out[14] = EMPTY
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
        out[14] = _plot(long_frame(run.quality[:nq], "step", QUALITY_SERIES), list(QUALITY_SERIES.values()))
    view = run.view
    if run.version != seen.get("version") and view.buffer is not None:
        seen["version"] = run.version
        out[5] = picture(view.buffer)
        if view.fresh_step != seen.get("fresh") and view.fresh is not None:
            out[6], seen["fresh"] = picture(view.fresh), view.fresh_step
        hist = histogram_frame(view.energies, focus=("real", "buffer"))
        out[7] = gr.LinePlot(value=hist, color_map={src: HIST_COLORS[src.split(" (")[0]] for src in hist["source"].unique()})
    tail = run.log[-1] if run.log else ""
    if [len(run.log), tail] != seen.get("log"):
        seen["log"] = [len(run.log), tail]
        out[8] = "\n".join(run.log[-50:])
    if run.state != seen.get("state"):
        seen["state"] = run.state
        out[9:14] = _buttons(run.state)
    more = run.state in ("starting", "running") or run.status()["pending_steps"] > 0 or run.views.busy() \
        or (run.live and view.step != run.step)
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


# --- layout and wiring -------------------------------------------------------------------------------
def _settings_column(pg: Playground) -> dict:
    p = PRESETS["fast"]
    c = {}
    gr.Markdown("### Settings")
    with gr.Row():
        c["fast"] = gr.Button("Preset: fast on CPU", size="sm")
        c["reference"] = gr.Button("Preset: reference recipe", size="sm")
    c["kind"] = gr.Dropdown(KINDS, value=p["kind"], label="Model kind")
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
        c["fresh_steps"] = gr.Number(256, precision=0, label="Langevin steps for fresh samples (from noise)")
        c["max_steps"] = gr.Number(0, precision=0, label="Stop after N steps (0 = never)")
    c["resume"] = gr.File(label="Resume from a .safetensors model (optional)", file_types=[".safetensors"],
                          type="filepath", height=130)
    c["resume_info"] = gr.Markdown("")
    gr.Markdown("RBM runs use persistent CD-1 with block Gibbs: the Langevin settings, α and re-init do not apply.")
    return c


def _line_plot(label: str, y_title: str, elem_id: str | None = None, **kw) -> gr.LinePlot:
    return gr.LinePlot(EMPTY, x="step", y="value", color="series", color_title="", color_map=COLORS, label=label,
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


def create_tab(pg: Playground, session: gr.BrowserState) -> dict:
    """Lay out the Train tab and wire its events; returns what the app wires to."""
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            c = _settings_column(pg)
        with gr.Column(scale=3):
            v = _view_column(pg)
    seen, timer = gr.State({}), gr.Timer(POLL_S, active=False)
    config = [c[f] for f in FIELDS]
    quiet = dict(queue=False, **PRIVATE)
    on(c["fast"].click, fill_preset, pg, gr.State("fast"), config, **quiet)
    on(c["reference"].click, fill_preset, pg, gr.State("reference"), config, **quiet)
    on(c["kind"].input, kind_width, pg, c["kind"], c["width"], **quiet)
    on(c["resume"].upload, inspect_resume, pg, c["resume"], [c["kind"], c["width"], c["resume_info"]], **PRIVATE)
    on(c["resume"].clear, forget_resume, pg, None, c["resume_info"], queue=False, **PRIVATE)

    control = dict(concurrency_limit=None, show_progress="hidden")
    start_inputs = [session, *config, c["fresh_every"], c["fresh_steps"], c["max_steps"], c["resume"]]
    for key, fn, inputs in (("start", train_start, start_inputs), ("pause", train_pause, [session]),
                            ("resume", train_resume, [session]), ("step", train_step, [session]),
                            ("stop", train_stop, [session])):
        event = on(v[key].click, fn, pg, inputs, v["json"], api_name=f"train_{key}", **control)
        on(event.then, wake, pg, None, timer, queue=False, **PRIVATE)
    saved = on(v["save"].click, train_save, pg, session, v["saved"], api_name="train_save", concurrency_limit=None)
    on(saved.success, show_download, pg, None, v["saved"], queue=False, **PRIVATE)
    use_event = on(v["use"].click, train_use, pg, session, v["use_msg"], api_name="train_use", concurrency_limit=None)
    api(train_status, pg, "train_status", concurrency_limit=None)

    outputs = [v["status"], v["energy"], v["loss"], v["grad"], v["speed"], v["buffer"], v["fresh"], v["hist"],
               v["log"], v["start"], v["pause"], v["resume"], v["step"], v["stop"], v["quality"], seen, timer]
    on(timer.tick, poll, pg, [session, seen], outputs, concurrency_limit=None, **PRIVATE)
    return {"poll": ([session, seen], outputs), "use_event": use_event}

