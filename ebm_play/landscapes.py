"""2-D energy landscapes: toy data sets, hand-made energies, a batched grid evaluator, the forces of
the contrastive-divergence loss on the plane and mode statistics for particles and chains.

Everything lives in the square [−1, 1]² (the samplers' default ``bounds``), points are N×2 float32
tensors and energies follow the project's convention: **lower energy = more data-like**,
p(x) ∝ exp(−E(x)). The rest of the engine is reused as is: ``MLPEnergy`` is the learnable energy,
``Trainer`` with ``TrainConfig(model="mlp2d")`` trains it (:func:`train_config` gives settings that
suit the square), every sampler in ``ebm_play.samplers`` runs on N×2 points and
``ebm_play.compose`` adds and weights these energies like any others.

    import ebm_play
    from ebm_play import landscapes as L

    data, labels = L.make_dataset("two_moons", n=2000, seed=0)
    trainer = ebm_play.Trainer(L.train_config(), data)
    for _ in range(600):
        trainer.step()
    xs, ys, E = L.energy_grid(trainer.model, 100)          # one batched call, E[i, j] at (xs[j], ys[i])
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import EBMError
from .models import EnergyModel
from .objectives import OBJECTIVES
from .samplers import energy_and_grad
from .training import TrainConfig, Trainer, cd_loss

BOUNDS = (-1.0, 1.0)
DATASETS = ("two_moons", "rings", "gaussians8", "checkerboard", "spiral")
MAX_POINTS = 100_000
MAX_RESOLUTION = 512
# Forward-mode AD keeps its "dual level" in process-wide state: two threads inside ``jvp`` at once
# (two runs publishing their forces) fail with "Trying to access a forward AD level with an
# invalid index". One at a time; a 40×40 grid takes milliseconds.
_FORWARD_AD = threading.Lock()


# --- data sets ----------------------------------------------------------------------------------
def _gen(seed: int | None) -> torch.Generator:
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def _split(n: int, k: int) -> list[int]:
    """n items over k groups as evenly as possible."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def make_dataset(name: str, n: int = 2000, seed: int | None = 0, noise: float | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points (float32 N×2, inside [−0.95, 0.95]²) of a toy data set and each point's component
    label (int64 (N,): which moon, ring, Gaussian, checkerboard cell or spiral arm), for mode
    statistics. ``noise`` is the spread around the shape (each set has its own default)."""
    if name not in DATASETS:
        raise EBMError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_POINTS:
        raise EBMError(f"n must be a whole number between 1 and {MAX_POINTS}, got {n!r}")
    if noise is not None and not (math.isfinite(noise) and noise >= 0):
        raise EBMError(f"noise must be 0 or more, got {noise!r}")
    g = _gen(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    if name == "two_moons":
        s = 0.06 if noise is None else noise
        a, b = _split(n, 2)
        t = rand(a) * math.pi
        outer = torch.stack([t.cos(), t.sin()], 1)
        t = rand(b) * math.pi
        inner = torch.stack([1 - t.cos(), 0.5 - t.sin()], 1)
        x = (torch.cat([outer, inner]) - torch.tensor([0.5, 0.25])) / 1.6  # x ∈ [−0.94, 0.94], y ∈ [−0.47, 0.47]
        x = x + s * randn(n, 2)
        y = torch.cat([torch.zeros(a), torch.ones(b)])
    elif name == "rings":
        s = 0.03 if noise is None else noise
        counts = _split(n, 3)
        radii = (0.25, 0.55, 0.85)
        parts, labels = [], []
        for i, (m, r) in enumerate(zip(counts, radii)):
            t = rand(m) * 2 * math.pi
            parts.append(r * torch.stack([t.cos(), t.sin()], 1))
            labels.append(torch.full((m,), i))
        x = torch.cat(parts) + s * randn(n, 2)
        y = torch.cat(labels)
    elif name == "gaussians8":
        s = 0.05 if noise is None else noise
        y = torch.randint(8, (n,), generator=g)
        x = gaussians8_means()[y] + s * randn(n, 2)
    elif name == "checkerboard":
        s = 0.0 if noise is None else noise
        cells = [(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0]  # 8 of 16 cells
        y = torch.randint(8, (n,), generator=g)
        ij = torch.tensor(cells, dtype=torch.float32)[y]
        x = (ij + rand(n, 2)) * 0.45 - 0.9 + s * randn(n, 2)
    else:  # spiral: two arms winding out from the centre
        s = 0.03 if noise is None else noise
        a, b = _split(n, 2)
        parts = []
        for m, phase in ((a, 0.0), (b, math.pi)):
            t = rand(m).sqrt() * 3 * math.pi  # sqrt: even density along the arm
            r = 0.08 + 0.8 * t / (3 * math.pi)
            parts.append(torch.stack([r * (t + phase).cos(), r * (t + phase).sin()], 1))
        x = torch.cat(parts) + s * randn(n, 2)
        y = torch.cat([torch.zeros(a), torch.ones(b)])
    return x.clamp(-0.95, 0.95).float(), y.long()


@functools.lru_cache(maxsize=len(DATASETS))
def dataset(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2,000 points (seed 0) every run and picture of data set ``name`` uses, made once per
    process. Shared: copy before changing them."""
    return make_dataset(name, 2000, seed=0)


