"""Training for the CNN EBM, JEM, the RBM and the 2-D MLP energy, one step at a time.

The trainer never loops by itself: ``Trainer.step()`` does one update and returns its figures,
so a CLI loop, a background thread in the app or a test can pause, resume and stop between steps.

The objective (``TrainConfig.objective``; the losses are in ``objectives.py``) is contrastive
divergence by default. Loss (CNN energy): E(real) − E(fake) + α(E(real)² + E(fake)²); fakes come
from a replay buffer refined by the shared Langevin sampler. JEM adds cross-entropy on p(y|x) to
the same generative term with E(x) = −logsumexp f(x). The RBM uses CD-k or persistent CD with
block Gibbs. ``dsm`` (denoising score matching over a noise ladder; the model is the σ-conditioned
version of the CNN or MLP) and ``nce`` (noise-contrastive estimation with a learned log Z) need no
MCMC in an update and keep no replay buffer (``Trainer.buffer`` is None).

Divergence (non-finite values; for CD also energies past a bound, fakes far below reals) rolls the
model and optimiser back to the last good checkpoint and halves the learning rate; it is recorded.
A slow runaway (fakes drifting above the data in energy over hundreds of updates: the chains no
longer reach the data and the energy turns into a data-versus-chains classifier) rolls the model,
optimiser and replay buffer back to a healthy anchor, taken every ``drift_window`` updates, and
doubles the sampler steps.

Under torchrun (a live process group, see ``distributed.py``) the same trainer is data-parallel:
each rank has its own replay buffer, batches and noise, the loss forward goes through
DistributedDataParallel so gradients are averaged, and a divergence on any rank rolls all back.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F

from . import distributed, objectives, samplers
from .errors import EBMError
from .models import RBM, EnergyModel, build_model
from .objectives import OBJECTIVES, cd_loss
from .runtime import make_generator

DEFAULT_WIDTH = {"cnn": 16, "jem": 32}
NOISE_KINDS = {"cnn": "cnn-noise", "mlp2d": "mlp2d-noise"}  # the σ-conditioned model dsm trains
LADDER_STEPS_PER_LEVEL = 100  # fresh ladder chains: NCSN's 100 Langevin steps per noise level
# Digits whose mirror image is no digit: 0, 1 and 8 mirror into themselves.
MIRROR_CLASSES = torch.tensor([2, 3, 4, 5, 6, 7, 9])
MAX_DRIFT_STEPS = 256  # a drift rollback doubles the sampler steps up to this, then halves the lr


@dataclass
class TrainConfig:
    """Everything that defines a run; defaults are the reference recipe."""

    model: str = "cnn"  # cnn | jem | rbm | mlp2d (2-D points, for landscapes)
    width: int | None = None  # CNN channels c (cnn 16, jem 32)
    hidden: int = 256  # RBM hidden units; MLP width for mlp2d
    spectral_norm: bool = False
    classes: list[int] | None = None  # train on these digits only
    batch_size: int = 128
    sampler_steps: int = 60
    step_size: float = 10.0
    noise: float = 0.005
    grad_clamp: float | None = 0.03
    alpha: float = 0.1
    lr: float = 1e-4
    beta1: float = 0.0
    beta2: float = 0.999
    lr_gamma: float = 0.97
    lr_step_every: int = 469  # iterations per StepLR step (one MNIST epoch at batch 128)
    buffer_size: int = 8192
    reinit: float = 0.05
    # Share of the noise restarts dimmed by a random brightness per image, so that chains also start
    # at every ink level down to blank and find the faint, thin images a model rates too highly.
    dimmed: float = 0.0
    dimmed_from: int = 0  # updates made before the restarts are dimmed
    # Negative data augmentation: per update, up to this share of the batch again as mirror images
    # of the batch's asymmetric digits (2–7, 9), pushed up like fakes. Shapes a digit's strokes
    # make but no digit has: they teach the energy shape, not only ink (cnn and jem; needs labels).
    mirrored: float = 0.0
    # Positive data augmentation: this share of each batch's real digits randomly rotated (±10°),
    # scaled (0.9–1.1), sheared, shifted (±2 px) and made bolder or thinner, so a detector that
    # runs away (see weights/README.md) still accepts digits drawn in other hands, e.g. on the pad.
    augment: float = 0.0
    data_noise: float = 0.005
    grad_clip: float | None = 0.1  # max gradient norm
    jem_gen_weight: float = 1.0
    cd_k: int = 1
    persistent: bool = True
    energy_bound: float | None = None  # |E| past this is divergence (cnn/jem 100, rbm 1e5)
    gap_bound: float = 10.0  # E(fake) − E(real) below −gap_bound is divergence
    # Mean E(fake) − E(real) over drift_window updates above drift_bound is a slow runaway (cnn and
    # jem; None: no check). Healthy runs of the shipped recipes stay within ±0.2.
    drift_bound: float | None = 0.5
    drift_window: int = 250
    checkpoint_every: int = 25
    seed: int = 0
    # Langevin steps recommended for fresh chains from noise, stored in the weights file; default
    # sampler_steps. A replay-buffer model is trained on long chains and needs more than that.
    # dsm: updates of the ladder sampler in all (default 100 per noise level).
    fresh_steps: int | None = None
    # The training objective (see objectives.py): cd (contrastive divergence, the reference), dsm
    # (denoising score matching over a noise ladder) or nce (noise-contrastive estimation).
    objective: str = "cd"
    # dsm: the geometric noise ladder σ_max … σ_min (pixels in [−1, 1]), and the ladder sampler's
    # step ε at σ_min (the step at level σ is ε(σ/σ_min)²), stored as its recommended setting.
    sigma_max: float = 1.0
    sigma_min: float = 0.02
    sigma_levels: int = 10
    ladder_step: float = 2e-5
    # nce: the noise distribution (gaussian: fitted to the data; uniform: on [−1, 1]^D; default
    # gaussian for images, uniform for 2-D points) and noise samples per data sample ν.
    nce_noise: str | None = None
    nce_ratio: int = 1
    # Decay of an exponential moving average of the weights (0: none). With it the run shows,
    # samples and saves the average, which smooths out the last updates' noise (a dsm model's mode
    # weights on 8 Gaussians: benchmarks/objectives.py, README).
    ema: float = 0.0

    def __post_init__(self):
        if self.model not in ("cnn", "jem", "rbm", "mlp2d"):
            raise EBMError(f"unknown model kind {self.model!r}: use cnn, jem, rbm or mlp2d")
        for name in ("batch_size", "sampler_steps", "lr_step_every", "buffer_size", "cd_k", "hidden", "checkpoint_every", "seed",
                     "drift_window", "dimmed_from", "sigma_levels", "nce_ratio"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                if isinstance(v, float) and v.is_integer():
                    setattr(self, name, int(v))
                else:
                    raise EBMError(f"{name} must be a whole number, got {v!r}")
        if self.fresh_steps is not None and (isinstance(self.fresh_steps, bool) or not isinstance(self.fresh_steps, int)
                                             or self.fresh_steps < 1):
            raise EBMError(f"fresh_steps must be a positive whole number, got {self.fresh_steps!r}")
        for name in ("seed", "dimmed_from"):
            if getattr(self, name) < 0:
                raise EBMError(f"{name} must be 0 or more, got {getattr(self, name)}")
        positive = ("batch_size", "step_size", "lr", "buffer_size", "lr_step_every", "checkpoint_every", "cd_k", "hidden",
                    "drift_window")
        for name in positive:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise EBMError(f"{name} must be a positive number, got {v!r}")
        for name in ("noise", "alpha", "data_noise", "grad_clamp", "jem_gen_weight"):
            v = getattr(self, name)
            if name == "grad_clamp" and v is None:  # no clamp
                continue
            if not (math.isfinite(v) and v >= 0):
                raise EBMError(f"{name} must be 0 or more, got {v!r}")
        for name in ("reinit", "dimmed", "mirrored", "augment"):
            if not 0 <= getattr(self, name) <= 1:
                raise EBMError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        for name, what in (("dimmed", "dimmed restarts"), ("mirrored", "mirrored negatives"), ("augment", "augmented digits")):
            if getattr(self, name) and self.model not in ("cnn", "jem"):
                raise EBMError(f"{what} are for image energies (cnn, jem)")
        if not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1:
            raise EBMError("Adam betas must be in [0, 1)")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise EBMError(f"grad_clip must be positive (or None for no clipping), got {self.grad_clip}")
        if not (isinstance(self.ema, (int, float)) and 0 <= self.ema < 1):
            raise EBMError(f"ema must be in [0, 1), got {self.ema!r}")
        if not 0 < self.lr_gamma <= 1:
            raise EBMError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        for name in ("energy_bound", "gap_bound", "drift_bound"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise EBMError(f"{name} must be positive, got {v}")
        if self.sampler_steps < 0:
            raise EBMError("sampler_steps must be 0 or more")
        if self.classes is not None:
            self.classes = sorted({int(c) for c in self.classes})
            if not self.classes or any(c < 0 or c > 9 for c in self.classes):
                raise EBMError("classes must be digits between 0 and 9")
        if self.width is None and self.model in DEFAULT_WIDTH:
            self.width = DEFAULT_WIDTH[self.model]
        if self.energy_bound is None:
            self.energy_bound = 1e5 if self.model == "rbm" else 100.0
        self._check_objective()

    def _check_objective(self) -> None:
        if self.objective not in OBJECTIVES:
            raise EBMError(f"unknown objective {self.objective!r}: use {', '.join(OBJECTIVES)}")
        if self.objective == "cd":
            return
        if self.model not in NOISE_KINDS:
            raise EBMError(f"objective {self.objective} trains cnn or mlp2d energies, not {self.model}")
        for name, what in (("dimmed", "dimmed restarts"), ("mirrored", "mirrored negatives")):
            if getattr(self, name):
                raise EBMError(f"{what} belong to contrastive divergence (objective cd)")
        objectives.noise_ladder(self.sigma_max, self.sigma_min, self.sigma_levels)  # validates the ladder
        if not (math.isfinite(self.ladder_step) and self.ladder_step > 0):
            raise EBMError(f"ladder_step must be a positive number, got {self.ladder_step!r}")
        if self.nce_noise is not None and self.nce_noise not in objectives.NCE_NOISES:
            raise EBMError(f"unknown NCE noise {self.nce_noise!r}: use {', '.join(objectives.NCE_NOISES)}")
        if isinstance(self.nce_ratio, bool) or not isinstance(self.nce_ratio, int) or not 1 <= self.nce_ratio <= 64:
            raise EBMError(f"nce_ratio must be a whole number from 1 to 64, got {self.nce_ratio!r}")

    @property
    def model_kind(self) -> str:
        """The model kind this run builds (dsm trains the σ-conditioned version of ``model``)."""
        return NOISE_KINDS[self.model] if self.objective == "dsm" else self.model

    def noise_ladder(self) -> torch.Tensor:
        return objectives.noise_ladder(self.sigma_max, self.sigma_min, self.sigma_levels)

    def sampler(self) -> str:
        """The sampler of this run's fresh chains, and the default sampler stored in its file."""
        return "gibbs" if self.model == "rbm" else "ladder" if self.objective == "dsm" else "langevin"

    def fresh_sampler_options(self) -> dict:
        """Settings of the run's fresh chains from noise (steps included), as stored in its file."""
        if self.model == "rbm":
            return {"steps": 200}
        if self.objective == "dsm":
            steps = self.fresh_steps or LADDER_STEPS_PER_LEVEL * self.sigma_levels
            return {"steps": steps, "step_size": self.ladder_step}
        return {"steps": self.fresh_steps or self.sampler_steps, **self.sampler_options()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise EBMError(f"unknown training option {unknown[0]!r}")
        return cls(**d)

    def build_model(self) -> EnergyModel:
        if self.objective == "dsm":
            ladder = dict(sigma_min=self.sigma_min, sigma_max=self.sigma_max, levels=self.sigma_levels)
            size = dict(hidden=self.hidden) if self.model == "mlp2d" else dict(width=self.width)
            if self.spectral_norm:
                raise EBMError("spectral_norm is not available for dsm models")
            return build_model(self.model_kind, **size, **ladder)
        if self.model in ("rbm", "mlp2d"):
            return build_model(self.model, hidden=self.hidden)
        return build_model(self.model, width=self.width, spectral_norm=self.spectral_norm)

    def sampler_options(self) -> dict:
        return dict(step_size=self.step_size, noise=self.noise, grad_clamp=self.grad_clamp)


PRESETS: dict[str, dict] = {
    # Shorter chains, a higher learning rate and a small buffer: digits appear in the replay
    # buffer within a few hundred steps on one CPU thread. Fresh chains from noise need longer
    # than the training chains (benchmarks/time_to_digits.py).
    "fast": dict(batch_size=64, sampler_steps=20, lr=1e-3, buffer_size=2000, fresh_steps=256),
    # The reference recipe: the TrainConfig defaults.
    "reference": {},
    # Denoising score matching on digits: no MCMC while training, the ladder sampler for fresh
    # chains (benchmarks/objectives.py against "fast").
    "dsm": dict(objective="dsm", batch_size=64, lr=1e-3),
    # Noise-contrastive estimation against a Gaussian fitted to the digits; sampled like "fast".
    "nce": dict(objective="nce", batch_size=64, lr=1e-3, fresh_steps=256),
}


def preset(name: str, **overrides) -> TrainConfig:
    """A named starting point (``fast`` or ``reference``) with any field overridden."""
    if name not in PRESETS:
        raise EBMError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], **overrides})


