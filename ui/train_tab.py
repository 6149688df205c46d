"""Train tab: set up a run, start/pause/resume/step/stop it, watch it live, save or use the model.

The buttons only send commands to the session's :class:`~ui.sessions.Run`; a ~1 s ``gr.Timer``
reads what the worker published and sends only what changed since this page last looked.
"""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path

import gradio as gr
import pandas as pd

import ebm_play
from ebm_play import EBMError
from ebm_play.weights import read_metadata

from .common import histogram_frame, long_frame, number, thin, upload_path, user_errors, whole
from .sessions import Registry, Run

KINDS = [("CNN EBM", "cnn"), ("JEM (classifier + EBM)", "jem"), ("RBM", "rbm")]
KIND_NAMES = {v: k for k, v in KINDS}
DEFAULT_WIDTH = {"cnn": 16, "jem": 32, "rbm": 256}
FIELDS = ["kind", "width", "digits", "batch_size", "sampler_steps", "step_size", "noise", "alpha", "lr",
          "buffer_size", "reinit", "seed"]

_REF = ebm_play.TrainConfig()


def _ui_values(c: ebm_play.TrainConfig) -> dict:
    return dict(kind=c.model, width=c.width, digits=list(range(10)), batch_size=c.batch_size,
                sampler_steps=c.sampler_steps, step_size=c.step_size, noise=c.noise, alpha=c.alpha, lr=c.lr,
                buffer_size=c.buffer_size, reinit=c.reinit, seed=c.seed)


# The engine's presets ("fast": digits within minutes on a CPU; "reference": the TrainConfig defaults).
PRESETS = {name: _ui_values(ebm_play.training.preset(name)) for name in ebm_play.training.PRESETS}
QUALITY_SERIES = {"confident": "confident (p > 0.9)", "coverage": "class coverage"}
ENERGY_SERIES = {"e_real": "E(real)", "e_fake": "E(fake)", "gap": "gap E(fake)−E(real)"}
COLORS = {"confident (p > 0.9)": "#16a34a", "class coverage": "#9333ea", "E(real)": "#2563eb", "E(fake)": "#f59e0b", "gap E(fake)−E(real)": "#10b981", "loss": "#6366f1",
          "cross-entropy": "#a855f7", "grad norm": "#0ea5e9", "steps/s": "#64748b"}
HIST_COLORS = {"real": "#2563eb", "buffer": "#f59e0b", "noise": "#64748b"}
ROLLBACK = "#dc2626"


def make_config(kind, width, digits, batch_size, sampler_steps, step_size, noise, alpha, lr, buffer_size, reinit,
                seed) -> ebm_play.TrainConfig:
    """UI/API values → a validated TrainConfig (the engine validates the rest, with its own messages)."""
    if kind not in DEFAULT_WIDTH:
        raise EBMError(f"unknown model kind {kind!r}: use cnn, jem or rbm")
    width = whole("width (RBM: hidden units)", width, 1, 8192 if kind == "rbm" else 256)
    if not digits:
        raise EBMError("pick at least one digit to train on")
    classes = sorted({whole("digit", int(d) if isinstance(d, str) and d.isdigit() else d, 0, 9) for d in digits})
    return ebm_play.TrainConfig(
        model=kind, width=None if kind == "rbm" else width, hidden=width if kind == "rbm" else _REF.hidden,
        classes=None if len(classes) == 10 else classes,
        batch_size=whole("batch size", batch_size, 1, 4096),
        sampler_steps=whole("Langevin steps", sampler_steps, 0, 1000),
        step_size=number("step size", step_size, 0, 1e4), noise=number("noise", noise, 0, 10),
        alpha=number("alpha", alpha, 0, 1e3), lr=number("learning rate", lr, 0, 1),
        buffer_size=whole("buffer size", buffer_size, 1, 100_000), reinit=number("re-init probability", reinit, 0, 1),
        seed=whole("seed", seed, 0, 2**31 - 1))


def _markers(df: pd.DataFrame, run: Run, x: str = "step") -> tuple[pd.DataFrame, dict]:
    """Rollbacks as red vertical lines across the curve (one series each, so they are not joined)."""
    events = run.trainer.state.events[-10:]
    if not events or df.empty:
        return df, {}
    lo, hi = float(df["value"].min()), float(df["value"].max())
    rows = [(e.step, v, f"rollback @{e.step}") for e in events for v in (lo, hi)]
    extra = pd.DataFrame(rows, columns=[x, "value", "series"])
    return pd.concat([df, extra], ignore_index=True), {f"rollback @{e.step}": ROLLBACK for e in events}


