"""Recording a run of chains: every step's energies and acceptance, evenly spaced frames, and a store
that keeps recent recordings so a page (or an API client, by id) can scrub and export them later.

:class:`Recorder` is a sampler callback (``ebm_play.sample_chains(..., callback=recorder)``);
:class:`Recording` is what it produces; :class:`ChainJob` runs the chains in a helper thread so
that a request can stream snapshots without waiting for the whole run, and stops the chains when
nobody reads them any more; :class:`RecordStore` keeps the results within a count and a memory budget.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import EBMError
from .runtime import job_threads, make_generator

MAX_FRAMES = 200  # recorded frames per run, whatever the number of steps
MAX_FRAME_BYTES = 48 * 2**20  # frames of one recording (float32) stay under this; fewer frames for many chains


def frame_steps(steps: int, frames: int) -> list[int]:
    """``frames`` distinct step numbers evenly spread over 0…steps, both ends included."""
    frames = max(1, min(int(frames), steps + 1))
    if frames == 1:
        return [steps]
    return sorted({round(i * steps / (frames - 1)) for i in range(frames)})


def frame_budget(chains: int, frames: int) -> int:
    """How many frames of ``chains`` chains fit the memory budget (at least 2)."""
    per_frame = chains * 28 * 28 * 4
    return max(2, min(int(frames), MAX_FRAMES, MAX_FRAME_BYTES // per_frame))


# Frames are pictures: half precision (3 significant digits, ≤ 0.0005 off in [−1, 1]) halves what a
# kept recording costs; the final chains ``x`` stay float32.
FRAME_DTYPE = torch.float16


@dataclass
class Recording:
    """One run of chains: what the Sample and Compose tabs show, scrub and export."""

    steps_planned: int
    chains: int
    frames: list[torch.Tensor] = field(default_factory=list)  # N×1×28×28 CPU float32 at ``frame_at``
    frame_at: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # every recorded step …
    energies: list[torch.Tensor] = field(default_factory=list)  # … and each chain's energy there (N,)
    accept: list[float] = field(default_factory=list)  # mean acceptance of each update (MALA, HMC)
    terms: dict[str, list[float]] = field(default_factory=dict)  # mean per expert at ``frame_at`` (compose)
    x: torch.Tensor | None = None  # the final chains
    step_size: float | None = None  # MALA, HMC: the step of the latest update (it adapts during warm-up)
    adapting: bool = False  # the latest update was part of the step-size warm-up
    meta: dict = field(default_factory=dict)
    stopped: bool = False  # stopped before ``steps_planned``
    id: str = field(default_factory=lambda: secrets.token_urlsafe(9))

    @property
    def last_step(self) -> int:
        return self.steps[-1] if self.steps else 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.frames, *self.energies))

    def nearest_frame(self, step) -> int:
        """Index of the recorded frame closest to ``step``."""
        if not self.frame_at:
            raise IndexError("no frames recorded")
        a = np.asarray(self.frame_at)
        return int(np.abs(a - float(step)).argmin())

    def summary(self) -> dict:
        """JSON-able facts about a finished recording (what the app's /sample and /compose return)."""
        last = self.energies[-1].tolist() if self.energies else []
        energy = [round(v, 6) if math.isfinite(v) else None for v in last]
        finite = [v for v in energy if v is not None]
        acc = self.meta.get("accept_rate")
        return {"record": self.id, "steps_done": self.last_step, "stopped": self.stopped,
                "frames": len(self.frame_at), "frame_steps": list(self.frame_at), "energy": energy,
                "mean_energy": float(np.mean(finite)) if finite else None,
                "accept_rate": None if acc is None else round(float(acc), 4),
                "step_size": self.step_size, "adapted": bool(self.meta.get("adapted", False))}

    def energy_matrix(self) -> np.ndarray:
        """(records, N) float array of the chains' energies."""
        if not self.energies:
            return np.zeros((0, self.chains), np.float32)
        return torch.stack(self.energies).float().numpy()


class Recorder:
    """A sampler callback (``ebm_play.sample_chains(..., callback=recorder)``) that records into a
    :class:`Recording`. ``should_stop()`` returning True ends the run early (the callback returns
    False); ``terms`` (x → {name: (N,)}) is evaluated at frame steps, for composed energies."""

    def __init__(self, steps: int, chains: int, frames: int,
                 terms: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None,
                 should_stop: Callable[[], bool] | None = None, meta: dict | None = None):
        self.rec = Recording(steps_planned=int(steps), chains=int(chains), meta=dict(meta or {}))
        self.targets = set(frame_steps(steps, frame_budget(chains, frames)))
        self.terms, self.should_stop = terms, should_stop
        self.latest: torch.Tensor | None = None  # the newest chains, for live frames
        self.lock = threading.Lock()

    def __call__(self, step) -> bool:
        x = step.x.detach()
        with self.lock:
            self.rec.steps.append(int(step.step))
            self.rec.energies.append(step.energy.detach().float().cpu())
            if step.accept is not None:
                self.rec.accept.append(float(step.accept.float().mean()))
            if getattr(step, "step_size", None) is not None:
                self.rec.step_size, self.rec.adapting = float(step.step_size), bool(getattr(step, "adapting", False))
            if step.step in self.targets:
                self.rec.frames.append(x.to("cpu", FRAME_DTYPE, copy=True))
                self.rec.frame_at.append(int(step.step))
                if self.terms is not None:
                    for name, e in self.terms(x).items():
                        self.rec.terms.setdefault(name, []).append(float(e.float().mean()))
            self.latest = x
        if self.should_stop is not None and self.should_stop():
            self.rec.stopped = True
            return False
        return True

    def finish(self, x: torch.Tensor) -> Recording:
        """Close the recording with the final chains (a stopped run's last state becomes a frame)."""
        with self.lock:
            self.rec.x = x.detach().float().cpu()
            if not self.rec.frame_at or self.rec.frame_at[-1] != self.rec.last_step:
                self.rec.frames.append(self.rec.x.to(FRAME_DTYPE, copy=True))
                self.rec.frame_at.append(self.rec.last_step)
                if self.terms is not None and self.rec.terms:
                    for name, e in self.terms(x).items():
                        self.rec.terms.setdefault(name, []).append(float(e.float().mean()))
            self.rec.stopped = self.rec.stopped or self.rec.last_step < self.rec.steps_planned
        return self.rec


class RecordStore:
    """Recent recordings by id (an unguessable token), least recently used dropped first, within a
    count and a memory budget."""

    def __init__(self, max_items: int = 32, max_bytes: int = 64 * 2**20):
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: OrderedDict[str, tuple[Recording, float]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, rec: Recording) -> str:
        with self._lock:
            self._items[rec.id] = (rec, time.monotonic())
            self._items.move_to_end(rec.id)
            while len(self._items) > self.max_items or (
                    len(self._items) > 1 and sum(r.nbytes() for r, _ in self._items.values()) > self.max_bytes):
                self._items.popitem(last=False)
        return rec.id

    def get(self, rid) -> Recording | None:
        if not isinstance(rid, str):
            return None
        with self._lock:
            item = self._items.get(rid)
            if item is None:
                return None
            self._items.move_to_end(rid)
            return item[0]


STARTS = ("uniform", "gaussian", "buffer", "image")  # where a run of chains may start


def start_chains(start: str, n: int, seed: int | None, image: torch.Tensor | None = None,
                 buffer: torch.Tensor | None = None) -> torch.Tensor | None:
    """The chains' starting images (N×1×28×28 CPU): None for uniform noise (drawn by the sampler from
    the run's seed), Gaussian noise (σ 0.5, clipped), ``image`` repeated, or chains picked from a
    training run's replay ``buffer``. Random picks use ``seed + 1``, apart from the sampler's draws."""
    if start not in STARTS:
        raise EBMError(f"unknown start {str(start)[:40]!r}; use one of: {', '.join(STARTS)}")
    if start == "uniform":
        return None
    g = make_generator(None if seed is None else seed + 1, torch.device("cpu"))
    if start == "gaussian":
        return (torch.randn((n, 1, 28, 28), generator=g) * 0.5).clamp(-1, 1)
    if start == "image":
        if image is None:
            raise EBMError("start from an image: draw a digit on the pad or upload a picture first")
        return image.reshape(1, 1, 28, 28).float().clamp(-1, 1).repeat(n, 1, 1, 1)
    if buffer is None or not len(buffer):
        raise EBMError("start from the replay buffer: the training run has no buffer to start from")
    return buffer[torch.randint(len(buffer), (n,), generator=g)].clamp(-1, 1)


STALL_S = 20.0  # a job's chains stop when nobody has read their progress for this long (page or client gone)
SNAPSHOT_EVERY_S = 0.25  # a streamed snapshot at most this often


class ChainJob:
    """``ebm_play.sample_chains`` in a helper thread with one torch thread, recorded by a :class:`Recorder`.

    The request that started it iterates :meth:`snapshots` and never waits longer than one snapshot
    interval; closing that iterator (a closed page, a cancelled API job), :meth:`stop` or nobody
    reading for ``STALL_S`` ends the chains at their next step."""

    def __init__(self, energy, n: int, steps: int, sampler: str, seed, x0, options: dict, frames: int,
                 terms=None, meta: dict | None = None, store: RecordStore | None = None):
        self.store = store  # where the finished recording is kept
        self.energy, self.n, self.steps, self.sampler, self.seed, self.x0 = energy, n, steps, sampler, seed, x0
        self.options = options
        self.stop_flag = threading.Event()
        self.done = threading.Event()
        self.last_pull = time.monotonic()
        self.error: BaseException | None = None
        self.recording: Recording | None = None
        self.recorder = Recorder(steps, n, frames, terms=terms, should_stop=self._should_stop, meta=meta)
        self.task: Callable[[Recorder], object] | None = None  # see :meth:`of`
        self.thread = threading.Thread(target=self._work, name="ebm-chains", daemon=True)

    @classmethod
    def of(cls, task: Callable[[Recorder], object], chains: int, steps: int, frames: int, terms=None,
           meta: dict | None = None) -> ChainJob:
        """A job around another sampling call: ``task(callback)`` runs it (``ebm_play.inpaint`` or
        ``ebm_play.denoise`` with ``callback=callback``) and returns its SampleResult; ``steps`` is the
        number of updates it plans (frames are spread over them)."""
        job = cls(None, chains, steps, "", None, None, {}, frames, terms=terms, meta=meta)
        job.task = task
        return job

    def _should_stop(self) -> bool:
        return self.stop_flag.is_set() or time.monotonic() - self.last_pull > STALL_S

    def _work(self) -> None:
        from .api import sample_chains  # the API samples with recorders; it never imports this module

        try:
            with job_threads(1):
                if self.task is not None:
                    res = self.task(self.recorder)
                else:
                    res = sample_chains(self.energy, self.n, self.steps, self.sampler, self.seed, x0=self.x0,
                                        callback=self.recorder, **self.options)
                self.recording = self.recorder.finish(res.x)
                self.recording.meta["accept_rate"] = res.accept_rate
                self.recording.meta["adapted"] = bool(getattr(res, "adapted", False))
                self.recording.adapting = False
        except BaseException as e:  # handed to the thread reading snapshots, which raises it
            self.error = e
        finally:
            self.done.set()

    def stop(self) -> None:
        self.stop_flag.set()

    def snapshots(self, every: float = SNAPSHOT_EVERY_S) -> Iterator[Recorder]:
        """Start the chains; yield the recorder every ``every`` seconds while they run; return when
        done (raising the worker's error, if any)."""
        self.thread.start()
        try:
            while not self.done.wait(every):
                self.last_pull = time.monotonic()
                if self.recorder.latest is not None:
                    yield self.recorder
                self.last_pull = time.monotonic()
        finally:
            self.stop_flag.set()
        if self.error is not None:
            raise self.error
        if self.store is not None:
            self.store.put(self.recording)


class Jobs:
    """The running chain jobs by key (a session and a tab), so a Stop button can end them early and a
    new run from the same page replaces the old one."""

    def __init__(self):
        self._jobs: dict[tuple, ChainJob] = {}
        self._lock = threading.Lock()

    def start(self, key: tuple, job: ChainJob) -> None:
        if key[0] is None:  # no session: nothing could stop it by key
            return
        with self._lock:
            old = self._jobs.get(key)
            if old is not None:
                old.stop()
            self._jobs[key] = job

    def end(self, key: tuple, job: ChainJob) -> None:
        with self._lock:
            if self._jobs.get(key) is job:
                del self._jobs[key]

    def stop(self, key: tuple) -> bool:
        with self._lock:
            job = self._jobs.get(key)
        if job is not None:
            job.stop()
        return job is not None

    def running(self) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if not j.done.is_set())
