"""Energy models. Every model maps x (N×1×28×28, float32, pixels in [−1, 1]) to energies (N,).

Convention, used everywhere in ebm_play: **lower energy = more data-like**, p(x) ∝ exp(−E(x)).

Each model keeps the constructor arguments in ``self.config`` so a weights file can rebuild it
(see ``weights.py``); ``MODEL_KINDS`` maps the ``kind`` stored in the file to the class.
"""

from __future__ import annotations

import contextvars
import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from .errors import EBMError, shown

IMAGE_SHAPE = (1, 28, 28)


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


_SKELETON = contextvars.ContextVar("ebm_play_skeleton", default=False)  # True inside state_shapes()


class _SpectralNormShapes(nn.Module):
    """Stands in for torch's spectral norm while :func:`state_shapes` builds a model on the meta
    device: the same state-dict entries (``original``, ``_u`` of the output size, ``_v`` of the
    input size), without its power iterations, which take ~0.1 s a layer on meta tensors."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("_u", weight.new_empty(weight.shape[0]))
        self.register_buffer("_v", weight.new_empty(weight[0].numel()))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight


def _spectral_norm(module: nn.Module) -> nn.Module:
    if _SKELETON.get():
        nn.utils.parametrize.register_parametrization(module, "weight", _SpectralNormShapes(module.weight), unsafe=True)
        return module
    return nn.utils.parametrizations.spectral_norm(module)


def _trunk(width: int, spectral_norm: bool) -> nn.Sequential:
    """The reference CNN body: 28×28 → 16×16 → 8×8 → 4×4 → 2×2, Swish between layers."""
    c = width
    sn = _spectral_norm if spectral_norm else (lambda m: m)
    return nn.Sequential(
        sn(nn.Conv2d(1, c, 5, stride=2, padding=4)), Swish(),
        sn(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)), Swish(),
        sn(nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1)), Swish(),
        sn(nn.Conv2d(4 * c, 4 * c, 3, stride=2, padding=1)), Swish(),
        nn.Flatten(),
        sn(nn.Linear(4 * c * 4, 4 * c)), Swish(),
    )


_SUBKERNELS = WeakIdKeyDictionary()  # weight → ((version, padding), sub-kernels); in-place updates bump the version


def _subpixel_input_grad(w: torch.Tensor, p: int, x_shape: torch.Size, g: torch.Tensor) -> torch.Tensor:
    """The input gradient of a stride-2 convolution as one forward convolution and a pixel shuffle.

    Each of the four pixel phases (row and column parity) of the input gradient is an ordinary
    correlation of ``g`` with a sub-kernel (every other tap of the flipped kernel). oneDNN's own
    backward pass for a one-channel input is slow (3× its forward pass); this is 4× faster.
    ``w`` is the weight, ``p`` the padding (square kernels and paddings, as in :func:`_trunk`)."""
    cout, cin, k, _ = w.shape
    lo = -((k - 1 - p) // 2)  # smallest offset i - v of an output i feeding input pixel 2v + r
    taps = (p + 1) // 2 - lo + 1
    cached = _SUBKERNELS.get(w)
    if cached is not None and cached[0] == (w._version, p):
        sub = cached[1]
    else:  # tap t of phase r reads kernel index r + p - 2(t + lo); out-of-range indices read a zero pad
        idx = [[r + p - 2 * (t + lo) for t in range(taps)] for r in (0, 1)]
        idx = torch.tensor([[i if 0 <= i < k else k for i in row] for row in idx], device=w.device)
        sub = F.pad(w, (0, 1, 0, 1))[:, :, idx][..., idx]  # (cout, cin, ry, ty, rx, tx); index k is the pad
        sub = sub.permute(1, 2, 4, 0, 3, 5).reshape(4 * cin, cout, taps, taps)
        _SUBKERNELS[w] = ((w._version, p), sub)
    pad_r = x_shape[-1] // 2 - g.shape[-1] + lo + taps - 1
    if -lo == pad_r >= 0:  # F.pad would copy (to NCHW); conv2d pads in place
        y = F.conv2d(g, sub, padding=pad_r)
    else:
        y = F.conv2d(F.pad(g, (-lo, pad_r, -lo, pad_r)), sub)
    # y is (N, cin·2·2, H/2, W/2), the four phases as channels
    n, _, h, wd = y.shape
    y = y.view(n, cin, 2, 2, h, wd).permute(0, 1, 4, 2, 5, 3)  # = F.pixel_shuffle(y, 2), without its layout copies
    return y.reshape(n, cin, 2 * h, 2 * wd)


_PACKED = WeakIdKeyDictionary()  # weight → {(use, input shape): (version, oneDNN-packed weight)}


def _packed(w: torch.Tensor, use: str, x: torch.Tensor, layer: nn.Conv2d, out_pad: list[int] | None = None):
    """``w`` reordered once into oneDNN's blocked layout for input ``x`` (``use`` "conv" or
    "transpose"), or None where that does not apply. Plain F.conv2d reorders the weight on every
    call, which at batch 16 costs as much as the arithmetic (the one-channel first layer is faster
    unpacked). Only plain parameters are cached (spectral norm makes a new weight tensor per call);
    in-place updates bump the version."""
    if not (isinstance(w, nn.Parameter) and x.device.type == "cpu" and x.dtype == torch.float32
            and layer.in_channels > 1 and layer.groups == 1 and torch.backends.mkldnn.is_available()):
        return None
    entries = _PACKED.setdefault(w, {})
    key = (use, tuple(x.shape), tuple(out_pad or ()))
    hit = entries.get(key)
    if hit is not None and hit[0] == w._version:
        return hit[1]
    args = (list(layer.padding), list(layer.stride), list(layer.dilation), 1, list(x.shape))
    try:
        with torch.no_grad():
            if use == "conv":
                packed = torch.ops.mkldnn._reorder_convolution_weight(w, *args)
            else:
                packed = torch.ops.mkldnn._reorder_convolution_transpose_weight(w, args[0], out_pad, *args[1:])
    except (AttributeError, RuntimeError):  # a torch build without these oneDNN ops: use the plain path
        return None
    if len(entries) >= 8:
        entries.clear()
    entries[key] = (w._version, packed)
    return packed


def _forward(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A :func:`_trunk` layer's output and the weight it used (read once: spectral norm recomputes
    it on every read, and the backward pass must see the same one)."""
    if isinstance(layer, nn.Conv2d):
        w = layer.weight
        packed = _packed(w, "conv", x, layer)
        if packed is None:
            return F.conv2d(x, w, layer.bias, layer.stride, layer.padding), w
        return torch.ops.mkldnn._convolution_pointwise(x, packed, layer.bias, layer.padding, layer.stride,
                                                        layer.dilation, 1, "none", [], ""), w
    if isinstance(layer, nn.Linear):
        w = layer.weight
        return F.linear(x, w, layer.bias), w
    return layer(x), None


