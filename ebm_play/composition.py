"""Products of experts: energies added with weights, plus hand-made constraint energies.

p(x) ∝ Π p_i(x)^{w_i} ⇔ E(x) = Σ w_i E_i(x). A negative weight subtracts an expert ("a 3 but not
an 8"). Constraints are small differentiable energies that encode domain knowledge; each is
scaled so that a weight of about 1 matters next to a trained model's energy differences.
Composed energies are ordinary :class:`EnergyModel`s, so every sampler works on them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from . import validate
from .api import score
from .errors import EBMError
from .models import EnergyModel, JEMEnergy, JEMEnsemble


class ClassEnergy(EnergyModel):
    """E(x, y) = −f(x)[y] of a JEM model: the expert for "a digit y". Given several labels it is the
    expert for "any of these digits": E(x, S) = −log Σ_{y∈S} exp f(x)[y] (one label: the same)."""

    kind = "class"

    def __init__(self, jem: JEMEnergy | JEMEnsemble, label: int | Sequence[int]):
        labels = [int(label)] if isinstance(label, (int, float)) else [int(y) for y in label]
        super().__init__(label=labels[0] if len(labels) == 1 else labels)
        if not getattr(jem, "has_classes", False):
            raise EBMError("class experts need a JEM model")
        n = jem.config["n_classes"]
        if not labels or len(set(labels)) != len(labels) or not all(0 <= y < n for y in labels):
            raise EBMError(f"class must be between 0 and {n - 1} (distinct, at least one), got {label}")
        self.jem, self.labels = jem, labels
        self.label = labels[0] if len(labels) == 1 else None
        self.eval()  # wrappers share their experts: sampling must not flip those into training mode

    def forward(self, x):
        if self.label is not None:
            return self.jem(x, self.label)
        return -torch.logsumexp(self.jem.logits(x)[:, self.labels], dim=1)

    def energy_and_grad(self, x):
        if self.label is not None:
            return self.jem.energy_and_grad(x, self.label)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            e = self.forward(x)
            (g,) = torch.autograd.grad(e.sum(), x)
        return e.detach(), g


def _ink(x):
    return ((x + 1) / 2).flatten(1).mean(1)


class InkEnergy(EnergyModel):
    """((ink − target)/scale)²: total ink (mean pixel intensity in [0, 1]) near a target.
    MNIST digits have ink ≈ 0.13 on average; 0.25 asks for thick strokes."""

    kind = "ink"

    def __init__(self, target: float = 0.13, scale: float = 0.05):
        super().__init__(target=float(target), scale=float(scale))
        if scale <= 0:
            raise EBMError("ink scale must be positive")

    def forward(self, x):
        return ((_ink(x) - self.config["target"]) / self.config["scale"]).pow(2)


class SymmetryEnergy(EnergyModel):
    """Mean squared difference between the image and its left–right mirror, in ink units ×100."""

    kind = "symmetry"

    def forward(self, x):
        d = ((x - torch.flip(x, dims=[-1])) / 2).pow(2)
        return 100 * d.flatten(1).mean(1)


class SketchEnergy(EnergyModel):
    """Closeness to a user's sketch: mean squared distance where the sketch has ink, ×100.
    Blank parts of the sketch are left free, so the model fills them in."""

    kind = "sketch"

    def __init__(self, sketch: torch.Tensor, only_ink: bool = True):
        super().__init__(only_ink=bool(only_ink))
        sketch = sketch.reshape(1, 1, 28, 28).float()
        self.register_buffer("sketch", sketch)
        self.register_buffer("weight", (sketch > -0.5).float() if only_ink else torch.ones_like(sketch))

    def forward(self, x):
        d = self.weight * (x - self.sketch).pow(2) / 4
        return 100 * d.flatten(1).sum(1) / self.weight.sum().clamp(min=1)


@dataclass
class Expert:
    name: str
    energy: nn.Module
    weight: float = 1.0
    enabled: bool = True


class ComposedEnergy(EnergyModel):
    """E(x) = Σ_i w_i E_i(x) over the enabled experts."""

    kind = "composed"

    def __init__(self, experts: list[Expert]):
        super().__init__()
        if not experts:
            raise EBMError("a composed energy needs at least one expert")
        self.experts = list(experts)
        self._modules_list = nn.ModuleList(e.energy for e in self.experts)
        if not any(e.enabled and e.weight != 0 for e in self.experts):
            raise EBMError("every expert is switched off or has weight 0")
        self.eval()

    def forward(self, x):
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for e in self.experts:
            if e.enabled and e.weight != 0:
                total = total + e.weight * e.energy(x)
        return total

    def energy_and_grad(self, x):
        """Σ_i w_i (E_i, ∇E_i), each expert through its own (possibly written-out) gradient."""
        from .samplers import energy_and_grad

        total, grad = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device), torch.zeros_like(x)
        for e in self.experts:
            if e.enabled and e.weight != 0:
                ei, gi = energy_and_grad(e.energy, x)
                total, grad = total + e.weight * ei, grad + e.weight * gi
        return total, grad

    def noise_ladder(self) -> torch.Tensor | None:
        """The noise ladder of the first noise-conditional expert (a dsm model), None without one:
        the ``ladder`` sampler then walks the whole sum down that ladder."""
        for e in self.experts:
            if e.enabled and e.weight != 0 and hasattr(e.energy, "at_noise"):
                return e.energy.noise_ladder()
        return None

    def at_noise(self, sigma: float) -> "ComposedEnergy":
        """The sum with each noise-conditional expert at noise level σ; the other experts as they are."""
        return ComposedEnergy([Expert(e.name, e.energy.at_noise(sigma) if hasattr(e.energy, "at_noise") else e.energy,
                                      e.weight, e.enabled) for e in self.experts])

    @torch.no_grad()
    def terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each expert's own (unweighted) energy, to plot which term pulls where."""
        return {e.name: e.energy(x) for e in self.experts if e.enabled}