def _plot(df: pd.DataFrame, run: Run | None = None, base: list[str] | None = None) -> gr.LinePlot:
    cmap = dict(COLORS)
    if run is not None:
        df, extra = _markers(df, run)
        cmap.update(extra)
    return gr.LinePlot(value=df, color_map=cmap, colors_in_legend=base)


def status_markdown(run: Run | None, registry: Registry) -> str:
    active = f"server: {registry.active_runs()} of {registry.max_runs} training runs active"
    if run is None:
        return ("**No training run in this session yet.** Pick a preset, adjust the settings and press **Start**.  \n"
                + active)
    st = run.status()
    c = run.trainer.config
    head = f'<span class="ebm-dot ebm-{run.state}">●</span> **{run.state.capitalize()}**'
    parts = [head, f"step {st['step']:,}" + (f" of {run.max_steps:,}" if run.max_steps else "")]
    if st["last"]:
        m = st["last"]
        parts += [f"{st['steps_per_s']:.1f} steps/s", f"loss {m['loss']:.4g}", f"E(real) {m['e_real']:.4g}",
                  f"E(fake) {m['e_fake']:.4g}", f"lr {m['lr']:.3g}"]
        if "accuracy" in m:
            parts.append(f"accuracy {m['accuracy']:.0%}")
    if st["rollbacks"]:
        parts.append(f"**{len(run.trainer.state.events)} rollback(s)**")
    what = KIND_NAMES[c.model] + (f" width {c.width}" if c.model != "rbm" else f" {c.hidden} hidden")
    digits = "all digits" if c.classes is None else "digits " + ",".join(map(str, c.classes))
    langevin = "" if c.model == "rbm" else f" · {c.sampler_steps} Langevin steps"
    setup = f"{what} · {digits} · batch {c.batch_size}{langevin} · {run.source} · {st['device']}"
    lines = [" · ".join(parts), setup]
    if run.error:
        lines.append(f'<span class="ebm-error">Error: {html.escape(run.error)}</span> Start a new run when ready.')
    lines.append(active)
    return "  \n".join(lines)


