"""Landscape tab: 2-D energy landscapes that people can see and shape.

Three parts, all on the same engine (``ebm_play.landscapes`` plus the trainer, the samplers and
``compose``, reused as they are):

- **Train**: a small MLP energy learns a 2-D data set (or points clicked onto the canvas) with the
  contrastive-divergence trainer, live. A worker thread per session steps the trainer and publishes
  grids (the energy, one batched call; the change one step makes to it, one Jacobian-vector
  product) ~8 times a second; a fast ``gr.Timer`` (active only while training) renders the newest
  grid with matplotlib and sends it as a JPEG. Play (also applies changed settings to a live run),
  pause, single step, reset.
- **Sample**: any two samplers side by side on a trained or hand-made landscape, streamed frame by
  frame, with acceptance rates, the share of particles in each mode and mode-hopping statistics.
  Presets show what a too-large step, too little noise or no annealing does.
- **Compose**: add, subtract and weight landscapes (trained, double well, ring, mixture,
  half-planes) and sample the product of experts.

Per-session state lives here (``LandscapeManager``), keyed by the same session id as the rest of
the app (``ui.sessions``). Endpoints (``api_name``): ``/landscape_train_start``,
``/landscape_status``, ``/landscape_pause``, ``/landscape_step``, ``/landscape_reset``,
``/landscape_sample``, ``/landscape_compose``, ``/landscape_gif``.
"""

from __future__ import annotations

import copy
import dataclasses
import html
import logging
import math
import secrets
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image

import ebm_play
from ebm_play import EBMError
from ebm_play import landscapes as L
from ebm_play.runtime import background_priority, job_threads, make_generator
from ebm_play.samplers import SAMPLERS

from . import landscape_view as V
from .common import number, thin, user_errors, whole
from .sessions import Registry, check_session

log = logging.getLogger("ebm_play.app")

DATASET_CHOICES = [("Two moons", "two_moons"), ("Concentric rings", "rings"), ("Mixture of 8 Gaussians", "gaussians8"),
                   ("Checkerboard", "checkerboard"), ("Spiral", "spiral"), ("My points (click the canvas)", "custom")]
DATASET_NAMES = dict((v, k) for k, v in DATASET_CHOICES)
LANDSCAPE_CHOICES = [("Trained in this session", "trained"), ("Double well", "double_well"), ("Ring", "ring"),
                     ("Mixture of 8 Gaussians", "gmm"), ("Half-plane y > 0", "half_plane_up"),
                     ("Half-plane x > 0", "half_plane_right"), ("Composed (see Compose)", "composed")]
LANDSCAPE_NAMES = dict((v, k) for k, v in LANDSCAPE_CHOICES)
TERM_CHOICES = [("(none)", "none")] + [c for c in LANDSCAPE_CHOICES if c[1] != "composed"]
SAMPLER_CHOICES = [("Langevin, reference form (noise σ)", "langevin"), ("Langevin, textbook (ULA, temperature)", "ula"),
                   ("MALA", "mala"), ("HMC", "hmc"), ("Annealed MALA", "annealed")]
SAMPLER_NAMES = dict((v, k) for k, v in SAMPLER_CHOICES)
SHOW_CHOICES = [("Contours", "contours"), ("Data", "data"), ("Replay buffer", "buffer"),
                ("Fresh chains from noise", "fresh"), ("Force arrows", "arrows")]
SHOW_DEFAULT = [v for _, v in SHOW_CHOICES]
CURVES = {"e_real": "E(data)", "e_fake": "E(negatives)", "loss": "loss"}
CURVE_COLORS = {"E(data)": (37, 99, 235), "E(negatives)": (249, 115, 22), "loss": (100, 116, 139)}

# 2-D training defaults (ebm_play.landscapes.train_config): two moons fits in ~10 s on one thread.
TRAIN_DEFAULTS = dict(dataset="two_moons", lr=5e-3, sampler_steps=20, step_size=0.002, noise=round(math.sqrt(0.004), 4),
                      alpha=0.1, reinit=0.05, hidden=64, batch_size=256, seed=0)
# Sampler settings that suit the square at temperature 1 (the trained landscapes are fitted at T = 1).
SAMPLER_DEFAULTS = {
    "langevin": dict(step_size=0.002, noise=round(math.sqrt(0.004), 4), temperature=None),
    "ula": dict(step_size=0.002, noise=None, temperature=1.0),
    "mala": dict(step_size=0.005, noise=None, temperature=1.0),
    "hmc": dict(step_size=0.03, noise=None, temperature=1.0),
    "annealed": dict(step_size=0.005, noise=None, temperature=1.0),
}
N_POINTS = 2000  # points per built-in data set
MAX_CUSTOM = 5000  # clicked points per session
MAX_CHAINS = 1000
MAX_SAMPLE_STEPS = 5000
PUBLISH_EVERY_S = 0.15  # the worker refreshes the grids at most this often (≈ what a page can show)
FRESH_EVERY_S = 1.5  # ... and the fresh chains from noise at most this often
FRESH_CHAINS, FRESH_STEPS = 150, 120
SNAPSHOT_EVERY_S = 0.5  # training GIF frames
MAX_SNAPSHOTS = 120
POLL_S = 0.1  # the page's fast timer while training
TEXT_EVERY_S = 1.0  # ... which refreshes the status text and the chart only this often
FRAME_EVERY_S = 0.15  # sampling frames
IDLE_PAUSE_S = 120.0  # a run nobody looks at pauses itself (it would keep a core busy)
MAX_STATES = 500
GRID_RES, FORCE_RES = 80, 40
N_SHOW_DATA, N_SHOW_BUFFER = 800, 400
GIF_SIZE = 300
LEAPFROG = 10
YIELD_S = 0.002  # the worker pauses this long after each step (see _loop)
GRAD_CLAMP = 50.0  # the reference-form Langevin's gradient clamp, as in training (never binds in practice)


# --- hand-made landscapes ---------------------------------------------------------------------------
def hand_made(name: str) -> ebm_play.EnergyModel:
    if name == "half_plane_up":
        return L.hand_made("half_plane", angle=90.0)
    if name == "half_plane_right":
        return L.hand_made("half_plane", angle=0.0)
    return L.hand_made(name)


# --- one training run -------------------------------------------------------------------------------
@dataclass
class View:
    """What the worker last published: grids and particles as numpy arrays, never live tensors."""

    step: int = 0
    xs: np.ndarray | None = None
    ys: np.ndarray | None = None
    E: np.ndarray | None = None
    arrows: dict | None = None
    buffer: np.ndarray | None = None
    fresh: np.ndarray | None = None
    data: np.ndarray | None = None
    fit: dict = field(default_factory=dict)


