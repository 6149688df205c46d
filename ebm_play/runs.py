"""Training runs that live in a background thread, for image models and 2-D landscapes alike.

Why a thread per run: a request must return at once, and a closed page must not stop or corrupt a
run. The worker thread owns the trainer; nothing else touches it. Everything a caller can do is a
flag the worker reads:

- **control never blocks**: pause, resume, single step and stop set a flag and return. The trainer
  checks the flags between sampler steps (``Trainer(interrupt=…)``), drops an update in progress
  and stops or pauses within one sampler step, however large the update;
- **readers never wait**: the worker publishes immutable snapshots (the view a page shows, the
  weights, the status) that any thread may read;
- **budget first**: :func:`estimate` says what a run will cost (memory, and work per sampler step
  and per update, from the model's FLOPs on the ``meta`` device) before anything is allocated,
  and :func:`check_budget` refuses what is past :class:`Limits` with what to lower;
- **ended runs are light**: a stopped, finished or failed run drops its trainer (replay buffer,
  optimiser, checkpoints) and keeps only its weights, curves and log.

What a run publishes for a page depends on its kind: :class:`ImageViews` (buffer and fresh-sample
grids, energy histograms, the quality curve) and :class:`LandscapeViews` (the energy on a grid, the
forces of the loss, particles, the fit to the data).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from . import landscapes as L
from .data import Dataset
from .errors import EBMError
from .images import grid
from .metrics import classify, label_quality
from .models import EnergyModel, build_model
from .objectives import metric_names
from .runtime import FOREGROUND, background_priority, job_threads
from .training import Interrupted, TrainConfig, Trainer

log = logging.getLogger("ebm_play.runs")

LIVE = ("starting", "running", "paused")
ENDED = ("stopped", "finished", "failed")
YIELD_MAX_S = 0.2  # under constant request load a run still takes one step per this long
MAX_HISTORY = 10_000  # metric rows kept; older ones are thinned, so a long run's curves stay whole but light
MAX_PENDING_STEPS = 10  # single steps asked for ahead of the worker
FLOPS_PER_S = 25e9  # one core of this class of machine, for the time estimates in messages


# --- the budget -------------------------------------------------------------------------------------
@dataclass
class Limits:
    """What one run, and all runs together, may cost. The app's defaults suit a 2-core, 16 GB Space."""

    run_bytes: int = 1536 * 2**20
    total_bytes: int = 3 * 2**30
    step_flops: float = 2.0 * FLOPS_PER_S  # one sampler step over the batch: how late a pause can come
    update_flops: float = 120 * FLOPS_PER_S  # one whole update
    running: int = 2  # runs training at once (the others wait paused)


@dataclass
class Estimate:
    """What a run will cost, computed from its settings alone."""

    params: int
    bytes: int
    parts: dict[str, int]  # bytes by what holds them, for messages
    step_flops: float  # one sampler step over the batch
    update_flops: float

    @property
    def mb(self) -> float:
        return self.bytes / 2**20


@lru_cache(maxsize=64)
def _model_cost(kind: str, config: tuple) -> tuple[int, float, int]:
    """(parameters, forward FLOPs, activation values) for one input, measured on the meta device:
    nothing is allocated, whatever the size."""
    with torch.device("meta"):
        model = build_model(kind, **dict(config))
        x = torch.zeros((1, 2) if kind == "mlp2d" else (1, 1, 28, 28))
    acts = [0]
    hooks = [m.register_forward_hook(lambda _m, _i, out: acts.__setitem__(0, acts[0] + out.numel()))
             for m in model.modules() if not list(m.children())]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return sum(p.numel() for p in model.parameters()), float(counter.get_total_flops()), acts[0]


def _arch(config: TrainConfig) -> tuple[str, tuple]:
    """The model kind and constructor arguments a config builds (see ``TrainConfig.build_model``)."""
    kind = config.model
    if kind in ("rbm", "mlp2d"):
        return kind, (("hidden", config.hidden),)
    return kind, (("width", config.width), ("spectral_norm", config.spectral_norm))