def points_around(x: float, y: float, n: int, seed: int = 0, spread: float = 0.03) -> torch.Tensor:
    """``n`` points scattered around (x, y) (one point exactly there if ``n`` is 1), kept inside the
    square: what a click on a landscape adds. Checked like any other points."""
    g = torch.Generator().manual_seed(int(seed))
    pts = torch.tensor([[x, y]], dtype=torch.float32) + spread * torch.randn(int(n), 2, generator=g) * (n > 1)
    return check_points(pts.clamp(-0.98, 0.98), "clicked points")


def gaussians8_means(radius: float = 0.7) -> torch.Tensor:
    t = torch.arange(8) * (2 * math.pi / 8)
    return radius * torch.stack([t.cos(), t.sin()], 1)


def check_points(points, name: str = "points", max_points: int = MAX_POINTS) -> torch.Tensor:
    """A list or array of (x, y) pairs → float32 N×2 inside [−1, 1]², or an EBMError that says why."""
    try:
        x = torch.as_tensor(np.asarray(points, dtype=np.float32))
    except (TypeError, ValueError) as e:
        raise EBMError(f"{name} must be a list of [x, y] pairs of numbers") from e
    if x.dim() != 2 or x.shape[1] != 2:
        raise EBMError(f"{name} must be a list of [x, y] pairs, got shape {tuple(x.shape)}")
    if not len(x):
        raise EBMError(f"{name} is empty: add some points")
    if len(x) > max_points:
        raise EBMError(f"at most {max_points} {name}, got {len(x)}")
    if not torch.isfinite(x).all():
        raise EBMError(f"{name} must be finite numbers")
    if x.abs().max() > 1:
        raise EBMError(f"{name} must lie in the square [-1, 1]²")
    return x


