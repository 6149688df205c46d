"""Per-browser-session state, the training runs and the registry that holds both.

Why a session id in ``gr.BrowserState``: training runs must outlive a page. ``gr.State`` dies with
the page, so a reload would lose the run; the id lives in the browser's localStorage instead
(``gr.BrowserState``, key ``ebm_play_session``), so a reload or a second tab of the same browser
finds the same run, while another browser gets its own. API clients pass any random string of
8 to 64 letters, digits, ``-`` or ``_`` as ``session``. The server keeps sessions in memory: a
restart forgets them (and the browser then gets a new id, as the stored one cannot be decrypted).

Why a worker thread per run: a request must return quickly, and a closed tab must not stop or
corrupt the run. The worker owns the trainer; the page only reads what the worker publishes
(``Run.history``, ``Run.view``) on a ~1 s timer, so a poll never waits for a training step.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import ebm_play
from ebm_play import EBMError
from ebm_play.metrics import classify, label_quality
from ebm_play.models import IMAGE_ENERGIES
from ebm_play.runtime import FOREGROUND, background_priority, job_threads
from ebm_play.weights import read_metadata, resolve

log = logging.getLogger("ebm_play.app")

SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
RANDOM_MODEL = "random (untrained)"
TRAINED_MODEL = "trained in this session"
LIVE = ("running", "paused")
MAX_SESSIONS = 1000  # idle sessions past this are forgotten, oldest first (never one with a live run)
VIEW_EVERY_S = 0.5  # the worker refreshes grids and histogram at most this often
N_VIEW = 200  # images per group in the energy histogram
N_GRID = 64  # replay-buffer images shown
N_FRESH = 36  # fresh chains drawn from noise
YIELD_MAX_S = 0.2  # under constant request load a run still takes one step per this long
FRESH_SLICE = 8  # fresh-chain updates between two checks for requests in flight


def new_session_id() -> str:
    return secrets.token_urlsafe(16)


def check_session(sid) -> str:
    if not isinstance(sid, str) or not SESSION_RE.match(sid):
        raise EBMError("no valid session id: reload the page (API: pass session=<8-64 random letters, digits, - or _>)")
    return sid


@dataclass
class View:
    """What the worker last published for the page: images and energies, never live tensors."""

    step: int = 0
    buffer: Image.Image | None = None
    fresh: Image.Image | None = None
    fresh_step: int = -1
    energies: dict[str, np.ndarray] = field(default_factory=dict)


class Run:
    """One training run: a trainer driven by its own thread, paused/resumed/stopped via ``cond``.

    States: running, paused, stopped, finished (hit ``max_steps``), failed (an exception, kept in
    ``error``). Only the worker (or ``step_once`` while paused) touches the trainer, always with
    ``cond`` held and one torch thread.
    """

    def __init__(self, trainer: ebm_play.Trainer, source: str, fresh_every: int = 50, fresh_steps: int | None = None,
                 max_steps: int = 0, resumed_from: str | None = None, classifier: torch.nn.Module | None = None):
        self.trainer, self.source = trainer, source
        self.classifier = classifier  # judges each batch of fresh samples (the quality curve)
        self.quality: list[dict] = []
        self.fresh_every, self.max_steps = int(fresh_every), int(max_steps)
        self.fresh_steps = fresh_steps
        self.resumed_from = resumed_from
        self.id = secrets.token_hex(4)
        self.cond = threading.Condition()
        self.state = "paused"
        self.error: str | None = None
        self.history: list[dict] = []  # appended by the worker only; readers copy a prefix
        self.log: list[str] = []
        self.view = View()
        self.version = 0  # bumps whenever ``view`` is replaced
        self._last_view = 0.0
        self._thread: threading.Thread | None = None
        self._fresh: Iterator[torch.Tensor] | None = None  # fresh chains in progress (worker only)
        self._fresh_x: torch.Tensor | None = None
        g = torch.Generator().manual_seed(1234)  # fixed probes so histograms are comparable over time
        self._noise = (torch.rand((N_VIEW, 1, 28, 28), generator=g) * 2 - 1).to(trainer.device)
        pick = torch.randperm(len(trainer.data), generator=g)[:N_VIEW]
        self._real = trainer.data[pick.to(trainer.data.device)]
        c = trainer.config
        what = f"RBM ({c.hidden} hidden)" if c.model == "rbm" else f"{c.model.upper()} (width {c.width})"
        self.say(f"new run: {what} on {len(trainer.data)} digits from {source}"
                 + (f", starting from {resumed_from}" if resumed_from else "") + f", device {trainer.device}")
        with job_threads(1):
            self._publish(fresh=False)

    # --- control (any thread) ---------------------------------------------------------------
    def start(self) -> None:
        with self.cond:
            self.state = "running"
            self._thread = threading.Thread(target=self._loop, name=f"ebm-train-{self.id}", daemon=True)
            self._thread.start()

    def pause(self) -> None:
        with self.cond:
            if self.state != "running":
                raise EBMError(f"the run is {self.state}, not running: nothing to pause")
            self.state = "paused"
            self.say(f"paused at step {self.trainer.state.step}")
            self._refresh()

    def resume(self) -> None:
        with self.cond:
            if self.state != "paused":
                raise EBMError(f"the run is {self.state}, not paused: nothing to resume")
            self.state = "running"
            self.say(f"resumed at step {self.trainer.state.step}")
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            if self.state not in LIVE:
                raise EBMError(f"the run is already {self.state}")
            self.state = "stopped"
            self.say(f"stopped at step {self.trainer.state.step}")
            self.cond.notify_all()
            self._refresh()

    def step_once(self) -> dict:
        """One update from the request thread; only while paused, so the worker is asleep."""
        with self.cond:
            if self.state != "paused":
                raise EBMError(f"the run is {self.state}: pause it to take single steps")
            with job_threads(1):
                m = self._step()
                self._publish(fresh=True)
            return m

    def _refresh(self) -> None:
        """Publish the exact state at a pause or stop (``cond`` held, so the worker is between steps)."""
        if self.history and self.view.step != self.trainer.state.step:
            with job_threads(1):
                self._publish(fresh=False)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the worker ---------------------------------------------------------------------------
    def _loop(self) -> None:
        background_priority()  # requests first: this thread gets a core only when they leave one idle
        try:
            with job_threads(1):
                while True:
                    FOREGROUND.wait_idle(YIELD_MAX_S)  # requests first (see runtime.Foreground)
                    with self.cond:
                        while self.state == "paused":
                            self.cond.wait()
                        if self.state != "running":
                            return
                        if self._fresh is not None:  # the model waits while its fresh chains run
                            self._advance_fresh()
                            continue
                        self._step()
                        if self.max_steps and self.trainer.state.step >= self.max_steps:
                            self.state = "finished"
                            self.say(f"finished: reached {self.max_steps} steps")
                            self._publish(fresh=True)
                            return
                        step = self.trainer.state.step
                        if self.fresh_every and step // self.fresh_every != max(self.view.fresh_step, 0) // self.fresh_every:
                            self._fresh = self.trainer.fresh_chains(N_FRESH, self.fresh_steps, seed=step)
                        elif time.monotonic() - self._last_view >= VIEW_EVERY_S:
                            self._publish(fresh=False)
                    time.sleep(0.001)  # let control requests take the lock between steps
        except Exception as e:  # anything: keep the message for the page, free the slot
            msg = str(e) if isinstance(e, EBMError) else f"{type(e).__name__}: {e}"
            log.exception("training run %s failed", self.id)
            with self.cond:
                self.state, self.error = "failed", msg
                self.say(f"failed at step {self.trainer.state.step}: {msg}")

    def _advance_fresh(self) -> None:
        """A few updates of the pending fresh chains; publish them once they are done. Sliced so
        that the worker checks for requests in flight between slices (a whole panel is 36 chains ×
        60+ updates, a fifth of a second or more of one core)."""
        for _ in range(FRESH_SLICE):
            x = next(self._fresh, None)
            if x is None:
                self._fresh = None
                self._publish(fresh=False, fresh_x=self._fresh_x)
                return
            self._fresh_x = x

    def _step(self) -> dict:
        self._fresh = None  # pending fresh chains were for the model before this update
        m = self.trainer.step()
        self.history.append(m)
        if m.get("rolled_back"):
            self.say(m.get("event") or f"diverged at step {m['step']}: rolled back")
        return m

    @torch.no_grad()
    def _publish(self, fresh: bool, fresh_x: torch.Tensor | None = None) -> None:
        """Refresh the pictures and energies the page shows (worker thread, ``cond`` held); with
        ``fresh``, draw the fresh-samples panel now, or show ``fresh_x`` as it."""
        tr, step = self.trainer, self.trainer.state.step
        fresh_img, fresh_step = self.view.fresh, self.view.fresh_step
        if fresh_x is None and (fresh or fresh_step < 0):
            self._fresh = None
            fresh_x = tr.fresh_samples(N_FRESH, self.fresh_steps, seed=step)
        if fresh_x is not None:
            fresh_img, fresh_step = ebm_play.images.grid(fresh_x, 6, scale=2), step
            if self.classifier is not None and (not self.quality or self.quality[-1]["step"] != step):
                _, probs = classify(self.classifier, fresh_x)
                self.quality.append({"step": step, **label_quality(probs)})
        buf = tr.buffer.x[:N_GRID]
        tr.model.eval()  # no side effects (spectral-norm power iterations) from looking
        energies = {"real": tr.model(self._real), "buffer": tr.model(tr.buffer.x[:N_VIEW]),
                    "noise": tr.model(self._noise)}
        tr.model.train()
        self.view = View(step, ebm_play.images.grid(buf, 8, scale=2), fresh_img, fresh_step,
                         {k: v.float().cpu().numpy() for k, v in energies.items()})
        self.version += 1
        self._last_view = time.monotonic()

    # --- reading (any thread) -------------------------------------------------------------------
    def say(self, msg: str) -> None:
        self.log.append(f"[{time.strftime('%H:%M:%S')}] {msg}")
        del self.log[:-200]

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def model_copy(self) -> ebm_play.EnergyModel:
        """A private copy of the current weights (waits for the step in progress)."""
        with self.cond:
            m = copy.deepcopy(self.trainer.model).eval()
        m.info = self.info()
        return m

    def info(self) -> dict:
        c = self.trainer.config
        meta = self.trainer.metadata()
        meta["data"] = self.source
        if c.model == "rbm":
            meta["samplers"] = {"gibbs": {"steps": 200}}
        else:  # the settings it was trained with: what the Sample tab should start from
            steps = self.fresh_steps or max(c.sampler_steps, 60)  # from noise, as the "fresh samples" panel
            meta["samplers"] = {"langevin": {"steps": steps, "step_size": c.step_size,
                                             "noise": c.noise, "grad_clamp": c.grad_clamp}}
        return meta

    def save(self, path: str | os.PathLike) -> Path:
        m = self.model_copy()
        return ebm_play.save_model(m, path, info=m.info)

    def status(self) -> dict:
        """A JSON-able summary: what ``/train_status`` returns."""
        hist = self.history
        last = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in hist[-1].items()} if hist else None
        recent = hist[-20:]
        speed = sum(r["steps_per_s"] for r in recent) / len(recent) if recent else 0.0
        return {"run": self.id, "state": self.state, "step": self.trainer.state.step, "max_steps": self.max_steps,
                "steps_per_s": round(speed, 2), "last": last,
                "quality": self.quality[-1] if self.quality else None,
                "rollbacks": [e.message for e in self.trainer.state.events][-20:],
                "error": self.error, "data": self.source, "resumed_from": self.resumed_from,
                "device": str(self.trainer.device), "config": asdict(self.trainer.config)}


@dataclass
class Session:
    id: str
    run: Run | None = None
    model_key: str = ""  # shipped name, RANDOM_MODEL or TRAINED_MODEL
    trained: ebm_play.EnergyModel | None = None
    trained_label: str = ""
    seen: float = field(default_factory=time.monotonic)


class Registry:
    """Everything the app shares between requests: device, models, sessions and the run cap."""

    def __init__(self, device: str | None = None, max_runs: int | None = None):
        self.device = ebm_play.resolve_device(device or os.environ.get("EBM_PLAY_DEVICE") or "auto")
        self.max_runs = int(max_runs or os.environ.get("EBM_PLAY_MAX_RUNS") or 2)
        self.models: dict[str, ebm_play.EnergyModel] = {}
        self.problems: list[str] = []
        for name in ebm_play.shipped_models():
            try:  # weights/ also holds helpers (e.g. the evaluation classifier): keep image energy models only
                if read_metadata(resolve(name))["kind"] not in IMAGE_ENERGIES:
                    continue
                self.models[name] = ebm_play.load_model(name, self.device)
            except EBMError as e:
                self.problems.append(str(e))
                log.warning("shipped model %s not loaded: %s", name, e)
        if not self.models:
            with torch.random.fork_rng():
                torch.manual_seed(0)
                self.models[RANDOM_MODEL] = ebm_play.CNNEnergy().to(self.device).eval()
        self.default_model = "mnist" if "mnist" in self.models else next(iter(self.models))
        try:  # the evaluation classifier draws the Train tab's quality curve when it is shipped
            self.classifier = ebm_play.load_model("mnist-classifier", self.device)
        except EBMError:
            self.classifier = None
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._data_lock = threading.Lock()
        self._data: ebm_play.data.Digits | None = None
        self.tmp = tempfile.mkdtemp(prefix="ebm_play_")  # saved models wait here for download
        weakref.finalize(self, shutil.rmtree, self.tmp, ignore_errors=True)  # also runs at exit

    @property
    def untrained(self) -> bool:
        return RANDOM_MODEL in self.models

    # --- sessions -------------------------------------------------------------------------------
    def session(self, sid) -> Session:
        sid = check_session(sid)
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                self._forget_idle()
                s = self._sessions[sid] = Session(sid, model_key=self.default_model)
            s.seen = time.monotonic()
            return s

    def peek(self, sid) -> Session | None:
        """The session if it exists, without creating one (for polls)."""
        return self._sessions.get(sid) if isinstance(sid, str) else None

    def _forget_idle(self) -> None:
        if len(self._sessions) < MAX_SESSIONS:
            return
        idle = sorted((s for s in self._sessions.values() if not (s.run and s.run.live)), key=lambda s: s.seen)
        for s in idle[: len(self._sessions) - MAX_SESSIONS + 1]:
            del self._sessions[s.id]

    def active_runs(self) -> int:
        with self._lock:
            return sum(1 for s in self._sessions.values() if s.run is not None and s.run.live)

    # --- models ---------------------------------------------------------------------------------
    def model_names(self, s: Session | None) -> list[str]:
        names = list(self.models)
        return names + [TRAINED_MODEL] if s is not None and s.trained is not None else names

    def current_model(self, sid) -> tuple[ebm_play.EnergyModel, str]:
        """The session's current model and a label for it (the default model without a session)."""
        s = self.session(sid) if sid else None
        if s is not None and s.model_key == TRAINED_MODEL and s.trained is not None:
            return s.trained, f"{TRAINED_MODEL} ({s.trained_label})"
        key = s.model_key if s is not None and s.model_key in self.models else self.default_model
        return self.models[key], key

    def use_model(self, sid, key: str) -> str:
        s = self.session(sid)
        if key not in self.model_names(s):
            raise EBMError(f"unknown model {key!r}; choose one of: {', '.join(self.model_names(s))}")
        s.model_key = key
        return self.current_model(sid)[1]

    def use_trained(self, sid) -> str:
        """Make a copy of the session's run weights its current model (for every other tab)."""
        s = self.session(sid)
        if s.run is None:
            raise EBMError("no training run in this session yet: start one first")
        s.trained = s.run.model_copy()
        s.trained_label = f"{s.run.trainer.config.model}, step {s.run.trainer.state.step}"
        s.model_key = TRAINED_MODEL
        return self.current_model(sid)[1]

    # --- runs -----------------------------------------------------------------------------------
    def data(self) -> ebm_play.data.Digits:
        """MNIST once per process: the full set under EBM_PLAY_DATA if there, else the bundled sample."""
        with self._data_lock:
            if self._data is None:
                self._data = ebm_play.mnist(train=True)
            return self._data

    def start_run(self, sid, config: ebm_play.TrainConfig, *, fresh_every: int = 50, fresh_steps: int | None = None,
                  max_steps: int = 0, model: ebm_play.EnergyModel | None = None,
                  resumed_from: str | None = None) -> Run:
        s = self.session(sid)
        if s.run is not None and s.run.live:
            raise EBMError(f"this session already has a {s.run.state} run: stop it before starting another")
        if self.active_runs() >= self.max_runs:
            raise EBMError(f"the server is busy: {self.max_runs} training runs are active, the limit "
                           "(EBM_PLAY_MAX_RUNS). Try again when one stops.")
        data = self.data()
        with job_threads(1), torch.random.fork_rng(devices=[]):  # Trainer seeds torch's global RNG
            trainer = ebm_play.Trainer(config, data.x, data.y, model=model, device=self.device)
        run = Run(trainer, data.source, fresh_every=fresh_every, fresh_steps=fresh_steps, max_steps=max_steps,
                  resumed_from=resumed_from, classifier=self.classifier)
        with self._lock:  # re-check: two starts may race for the last slot
            live = sum(1 for o in self._sessions.values() if o.run is not None and o.run.live)
            if live >= self.max_runs or (s.run is not None and s.run.live):
                raise EBMError(f"the server is busy: {self.max_runs} training runs are active (EBM_PLAY_MAX_RUNS)")
            s.run = run
            run.start()
        return run

    def run_of(self, sid) -> Run:
        s = self.session(sid)
        if s.run is None:
            raise EBMError("no training run in this session: start one first")
        return s.run

    def stop_all(self) -> None:
        """Stop every live run (server shutdown, tests)."""
        with self._lock:
            runs = [s.run for s in self._sessions.values() if s.run is not None and s.run.live]
        for r in runs:
            try:
                r.stop()
            except EBMError:
                pass
        for r in runs:
            r.join(5)
