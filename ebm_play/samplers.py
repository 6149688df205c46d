"""MCMC samplers for energy models: one implementation each, used by training, the CLI and the app.

Every sampler is a generator ``sampler(energy, x0, steps, **options)`` that yields a :class:`Step`
for the start (step 0) and after each of its ``steps`` updates, so a caller can stream frames and
plot energy against step. :func:`run` drives one to the end and collects what was asked for.

They all sample from the tempered, conditioned target

    p(x) ∝ exp(−U(x)),  U(x) = (E(x) + λ‖x − x_obs‖²) / T + wall(x),

where λ = ``data_weight`` (denoising), ``mask`` (1 = observed) holds pixels fixed at their ``x0``
values (inpainting), and ``wall`` is a soft quadratic penalty outside ``bounds`` used by the
Metropolis samplers (a hard clamp would break their detailed balance; the Langevin forms clamp).

A note on scales: the reference recipe (step 10, noise 0.005) is far from the textbook ratio
noise = sqrt(2·step); it behaves like Langevin at T ≈ noise²/(2·step) ≈ 1e-6. Models trained
with it therefore need a small ``temperature`` under ``ula``/``mala``/``hmc``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import EBMError, shown
from .runtime import make_generator
from .validate import number, whole

Energy = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Step:
    """One recorded state of the chains."""

    step: int  # updates applied so far (0 = start)
    x: torch.Tensor  # the chains
    energy: torch.Tensor  # (N,) model energy E(x), without temperature, data term or wall
    accept: torch.Tensor | None = None  # (N,) acceptance indicator of this update (MALA, HMC)
    temperature: float = 1.0
    step_size: float | None = None  # MALA, HMC: the step this update used (it changes during warm-up)
    warmup: bool = False  # MALA, HMC: a warm-up update (burn-in or step adaptation), not an exact MH step


@dataclass
class SampleResult:
    x: torch.Tensor  # final chains
    energy: torch.Tensor  # (N,) final energies
    energies: torch.Tensor  # (records, N) energy at each recorded step
    steps: list[int]  # the step number of each record
    frames: list[torch.Tensor] = field(default_factory=list)  # recorded chains, if asked for
    accept_rate: float | None = None  # mean acceptance over all updates and chains
    step_size: float | None = None  # MALA, HMC: the step of the last update (after warm-up: the fixed one)
    adapted: bool = False  # MALA, HMC: the step size was found by warm-up adaptation, not given


def energy_and_grad(energy: Energy, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E(x) and dE/dx; models may provide a faster ``energy_and_grad`` of their own."""
    own = getattr(energy, "energy_and_grad", None)
    if own is not None:
        return own(x)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = energy(x)
        (g,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), g


