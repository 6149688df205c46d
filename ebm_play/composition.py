"""Products of experts: energies added with weights, plus hand-made constraint energies.

p(x) ∝ Π p_i(x)^{w_i} ⇔ E(x) = Σ w_i E_i(x). A negative weight subtracts an expert ("a 3 but not
an 8"). Constraints are small differentiable energies that encode domain knowledge; each is
scaled so that a weight of about 1 matters next to a trained model's energy differences.
Composed energies are ordinary :class:`EnergyModel`s, so every sampler works on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .api import score
from .errors import EBMError
from .models import EnergyModel, JEMEnergy, JEMEnsemble


class ClassEnergy(EnergyModel):
    """E(x, y) = −f(x)[y] of a JEM model: the expert for "a digit y"."""

    kind = "class"

    def __init__(self, jem: JEMEnergy | JEMEnsemble, label: int):
        super().__init__(label=int(label))
        if not getattr(jem, "has_classes", False):
            raise EBMError("class experts need a JEM model")
        if not 0 <= int(label) < jem.config["n_classes"]:
            raise EBMError(f"class must be between 0 and {jem.config['n_classes'] - 1}, got {label}")
        self.jem, self.label = jem, int(label)
        self.eval()  # wrappers share their experts: sampling must not flip those into training mode

    def forward(self, x):
        return self.jem(x, self.label)

    def energy_and_grad(self, x):
        return self.jem.energy_and_grad(x, self.label)


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