def estimate(config: TrainConfig, item_shape: tuple[int, ...] = (1, 28, 28), data_bytes: int = 0) -> Estimate:
    """Memory and work of a run with ``config`` on items of ``item_shape`` (``data_bytes``: a copy of
    the training data the run holds itself, e.g. a class subset or uploaded points)."""
    kind, arch = _arch(config)
    params, flops, acts = _model_cost(kind, arch)
    item = 4 * int(np.prod(item_shape))
    cd = config.objective == "cd"  # dsm and nce keep no replay buffer, run no sampler in an update, no drift check
    drift = cd and config.drift_bound is not None and kind in ("cnn", "jem")
    # model, Adam's two moments, the rollback checkpoint (model + optimiser), the published copy,
    # and with the drift check an anchor and a candidate (model + optimiser + buffer each)
    states = 4 + 8 + 12 + 4 + (24 if drift else 0)
    batch = config.batch_size * (1 + config.mirrored) + config.batch_size if cd else \
        config.batch_size * (1 + (config.nce_ratio if config.objective == "nce" else 1))
    parts = {
        "replay buffer": config.buffer_size * item * (3 if drift else 1) if cd else 0,
        "weights and optimiser": params * states,
        "activations": int(16 * batch * acts),
        "training data": int(data_bytes),
    }
    gradient = 3 * flops  # the forward pass and its input gradient
    step = config.batch_size * gradient
    steps = (config.cd_k if kind == "rbm" else config.sampler_steps) if cd else 0
    update = steps * step + batch * gradient
    return Estimate(params, sum(parts.values()), parts, step, update)


def check_budget(e: Estimate, limits: Limits) -> None:
    """Refuse a run past the limits, saying what to lower."""
    if e.bytes > limits.run_bytes:
        big = max(e.parts, key=e.parts.get)
        lower = {"replay buffer": "the buffer size", "weights and optimiser": "the width (or hidden units)",
                 "activations": "the batch size or width", "training data": "the data"}[big]
        raise EBMError(f"this run would need about {e.mb:,.0f} MB ({big}: {e.parts[big] / 2**20:,.0f} MB), over the "
                       f"{limits.run_bytes / 2**20:,.0f} MB a run may use: lower {lower}")
    if e.step_flops > limits.step_flops:
        raise EBMError(f"one sampler step would take about {e.step_flops / FLOPS_PER_S:.1f} s on one core, over the "
                       f"{limits.step_flops / FLOPS_PER_S:.0f} s allowed: lower the batch size or width")
    if e.update_flops > limits.update_flops:
        raise EBMError(f"one update would take about {e.update_flops / FLOPS_PER_S:,.0f} s on one core, over the "
                       f"{limits.update_flops / FLOPS_PER_S:.0f} s allowed: lower the sampler steps, batch size or width")


# --- what a run publishes ---------------------------------------------------------------------------
@dataclass
class ImageView:
    """The Train tab's pictures: never live tensors, so any thread may read them."""

    step: int = 0
    buffer: object = None  # PIL grid of replay-buffer chains (None: the objective keeps no buffer)
    fresh: object = None  # PIL grid of fresh chains from noise
    fresh_step: int = -1
    energies: dict[str, np.ndarray] = field(default_factory=dict)  # real, buffer (cd only), noise
    starts: torch.Tensor | None = None  # buffer chains to start sampling from (CPU; cd only)


