"""The task-level Python API: sample, score, inpaint and denoise with any model and sampler.

The CLI and the app call these; they validate inputs and take sampler settings from
:mod:`ebm_play.settings` (the model file's recommendation, else a table per model kind).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from . import samplers, settings, validate
from .data import uniform_noise
from .errors import EBMError
from .images import check_pixels
from .runtime import make_generator

MAX_CHAINS = 4096
MAX_STEPS = samplers.MAX_STEPS


def _device_of(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def sample_chains(model: nn.Module, n: int = 16, steps: int | None = None, sampler: str | None = None,
                  seed: int | None = None, x0: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                  callback: Callable[[samplers.Step], object] | None = None, keep_frames: int = 0,
                  compile: bool = False, **options) -> samplers.SampleResult:
    """Run ``sampler`` (default: the model's own, :func:`~ebm_play.settings.default_sampler`) on
    ``model`` from fresh uniform-noise chains (or from ``x0``) and return the whole
    :class:`~ebm_play.samplers.SampleResult` (final chains, energies per step, frames).
    ``compile=True`` compiles the energy-and-gradient step (CUDA graphs on a GPU; see
    :class:`~ebm_play.samplers.CompiledEnergy`): worth it for large batches and long runs."""
    sampler = settings.default_sampler(model) if sampler is None else sampler
    chosen = settings.resolve(model, sampler, None if steps is None else validate.whole("steps", steps, 0, MAX_STEPS))
    steps = validate.whole("steps", chosen.steps, 0, MAX_STEPS)
    options = settings.merge(chosen.options, options)
    device = _device_of(model)
    g = make_generator(seed, device)
    if x0 is None:
        x0 = uniform_noise(validate.whole("n", n, 1, MAX_CHAINS), g, device)
    else:
        x0 = check_pixels(x0, "x0").to(device)
        if len(x0) == 1 and n > 1:
            x0 = x0.repeat(validate.whole("n", n, 1, MAX_CHAINS), 1, 1, 1)
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.float32, device=device)
        try:
            torch.broadcast_shapes(mask.shape, x0.shape)
        except RuntimeError as e:
            raise EBMError(f"mask of shape {tuple(mask.shape)} does not fit images {tuple(x0.shape)}") from e
        options["mask"] = (mask > 0.5).float()
    was_training = model.training
    model.eval()
    try:
        energy = samplers.compiled(model) if compile and sampler not in ("gibbs", "ladder") else model
        return samplers.run(sampler, energy, x0, steps, generator=g, callback=callback,
                            keep_frames=keep_frames, **options)
    finally:
        model.train(was_training)


def sample(model: nn.Module, n: int = 16, steps: int | None = None, sampler: str | None = None,
           seed: int | None = None, x0: torch.Tensor | None = None, mask: torch.Tensor | None = None,
           callback: Callable[[samplers.Step], object] | None = None, **options) -> torch.Tensor:
    """N×1×28×28 samples in [−1, 1] (see :func:`sample_chains` for the full record)."""
    return sample_chains(model, n, steps, sampler, seed, x0, mask, callback, **options).x


@torch.no_grad()
def score(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Energies (N,) of images; lower = more data-like."""
    x = check_pixels(x)
    device = _device_of(model)
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i: i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def inpaint(model: nn.Module, image: torch.Tensor, keep: torch.Tensor, n: int = 4, steps: int | None = None,
            sampler: str | None = None, seed: int | None = None, **options) -> samplers.SampleResult:
    """Fill the pixels where ``keep`` is 0 by sampling with the kept pixels held fixed.
    Each of the ``n`` fills starts from its own uniform noise in the free region."""
    image = check_pixels(image, "image")[:1]
    keep = torch.as_tensor(keep, dtype=torch.float32).reshape(1, 1, 28, 28)
    if keep.min() > 0.5:
        raise EBMError("the mask keeps every pixel: mark the part to fill in")
    g = make_generator(seed, torch.device("cpu"))
    noise = uniform_noise(validate.whole("n", n, 1, MAX_CHAINS), g)
    x0 = torch.where(keep > 0.5, image, noise)
    return sample_chains(model, len(x0), steps, sampler, seed, x0=x0, mask=keep, **options)


DENOISE_STEPS = 40  # updates from the noisy image when the caller gives none (see denoise)
# A dsm model's ladder starts this far down when it denoises (SDEdit): from σ_max = 1 its chains forget
# the image (32 test digits under Gaussian noise σ 0.5: 0.38 classified right; from 0.3: 0.97).
DENOISE_LADDER_SIGMA = 0.3


def denoise(model: nn.Module, noisy: torch.Tensor, data_weight: float = 0.0, steps: int | None = None,
            sampler: str | None = None, seed: int | None = None, **options) -> samplers.SampleResult:
    """Restore noisy images by sampling from E(x) + λ‖x − x_noisy‖², starting at the noisy images
    (λ = ``data_weight``), for ``steps`` updates (default :data:`DENOISE_STEPS`).

    The defaults are measured (README "Denoising and inpainting"; 100 test digits, mnist): the
    restoration comes from starting at the noisy image and stopping early, as in SDEdit (Meng et al.
    2022), not from the data term. The model's own short run pulls the noisy image onto the nearest
    digit in ~20–60 updates; run much longer and it drifts to another digit (a 3 becomes a 1 after
    500). Any pixel-wise data term keeps the noise it is tied to: with Gaussian noise σ 0.5 the
    distance to the clean digit is 5.0 at λ = 0, 7.2 at λ = 0.01 and 11.8 at the previous λ = 1
    (noisy: 10.2), so λ defaults to 0. A λ of 0.01–0.03 stops the drift of long runs. A dsm model's
    ladder starts at σ :data:`DENOISE_LADDER_SIGMA` unless ``sigma_max`` is given."""
    noisy = check_pixels(noisy, "noisy image")
    sampler = settings.default_sampler(model) if sampler is None else sampler
    if sampler == "gibbs":
        raise EBMError("denoising needs a gradient sampler (langevin, ula, mala, hmc, annealed)")
    if sampler == "ladder":
        options.setdefault("sigma_max", DENOISE_LADDER_SIGMA)
    if not (data_weight >= 0 and data_weight < float("inf")):
        raise EBMError(f"data_weight must be 0 or more, got {data_weight}")
    return sample_chains(model, len(noisy), DENOISE_STEPS if steps is None else steps, sampler, seed, x0=noisy,
                         x_obs=noisy, data_weight=float(data_weight), **options)