class CompiledEnergy(torch.nn.Module):
    """``energy`` whose energy-and-gradient step is compiled with ``torch.compile``, for large
    batches: on CUDA, mode "reduce-overhead" captures the whole step (forward and input gradient)
    in a CUDA graph, so a step costs one graph launch instead of dozens of kernel launches; on the
    CPU, inductor fuses the elementwise work. Every sampler picks it up through
    :func:`energy_and_grad`. Values equal the eager path's up to float rounding. The first call for
    each batch shape compiles (tens of seconds), so it pays off for long runs, not small requests."""

    def __init__(self, energy: Energy, mode: str | None = None):
        super().__init__()
        self.energy = energy
        self.mode = mode

        def value_and_grad(x):
            def total(x):
                e = energy(x)
                return e.sum(), e

            g, e = torch.func.grad(total, has_aux=True)(x)
            return e, g

        self._step = torch.compile(value_and_grad, mode=mode, dynamic=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.energy(x)

    def energy_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e, g = self._step(x.detach())
        return e.detach().clone(), g.clone()  # a CUDA graph's outputs are overwritten by its next replay


def compiled(energy: Energy, mode: str | None = None) -> CompiledEnergy:
    """``energy`` with a compiled energy-and-gradient step (see :class:`CompiledEnergy`); ``mode``
    defaults to "reduce-overhead" (CUDA graphs) on CUDA and torch.compile's default elsewhere."""
    if mode is None:
        params = list(getattr(energy, "parameters", lambda: [])())
        mode = "reduce-overhead" if params and params[0].is_cuda else "default"
    return CompiledEnergy(energy, mode)


class _Target:
    """U(x) and its gradient for one run: the model energy plus the cheap analytic terms."""

    def __init__(self, energy, x0, mask, x_obs, data_weight, bounds, wall):
        self.energy = energy
        self.free = None
        if mask is not None:
            mask = torch.as_tensor(mask, dtype=x0.dtype, device=x0.device)
            self.free = (1 - mask).expand_as(x0)
        if data_weight and x_obs is None:
            raise EBMError("data_weight needs x_obs, the image to stay close to")
        self.x_obs = None if x_obs is None else torch.as_tensor(x_obs, dtype=x0.dtype, device=x0.device)
        self.lam = float(data_weight)
        self.bounds = bounds
        self.wall = float(wall) if bounds is not None else 0.0

    def model(self, x):
        with torch.no_grad():
            return self.energy(x).detach()

    def data_term(self, x):
        """λ‖x − x_obs‖² per chain, and its gradient."""
        d = x - self.x_obs
        return self.lam * d.flatten(1).pow(2).sum(1), 2 * self.lam * d

    def wall_term(self, x):
        """wall·Σ(distance outside the bounds)² per chain, and its gradient."""
        lo, hi = self.bounds
        over = (x - hi).clamp(min=0) - (lo - x).clamp(min=0)
        return self.wall * over.flatten(1).pow(2).sum(1), 2 * self.wall * over

    def potential(self, x, T):
        """(U, ∇U, E) at x for temperature T. The wall is not tempered: a tempered wall at the
        small temperatures that trained models need rejects nearly every proposal."""
        e, ge = energy_and_grad(self.energy, x)
        u, g = e, ge
        if self.lam:
            du, dg = self.data_term(x)
            u, g = u + du, g + dg
        if T != 1:
            u, g = u / T, g / T
        if self.wall:
            wu, wg = self.wall_term(x)
            u, g = u + wu, g + wg
        if self.free is not None:
            g = g * self.free
        return u, g, e

    def masked(self, v):
        return v if self.free is None else v * self.free

    def clamp(self, x):
        return x if self.bounds is None else x.clamp(*self.bounds)


def _temperatures(temperature: float | Sequence[float], steps: int) -> list[float]:
    if isinstance(temperature, (int, float)):
        temps = [float(temperature)] * steps
    else:
        temps = [float(t) for t in temperature]
        if len(temps) != steps:
            raise EBMError(f"temperature schedule has {len(temps)} entries for {steps} steps")
    if any(not (math.isfinite(t) and t > 0) for t in temps):
        raise EBMError("temperatures must be positive and finite")
    return temps


def _randn(x, generator):
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _metropolis(log_ratio, current, proposed, generator):
    """Accept each chain's proposal with probability min(1, exp(log_ratio)) (NaN rejects); returns
    the accept mask and, per field, the proposed value where accepted, the current one elsewhere."""
    accept = torch.rand(log_ratio.shape, generator=generator, device=log_ratio.device).log() < log_ratio
    kept = tuple(torch.where(accept.view(-1, *[1] * (c.dim() - 1)), p, c) for c, p in zip(current, proposed))
    return accept, kept


def langevin(energy: Energy, x0: torch.Tensor, steps: int = 60, *, step_size: float = 10.0,
             noise: float = 0.005, grad_clamp: float | None = 0.03, temperature=1.0,
             bounds: tuple[float, float] | None = (-1.0, 1.0), mask=None, x_obs=None,
             data_weight: float = 0.0, generator: torch.Generator | None = None) -> Iterator[Step]:
    """Langevin in the reference form: add noise σ, clamp, step along the clamped gradient, clamp.

    Step k > 0 records the state at which update k+1 takes its gradient (noise included), with its
    exact energy; the last record is the final state. The final state equals the reference
    tutorial's given the same noise.
    """
    t = _Target(energy, x0, mask, x_obs, data_weight, bounds, wall=0.0)
    temps = _temperatures(temperature, steps)
    x = x0
    for k in range(steps):  # fused and in-place where the tensor is fresh: small batches are overhead-bound
        x = t.clamp(x + t.masked(_randn(x, generator).mul_(noise)))
        _, g, e = t.potential(x, temps[k])
        yield Step(k, x, e, temperature=temps[k])
        if grad_clamp is not None:
            g = g.clamp(-grad_clamp, grad_clamp)
        x = t.clamp(torch.add(x, g, alpha=-step_size))
    yield Step(steps, x, t.model(x), temperature=temps[-1] if temps else 1.0)


def ula(energy: Energy, x0: torch.Tensor, steps: int = 100, *, step_size: float = 1e-4,
        temperature=1.0, bounds: tuple[float, float] | None = (-1.0, 1.0), mask=None, x_obs=None,
        data_weight: float = 0.0, generator: torch.Generator | None = None) -> Iterator[Step]:
    """Textbook unadjusted Langevin: x ← x − α∇U(x) + sqrt(2α)·ξ, with U = E/T (plus terms).

    Its stationary law is exp(−U) up to an O(α) bias; with ``bounds`` each state is clamped.
    """
    t = _Target(energy, x0, mask, x_obs, data_weight, bounds, wall=0.0)
    temps = _temperatures(temperature, steps)
    x = t.clamp(x0)
    g = None
    for k in range(steps + 1):
        T = temps[min(k, steps - 1)] if steps else 1.0
        if k == steps:
            yield Step(k, x, t.model(x), temperature=T)
            return
        _, g, e = t.potential(x, T)
        yield Step(k, x, e, temperature=T)
        x = t.clamp(x - step_size * g + t.masked(math.sqrt(2 * step_size) * _randn(x, generator)))


class StepAdapter:
    """Step-size warm-up for the Metropolis samplers: a Robbins–Monro controller on log ε that moves
    it by ``gain``·(mean acceptance probability − target) after every update, so it follows a target
    that changes as chains travel from noise to digits (dual averaging, as in NUTS, settles too early
    for that). The step kept after the warm-up is the moving average of log ε over about its last ten
    updates, which smooths the update-to-update jitter.

    One step is shared by all chains and driven by their mean acceptance probability min(1, e^{log r}),
    which is less noisy than the accept indicators. While it adapts, the kernel changes after every
    update, so those updates do not satisfy detailed balance; once the warm-up is over the step is
    frozen and every update is an exact Metropolis–Hastings step for exp(−U). Treat the warm-up as
    burn-in.
    """

    gain = 1.0

    def __init__(self, step_size: float, target: float, warmup: int, enabled: bool):
        self.step, self.target, self.warmup, self.enabled = float(step_size), float(target), int(warmup), enabled
        self.log_step = self.log_avg = math.log(self.step)
        self.m = 0

    def adapting(self) -> bool:
        return self.enabled and self.m < self.warmup

    def update(self, log_ratio: torch.Tensor) -> None:
        """Feed one update's log acceptance ratios (N,); moves the step while warming up."""
        if not self.adapting():
            return
        self.m += 1
        a = torch.nan_to_num(log_ratio.detach().float(), nan=-math.inf).clamp(max=0).exp().mean().item()
        self.log_step += self.gain * (a - self.target)
        self.log_avg += max(0.1, 1 / self.m) * (self.log_step - self.log_avg)
        self.step = math.exp(self.log_step if self.m < self.warmup else self.log_avg)


def _adapter(step_size, adapt, warmup, burn_in, target_accept, steps: int, fallback: float) -> StepAdapter:
    """The warm-up a Metropolis sampler runs: by default it adapts when no step size is given, over
    half of the updates after the burn-in."""
    adapt = step_size is None if _option("adapt", adapt) is None else adapt
    burn_in = _option("burn_in", burn_in)
    warmup = max(steps - burn_in, 0) // 2 if warmup is None else _option("warmup", warmup)
    target_accept = _option("target_accept", target_accept)
    return StepAdapter(fallback if step_size is None else step_size, target_accept, warmup, adapt)


def _metropolis_chain(t: _Target, x0, temps, tune: StepAdapter, burn_in: int, propose, ula_step, generator):
    """The loop MALA and HMC share: ``burn_in`` unadjusted Langevin updates (ULA with step
    ``ula_step(ε)``, every move kept, clamped to the bounds), then ``propose(x, u, g, T, ε)`` →
    (log r, y, U(y), ∇U(y), E(y)) accepted with probability min(1, r), the step tuned by ``tune``."""
    x = x0
    T0 = temps[0] if temps else 1.0
    u, g, e = t.potential(x, T0)
    yield Step(0, x, e, temperature=T0, step_size=tune.step, warmup=burn_in > 0 or tune.adapting())
    for k, T in enumerate(temps):
        if k and T != temps[k - 1]:
            u, g, e = t.potential(x, T)
        eps = tune.step
        if k < burn_in:
            a = ula_step(eps)
            x = t.clamp(x - a * g + t.masked(math.sqrt(2 * a) * _randn(x, generator)))
            u, g, e = t.potential(x, T)
            yield Step(k + 1, x, e, temperature=T, step_size=eps, warmup=True)
            continue
        warm = tune.adapting()
        log_ratio, proposed = propose(x, u, g, T, eps)
        accept, (x, u, g, e) = _metropolis(log_ratio, (x, u, g, e), proposed, generator)
        tune.update(log_ratio)
        yield Step(k + 1, x, e, accept=accept.to(x.dtype), temperature=T, step_size=eps, warmup=warm)


def mala(energy: Energy, x0: torch.Tensor, steps: int = 100, *, step_size: float | None = None,
         temperature=1.0, bounds: tuple[float, float] | None = (-1.0, 1.0), wall: float = 100.0,
         mask=None, x_obs=None, data_weight: float = 0.0, adapt: bool | None = None, warmup: int | None = None,
         target_accept: float = 0.57, burn_in: int = 0, generator: torch.Generator | None = None) -> Iterator[Step]:
    """Metropolis-adjusted Langevin: the ULA proposal, accepted with the Metropolis–Hastings ratio,
    so the chain targets exp(−U) exactly. Each record carries each chain's accept indicator and the
    step α of its update.

    Warm-up, in this order, all of it burn-in (records say ``warmup=True``):

    - ``burn_in`` updates of plain ULA with step α (no accept step, no acceptance recorded). From
      noise, trained image energies are so steep at small temperatures that an exact sampler needs
      minute steps and hardly moves (the tester's "acceptance 0.00, energy 39.5"); a short unadjusted
      descent brings the chains to where the Metropolis chain mixes.
    - with ``adapt`` (the default when ``step_size`` is None) ``warmup`` updates (default: half of
      those after the burn-in) that tune α from ``step_size`` (else 1e-4) towards ``target_accept``
      (0.57, optimal for MALA: Roberts & Rosenthal 1998) with :class:`StepAdapter`.

    Then α is fixed and every update is an exact MH step. A given ``step_size`` without ``adapt=True``
    is used as it is."""
    t = _Target(energy, x0, mask, x_obs, data_weight, bounds, wall)
    temps = _temperatures(temperature, steps)
    tune = _adapter(step_size, adapt, warmup, burn_in, target_accept, steps, 1e-4)

    def propose(x, u, g, T, a):
        y = x - a * g + t.masked(math.sqrt(2 * a) * _randn(x, generator))
        uy, gy, ey = t.potential(y, T)
        fwd = (y - x + a * g).flatten(1).pow(2).sum(1)  # −4α log q(y|x) + const
        bwd = (x - y + a * gy).flatten(1).pow(2).sum(1)
        return u - uy + (fwd - bwd) / (4 * a), (y, uy, gy, ey)

    return _metropolis_chain(t, x0, temps, tune, burn_in, propose, lambda a: a, generator)


def hmc(energy: Energy, x0: torch.Tensor, steps: int = 50, *, step_size: float | None = None,
        leapfrog: int = 10, temperature=1.0, bounds: tuple[float, float] | None = (-1.0, 1.0),
        wall: float = 100.0, mask=None, x_obs=None, data_weight: float = 0.0, adapt: bool | None = None,
        warmup: int | None = None, target_accept: float = 0.7, burn_in: int = 0,
        generator: torch.Generator | None = None) -> Iterator[Step]:
    """Hamiltonian Monte Carlo: unit-mass momenta, ``leapfrog`` steps of size ε, then accept with
    probability min(1, exp(H_old − H_new)). One update = one trajectory.

    Warm-up as for :func:`mala`: ``burn_in`` ULA updates with step ε²/2 (what one leapfrog step
    moves), then ε adapted from ``step_size`` (else 1e-3) towards ``target_accept`` 0.7 (0.65 is
    optimal in high dimension, Beskos et al. 2013; a little higher is safer on rough energies)."""
    if int(leapfrog) < 1:
        raise EBMError("leapfrog must be at least 1")
    t = _Target(energy, x0, mask, x_obs, data_weight, bounds, wall)
    temps = _temperatures(temperature, steps)
    tune = _adapter(step_size, adapt, warmup, burn_in, target_accept, steps, 1e-3)

    def propose(x, u, g, T, eps):
        p = t.masked(_randn(x, generator))
        h0 = u + 0.5 * p.flatten(1).pow(2).sum(1)
        y, gy = x, g
        p = p - 0.5 * eps * gy
        for i in range(int(leapfrog)):
            y = y + eps * p
            uy, gy, ey = t.potential(y, T)
            p = p - (eps if i < leapfrog - 1 else 0.5 * eps) * gy
        h1 = uy + 0.5 * p.flatten(1).pow(2).sum(1)
        return torch.nan_to_num(h0 - h1, nan=-math.inf), (y, uy, gy, ey)

    return _metropolis_chain(t, x0, temps, tune, burn_in, propose, lambda eps: eps * eps / 2, generator)


def annealed(energy: Energy, x0: torch.Tensor, steps: int = 200, *, t_start: float = 100.0,
             t_end: float = 1.0, base: str = "ula", **options) -> Iterator[Step]:
    """Annealed sampling: the ``base`` sampler under a geometric temperature schedule from
    ``t_start`` down to ``t_end``. High temperatures let chains cross between modes. Under MALA or
    HMC the step size adapts through the whole schedule by default (``warmup`` = ``steps``): the
    target changes at every update anyway, so no update is detailed-balanced for a fixed target."""
    if base not in ("langevin", "ula", "mala", "hmc"):
        raise EBMError(f"annealed sampling needs a gradient sampler as base, not {base!r}")
    if not (t_start > 0 and t_end > 0 and math.isfinite(t_start) and math.isfinite(t_end)):
        raise EBMError("t_start and t_end must be positive and finite")
    n = max(steps - 1, 1)
    temps = [t_start * (t_end / t_start) ** (k / n) for k in range(steps)]
    if base in ("mala", "hmc") and options.get("warmup") is None:
        options["warmup"] = max(steps - options.get("burn_in", 0), 0)
    return SAMPLERS[base](energy, x0, steps, temperature=temps, **options)


def gibbs(energy, x0: torch.Tensor, steps: int = 100, *, mask=None,
          generator: torch.Generator | None = None) -> Iterator[Step]:
    """Block Gibbs sampling for an RBM (h | v, then v | h). Chains live on binary visibles; each
    record shows p(v = 1 | h) as an image, which is what RBM papers plot."""
    if not hasattr(energy, "gibbs_step"):
        raise EBMError("Gibbs sampling needs an RBM model")
    rbm = energy
    with torch.no_grad():
        v_obs = rbm.to_visible(x0)
        v = torch.bernoulli(v_obs, generator=generator)
        keep = None if mask is None else torch.as_tensor(mask, device=x0.device).expand_as(x0).reshape(v.shape).bool()
        if keep is not None:
            v = torch.where(keep, v_obs, v)
        def image(v):  # kept pixels are returned exactly as given
            x = rbm.to_image(v)
            return x if keep is None else torch.where(keep.view_as(x), x0, x)

        yield Step(0, image(v), rbm.free_energy(v))
        for k in range(steps):
            v, pv = rbm.gibbs_step(v, generator)
            if keep is not None:
                v, pv = torch.where(keep, v_obs, v), torch.where(keep, v_obs, pv)
            yield Step(k + 1, image(pv), rbm.free_energy(v))


def _level_sizes(steps: int, levels: int) -> list[int]:
    """``steps`` updates spread over the levels as evenly as possible (earlier levels get the rest)."""
    return [steps // levels + (1 if i < steps % levels else 0) for i in range(levels)]


def _ladder_of(energy, sigma_max, sigma_min, levels) -> torch.Tensor:
    """The noise ladder to walk: the energy's own (``noise_ladder()``), with any of its ends or its
    number of levels replaced by the options given."""
    from .objectives import noise_ladder

    own = getattr(energy, "noise_ladder", None)
    ladder = own() if own is not None and hasattr(energy, "at_noise") else None
    if ladder is None:
        raise EBMError("the ladder sampler needs a noise-conditional energy E(x, σ): a model trained with "
                       "objective dsm (or a composition that contains one)")
    hi = float(ladder[0]) if sigma_max is None else sigma_max
    lo = float(ladder[-1]) if sigma_min is None else sigma_min
    return noise_ladder(hi, lo, len(ladder) if levels is None else levels)


def ladder(energy, x0: torch.Tensor, steps: int = 1000, *, step_size: float = 2e-5, sigma_max: float | None = None,
           sigma_min: float | None = None, levels: int | None = None, final_denoise: bool = True,
           bounds: tuple[float, float] | None = (-1.0, 1.0), mask=None, x_obs=None, data_weight: float = 0.0,
           generator: torch.Generator | None = None) -> Iterator[Step]:
    """Annealed Langevin down a noise ladder (NCSN, Song & Ermon 2019), for σ-conditioned energies.

    The ``steps`` updates are spread evenly over the levels σ_max … σ_min (the model's ladder unless
    given); at level σ each update is textbook Langevin on E(x, σ), x ← x − α∇E + √(2α)ξ, with
    α = ``step_size``·(σ/σ_min)², so the step shrinks with the noise. High levels are broad and
    smooth: chains cross between modes there and settle into them in proportion to their mass.
    ``final_denoise`` ends with the Tweedie step x ← x − σ_min²∇E(x, σ_min), the posterior mean
    of the clean image, which removes the last level's noise.

    The chains move freely (noisy images leave [−1, 1]); each record shows them clamped into
    ``bounds``, and the final state is clamped. With ``mask`` the kept pixels follow x0 plus the
    level's noise (one draw per level) and end exactly at x0; ``data_weight`` adds λ‖x − x_obs‖²
    at every level. Records carry E(x, σ) at the level's σ (``Step.temperature`` holds σ).
    """
    if not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
        raise EBMError(f"step_size must be a positive number, got {step_size!r}")
    sigmas = [float(v) for v in _ladder_of(energy, sigma_max, sigma_min, levels)]
    t = _Target(energy, x0, mask, x_obs, data_weight, None, wall=0.0)
    view = energy.at_noise
    shown = (lambda v: v) if bounds is None else (lambda v: v.clamp(*bounds))
    x, k = x0, 0
    for sigma, n in zip(sigmas, _level_sizes(int(steps), len(sigmas))):
        t.energy = view(sigma)
        alpha = step_size * (sigma / sigmas[-1]) ** 2
        if mask is not None and n:  # observed pixels at this level's noise, the rest free
            x = torch.where(t.free > 0, x, x0 + sigma * _randn(x, generator))
        for _ in range(n):
            _, g, e = t.potential(x, 1.0)
            yield Step(k, shown(x), e, temperature=sigma)
            x = x - alpha * g + t.masked(math.sqrt(2 * alpha) * _randn(x, generator))
            k += 1
    t.energy = view(sigmas[-1])
    if final_denoise and k:
        x = x - sigmas[-1] ** 2 * t.potential(x, 1.0)[1]
    if mask is not None:
        x = torch.where(t.free > 0, x, x0)
    x = shown(x)
    yield Step(k, x, t.model(x), temperature=sigmas[-1])


SAMPLERS: dict[str, Callable[..., Iterator[Step]]] = {
    "langevin": langevin, "ula": ula, "mala": mala, "hmc": hmc, "annealed": annealed, "gibbs": gibbs,
    "ladder": ladder,
}
GRADIENT_SAMPLERS = ("langevin", "ula", "mala", "hmc", "annealed", "ladder")  # ladder: noise-conditional energies


def sampler_options(name: str) -> dict[str, object]:
    """The options a sampler takes, with their defaults (for help texts and validation)."""
    if name not in SAMPLERS:
        raise EBMError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    sig = inspect.signature(SAMPLERS[name])
    return {k: p.default for k, p in sig.parameters.items() if p.kind == p.KEYWORD_ONLY}


MAX_STEPS = 100_000  # sampler updates per run, from any caller
MAX_LEAPFROG = 1000
_POSITIVE = ("step_size", "t_start", "t_end", "temperature")
_NON_NEGATIVE = ("noise", "wall", "data_weight")
_TENSORS = ("mask", "x_obs")
PER_CALL = ("mask", "x_obs", "data_weight")  # inputs of one call (inpainting, denoising), never recommendations


def _finite(name: str, v, least: float | None = None, strict: bool = False) -> float:
    """A finite number, at least (``strict``: above) ``least``, or an EBMError naming ``name``."""
    f = number(name, v)
    if least is not None and (f < least or (strict and f == least)):
        raise EBMError(f"{name} must be {'positive' if strict else '0 or more'}, got {f:g}")
    return f


def _option(name: str, v):
    """One option's value, checked and normalised (the rules of :func:`check_options`)."""
    if name == "steps":
        return whole("steps", v, 0, MAX_STEPS)
    if name == "leapfrog":
        return whole("leapfrog", v, 1, MAX_LEAPFROG)
    if name in ("sigma_max", "sigma_min"):  # the ladder's: None = the model's own
        return None if v is None else _finite(name, v, 0.0, strict=True)
    if name == "levels":
        return None if v is None else whole("levels", v, 1, 1000)
    if name == "final_denoise":
        if not isinstance(v, bool):
            raise EBMError(f"final_denoise must be true or false, got {shown(v)}")
        return v
    if name in ("burn_in", "warmup"):
        return None if v is None and name == "warmup" else whole(name, v, 0, MAX_STEPS)
    if name == "adapt":
        if v is not None and not isinstance(v, bool):
            raise EBMError(f"adapt must be true or false, got {shown(v)}")
        return v
    if name == "target_accept":
        f = number(name, v)
        if not 0 < f < 1:
            raise EBMError(f"target_accept must be between 0 and 1, got {f:g}")
        return f
    if name in _POSITIVE or name in _NON_NEGATIVE:
        return _finite(name, v, 0.0, strict=name in _POSITIVE)
    if name == "grad_clamp":
        return None if v is None else _finite(name, v, 0.0)
    if name == "bounds":
        if v is None:
            return None
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) != 2:
            raise EBMError(f"bounds must be a pair (low, high) or None, got {shown(v)}")
        lo, hi = (_finite("bounds", b) for b in v)
        if not lo < hi:
            raise EBMError(f"bounds must be (low, high) with low < high, got {shown(v)}")
        return (lo, hi)
    if name == "base":
        if not isinstance(v, str) or v not in _BASES:
            raise EBMError(f"annealed sampling needs a gradient sampler as base ({', '.join(_BASES)}), not {shown(v)}")
        return v
    if name in _TENSORS:
        if v is not None and not isinstance(v, (torch.Tensor, np.ndarray)):
            raise EBMError(f"{name} must be a tensor, got {type(v).__name__}")
        return v
    raise EBMError(f"unknown sampler option {shown(name)}")


_BASES = ("langevin", "ula", "mala", "hmc")


def check_options(sampler: str, options: Mapping, stored: bool = False) -> dict:
    """The one validator of sampler settings, whatever their source: a caller of :func:`run`, the
    CLI's flags, the app's knobs and API, and the recommendations stored in a weights file
    (``info["samplers"][sampler]``, checked when the file is loaded, with ``stored=True``: the
    per-call inputs ``mask``, ``x_obs`` and ``data_weight`` are then refused too). ``options`` may
    hold ``steps``. Returns a new dict with the values normalised (whole numbers as int, numbers as
    float, bounds as a tuple), or raises EBMError naming the option: an unknown option, the wrong
    type, NaN or infinity, the wrong sign, steps past MAX_STEPS, leapfrog past MAX_LEAPFROG or not
    whole, reversed bounds, a non-mapping."""
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise EBMError(f"unknown sampler {shown(sampler)}; known: {', '.join(SAMPLERS)}")
    if not isinstance(options, Mapping):
        raise EBMError(f"{sampler} settings must be a mapping of option to value, got {type(options).__name__}")
    allowed = set(sampler_options(sampler)) | {"steps"}
    if sampler == "annealed":  # annealed passes the rest to its base sampler and sets the temperature
        allowed |= set(sampler_options(_option("base", options.get("base", "ula")))) - {"temperature"}
    allowed -= {"generator", *(PER_CALL if stored else ())}  # run() takes the generator as its own argument
    unknown = sorted((k for k in options if k not in allowed), key=str)
    if unknown:
        what = "a stored recommendation cannot set" if unknown[0] in PER_CALL else f"sampler {sampler!r} has no option"
        raise EBMError(f"{what} {shown(unknown[0])}; options: {', '.join(sorted(allowed - {'steps'}))}")
    return {k: _option(k, v) for k, v in options.items()}


def run(sampler: str, energy: Energy, x0: torch.Tensor, steps: int, *, seed: int | None = None,
        generator: torch.Generator | None = None, callback: Callable[[Step], object] | None = None,
        keep_frames: int = 0, **options) -> SampleResult:
    """Run a sampler to the end. ``callback(step)`` sees every record; returning ``False`` stops
    early. ``keep_frames=k`` keeps every k-th state (and the last) in ``result.frames``."""
    options = check_options(sampler, {**options, "steps": steps})
    steps = options.pop("steps")
    if generator is None:
        generator = make_generator(seed, x0.device)
    energies, numbers, frames, accepts = [], [], [], []
    last, adapted = None, False
    for rec in SAMPLERS[sampler](energy, x0, steps, generator=generator, **options):
        last = rec
        energies.append(rec.energy.detach())
        numbers.append(rec.step)
        if rec.accept is not None:
            accepts.append(rec.accept.mean().item())
        adapted = adapted or (rec.warmup and rec.accept is not None)
        if keep_frames and (rec.step % keep_frames == 0 or rec.step == steps):
            frames.append(rec.x.detach().clone())
        if callback is not None and callback(rec) is False:
            break
    assert last is not None
    return SampleResult(x=last.x.detach(), energy=last.energy.detach(), energies=torch.stack(energies),
                        steps=numbers, frames=frames,
                        accept_rate=sum(accepts) / len(accepts) if accepts else None,
                        step_size=last.step_size, adapted=adapted)