class LandscapeRun:
    """A 2-D training run. States: paused, running, stopped (reset), failed. The worker thread exists
    only while running; single steps run in the request thread while paused. Every touch of the
    trainer happens with ``cond`` held."""

    def __init__(self, trainer: ebm_play.Trainer, dataset: str, labels: torch.Tensor, key: tuple):
        self.trainer, self.dataset, self.labels, self.key = trainer, dataset, labels, key
        self.id = secrets.token_hex(4)
        self.cond = threading.Condition()
        self.state = "paused"
        self.state_t = time.monotonic()  # when the state last changed
        self.error: str | None = None
        self.history: list[dict] = []
        self.log: list[str] = []
        self.view = View()
        self.version = 0
        self.publish_times: list[float] = []
        self.snapshots: list[tuple[int, np.ndarray, np.ndarray]] = []
        self._snapshot_every = SNAPSHOT_EVERY_S
        self._last_publish = self._last_fresh = self._last_snapshot = 0.0
        self._fresh: np.ndarray | None = None
        self._thread: threading.Thread | None = None
        self.seen = time.monotonic()
        self.rendered: tuple | None = None  # (key, picture): one render per published version
        self._show_idx = torch.randperm(len(trainer.data), generator=torch.Generator().manual_seed(0))[:N_SHOW_DATA]
        c = trainer.config
        self.say(f"new run: MLP energy (hidden {c.hidden}) on {len(trainer.data)} points of "
                 f"{DATASET_NAMES.get(dataset, dataset)}")
        with job_threads(1):
            self._publish(force_fresh=True)

    # --- control (request threads) -------------------------------------------------------------------
    def play(self) -> None:
        with self.cond:
            if self.state not in ("paused", "running"):
                raise EBMError(f"the run is {self.state}: reset to start a new one")
            if self.state == "paused":
                self.say(f"playing from step {self.trainer.state.step}")
                self.state_t = time.monotonic()
            self.state = "running"
            self.seen = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"ebm-landscape-{self.id}", daemon=True)
                self._thread.start()

    def pause(self, why: str = "") -> None:
        with self.cond:
            if self.state != "running":
                raise EBMError(f"the run is {self.state}, not running: nothing to pause")
            self.state, self.state_t = "paused", time.monotonic()
            self.say(f"paused at step {self.trainer.state.step}" + (f" ({why})" if why else ""))
            with job_threads(1):
                self._publish(force_fresh=True)

    def stop(self) -> None:
        with self.cond:
            self.state, self.state_t = "stopped", time.monotonic()
            self.cond.notify_all()

    def step_once(self, n: int = 1) -> dict:
        with self.cond:
            if self.state != "paused":
                raise EBMError(f"the run is {self.state}: pause it to take single steps")
            with job_threads(1):
                for _ in range(n):
                    m = self._step()
                self._publish(force_fresh=True)
            return m

    def apply(self, config: ebm_play.TrainConfig) -> list[str]:
        """Take new settings (learning rate, Langevin steps, step size, noise, α, re-init, batch) on
        the fly; returns what changed."""
        with self.cond:
            tr = self.trainer
            old = tr.config
            changed = [f"{k} {getattr(old, k):g} → {getattr(config, k):g}" for k in
                       ("lr", "sampler_steps", "step_size", "noise", "alpha", "reinit", "batch_size")
                       if getattr(old, k) != getattr(config, k)]
            if changed:
                tr.update_config(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})
                self.say("settings: " + ", ".join(changed))
            return changed

    def add_points(self, pts: torch.Tensor) -> None:
        with self.cond:
            tr = self.trainer
            tr.set_data(torch.cat([tr.data, pts.to(tr.data.device)]))
            self.labels = torch.zeros(len(tr.data), dtype=torch.long)
            self._show_idx = torch.randperm(len(tr.data), generator=torch.Generator().manual_seed(0))[:N_SHOW_DATA]
            self.view = View(**{**self.view.__dict__, "data": tr.data[self._show_idx].cpu().numpy()})
            self.version += 1

    # --- the worker ------------------------------------------------------------------------------------
    def _loop(self) -> None:
        background_priority()  # requests first: this thread gets a core only when they leave one idle
        try:
            with job_threads(1):
                while True:
                    with self.cond:
                        if self.state != "running":
                            self._thread = None
                            return
                        if time.monotonic() - self.seen > IDLE_PAUSE_S:
                            self.state, self.state_t = "paused", time.monotonic()
                            self.say(f"paused at step {self.trainer.state.step}: nobody watched for "
                                     f"{IDLE_PAUSE_S:.0f} s")
                            self._thread = None
                            return
                        self._step()
                        if time.monotonic() - self._last_publish >= PUBLISH_EVERY_S:
                            self._publish()
                    time.sleep(YIELD_S)  # let control requests take the lock, and page requests the GIL
        except Exception as e:
            msg = str(e) if isinstance(e, EBMError) else f"{type(e).__name__}: {e}"
            log.exception("landscape run %s failed", self.id)
            with self.cond:
                self.state, self.error, self._thread, self.state_t = "failed", msg, None, time.monotonic()
                self.say(f"failed at step {self.trainer.state.step}: {msg}")

    def _step(self) -> dict:
        m = self.trainer.step()
        self.history.append(m)
        del self.history[:-5000]
        if m.get("rolled_back"):
            self.say(m.get("event") or f"diverged at step {m['step']}: rolled back")
        return m

    def _publish(self, force_fresh: bool = False) -> None:
        """Grids and particles for the page (``cond`` held, or from the constructor)."""
        tr = self.trainer
        started = time.monotonic()
        model = tr.model
        model.eval()
        try:
            xs, ys, E = L.energy_grid(model, GRID_RES)
            data = tr.data[self._show_idx]
            negatives = tr.buffer.x[torch.randint(len(tr.buffer.x), (256,), generator=torch.Generator().manual_seed(
                tr.state.step))]
            fx, fy, fE, dE = L.cd_force_grid(model, data[:256], negatives, tr.config.alpha, FORCE_RES)
            now = time.monotonic()
            if force_fresh or self._fresh is None or now - self._last_fresh >= FRESH_EVERY_S:
                self._fresh = tr.fresh_samples(FRESH_CHAINS, FRESH_STEPS, seed=tr.state.step).cpu().numpy()
                self._last_fresh = now
        finally:
            model.train()
        buf = tr.buffer.x[:N_SHOW_BUFFER].cpu().numpy()
        fit = L.fit_quality(tr.buffer.x[:1000], data)
        self.view = View(tr.state.step, xs, ys, E, V.force_arrows(fx, fy, dE, E=fE), buf, self._fresh,
                         data.cpu().numpy(), fit)
        self.version += 1
        now = time.monotonic()
        self._last_publish = started  # a steady rhythm: the next one is due PUBLISH_EVERY_S after this began
        self.publish_times.append(now)
        del self.publish_times[:-50]
        if now - self._last_snapshot >= self._snapshot_every or force_fresh:
            self._last_snapshot = now
            self.snapshots.append((tr.state.step, E.astype(np.float16), buf[:300].copy()))
            if len(self.snapshots) > MAX_SNAPSHOTS:  # keep the whole run: every other frame, half as often
                self.snapshots = self.snapshots[::2]
                self._snapshot_every *= 2

    # --- reading (any thread) -------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        self.log.append(f"[{time.strftime('%H:%M:%S')}] {msg}")
        del self.log[:-200]

    @property
    def live(self) -> bool:
        return self.state in ("running", "paused")

    def updates_per_s(self) -> float:
        t = [x for x in self.publish_times if x > time.monotonic() - 3]
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 2 and t[-1] > t[0] else 0.0

    def model_copy(self) -> ebm_play.EnergyModel:
        """A private CPU copy of the current weights (sampling in the plane is cheap on a CPU)."""
        with self.cond:
            return copy.deepcopy(self.trainer.model).cpu().eval()

    def status(self) -> dict:
        hist = self.history
        last = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in hist[-1].items()} if hist else None
        recent = hist[-30:]  # real throughput (publishing and pauses included), not 1 / step time
        dt = recent[-1]["elapsed"] - recent[0]["elapsed"] if len(recent) > 1 else 0.0
        speed = (recent[-1]["step"] - recent[0]["step"]) / dt if dt > 0 and self.state == "running" else 0.0
        c = self.trainer.config
        return {"run": self.id, "state": self.state, "step": self.trainer.state.step, "steps_per_s": round(speed, 1),
                "updates_per_s": round(self.updates_per_s(), 2), "view_version": self.version,
                "dataset": self.dataset, "points": len(self.trainer.data), "last": last,
                "fit": {k: round(v, 4) for k, v in self.view.fit.items()},
                "rollbacks": [e.message for e in self.trainer.state.events][-10:], "error": self.error,
                "config": {k: v for k, v in asdict(c).items() if k in (
                    "hidden", "batch_size", "sampler_steps", "step_size", "noise", "grad_clamp", "alpha", "lr",
                    "buffer_size", "reinit", "seed")},
                "log": self.log[-5:]}