def compose(*pairs: tuple[nn.Module, float], names: list[str] | None = None) -> ComposedEnergy:
    """``compose((model, 1.0), (ClassEnergy(jem, 3), 1.0), (ClassEnergy(jem, 8), -0.5))``."""
    names = names or [getattr(m, "kind", type(m).__name__) + f"#{i}" for i, (m, _) in enumerate(pairs)]
    return ComposedEnergy([Expert(n, m, float(w)) for n, (m, w) in zip(names, pairs)])


@torch.no_grad()
def ensemble(jems: list[JEMEnergy], digits: torch.Tensor) -> JEMEnsemble:
    """JEMs of one architecture as one :class:`JEMEnsemble`, each member's energy standardised
    (mean μ_i, standard deviation σ_i) on ``digits``, real digits the members were trained on."""
    if not jems or any(not isinstance(m, JEMEnergy) for m in jems):
        raise EBMError("an ensemble is made of JEM models")
    if any(m.config != jems[0].config for m in jems):
        raise EBMError("the ensemble's JEM models must have the same width and classes")
    if len(digits) < 2:
        raise EBMError("standardising the members needs at least 2 digits")
    out = JEMEnsemble(len(jems), **jems[0].config)
    for i, m in enumerate(jems):
        out.members[i].load_state_dict(m.state_dict())
        e = score(m, digits)
        out.shift[i], out.scale[i] = e.mean(), e.std()
    out.check()
    return out.eval()


# --- experts from a list of specs (the app's /compose, the Compose tab, the recipes) ---------------------
# The same as main's build_energy (commit 04eea46), plus label sets for class experts ("label": [0, 1, 8]).
EXPERT_KINDS = ("model", "class", "ink", "symmetry", "sketch")
MAX_EXPERTS = 8
MAX_WEIGHT = 10.0
ModelOf = Callable[[str | None], tuple[nn.Module, str]]  # a model's name (None: the default) → (model, label)