def cluster_labels(points: torch.Tensor, link: float = 0.15) -> torch.Tensor:
    """Single-linkage clusters: points closer than ``link`` (chained) share a label, 0..K−1 by size.
    Gives modes to a set drawn by hand, for the mode statistics."""
    x = torch.as_tensor(points, dtype=torch.float32)
    n = len(x)
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, n, 1024):
        d = torch.cdist(x[start:start + 1024], x)
        ii, jj = (d < link).nonzero(as_tuple=True)
        for i, j in zip((ii + start).tolist(), jj.tolist()):
            if i < j:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[ri] = rj
    roots = np.array([find(i) for i in range(n)])
    _, inv, counts = np.unique(roots, return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return torch.as_tensor(rank[inv], dtype=torch.long)


# --- hand-made energies -------------------------------------------------------------------------
class DoubleWell(EnergyModel):
    """Two wells at (±``separation``, 0): E = barrier·((x/s)² − 1)² + stiffness·y².
    ``barrier`` is the energy a chain must climb to hop between the wells (in units of T = 1)."""

    kind = "double_well"

    def __init__(self, separation: float = 0.6, barrier: float = 8.0, stiffness: float = 20.0):
        super().__init__(separation=float(separation), barrier=float(barrier), stiffness=float(stiffness))
        if not 0 < separation <= 1 or barrier < 0 or stiffness < 0:
            raise EBMError("double well: separation in (0, 1], barrier and stiffness 0 or more")

    def forward(self, x):
        c = self.config
        u = (x[:, 0] / c["separation"]).pow(2) - 1
        return c["barrier"] * u.pow(2) + c["stiffness"] * x[:, 1].pow(2)

    def modes(self) -> torch.Tensor:
        s = self.config["separation"]
        return torch.tensor([[-s, 0.0], [s, 0.0]])


class RingEnergy(EnergyModel):
    """A ring of radius ``radius``: E = ½((‖x‖ − radius)/width)²."""

    kind = "ring"

    def __init__(self, radius: float = 0.6, width: float = 0.08):
        super().__init__(radius=float(radius), width=float(width))
        if not 0 <= radius <= 1.5 or width <= 0:
            raise EBMError("ring: radius in [0, 1.5], width positive")

    def forward(self, x):
        c = self.config
        r = (x.pow(2).sum(1) + 1e-12).sqrt()
        return 0.5 * ((r - c["radius"]) / c["width"]).pow(2)


class HalfPlane(EnergyModel):
    """A soft constraint: about 0 on the side the normal points to, rising linearly (slope
    ``strength``/``softness``) across the line n·x = offset, n = (cos θ, sin θ), θ = ``angle`` degrees."""

    kind = "half_plane"

    def __init__(self, angle: float = 90.0, offset: float = 0.0, strength: float = 4.0, softness: float = 0.1):
        super().__init__(angle=float(angle), offset=float(offset), strength=float(strength), softness=float(softness))
        if softness <= 0 or strength < 0:
            raise EBMError("half-plane: softness positive, strength 0 or more")

    def forward(self, x):
        c = self.config
        t = math.radians(c["angle"])
        d = x[:, 0] * math.cos(t) + x[:, 1] * math.sin(t) - c["offset"]
        return c["strength"] * nn.functional.softplus(-d / c["softness"])


class GaussianMixtureEnergy(EnergyModel):
    """E = −log Σ_k w_k N(x; μ_k, σ²I), the exact energy of a Gaussian mixture (default: 8 modes on
    a circle, as the ``gaussians8`` data set)."""

    kind = "gmm"

    def __init__(self, means=None, std: float = 0.08, weights=None):
        means = gaussians8_means() if means is None else torch.as_tensor(means, dtype=torch.float32)
        if means.dim() != 2 or means.shape[1] != 2 or not len(means):
            raise EBMError("mixture means must be K×2")
        weights = torch.full((len(means),), 1.0 / len(means)) if weights is None else torch.as_tensor(
            weights, dtype=torch.float32)
        if weights.shape != (len(means),) or (weights <= 0).any():
            raise EBMError("mixture weights must be K positive numbers")
        if std <= 0:
            raise EBMError("mixture std must be positive")
        super().__init__(std=float(std), k=len(means))
        self.register_buffer("means", means.clone())
        self.register_buffer("log_w", (weights / weights.sum()).log())

    def forward(self, x):
        s = self.config["std"]
        d2 = (x[:, None, :] - self.means[None]).pow(2).sum(-1)
        logp = self.log_w - d2 / (2 * s * s) - math.log(2 * math.pi * s * s)
        return -torch.logsumexp(logp, 1)

    def modes(self) -> torch.Tensor:
        return self.means.detach().clone()


HAND_MADE = {
    "double_well": DoubleWell,
    "ring": RingEnergy,
    "half_plane": HalfPlane,
    "gmm": GaussianMixtureEnergy,
}


# Named landscapes: the hand-made ones, with the two half-planes a person most often wants.
LANDSCAPES = {"double_well": ("double_well", {}), "ring": ("ring", {}), "gmm": ("gmm", {}),
              "half_plane_up": ("half_plane", {"angle": 90.0}), "half_plane_right": ("half_plane", {"angle": 0.0})}


def landscape(name: str) -> EnergyModel:
    """A named landscape (:data:`LANDSCAPES`): ``half_plane_up`` is low where y > 0."""
    if name not in LANDSCAPES:
        raise EBMError(f"unknown landscape {name!r}; known: {', '.join(LANDSCAPES)}")
    kind, params = LANDSCAPES[name]
    return hand_made(kind, **params)


def hand_made(name: str, **params) -> EnergyModel:
    """A hand-made landscape by name (``double_well``, ``ring``, ``half_plane``, ``gmm``)."""
    if name not in HAND_MADE:
        raise EBMError(f"unknown hand-made landscape {name!r}; known: {', '.join(HAND_MADE)}")
    try:
        return HAND_MADE[name](**params).eval()
    except TypeError as e:
        raise EBMError(f"bad parameters for {name}: {e}") from e


# --- the plane ----------------------------------------------------------------------------------
def grid_points(resolution: int, bounds=BOUNDS) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not 2 <= resolution <= MAX_RESOLUTION:
        raise EBMError(f"resolution must be a whole number between 2 and {MAX_RESOLUTION}, got {resolution!r}")
    lo, hi = float(bounds[0]), float(bounds[1])
    xs = np.linspace(lo, hi, resolution, dtype=np.float32)
    ys = np.linspace(lo, hi, resolution, dtype=np.float32)
    gx, gy = np.meshgrid(xs, ys)  # row i = ys[i], column j = xs[j]
    pts = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1))
    return xs, ys, pts


