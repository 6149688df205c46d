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

# Measured on the shipped models, 32 chains from uniform noise, seed 0 (README "Sampler defaults"):
# share of chains the evaluation classifier is >0.9 sure of / digit classes among them, mnist and mnist-jem
#   ula       T 1e-5, α 1e-4, 300 steps:                                  0.97 / 10, 0.88 / 9
#   mala      T 5e-6: 150 ULA burn-in updates, then α adapted to 0.57:    1.00 / 10, 0.97 / 10
#   hmc       T 1e-5, 3 leapfrog: 100 burn-in, then ε adapted to 0.7:     0.91 / 7,  0.75 / 9
#   annealed  ULA from T 1e-3 down to 3e-6:                               0.97 / 10, 0.88 / 10
# tests/test_settings.py checks every pair. The Metropolis samplers need the burn-in: from noise, E/T
# at these temperatures is ~10⁷ and so steep that an exact step must be minute (MALA stayed on noise,
# acceptance 0.00). At T = 1e-4 (the previous default) their stationary law is grainy; much colder,
# exact chains find the model's lowest energies: ones (HMC at 3e-6: 18 of 32) or, on the JEM,
# non-digit scribbles below any digit's energy. The soft wall (a penalty for pixels outside [−1, 1],
# not tempered) at 1000 lets pixels overshoot by ~0.02 without rejecting the −1 background.
_LOW_T = {
    "ula": {"steps": 300, "step_size": 1e-4, "temperature": 1e-5},
    "mala": {"steps": 250, "burn_in": 150, "step_size": 1e-4, "adapt": True, "temperature": 5e-6, "wall": 1000.0},
    "hmc": {"steps": 200, "burn_in": 100, "step_size": 0.014, "adapt": True, "leapfrog": 3, "temperature": 1e-5,
            "wall": 1000.0},
    "annealed": {"steps": 300, "base": "ula", "step_size": 1e-4, "t_start": 1e-3, "t_end": 3e-6},
}
KIND_DEFAULTS: dict[str, dict[str, dict]] = {
    "cnn": _LOW_T,
    "jem": _LOW_T,
    "jem-ensemble": _LOW_T,
    "composed": _LOW_T,
    "rbm": {
        "ula": {"steps": 200, "step_size": 1e-3, "temperature": 0.1},
        "mala": {"steps": 200, "step_size": 3e-4, "temperature": 0.1},
        "hmc": {"steps": 100, "step_size": 1e-2, "leapfrog": 5, "temperature": 0.1},
        "annealed": {"steps": 300, "base": "ula", "step_size": 1e-3, "t_start": 10.0, "t_end": 0.1},
    },
}
# Models whose own unconditional samples are not digits under any sampler's defaults, with the reason
# (measured, 32 chains): a UI should not offer them for sampling (they still score and classify).
NOT_FOR_SAMPLING: dict[str, str] = {
    "jem-ensemble": "an average of runaway JEM detectors, built to score out-of-distribution inputs: its chains "
                    "end on blobs (reference Langevin: 31 of 32 classified 8) or, with a 10× step, on 2s and 3s "
                    "only; sample with mnist or mnist-jem",
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
    "burn_in": ("burn-in updates", 0, 1_000_000),
    "warmup": ("warm-up updates", 0, 1_000_000),
    "target_accept": ("target acceptance", 0.01, 0.99),
}
WHOLE_KNOBS = ("leapfrog", "burn_in", "warmup")


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
        """Chains × gradient evaluations per chain (a burn-in update takes one): what a request
        costs, for budgets."""
        burn = min(int(self.options.get("burn_in", 0) or 0), self.steps)
        return chains * (burn + (self.steps - burn) * self.gradients())

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


def default_sampler(model: nn.Module | None) -> str:
    """The model's own sampler, named in its file (``info["sampler"]``: ``ladder`` for a dsm model),
    else ``langevin`` (files written before the objectives existed, composed energies)."""
    info = getattr(model, "info", None)
    name = info.get("sampler") if isinstance(info, dict) else None
    return name if name in samplers.SAMPLERS and name in applicable(model) else "langevin"


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
    return validate.whole(name, v, lo, hi) if key in WHOLE_KNOBS else validate.number(name, v, lo, hi)


def _allowed(sampler: str, base: str | None) -> set[str]:
    if sampler == "annealed":
        return (set(samplers.sampler_options(base)) - {"temperature", "generator"}) | {"t_start", "t_end", "base"}
    return set(samplers.sampler_options(sampler)) - {"generator"}


def resolve(model: nn.Module | None, sampler: str, steps=None, **changes) -> Settings:
    """The settings ``sampler`` runs with on ``model``: :func:`recommended`, then ``changes`` (a value
    of None keeps the recommendation; knobs the sampler does not have are ignored, so one form can
    send all its fields). ``temperature`` means the final temperature for annealed sampling.

    Two knobs follow the others: a caller's ``step_size`` for MALA or HMC is used as given (``adapt``
    False) unless the caller also asks for ``adapt``; and a recommended ``burn_in`` keeps its share
    of the updates when the caller picks another number of steps."""
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
    steps = default_steps if steps is None else validate.whole("steps", steps, 0, MAX_STEPS)
    options = {k: v for k, v in rec.items() if k in allowed}
    if "burn_in" in options and changes.get("burn_in") is None:
        share = options["burn_in"] / max(recommended(model, base or sampler)["steps"], 1)
        options["burn_in"] = min(round(share * steps), steps)
    return Settings(sampler, int(steps), merge(options, _checked(changes, allowed)))


def _checked(changes: dict, allowed: set[str]) -> dict:
    return {k: _knob(k, v) if k in KNOBS else v for k, v in changes.items() if v is not None and k in allowed}


def merge(options: dict, changes: dict) -> dict:
    """``options`` updated with a caller's ``changes``: a step size given without ``adapt`` switches
    the step-size adaptation off (the step is used as given), so what runs is what was asked for."""
    out = {**options, **changes}
    if "adapt" in options and changes.get("step_size") is not None and "adapt" not in changes:
        out["adapt"] = False
    return out


def sampling_caveat(model: nn.Module | None) -> str | None:
    """Why ``model`` should not be offered for unconditional sampling, or None when its samples are
    digits (a model file may say so too: ``info["not_for_sampling"]``, a reason)."""
    info = getattr(model, "info", None)
    own = info.get("not_for_sampling") if isinstance(info, dict) else None
    return own if isinstance(own, str) else NOT_FOR_SAMPLING.get(getattr(model, "kind", None))


def offered(model: nn.Module | None) -> tuple[str, ...]:
    """The samplers a UI should offer for ``model``: block Gibbs for an RBM, the noise ladder for a
    dsm energy, the gradient samplers for other energies, none for a model :func:`sampling_caveat` rules out. Each (sampler, shipped model)
    pair offered is checked to give digits at its defaults (tests/test_settings.py)."""
    if sampling_caveat(model) is not None:
        return ()
    if getattr(model, "kind", None) == "rbm":
        return ("gibbs",)
    if "ladder" in applicable(model):  # a dsm energy: plain samplers see only its σ_min level
        return ("ladder",)
    return tuple(s for s in applicable(model) if s in samplers.GRADIENT_SAMPLERS)


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
