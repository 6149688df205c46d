"""The playground: everything a multi-user app shares, behind one object the UI calls.

It holds the device, the shipped models, the sessions (:mod:`ebm_play.sessions`), every training
run (:mod:`ebm_play.runs`) under one cap, recordings of sampled chains, and uploaded model files.
The app's tabs are thin views over it; a test or a script can drive it without any server.

Starting a run is where a public server is most exposed, so :meth:`Playground.start_run` checks in
this order, before anything is allocated: the settings' budget (memory, work per step and per
update), the session (one live run per kind), the cap on runs training at once, the memory all
live runs may hold together, and room for one more session holding work. Only then does the run's
own thread build its trainer.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

import torch

from . import landscapes as L
from . import ood
from .data import Dataset, Digits, mnist
from .errors import EBMError
from .models import IMAGE_ENERGIES, CNNEnergy, EnergyModel
from .objectives import OBJECTIVES
from .recording import Jobs, RecordStore
from .runs import (
    MAX_COMPARE_STEPS,
    Estimate,
    ImageViews,
    LandscapeViews,
    Limits,
    ObjectivesRun,
    Run,
    Spec,
    check_budget,
    estimate,
    side_by_side_estimate,
)
from .runtime import resolve_device
from .sessions import Session, SessionStore
from .training import TrainConfig
from .weights import UPLOAD_LIMITS, inspect_file, load_model, read_metadata, resolve, shipped_models

log = logging.getLogger("ebm_play.playground")

RANDOM_MODEL = "random (untrained)"
TRAINED_MODEL = "trained in this session"
KINDS = ("image", "landscape")
MAX_HELD_DATA_BYTES = 256 * 2**20  # people's uploaded images, all sessions together (20,000 images take 63 MB)


class ModelUploads:
    """Uploaded ``.safetensors`` models, loaded once per file (the last few kept), within the tighter
    limits for files from anyone (``weights.UPLOAD_LIMITS``): checked before anything is built."""

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._cache: OrderedDict[tuple, EnergyModel] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, path, device) -> EnergyModel:
        p = Path(path)
        if not p.is_file():
            raise EBMError(f"no such model file: {p.name}")
        key = (str(p), p.stat().st_mtime_ns, p.stat().st_size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        kind = inspect_file(p, UPLOAD_LIMITS).kind
        if kind not in IMAGE_ENERGIES:
            raise EBMError(f"{p.name} is a {kind} model, not an energy model over digits ({', '.join(IMAGE_ENERGIES)})")
        m = load_model(p, device, UPLOAD_LIMITS)
        with self._lock:
            self._cache[key] = m
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        return m


class Playground:
    """Shared state of the app. ``device``: "auto", "cpu" or "cuda"; ``limits``: the run budget."""

    def __init__(self, device: str | None = None, limits: Limits | None = None, sessions: SessionStore | None = None):
        self.device = resolve_device(device or os.environ.get("EBM_PLAY_DEVICE") or "auto")
        self.limits = limits or Limits()
        self.sessions = sessions or SessionStore()
        self.records = RecordStore()
        self.jobs = Jobs()
        self.uploads = ModelUploads()
        self.models: dict[str, EnergyModel] = {}
        self.problems: list[str] = []
        self._load_shipped()
        self.default_model = "mnist" if "mnist" in self.models else next(iter(self.models))
        try:  # the evaluation classifier draws the Train tab's quality curve when it is shipped
            self.classifier = load_model("mnist-classifier", self.device)
        except EBMError:
            self.classifier = None
        self._lock = threading.Lock()  # claims of run slots
        self._data_lock = threading.Lock()
        self._data: Digits | None = None
        self.max_held_data_bytes = MAX_HELD_DATA_BYTES
        self._own_lock = threading.Lock()
        self.tmp = tempfile.mkdtemp(prefix="ebm_play_")  # files waiting for download
        weakref.finalize(self, shutil.rmtree, self.tmp, ignore_errors=True)  # also runs at exit

    def _load_shipped(self) -> None:
        for name in shipped_models():
            try:  # weights/ also holds helpers (the evaluation classifier): image energies only
                if read_metadata(resolve(name))["kind"] not in IMAGE_ENERGIES:
                    continue
                self.models[name] = load_model(name, self.device)
            except EBMError as e:
                self.problems.append(str(e))
                log.warning("shipped model %s not loaded: %s", name, e)
        if not self.models:
            with torch.random.fork_rng():
                torch.manual_seed(0)
                self.models[RANDOM_MODEL] = CNNEnergy().to(self.device).eval()

    @property
    def untrained(self) -> bool:
        return RANDOM_MODEL in self.models

    def data(self) -> Digits:
        """MNIST once per process: the full set under EBM_PLAY_DATA if there, else the bundled sample."""
        with self._data_lock:
            if self._data is None:
                self._data = mnist(train=True)
            return self._data

    # --- a person's own images -------------------------------------------------------------------------
    def hold_data(self, sid, data: Dataset) -> None:
        """The session's uploaded images, replacing any it held (it becomes a keeper: strangers'
        new sessions cannot push it out). Other sessions' uploads, least recently seen first, are
        let go while all of them together hold more than ``max_held_data_bytes``."""
        s = self.sessions.get(sid)

        def give(s: Session) -> None:
            s.data = data
            s.choices["data"] = data.name

        self.sessions.keep(s, give)
        with self._own_lock:
            others = sorted((x for x in self.sessions.all() if x.data is not None and x is not s), key=lambda x: x.seen)
            total = data.nbytes + sum(x.data.nbytes for x in others)
            for old in others:
                if total <= self.max_held_data_bytes:
                    break
                total -= old.data.nbytes
                old.data = None
                log.info("let go of the uploaded images of a session to make room")

    def own_data(self, sid) -> Dataset | None:
        """The images the session uploaded, None when it trains on MNIST; an EBMError when they
        were let go to make room (rather than training on MNIST without a word)."""
        s = self.sessions.peek(sid) if sid else None
        if s is None or "data" not in s.choices:
            return None
        if s.data is None:
            raise EBMError(f"your images ({s.choices['data']}) were let go to make room on the server: "
                           "upload them again, or press 'Use MNIST again'")
        return s.data

    def drop_data(self, sid) -> None:
        """Back to MNIST: the session's uploaded images are let go."""
        s = self.sessions.peek(sid) if sid else None
        if s is not None:
            s.data = None
            s.choices.pop("data", None)

    # --- models a session uses --------------------------------------------------------------------
    def model_names(self, s: Session | None) -> list[str]:
        names = list(self.models)
        return names + [TRAINED_MODEL] if s is not None and s.trained is not None else names

    def named_model(self, sid, name: str) -> tuple[EnergyModel, str]:
        """A shipped model or the session's trained one, by name."""
        s = self.sessions.peek(sid) if sid else None
        if name == TRAINED_MODEL:
            if s is None or s.trained is None:
                raise EBMError("no model trained in this session: train one and press 'Use this model' first")
            return s.trained, f"{TRAINED_MODEL} ({s.trained_label})"
        if name not in self.models:
            raise EBMError(f"unknown model {name!r}; choose one of: {', '.join(self.model_names(s))}")
        return self.models[name], name

    def current_model(self, sid) -> tuple[EnergyModel, str]:
        """The session's current model and a label for it (the default model for no or a new session)."""
        s = self.sessions.peek(sid) if sid else None
        key = s.choices.get("model") if s is not None else None
        if key == TRAINED_MODEL and s.trained is not None:
            return self.named_model(sid, key)
        key = key if key in self.models else self.default_model
        return self.models[key], key

    def use_model(self, sid, key: str) -> str:
        s = self.sessions.get(sid)
        self.named_model(sid, key)  # the name must exist
        s.choices["model"] = key
        return self.current_model(sid)[1]

    def classifying_model(self, sid, preferred: str = "mnist-ood") -> tuple[EnergyModel, str]:
        """The model that classifies for the session: its current model if that is a JEM, else
        ``preferred`` if loaded, else any loaded JEM (an EBMError when there is none)."""
        model, label = self.current_model(sid)
        if getattr(model, "has_classes", False):
            return model, label
        names = [k for k, m in self.models.items() if getattr(m, "has_classes", False)]
        if not names:
            raise EBMError("classification needs a JEM model (classifier + energy); none is loaded: train one "
                           "with kind 'jem' in the Train tab and press 'Use this model'")
        name = preferred if preferred in names else names[0]
        return self.models[name], name

    def use_trained(self, sid, kind: str = "image") -> str:
        """A copy of the session's run weights becomes its current model in every tab."""
        run = self.run_of(sid, kind)
        model = run.model_copy().to(self.device)
        label = f"{run.config.model}, step {run.weights_step}"

        reference = run.spec.reference
        if reference is not None:  # judged against its own held-out images (OOD percentiles), not MNIST digits
            ood.set_reference(model, reference)
            label += f" on {reference.name}"

        def give(s: Session) -> None:
            s.trained, s.trained_label = model, label
            s.choices["model"] = TRAINED_MODEL

        self.sessions.keep(self.sessions.get(sid), give)
        return self.current_model(sid)[1]

    # --- runs ----------------------------------------------------------------------------------------
    def start_run(self, sid, kind: str, config: TrainConfig, data: torch.Tensor, labels: torch.Tensor | None = None,
                  *, model: EnergyModel | None = None, load=None, source: str = "", resumed_from: str | None = None,
                  views=None, max_steps: int = 0, start: bool = True, idle_pause_s: float | None = None,
                  info: dict | None = None, own_data: bool = False, reference: Dataset | None = None) -> Run:
        """Claim a slot and start a run of ``kind`` for the session (its thread builds the trainer).
        ``load``: a function that returns the model to resume from, called by the run's thread;
        ``own_data``: the data is this run's own copy (counted in its memory), not a shared data set;
        ``reference``: a person's own data (:meth:`Dataset.reference`) its model is judged against."""
        if kind not in KINDS:
            raise EBMError(f"unknown run kind {kind!r}")
        data_bytes = data.numel() * data.element_size() if own_data else 0
        if config.classes is not None and labels is not None:  # the trainer keeps a copy of the subset
            data_bytes += int(torch.isin(labels, torch.tensor(config.classes)).sum()) * data[0].numel() * 4
        est = estimate(config, tuple(data.shape[1:]), data_bytes)
        check_budget(est, self.limits)
        s = self.sessions.get(sid)
        views = views or (ImageViews(classifier=self.classifier) if kind == "image" else LandscapeViews())
        spec = Spec(config, data, labels, model, load, self.device, source, resumed_from, dict(info or {}), reference)
        with self._lock:
            self._check_room(s, kind, est)
            run = Run(kind, spec, views, est, max_steps=max_steps, start=start, idle_pause_s=idle_pause_s)
            try:
                self.sessions.keep(s, lambda s: s.runs.__setitem__(kind, run))
            except EBMError:
                run.stop()
                raise
        return run

    def start_objectives(self, sid, data: torch.Tensor, objectives, seed: int, max_steps: int,
                         modes: L.Modes | None = None, *, source: str = "", info: dict | None = None,
                         own_data: bool = False) -> ObjectivesRun:
        """Claim a slot and start objectives side by side on 2-D points for the session (its run of
        kind "objectives", :class:`ObjectivesRun`): checked like any run, before anything is built.
        It takes one running slot (the objectives train in turns in one thread) and the memory of all
        its trainers together."""
        objectives = tuple(objectives)
        if len(objectives) < 2 or len(set(objectives)) != len(objectives) or any(o not in OBJECTIVES for o in objectives):
            raise EBMError(f"choose two or more different objectives from {', '.join(OBJECTIVES)}")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or not 1 <= max_steps <= MAX_COMPARE_STEPS:
            raise EBMError(f"updates must be a whole number from 1 to {MAX_COMPARE_STEPS:,}, got {max_steps!r}")
        data = L.check_points(data, "data")
        configs = [L.train_config(objective=o, seed=seed) for o in objectives]
        est = side_by_side_estimate(configs, data.numel() * data.element_size() if own_data else 0)
        check_budget(est, self.limits)
        s = self.sessions.get(sid)
        with self._lock:
            self._check_room(s, ObjectivesRun.kind, est)
            run = ObjectivesRun(data, objectives, seed, max_steps, modes, est, source, info)
            try:
                self.sessions.keep(s, lambda s: s.runs.__setitem__(ObjectivesRun.kind, run))
            except EBMError:
                run.stop()
                raise
        return run

    def check_room(self, sid, kind: str) -> None:
        """Refuse early, before a caller reads anything big, when the session or the server has no room."""
        with self._lock:
            self._check_room(self.sessions.get(sid), kind, Estimate(0, 0, {}, 0.0, 0.0))

    def _live_runs(self) -> list[Run]:
        return [r for s in self.sessions.all() for r in s.runs.values() if r.live]

    def _check_room(self, s: Session, kind: str, est: Estimate) -> None:
        old = s.runs.get(kind)
        if old is not None and old.live:
            raise EBMError(f"this session already has a {old.state} run: stop it before starting another")
        live = self._live_runs()
        running = sum(1 for r in live if r.state in ("starting", "running"))
        if running >= self.limits.running:
            raise EBMError(f"the server is busy: {running} training runs are active, the limit. "
                           "Try again when one stops or pauses.")
        held = sum(r.estimate.bytes for r in live)
        if held + est.bytes > self.limits.total_bytes:
            raise EBMError(f"the server is busy: live runs hold {held / 2**20:,.0f} MB and this one needs "
                           f"{est.mb:,.0f} MB more than the {self.limits.total_bytes / 2**20:,.0f} MB allowed. "
                           "Try a smaller run, or later.")

    def resume_run(self, sid, kind: str) -> Run:
        """Resume the session's paused run when a running slot is free."""
        run = self.run_of(sid, kind)
        with self._lock:
            running = sum(1 for r in self._live_runs() if r.state in ("starting", "running") and r is not run)
            if run.state == "paused" and running >= self.limits.running:
                raise EBMError(f"the server is busy: {running} training runs are active, the limit. Try again shortly.")
            run.resume()
        return run

    def run_of(self, sid, kind: str = "image") -> Run:
        s = self.sessions.get(sid)
        run = s.runs.get(kind)
        if run is None:
            raise EBMError("no training run in this session: start one first")
        return run

    def active_runs(self) -> int:
        return sum(1 for r in self._live_runs() if r.state in ("starting", "running"))

    def stop_all(self, timeout: float = 5.0) -> None:
        """Stop every live run and wait for their threads (server shutdown, tests)."""
        runs = self._live_runs()
        for r in runs:
            try:
                r.stop()
            except EBMError:
                pass
        for r in runs:
            r.join(timeout)
