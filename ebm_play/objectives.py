"""Training objectives: each loss lives here once, used by the trainer (and so by the CLI, the app
and torchrun alike).

- ``cd``: contrastive divergence, E(real) − E(fake) + α(E(real)² + E(fake)²), fakes from MCMC (the
  trainer's replay buffer). The reference recipe.
- ``dsm``: denoising score matching over a geometric ladder of noise levels σ_max … σ_min (NCSN,
  Song & Ermon 2019) with the energy parameterisation: the model gives E(x, σ) and its score is
  −∇ₓE. The loss at level σ, weighted by σ² so that every level counts alike, is
  ½‖σ∇ₓE(x + σz, σ) − z‖² per dimension (0.5 = predicting no score at all). No MCMC in training.
- ``nce``: noise-contrastive estimation (Gutmann & Hyvärinen 2010): tell data from ν× as many
  samples of a known noise distribution q by the log-ratio G(x) = −E(x) − log Z − log q(x) − log ν,
  with log Z a learned constant; at the optimum exp(−E(x) − log Z) is the data density.

Energy convention as everywhere: lower energy = more data-like, p(x) ∝ exp(−E(x)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import EBMError

OBJECTIVES = ("cd", "dsm", "nce")
NCE_NOISES = ("gaussian", "uniform")
ABOUT = {  # one sentence each, for help texts and the Train tab
    "cd": "Contrastive divergence: push the energy down on data and up on MCMC samples of the model (a replay "
          "buffer refined by Langevin); the reference recipe, with MCMC inside every update.",
    "dsm": "Denoising score matching: the energy's slope −∇E(x, σ) learns to point noisy digits back to clean "
           "ones, at every noise level of a ladder; no MCMC while training, annealed Langevin down the ladder to sample.",
    "nce": "Noise-contrastive estimation: the energy learns to tell data from samples of a known noise "
           "distribution, with a learned log-partition constant; no MCMC while training.",
}


def cd_loss(e_real: torch.Tensor, e_fake: torch.Tensor, alpha: float) -> torch.Tensor:
    """Contrastive divergence with an energy-magnitude penalty: pushes E down at data, up at fakes."""
    return e_real.mean() - e_fake.mean() + alpha * (e_real.pow(2).mean() + e_fake.pow(2).mean())


# --- denoising score matching -------------------------------------------------------------------
def noise_ladder(sigma_max: float, sigma_min: float, levels: int) -> torch.Tensor:
    """The geometric ladder σ_max = σ_0 > σ_1 > … > σ_{L−1} = σ_min (float32, (L,))."""
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= 1000:
        raise EBMError(f"levels must be a whole number from 1 to 1000, got {levels!r}")
    for name, v in (("sigma_max", sigma_max), ("sigma_min", sigma_min)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise EBMError(f"{name} must be a positive number, got {v!r}")
    if sigma_min > sigma_max or (levels > 1 and sigma_min == sigma_max):
        raise EBMError(f"sigma_min ({sigma_min}) must be below sigma_max ({sigma_max})")
    if levels == 1:
        return torch.tensor([float(sigma_min)])
    t = torch.arange(levels, dtype=torch.float64) / (levels - 1)
    return (sigma_max * (sigma_min / sigma_max) ** t).float()


def dsm_loss(energy, x: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-sample denoising score matching loss, ½ mean_d (σ ∂E(x̃, σ)/∂x̃_d − z_d)², x̃ = x + σz.

    ``energy(x̃, sigma)`` returns (N,) energies; ``sigma`` is each sample's level (N,), ``z`` standard
    normal noise shaped like ``x``. The gradient is taken with ``create_graph`` so that the loss
    can be differentiated by the weights (double backpropagation)."""
    s = sigma.view(-1, *[1] * (x.dim() - 1))
    noisy = (x + s * z).detach().requires_grad_(True)
    e = energy(noisy, sigma)
    (g,) = torch.autograd.grad(e.sum(), noisy, create_graph=True)
    return 0.5 * (s * g - z).flatten(1).pow(2).mean(1)


def levels_of_batch(n: int, levels: int, device=None) -> torch.Tensor:
    """Level index of each sample of a batch: stratified (j mod L), so every level is in every
    batch and the per-level losses can be logged each update (the batch order is already random)."""
    return torch.arange(n, device=device) % levels