def _input_grad(layer: nn.Module, w: torch.Tensor | None, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """d(layer output)/d(layer input) applied to ``g``, for the layers of :func:`_trunk`."""
    if isinstance(layer, Swish):
        return torch.ops.aten.silu_backward(g, x)
    if isinstance(layer, nn.Linear):
        return g @ w
    if isinstance(layer, nn.Flatten):  # in x's layout: mixed layouts send the next two ops down slow paths
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        return g.reshape(x.shape).contiguous(memory_format=fmt)
    if layer.in_channels == 1 and layer.stride == (2, 2) and x.shape[-1] % 2 == 0:
        return _subpixel_input_grad(w, layer.padding[0], x.shape, g)
    square = (layer.padding[0] == layer.padding[1] and layer.stride[0] == layer.stride[1]
              and layer.kernel_size[0] == layer.kernel_size[1] and layer.dilation == (1, 1) and x.shape[-1] == x.shape[-2])
    s, p, k = layer.stride[0], layer.padding[0], layer.kernel_size[0]
    out_pad = x.shape[-1] - ((g.shape[-1] - 1) * s - 2 * p + k)  # the transposed convolution's size back to x
    packed = _packed(w, "transpose", g, layer, [out_pad] * 2) if square and 0 <= out_pad < s else None
    if packed is not None:  # the input gradient is the transposed convolution of g
        return torch.ops.mkldnn._convolution_transpose_pointwise(g, packed, None, layer.padding, [out_pad] * 2,
                                                                  layer.stride, layer.dilation, 1, "none", [], "")
    return torch.ops.aten.convolution_backward(g, x, w, None, layer.stride, layer.padding, layer.dilation,
                                               False, [0, 0], 1, [True, False, False])[0]


def trunk_energy_and_grad(body: nn.Sequential, x: torch.Tensor, head, film: dict | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """E(x) and dE/dx through a :func:`_trunk` body with the backward pass written out: no
    autograd graph, only the input gradient, and a faster first layer (``_subpixel_input_grad``).
    ``head(h)`` returns the energies and dE/dh of the body's output h. Equal to autograd's result
    up to float rounding, and most of the sampler's lead over the reference (sampler_speed.py).
    ``film`` {layer index: (scale, shift)} modulates those layers' outputs, h ← h·scale + shift
    (the σ-conditioned CNN)."""
    with torch.no_grad():
        saved = []
        h = x.detach()
        for i, layer in enumerate(body):
            out, w = _forward(layer, h)
            scale, shift = (film or {}).get(i, (None, None))
            saved.append((layer, w, h, scale))
            h = out if scale is None else out * scale + shift
        e, g = head(h)
        for layer, w, inp, scale in reversed(saved):
            g = _input_grad(layer, w, inp, g if scale is None else g * scale)
    return e, g


def check_images(x: torch.Tensor) -> None:
    """Reject what is not a batch of 28×28 single-channel images, with a message that says why."""
    if not isinstance(x, torch.Tensor):
        raise EBMError(f"expected a tensor of images, got {type(x).__name__}")
    if x.dim() != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
        raise EBMError(f"expected images of shape N×1×28×28, got {tuple(x.shape)}")


def autograd_energy_and_grad(energy, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``energy(x)`` and its input gradient by autograd (models without a written-out one)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = energy(x)
        (g,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), g


class EnergyModel(nn.Module):
    """Base class: ``forward(x) -> (N,)`` energies. ``kind`` names the class in weights files."""

    kind = "base"
    is_energy = True  # False for the evaluation classifier, which returns logits
    has_classes = False  # True: logits(x), E(x, y) and p(y|x) too (JEM)

    def __init__(self, **config):
        super().__init__()
        self.config = dict(config)

    def check(self) -> None:
        """Raise EBMError if loaded weights are unusable in a way finite tensors do not rule out."""

    def energy_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E(x) and dE/dx for a batch, the one operation every gradient sampler needs."""
        return autograd_energy_and_grad(self, x)


class CNNEnergy(EnergyModel):
    """The reference CNN energy (conv 1→c k5 s2 p4, c→2c, 2c→4c, 4c→4c k3 s2 p1, linear 16c→4c→1).

    ``width`` is c (16 in the reference). Optional spectral normalisation bounds each layer's
    Lipschitz constant, which keeps the energy smooth and training stable.
    """

    kind = "cnn"

    def __init__(self, width: int = 16, spectral_norm: bool = False):
        super().__init__(width=int(width), spectral_norm=bool(spectral_norm))
        if not 1 <= width <= 256:
            raise EBMError(f"width must be between 1 and 256, got {width}")
        self.body = _trunk(width, spectral_norm)
        self.head = nn.Linear(4 * width, 1)
        self.to(memory_format=torch.channels_last)  # oneDNN's fast layout: ~1.25× on the CPU (sampler_speed.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(-1)

    def energy_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.head.weight
        return trunk_energy_and_grad(self.body, x, lambda h: (self.head(h).squeeze(-1), w.expand(h.shape[0], -1)))


class JEMEnergy(EnergyModel):
    """JEM classifier-energy (Grathwohl et al. 2020): logits f(x) ∈ R¹⁰ define

    E(x, y) = −f(x)[y],  E(x) = −logsumexp_y f(x)[y],  p(y|x) = softmax f(x).
    """

    kind = "jem"
    has_classes = True

    def __init__(self, width: int = 32, spectral_norm: bool = False, n_classes: int = 10):
        super().__init__(width=int(width), spectral_norm=bool(spectral_norm), n_classes=int(n_classes))
        if not 1 <= width <= 256:
            raise EBMError(f"width must be between 1 and 256, got {width}")
        if n_classes < 2:
            raise EBMError(f"n_classes must be at least 2, got {n_classes}")
        self.body = _trunk(width, spectral_norm)
        self.head = nn.Linear(4 * width, n_classes)
        self.to(memory_format=torch.channels_last)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def forward(self, x: torch.Tensor, y: torch.Tensor | int | None = None) -> torch.Tensor:
        f = self.logits(x)
        if y is None:
            return -torch.logsumexp(f, dim=1)
        if isinstance(y, int):
            return -f[:, y]
        return -f.gather(1, y.view(-1, 1).long()).squeeze(1)

    def energy_and_grad(self, x: torch.Tensor, y: torch.Tensor | int | None = None):
        """E(x) (or E(x, y)) and its input gradient, without autograd (see trunk_energy_and_grad)."""
        def head(h):
            f = self.head(h)
            if y is None:
                p = torch.softmax(f, dim=1)
                return -torch.logsumexp(f, dim=1), -(p @ self.head.weight)
            if isinstance(y, int):
                return -f[:, y], -self.head.weight[y].expand(h.shape[0], -1)
            yy = y.view(-1).long()
            return -f.gather(1, yy.view(-1, 1)).squeeze(1), -self.head.weight[yy]

        return trunk_energy_and_grad(self.body, x, head)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """p(y|x), N×10."""
        return torch.softmax(self.logits(x), dim=1)


class JEMEnsemble(EnergyModel):
    """JEMs averaged, each standardised on training digits: E(x) = mean_i (E_i(x) − μ_i)/σ_i.

    Detectors trained alike still disagree on what is not a digit (letters AUROC 0.80–0.92 across
    seeds and checkpoints, weights/README.md); the average keeps what they agree on, as a deep
    ensemble does. Class energies are standardised the same way: E(x, y) = mean_i (−f_i(x)[y] − μ_i)/σ_i
    = −f(x)[y] − mean_i μ_i/σ_i with the averaged logits f(x) = mean_i f_i(x)/σ_i, p(y|x) = softmax f(x).
    """

    kind = "jem-ensemble"
    has_classes = True

    def __init__(self, members: int = 3, width: int = 16, spectral_norm: bool = False, n_classes: int = 10):
        super().__init__(members=int(members), width=int(width), spectral_norm=bool(spectral_norm), n_classes=int(n_classes))
        if not 1 <= members <= 16:
            raise EBMError(f"members must be between 1 and 16, got {members}")
        self.members = nn.ModuleList(JEMEnergy(width, spectral_norm, n_classes) for _ in range(members))
        self.register_buffer("shift", torch.zeros(members))  # μ_i
        self.register_buffer("scale", torch.ones(members))  # σ_i

    def check(self) -> None:
        if not (self.scale > 0).all():
            raise EBMError("the members' scales must be positive")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.logits(x) / s for m, s in zip(self.members, self.scale)]).mean(0)

    def forward(self, x: torch.Tensor, y: torch.Tensor | int | None = None) -> torch.Tensor:
        return torch.stack([(m(x, y) - mu) / s for m, mu, s in zip(self.members, self.shift, self.scale)]).mean(0)

    def energy_and_grad(self, x: torch.Tensor, y: torch.Tensor | int | None = None):
        e, g = 0.0, 0.0
        for m, mu, s in zip(self.members, self.shift, self.scale):
            ei, gi = m.energy_and_grad(x, y)
            e, g = e + (ei - mu) / s, g + gi / s
        return e / len(self.members), g / len(self.members)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """p(y|x), N×10."""
        return torch.softmax(self.logits(x), dim=1)


class RBM(EnergyModel):
    """Bernoulli RBM over 784 binary visibles v = (x + 1)/2 and ``hidden`` binary hiddens.

    E(v, h) = −bᵀv − cᵀh − vᵀWh. Its energy on images is the free energy
    F(v) = −log Σ_h exp(−E(v, h)) = −bᵀv − Σ_j softplus(c_j + (vᵀW)_j), which is differentiable
    in v, so gradient samplers work on it as well as block Gibbs.
    """

    kind = "rbm"

    def __init__(self, hidden: int = 256, visible: int = 784):
        super().__init__(hidden=int(hidden), visible=int(visible))
        if not 1 <= hidden <= 8192:
            raise EBMError(f"hidden must be between 1 and 8192, got {hidden}")
        # random numbers on the meta device go through Python decompositions that take seconds to import
        self.W = nn.Parameter(torch.empty(visible, hidden) if _SKELETON.get() else torch.randn(visible, hidden) * 0.01)
        self.b = nn.Parameter(torch.zeros(visible))
        self.c = nn.Parameter(torch.zeros(hidden))

    @staticmethod
    def to_visible(x: torch.Tensor) -> torch.Tensor:
        return ((x.reshape(x.shape[0], -1) + 1) / 2).clamp(0, 1)

    @staticmethod
    def to_image(v: torch.Tensor) -> torch.Tensor:
        return (v * 2 - 1).reshape(-1, *IMAGE_SHAPE)

    def joint_energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return -(v @ self.b) - (h @ self.c) - ((v @ self.W) * h).sum(1)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        return -(v @ self.b) - F.softplus(v @ self.W + self.c).sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.free_energy(self.to_visible(x))

    def p_h(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(v @ self.W + self.c)

    def p_v(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(h @ self.W.t() + self.b)

    def gibbs_step(self, v: torch.Tensor, generator: torch.Generator | None = None):
        """One block-Gibbs sweep v → h → v'. Returns (v', p(v'=1|h)) so callers can show the mean."""
        h = torch.bernoulli(self.p_h(v), generator=generator)
        pv = self.p_v(h)
        return torch.bernoulli(pv, generator=generator), pv


class MLPEnergy(EnergyModel):
    """A small MLP energy on 2-D points (for landscapes): x (N×2) → (N,)."""

    kind = "mlp2d"

    def __init__(self, hidden: int = 128, layers: int = 3):
        super().__init__(hidden=int(hidden), layers=int(layers))
        dims = [2] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            mods += [nn.Linear(a, b), Swish()]
        self.net = nn.Sequential(*mods, nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


NOISE_FREQUENCIES = 4  # Fourier features of log σ: t, sin(kπt), cos(kπt) for k = 1…4
NOISE_FEATURES = 1 + 2 * NOISE_FREQUENCIES


class NoiseConditional(EnergyModel):
    """Base of the σ-conditioned energies E(x, σ) that denoising score matching trains; the score at
    noise level σ is −∇ₓE(x, σ). ``forward(x)`` without σ is E(x, σ_min), the model's energy of
    (almost) clean data, so scoring, OOD, composition, inpainting and denoising use it like any
    other energy; :meth:`at_noise` gives the energy at one level, which the ``ladder`` sampler walks down.

    How σ enters: E(x, σ) = B(x, σ) + f(x, φ(σ))/σ.
    - B(x, σ) is the exact energy, with noise σ added, of the data's independent-pixel model, fitted
      by :meth:`fit_baseline`: ``bins`` 1, a Gaussian per coordinate (mean μ_d, variance v_d:
      B = Σ_d (x_d − μ_d)²/(2(v_d + σ²))); ``bins`` K > 1, each pixel's histogram over K levels c_k
      of [−1, 1], a mixture of narrow Gaussians (B = −Σ_d log Σ_k π_dk N(x_d; c_k, s₀² + σ²), s₀ =
      ``bin_width``). At small σ denoising is mostly per pixel (snap a noisy pixel back to black,
      white or a common grey), which the histogram gets exactly: on digits it alone has a lower loss
      than a CNN trained for 1,800 updates at every level below σ ≈ 0.3 (21 levels of width 0.0125:
      0.15 at σ 0.02, 41 levels of width 0.025: 0.24, a Gaussian per pixel: 0.39, the CNN: 0.37).
      The network learns what B misses: the dependencies between pixels, all that matters at large σ.
    - The division by σ makes σ∇ₓ(f/σ) = ∇ₓf, what the loss compares with unit noise, the same
      scale at every level (NCSNv2's s(x)/σ, which works for images because a noisy image shows its
      own noise level); φ(σ), Fourier features of log σ over the ladder, lets f differ between
      levels too, which points in the plane need (a 2-D point does not show how noisy it is)."""

    def __init__(self, shape: tuple[int, ...], sigma_min: float = 0.02, sigma_max: float = 1.0, levels: int = 10,
                 bins: int = 1, bin_width: float = 0.0125, **config):
        from .objectives import noise_ladder

        noise_ladder(float(sigma_max), float(sigma_min), int(levels))  # validates
        if not 1 <= int(bins) <= 256:
            raise EBMError(f"bins must be between 1 and 256, got {bins}")
        if not (math.isfinite(bin_width) and bin_width > 0):
            raise EBMError(f"bin_width must be positive, got {bin_width}")
        extra = {} if bins == 1 else {"bin_width": float(bin_width)}
        super().__init__(**config, sigma_min=float(sigma_min), sigma_max=float(sigma_max), levels=int(levels),
                         bins=int(bins), **extra)
        if bins == 1:  # fit_baseline sets them
            self.register_buffer("data_mean", torch.zeros(shape))
            self.register_buffer("data_var", torch.ones(shape))
        else:
            self.register_buffer("log_pi", torch.full((*shape, int(bins)), -math.log(bins)))

    def check(self) -> None:
        if self.config["bins"] == 1 and not (self.data_var >= 0).all():
            raise EBMError("the baseline's pixel variances must be 0 or more")


    @torch.no_grad()
    def fit_baseline(self, data: torch.Tensor) -> None:
        """B from training data (the trainer does this for a new model): the mean and variance of
        each coordinate, or each pixel's histogram (nearest level, plus 0.01 of a count per level)."""
        if self.config["bins"] == 1:
            x = data.to(self.data_mean.device, torch.float32)
            self.data_mean.copy_(x.mean(0))
            self.data_var.copy_(x.var(0) if len(x) > 1 else torch.zeros_like(x[0]))
            return
        k = self.config["bins"]
        counts = torch.zeros_like(self.log_pi)
        for i in range(0, len(data), 4096):  # one-hot in slices: 60,000 × 784 × 41 would be 7 GB
            level = ((data[i: i + 4096].to(counts.device) + 1) / 2 * (k - 1)).round().long().clamp(0, k - 1)
            counts += F.one_hot(level, k).sum(0)
        counts += 0.01
        self.log_pi.copy_((counts / counts.sum(-1, keepdim=True)).log())

    @torch.no_grad()
    def baseline(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B(x, σ) and its gradient, written out (no autograd graph: B has no weights)."""
        s2 = s.view(-1, *[1] * (x.dim() - 1)).pow(2)
        if self.config["bins"] == 1:
            d = x - self.data_mean
            g = d / (self.data_var + s2)
            return 0.5 * (d * g).flatten(1).sum(1), g
        v = (self.config["bin_width"] ** 2 + s2)[..., None]
        d = x[..., None] - torch.linspace(-1, 1, self.config["bins"], device=x.device, dtype=x.dtype)
        q = d.square().mul_(-0.5 / v).add_(self.log_pi)  # log π_k − (x − c_k)²/2v, in place: B is the costly part
        m = q.amax(-1, keepdim=True)
        p = q.sub_(m).exp_()
        z = p.sum(-1)
        g = p.mul_(d).sum(-1) / (z * v[..., 0])
        e = 0.5 * torch.log(2 * math.pi * v[..., 0]) - m[..., 0] - z.log()
        return e.flatten(1).sum(1), g

    def _baseline_term(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """B(x, σ) for a forward pass. The Gaussian baseline (points) is plain autograd, so Hessians and
        functorch transforms see it; the histogram one (images) is differentiable in x once, its
        gradient written out, which is all the score-matching loss needs of a term without weights."""
        if self.config["bins"] == 1:
            d = x - self.data_mean
            return 0.5 * (d.square() / (self.data_var + s.view(-1, *[1] * (x.dim() - 1)).square())).flatten(1).sum(1)
        return _Baseline.apply(x, s, self)

    def noise_ladder(self) -> torch.Tensor:
        """The training ladder σ_max … σ_min (descending)."""
        from .objectives import noise_ladder

        c = self.config
        return noise_ladder(c["sigma_max"], c["sigma_min"], c["levels"])

    def _sigma(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """σ per sample, (N,): ``None`` is σ_min; a number or a (N,) tensor."""
        if sigma is None:
            sigma = self.config["sigma_min"]
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        return s.expand(x.shape[0]) if s.dim() == 0 else s.reshape(x.shape[0])

    def noise_features(self, s: torch.Tensor) -> torch.Tensor:
        """φ(σ): t = log(σ/σ_min)/log(σ_max/σ_min) (0 at σ_min, 1 at σ_max) and its harmonics."""
        c = self.config
        span = math.log(c["sigma_max"] / c["sigma_min"]) or 1.0
        t = (s.log() - math.log(c["sigma_min"])) / span
        k = torch.arange(1, NOISE_FREQUENCIES + 1, device=s.device, dtype=s.dtype) * math.pi
        return torch.cat([t[:, None], torch.sin(t[:, None] * k), torch.cos(t[:, None] * k)], 1)

    def at_noise(self, sigma: float) -> "NoiseLevel":
        """The energy x ↦ E(x, σ) at one noise level, as an ordinary energy for the samplers."""
        return NoiseLevel(self, sigma)


class _Baseline(torch.autograd.Function):
    """B(x, σ) with its written-out gradient as the backward pass (see NoiseConditional.baseline)."""

    @staticmethod
    def forward(ctx, x, s, model):
        e, g = model.baseline(x, s)
        ctx.save_for_backward(g)
        return e

    @staticmethod
    def backward(ctx, grad):
        (g,) = ctx.saved_tensors
        return grad.view(-1, *[1] * (g.dim() - 1)) * g, None, None


class NoiseLevel(EnergyModel):
    """E(x, σ) of a :class:`NoiseConditional` model at a fixed σ (a view: it shares the weights)."""

    kind = "noise-level"

    def __init__(self, model: NoiseConditional, sigma: float):
        super().__init__(sigma=float(sigma))
        self.model, self.sigma = model, float(sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.sigma)

    def energy_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.energy_and_grad(x, self.sigma)


FILM_LAYERS = (0, 2, 4, 6, 9)  # the convolutions and the linear layer of _trunk, before their Swish


class NoiseCNNEnergy(NoiseConditional):
    """The reference CNN (:func:`_trunk`, width c) conditioned on σ: each layer's output is scaled
    and shifted per channel by a linear map of φ(σ) (FiLM, as NCSN's conditional normalisation),
    and the 4c features are read out per level: E(x, σ) = B(x, σ) + (w(σ)·h(x, σ) + b(σ))/σ. The
    modulations start at the identity and the read-out σ-independent (E = B + f(x)/σ)."""

    kind = "cnn-noise"

    def __init__(self, width: int = 16, sigma_min: float = 0.02, sigma_max: float = 1.0, levels: int = 10,
                 bins: int = 21, bin_width: float = 0.0125):
        super().__init__(IMAGE_SHAPE, sigma_min, sigma_max, levels, bins, bin_width, width=int(width))
        if not 1 <= width <= 256:
            raise EBMError(f"width must be between 1 and 256, got {width}")
        self.body = _trunk(width, False)
        self._channels = [self.body[i].weight.shape[0] for i in FILM_LAYERS]
        self.film = nn.Linear(NOISE_FEATURES, 2 * sum(self._channels))
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.readout = nn.Linear(NOISE_FEATURES, 4 * width + 1)
        nn.init.zeros_(self.readout.weight)
        nn.init.uniform_(self.readout.bias, -1 / math.sqrt(4 * width), 1 / math.sqrt(4 * width))
        self.to(memory_format=torch.channels_last)

    def _film(self, s: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """{layer: (scale 1 + γ(σ), shift β(σ))}, shaped to broadcast over that layer's output."""
        out, parts = {}, self.film(self.noise_features(s)).split([2 * c for c in self._channels], 1)
        for i, c, m in zip(FILM_LAYERS, self._channels, parts):
            shape = (-1, c) if isinstance(self.body[i], nn.Linear) else (-1, c, 1, 1)
            out[i] = (1 + m[:, :c].reshape(shape), m[:, c:].reshape(shape))
        return out

    def _features(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        film, h = self._film(s), x
        for i, layer in enumerate(self.body):
            h = layer(h)
            if i in film:
                h = h * film[i][0] + film[i][1]
        return h

    def _head(self, h: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        wb = self.readout(self.noise_features(s))
        w, b = wb[:, :-1] / s[:, None], wb[:, -1] / s
        return (w * h).sum(1) + b, w

    def forward(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        s = self._sigma(x, sigma)
        return self._head(self._features(x, s), s)[0] + self._baseline_term(x, s)

    def energy_and_grad(self, x: torch.Tensor, sigma=None) -> tuple[torch.Tensor, torch.Tensor]:
        s = self._sigma(x, sigma)
        e, g = trunk_energy_and_grad(self.body, x, lambda h: self._head(h, s), self._film(s))
        b, gb = self.baseline(x, s)
        return e + b, g + gb


class NoiseMLPEnergy(NoiseConditional):
    """A small MLP on 2-D points and φ(σ): E(x, σ) = B(x, σ) + MLP([x·scale, φ(σ)])/σ (for landscapes).

    The points enter scaled (×8 by default: unit length 1/8 of the square). A freshly initialised
    MLP varies on the scale of its inputs' unit, and the modes of the 2-D data sets are 0.05–0.1
    wide; unscaled, the score-matching signal never reached them (8 Gaussians, 1,000 updates: no
    better than the Gaussian baseline B), ×8 reached the exact mixture's loss in the same updates."""

    kind = "mlp2d-noise"

    def __init__(self, hidden: int = 128, layers: int = 3, sigma_min: float = 0.02, sigma_max: float = 1.0,
                 levels: int = 10, scale: float = 8.0):
        super().__init__((2,), sigma_min, sigma_max, levels, 1, hidden=int(hidden), layers=int(layers),
                         scale=float(scale))
        if not (math.isfinite(scale) and scale > 0):
            raise EBMError(f"scale must be positive, got {scale}")
        dims = [2 + NOISE_FEATURES] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            mods += [nn.Linear(a, b), Swish()]
        self.net = nn.Sequential(*mods, nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        s = self._sigma(x, sigma)
        h = torch.cat([x * self.config["scale"], self.noise_features(s)], 1)
        return self.net(h).squeeze(-1) / s + self._baseline_term(x, s)

    def energy_and_grad(self, x: torch.Tensor, sigma=None) -> tuple[torch.Tensor, torch.Tensor]:
        return autograd_energy_and_grad(lambda v: self(v, sigma), x)


class DigitClassifier(EnergyModel):
    """The evaluation classifier: measures sample quality only. It is never trained on samples and
    never used as an energy; its architecture (ReLU, max-pooling, dropout) differs from the EBMs'.
    ``forward`` returns logits (N×n_classes); ``features`` the 128-d layer used for Fréchet distances.
    Other data sets get their own (``evaluation.evaluate_data``), with one output per class."""

    kind = "classifier"
    is_energy = False

    def __init__(self, width: int = 16, n_classes: int = 10):
        super().__init__(width=int(width), **({} if n_classes == 10 else {"n_classes": int(n_classes)}))
        c = width
        self.body = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.25), nn.Linear(2 * c * 49, 128), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.25), nn.Linear(128, int(n_classes)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


MODEL_KINDS: dict[str, type[EnergyModel]] = {
    m.kind: m for m in (CNNEnergy, JEMEnergy, JEMEnsemble, RBM, MLPEnergy, NoiseCNNEnergy, NoiseMLPEnergy,
                        DigitClassifier)
}
IMAGE_ENERGIES = ("cnn", "jem", "jem-ensemble", "rbm", "cnn-noise")  # kinds that score 28×28 images


# Every constructor argument of every kind, with the values a configuration from outside (a
# weights file, the CLI, the app) may take: (low, high) for whole numbers, bool for flags. A file's
# metadata decides what gets built, so without bounds a 200-byte file could ask for gigabytes.
# The RBM's visible units are the 784 pixels of a 28×28 image (smaller RBMs are for exact tests).
# A pair of floats is a range of real numbers (the noise ladders of the dsm kinds).
_LADDER = {"sigma_min": (1e-4, 100.0), "sigma_max": (1e-4, 100.0), "levels": (1, 1000)}
CONFIG_BOUNDS: dict[str, dict[str, tuple[int, int] | tuple[float, float] | type]] = {
    "cnn": {"width": (1, 256), "spectral_norm": bool},
    "jem": {"width": (1, 256), "spectral_norm": bool, "n_classes": (2, 100)},
    "jem-ensemble": {"members": (1, 16), "width": (1, 256), "spectral_norm": bool, "n_classes": (2, 100)},
    "rbm": {"hidden": (1, 8192), "visible": (784, 784)},
    "mlp2d": {"hidden": (1, 1024), "layers": (1, 16)},
    "classifier": {"width": (1, 64), "n_classes": (2, 100)},
    "cnn-noise": {"width": (1, 256), **_LADDER, "bins": (1, 256), "bin_width": (1e-6, 2.0)},
    "mlp2d-noise": {"hidden": (1, 1024), "layers": (1, 16), **_LADDER, "scale": (1e-3, 1e3)},
}


def check_config(kind: str, config: dict) -> dict:
    """``config`` checked against :data:`CONFIG_BOUNDS` (unknown fields, wrong types, values out
    of range), with whole numbers as int; raises EBMError naming the field."""
    if not isinstance(kind, str) or kind not in MODEL_KINDS:
        raise EBMError(f"unknown model kind {shown(kind)}; known: {', '.join(MODEL_KINDS)}")
    bounds = CONFIG_BOUNDS[kind]
    out = {}
    for name, v in config.items():
        if name not in bounds:
            raise EBMError(f"bad configuration for a {kind} model: no field {shown(name)} (fields: {', '.join(bounds)})")
        rule = bounds[name]
        if rule is bool:
            if not isinstance(v, bool):
                raise EBMError(f"config {name!r} must be true or false, got {shown(v)}")
            out[name] = v
            continue
        if isinstance(rule[0], float):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not rule[0] <= v <= rule[1]:
                raise EBMError(f"config {name!r} must be a number from {rule[0]:g} to {rule[1]:g} for a {kind} "
                               f"model, got {shown(v)}")
            out[name] = float(v)
            continue
        whole = isinstance(v, numbers.Integral) or (isinstance(v, float) and math.isfinite(v) and v.is_integer())
        if isinstance(v, bool) or not whole:
            raise EBMError(f"config {name!r} must be a whole number, got {shown(v)}")
        lo, hi = rule
        if not lo <= int(v) <= hi:
            allowed = f"{lo} to {hi}" if hi != lo else f"{lo}"
            raise EBMError(f"config {name!r} must be {allowed} for a {kind} model, got {shown(int(v))}")
        out[name] = int(v)
    return out


def build_model(kind: str, **config) -> EnergyModel:
    """Build a model from its kind and constructor arguments (as stored in weights files), after
    :func:`check_config`."""
    config = check_config(kind, config)
    return MODEL_KINDS[kind](**config)


def state_shapes(kind: str, config: dict) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor a model of this kind and configuration holds (its state
    dict), from a build on the meta device: no memory, no arithmetic, a few milliseconds."""
    config = check_config(kind, config)
    token = _SKELETON.set(True)
    try:
        with torch.device("meta"):
            skeleton = MODEL_KINDS[kind](**config)
    finally:
        _SKELETON.reset(token)
    return {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
