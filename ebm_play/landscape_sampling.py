"""Samplers side by side on a 2-D landscape: settings that suit the square, and a comparison that
runs several samplers from the same start with the same noise seed, counting what tells them
apart: acceptance, the share of particles in each mode, and how often chains hop between modes.

Why a comparison object rather than one call: a page streams it (:meth:`Comparison.run` yields
between steps, so a caller can draw frames and stop early), and an API caller gets the same
numbers from :meth:`Comparison.result`. Every sampler is the engine's own (``ebm_play.samplers``).

    from ebm_play import landscapes as L
    from ebm_play.landscape_sampling import Comparison, sampler_options

    well = L.landscape("double_well")
    cmp = Comparison(well, [("A", "mala", sampler_options("mala")), ("B", "annealed", sampler_options("annealed"))],
                     steps=600, chains=300, modes=L.modes_of(well))
    for _ in cmp.run():
        pass
    cmp.result()["samplers"][1]["chains_hopped"]   # annealing lets chains cross the barrier
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from . import landscapes as L
from . import validate
from .errors import EBMError
from .runtime import make_generator
from .samplers import SAMPLERS, Step

# What suits the square at temperature 1 (the trained landscapes are fitted at T = 1): the
# reference-form Langevin with noise √(2·step) is textbook Langevin at T = 1.
SAMPLER_DEFAULTS = {
    "langevin": dict(step_size=0.002, noise=round(0.004 ** 0.5, 4), temperature=None),
    "ula": dict(step_size=0.002, noise=None, temperature=1.0),
    "mala": dict(step_size=0.005, noise=None, temperature=1.0),
    "hmc": dict(step_size=0.03, noise=None, temperature=1.0),
    "annealed": dict(step_size=0.005, noise=None, temperature=1.0),
}
T_START = 20.0  # annealing starts hot enough to cross the double well's barrier (8) easily
LEAPFROG = 10
GRAD_CLAMP = 50.0  # the reference form's gradient clamp, as in 2-D training (never binds in practice)
STARTS = ("uniform", "first_mode")
MAX_CHAINS, MAX_STEPS = 1000, 5000
FRAMES = 60  # states kept per side for an animation, whatever the number of steps …
FRAME_CHAINS = 300  # … of at most this many chains (more are a blur; a session keeps its last animation)


def sampler_options(name: str, step_size=None, noise=None, temperature=None, t_start=None, side: str = "") -> dict:
    """Options for ``SAMPLERS[name]`` on the square; None takes the 2-D default. ``side`` prefixes
    the field names in messages ("A step size …")."""
    if name not in SAMPLER_DEFAULTS:
        raise EBMError(f"unknown sampler {name!r}{' for sampler ' + side if side else ''}; "
                       f"choose one of: {', '.join(SAMPLER_DEFAULTS)}")
    d, p = SAMPLER_DEFAULTS[name], f"{side} " if side else ""
    step = validate.number(f"{p}step size", d["step_size"] if step_size is None else step_size, 1e-7, 1.0)
    opts: dict = {"step_size": step, "bounds": L.BOUNDS}
    if name == "langevin":
        opts["noise"] = validate.number(f"{p}noise", d["noise"] if noise is None else noise, 0, 1)
        opts["grad_clamp"] = GRAD_CLAMP
        return opts
    t = validate.number(f"{p}temperature", 1.0 if temperature is None else temperature, 1e-4, 1e4)
    if name == "annealed":
        t0 = validate.number("annealing start temperature", T_START if t_start is None else t_start, 1e-4, 1e5)
        opts.update(base="mala", t_end=t, t_start=t0)
    else:
        opts["temperature"] = t
        if name == "hmc":
            opts["leapfrog"] = LEAPFROG
    return opts


def describe(name: str, opts: dict) -> str:
    """``mala (step 0.005, T 1)``: a sampler and the settings that matter, for tables."""
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


@dataclass
class Side:
    """One sampler of a comparison, and what it has done so far."""

    label: str
    sampler: str
    options: dict
    chain: Iterator[Step]
    tracker: L.ModeTracker | None
    accept: list[float] = field(default_factory=list)  # mean acceptance of each update (MALA, HMC)
    last: Step | None = None

    def summary(self) -> dict:
        s = {"side": self.label, "sampler": self.sampler,
             "options": {k: v for k, v in self.options.items() if k != "bounds"},
             "accept_rate": round(float(np.mean(self.accept)), 4) if self.accept else None,
             "mean_energy": round(float(self.last.energy.mean()), 4) if self.last is not None else None}
        return {**s, **(self.tracker.summary() if self.tracker is not None else {})}


class Comparison:
    """Samplers ``[(label, sampler, options), …]`` (see :func:`sampler_options`) run side by side on
    ``energy`` for ``steps`` updates of ``chains`` chains: all start from the same points (uniform
    over the square, or all in the first of ``modes``) and draw their noise from the same seed.
    With ``modes`` (:func:`ebm_play.landscapes.modes_of`), each side tracks mode shares and hops."""

    def __init__(self, energy, samplers: list[tuple[str, str, dict]], steps: int = 600, chains: int = 300,
                 seed: int = 0, start: str = "first_mode", modes: L.Modes | None = None):
        self.steps = validate.whole("steps", steps, 1, MAX_STEPS)
        self.chains = validate.whole("chains", chains, 1, MAX_CHAINS)
        seed = validate.whole("seed", seed, 0, 2**31 - 1)
        if start not in STARTS:
            raise EBMError(f"start must be one of: {', '.join(STARTS)}")
        if not samplers:
            raise EBMError("choose at least one sampler")
        self.energy, self.modes, self.start, self.seed = energy, modes, start, seed
        x0 = L.start_points(start, modes, self.chains, seed)
        self.sides = [Side(label, name, opts,
                           SAMPLERS[name](energy, x0.clone(), self.steps, generator=make_generator(seed + 1, x0.device),
                                          **opts),
                           L.ModeTracker(modes, self.chains) if modes is not None else None)
                      for label, name, opts in samplers]
        self.step = -1  # the last state every side has reached (0 = the start)
        self.frames: list[tuple[int, list[np.ndarray]]] = []  # (step, each side's chains), for an animation
        self._keep_every = max(1, self.steps // FRAMES)

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def advance(self) -> None:
        """One update of every side (the first call records the start)."""
        if self.done:
            return
        self.step += 1
        for s in self.sides:
            s.last = rec = next(s.chain)
            if rec.accept is not None:
                s.accept.append(float(rec.accept.mean()))
            if s.tracker is not None:
                s.tracker.update(rec.x, step=self.step)
        if self.step % self._keep_every == 0 or self.done:
            self.frames.append((self.step, [s.last.x[:FRAME_CHAINS].detach().cpu().numpy().astype(np.float16)
                                            for s in self.sides]))

    def run(self, every_s: float = 0.15) -> Iterator[int]:
        """Advance to the end, yielding the step reached at most every ``every_s`` seconds and once
        at the end (closing the iterator stops the chains)."""
        shown = 0.0
        while not self.done:
            self.advance()
            if not self.done and time.monotonic() - shown >= every_s:
                shown = time.monotonic()
                yield self.step
        yield self.step

    def particles(self) -> list[np.ndarray]:
        """Each side's current chains (N×2)."""
        return [s.last.x.detach().cpu().numpy() for s in self.sides if s.last is not None]

    def result(self) -> dict:
        """What each side did: acceptance, mean energy and, with modes, mode shares and hopping."""
        return {"steps": self.steps, "chains": self.chains, "start": self.start,
                "modes": None if self.modes is None else self.modes.k,
                "samplers": [s.summary() for s in self.sides]}