def _device_of(energy) -> torch.device:
    p = next(iter(energy.parameters()), None) if isinstance(energy, nn.Module) else None
    if p is None and isinstance(energy, nn.Module):
        p = next(iter(energy.buffers()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def energy_grid(energy, resolution: int = 100, bounds=BOUNDS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The energy on a ``resolution``² grid over the square, in ONE batched call of ``energy``.
    Returns ``(xs, ys, E)``: E[i, j] is the energy at (xs[j], ys[i]) (float32 arrays; row 0 is the
    bottom, y = ``bounds[0]``)."""
    xs, ys, pts = grid_points(resolution, bounds)
    e = energy(pts.to(_device_of(energy)))
    return xs, ys, e.detach().float().cpu().numpy().reshape(len(ys), len(xs))


def cd_force_grid(model: nn.Module, data: torch.Tensor, negatives: torch.Tensor, alpha: float = 0.1,
                  resolution: int = 40, bounds=BOUNDS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The two forces of the contrastive-divergence loss, as the change they make to the landscape.

    One plain gradient-descent step θ ← θ − η∇θL on L = E(data) − E(negatives) + α(…) changes the
    energy by η·ΔE(x) to first order, with ΔE(x) = −∇θE(x)·∇θL: negative (pulled down) around the
    data, positive (pushed up) around the negatives. Returns ``(xs, ys, E, ΔE)`` on the grid (E, the
    energy itself, comes free), computed in one batched forward-mode call (a Jacobian-vector
    product, no finite differences).
    """
    from torch.func import functional_call, jvp

    params = {k: v.detach() for k, v in model.named_parameters()}
    with torch.enable_grad():
        loss = cd_loss(model(data), model(negatives), alpha)
        grads = torch.autograd.grad(loss, list(model.parameters()))
    tangent = {k: -g.detach() for k, g in zip(params, grads)}
    xs, ys, pts = grid_points(resolution, bounds)
    pts = pts.to(data.device)
    with torch.no_grad(), _FORWARD_AD:
        e, de = jvp(lambda p: functional_call(model, p, (pts,)), (params,), (tangent,))
    shape = (len(ys), len(xs))
    return xs, ys, e.float().cpu().numpy().reshape(shape), de.float().cpu().numpy().reshape(shape)


def train_config(**overrides) -> TrainConfig:
    """Training settings for an MLP energy on the square (measured to fit two moons in well under
    30 s on one CPU thread; see ``tests/test_landscapes.py``); ``objective="dsm"`` or ``"nce"``
    gives that objective's settings (:data:`OBJECTIVE_SETTINGS`).

    The image recipe (step 10, noise 0.005, gradient clamp 0.03) is wrong here: in the plane the
    sampler should be textbook Langevin, noise = √(2·step) (so the model learns p ∝ exp(−E) at
    temperature 1 and every sampler can use it at T = 1), with a gradient clamp high enough never to
    bind in normal training. The learning rate does not decay (lr_gamma 1).
    """
    base = dict(model="mlp2d", hidden=64, batch_size=256, sampler_steps=20, step_size=0.002,
                noise=math.sqrt(2 * 0.002), grad_clamp=50.0, alpha=0.1, lr=5e-3, lr_gamma=1.0,
                buffer_size=2000, reinit=0.05, data_noise=0.0, grad_clip=None, energy_bound=100.0,
                gap_bound=10.0, seed=0)
    objective = overrides.get("objective", "cd")
    if objective not in OBJECTIVES:
        raise EBMError(f"unknown objective {objective!r}: use {', '.join(OBJECTIVES)}")
    return TrainConfig(**{**base, **OBJECTIVE_SETTINGS.get(objective, {}), **overrides})


# Per objective, what differs from the CD settings above. dsm: the ladder spans the square (σ_max
# 1, about the distance between modes) down to below the data sets' own spread (0.03–0.06); the
# ladder sampler's step at σ_min is 0.2 σ_min², NCSN's ratio, with 100 steps per level, and the
# weights are averaged over about the last 200 updates (ema: benchmarks/objectives.py). nce:
# uniform noise on the square (density 1/4), 4 noise points per data point.
OBJECTIVE_SETTINGS: dict[str, dict] = {
    "dsm": dict(objective="dsm", lr=2e-3, sigma_max=1.0, sigma_min=0.02, sigma_levels=10, ladder_step=8e-5, ema=0.995),
    "nce": dict(objective="nce", nce_noise="uniform", nce_ratio=4),
}


def score_field(energy, resolution: int = 20, sigma: float | None = None, bounds=BOUNDS
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The score −∇E on a ``resolution``² grid, the arrows the samplers follow, in one batched call.
    For a σ-conditioned (dsm) model it is the learned score at noise level ``sigma`` (default
    σ_min, the model's E(x)); for any other energy (a CD model, a hand-made one) the field its
    energy implies. Returns ``(xs, ys, U, V)``: the field (U, V)[i, j] at (xs[j], ys[i])."""
    if sigma is not None:
        if not hasattr(energy, "at_noise"):
            raise EBMError("a noise level needs a σ-conditioned (dsm) model")
        energy = energy.at_noise(float(sigma))
    xs, ys, pts = grid_points(resolution, bounds)
    _, g = energy_and_grad(energy, pts.to(_device_of(energy)))
    g = -g.detach().float().cpu().numpy()
    return xs, ys, g[:, 0].reshape(len(ys), len(xs)), g[:, 1].reshape(len(ys), len(xs))


# --- samples against the data -------------------------------------------------------------------
def fit_quality(samples: torch.Tensor, data: torch.Tensor, radius: float = 0.1) -> dict[str, float]:
    """How well samples match the data: ``precision`` = share of samples within ``radius`` of some
    data point; ``coverage`` = share of data points with a sample within ``radius``."""
    d = torch.cdist(samples.float().cpu(), data.float().cpu())
    return {"precision": float((d.min(1).values < radius).float().mean()),
            "coverage": float((d.min(0).values < radius).float().mean())}


# --- modes --------------------------------------------------------------------------------------
@dataclass
class Modes:
    """Where the modes are: reference points, each with a mode label; a particle belongs to the mode
    of its nearest reference point if that is within ``radius``, else to none (−1)."""

    anchors: torch.Tensor  # M×2
    labels: torch.Tensor  # (M,) 0..K−1
    radius: float = 0.15
    names: list[str] | None = None

    def __post_init__(self):
        self.anchors = torch.as_tensor(self.anchors, dtype=torch.float32).cpu()
        self.labels = torch.as_tensor(self.labels, dtype=torch.long).cpu()
        if self.anchors.dim() != 2 or self.anchors.shape[1] != 2 or len(self.anchors) != len(self.labels):
            raise EBMError("modes need M×2 anchors and M labels")
        if not len(self.anchors):
            raise EBMError("modes need at least one anchor")
        if len(self.anchors) > 4000:  # plenty for assignment, and keeps it cheap
            keep = torch.randperm(len(self.anchors), generator=_gen(0))[:4000]
            self.anchors, self.labels = self.anchors[keep], self.labels[keep]

    @property
    def k(self) -> int:
        return int(self.labels.max()) + 1

    @classmethod
    def from_centres(cls, centres, radius: float = 0.15, names=None) -> Modes:
        c = torch.as_tensor(centres, dtype=torch.float32)
        return cls(c, torch.arange(len(c)), radius, names)

    @classmethod
    def from_data(cls, data, labels=None, radius: float = 0.1) -> Modes:
        """Modes of a point set: its labels, or clusters found by :func:`cluster_labels`."""
        data = torch.as_tensor(data, dtype=torch.float32)
        labels = cluster_labels(data) if labels is None else torch.as_tensor(labels, dtype=torch.long)
        return cls(data, labels, radius)

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) mode label of each particle, −1 where it is in none."""
        d = torch.cdist(x.detach().float().cpu(), self.anchors)
        best, idx = d.min(1)
        return torch.where(best <= self.radius, self.labels[idx], torch.full_like(idx, -1))

    def occupancy(self, x: torch.Tensor) -> np.ndarray:
        """Share of particles in each mode (K entries) and, last, in none."""
        a = self.assign(x)
        counts = torch.bincount(a + 1, minlength=self.k + 1).float()
        shares = (counts / max(len(a), 1)).numpy()
        return np.concatenate([shares[1:], shares[:1]])


def mode_share_error(samples: torch.Tensor, modes: Modes, data: torch.Tensor) -> dict:
    """Each mode's weight among the samples against its weight in the data (both assigned by
    ``modes``). ``samples`` and ``data``: the K mode shares, then the share in no mode; ``weights``
    and ``data_weights``: the K shares among the points that are in some mode (the mode weights,
    e.g. 1/8 each for 8 Gaussians); ``max_error``: the largest |weight − data weight|; ``outside``:
    the samples' share in no mode; ``tv``: the total-variation distance between the two histograms,
    outside share included (0 = the same, 1 = disjoint)."""
    s, d = modes.occupancy(samples), modes.occupancy(data)
    ws, wd = s[:-1] / max(s[:-1].sum(), 1e-12), d[:-1] / max(d[:-1].sum(), 1e-12)

    def r(v):
        return [round(float(u), 4) for u in v]

    return {"samples": r(s), "data": r(d), "weights": r(ws), "data_weights": r(wd),
            "max_error": round(float(np.abs(ws - wd).max()), 4), "outside": round(float(s[-1]), 4),
            "tv": round(float(0.5 * np.abs(s - d).sum()), 4)}


def modes_for(name: str, energy=None, data=None, labels=None) -> Modes | None:
    """The natural modes of a data set or a hand-made landscape (None where there are none, e.g. a
    ring or a half-plane)."""
    if name in DATASETS:
        if data is None:
            data, labels = dataset(name)
        return Modes.from_data(data, labels, radius=0.1)
    if energy is not None and hasattr(energy, "modes"):
        centres = energy.modes()
        radius = 0.4 if name == "double_well" else 2.5 * energy.config.get("std", 0.06)
        return Modes.from_centres(centres, radius)
    if data is not None and len(data):
        return Modes.from_data(data, labels, radius=0.1)
    return None


def modes_of(energy) -> Modes | None:
    """The modes of a landscape: a hand-made one's own, or for a composition (``experts``) those of
    its first positively weighted term that has any."""
    for e in getattr(energy, "experts", None) or ():
        if e.weight > 0 and (modes := modes_of(e.energy)) is not None:
            return modes
    if hasattr(energy, "modes"):
        return modes_for(getattr(energy, "kind", ""), energy)
    return None


def start_points(start: str, modes: Modes | None, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` starting points: ``uniform`` over the square, or ``first_mode``: all close to one
    point of the first mode (the origin without modes)."""
    g = torch.Generator().manual_seed(int(seed))
    if start == "uniform":
        return torch.rand(n, 2, generator=g) * 2 - 1
    if modes is None:
        return torch.zeros(n, 2) + 0.02 * torch.randn(n, 2, generator=g)
    anchors = modes.anchors[modes.labels == 0]
    centre = anchors.mean(0, keepdim=True)
    spot = anchors[torch.cdist(centre, anchors).argmin()]  # a point of the mode itself (an arc's mean may miss it)
    return (spot + 0.02 * torch.randn(n, 2, generator=g)).clamp(-1, 1)


class ModeTracker:
    """Mode-hopping statistics for a set of chains, fed one state at a time.

    A chain's current mode is the last mode it was seen in (time between modes does not count as
    leaving). A hop is a change of that mode. Reports, per chain and over all chains: hops, modes
    visited, the step of the first hop, and the share of chains that hopped at all.
    """

    def __init__(self, modes: Modes, n_chains: int):
        self.modes = modes
        self.n = int(n_chains)
        self.current = torch.full((self.n,), -1, dtype=torch.long)
        self.start = torch.full((self.n,), -1, dtype=torch.long)
        self.hops = torch.zeros(self.n, dtype=torch.long)
        self.first_hop = torch.full((self.n,), -1, dtype=torch.long)
        self.visited = torch.zeros((self.n, modes.k), dtype=torch.bool)
        self.steps = 0
        self.last_assign = torch.full((self.n,), -1, dtype=torch.long)

    def update(self, x: torch.Tensor, step: int | None = None) -> torch.Tensor:
        a = self.modes.assign(x)
        self.steps = self.steps + 1 if step is None else int(step)
        seen = a >= 0
        hop = seen & (self.current >= 0) & (a != self.current)
        self.hops += hop.long()
        self.first_hop = torch.where(hop & (self.first_hop < 0), torch.full_like(a, self.steps), self.first_hop)
        self.start = torch.where(seen & (self.start < 0), a, self.start)
        self.current = torch.where(seen, a, self.current)
        self.visited[seen.nonzero(as_tuple=True)[0], a[seen]] = True
        self.last_assign = a
        return a

    def summary(self) -> dict:
        hopped = self.first_hop >= 0
        shares = torch.bincount(self.last_assign + 1, minlength=self.modes.k + 1).float() / max(self.n, 1)
        return {
            "steps": self.steps,
            "mode_share": [round(float(v), 4) for v in shares[1:]],
            "outside_share": round(float(shares[0]), 4),
            "modes_visited": round(float(self.visited.sum(1).float().mean()), 3),
            "modes_reached": int(self.visited.any(0).sum()),
            "hops_per_chain": round(float(self.hops.float().mean()), 3),
            "chains_hopped": round(float(hopped.float().mean()), 4),
            "mean_first_hop": round(float(self.first_hop[hopped].float().mean()), 1) if hopped.any() else None,
        }


def hop_statistics(trajectory, modes: Modes) -> dict:
    """:class:`ModeTracker` over a whole trajectory (T×N×2 or a list of N×2 states)."""
    states = list(trajectory)
    tracker = ModeTracker(modes, len(states[0]))
    for k, x in enumerate(states):
        tracker.update(torch.as_tensor(x), step=k)
    return tracker.summary()


# --- objectives side by side --------------------------------------------------------------------
class SideBySide:
    """Several objectives trained on the same data with the same seed (the Landscape tab's
    comparison): one :class:`Trainer` each, from :func:`train_config` with the same overrides.
    Every run keeps its own sampler for fresh samples (Langevin for cd and nce, the ladder for dsm)."""

    def __init__(self, data: torch.Tensor, objectives=("cd", "dsm"), seed: int = 0, **overrides):
        data = check_points(data, "data")
        if not objectives or any(o not in OBJECTIVES for o in objectives) or len(set(objectives)) != len(objectives):
            raise EBMError(f"objectives must be distinct names from {', '.join(OBJECTIVES)}")
        self.data = data
        self.trainers = {o: Trainer(train_config(objective=o, seed=seed, **overrides), data) for o in objectives}

    def step(self, n: int = 1) -> dict[str, dict]:
        """``n`` updates of every run, taken in turns; the last figures of each."""
        last = {}
        for _ in range(n):
            for o, tr in self.trainers.items():
                last[o] = tr.step()
        return last

    def samples(self, n: int = 500, seed: int = 0, steps: int | None = None) -> dict[str, torch.Tensor]:
        """Fresh samples from uniform noise, each run with its own sampler and the same seed."""
        return {o: tr.fresh_samples(n, steps, seed) for o, tr in self.trainers.items()}

    def mode_report(self, modes: Modes, samples: dict[str, torch.Tensor]) -> dict[str, dict]:
        """:func:`mode_share_error` of each run's samples against the data."""
        return {o: mode_share_error(x, modes, self.data) for o, x in samples.items()}
