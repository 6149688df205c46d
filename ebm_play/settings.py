"""Sampler settings: one place that decides what a sampler runs with, for the API, the CLI and the app.

The order of precedence, lowest first:

1. the sampler's own keyword defaults (``samplers.sampler_options``);
2. this module's table per model kind (:data:`KIND_DEFAULTS`): models trained with the reference
   Langevin (step 10, noise 0.005) behave like Langevin at T ≈ 1e-6, so the textbook samplers
   need a small temperature on them, or they stay on noise;
3. the model file's own recommendation (``model.info["samplers"][name]``, written at training);
4. what the caller asks for (None = keep).

Every value a caller gives is validated here with its name, so a message says which knob is wrong.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from torch import nn

from . import samplers, validate
from .errors import EBMError

# Measured on the shipped models (16 chains; see the Sample tab):
#   cnn  ula  T 1e-5, α 1e-4: digits in 200 steps from uniform noise (E 5.37 → −0.11)
#        mala T 1e-4, α 1e-4, wall 1000: acceptance 0.45 from test digits, 0.66 from noise
#        hmc  T 1e-4, ε 0.01, 5 leapfrog, wall 1000: acceptance 0.65 from digits, 0.80 from noise
#   jem  mala α 5e-5 (1e-4 gives 0.35–0.47), hmc as cnn (0.64 / 0.73)
# The Metropolis samplers' soft wall (penalty for pixels outside [−1, 1], not tempered) at 1000
# lets pixels overshoot by ~0.02 without rejecting the −1 background; pictures and files clamp.
_LOW_T = {
    "ula": {"steps": 200, "step_size": 1e-4, "temperature": 1e-5},
    "mala": {"steps": 500, "step_size": 1e-4, "temperature": 1e-4, "wall": 1000.0},
    "hmc": {"steps": 100, "step_size": 1e-2, "leapfrog": 5, "temperature": 1e-4, "wall": 1000.0},
    "annealed": {"steps": 300, "base": "ula", "step_size": 1e-4, "t_start": 1e-2, "t_end": 1e-5},
}
KIND_DEFAULTS: dict[str, dict[str, dict]] = {
    "cnn": _LOW_T,
    "jem": {**_LOW_T, "mala": {**_LOW_T["mala"], "step_size": 5e-5}},
    "jem-ensemble": _LOW_T,
    "composed": _LOW_T,
    "rbm": {
        "ula": {"steps": 200, "step_size": 1e-3, "temperature": 0.1},
        "mala": {"steps": 200, "step_size": 3e-4, "temperature": 0.1},
        "hmc": {"steps": 100, "step_size": 1e-2, "leapfrog": 5, "temperature": 0.1},
        "annealed": {"steps": 300, "base": "ula", "step_size": 1e-3, "t_start": 10.0, "t_end": 0.1},
    },
}
MAX_STEPS = 1_000_000  # sampler updates one call may ask for; the app and the API set tighter budgets
MAX_WORK = 320_000  # chains × steps × gradient evaluations per step, per app request (~1 min on one CPU core)
# Samplers that need more of a model than an energy and its gradient: the attribute that says it has
# it, and what to tell a caller who picks one for another model.
NEEDS = {"gibbs": ("gibbs_step", "Gibbs sampling needs an RBM model (mnist-rbm)"),
         "ladder": ("at_noise", "the ladder sampler needs a noise-conditional model (trained with objective dsm)")}
BASES = ("langevin", "ula", "mala", "hmc")  # what annealed sampling may run under its schedule
# The knobs a person (or API caller) sets, with their names in messages and their ranges.
KNOBS = {
    "step_size": ("step size", 1e-12, 1e4),
    "noise": ("noise", 0.0, 10.0),
    "temperature": ("temperature", 1e-12, 1e6),
    "t_start": ("start temperature", 1e-12, 1e6),
    "t_end": ("temperature", 1e-12, 1e6),
    "leapfrog": ("leapfrog steps", 1, 100),
}


@dataclass
class Settings:
    """What a sampler runs with: the number of updates and its keyword options."""

    sampler: str
    steps: int
    options: dict = field(default_factory=dict)

    def gradients(self) -> int:
        """Gradient evaluations per chain per update (HMC: one per leapfrog step)."""
        if self.sampler == "hmc" or self.options.get("base") == "hmc":
            return int(self.options.get("leapfrog", 10))
        return 1

    def work(self, chains: int) -> int:
        """Chains × steps × gradients per step: what a request costs, for budgets."""
        return chains * self.steps * self.gradients()

    def check_work(self, chains: int, limit: int = MAX_WORK) -> None:
        """Refuse a request that costs more than ``limit`` (see :meth:`work`) before it starts."""
        work = self.work(chains)
        if work > limit:
            what = "chains × steps" + (" × leapfrog" if self.gradients() > 1 else "")
            raise EBMError(f"too much work for one request: {what} = {work:,}, the limit is {limit:,}; "
                           "use fewer chains or steps")


def check_sampler(name) -> str:
    if name not in samplers.SAMPLERS:
        raise EBMError(f"unknown sampler {name!r}; known: {', '.join(samplers.SAMPLERS)}")
    return name


def applicable(model: nn.Module | None) -> list[str]:
    """The samplers that can run on ``model``: Gibbs needs an RBM's conditionals and the noise ladder
    a noise-conditional energy; the gradient samplers run on every energy (composed ones too)."""
    return [s for s in samplers.SAMPLERS if s not in NEEDS or hasattr(model, NEEDS[s][0])]


def check_applicable(model: nn.Module | None, sampler: str, name: str = "this model") -> str:
    """``sampler``, if it can run on ``model`` (called ``name`` in the message), else an EBMError."""
    if check_sampler(sampler) not in applicable(model):
        raise EBMError(f"{NEEDS[sampler][1]}; {name} is a {getattr(model, 'kind', 'different')} model")
    return sampler


def _default_steps(sampler: str) -> int:
    return inspect.signature(samplers.SAMPLERS[sampler]).parameters["steps"].default


def recommended(model: nn.Module | None, sampler: str) -> dict:
    """The settings for ``sampler`` on ``model`` before any caller's changes (steps included)."""
    check_sampler(sampler)
    base = dict(KIND_DEFAULTS.get(getattr(model, "kind", None), {}).get(sampler, {}))
    info = getattr(model, "info", None)
    own = (info or {}).get("samplers", {}).get(sampler, {}) if isinstance(info, dict) else {}
    rec = {**base, **(own if isinstance(own, dict) else {})}
    rec.setdefault("steps", _default_steps(sampler))
    return rec