def _labels(i: int, label) -> list[int]:
    """A class expert's label, or labels: one class 0–9, or a list of distinct ones."""
    ys = [validate.whole(f"expert {i} class", y, 0, 9) for y in (label if isinstance(label, list) else [label])]
    if not ys or len(set(ys)) != len(ys):
        raise EBMError(f"expert {i}: the classes must be distinct, at least one")
    return ys


def _expert(i: int, e: dict, model_of: ModelOf, jem: str | None, sketch: torch.Tensor | None) \
        -> tuple[nn.Module, str] | None:
    """One expert spec → (energy, name); None for a sketch expert without a sketch that does not count."""
    kind = e["expert"]
    if kind == "model":
        m, label = model_of(e.get("model") or None)
        return m, label.split(" (")[0] + (" E(x)" if getattr(m, "has_classes", False) else "")
    if kind == "class":
        ys = _labels(i, e.get("label"))
        key = e.get("model") or jem
        if key is None:
            raise EBMError("class experts need a JEM model, and none is loaded")
        m, _ = model_of(key)
        if not getattr(m, "has_classes", False):
            raise EBMError(f"expert {i}: class experts need a JEM model; {key} is a {m.kind} model")
        words = f"{', '.join(map(str, ys[:-1]))} or {ys[-1]}" if len(ys) > 1 else str(ys[0])
        return ClassEnergy(m, ys if len(ys) > 1 else ys[0]), f"{'an' if ys[0] == 8 else 'a'} {words}"
    if kind == "ink":
        t = validate.number(f"expert {i} ink target", e.get("target", 0.13), 0, 1)
        return InkEnergy(t, validate.number(f"expert {i} ink scale", e.get("scale", 0.05), 1e-3, 1)), f"ink {t:g}"
    if kind == "symmetry":
        return SymmetryEnergy(), "symmetry"
    if sketch is None:
        if e["on"] and e["weight"] != 0:
            raise EBMError("the sketch expert needs a sketch: draw on the pad (API: pass sketch=<image>)")
        return None
    return SketchEnergy(sketch), "sketch"


def build_energy(experts, model_of: ModelOf, jem: str | None = None, sketch: torch.Tensor | None = None,
                 device: str | torch.device = "cpu") -> tuple[ComposedEnergy, list[dict]]:
    """A list of expert specs (from a page or an API caller) checked and built into a ComposedEnergy.
    Each spec has ``expert`` (one of :data:`EXPERT_KINDS`), ``weight`` (±:data:`MAX_WEIGHT`), ``on``
    (default true) and its own fields: ``model`` (a name for ``model_of``; for "class" the JEM, default
    ``jem``), ``label`` (class 0–9, or a list of classes: "any of these"), ``target`` and ``scale``
    (ink). Returns the energy and the specs with their weights checked and a unique ``name`` each (the
    names of :meth:`ComposedEnergy.terms`)."""
    if not isinstance(experts, list) or not experts:
        raise EBMError('experts must be a non-empty list, e.g. [{"expert": "class", "label": 3, "weight": 1}]')
    if len(experts) > MAX_EXPERTS:
        raise EBMError(f"at most {MAX_EXPERTS} experts, got {len(experts)}")
    built, spec, names = [], [], set()
    for i, e in enumerate(experts, 1):
        if not isinstance(e, dict):
            raise EBMError(f"expert {i} must be an object with 'expert' and 'weight'")
        if e.get("expert") not in EXPERT_KINDS:
            raise EBMError(f"expert {i}: unknown kind {str(e.get('expert'))[:40]!r}; use one of {', '.join(EXPERT_KINDS)}")
        w = validate.number(f"expert {i} weight", e.get("weight", 1.0), -MAX_WEIGHT, MAX_WEIGHT)
        on = e.get("on", True)
        if not isinstance(on, bool):
            raise EBMError(f"expert {i}: 'on' must be true or false")
        e = {**e, "weight": w, "on": on}
        made = _expert(i, e, model_of, jem, sketch)
        if made is None:
            continue
        energy, name = made
        base, k = name, 2
        while name in names:
            name, k = f"{base} #{k}", k + 1
        names.add(name)
        built.append(Expert(name, energy.to(device).eval(), w, on))
        spec.append({**e, "name": name})
    return ComposedEnergy(built), spec