def _check_labels(config: TrainConfig, labels: torch.Tensor | None) -> None:
    if labels is None and config.model == "jem":
        raise EBMError("JEM training needs labels")
    if labels is None and config.mirrored:
        raise EBMError("mirrored negatives need labels (they mirror the digits 2–7 and 9)")


class ReplayBuffer:
    """Persistent negatives: a batch is drawn from the buffer, ``reinit`` of it restarted from
    uniform noise (a ``dimmed`` share of that times a random brightness per image), refined by the
    sampler and written back where it came from."""

    def __init__(self, capacity: int, reinit: float, device: torch.device,
                 generator: torch.Generator, shape=(1, 28, 28), dimmed: float = 0.0):
        self.capacity, self.reinit, self.generator, self.dimmed = int(capacity), float(reinit), generator, dimmed
        self.x = self.noise(self.capacity, shape, device)

    def noise(self, n, shape, device):
        u = torch.rand((n, *shape), generator=self.generator, device=device)
        if self.dimmed:  # no extra draws otherwise: undimmed runs stay bit for bit as they were
            one = (n, *[1] * len(shape))
            brightness = torch.rand(one, generator=self.generator, device=device)
            dim = torch.rand(one, generator=self.generator, device=device) < self.dimmed
            u = torch.where(dim, u * brightness, u)
        return u * 2 - 1

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(self.capacity, (n,), generator=self.generator, device=self.x.device)
        x = self.x[idx]
        fresh = torch.rand(n, generator=self.generator, device=x.device) < self.reinit
        x = torch.where(fresh.view(-1, *[1] * (x.dim() - 1)), self.noise(n, x.shape[1:], x.device), x)
        return idx, x

    def update(self, idx: torch.Tensor, x: torch.Tensor) -> None:
        self.x[idx] = x.detach()

    def sanitize(self) -> int:
        """Replace non-finite chains with noise; returns how many were replaced."""
        bad = ~torch.isfinite(self.x.flatten(1)).all(1)
        n = int(bad.sum())
        if n:
            self.x[bad] = self.noise(n, self.x.shape[1:], self.x.device)
        return n