class ImageViews:
    """Publishes an image run: buffer grid and energy histograms ~2 times a second, and fresh chains
    from noise (with the run's own sampler: the ladder for dsm) every ``fresh_every`` updates and at
    every pause, judged by the evaluation classifier if given. Objectives without a replay buffer
    (dsm, nce) publish no buffer grid and histograms of real digits and noise only. Fresh chains run a few sampler updates at a time between the worker's other work, so
    that a stop or pause never waits for them."""

    N_VIEW, N_GRID, N_FRESH, N_STARTS = 200, 64, 36, 256
    EVERY_S = 0.5
    FRESH_SLICE = 8

    def __init__(self, fresh_every: int = 50, fresh_steps: int | None = None, classifier=None):
        self.fresh_every, self.fresh_steps, self.classifier = int(fresh_every), fresh_steps, classifier
        self.quality: list[dict] = []  # appended by the worker only
        self._fresh: Iterator[torch.Tensor] | None = None
        self._fresh_x: torch.Tensor | None = None
        self._probes: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last = 0.0

    def _probes_for(self, tr: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed real digits and noise, so histograms compare over time."""
        if self._probes is None:
            g = torch.Generator().manual_seed(1234)
            noise = (torch.rand((self.N_VIEW, *tr.data.shape[1:]), generator=g) * 2 - 1).to(tr.device)
            pick = torch.randperm(len(tr.data), generator=g)[: self.N_VIEW]
            self._probes = (tr.data[pick.to(tr.data.device)], noise)
        return self._probes

    def busy(self) -> bool:
        """Fresh chains are under way (the model must not change until they are done)."""
        return self._fresh is not None

    def due(self, tr: Trainer, view: ImageView) -> bool:
        step = tr.state.step
        if self.fresh_every and step // self.fresh_every != max(view.fresh_step, 0) // self.fresh_every:
            self._fresh = tr.fresh_chains(self.N_FRESH, self.fresh_steps, seed=step)
        return time.monotonic() - self.last >= self.EVERY_S

    def advance(self, tr: Trainer, view: ImageView) -> ImageView | None:
        """A few updates of the pending fresh chains; a new view once they are done."""
        for _ in range(self.FRESH_SLICE):
            x = next(self._fresh, None)
            if x is None:
                self._fresh = None
                return self._view(tr, view, self._fresh_x)
            self._fresh_x = x
        return None

    def dropped(self) -> None:
        """The model is about to change: fresh chains in progress were for the old one."""
        self._fresh = None

    def publish(self, tr: Trainer, view: ImageView, fresh: bool = False) -> ImageView:
        """The view now; with ``fresh`` (or before the first panel) fresh chains start too, except
        for an untrained dsm model (step 0): nothing to see yet, and its ladder chains (100 steps per
        noise level) would hold the first update back for ~17 s at the dsm preset on one core."""
        if (fresh or view.fresh_step < 0) and (tr.state.step > 0 or tr.config.objective != "dsm"):
            self._fresh = tr.fresh_chains(self.N_FRESH, self.fresh_steps, seed=tr.state.step)
        return self._view(tr, view)

    @torch.no_grad()
    def _view(self, tr: Trainer, view: ImageView, fresh_x: torch.Tensor | None = None) -> ImageView:
        step = tr.state.step
        fresh_img, fresh_step = view.fresh, view.fresh_step
        if fresh_x is not None:
            fresh_img, fresh_step = grid(fresh_x, 6, scale=2), step
            # step 0 is an untrained model: its noise can fool the classifier (confident 1.0), nothing to judge
            if self.classifier is not None and step > 0 and (not self.quality or self.quality[-1]["step"] != step):
                _, probs = classify(self.classifier, fresh_x)
                self.quality.append({"step": step, **label_quality(probs)})
        real, noise = self._probes_for(tr)
        buffer = tr.buffer.x if tr.buffer is not None else None  # only contrastive divergence keeps one
        probes = {"real": real, "buffer": None if buffer is None else buffer[: self.N_VIEW], "noise": noise}
        model = tr.shown_model
        model.eval()  # no side effects (spectral-norm power iterations) from looking
        energies = {k: model(x).float().cpu().numpy() for k, x in probes.items() if x is not None}
        model.train()
        self.last = time.monotonic()
        if buffer is None:
            return ImageView(step, None, fresh_img, fresh_step, energies, None)
        return ImageView(step, grid(buffer[: self.N_GRID], 8, scale=2), fresh_img, fresh_step, energies,
                         buffer[: self.N_STARTS].detach().float().cpu().clone())


@dataclass
class LandscapeView:
    """The Landscape tab's grids and particles as numpy arrays."""

    step: int = 0
    xs: np.ndarray | None = None
    ys: np.ndarray | None = None
    E: np.ndarray | None = None  # energy on the grid
    forces: tuple | None = None  # (fx, fy, E, ΔE): the change one training step makes, on a coarser grid
    buffer: np.ndarray | None = None
    fresh: np.ndarray | None = None
    data: np.ndarray | None = None
    fit: dict = field(default_factory=dict)


class LandscapeViews:
    """Publishes a 2-D run ~7 times a second (the energy is one batched call on the grid), fresh
    chains from noise every 1.5 s, and keeps snapshots of the whole run for a GIF."""

    EVERY_S, FRESH_EVERY_S, SNAPSHOT_EVERY_S = 0.15, 1.5, 0.5
    GRID, FORCE_GRID, N_DATA, N_BUFFER, N_FRESH, FRESH_STEPS = 80, 40, 800, 400, 150, 120
    MAX_SNAPSHOTS = 120

    def __init__(self):
        self.snapshots: list[tuple[int, np.ndarray, np.ndarray]] = []
        self._snapshot_every = self.SNAPSHOT_EVERY_S
        self.last = self._last_fresh = self._last_snapshot = 0.0
        self._fresh: np.ndarray | None = None
        self._show: torch.Tensor | None = None
        self._shown_of = 0
        self.quality: list[dict] = []  # (image runs only)

    def busy(self) -> bool:
        return False

    def due(self, tr: Trainer, view: LandscapeView) -> bool:
        return time.monotonic() - self.last >= self.EVERY_S

    def dropped(self) -> None:
        pass

    def publish(self, tr: Trainer, view: LandscapeView, fresh: bool = False) -> LandscapeView:
        started = time.monotonic()
        if self._show is None or self._shown_of != len(tr.data):  # new data: pick the points shown anew
            self._show = torch.randperm(len(tr.data), generator=torch.Generator().manual_seed(0))[: self.N_DATA]
            self._shown_of = len(tr.data)
        model = tr.shown_model
        model.eval()
        try:
            xs, ys, E = L.energy_grid(model, self.GRID)
            data = tr.data[self._show]
            g = torch.Generator().manual_seed(tr.state.step)
            negatives = tr.buffer.x[torch.randint(len(tr.buffer.x), (256,), generator=g)]
            forces = L.cd_force_grid(model, data[:256], negatives, tr.config.alpha, self.FORCE_GRID)
            if fresh or self._fresh is None or started - self._last_fresh >= self.FRESH_EVERY_S:
                self._fresh = tr.fresh_samples(self.N_FRESH, self.FRESH_STEPS, seed=tr.state.step).cpu().numpy()
                self._last_fresh = started
        finally:
            model.train()
        buf = tr.buffer.x[: self.N_BUFFER].cpu().numpy()
        self.last = started  # a steady rhythm: the next one is due EVERY_S after this one began
        if started - self._last_snapshot >= self._snapshot_every or fresh:
            self._last_snapshot = started
            self.snapshots.append((tr.state.step, E.astype(np.float16), buf[:300].copy()))
            if len(self.snapshots) > self.MAX_SNAPSHOTS:  # keep the whole run: every other frame, half as often
                self.snapshots = self.snapshots[::2]
                self._snapshot_every *= 2
        return LandscapeView(tr.state.step, xs, ys, E, forces, buf, self._fresh, data.cpu().numpy(),
                             L.fit_quality(tr.buffer.x[:1000], data))


# --- the run ------------------------------------------------------------------------------------------
@dataclass
class Spec:
    """Everything needed to build a run's trainer, in the worker thread."""

    config: TrainConfig
    data: torch.Tensor
    labels: torch.Tensor | None = None
    model: EnergyModel | None = None  # resume from these weights …
    load: Callable[[], EnergyModel] | None = None  # … or from what this returns (a file read in the worker)
    device: torch.device = torch.device("cpu")
    source: str = ""  # where the data came from, for the log and the file
    resumed_from: str | None = None
    info: dict = field(default_factory=dict)  # extra facts for the weight file (e.g. the data's identity)
    reference: Dataset | None = None  # a person's own data (a Dataset, held-out part only): what its model is judged against


class Run:
    """One training run: a trainer driven by its own thread. States: starting, running, paused,
    stopped, finished (hit ``max_steps``), failed (an exception; ``error`` says which).

    ``kind`` is "image" or "landscape". ``idle_pause_s``: pause when nobody looked (:meth:`touch`)
    for this long (a landscape nobody watches would keep a core busy)."""

    def __init__(self, kind: str, spec: Spec, views, estimate: Estimate, *, max_steps: int = 0,
                 start: bool = True, idle_pause_s: float | None = None,
                 on_end: Callable[[Run], None] | None = None):
        self.kind, self.spec, self.views, self.estimate = kind, spec, views, estimate
        self.max_steps, self.idle_pause_s, self._on_end = int(max_steps), idle_pause_s, on_end
        self.id = secrets.token_hex(4)
        self.config = spec.config  # what the run trains with now (live changes and rollbacks update it)
        self._cond = threading.Condition()
        self.state = "starting"
        self._after_start = "running" if start else "paused"
        self._single = False  # the worker is taking a single step asked for while paused
        self._note: str | None = None  # a pause the worker has yet to log
        self._steps_line: tuple[str, int] | None = None  # the log's line for single steps in a row, and their count
        self._pending_steps = 0
        self._changes: dict = {}
        self._new_data: tuple | None = None
        self.error: str | None = None
        self.history: list[dict] = []  # appended by the worker only; readers copy a prefix
        self.events: list[str] = []  # rollback messages
        self.log: list[str] = []
        self.view = ImageView() if kind == "image" else LandscapeView()
        self.version = 0  # bumps whenever ``view`` is replaced
        self.step = 0
        self.seen = time.monotonic()
        self._weights: tuple[dict, int, dict] | None = None  # (state dict, step, file info), published
        self._arch: tuple[str, dict] = ("", {})  # the model's kind and constructor arguments, published with them
        self.trainer: Trainer | None = None  # the worker's; None once the run has ended
        self._thread = threading.Thread(target=self._loop, name=f"ebm-{kind}-{self.id}", daemon=True)
        self._thread.start()

    # --- control: never blocks ---------------------------------------------------------------------
    def pause(self, why: str = "") -> None:
        with self._cond:
            if self.state not in ("running", "starting"):
                raise EBMError(f"the run is {self.state}, not running: nothing to pause")
            if self.state == "starting":
                self._after_start = "paused"
            else:
                self.state = "paused"
                self._note = f" ({why})" if why else ""  # the worker logs the step it really stopped at
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            if self.state != "paused" and not (self.state == "starting" and self._after_start == "paused"):
                raise EBMError(f"the run is {self.state}, not paused: nothing to resume")
            if self.state == "starting":
                self._after_start = "running"
            else:
                self.state = "running"
                self.say(f"resumed at step {self.step}")
            self.seen = time.monotonic()
            self._pending_steps = 0
            self._cond.notify_all()

    def step_once(self) -> None:
        """Ask for one update of a paused run; the worker takes it and publishes (see ``status``)."""
        with self._cond:
            if self.state != "paused" and not (self.state == "starting" and self._after_start == "paused"):
                raise EBMError(f"the run is {self.state}: pause it to take single steps")
            if self._pending_steps >= MAX_PENDING_STEPS:
                raise EBMError(f"{MAX_PENDING_STEPS} single steps are already waiting: let them finish first")
            self._pending_steps += 1
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            if self.state not in LIVE:
                raise EBMError(f"the run is already {self.state}")
            self.state = "stopped"  # the worker logs the step it really stopped at
            self._cond.notify_all()

    def change(self, **changes) -> None:
        """Change settings of the live run (learning rate, sampler settings, α…) from its next update;
        checked here, so a bad value is the caller's error, not the run's."""
        arch = sorted(k for k in ("model", "width", "hidden", "spectral_norm")
                      if k in changes and changes[k] != getattr(self.config, k))
        if arch:
            raise EBMError(f"{arch[0]} cannot change during a run: start a new one")
        dataclasses.replace(self.config, **changes)  # TrainConfig checks every value
        with self._cond:
            if self.state not in LIVE:
                raise EBMError(f"the run is {self.state}: start a new one")
            self._changes.update(changes)
            self._cond.notify_all()

    def set_data(self, data: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Train on new data from the next update on (a landscape's clicked points)."""
        with self._cond:
            if self.state not in LIVE:
                raise EBMError(f"the run is {self.state}: start a new one")
            self._new_data = (data, labels)
            self._cond.notify_all()

    def touch(self) -> None:
        """Somebody is looking (a landscape pauses itself when nobody has for ``idle_pause_s``)."""
        self.seen = time.monotonic()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # --- the worker ----------------------------------------------------------------------------------
    def _interrupted(self) -> bool:
        return self.state in ENDED or (self.state == "paused" and not self._single)

    def _loop(self) -> None:
        background_priority()  # requests first: this thread gets a core only when they leave one idle
        try:
            with job_threads(1):
                self._build()
                while self._work():
                    FOREGROUND.wait_idle(YIELD_MAX_S)  # requests first (see runtime.Foreground)
        except Exception as e:  # anything: keep the message for the page, free the memory
            msg = str(e) if isinstance(e, EBMError) else f"{type(e).__name__}: {e}"
            log.exception("run %s failed", self.id)
            with self._cond:
                self.state, self.error = "failed", msg
                self.say(f"failed at step {self.step}: {msg}")
        finally:
            self._end()

    def _build(self) -> None:
        s = self.spec
        if s.load is not None:
            s = dataclasses.replace(s, model=s.load().train(), load=None)
        with torch.random.fork_rng(devices=[]):  # the trainer seeds torch's global generator
            start_step = int(getattr(s.model, "info", {}).get("train_steps", 0) or 0) if s.model is not None else 0
            self.trainer = Trainer(s.config, s.data, s.labels, model=s.model, device=s.device,
                                   start_step=start_step, interrupt=self._interrupted)
        self.spec = dataclasses.replace(s, data=None, labels=None, model=None, load=None)  # the trainer holds them
        self.step = self.trainer.state.step
        c = self.config
        what = {"rbm": f"RBM ({c.hidden} hidden)", "mlp2d": f"MLP energy (hidden {c.hidden})"}.get(
            c.model, f"{c.model.upper()} (width {c.width})")
        self.say(f"new run: {what} on {len(self.trainer.data):,} items from {s.source}"
                 + (f", starting from {s.resumed_from}" if s.resumed_from else "") + f", device {s.device}")
        self._publish(fresh=True)
        with self._cond:
            if self.state == "starting":
                self.state = self._after_start

    def _work(self) -> bool:
        """One piece of work (settings changes, an update or a slice of fresh chains); False when the
        run has ended. ``_cond`` is held only to read and change flags, never while computing."""
        with self._cond:
            while True:
                if self._note is not None and self.state == "paused":
                    self.say(f"paused at step {self.step}{self._note}")
                    self._note = None
                changes, data = self._changes, self._new_data
                self._changes, self._new_data = {}, None
                if self.state in ENDED:
                    return False
                if changes or data is not None:
                    break
                if self.state == "running" and self.idle_pause_s and time.monotonic() - self.seen > self.idle_pause_s:
                    self.state = "paused"
                    self.say(f"paused at step {self.step}: nobody watched for {self.idle_pause_s:.0f} s")
                behind = self.state == "paused" and (self.view.step != self.step or self.weights_step != self.step)
                if self.state == "running" or self._pending_steps or self.views.busy() or behind:
                    break
                self._cond.wait(1.0)
            fresh_first = self.views.busy()  # fresh chains first: the model must not change under them
            self._single = not (changes or data is not None or fresh_first or behind) and self.state == "paused"
            if self._single:
                self._pending_steps -= 1
        if changes or data is not None:
            self._apply(changes, data)
        elif behind and not fresh_first:  # just paused: show the exact state, fresh chains included
            self._publish(fresh=True)
        elif fresh_first:
            self._set_view(self.views.advance(self.trainer, self.view))
        else:
            try:
                self._update()
            except Interrupted:
                self.views.dropped()
            finally:
                self._single = False
        return True

    def _apply(self, changes: dict, data: tuple | None) -> None:
        """Live changes asked for since the last update (the trainer is idle between updates)."""
        tr = self.trainer
        self.views.dropped()
        if changes:
            changed = tr.update_config(**changes)
            self.config = tr.config
            if changed:
                self.say("settings: " + ", ".join(f"{k} {changes[k]:g}" if isinstance(changes[k], float)
                                                   else f"{k} {changes[k]}" for k in changed))
        if data is not None:
            tr.set_data(*data)

    def _update(self) -> None:
        tr = self.trainer
        self.views.dropped()
        m = tr.step()
        self.config = tr.config
        self.step = tr.state.step
        self._record(m)
        if self.max_steps and self.step >= self.max_steps:
            self._publish(fresh=True)  # first: whoever sees "finished" finds the final weights
            with self._cond:
                if self.state in LIVE:
                    self.state = "finished"
                    self.say(f"finished: reached {self.max_steps} steps")
        elif self.state == "paused":  # a single step, or the last update before a pause: show it all
            if self._single:
                self._log_single_step()
            self._publish(fresh=True)
        elif self.views.due(tr, self.view):
            self._publish()

    def _log_single_step(self) -> None:
        """Single steps in a row are one line of the log that counts them (pressing Step twenty times
        must not push everything else out)."""
        with self._cond:
            line, n = self._steps_line or (None, 0)
            n = n + 1 if self.log and self.log[-1] is line else 1
            if n > 1:
                self.log.pop()
            self.say(f"{n} single step{'s' * (n > 1)} while paused: now at step {self.step}")
            self._steps_line = (self.log[-1], n)

    def _record(self, m: dict) -> None:
        self.history.append(m)
        if len(self.history) > MAX_HISTORY:  # thin the older 90% to every other row
            cut = MAX_HISTORY * 9 // 10
            self.history = self.history[:cut:2] + self.history[cut:]
        if m.get("rolled_back"):
            msg = m.get("event") or f"diverged at step {m['step']}: rolled back"
            self.events.append(msg)
            self.say(msg)

    @torch.no_grad()
    def _publish(self, fresh: bool = False) -> None:
        """A new view and a copy of the weights (worker thread only)."""
        tr = self.trainer
        self._set_view(self.views.publish(tr, self.view, fresh=fresh))
        meta = tr.metadata()
        meta.update(self.spec.info)
        meta["data"] = self.spec.source
        model = tr.shown_model
        self._arch = (model.kind, dict(model.config))  # a JEM of other data has its own number of classes
        self._weights = ({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
                         tr.state.step, meta)

    def _set_view(self, view) -> None:
        if view is not None:
            self.view = view
            self.version += 1

    def _end(self) -> None:
        """Drop the trainer: an ended run keeps its weights, curves and log, not its buffer."""
        if self.trainer is not None and (self.view.step != self.step or self.weights_step != self.step):
            try:  # the final state, for the page and for saving
                self._publish()
            except Exception:  # noqa: BLE001 (a failed run may not publish; its last view stays)
                log.exception("run %s: final publish failed", self.id)
        with self._cond:
            if self.state in LIVE:  # the loop ended without a state change: a bug, not a user's stop
                self.state = "failed"
            if self.state == "stopped":
                self.say(f"stopped at step {self.step}")
            tr, self.trainer = self.trainer, None
        if tr is not None:
            tr.close()
        self.view = dataclasses.replace(self.view, starts=None) if isinstance(self.view, ImageView) else self.view
        del tr
        if self._on_end is not None:
            self._on_end(self)

    # --- reading: any thread, never waits -----------------------------------------------------------
    def say(self, msg: str) -> None:
        self.log.append(f"[{time.strftime('%H:%M:%S')}] {msg}")
        del self.log[:-200]

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def quality(self) -> list[dict]:
        return self.views.quality

    def model_copy(self) -> EnergyModel:
        """A model with the weights last published (at most half a second old while training)."""
        if self._weights is None:
            raise EBMError("the run has no weights yet: wait a moment for it to start")
        weights, step, info = self._weights
        kind, config = self._arch
        model = build_model(kind, **config)
        model.load_state_dict(weights)
        model.info = copy.deepcopy(info)
        model.info["train_steps"] = step
        return model.eval()

    @property
    def weights_step(self) -> int:
        return self._weights[1] if self._weights is not None else -1

    def metric_names(self) -> dict[str, str]:
        """The history keys whose curves mean something for the run's objective, with labels
        (``objectives.metric_names``: cd's energies and gap, dsm's loss per noise level, nce's
        accuracy and log Z; the common loss, gradient norm, learning rate and speed)."""
        c = self.config
        ladder = c.noise_ladder().tolist() if c.objective == "dsm" else None
        return metric_names(c.objective, ladder, c.model)

    def status(self) -> dict:
        """A JSON-able summary (what ``/train_status`` returns); ``curves`` names the history keys
        that mean something for the objective, with labels."""
        hist = self.history
        last = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in hist[-1].items()} if hist else None
        recent = hist[-20:]
        speed = sum(r["steps_per_s"] for r in recent) / len(recent) if recent and self.state == "running" else 0.0
        return {"run": self.id, "kind": self.kind, "objective": self.config.objective, "state": self.state,
                "step": self.step, "curves": self.metric_names(),
                "max_steps": self.max_steps, "steps_per_s": round(speed, 2),
                # the single step being taken counts until ``step`` moves (a poll must not stop in between)
                "pending_steps": self._pending_steps + self._single,  # a single step counts until it is shown
                "last": last, "quality": self.quality[-1] if self.quality else None,
                "rollbacks": self.events[-20:], "error": self.error, "data": self.spec.source,
                "resumed_from": self.spec.resumed_from, "device": str(self.spec.device),
                "memory_mb": round(self.estimate.mb, 1), "config": asdict(self.config), "log": self.log[-5:]}


# --- objectives side by side --------------------------------------------------------------------------
MAX_COMPARE_STEPS = 5000  # updates per objective: 5,000 cd + dsm updates take ~1 min on one core


def side_by_side_estimate(configs: list[TrainConfig], data_bytes: int = 0) -> Estimate:
    """What objectives side by side cost together: the memory of all their trainers, one update of
    each in turn (they share one thread), the largest sampler step."""
    parts: dict[str, int] = {}
    ests = [estimate(c, (2,)) for c in configs]
    for e in ests:
        for k, v in e.parts.items():
            parts[k] = parts.get(k, 0) + v
    parts["training data"] = int(data_bytes)
    return Estimate(sum(e.params for e in ests), sum(parts.values()), parts, max(e.step_flops for e in ests),
                    sum(e.update_flops for e in ests))


@dataclass(frozen=True)
class SideView:
    """One objective of a comparison as numpy arrays, replaced whole (any thread may read it)."""

    objective: str
    sampler: str  # the run's own sampler for fresh samples (langevin, ladder)
    step: int
    xs: np.ndarray
    ys: np.ndarray
    E: np.ndarray  # the energy on the grid (dsm: E(x, σ_min))
    score: tuple  # (xs, ys, U, V): −∇E on a coarser grid; dsm: the learned score at σ_min
    sigma: float | None = None  # the noise level of a dsm score
    last: dict = field(default_factory=dict)  # the figures of its last update
    samples: np.ndarray | None = None  # fresh samples with its own sampler (at the end)
    report: dict | None = None  # mode shares of those samples against the data's (landscapes.mode_share_error)


class ObjectivesRun:
    """Objectives side by side (:class:`ebm_play.landscapes.SideBySide`) in a background thread: each
    objective takes ``max_steps`` updates, in turns, on the same data with the same seed. The
    energies and score fields are published twice a second; at the end (or at a stop) each objective
    draws ``N_SAMPLES`` fresh samples with its own sampler (Langevin for cd and nce, the ladder for
    dsm), compared with the data's mode shares. Control is a flag read between updates (a 2-D update
    takes milliseconds). States: starting, running, stopped, finished, failed; ``busy`` stays true
    until the final view is out."""

    kind = "objectives"
    EVERY_S, GRID, SCORE_GRID, N_SAMPLES, N_DATA = 0.5, 80, 20, 1000, 800

    def __init__(self, data: torch.Tensor, objectives: tuple[str, ...], seed: int, max_steps: int,
                 modes: L.Modes | None, estimate: Estimate, source: str = "", info: dict | None = None):
        self.objectives, self.seed, self.max_steps, self.modes = tuple(objectives), int(seed), int(max_steps), modes
        self.estimate, self.source, self.info = estimate, source, dict(info or {})
        self.id = secrets.token_hex(4)
        self.state, self.step, self.error = "starting", 0, None
        self._lock = threading.Lock()  # state changes: a stop must not be overwritten by the worker
        self.data = data
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[: self.N_DATA]
        self.data_shown = data[pick].numpy().copy()
        self.sides: dict[str, SideView] = {}
        self._last: dict[str, dict] = {}  # each objective's figures of its last update (worker only)
        self.version = 0  # bumps whenever ``sides`` is replaced
        self.log: list[str] = []
        self.seen = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name=f"ebm-objectives-{self.id}", daemon=True)
        self._thread.start()

    # --- control and reading: never blocks ------------------------------------------------------------
    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def busy(self) -> bool:
        """Training, or still drawing its final samples."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """End the comparison at the current update; its samples and mode shares are drawn there."""
        with self._lock:
            if self.state not in LIVE:
                raise EBMError(f"the comparison is already {self.state}")
            self.state = "stopped"

    def touch(self) -> None:
        self.seen = time.monotonic()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def say(self, msg: str) -> None:
        self.log.append(f"[{time.strftime('%H:%M:%S')}] {msg}")
        del self.log[:-200]

    def status(self) -> dict:
        """A JSON-able summary (what ``/landscape_objectives_status`` returns)."""
        sides = {o: {"sampler": v.sampler, "step": v.step, "sigma": v.sigma,
                     "last": {k: round(x, 6) if isinstance(x, float) else x for k, x in v.last.items()},
                     "modes": v.report} for o, v in self.sides.items()}
        return {"run": self.id, "kind": self.kind, "state": self.state, "busy": self.busy, "step": self.step,
                "max_steps": self.max_steps, "objectives": list(self.objectives), "seed": self.seed,
                "data": self.source, "view_version": self.version, "sides": sides, "error": self.error,
                "memory_mb": round(self.estimate.mb, 1), "log": self.log[-5:]}

    # --- the worker ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        background_priority()
        sb = None
        try:
            with job_threads(1):
                with torch.random.fork_rng(devices=[]):
                    sb = L.SideBySide(self.data, self.objectives, seed=self.seed)
                self.say(f"{' and '.join(self.objectives)} side by side on {len(self.data):,} points from "
                         f"{self.source}, seed {self.seed}, {self.max_steps:,} updates each")
                self._move("starting", "running")
                self._train(sb)
                self._publish(sb, final=True)  # first: whoever sees "finished" finds the mode shares
                self._move("running", "finished")
                self.say(f"{self.state} at update {self.step:,}")
        except Exception as e:  # anything: keep the message for the page
            log.exception("comparison %s failed", self.id)
            with self._lock:
                self.state, self.error = "failed", str(e) if isinstance(e, EBMError) else f"{type(e).__name__}: {e}"
            self.say(f"failed at update {self.step:,}: {self.error}")
        finally:
            del sb  # the trainers go with the thread: an ended comparison keeps only its views

    def _move(self, old: str, new: str) -> None:
        with self._lock:
            if self.state == old:
                self.state = new

    def _train(self, sb: L.SideBySide) -> None:
        last = time.monotonic()
        while self.state == "running" and self.step < self.max_steps:
            self._last = sb.step()
            self.step += 1
            if time.monotonic() - last >= self.EVERY_S:
                self._publish(sb)
                last = time.monotonic()
            FOREGROUND.wait_idle(YIELD_MAX_S)  # requests first (see runtime.Foreground)

    @torch.no_grad()
    def _publish(self, sb: L.SideBySide, final: bool = False) -> None:
        samples = sb.samples(self.N_SAMPLES, seed=1) if final else {}
        report = sb.mode_report(self.modes, samples) if final and self.modes is not None else {}
        sides = {}
        for o, tr in sb.trainers.items():
            model = tr.shown_model.eval()
            try:
                xs, ys, E = L.energy_grid(model, self.GRID)
                sigma = float(tr.config.sigma_min) if o == "dsm" else None
                score = L.score_field(model, self.SCORE_GRID, sigma)
            finally:
                model.train()
            x = samples.get(o)
            sides[o] = SideView(o, tr.config.sampler(), tr.state.step, xs, ys, E, score, sigma,
                                {k: v for k, v in self._last.get(o, {}).items() if isinstance(v, (int, float))},
                                None if x is None else x.detach().float().cpu().numpy(), report.get(o))
        self.sides = sides
        self.version += 1