def _knob(key: str, v) -> float | int:
    name, lo, hi = KNOBS[key]
    return validate.whole(name, v, lo, hi) if key == "leapfrog" else validate.number(name, v, lo, hi)


def _allowed(sampler: str, base: str | None) -> set[str]:
    if sampler == "annealed":
        return (set(samplers.sampler_options(base)) - {"temperature", "generator"}) | {"t_start", "t_end", "base"}
    return set(samplers.sampler_options(sampler)) - {"generator"}


def resolve(model: nn.Module | None, sampler: str, steps=None, **changes) -> Settings:
    """The settings ``sampler`` runs with on ``model``: :func:`recommended`, then ``changes`` (a value
    of None keeps the recommendation; knobs the sampler does not have are ignored, so one form can
    send all its fields). ``temperature`` means the final temperature for annealed sampling."""
    rec = recommended(model, sampler)
    default_steps = rec.pop("steps")
    base = None
    if sampler == "annealed":
        base = changes.pop("base", None) or rec.get("base", "ula")
        if base not in BASES:
            raise EBMError(f"annealed sampling needs a gradient base sampler ({', '.join(BASES)}), not {base!r}")
        inner = {k: v for k, v in recommended(model, base).items() if k not in ("steps", "temperature")}
        rec = {**inner, **{k: v for k, v in rec.items() if k in ("t_start", "t_end")}, "base": base}
        if changes.get("temperature") is not None:
            changes.setdefault("t_end", changes["temperature"])
        changes.pop("temperature", None)
    allowed = _allowed(sampler, base)
    options = {k: v for k, v in rec.items() if k in allowed}
    for key, value in changes.items():
        if value is None or key not in allowed:
            continue
        options[key] = _knob(key, value) if key in KNOBS else value
    steps = default_steps if steps is None else validate.whole("steps", steps, 0, MAX_STEPS)
    return Settings(sampler, int(steps), options)


def shown(model: nn.Module | None, sampler: str, base: str | None = None) -> Settings:
    """What a form shows for ``sampler`` on ``model``: :func:`resolve` with the sampler's own defaults
    filled in for every knob it has, so no field is ever blank by accident."""
    s = resolve(model, sampler, base=base)
    inner = s.options.get("base", sampler) if sampler == "annealed" else sampler
    own = {k: v for k, v in samplers.sampler_options(inner).items() if k in KNOBS and isinstance(v, (int, float))}
    if sampler == "annealed":
        own.pop("temperature", None)
        own.update({k: v for k, v in samplers.sampler_options("annealed").items() if k in ("t_start", "t_end", "base")})
    return Settings(sampler, s.steps, {**own, **s.options})


def training_length(model: nn.Module) -> int | None:
    """Sampler steps per training update of a CD-trained image model (what its chains were trained to
    do), if the file says; chains run far past it drift."""
    info = getattr(model, "info", None) or {}
    cfg = info.get("train_config") or {}
    if getattr(model, "kind", "") in ("cnn", "jem") and isinstance(cfg.get("sampler_steps"), int):
        return cfg["sampler_steps"]
    steps = info.get("samplers", {}).get("langevin", {}).get("steps")
    return steps if isinstance(steps, int) else None