def evaluations(spec: list[dict]) -> int:
    """Trained models a composed energy evaluates per chain and step (its constraints cost next to
    nothing), at least 1: what a request's work budget counts."""
    return max(1, sum(1 for e in spec if e["on"] and e["weight"] != 0 and e["expert"] in ("model", "class")))


def models_of(models: Mapping[str, nn.Module]) -> ModelOf:
    """``model_of`` for :func:`build_energy` over a mapping of loaded models by name."""
    def model_of(name: str | None) -> tuple[nn.Module, str]:
        if name not in models:
            raise EBMError(f"unknown model {str(name)[:40]!r}; loaded: {', '.join(models) or 'none'}")
        return models[name], name
    return model_of


@dataclass(frozen=True)
class Recipe:
    """A ready-made composition: its experts (specs naming shipped models), the sampler settings it
    was measured with, and what it promises (checked by tests/test_composition.py)."""

    name: str
    experts: tuple[dict, ...]
    promise: str
    sampler: str = "langevin"
    steps: int = 100
    options: dict = field(default_factory=dict)

    def models(self) -> set[str]:
        return {e["model"] for e in self.experts if "model" in e}

    def energy(self, models: Mapping[str, nn.Module], device: str | torch.device = "cpu") -> ComposedEnergy:
        """The composed energy over ``models`` (loaded models by name, those of :meth:`models` at least)."""
        return build_energy([dict(e) for e in self.experts], models_of(models), device=device)[0]

    def sample(self, models: Mapping[str, nn.Module], n: int = 16, seed: int | None = 0,
               callback: Callable | None = None):
        """Run the recipe: a :class:`~ebm_play.samplers.SampleResult` of ``n`` chains."""
        from .api import sample_chains

        return sample_chains(self.energy(models), n, self.steps, self.sampler, seed, callback=callback,
                             **self.options)


def recipes(available: Mapping[str, nn.Module] | None = None) -> dict[str, Recipe]:
    """:data:`RECIPES`, or those whose models are all in ``available``."""
    if available is None:
        return dict(RECIPES)
    return {k: r for k, r in RECIPES.items() if r.models() <= set(available)}


def _model(name: str, w: float = 1.0) -> dict:
    return {"expert": "model", "model": name, "weight": w}


def _class(y: int, w: float = 1.0, model: str = "mnist-jem") -> dict:
    return {"expert": "class", "label": y, "model": model, "weight": w}


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    # Every recipe keeps the unconditional mnist model as the prior at weight 1: JEM class experts alone
    # give grey, noisy hybrids (JEM logits rise on patterns no digit has), and class weights of 0.01–0.1
    # are enough to steer it (a logit moves by tens where the prior's energy moves by tenths).
    Recipe("3 AND 8", (_model("mnist"), _class(3, 0.1), _class(8, 0.1)),
           "digit-like samples, at least 80% classified 3 or 8 (hybrids: often not confidently either)"),
    Recipe("3 but not 8", (_model("mnist"), _class(3, 0.1), _class(8, -0.03)),
           "at least 80% confident 3s, at most 5% classified 8"),
    Recipe("any digit but 1", (_model("mnist"), _class(1, -0.01)),
           "at most 5% 1s, at least 7 of the other 9 digits, 80% confidently classified"),
    Recipe("symmetric digits", (_model("mnist"), _class([0, 1, 8], 0.1), {"expert": "symmetry", "weight": 0.05}),
           "at least 75% classified 0, 1 or 8; left–right asymmetry under a third of test digits'"),
    Recipe("thick 0", (_model("mnist"), _class(0), {"expert": "ink", "target": 0.25, "weight": 0.3}),
           "at least 90% zeros, with more ink than the average test zero"),
]}