# --- noise-contrastive estimation ---------------------------------------------------------------
class UniformNoise:
    """Uniform noise on the box [−1, 1]^D, the space every ebm_play sample lives in."""

    name = "uniform"

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)
        self.dim = math.prod(self.shape)

    def sample(self, n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        return torch.rand((n, *self.shape), generator=generator, device=device) * 2 - 1

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x),), -self.dim * math.log(2.0), device=x.device)

    def describe(self) -> str:
        return f"uniform on [-1, 1]^{self.dim}"


class GaussianNoise:
    """N(μ, Σ) fitted to the data (at most ``max_points`` of it), Σ's eigenvalues floored at
    ``floor`` so that it is invertible: close to the data, so the classification is not trivial."""

    name = "gaussian"

    def __init__(self, data: torch.Tensor, floor: float = 1e-3, max_points: int = 10_000):
        self.shape = tuple(data.shape[1:])
        x = data[:max_points].flatten(1).double().cpu()
        if len(x) < 2:
            raise EBMError("fitting the NCE noise Gaussian needs at least 2 data points")
        self.mean = x.mean(0)
        cov = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
        evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp_min(floor)
        self.scale = (evecs * evals.sqrt()).float()  # Σ^½ (up to a rotation): noise = μ + scale·ε
        self.whiten = (evecs / evals.sqrt()).float()  # (x − μ)·whiten = Σ^−½-whitened coordinates
        self.mean = self.mean.float()
        self.log_norm = float(-0.5 * (evals.log().sum() + x.shape[1] * math.log(2 * math.pi)))

    def sample(self, n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        eps = torch.randn((n, len(self.mean)), generator=generator, device=device)
        return (self.mean.to(device) + eps @ self.scale.T.to(device)).view(n, *self.shape)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        w = (x.flatten(1) - self.mean.to(x.device)) @ self.whiten.to(x.device)
        return self.log_norm - 0.5 * w.pow(2).sum(1)

    def describe(self) -> str:
        return f"Gaussian fitted to the data (dimension {len(self.mean)})"


def nce_noise(kind: str, data: torch.Tensor):
    """The noise distribution ``kind`` (``gaussian`` fitted to ``data``, or ``uniform`` on the box)."""
    if kind == "uniform":
        return UniformNoise(tuple(data.shape[1:]))
    if kind == "gaussian":
        return GaussianNoise(data)
    raise EBMError(f"unknown NCE noise {kind!r}; use {' or '.join(NCE_NOISES)}")


def nce_logits(e: torch.Tensor, log_q: torch.Tensor, ratio: int) -> torch.Tensor:
    """G(x) = log p_model(x) − log(ν q(x)) for energies ``e`` that already include log Z."""
    return -e - log_q - math.log(ratio)


def nce_loss(g_data: torch.Tensor, g_noise: torch.Tensor, ratio: int) -> torch.Tensor:
    """−[E_data log σ(G) + ν E_noise log(1 − σ(G))], the NCE logistic loss per data point."""
    return F.softplus(-g_data).mean() + ratio * F.softplus(g_noise).mean()


def nce_accuracy(g_data: torch.Tensor, g_noise: torch.Tensor) -> float:
    """Share of data and noise samples the log-ratio classifies right (G > 0 means data)."""
    right = (g_data > 0).sum() + (g_noise < 0).sum()
    return (right.float() / (len(g_data) + len(g_noise))).item()


# --- what each objective's curves are ------------------------------------------------------------
def metric_names(objective: str, levels: list[float] | None = None, model: str = "cnn") -> dict[str, str]:
    """The history keys that mean something for ``objective`` (in ``Trainer.state.history`` rows),
    each with a label for a curve. ``levels`` is the DSM noise ladder (one loss curve per level)."""
    common = {"loss": "loss", "grad_norm": "gradient norm", "lr": "learning rate", "steps_per_s": "steps/s"}
    if objective == "cd":
        out = {"e_real": "E(real)", "e_fake": "E(fake)", "gap": "gap E(fake) − E(real)"}
        if model == "jem":
            out.update(ce="cross-entropy", accuracy="batch accuracy")
        return {**common, **out}
    if objective == "dsm":
        out = {f"dsm_loss_{i}": f"loss at σ = {s:.3g}" for i, s in enumerate(levels or [])}
        return {**common, **out}
    if objective == "nce":
        return {**common, "nce_accuracy": "classification accuracy (data vs noise)", "log_z": "log Z",
                "e_real": "E(data)", "e_noise": "E(noise)"}
    raise EBMError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