# --- per-session state -------------------------------------------------------------------------------
@dataclass
class LState:
    id: str
    run: LandscapeRun | None = None
    custom: list[list[float]] = field(default_factory=list)
    composed: ebm_play.ComposedEnergy | None = None
    composed_label: str = ""
    sampling: dict | None = None  # the last sampling run, for its GIF
    seen: float = field(default_factory=time.monotonic)


class LandscapeManager:
    """All sessions' landscape state, and the cap on landscape runs training at once."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.max_running = max(1, registry.max_runs)
        self._states: dict[str, LState] = {}
        self._lock = threading.Lock()

    def state(self, sid) -> LState:
        sid = check_session(sid)
        with self._lock:
            st = self._states.get(sid)
            if st is None:
                if len(self._states) >= MAX_STATES:
                    idle = sorted((s for s in self._states.values() if not (s.run and s.run.state == "running")),
                                  key=lambda s: s.seen)
                    for s in idle[: len(self._states) - MAX_STATES + 1]:
                        if s.run is not None:
                            s.run.stop()
                        del self._states[s.id]
                st = self._states[sid] = LState(sid)
            st.seen = time.monotonic()
            return st

    def peek(self, sid) -> LState | None:
        return self._states.get(sid) if isinstance(sid, str) else None

    def running(self) -> int:
        with self._lock:
            return sum(1 for s in self._states.values() if s.run is not None and s.run.state == "running")

    def stop_all(self) -> None:
        with self._lock:
            runs = [s.run for s in self._states.values() if s.run is not None]
        for r in runs:
            r.stop()


MANAGERS: weakref.WeakSet = weakref.WeakSet()  # every tab's manager, so a host or a test can stop all runs


# --- validation --------------------------------------------------------------------------------------
def make_config(lr, sampler_steps, step_size, noise, alpha, reinit, hidden, batch_size, seed) -> ebm_play.TrainConfig:
    return L.train_config(
        lr=number("learning rate", lr, 1e-6, 0.1), sampler_steps=whole("Langevin steps", sampler_steps, 0, 200),
        step_size=number("step size", step_size, 1e-6, 0.1), noise=number("noise", noise, 0, 1),
        alpha=number("alpha", alpha, 0, 10), reinit=number("re-init probability", reinit, 0, 1),
        hidden=whole("hidden units", hidden, 4, 256), batch_size=whole("batch size", batch_size, 8, 1024),
        seed=whole("seed", seed, 0, 2**31 - 1))


def _check_dataset(dataset) -> str:
    if dataset not in DATASET_NAMES:
        raise EBMError(f"unknown data set {dataset!r}; choose one of: {', '.join(DATASET_NAMES)}")
    return dataset


def _check_sampler(name, side: str) -> str:
    if name not in SAMPLER_NAMES:
        raise EBMError(f"unknown sampler {name!r} for {side}; choose one of: {', '.join(SAMPLER_NAMES)}")
    return name


def sampler_options(name: str, step_size, noise, temperature, t_start, side: str) -> dict:
    """UI values → options for ``SAMPLERS[name]`` on the square (None: the 2-D default)."""
    d = SAMPLER_DEFAULTS[name]
    step = number(f"{side} step size", d["step_size"] if step_size is None else step_size, 1e-7, 1.0)
    opts: dict = {"step_size": step, "bounds": L.BOUNDS}
    if name == "langevin":
        opts["noise"] = number(f"{side} noise", d["noise"] if noise is None else noise, 0, 1)
        opts["grad_clamp"] = GRAD_CLAMP
        return opts
    t = number(f"{side} temperature", 1.0 if temperature is None else temperature, 1e-4, 1e4)
    if name == "annealed":
        opts.update(base="mala", t_end=t, t_start=number("annealing start temperature",
                                                          20.0 if t_start is None else t_start, 1e-4, 1e5))
    else:
        opts["temperature"] = t
        if name == "hmc":
            opts["leapfrog"] = LEAPFROG
    return opts


def _describe(name: str, opts: dict) -> str:
    bits = [f"step {opts['step_size']:g}"]
    if "noise" in opts:
        bits.append(f"σ {opts['noise']:g}")
    if "temperature" in opts:
        bits.append(f"T {opts['temperature']:g}")
    if "t_start" in opts:
        bits.append(f"T {opts['t_start']:g}→{opts['t_end']:g}")
    if "leapfrog" in opts:
        bits.append(f"{opts['leapfrog']} leapfrog")
    return f"{name} ({', '.join(bits)})"


# --- the tab -----------------------------------------------------------------------------------------
def create_tab(registry: Registry, session: gr.BrowserState) -> dict:
    """Build the Landscape tab inside the current ``gr.Blocks``; returns what the app may wire to."""
    mgr = LandscapeManager(registry)
    MANAGERS.add(mgr)
    empty_bg = V.compose_frame(Image.new("RGB", (V.SIZE, V.SIZE), (30, 27, 75)))
    datasets: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def dataset_points(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in datasets:
            datasets[name] = L.make_dataset(name, N_POINTS, seed=0)
        return datasets[name]

    gr.Markdown("A 2-D energy landscape shows *why* an EBM produces what it does: the heat map is the energy "
                "E(x) over the square (dark valleys = low energy = data-like), the white dots are the data, "
                "orange dots the replay buffer (the negatives), pink crosses fresh chains from noise. Arrows show "
                "the two forces of the loss as the change one training step makes to the landscape: "
                "<span style='color:#0891b2'>**cyan**</span> where energy is pulled down (at the data), "
                "<span style='color:#dc2626'>**red**</span> where it is pushed up (at the negatives), pointing "
                "down the slope of that change.")
    # --- train ----------------------------------------------------------------------------------------
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            gr.Markdown("### Train a 2-D energy")
            dataset = gr.Dropdown(DATASET_CHOICES, value="two_moons", label="Data set",
                                  info="or click on the canvas to add your own points", elem_id="landscape-dataset")
            with gr.Row():
                brush = gr.Slider(1, 50, 10, step=1, label="Points per click", min_width=120)
                clear_btn = gr.Button("Clear my points", size="sm", min_width=100)
            with gr.Row():
                lr = gr.Number(TRAIN_DEFAULTS["lr"], label="Learning rate", min_width=100)
                sampler_steps = gr.Number(TRAIN_DEFAULTS["sampler_steps"], precision=0, label="Langevin steps",
                                          min_width=100)
            with gr.Row():
                step_size = gr.Number(TRAIN_DEFAULTS["step_size"], label="Step size", min_width=100)
                noise = gr.Number(TRAIN_DEFAULTS["noise"], label="Noise σ", min_width=100,
                                  info="√(2·step) = temperature 1")
            with gr.Row():
                alpha = gr.Number(TRAIN_DEFAULTS["alpha"], label="α (energy penalty)", min_width=100)
                reinit = gr.Slider(0, 1, TRAIN_DEFAULTS["reinit"], step=0.01, label="Buffer re-init probability",
                                   min_width=100)
            with gr.Accordion("Model and batch (a change starts a new run)", open=False):
                with gr.Row():
                    hidden = gr.Number(TRAIN_DEFAULTS["hidden"], precision=0, label="Hidden units", min_width=90)
                    batch_size = gr.Number(TRAIN_DEFAULTS["batch_size"], precision=0, label="Batch", min_width=90)
                    seed = gr.Number(TRAIN_DEFAULTS["seed"], precision=0, label="Seed", min_width=90)
            show = gr.CheckboxGroup(SHOW_CHOICES, value=SHOW_DEFAULT, label="Show")
        with gr.Column(scale=2):
            with gr.Row():
                play_btn = gr.Button("▶ Play", variant="primary", elem_id="landscape-play")
                pause_btn = gr.Button("❚❚ Pause", elem_id="landscape-pause")
                step_btn = gr.Button("Step", elem_id="landscape-step")
                reset_btn = gr.Button("↺ Reset", variant="stop", elem_id="landscape-reset")
            with gr.Row():
                canvas = gr.Image(empty_bg, label="Energy landscape (click to add points)", type="pil", format="jpeg",
                                  height=V.SIZE, width=V.SIZE, interactive=False, show_label=False,
                                  elem_id="landscape-canvas", scale=3, buttons=["download", "fullscreen"])
                with gr.Column(scale=2, min_width=260):
                    status_md = gr.Markdown("**No run yet.** Pick a data set and press **Play**.",
                                            elem_classes="ebm-status", elem_id="landscape-status")
                    curve = gr.Image(None, label="Energies and loss", show_label=False, type="pil", format="png",
                                     height=200, interactive=False, elem_id="landscape-curve", buttons=["download"])
                    log_box = gr.Textbox(label="Log", lines=4, max_lines=6, interactive=False, autoscroll=True)
    fast = gr.Timer(POLL_S, active=False)
    watch = gr.Timer(1.0)
    fast_on = gr.State(False)
    seen = gr.State({})

    # --- sample ---------------------------------------------------------------------------------------
    gr.Markdown("### Sample on a landscape: two samplers side by side\nSame landscape, same start, same seed. "
                "Mode shares and hops count particles near each mode (data clusters, wells, mixture means); "
                "the GIF button below exports the last run.")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            landscape = gr.Dropdown(LANDSCAPE_CHOICES, value="double_well", label="Landscape",
                                    elem_id="landscape-sample-on")
            start = gr.Radio([("Uniform over the square", "uniform"), ("All in the first mode", "first_mode")],
                             value="first_mode", label="Start")
            with gr.Row():
                chains = gr.Number(300, precision=0, label="Chains", min_width=90)
                steps = gr.Number(600, precision=0, label="Steps", min_width=90)
                sample_seed = gr.Number(0, precision=0, label="Seed", min_width=90)
            t_start = gr.Number(20.0, label="Annealing: start temperature", info="annealed MALA cools to T")
            with gr.Row():
                with gr.Column(min_width=140):
                    sampler_a = gr.Dropdown(SAMPLER_CHOICES, value="mala", label="Sampler A")
                    step_a = gr.Number(0.005, label="A: step size")
                    noise_a = gr.Number(None, label="A: noise σ (Langevin)", interactive=False)
                    temp_a = gr.Number(1.0, label="A: temperature T")
                with gr.Column(min_width=140):
                    sampler_b = gr.Dropdown(SAMPLER_CHOICES + [("(none: A only)", "none")], value="annealed",
                                            label="Sampler B")
                    step_b = gr.Number(0.005, label="B: step size")
                    noise_b = gr.Number(None, label="B: noise σ (Langevin)", interactive=False)
                    temp_b = gr.Number(1.0, label="B: temperature T")
            gr.Markdown("**Presets** (what goes wrong, and what helps):")
            with gr.Row():
                demo_anneal = gr.Button("No annealing: stuck chains", size="sm")
                demo_step = gr.Button("Too large a step", size="sm")
                demo_noise = gr.Button("Too little noise: collapse", size="sm")
                demo_hmc = gr.Button("MALA vs HMC", size="sm")
            sample_btn = gr.Button("Sample", variant="primary", elem_id="landscape-sample")
        with gr.Column(scale=2):
            with gr.Row():
                img_a = gr.Image(label="Sampler A", type="pil", format="jpeg", height=400, interactive=False,
                                 elem_id="landscape-a")
                img_b = gr.Image(label="Sampler B", type="pil", format="jpeg", height=400, interactive=False,
                                 elem_id="landscape-b")
            stats_df = gr.Dataframe(label="Statistics", interactive=False, wrap=True, elem_id="landscape-stats")
            with gr.Accordion("Result as JSON (what /landscape_sample returns last)", open=False):
                sample_json = gr.JSON(label="result")

    # --- compose --------------------------------------------------------------------------------------
    gr.Markdown("### Compose landscapes: a product of experts\nE = Σ wᵢ Eᵢ: adding energies multiplies "
                "densities (both must agree), a negative weight carves a landscape out. The composed landscape "
                "can then be sampled above (*Composed*).")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            terms = []
            for i, (v, w) in enumerate((("ring", 1.0), ("half_plane_up", 1.0), ("none", 1.0))):
                with gr.Row():
                    terms.append(gr.Dropdown(TERM_CHOICES, value=v, label=f"Term {i + 1}", min_width=160, scale=2))
                    terms.append(gr.Number(w, label="weight", min_width=80, scale=1))
            compose_btn = gr.Button("Compose and sample", variant="primary", elem_id="landscape-compose")
        with gr.Column(scale=2):
            compose_img = gr.Image(label="Terms and their sum (particles: annealed MALA on the sum)", type="pil",
                                   format="jpeg", interactive=False, elem_id="landscape-composed")
            with gr.Accordion("Composition as JSON (what /landscape_compose returns)", open=False):
                compose_json = gr.JSON(label="composition")
    with gr.Row():
        gif_what = gr.Radio([("Training", "training"), ("Last sampling run", "sampling")], value="training",
                            label="Export an animation (GIF)")
        gif_btn = gr.Button("Export GIF", elem_id="landscape-gif-btn")
        gif_file = gr.File(label="GIF", interactive=False, elem_id="landscape-gif")

    # =====================================================================================================
    # training actions
    def _key(dataset, cfg, pts_hash) -> tuple:
        return (dataset, cfg.hidden, cfg.seed, pts_hash)

    def _ensure_run(session, dataset, lr, sampler_steps, step_size, noise, alpha, reinit, hidden, batch_size,
                    seed, points) -> tuple[LState, LandscapeRun]:
        """The session's run, made to match these settings: the same run with new live settings when
        only those changed, else a new (paused) run."""
        st = mgr.state(session)
        dataset = _check_dataset(dataset)
        cfg = make_config(lr, sampler_steps, step_size, noise, alpha, reinit, hidden, batch_size, seed)
        if dataset == "custom":
            if points is not None:
                pts = L.check_points(points, "points", MAX_CUSTOM)
                st.custom = pts.tolist()
            if not st.custom:
                raise EBMError("no points yet: click on the canvas to add some (API: pass points=[[x, y], …])")
            pts = torch.tensor(st.custom, dtype=torch.float32)
            key = _key(dataset, cfg, "custom")
        else:
            pts = None
            key = _key(dataset, cfg, None)
        run = st.run
        same_points = dataset != "custom" or (run is not None and run.trainer.data.shape == pts.shape
                                              and torch.equal(run.trainer.data.cpu(), pts))
        if run is not None and run.live and run.key == key and same_points:
            run.apply(cfg)
            return st, run
        if run is not None:
            run.stop()
        if dataset == "custom":
            data, labels = pts, torch.zeros(len(pts), dtype=torch.long)
        else:
            data, labels = dataset_points(dataset)
        with job_threads(1), torch.random.fork_rng(devices=[]):
            trainer = ebm_play.Trainer(cfg, data.clone(), None, device=registry.device)
        st.run = LandscapeRun(trainer, dataset, labels, key)
        if run is not None:
            st.run.log[:0] = run.log[-20:]
        return st, st.run

    def full_status(sid) -> dict:
        st = mgr.state(sid)
        if st.run is None:
            return {"state": "none", "step": 0, "custom_points": len(st.custom)}
        return {**st.run.status(), "custom_points": len(st.custom)}

    @user_errors
    def landscape_train_start(session: str, dataset: str = "two_moons", lr: float = 5e-3, sampler_steps: int = 20,
                              step_size: float = 0.002, noise: float = 0.0632, alpha: float = 0.1,
                              reinit: float = 0.05, hidden: int = 64, batch_size: int = 256, seed: int = 0,
                              points: list | None = None) -> dict:
        """Play: train a 2-D MLP energy on a data set (two_moons, rings, gaussians8, checkerboard,
        spiral, or custom with points=[[x, y], …] in [-1, 1]²) in the background. A paused run with
        the same data set, hidden size and seed resumes with the new settings; otherwise a new run starts."""
        _, run = _ensure_run(session, dataset, lr, sampler_steps, step_size, noise, alpha, reinit, hidden,
                             batch_size, seed, points)
        if run.state != "running" and mgr.running() >= mgr.max_running:
            raise EBMError(f"the server is busy: {mgr.max_running} landscape runs are training; pause yours or "
                           "try again shortly")
        run.play()
        return full_status(session)

    @user_errors
    def landscape_status(session: str) -> dict:
        """The session's landscape run: state, step, speed, last metrics, fit of the buffer to the data."""
        st = mgr.state(session)
        if st.run is not None:
            st.run.seen = time.monotonic()
        return full_status(session)

    @user_errors
    def landscape_pause(session: str) -> dict:
        """Pause the session's landscape run after the step in progress."""
        run = mgr.state(session).run
        if run is None:
            raise EBMError("no landscape run in this session: press Play first")
        run.pause()
        return full_status(session)

    @user_errors
    def landscape_step(session: str, dataset: str = "two_moons", lr: float = 5e-3, sampler_steps: int = 20,
                       step_size: float = 0.002, noise: float = 0.0632, alpha: float = 0.1, reinit: float = 0.05,
                       hidden: int = 64, batch_size: int = 256, seed: int = 0, points: list | None = None,
                       steps: int = 1) -> dict:
        """Single step: ``steps`` training steps (1 to 100) on a paused run (a new paused run if needed)."""
        n = whole("steps", steps, 1, 100)
        _, run = _ensure_run(session, dataset, lr, sampler_steps, step_size, noise, alpha, reinit, hidden,
                             batch_size, seed, points)
        run.step_once(n)
        return full_status(session)

    @user_errors
    def landscape_reset(session: str, clear_points: bool = False) -> dict:
        """Reset: discard the session's landscape run (and, with clear_points, the clicked points)."""
        st = mgr.state(session)
        if st.run is not None:
            st.run.stop()
            st.run = None
        if clear_points:
            st.custom = []
        return full_status(session)

    quick = dict(concurrency_limit=None, queue=True)
    gr.api(landscape_train_start, api_name="landscape_train_start", **quick)
    gr.api(landscape_status, api_name="landscape_status", **quick)
    gr.api(landscape_pause, api_name="landscape_pause", **quick)
    gr.api(landscape_step, api_name="landscape_step", **quick)
    gr.api(landscape_reset, api_name="landscape_reset", **quick)

    # --- rendering --------------------------------------------------------------------------------------
    def render_run(run: LandscapeRun, show) -> Image.Image:
        show = tuple(sorted(show or ()))
        key = (run.version, show)
        cached = run.rendered
        if cached is not None and cached[0] == key:
            return cached[1]
        v = run.view
        bg = V.background(v.xs, v.ys, v.E, contours=12 if "contours" in show else 0)
        text = f"step {v.step}" + ("" if run.state == "running" else f" · {run.state}")
        img = V.compose_frame(bg, data=v.data if "data" in show else None,
                              buffer=v.buffer if "buffer" in show else None,
                              fresh=v.fresh if "fresh" in show else None,
                              arrows=v.arrows if "arrows" in show else None, text=text)
        run.rendered = (key, img)
        return img

    def preview(st: LState | None, dataset: str) -> Image.Image:
        """The canvas without a run: the chosen data set (or the clicked points) on a blank square."""
        if dataset == "custom":
            pts = np.asarray(st.custom, dtype=np.float32) if st is not None and st.custom else None
            text = f"{0 if pts is None else len(pts)} points: click to add"
        else:
            pts = dataset_points(dataset)[0].numpy()[:N_SHOW_DATA] if dataset in DATASET_NAMES else None
            text = f"{DATASET_NAMES.get(dataset, dataset)}: press Play"
        return V.compose_frame(empty_bg, data=pts, text=text)

    def status_markdown(run: LandscapeRun | None, st: LState | None) -> str:
        if run is None:
            n = len(st.custom) if st is not None else 0
            return ("**No run yet.** Pick a data set (or click points onto the canvas) and press **Play**."
                    + (f"  \n{n} points of your own." if n else ""))
        s = run.status()
        head = f'<span class="ebm-dot ebm-{run.state}">●</span> **{run.state.capitalize()}**'
        parts = [head, f"step {s['step']:,}"]
        if run.state == "running":
            parts.append(f"{s['steps_per_s']:.0f} steps/s · view {s['updates_per_s']:.1f} updates/s")
        lines = [" · ".join(parts)]
        if s["last"]:
            m = s["last"]
            lines.append(f"loss {m['loss']:+.3f} · E(data) {m['e_real']:+.2f} · E(negatives) {m['e_fake']:+.2f}")
        if s["fit"]:
            lines.append(f"{s['fit']['precision']:.0%} of buffer particles on the data · "
                         f"{s['fit']['coverage']:.0%} of the data covered (within 0.1)")
        lines.append(f"{DATASET_NAMES.get(run.dataset, run.dataset)}, {s['points']:,} points · "
                     f"MLP hidden {s['config']['hidden']}")
        if run.error:
            lines.append(f'<span class="ebm-error">Error: {html.escape(run.error)}</span>')
        return "  \n".join(lines)

    def curve_frame(run: LandscapeRun) -> Image.Image:
        hist = run.history[:]
        smooth = {k: pd.Series([r[k] for r in hist], dtype="float64").rolling(10, min_periods=1).mean().tolist()
                  for k in CURVES}  # mean of 10 steps: one CD step is noisy
        rows = thin([{"step": r["step"], **{k: smooth[k][i] for k in CURVES}} for i, r in enumerate(hist)], 300)
        x = np.array([r["step"] for r in rows])
        series = {label: (x, np.array([r[k] for r in rows])) for k, label in CURVES.items()}
        return V.line_chart(series, CURVE_COLORS, title="mean of 10 steps")

    # --- the live view ----------------------------------------------------------------------------------
    live_outputs = [canvas, status_md, curve, log_box, seen, fast, fast_on]

    def poll(sid, show, seen, dataset):
        """Send what changed since this page last looked; switch the fast timer off when idle."""
        out = [gr.skip()] * len(live_outputs)
        st = mgr.peek(sid)
        run = st.run if st is not None else None
        seen = dict(seen or {})
        if run is None:
            out[4:7] = [seen, gr.Timer(active=False), False]
            return out
        run.seen = time.monotonic()
        if seen.get("run") != run.id:
            seen = {"run": run.id}
        key = [run.version, sorted(show or ())]
        if key != seen.get("view"):
            seen["view"] = key
            out[0] = render_run(run, show)
        # Text and chart at most every TEXT_EVERY_S (and at once when the state changes): re-rendering
        # a Markdown block on every tick costs a busy browser more than the picture (measured: 2 instead
        # of 5.5 canvas updates/s on a loaded 2-core machine).
        now = time.monotonic()
        due = now - seen.get("text_t", 0) >= TEXT_EVERY_S or run.state != seen.get("state")
        if due:
            seen["text_t"], seen["state"] = now, run.state
            md = status_markdown(run, st)
            if md != seen.get("md"):
                out[1] = seen["md"] = md
            if len(run.history) != seen.get("n"):
                seen["n"] = len(run.history)
                out[2] = curve_frame(run)
        tail = (len(run.log), run.log[-1] if run.log else "")
        if list(tail) != seen.get("log"):
            seen["log"] = list(tail)
            out[3] = "\n".join(run.log[-30:])
        out[4] = seen
        if run.state != "running" and now - run.state_t > 0.5:  # after the final picture of a pause is in
            out[5:7] = [gr.Timer(active=False), False]
        return out

    def watcher(sid, on):
        """Every second: switch the fast timer on if this session trains (e.g. after a reload)."""
        st = mgr.peek(sid)
        if st is not None and st.run is not None and st.run.state == "running" and not on:
            return gr.Timer(active=True), True
        return gr.skip(), gr.skip()

    # queue=False: a plain request per tick, no queue round trip (measured: the queued version managed
    # only ~2 ticks/s in the full app under load, this one keeps up with the timer)
    fast.tick(poll, [session, show, seen, dataset], live_outputs, api_visibility="private", queue=False,
              show_progress="hidden")
    watch.tick(watcher, [session, fast_on], [fast, fast_on], api_visibility="private", concurrency_limit=None,
               show_progress="hidden", queue=False)

    settings = [dataset, lr, sampler_steps, step_size, noise, alpha, reinit, hidden, batch_size, seed]

    def now_view(sid, show, dataset):
        """Canvas, status and log for this moment (after a button)."""
        st = mgr.peek(sid)
        run = st.run if st is not None else None
        if run is None:
            return preview(st, dataset), status_markdown(None, st), gr.skip(), ""
        return render_run(run, show), status_markdown(run, st), curve_frame(run), "\n".join(run.log[-30:])

    ui_outputs = [canvas, status_md, curve, log_box]

    @user_errors
    def play_ui(sid, *args):
        *values, show = args
        landscape_train_start(sid, *values, None)
        return (*now_view(sid, show, values[0]), gr.Timer(active=True), True)

    @user_errors
    def pause_ui(sid, show, dataset):
        landscape_pause(sid)
        return now_view(sid, show, dataset)

    @user_errors
    def step_ui(sid, *args):
        *values, show = args
        landscape_step(sid, *values, None, 1)
        return now_view(sid, show, values[0])

    @user_errors
    def reset_ui(sid, show, dataset):
        landscape_reset(sid)
        return now_view(sid, show, dataset)

    ctl = dict(api_visibility="private", concurrency_limit=None, show_progress="hidden")
    play_btn.click(play_ui, [session, *settings, show], [*ui_outputs, fast, fast_on], **ctl)
    pause_btn.click(pause_ui, [session, show, dataset], ui_outputs, **ctl)
    step_btn.click(step_ui, [session, *settings, show], ui_outputs, **ctl)
    reset_btn.click(reset_ui, [session, show, dataset], ui_outputs, **ctl)

    def on_dataset(sid, name, show):
        st = mgr.peek(sid)
        if st is not None and st.run is not None and st.run.dataset == name:
            return render_run(st.run, show)
        if st is not None and st.run is not None and st.run.live:
            return gr.skip()  # keep showing the run; Play will switch data sets
        return preview(st, name)

    dataset.input(on_dataset, [session, dataset, show], canvas, **ctl)
    show.input(lambda sid, s, d: now_view(sid, s, d)[0], [session, show, dataset], canvas, **ctl)

    @user_errors
    def on_click(sid, name, n, show, evt: gr.SelectData):
        """A click on the canvas adds ``n`` points around it to the session's own data set."""
        st = mgr.state(sid)
        idx = evt.index if isinstance(evt.index, (list, tuple)) and len(evt.index) == 2 else None
        if idx is None:
            return gr.skip(), gr.skip(), gr.skip()
        x, y = V.pixel_to_point(float(idx[0]), float(idx[1]))
        n = whole("points per click", n, 1, 50)
        if len(st.custom) + n > MAX_CUSTOM:
            raise EBMError(f"at most {MAX_CUSTOM} points of your own: clear them to start over")
        g = torch.Generator().manual_seed(len(st.custom))
        pts = (torch.tensor([[x, y]]) + 0.03 * torch.randn(n, 2, generator=g) * (n > 1)).clamp(-0.98, 0.98)
        st.custom.extend(pts.tolist())
        run = st.run
        if run is not None and run.live and run.dataset == "custom":
            run.add_points(pts)
            if run.state != "running":
                return render_run(run, show), "custom", status_markdown(run, st)
            return gr.skip(), "custom", gr.skip()
        if run is not None and run.state == "running":
            return gr.skip(), "custom", gr.skip()  # the run on another set keeps going until Play
        return preview(st, "custom"), "custom", status_markdown(run, st)

    canvas.select(on_click, [session, dataset, brush, show], [canvas, dataset, status_md], **ctl)

    def clear_points(sid, name, show):
        st = mgr.state(sid)
        st.custom = []
        if st.run is not None and st.run.dataset == "custom":
            st.run.stop()
            st.run = None
        return now_view(sid, show, name)

    clear_btn.click(clear_points, [session, dataset, show], ui_outputs, **ctl)

    # =====================================================================================================
    # sampling
    def landscape_energy(st: LState, name: str) -> tuple[torch.nn.Module, L.Modes | None, str]:
        if name == "trained":
            if st.run is None:
                raise EBMError("no trained landscape in this session yet: train one above (Play)")
            run = st.run
            model = run.model_copy()
            data = run.trainer.data.cpu()
            if run.dataset == "custom":
                modes = L.Modes.from_data(data, None, radius=0.1)
            else:
                modes = L.modes_for(run.dataset, data=data, labels=run.labels)
            return model, modes, f"trained on {DATASET_NAMES.get(run.dataset, run.dataset)}, step {run.view.step}"
        if name == "composed":
            if st.composed is None:
                raise EBMError("no composed landscape yet: compose one below first")
            modes = None
            for e in st.composed.experts:
                if e.weight > 0 and hasattr(e.energy, "modes"):
                    modes = L.modes_for(getattr(e.energy, "kind", ""), e.energy)
                    break
            return st.composed, modes, f"composed: {st.composed_label}"
        if name not in LANDSCAPE_NAMES:
            raise EBMError(f"unknown landscape {name!r}; choose one of: {', '.join(LANDSCAPE_NAMES)}")
        e = hand_made(name)
        return e, L.modes_for(getattr(e, "kind", name), e), LANDSCAPE_NAMES[name]

    def first_mode_start(modes: L.Modes | None, n: int, g: torch.Generator) -> torch.Tensor:
        if modes is None:
            return torch.zeros(n, 2) + 0.02 * torch.randn(n, 2, generator=g)
        anchors = modes.anchors[modes.labels == 0]
        centre = anchors.mean(0, keepdim=True)
        spot = anchors[torch.cdist(centre, anchors).argmin()]  # a point of the mode itself (an arc's mean may miss it)
        return (spot + 0.02 * torch.randn(n, 2, generator=g)).clamp(-1, 1)

    def stats_row(label: str, name: str, opts: dict, acc: list, tracker, energy: torch.Tensor) -> dict:
        row = {"": label, "sampler": _describe(name, opts),
               "accept": f"{np.mean(acc):.0%}" if acc else "–",
               "mean E": f"{float(energy.mean()):.2f}"}
        if tracker is not None:
            s = tracker.summary()
            row["mode shares"] = " · ".join(f"{v:.0%}" for v in s["mode_share"])
            row["outside"] = f"{s['outside_share']:.0%}"
            row["chains that hopped"] = f"{s['chains_hopped']:.0%}"
            row["hops/chain"] = f"{s['hops_per_chain']:.2f}"
            row["first hop (mean step)"] = "–" if s["mean_first_hop"] is None else f"{s['mean_first_hop']:.0f}"
        return row

    @user_errors
    def landscape_sample(session=None, landscape="double_well", sampler_a="mala", step_a=None, noise_a=None,
                         temp_a=None, sampler_b="annealed", step_b=None, noise_b=None, temp_b=None, steps=600,
                         chains=300, seed=0, start="first_mode", t_start=20.0):
        """Run sampler A and B (B may be 'none') on the same landscape from the same start, streaming
        both; the last output holds acceptance rates, mode shares and mode-hopping statistics."""
        st = mgr.state(session)
        sampler_a = _check_sampler(sampler_a, "sampler A")
        use_b = sampler_b not in (None, "", "none")
        sampler_b = _check_sampler(sampler_b, "sampler B") if use_b else None
        steps = whole("steps", steps, 1, MAX_SAMPLE_STEPS)
        n = whole("chains", chains, 1, MAX_CHAINS)
        seed = whole("seed", 0 if seed is None else seed, 0, 2**31 - 1)
        if start not in ("uniform", "first_mode"):
            raise EBMError("start must be 'uniform' or 'first_mode'")
        opts_a = sampler_options(sampler_a, step_a, noise_a, temp_a, t_start, "A")
        opts_b = sampler_options(sampler_b, step_b, noise_b, temp_b, t_start, "B") if use_b else None
        energy, modes, label = landscape_energy(st, landscape)
        with job_threads(1):
            xs, ys, E = L.energy_grid(energy, GRID_RES)
        bg = V.background(xs, ys, E, size=400)
        gif_bg = V.background(xs, ys, E, size=GIF_SIZE)
        g0 = torch.Generator().manual_seed(seed)
        x0 = torch.rand(n, 2, generator=g0) * 2 - 1 if start == "uniform" else first_mode_start(modes, n, g0)
        sides = [("A", sampler_a, opts_a)] + ([("B", sampler_b, opts_b)] if use_b else [])
        gens, trackers, accepts, last = [], [], [], []
        for _, name, opts in sides:
            g = make_generator(seed + 1, torch.device("cpu"))
            gens.append(SAMPLERS[name](energy, x0.clone(), steps, generator=g, **opts))
            trackers.append(L.ModeTracker(modes, n) if modes is not None else None)
            accepts.append([])
            last.append(None)
        frames: list[tuple[int, list[np.ndarray]]] = []
        keep_every = max(1, steps // 60)
        shown = 0.0

        def pictures(k):
            out = []
            for (side, name, opts), rec in zip(sides, last):
                out.append(V.compose_frame(bg, particles=rec.x.numpy(), particle_color=side.lower(),
                                           text=f"{SAMPLER_NAMES[name].split(' (')[0]} · step {k}"))
            return out

        def table():
            rows = [stats_row(side, name, opts, acc, tr, rec.energy)
                    for (side, name, opts), acc, tr, rec in zip(sides, accepts, trackers, last)]
            return pd.DataFrame(rows)

        with job_threads(1):
            for k in range(steps + 1):
                for i, gen in enumerate(gens):
                    rec = next(gen)
                    if rec.accept is not None:
                        accepts[i].append(float(rec.accept.mean()))
                    if trackers[i] is not None:
                        trackers[i].update(rec.x, step=k)
                    last[i] = rec
                if k % keep_every == 0 or k == steps:
                    frames.append((k, [r.x.numpy().copy() for r in last]))
                if k < steps and time.monotonic() - shown >= FRAME_EVERY_S:
                    shown = time.monotonic()
                    pics = pictures(k)
                    yield pics[0], (pics[1] if use_b else None), table(), gr.skip()
        st.sampling = {"bg": gif_bg, "frames": frames, "sides": [s[0] for s in sides], "label": label}
        result = {"landscape": label, "steps": steps, "chains": n, "start": start,
                  "modes": None if modes is None else modes.k, "samplers": []}
        for (side, name, opts), acc, tr, rec in zip(sides, accepts, trackers, last):
            r = {"side": side, "sampler": name,
                 "options": {k: v for k, v in opts.items() if k not in ("bounds",)},
                 "accept_rate": round(float(np.mean(acc)), 4) if acc else None,
                 "mean_energy": round(float(rec.energy.mean()), 4)}
            if tr is not None:
                r.update(tr.summary())
            result["samplers"].append(r)
        pics = pictures(steps)
        yield pics[0], (pics[1] if use_b else None), table(), result

    sample_inputs = [session, landscape, sampler_a, step_a, noise_a, temp_a, sampler_b, step_b, noise_b, temp_b,
                     steps, chains, sample_seed, start, t_start]
    sample_btn.click(landscape_sample, sample_inputs, [img_a, img_b, stats_df, sample_json], api_name="landscape_sample",
                     concurrency_limit=2, concurrency_id="compute", show_progress="minimal", preprocess=False)

    def sampler_defaults(name):
        if name not in SAMPLER_DEFAULTS:  # B switched off
            return gr.Number(value=None), gr.Number(value=None, interactive=False), gr.Number(value=None,
                                                                                              interactive=False)
        d = SAMPLER_DEFAULTS[name]
        return (gr.Number(value=d["step_size"], interactive=True),
                gr.Number(value=d["noise"], interactive=d["noise"] is not None),
                gr.Number(value=d["temperature"], interactive=d["temperature"] is not None))

    sampler_a.input(sampler_defaults, sampler_a, [step_a, noise_a, temp_a], **ctl)
    sampler_b.input(sampler_defaults, sampler_b, [step_b, noise_b, temp_b], **ctl)

    preset_outputs = [landscape, start, steps, t_start, sampler_a, step_a, noise_a, temp_a, sampler_b, step_b,
                      noise_b, temp_b]

    def preset(land, start_, steps_, a, b, t0=20.0):
        return [land, start_, steps_, t0, a[0], a[1], gr.Number(value=a[2], interactive=a[2] is not None),
                gr.Number(value=a[3], interactive=a[3] is not None), b[0], b[1],
                gr.Number(value=b[2], interactive=b[2] is not None), gr.Number(value=b[3], interactive=b[3] is not None)]

    demo_anneal.click(lambda: preset("double_well", "first_mode", 600, ("mala", 0.005, None, 1.0),
                                     ("annealed", 0.005, None, 1.0)), None, preset_outputs, **ctl)
    demo_step.click(lambda: preset("gmm", "uniform", 400, ("mala", 0.005, None, 1.0), ("mala", 0.1, None, 1.0)),
                    None, preset_outputs, **ctl)
    demo_noise.click(lambda: preset("gmm", "uniform", 400, ("langevin", 0.002, 0.0632, None),
                                    ("langevin", 0.002, 0.002, None)), None, preset_outputs, **ctl)
    demo_hmc.click(lambda: preset("double_well", "first_mode", 300, ("mala", 0.005, None, 1.0),
                                  ("hmc", 0.03, None, 1.0)), None, preset_outputs, **ctl)

    # =====================================================================================================
    # composition
    @user_errors
    def landscape_compose(session=None, term1="ring", weight1=1.0, term2="half_plane_up", weight2=1.0, term3="none",
                          weight3=1.0):
        """Compose E = Σ wᵢ Eᵢ from up to three landscapes (trained, double_well, ring, gmm,
        half_plane_up, half_plane_right; 'none' to skip), keep it as this session's 'composed'
        landscape and sample it (annealed MALA); returns the picture and a summary."""
        st = mgr.state(session)
        chosen = []
        for i, (name, w) in enumerate(((term1, weight1), (term2, weight2), (term3, weight3)), 1):
            if name in (None, "", "none"):
                continue
            if name not in LANDSCAPE_NAMES or name == "composed":
                raise EBMError(f"unknown term {name!r}; choose one of: "
                               f"{', '.join(v for _, v in TERM_CHOICES)}")
            w = number(f"weight {i}", w, -10, 10)
            energy, _, label = landscape_energy(st, name)
            chosen.append((name, label, energy, w))
        if not chosen:
            raise EBMError("choose at least one term to compose")
        composed = ebm_play.compose(*[(e, w) for _, _, e, w in chosen], names=[n for n, _, _, _ in chosen])
        st.composed = composed
        st.composed_label = " ".join(f"{'+' if w >= 0 else '−'} {abs(w):g}×{LANDSCAPE_NAMES[n]}"
                                     for n, _, _, w in chosen).lstrip("+ ")
        panel = 300
        pics = []
        with job_threads(1):
            for name, label, e, w in chosen:
                xs, ys, E = L.energy_grid(e, GRID_RES)
                img = V.background(xs, ys, E, size=panel)
                V.label(img, f"{w:g} × {LANDSCAPE_NAMES[name]}")
                pics.append(img)
            xs, ys, E = L.energy_grid(composed, GRID_RES)
            g = make_generator(0, torch.device("cpu"))
            x0 = torch.rand(300, 2, generator=g) * 2 - 1
            res = ebm_play.samplers.run("annealed", composed, x0, 400, generator=g, base="mala", t_start=20.0,
                                        t_end=1.0, step_size=0.005, bounds=L.BOUNDS)
        total = V.compose_frame(V.background(xs, ys, E, size=panel), particles=res.x.numpy(), particle_color="a",
                                text="= sum (+ samples)")
        strip = pics[0]
        for p in [*pics[1:], total]:
            strip = V.side_by_side(strip, p)
        info = {"composed": st.composed_label, "terms": [{"landscape": n, "weight": w} for n, _, _, w in chosen],
                "energy_min": round(float(E.min()), 4), "sample_mean_energy": round(float(res.energy.mean()), 4),
                "accept_rate": None if res.accept_rate is None else round(res.accept_rate, 4)}
        return strip, info

    compose_btn.click(landscape_compose, [session, *terms], [compose_img, compose_json], api_name="landscape_compose",
                      concurrency_limit=2, concurrency_id="compute", preprocess=False)

    # =====================================================================================================
    # GIF export
    @user_errors
    def landscape_gif(session=None, what="training"):
        """An animated GIF of this session's training run ('training') or last sampling run ('sampling')."""
        st = mgr.state(session)
        folder = Path(registry.tmp) / st.id
        folder.mkdir(parents=True, exist_ok=True)
        frames: list[Image.Image] = []
        with job_threads(1):
            if what == "training":
                run = st.run
                if run is None or not run.snapshots:
                    raise EBMError("no training run to animate: press Play first")
                xs, ys = run.view.xs, run.view.ys
                data = run.view.data
                for step, E, buf in list(run.snapshots):
                    bg = V.background(xs, ys, E.astype(np.float32), size=GIF_SIZE, contours=8)
                    frames.append(V.compose_frame(bg, data=data, buffer=buf, text=f"step {step}"))
            elif what == "sampling":
                s = st.sampling
                if s is None:
                    raise EBMError("no sampling run to animate: press Sample first")
                for k, xs_ in s["frames"]:
                    pics = [V.compose_frame(s["bg"], particles=x, particle_color=side.lower(),
                                            text=f"{side} · step {k}") for side, x in zip(s["sides"], xs_)]
                    frames.append(pics[0] if len(pics) == 1 else V.side_by_side(*pics))
            else:
                raise EBMError("what must be 'training' or 'sampling'")
        for old in folder.glob("landscape-*.gif"):
            old.unlink(missing_ok=True)
        return V.save_gif(frames, folder / f"landscape-{what}-{secrets.token_hex(3)}.gif", fps=8)

    gif_btn.click(landscape_gif, [session, gif_what], gif_file, api_name="landscape_gif", concurrency_limit=2,
                  concurrency_id="compute", preprocess=False)

    return {"manager": mgr, "poll": poll, "canvas": canvas}