@dataclass
class Event:
    step: int
    kind: str  # "rollback"
    message: str


@dataclass
class TrainState:
    step: int = 0
    history: list[dict] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class LossView(torch.nn.Module):
    """What the loss reads from the model, as one ``forward``: JEM's logits (E = −logsumexp),
    every other model's energies (a dsm model's at the given noise levels; nce's plus the learned
    log-partition constant ``log_z``, a parameter of this view). DDP only wraps ``forward``, so the
    loss goes through this."""

    def __init__(self, model: EnergyModel, log_z: bool = False):
        super().__init__()
        self.model = model
        self.log_z = torch.nn.Parameter(torch.zeros(())) if log_z else None

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        if self.model.kind == "jem":
            return self.model.logits(x)
        e = self.model(x) if sigma is None else self.model(x, sigma)
        return e if self.log_z is None else e + self.log_z


class Interrupted(Exception):
    """Raised by :meth:`Trainer.step` when its ``interrupt`` check said stop during an update: the
    update is dropped whole (no weights, optimiser or buffer change), so the run can pause or stop
    within one sampler step instead of waiting for the update to end."""


class Trainer:
    """One training run. ``data`` is N×1×28×28 images (or N×2 points for mlp2d) in [−1, 1];
    ``labels`` (N,) is needed for JEM.

    In a live process group (torchrun) each rank builds its own Trainer; ``batch_size`` is per
    rank, and the weights stay identical on all ranks. Call :meth:`close` before the group goes.
    """

    def __init__(self, config: TrainConfig, data: torch.Tensor, labels: torch.Tensor | None = None,
                 model: EnergyModel | None = None, device: torch.device | str = "cpu", start_step: int = 0,
                 interrupt: Callable[[], bool] | None = None):
        self.config = c = config
        self.interrupt = interrupt  # checked between sampler steps; True drops the update (Interrupted)
        self._buffer_write: tuple | None = None  # (indices, fakes) of the update in progress (CD)
        self.device = torch.device(device)
        if c.classes is not None and labels is not None:
            keep = torch.isin(labels, torch.tensor(c.classes))
            data, labels = data[keep], labels[keep]
        if len(data) == 0:
            raise EBMError("no training images (is the class subset empty?)")
        _check_labels(c, labels)
        self.data = data.to(self.device)
        self.labels = None if labels is None else labels.to(self.device)
        with torch.random.fork_rng(devices=[]):  # seeded weights without touching the global RNG
            torch.manual_seed(c.seed)
            self.model = (model or c.build_model()).to(self.device)
        if model is None and hasattr(self.model, "fit_baseline"):  # a new dsm model: its Gaussian baseline
            self.model.fit_baseline(data)
        if model is not None and model.kind != c.model_kind:
            raise EBMError(f"the loaded model is a {model.kind} model, but the run trains {c.model_kind}")
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if c.ema else None
        n_classes = self.model.config.get("n_classes") if self.model.has_classes else None
        if n_classes is not None and self.labels is not None and int(self.labels.max()) >= n_classes:
            raise EBMError(f"a JEM of {n_classes} classes cannot learn digit {int(self.labels.max())}: "
                           f"train it on digits below {n_classes} (classes 0–{n_classes - 1})")
        self.world = distributed.current_world()
        self.generator = make_generator(distributed.rank_seed(c.seed, self.world.rank), self.device)
        self.state = TrainState(step=start_step)  # a resumed run counts on from its file's updates
        # Only contrastive divergence keeps a replay buffer (None for dsm and nce).
        self.buffer = ReplayBuffer(c.buffer_size, c.reinit if c.model != "rbm" else 0.0, self.device, self.generator,
                                   shape=tuple(data.shape[1:]), dimmed=self._dimmed()) if c.objective == "cd" else None
        self.noise = self._nce_noise() if c.objective == "nce" else None
        # The loss forward; DDP (several ranks) averages gradients in backward(). The RBM's CD
        # gradient is autograd of free energies too, so DDP fits all models: no manual all-reduce.
        self._view = LossView(self.model, log_z=c.objective == "nce")
        if self._view.log_z is not None:
            self._view.log_z.data.fill_(self._first_log_z(model))
        self._loss_net = distributed.data_parallel(self._view, self.device)
        self.optimizer = torch.optim.Adam(self._view.parameters(), lr=c.lr, betas=(c.beta1, c.beta2))
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, c.lr_step_every, c.lr_gamma)
        self._order = torch.empty(0, dtype=torch.long)
        self._checkpoint = self._snapshot()
        self._gaps: deque[float] = deque(maxlen=c.drift_window)  # recent E(fake) − E(real), for drift
        # The drift rollback target: a healthy state that a further healthy window followed
        # (``_candidate`` waits for that window), so the run never returns to the onset of a runaway.
        self._anchor = self._snapshot(buffer=True) if self._drift_checked() else None
        self._candidate: dict | None = None
        self._updates = 0  # made by this trainer; state.step also counts those before a resume
        self._started = time.perf_counter()

    # --- data -------------------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        b = min(self.config.batch_size, len(self.data))
        if len(self._order) < b:  # a new epoch: a fresh permutation from the run's own generator
            self._order = torch.randperm(len(self.data), generator=self.generator, device=self.device)
        idx, self._order = self._order[:b], self._order[b:]
        return self.data[idx], None if self.labels is None else self.labels[idx]

    def set_data(self, data: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Train on new data from the next batch on (the app adds clicked points to a live run)."""
        _check_labels(self.config, labels)
        self.data = data.to(self.device)
        self.labels = None if labels is None else labels.to(self.device)
        self._order = torch.empty(0, dtype=torch.long)
        if self.noise is not None:
            self.noise = self._nce_noise()

    @torch.no_grad()
    def _first_log_z(self, model: EnergyModel | None) -> float:
        """nce's starting log Z: a resumed run's own, else the value that centres the first logits
        G = −E − log Z − log q − log ν of 256 data and noise points at 0. On digits against a Gaussian
        log q alone spans hundreds of nats; from log Z = 0 the first hundreds of updates only shift
        the energies by that much."""
        if model is not None:
            return float(getattr(model, "info", {}).get("log_z", 0.0))
        x = torch.cat([self.data[:256], self.noise.sample(256, self.generator, self.device)])
        g = objectives.nce_logits(self.model(x), self.noise.log_prob(x), self.config.nce_ratio)
        return g.mean().item()

    def _nce_noise(self):
        """The NCE noise distribution for this run's data (a Gaussian is fitted to it)."""
        kind = self.config.nce_noise or ("uniform" if self.data.dim() == 2 else "gaussian")
        return objectives.nce_noise(kind, self.data)

    def update_config(self, **changes) -> list[str]:
        """Change settings of a live run (learning rate, sampler settings, α, re-init, batch size…);
        the architecture is fixed. Returns the names of the fields that changed."""
        arch = {"model", "width", "hidden", "spectral_norm", "objective", "sigma_max", "sigma_min",
                "sigma_levels", "ema"} & set(changes)
        if any(changes[k] != getattr(self.config, k) for k in arch):
            raise EBMError(f"{sorted(arch)[0]} cannot change during a run: start a new one")
        new = dataclasses.replace(self.config, **changes)
        _check_labels(new, self.labels)
        changed = [k for k in changes if getattr(new, k) != getattr(self.config, k)]
        self.config = new
        if new.model != "rbm" and self.buffer is not None:
            self.buffer.reinit = new.reinit
        if "nce_noise" in changed and self.noise is not None:
            self.noise = self._nce_noise()
        if "drift_bound" in changed and (self._anchor is None) == self._drift_checked():  # check turned on or off
            self._anchor = self._snapshot(buffer=True) if self._drift_checked() else None
            self._candidate = None
        if "lr" in changed:
            for group in self.optimizer.param_groups:
                group["lr"] = new.lr
            self.scheduler.base_lrs = [new.lr for _ in self.scheduler.base_lrs]
        return changed

    # --- checkpoints ------------------------------------------------------------------------
    def _snapshot(self, buffer: bool = False) -> dict:
        snap = {"model": copy.deepcopy(self._view.state_dict()),  # the model (and nce's log Z)
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "scheduler": copy.deepcopy(self.scheduler.state_dict()), "step": self.state.step}
        if self.ema is not None:
            snap["ema"] = copy.deepcopy(self.ema.state_dict())
        if buffer:
            snap["buffer"] = self.buffer.x.clone()
        return snap

    def _rollback(self, reason: str, drift: bool = False) -> Event:
        """Back to the last checkpoint with half the current learning rate. A drift goes back to
        the healthy anchor, buffer included, and doubles the sampler steps instead (up to
        ``MAX_DRIFT_STEPS``): its chains no longer reach the data, and a lower rate only delays
        the next runaway (seed 1 of the `mnist` recipe drifted again at every rate down to 2e-6)."""
        snap = self._anchor if drift else self._checkpoint
        steps = self.config.sampler_steps
        more_steps = drift and min(2 * steps, MAX_DRIFT_STEPS) > steps
        lrs, base_lrs = [g["lr"] for g in self.optimizer.param_groups], self.scheduler.base_lrs
        self._view.load_state_dict(snap["model"])
        if self.ema is not None:
            self.ema.load_state_dict(snap["ema"])
        # copies: Adam would otherwise update the snapshot's moment tensors in place
        self.optimizer.load_state_dict(copy.deepcopy(snap["optimizer"]))
        self.scheduler.load_state_dict(copy.deepcopy(snap["scheduler"]))
        if drift:
            self.buffer.x.copy_(snap["buffer"])
        factor = 1.0 if more_steps else 0.5
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr * factor
        self.scheduler.base_lrs = [b * factor for b in base_lrs]
        if more_steps:
            self.config = dataclasses.replace(self.config, sampler_steps=min(2 * steps, MAX_DRIFT_STEPS))
        replaced = self.buffer.sanitize() if self.buffer is not None else 0
        lr = self.optimizer.param_groups[0]["lr"]
        target = f"the healthy checkpoint of update {snap['step']}" if drift else "the last good checkpoint"
        change = f"sampler steps now {self.config.sampler_steps}" if more_steps else f"lr now {lr:.3g}"
        msg = f"diverged at step {self.state.step} ({reason}): rolled back to {target}, {change}"
        if replaced:
            msg += f", {replaced} buffer chains restarted"
        self._gaps.clear()
        self._candidate = None
        self._checkpoint = self._snapshot()  # not a drifted one
        event = Event(self.state.step, "rollback", msg)
        self.state.events.append(event)
        return event

    # --- one update -------------------------------------------------------------------------
    def negatives(self, x: torch.Tensor) -> torch.Tensor:
        """Refine chains with the run's sampler (Langevin, or Gibbs for the RBM)."""
        c = self.config
        was_training = self.model.training
        self.model.eval()
        stop = None if self.interrupt is None else (lambda _rec: not self.interrupt())
        try:
            if c.model == "rbm":
                res = samplers.run("gibbs", self.model, x, c.cd_k, generator=self.generator, callback=stop)
            else:
                res = samplers.run("langevin", self.model, x, c.sampler_steps, generator=self.generator,
                                   callback=stop, **c.sampler_options())
        finally:
            self.model.train(was_training)
        if self.interrupt is not None and self.interrupt():
            raise Interrupted(f"update {self.state.step + 1} interrupted")
        self.sampler_stats = {"sampler_e_start": res.energies[0].mean().item(), "sampler_e_end": res.energy.mean().item()}
        return res.x

    def step(self) -> dict:
        """One update of the run's objective; returns its figures (also appended to the history)."""
        t0 = time.perf_counter()
        c = self.config
        self._buffer_write = None
        if c.objective == "cd":
            loss, metrics, energies = self._cd_loss()
        else:
            if self.interrupt is not None and self.interrupt():  # no sampler loop to check inside
                raise Interrupted(f"update {self.state.step + 1} interrupted")
            loss, metrics, energies = self._dsm_loss() if c.objective == "dsm" else self._nce_loss()
        return self._update(loss, metrics, energies, t0)

    def _cd_loss(self) -> tuple[torch.Tensor, dict, tuple[torch.Tensor, torch.Tensor]]:
        """Contrastive divergence: fakes from the replay buffer refined by the sampler."""
        c = self.config
        x_real, y = self._batch()
        if c.model == "rbm":
            v_real = torch.bernoulli(RBM.to_visible(x_real), generator=self.generator)
            x_real = RBM.to_image(v_real)
            if c.persistent:
                idx, x_neg = self.buffer.sample(len(x_real))
            else:
                idx, x_neg = None, x_real
        else:
            self.buffer.dimmed = self._dimmed()
            idx, x_neg = self.buffer.sample(len(x_real))
            noise = torch.randn(x_real.shape, generator=self.generator, device=self.device)
            x_real = (x_real + c.data_noise * noise).clamp(-1, 1)
        x_neg = self.negatives(x_neg)
        self._buffer_write = None if idx is None else (idx, x_neg)  # written once the update is taken

        self.model.train()
        metrics: dict = dict(self.sampler_stats)
        x_real = self._augmented(x_real)
        x_mir = self._mirrored(x_real, y)
        n, m = len(x_real), len(x_neg)
        if c.model == "rbm":
            e_real, e_fake = self._loss_net(x_real), self._loss_net(x_neg)
            loss = e_real.mean() - e_fake.mean()
        else:
            out = self._loss_net(torch.cat([x_real, x_neg, x_mir]))  # JEM: logits
            e = -torch.logsumexp(out, 1) if c.model == "jem" else out
            e_real, e_fake, e_mir = e[:n], e[n: n + m], e[n + m:]
            loss = cd_loss(e_real, e_fake, c.alpha) + self._pushed_up(e_mir)
            if c.model == "jem":
                ce = F.cross_entropy(out[:n], y)
                loss = ce + c.jem_gen_weight * loss
                metrics["ce"] = ce.item()
                metrics["accuracy"] = (out[:n].argmax(1) == y).float().mean().item()
        if len(x_mir):
            metrics["e_mirrored"] = e_mir.mean().item()
        return loss, metrics, (e_real, e_fake)

    def _dsm_loss(self) -> tuple[torch.Tensor, dict, None]:
        """Denoising score matching: each sample of the batch at one level of the noise ladder
        (stratified, so every level is logged every update), no MCMC."""
        x, _ = self._batch()
        x = self._augmented(x)
        sigmas = self._sigmas()
        level = objectives.levels_of_batch(len(x), len(sigmas), self.device)
        z = torch.randn(x.shape, generator=self.generator, device=self.device)
        self.model.train()
        per_sample = objectives.dsm_loss(self._loss_net, x, sigmas[level], z)
        per_level = torch.zeros(len(sigmas), device=self.device).index_add_(0, level, per_sample.detach())
        per_level = per_level / torch.bincount(level, minlength=len(sigmas)).clamp_min(1)
        metrics = {f"dsm_loss_{i}": v for i, v in enumerate(per_level.tolist())}
        return per_sample.mean(), metrics, None

    def _nce_loss(self) -> tuple[torch.Tensor, dict, None]:
        """Noise-contrastive estimation: data against ν× as many noise samples, no MCMC."""
        c = self.config
        x, _ = self._batch()
        x = self._augmented(x)
        noise = self.noise.sample(c.nce_ratio * len(x), self.generator, self.device)
        self.model.train()
        e = self._loss_net(torch.cat([x, noise]))  # E(x) + log Z
        g = objectives.nce_logits(e, self.noise.log_prob(torch.cat([x, noise])), c.nce_ratio)
        g_data, g_noise = g[: len(x)], g[len(x):]
        log_z = self._view.log_z.item()
        metrics = {"nce_accuracy": objectives.nce_accuracy(g_data, g_noise), "log_z": log_z,
                   "e_real": e[: len(x)].mean().item() - log_z, "e_noise": e[len(x):].mean().item() - log_z}
        return objectives.nce_loss(g_data, g_noise, c.nce_ratio), metrics, None

    def _sigmas(self) -> torch.Tensor:
        return self.config.noise_ladder().to(self.device)

    def _update(self, loss: torch.Tensor, metrics: dict, energies, t0: float) -> dict:
        """The objective-independent rest of an update: backward, clipping, divergence checks and
        rollbacks, the optimiser step, checkpoints and the history row."""
        c = self.config
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self._view.parameters(), c.grad_clip or math.inf)
        if self.interrupt is not None and self.interrupt():  # the last moment to drop the update whole
            raise Interrupted(f"update {self.state.step + 1} interrupted")
        # collective: every rank rolls back (and halves its lr) when any rank diverged
        reason = distributed.shared_divergence(self._divergence(loss.item(), gnorm.item(), energies))
        drift = reason is None and self._anchor is not None
        gap = None
        if energies is not None:
            e_r, e_f = energies[0].mean().item(), energies[1].mean().item()
            gap = e_f - e_r
            metrics.update(e_real=e_r, e_fake=e_f, gap=gap)
        if drift:
            reason = distributed.shared_divergence(self._drift(gap))
        if self._buffer_write is not None:  # CD's refined fakes go back to the replay buffer
            self.buffer.update(*self._buffer_write)
        self.state.step += 1
        self._updates += 1
        metrics.update(step=self.state.step, loss=loss.item(), grad_norm=gnorm.item(),
                       lr=self.optimizer.param_groups[0]["lr"], rolled_back=False)
        if reason:
            event = self._rollback(reason, drift)
            metrics.update(rolled_back=True, event=event.message, lr=self.optimizer.param_groups[0]["lr"])
        else:
            self.optimizer.step()
            self.scheduler.step()
            self._average()
            if self.state.step % c.checkpoint_every == 0 and self._finite_params():
                self._checkpoint = self._snapshot()
            if self._anchor is not None and self.state.step % c.drift_window == 0:
                if self._healthy():
                    self._anchor = self._candidate or self._anchor
                    self._candidate = self._snapshot(buffer=True)
                else:
                    self._candidate = None
        dt = time.perf_counter() - t0
        metrics.update(seconds=dt, steps_per_s=1.0 / dt if dt > 0 else float("inf"),
                       elapsed=time.perf_counter() - self._started)
        self.state.history.append(metrics)
        return metrics

    @torch.no_grad()
    def _average(self) -> None:
        """One step of the weights' moving average (buffers, e.g. the dsm baseline, are copied)."""
        if self.ema is None:
            return
        d = self.config.ema
        for a, p in zip(self.ema.parameters(), self.model.parameters()):
            a.lerp_(p, 1 - d)
        for a, b in zip(self.ema.buffers(), self.model.buffers()):
            a.copy_(b)

    @property
    def shown_model(self) -> EnergyModel:
        """The weights a run shows, samples and saves: the moving average when ``ema`` is on."""
        return self.model if self.ema is None else self.ema

    def _mirrored(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The batch's asymmetric digits (2–7, 9) mirrored left to right, at most ``mirrored`` × batch."""
        k = round(self.config.mirrored * len(x))
        if not k:
            return x[:0]
        return x[torch.isin(y, MIRROR_CLASSES.to(y.device))][:k].flip(-1)

    def _augmented(self, x: torch.Tensor) -> torch.Tensor:
        """The first ``augment`` × batch images randomly deformed (see ``TrainConfig.augment``),
        each brought back to full brightness as MNIST's digits are."""
        k = round(self.config.augment * len(x))
        if not k:
            return x
        g, d = self.generator, self.device

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(k, generator=g, device=d)

        angle, scale, shear = uniform(-10, 10) * math.pi / 180, uniform(0.9, 1.1), uniform(-0.15, 0.15)
        tx, ty = uniform(-2 / 14, 2 / 14), uniform(-2 / 14, 2 / 14)  # ±2 pixels in grid units
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin + shear, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        ink = (x[:k] + 1) / 2
        ink = F.grid_sample(ink, F.affine_grid(theta, ink.shape, align_corners=False), align_corners=False)
        bold = uniform(-0.5, 0.5).view(-1, 1, 1, 1)  # > 0: towards a 3×3 dilation, < 0: an erosion
        dilated, eroded = F.max_pool2d(ink, 3, 1, 1), -F.max_pool2d(-ink, 3, 1, 1)
        ink = torch.where(bold > 0, ink + bold * (dilated - ink), ink - bold * (eroded - ink)).clamp(0, 1)
        ink = ink / ink.amax((1, 2, 3), keepdim=True).clamp_min(1e-6)
        return torch.cat([ink * 2 - 1, x[k:]])

    def _pushed_up(self, e: torch.Tensor) -> torch.Tensor:
        """The fakes' half of the loss for the mirrored negatives (0 when there are none)."""
        return -e.mean() + self.config.alpha * e.pow(2).mean() if len(e) else e.new_zeros(())

    def _finite_params(self) -> bool:
        return all(torch.isfinite(p).all() for p in self._view.parameters())

    def _divergence(self, loss, gnorm, energies) -> str | None:
        """Non-finite figures for every objective; for contrastive divergence (``energies`` =
        (E(real), E(fake))) also energies past the bound and a collapsed gap. dsm and nce energies
        have no such scale (E(x, σ) grows as 1/σ; nce's are log-density ratios)."""
        c = self.config
        if not (math.isfinite(loss) and math.isfinite(gnorm)):
            return "non-finite loss or gradient"
        if not self._finite_params():
            return "non-finite weights"
        if energies is None:
            return None
        e_real, e_fake = energies
        worst = max(e_real.abs().max().item(), e_fake.abs().max().item())
        if worst > c.energy_bound:
            return f"|energy| {worst:.3g} past the bound {c.energy_bound:g}"
        if c.model != "rbm" and e_fake.mean().item() - e_real.mean().item() < -c.gap_bound:
            return "fakes far below the data in energy (collapsed gap)"
        return None

    def _dimmed(self) -> float:
        return self.config.dimmed if self.state.step >= self.config.dimmed_from else 0.0

    def _drift_checked(self) -> bool:
        c = self.config
        return c.drift_bound is not None and c.model in ("cnn", "jem") and c.objective == "cd"

    def _drift(self, gap: float) -> str | None:
        """The slow-runaway verdict. The trainer's first window is skipped (also after a resume):
        fresh noise chains sit far above the data until the sampler has caught up."""
        c = self.config
        if self._gaps.maxlen != c.drift_window:  # changed in a live run
            self._gaps = deque(self._gaps, maxlen=c.drift_window)
        if self._updates < c.drift_window:
            return None
        self._gaps.append(gap)
        mean = self._mean_gap()
        if mean is not None and mean > c.drift_bound:
            return f"fakes drifting above the data: mean E(fake) − E(real) {mean:+.2f} over {c.drift_window} updates"
        return None

    def _mean_gap(self) -> float | None:
        """The mean gap over a full drift window, None before the window is full."""
        full = len(self._gaps) == self.config.drift_window
        return sum(self._gaps) / len(self._gaps) if full else None

    def _healthy(self) -> bool:
        """A full window with a mean gap under half the drift bound, on every rank: anchor-worthy."""
        mean = self._mean_gap()
        return not distributed.any_rank(mean is None or mean >= self.config.drift_bound / 2)

    # --- views for callers ------------------------------------------------------------------
    def fresh_samples(self, n: int, steps: int | None = None, seed: int = 0) -> torch.Tensor:
        """Samples from fresh uniform-noise chains with the run's sampler settings."""
        x = None
        for x in self.fresh_chains(n, steps, seed):
            pass
        return x

    def fresh_chains(self, n: int, steps: int | None = None, seed: int = 0) -> Iterator[torch.Tensor]:
        """:meth:`fresh_samples` one sampler update at a time (the sampler's records: steps + 1
        states, the last the result), so a caller can spread the work out; the model must not
        change in between. The run's own sampler: Langevin (cd, nce), Gibbs (rbm), the ladder down
        the noise ladder (dsm; ``steps`` is then the ladder steps in all)."""
        g = make_generator(seed, self.device)
        x0 = torch.rand((n, *self.data.shape[1:]), generator=g, device=self.device) * 2 - 1
        c = self.config
        options = c.fresh_sampler_options()
        default_steps = options.pop("steps")
        model = self.shown_model
        chain = samplers.SAMPLERS[c.sampler()](model, x0, steps or default_steps, generator=g, **options)
        while True:
            was_training = model.training
            model.eval()
            try:
                rec = next(chain, None)
            finally:
                model.train(was_training)
            if rec is None:
                return
            yield rec.x

    def metadata(self) -> dict:
        """Training facts stored beside the weights: the objective, the run's own sampler
        (``sampler``, which ``ebm_play.sample`` uses when none is named) and its recommended
        settings (``samplers``); dsm adds its noise ladder, nce its log-partition constant."""
        c = self.config
        info = {"train_config": asdict(c), "objective": c.objective, "sampler": c.sampler(),
                "samplers": {c.sampler(): c.fresh_sampler_options()}, "train_steps": self.state.step,
                "train_seconds": round(time.perf_counter() - self._started, 1),
                "rollbacks": len(self.state.events), "world_size": self.world.size}
        if c.objective == "dsm":
            info["noise_ladder"] = [round(float(v), 6) for v in c.noise_ladder()]
        if c.objective == "nce":
            info.update(log_z=self._view.log_z.item(), nce_noise=self.noise.describe(), nce_ratio=c.nce_ratio)
        return info

    def metric_names(self) -> dict[str, str]:
        """The history keys whose curves mean something for this run's objective, with labels."""
        c = self.config
        return objectives.metric_names(c.objective, c.noise_ladder().tolist(), c.model)

    def close(self) -> None:
        """Drop the DDP wrapper. It must go before its process group: a DDP reducer still alive
        after ``destroy_process_group`` can abort the process at exit. The trainer stays usable."""
        self._loss_net = getattr(self._loss_net, "module", self._loss_net)