def create_tab(registry: Registry, session: gr.BrowserState) -> dict:
    """Build the Train tab inside the current ``gr.Blocks``; returns the components others wire to."""
    p = PRESETS["fast"]
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            gr.Markdown("### Settings")
            with gr.Row():
                fast_btn = gr.Button("Preset: fast on CPU", size="sm")
                ref_btn = gr.Button("Preset: reference recipe", size="sm")
            kind = gr.Dropdown(KINDS, value=p["kind"], label="Model kind")
            width = gr.Number(p["width"], precision=0, label="Width", info="CNN/JEM channels c; RBM hidden units")
            digits = gr.CheckboxGroup([(str(d), d) for d in range(10)], value=p["digits"], label="Digits to train on")
            with gr.Row():
                batch_size = gr.Number(p["batch_size"], precision=0, label="Batch size", min_width=100)
                seed = gr.Number(p["seed"], precision=0, label="Seed", min_width=100)
            with gr.Row():
                sampler_steps = gr.Number(p["sampler_steps"], precision=0, label="Langevin steps", min_width=100)
                step_size = gr.Number(p["step_size"], label="Step size", min_width=100)
                noise = gr.Number(p["noise"], label="Noise σ", min_width=100)
            with gr.Row():
                alpha = gr.Number(p["alpha"], label="α (energy penalty)", min_width=100)
                lr = gr.Number(p["lr"], label="Learning rate", min_width=100)
            with gr.Row():
                buffer_size = gr.Number(p["buffer_size"], precision=0, label="Buffer size", min_width=100)
                reinit = gr.Slider(0, 1, p["reinit"], step=0.01, label="Re-init probability", min_width=100)
            with gr.Accordion("Display and limits", open=False):
                fresh_every = gr.Number(50, precision=0, label="Fresh samples every N steps")
                fresh_steps = gr.Number(256, precision=0, label="Langevin steps for fresh samples (from noise)")
                max_steps = gr.Number(0, precision=0, label="Stop after N steps (0 = never)")
            resume = gr.File(label="Resume from a .safetensors model (optional)", file_types=[".safetensors"],
                             type="filepath", height=130)
            resume_info = gr.Markdown("")
            gr.Markdown("RBM runs use persistent CD-1 with block Gibbs: the Langevin settings, α and re-init "
                        "do not apply.")
        with gr.Column(scale=3):
            with gr.Row():
                start_btn = gr.Button("▶ Start", variant="primary", interactive=False, elem_id="train-start")
                pause_btn = gr.Button("Pause", interactive=False, elem_id="train-pause")
                resume_btn = gr.Button("Resume", interactive=False, elem_id="train-resume")
                step_btn = gr.Button("Step once", interactive=False, elem_id="train-step")
                stop_btn = gr.Button("■ Stop", variant="stop", interactive=False, elem_id="train-stop")
            status_md = gr.Markdown(status_markdown(None, registry), elem_classes="ebm-status", elem_id="train-status")
            with gr.Row():
                buffer_img = gr.Image(label="Replay buffer", type="pil", format="png", height=300,
                                      interactive=False, elem_classes="ebm-grid", elem_id="train-buffer")
                fresh_img = gr.Image(label="Fresh from noise", type="pil", format="png", height=300,
                                     interactive=False, elem_classes="ebm-grid", elem_id="train-fresh")
                hist_plot = gr.LinePlot(x="energy", y="fraction", color="source", color_title="", color_map=HIST_COLORS,
                                        label="Energies: real digits, buffer, uniform noise", elem_id="train-hist")
            empty = pd.DataFrame({"step": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64"),
                                  "series": pd.Series(dtype="str")})
            with gr.Row():
                energy_plot = gr.LinePlot(empty, x="step", y="value", color="series", color_title="", color_map=COLORS,
                                          label="Mean energies (red lines: divergence rollbacks)", y_title="energy",
                                          elem_id="train-energy")
                loss_plot = gr.LinePlot(empty, x="step", y="value", color="series", color_title="", color_map=COLORS,
                                        label="Loss", y_title="loss", elem_id="train-loss")
            with gr.Row():
                grad_plot = gr.LinePlot(empty, x="step", y="value", color="series", color_title="", color_map=COLORS,
                                        label="Gradient norm (before clipping)", y_title="‖∇θ‖")
                speed_plot = gr.LinePlot(empty, x="step", y="value", color="series", color_title="", color_map=COLORS,
                                         label="Speed (mean of 10 steps)", y_title="steps/s")
            quality_plot = gr.LinePlot(empty, x="step", y="value", color="series", color_title="", color_map=COLORS,
                                       label="Fresh samples judged by the evaluation classifier (1 = best)",
                                       y_title="fraction", y_lim=[0, 1], elem_id="train-quality",
                                       visible=registry.classifier is not None)
            log_box = gr.Textbox(label="Log", lines=5, max_lines=8, interactive=False, autoscroll=True,
                                 elem_id="train-log")
            with gr.Row():
                save_btn = gr.Button("Save model (.safetensors)")
                use_btn = gr.Button("Use this model in the other tabs")
            with gr.Row():
                saved_file = gr.File(label="Download the saved model", interactive=False, visible=False)
                use_msg = gr.Markdown("")
            with gr.Accordion("Run status as JSON (what /train_status returns)", open=False):
                status_json = gr.JSON(label="status")
    seen = gr.State({})
    timer = gr.Timer(1.0)

    config_inputs = [kind, width, digits, batch_size, sampler_steps, step_size, noise, alpha, lr, buffer_size, reinit,
                     seed]

    # --- presets and resume upload (page only) ------------------------------------------------
    def preset(name):
        vals = PRESETS[name]
        return [vals[f] for f in FIELDS]

    fast_btn.click(lambda: preset("fast"), None, config_inputs, api_visibility="private", queue=False)
    ref_btn.click(lambda: preset("reference"), None, config_inputs, api_visibility="private", queue=False)
    kind.input(lambda k: DEFAULT_WIDTH.get(k, 16), kind, width, api_visibility="private", queue=False)

    def inspect_resume(path):
        if not path:
            return gr.skip(), gr.skip(), ""
        try:
            meta = read_metadata(path)
        except EBMError as e:
            return gr.skip(), gr.skip(), f'<span class="ebm-error">{html.escape(str(e))}</span>'
        k, cfg = meta["kind"], meta["config"]
        if k not in DEFAULT_WIDTH:
            msg = f"a {k} model cannot be trained here (cnn, jem or rbm)"
            return gr.skip(), gr.skip(), f'<span class="ebm-error">{msg}</span>'
        w = cfg.get("hidden") if k == "rbm" else cfg.get("width")
        steps = meta.get("info", {}).get("train_steps")
        note = f"Start will continue training this {KIND_NAMES[k]}" + (f" (trained {steps} steps)" if steps else "")
        return k, w, note + " with the settings on the left (fresh optimiser and buffer)."

    resume.upload(inspect_resume, resume, [kind, width, resume_info], api_visibility="private")
    resume.clear(lambda: "", None, resume_info, api_visibility="private", queue=False)

    # --- the API actions ---------------------------------------------------------------------------
    @user_errors
    def train_start(session, kind, width, digits, batch_size, sampler_steps, step_size, noise, alpha, lr,
                    buffer_size, reinit, seed, fresh_every=50, fresh_steps=256, max_steps=0, resume=None):
        """Start a training run for this session in a background thread; returns the run status."""
        cfg = make_config(kind, width, digits, batch_size, sampler_steps, step_size, noise, alpha, lr, buffer_size,
                          reinit, seed)
        fresh_steps = whole("fresh-sample steps", fresh_steps, 1, 10_000)
        cfg = dataclasses.replace(cfg, fresh_steps=fresh_steps)  # saved in the file as the sampling default
        model, resume = None, upload_path(resume)
        if resume:
            model = ebm_play.load_model(resume, registry.device).train()
            if model.kind != cfg.model:
                raise EBMError(f"the uploaded model is a {model.kind} model, but the run trains {cfg.model}: "
                               "choose the matching model kind")
            keys = ("hidden",) if model.kind == "rbm" else ("width", "spectral_norm")  # the file decides the shape
            cfg = dataclasses.replace(cfg, **{k: model.config[k] for k in keys})
        run = registry.start_run(session, cfg, fresh_every=whole("fresh samples every", fresh_every, 0, 1_000_000),
                                 fresh_steps=fresh_steps,
                                 max_steps=whole("stop after", max_steps, 0, 10_000_000), model=model,
                                 resumed_from=Path(resume).name if resume else None)
        return run.status()

    @user_errors
    def train_pause(session):
        """Pause this session's run after the step in progress."""
        run = registry.run_of(session)
        run.pause()
        return run.status()

    @user_errors
    def train_resume(session):
        """Resume this session's paused run."""
        run = registry.run_of(session)
        run.resume()
        return run.status()

    @user_errors
    def train_step(session):
        """Take exactly one training step on a paused run; ``status['last']`` holds its metrics."""
        run = registry.run_of(session)
        run.step_once()
        return run.status()

    @user_errors
    def train_stop(session):
        """Stop this session's run for good (its weights stay available to save or use)."""
        run = registry.run_of(session)
        run.stop()
        return run.status()

    @user_errors
    def train_save(session):
        """Save the run's current weights (safetensors) and return the file for download."""
        run = registry.run_of(session)
        folder = Path(registry.tmp) / registry.session(session).id
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.safetensors"):  # one file per session on the server
            old.unlink(missing_ok=True)
        c = run.trainer.config
        return str(run.save(folder / f"ebm-{c.model}-step{run.trainer.state.step}.safetensors"))

    @user_errors
    def train_use(session):
        """Make a copy of the run's current weights this session's model in the other tabs."""
        label = registry.use_trained(session)
        return f"The other tabs now use: **{label}**."

    @user_errors
    def train_status(session: str) -> dict:
        """The session's run status: state, step, last metrics, rollbacks, error, config."""
        s = registry.session(session)
        if s.run is None:
            return {"state": "none", "step": 0, "active_runs": registry.active_runs(), "max_runs": registry.max_runs}
        return {**s.run.status(), "active_runs": registry.active_runs(), "max_runs": registry.max_runs}

    quick = dict(concurrency_limit=None, show_progress="hidden")
    # preprocess=False: raw values reach the validators (gradio's Number preprocessing fails on NaN).
    start_btn.click(train_start, [session, *config_inputs, fresh_every, fresh_steps, max_steps, resume], status_json,
                    api_name="train_start", preprocess=False, **quick)
    pause_btn.click(train_pause, session, status_json, api_name="train_pause", **quick)
    resume_btn.click(train_resume, session, status_json, api_name="train_resume", **quick)
    step_btn.click(train_step, session, status_json, api_name="train_step", **quick)
    stop_btn.click(train_stop, session, status_json, api_name="train_stop", **quick)
    save_btn.click(train_save, session, saved_file, api_name="train_save", concurrency_limit=None).success(
        lambda: gr.File(visible=True), None, saved_file, api_visibility="private", queue=False)
    use_event = use_btn.click(train_use, session, use_msg, api_name="train_use", concurrency_limit=None)
    gr.api(train_status, api_name="train_status", concurrency_limit=None)

    # --- the live view -------------------------------------------------------------------------
    outputs = [status_md, energy_plot, loss_plot, grad_plot, speed_plot, buffer_img, fresh_img, hist_plot, log_box,
               start_btn, pause_btn, resume_btn, step_btn, stop_btn, quality_plot, seen]

    def poll(sid, seen):
        """Send what changed since this page last looked (nothing at all while idle)."""
        s = registry.peek(sid)
        if s is None:  # the page has no session yet (load still running): keep Start disabled
            return [gr.skip()] * len(outputs)
        run = s.run
        seen = dict(seen or {})
        if seen.get("run", "?") != (run.id if run else None):
            seen = {"run": run.id if run else None}
        out = [gr.skip()] * len(outputs)
        md = status_markdown(run, registry)
        if md != seen.get("md"):
            out[0], seen["md"] = md, md
        if run is None:
            if seen.get("state") != "none":
                seen["state"] = "none"
                out[1:9] = [empty, empty, empty, empty, None, None, None, ""]
                out[9:14] = [gr.Button(interactive=i) for i in (True, False, False, False, False)]
                out[14] = empty
            out[-1] = seen
            return out
        n = len(run.history)
        if n != seen.get("n"):
            seen["n"] = n
            rows = thin(run.history[:n])
            loss_series = {"loss": "loss", "ce": "cross-entropy"}
            out[1] = _plot(long_frame(rows, "step", ENERGY_SERIES), run, list(ENERGY_SERIES.values()))
            legend = ["loss", "cross-entropy"] if rows and "ce" in rows[0] else ["loss"]
            out[2] = _plot(long_frame(rows, "step", loss_series), run, legend)
            out[3] = _plot(long_frame(rows, "step", {"grad_norm": "grad norm"}), base=["grad norm"])
            speed = pd.Series([r["steps_per_s"] for r in run.history[:n]]).rolling(10, min_periods=1).mean()
            srows = thin([{"step": r["step"], "sps": v} for r, v in zip(run.history[:n], speed)])
            out[4] = _plot(long_frame(srows, "step", {"sps": "steps/s"}), base=["steps/s"])
        nq = len(run.quality)
        if nq != seen.get("nq"):
            seen["nq"] = nq
            out[14] = _plot(long_frame(run.quality[:nq], "step", QUALITY_SERIES), base=list(QUALITY_SERIES.values()))
        if run.version != seen.get("version"):
            view = run.view
            seen["version"] = run.version
            out[5] = view.buffer
            if view.fresh_step != seen.get("fresh"):
                out[6], seen["fresh"] = view.fresh, view.fresh_step
            hist = histogram_frame(view.energies, focus=("real", "buffer"))
            cmap = {src: HIST_COLORS[src.split(" (")[0]] for src in hist["source"].unique()}
            out[7] = gr.LinePlot(value=hist, color_map=cmap)
        tail = run.log[-1] if run.log else ""
        if (len(run.log), tail) != tuple(seen.get("log", ())):
            seen["log"] = [len(run.log), tail]
            out[8] = "\n".join(run.log[-50:])
        if run.state != seen.get("state"):
            seen["state"] = run.state
            live, paused = run.live, run.state == "paused"
            out[9:14] = [gr.Button(interactive=i) for i in (not live, run.state == "running", paused, paused, live)]
        out[-1] = seen
        return out

    timer.tick(poll, [session, seen], outputs, api_visibility="private", concurrency_limit=None,
               show_progress="hidden")
    return {"poll": poll, "poll_inputs": [session, seen], "poll_outputs": outputs, "use_event": use_event,
            "status_json": status_json}
