"""The command line: ``python -m ebm_play {models,sample,score,inpaint,denoise,evaluate,train} …``.

Energy convention everywhere: lower energy = more data-like, p(x) ∝ exp(−E(x)).
Images go in and out as PNG (any picture; read MNIST-style) or ``.npz`` (key ``x``, float32
N×1×28×28 in [−1, 1]). Mistakes a user can fix end in one line on stderr, ``error: …``, exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import types
import typing
from pathlib import Path

import numpy as np
import torch

from . import distributed, samplers
from .api import default_sampler, default_sampler_settings, denoise, inpaint, sample_chains, score
from .data import mnist
from .errors import EBMError
from .images import load_images, open_image, save_images
from .models import IMAGE_ENERGIES
from .objectives import ABOUT, NCE_NOISES, OBJECTIVES
from .runtime import configure_threads, resolve_device
from .training import TrainConfig, Trainer
from .weights import load_model, read_metadata, resolve, save_model, shipped_models

PROG = "python -m ebm_play"
CONVENTION = "Energy convention: lower energy = more data-like, p(x) ∝ exp(−E(x))."
TRAINABLE = ("cnn", "jem", "rbm")
HALVES = ("top", "bottom", "left", "right")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (and exit code 2), not a usage dump."""

    def error(self, message):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


# --- argument types: each rejects a bad value with a one-line reason -------------------------
def _number(kind, lo=None, lo_open=False, none_ok=False):
    def parse(text: str):
        if none_ok and text.lower() in ("none", "off"):
            return None
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}")
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise argparse.ArgumentTypeError(f"must be {'above' if lo_open else 'at least'} {lo}, got {text}")
        return v
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _classes(text: str) -> list[int]:
    try:
        digits = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected digits separated by commas, like 0,1,2; got {text!r}")
    if not digits or any(not 0 <= d <= 9 for d in digits):
        raise argparse.ArgumentTypeError(f"classes must be digits 0-9, like 0,1,2; got {text!r}")
    return digits


count = _number(int, 0)
positive_int = _number(int, 1)
positive = _number(float, 0, lo_open=True)
nonneg = _number(float, 0)

# Sampler options as flags: (flag, keyword, type, help). They are passed only when given, so the
# model's recommended settings (its file's info["samplers"]) and then the sampler's defaults apply.
SAMPLER_FLAGS = [
    ("--step-size", "step_size", positive, "step size (langevin: gradient step; ula/mala: α; hmc: leapfrog ε)"),
    ("--noise", "noise", nonneg, "langevin noise σ added each step"),
    ("--temperature", "temperature", positive, "temperature T: samples from exp(−E/T)"),
    ("--grad-clamp", "grad_clamp", _number(float, 0, lo_open=True, none_ok=True), "langevin gradient clamp ('none' = off)"),
    ("--leapfrog", "leapfrog", positive_int, "hmc leapfrog steps per trajectory"),
    ("--t-start", "t_start", positive, "annealed: first temperature"),
    ("--t-end", "t_end", positive, "annealed: last temperature"),
    ("--base", "base", str, "annealed: base sampler (langevin, ula, mala, hmc)"),
    ("--sigma-max", "sigma_max", positive, "ladder: first (largest) noise level (default: the model's)"),
    ("--sigma-min", "sigma_min", positive, "ladder: last (smallest) noise level (default: the model's)"),
    ("--levels", "levels", positive_int, "ladder: noise levels (default: the model's)"),
]
_HIDDEN_OPTIONS = {"bounds", "mask", "x_obs", "data_weight", "generator", "wall", "base"}


def _sampler_defaults_text() -> str:
    lines = ["sampler defaults (the model file's recommendations override them):"]
    for name in samplers.SAMPLERS:
        opts = {k: v for k, v in samplers.sampler_options(name).items() if k not in _HIDDEN_OPTIONS}
        steps = default_sampler_settings(types.SimpleNamespace(), name)["steps"]
        shown = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in opts.items())
        lines.append(f"  {name:9s} steps {steps}" + (f", {shown}" if shown else ""))
    return "\n".join(lines)


# --- TrainConfig fields → flags, one for one ---------------------------------------------------
TRAIN_HELP = {
    "model": "model kind: cnn (CNN energy), jem (classifier-energy, needs labels) or rbm",
    "width": "CNN channels c (default: cnn 16, jem 32)",
    "hidden": "RBM hidden units",
    "spectral_norm": "spectral normalisation on every layer (smoother energy, steadier training)",
    "classes": "train on these digits only, e.g. 0,1,2",
    "batch_size": "real images (and fakes) per update",
    "sampler_steps": "Langevin steps that refine the fakes each update",
    "step_size": "Langevin step size for the fakes",
    "noise": "Langevin noise σ for the fakes",
    "grad_clamp": "Langevin gradient clamp for the fakes",
    "alpha": "energy-magnitude penalty α(E(real)² + E(fake)²)",
    "lr": "Adam learning rate",
    "beta1": "Adam β1", "beta2": "Adam β2",
    "lr_gamma": "learning-rate decay factor",
    "lr_step_every": "updates between learning-rate decays",
    "buffer_size": "replay buffer chains",
    "reinit": "fraction of fakes restarted from noise each update",
    "dimmed": "share of those restarts whose noise is dimmed by a random brightness (down to blank)",
    "dimmed_from": "updates made before the restarts are dimmed",
    "mirrored": "extra negatives per update, as a share of the batch: mirror images of the digits 2–7 and 9",
    "augment": "share of each batch's real digits randomly rotated, scaled, sheared, shifted and thickened or thinned",
    "data_noise": "noise σ added to real images",
    "grad_clip": "max gradient norm ('none' = no clipping)",
    "jem_gen_weight": "JEM: weight of the generative term beside cross-entropy",
    "cd_k": "RBM: Gibbs sweeps per update",
    "persistent": "RBM: persistent CD (--no-persistent = CD-k from the data)",
    "energy_bound": "|E| past this counts as divergence (default: cnn/jem 100, rbm 1e5)",
    "gap_bound": "E(fake) − E(real) below −this counts as divergence",
    "drift_bound": "cnn/jem: mean E(fake) − E(real) over --drift-window updates above this is a slow runaway ('none' = no check)",
    "drift_window": "updates averaged by the slow-runaway check, and between its healthy checkpoints",
    "checkpoint_every": "updates between rollback checkpoints",
    "seed": "random seed",
    "fresh_steps": "Langevin steps recommended for fresh chains from noise, stored in the file (default: sampler steps; "
                   "dsm: ladder steps in all, default 100 per noise level)",
    "objective": "training objective: " + "; ".join(f"{k}: {v}" for k, v in ABOUT.items()),
    "sigma_max": "dsm: largest noise level σ of the ladder (pixels in [-1, 1])",
    "sigma_min": "dsm: smallest noise level; the model's energy E(x) is E(x, σ_min)",
    "sigma_levels": "dsm: noise levels in the geometric ladder",
    "ladder_step": "dsm: the ladder sampler's step ε at σ_min (ε(σ/σ_min)² at level σ), stored as its recommendation",
    "nce_noise": "nce: noise distribution, gaussian (fitted to the data) or uniform on [-1, 1] (default gaussian for digits)",
    "nce_ratio": "nce: noise samples per data sample",
}
CHOICES = {"model": TRAINABLE, "objective": OBJECTIVES, "nce_noise": NCE_NOISES}


def _config_flags(p: argparse.ArgumentParser) -> list[str]:
    """Add one flag per TrainConfig field; they default to 'not given' so the dataclass decides."""
    hints = typing.get_type_hints(TrainConfig)
    names = []
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw: dict = {"dest": f.name, "default": argparse.SUPPRESS,
                    "help": f"{TRAIN_HELP.get(f.name, f.name)}" + ("" if default is None else f" (default {default})")}
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif f.name in CHOICES:
            kw["choices"] = CHOICES[f.name]
        elif typing.get_origin(base) is list:
            kw.update(type=_classes, metavar="D,D,…")
        elif base in (int, float):
            kw["type"] = _number(base, none_ok=optional and base is float)
            kw["metavar"] = "N" if base is int else "X"
        p.add_argument("--" + f.name.replace("_", "-"), **kw)
        names.append(f.name)
    return names


# --- the parser -------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser, seed: bool = True) -> None:
    if seed:
        p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed; the same seed gives the same output (default 0)")
    p.add_argument("--device", default="auto", metavar="DEV", help="auto (CUDA when present), cpu or cuda (default auto)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU threads for torch (default: $EBM_PLAY_THREADS or all cores; under torchrun, cores / processes)")


def _model_arg(p):
    p.add_argument("--model", required=True, metavar="NAME_OR_PATH",
                   help="a shipped model name (see 'models') or a .safetensors file")


def _sampler_args(p, steps_help="sampler updates (default: the model's recommendation)"):
    p.add_argument("--sampler", choices=list(samplers.SAMPLERS),
                   help="MCMC sampler (default: the model's own, named in its file: ladder for dsm models, else langevin)")
    p.add_argument("--steps", type=count, metavar="N", help=steps_help)
    g = p.add_argument_group("sampler options (only those given are passed; see the defaults below)")
    for flag, dest, typ, text in SAMPLER_FLAGS:
        kw = {"choices": ("langevin", "ula", "mala", "hmc")} if dest == "base" else {"type": typ}
        if dest != "base":
            kw["metavar"] = "N" if typ is positive_int else "X"
        g.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=text, **kw)


def build_parser() -> Parser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = Parser(prog=PROG, formatter_class=fmt,
                    description="Energy-based models on MNIST digits: sample, score, inpaint, denoise and train.\n" + CONVENTION,
                    epilog="Images: PNG (or any picture, made MNIST-like) or .npz with key x, float32 N×1×28×28 in [−1, 1].\n"
                           f"Run '{PROG} COMMAND --help' for each command's options.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    epilog = _sampler_defaults_text() + "\n\n" + CONVENTION

    p = sub.add_parser("models", help="list the shipped models", description="List the shipped models (weights/*.safetensors).")
    _common(p, seed=False)

    p = sub.add_parser("sample", help="draw samples by MCMC from noise", formatter_class=fmt, epilog=epilog,
                       description=f"Draw samples from fresh uniform-noise chains. {CONVENTION}\n"
                                   "--out grid.png writes a picture grid; --out x.npz writes x and energy.")
    _model_arg(p)
    p.add_argument("--n", type=positive_int, default=16, metavar="N", help="number of samples (default 16)")
    _sampler_args(p)
    p.add_argument("--out", required=True, metavar="FILE", help="output .png grid or .npz (keys x, energy)")
    p.add_argument("--compile", action="store_true",
                   help="compile the sampler step with torch.compile (CUDA graphs on a GPU): for large --n "
                        "and long runs; the first step takes tens of seconds")
    _common(p)

    p = sub.add_parser("score", help="energies of images", formatter_class=fmt,
                       description=f"Print the energy of each image and optionally save them. {CONVENTION}")
    _model_arg(p)
    p.add_argument("--in", dest="input", required=True, metavar="IMAGES", help=".npz (key x) or a picture")
    p.add_argument("--out", metavar="FILE", help="write the energies to this .npz (key energy, shape N)")
    _common(p, seed=False)

    p = sub.add_parser("inpaint", help="fill in the missing part of a digit", formatter_class=fmt, epilog=epilog,
                       description="Keep part of a digit fixed and sample the rest, n times. "
                                   f"The kept pixels are copied exactly. {CONVENTION}")
    _model_arg(p)
    p.add_argument("--in", dest="input", required=True, metavar="IMAGE", help="the digit: a picture or .npz (first image)")
    m = p.add_mutually_exclusive_group(required=True)
    m.add_argument("--mask", help="mask picture (resized to 28×28; light = keep, dark = fill) or .npz key mask/x (>0.5 = keep)")
    m.add_argument("--keep", choices=HALVES, help="keep this half of the digit and fill the other")
    p.add_argument("--n", type=positive_int, default=4, metavar="N", help="number of fills (default 4)")
    _sampler_args(p)
    p.add_argument("--out", required=True, metavar="FILE", help="output .png grid or .npz (keys x, energy, mask)")
    _common(p)

    p = sub.add_parser("denoise", help="clean up noisy images", formatter_class=fmt, epilog=epilog,
                       description="Sample from E(x) + λ‖x − x_noisy‖², starting at the noisy images: a larger λ "
                                   f"stays closer to the input. {CONVENTION}")
    _model_arg(p)
    p.add_argument("--in", dest="input", required=True, metavar="IMAGES", help="noisy images: a picture or .npz")
    p.add_argument("--weight", type=nonneg, default=1.0, metavar="λ", help="λ, the pull towards the input (default 1.0)")
    _sampler_args(p)
    p.add_argument("--out", required=True, metavar="FILE", help="output .png grid or .npz (keys x, energy)")
    _common(p)

    p = sub.add_parser("evaluate", help="sample quality and OOD figures of a model", formatter_class=fmt,
                       description="Sample quality (Fréchet digit distance, confident fraction, class coverage, judged "
                                   "by the evaluation classifier) of fresh chains from uniform noise, with held-out and "
                                   "blurred real digits for scale; OOD AUROC of the energy; JEM accuracy. " + CONVENTION)
    _model_arg(p)
    p.add_argument("--n", type=positive_int, default=1000, metavar="N", help="samples and OOD images per set (default 1000)")
    p.add_argument("--sampler", choices=list(samplers.SAMPLERS), help="default: the model's own (gibbs for an RBM)")
    p.add_argument("--steps", type=count, metavar="N", help="sampler updates (default: the model's recommendation)")
    p.add_argument("--data", metavar="ROOT", help="MNIST root (default $EBM_PLAY_DATA or ./data; else the bundled test digits)")
    p.add_argument("--classifier", default="mnist-classifier", metavar="NAME_OR_PATH", help="evaluation classifier")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    _common(p)

    p = sub.add_parser("ensemble", help="average JEM models into one OOD energy", formatter_class=fmt,
                       description="Average JEM models into one energy, E(x) = mean_i (E_i(x) − μ_i)/σ_i, each member "
                                   "standardised on real training digits; p(y|x) from the averaged logits. Independently "
                                   f"trained detectors disagree on what is not a digit; the average keeps what they agree on. {CONVENTION}")
    p.add_argument("members", nargs="+", metavar="MODEL", help="JEM weights files or shipped names, all of one width")
    p.add_argument("--data", metavar="ROOT", help="MNIST root (default $EBM_PLAY_DATA or ./data; else the bundled digits)")
    p.add_argument("--n", type=positive_int, default=2000, metavar="N", help="training digits to standardise on (default 2000)")
    p.add_argument("--out", required=True, metavar="FILE", help="weights file to write (.safetensors)")
    _common(p, seed=False)

    p = sub.add_parser("train", help="train a model (also on N processes under torchrun)", formatter_class=fmt,
                       description="Train an energy model by contrastive divergence (fakes from a replay buffer refined "
                                   "by Langevin; Gibbs for the RBM), or with --objective dsm (denoising score matching "
                                   "over a noise ladder) or nce (noise-contrastive estimation). Progress: step, loss, "
                                   "and per objective E(real), E(fake), gap = E(fake) − E(real) (cd); the loss at the "
                                   "largest, middle and smallest noise level (dsm); classification accuracy and log Z "
                                   f"(nce); steps/s. {CONVENTION}\nThe file is written every --save-every "
                                   "steps, at the end and on Ctrl-C.",
                       epilog="Data-parallel on several processes (DistributedDataParallel; gloo on the CPU, NCCL with "
                              "one GPU per process):\n"
                              "  torchrun --nproc_per_node N -m ebm_play train --out FILE …\n"
                              "Each process keeps its own replay buffer and draws its own batches (--batch-size is per "
                              "process);\ngradients are averaged, so the weights stay identical. Process 0 prints and "
                              "writes the file.")
    p.add_argument("--steps", type=count, default=1000, metavar="N", help="updates to run (default 1000)")
    p.add_argument("--out", required=True, metavar="FILE", help="weights file to write (.safetensors)")
    p.add_argument("--data", metavar="ROOT", help="MNIST root for torchvision (default $EBM_PLAY_DATA or ./data); "
                                                   "without MNIST there, the bundled 8,000-digit sample is used")
    p.add_argument("--download", action="store_true", help="download MNIST into ROOT if missing")
    p.add_argument("--log-every", type=positive_int, metavar="K", default=10, help="updates between progress lines (default 10)")
    p.add_argument("--save-every", type=count, metavar="K", default=100, help="updates between saves, 0 = only at the end (default 100)")
    p.add_argument("--resume", metavar="FILE", help="continue from a saved .safetensors (its training settings "
                                                    "are the defaults; flags given override them)")
    p.add_argument("--minutes", type=positive, metavar="M", help="stop after this wall-clock budget")
    _common(p, seed=False)  # --seed is a TrainConfig field
    _config_flags(p.add_argument_group("training settings (TrainConfig)"))
    return parser


# --- helpers ----------------------------------------------------------------------------------
def _load(name: str, device: str):
    model = load_model(name, resolve_device(device))
    if model.kind not in IMAGE_ENERGIES:
        raise EBMError(f"{name}: a {model.kind} model is not an energy model of 28×28 images (use cnn, jem or rbm)")
    return model


OUTPUT_TYPES = (".png", ".npz", ".gif", ".bmp", ".webp", ".tif", ".tiff")  # what save_images writes


def _check_out(path: str) -> None:
    """Refuse an output type before the work, not after it."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_TYPES:
        raise EBMError(f"unknown output type {suffix or '(none)'} for {path!r}: use .png or .npz")


def _sampler_options(args) -> dict:
    return {dest: getattr(args, dest) for _, dest, _, _ in SAMPLER_FLAGS if hasattr(args, dest)}


def _summary(e: torch.Tensor) -> str:
    return f"energy mean {e.mean().item():.4g}, min {e.min().item():.4g}, max {e.max().item():.4g}"


def _load_mask(path: str) -> torch.Tensor:
    p = Path(path)
    if not p.is_file():
        raise EBMError(f"no such file: {p}")
    if p.suffix.lower() == ".npz":
        with np.load(p, allow_pickle=False) as z:
            key = "mask" if "mask" in z else "x" if "x" in z else None
            if key is None:
                raise EBMError(f"{p.name}: no array 'mask' or 'x'")
            m = np.asarray(z[key], dtype=np.float64)
        if m.size != 784:
            raise EBMError(f"{p.name}: mask must have 28×28 values, got shape {m.shape}")
        if not np.isfinite(m).all():
            raise EBMError(f"{p.name}: mask contains NaN or infinite values")
        keep = m.reshape(28, 28) > 0.5
    else:
        img = open_image(p).convert("L").resize((28, 28), resample=0)  # nearest: a mask stays a mask
        keep = np.asarray(img) > 127
    return torch.from_numpy(keep.astype(np.float32)).view(1, 1, 28, 28)


def _half_mask(half: str) -> torch.Tensor:
    keep = torch.zeros(1, 1, 28, 28)
    region = {"top": (slice(0, 14), slice(None)), "bottom": (slice(14, 28), slice(None)),
              "left": (slice(None), slice(0, 14)), "right": (slice(None), slice(14, 28))}[half]
    keep[0, 0][region] = 1
    return keep


# --- commands ---------------------------------------------------------------------------------
def cmd_models(args) -> int:
    names = shipped_models(energies_only=False)
    if not names:
        print(f"no shipped models yet (train one: {PROG} train --model cnn --out weights/mnist.safetensors)")
        return 0
    for name in names:
        try:
            meta = read_metadata(resolve(name))
        except EBMError as e:  # one bad file should not hide the others
            print(f"{name:16s} unreadable: {_one_line(e)}")
            continue
        info = meta.get("info", {})
        config = " ".join(f"{k}={v}" for k, v in meta["config"].items())
        extra = f", {info['train_steps']} training steps" if "train_steps" in info else ""
        if meta["kind"] not in IMAGE_ENERGIES:
            extra += " (not an image energy model: not for sample/score/inpaint/denoise)"
        print(f"{name:16s} {meta['kind']:10s} {config}{extra}")
    return 0


def cmd_sample(args) -> int:
    _check_out(args.out)
    model = _load(args.model, args.device)
    extra = {"compile": True} if args.compile else {}
    sampler = args.sampler or default_sampler(model)
    r = sample_chains(model, args.n, args.steps, sampler, args.seed, **extra, **_sampler_options(args))
    save_images(r.x, args.out, energy=r.energy.cpu().numpy())
    rate = "" if r.accept_rate is None else f", acceptance {r.accept_rate:.2f}"
    print(f"wrote {args.out}: {len(r.x)} samples after {r.steps[-1]} {sampler} steps, {_summary(r.energy)}{rate}")
    return 0


def cmd_score(args) -> int:
    if args.out and Path(args.out).suffix.lower() != ".npz":
        raise EBMError(f"score writes .npz files, not {args.out!r}")
    model = _load(args.model, args.device)
    x = load_images(args.input)
    e = score(model, x)
    shown = range(len(e)) if len(e) <= 12 else range(10)
    print(f"{'#':>5}  {'energy':>10}")
    for i in shown:
        print(f"{i:>5}  {e[i].item():>10.4f}")
    if len(e) > len(shown):
        print(f"{'…':>5}  ({len(e) - len(shown)} more)")
    print(f"{len(e)} image{'s' * (len(e) != 1)}: {_summary(e)} (lower = more data-like)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.out, energy=e.numpy().astype(np.float32))
        print(f"wrote {args.out}")
    return 0


def cmd_inpaint(args) -> int:
    _check_out(args.out)
    model = _load(args.model, args.device)
    image = load_images(args.input)[:1]
    keep = _load_mask(args.mask) if args.mask else _half_mask(args.keep)
    r = inpaint(model, image, keep, n=args.n, steps=args.steps, sampler=args.sampler, seed=args.seed,
                **_sampler_options(args))
    save_images(r.x, args.out, energy=r.energy.cpu().numpy(), mask=keep.numpy())
    print(f"wrote {args.out}: {len(r.x)} fills of {int((keep < 0.5).sum())} pixels, {_summary(r.energy)}")
    return 0


def cmd_denoise(args) -> int:
    _check_out(args.out)
    model = _load(args.model, args.device)
    noisy = load_images(args.input)
    r = denoise(model, noisy, args.weight, steps=args.steps, sampler=args.sampler, seed=args.seed,
                **_sampler_options(args))
    save_images(r.x, args.out, energy=r.energy.cpu().numpy())
    print(f"wrote {args.out}: {len(r.x)} images, {_summary(r.energy)} (input: {_summary(score(model, noisy))})")
    return 0


def cmd_train(args, config_names: list[str]) -> int:
    """Train in this process, or as one rank of a torchrun job (the process group lives as long
    as the run, and is torn down on errors and Ctrl-C too)."""
    with distributed.session(resolve_device(args.device)) as (world, device):
        return _train(args, config_names, world, device)


def _train(args, config_names: list[str], world: distributed.World, device: torch.device) -> int:
    given = {k: getattr(args, k) for k in config_names if hasattr(args, k)}
    model, done, info = None, 0, {}
    if args.resume:
        model = load_model(args.resume, device)
        info = model.info
        stored = dict(info.get("train_config") or {"model": model.kind})
        for k in ("width", "hidden", "spectral_norm"):  # the architecture is the file's
            if k in model.config:
                if k in given and given[k] != model.config[k]:
                    raise EBMError(f"--{k.replace('_', '-')} {given[k]} does not match the resumed model ({k} {model.config[k]})")
                stored[k] = model.config[k]
        config = TrainConfig.from_dict({**stored, **given})
        done = int(info.get("train_steps", 0))
    else:
        config = TrainConfig(**given)
    if args.download and not world.is_main:
        distributed.barrier()  # rank 0 downloads alone; the others then read its files
    digits = mnist(train=True, root=args.data, download=args.download and world.is_main, classes=config.classes)
    if args.download and world.is_main:
        distributed.barrier()
    trainer = Trainer(config, digits.x, digits.y, model=model, device=device, start_step=done)
    try:
        return _train_loop(args, trainer, digits.source, done, world)
    finally:
        trainer.close()  # DDP must go before the process group does


def _train_loop(args, trainer: Trainer, source: str, done: int, world: distributed.World) -> int:
    config = trainer.config
    out = Path(args.out)
    end = done + args.steps
    deadline = None if args.minutes is None else time.monotonic() + 60 * args.minutes

    def say(text: str) -> None:  # rank 0 speaks for all; the other ranks print only errors
        if world.is_main:
            print(text, flush=True)

    def save(note: str) -> None:
        if not world.is_main:
            return
        extra = {"resumed_from": str(args.resume)} if args.resume else {}
        save_model(trainer.model, out, info={**trainer.metadata(), **extra, "data": source})
        say(f"{note}: saved {out} at step {trainer.state.step} ({len(trainer.state.events)} rollbacks)")

    arch = f"hidden {config.hidden}" if config.model == "rbm" else f"width {config.width}"
    if config.objective != "cd":
        arch += f", objective {config.objective}"
    ranks = "" if world.size == 1 else (f", {world.size} processes ({world.backend}), batch {config.batch_size} per "
                                        f"process ({config.batch_size * world.size} in all)")
    say(f"training {config.model} ({arch}) on {source}, {len(trainer.data)} images, device {trainer.device}{ranks}, "
        f"steps {done + 1}..{end}")
    t_log, n_log = time.perf_counter(), 0
    try:
        while trainer.state.step < end:
            # the ranks must stop at the same step, so the one that runs out of time tells the rest
            if deadline is not None and distributed.any_rank(time.monotonic() > deadline):
                say(f"time budget of {args.minutes:g} min used up")
                break
            m = trainer.step()
            n_log += 1
            if m["rolled_back"]:
                say(f"step {m['step']}: {m['event']}")
            s = m["step"]
            if (s - done) % args.log_every == 0 or s == end:
                now = time.perf_counter()
                rate = n_log / max(now - t_log, 1e-9)
                say(f"step {s:>6}/{end}  loss {m['loss']:+.4f}  {_progress(m, config)}  {rate:.2f} steps/s")
                t_log, n_log = now, 0
            if args.save_every and (s - done) % args.save_every == 0 and s != end:
                save("checkpoint")
    except KeyboardInterrupt:
        save("interrupted")
        return 130
    save("done")
    if world.size > 1:  # a cheap proof that data-parallel training kept the ranks in step
        digests = distributed.gather_digests(trainer.model)
        if len(set(digests)) != 1:
            raise EBMError(f"the ranks ended with different weights (parameter hashes {', '.join(digests)})")
        say(f"parameters identical on all {world.size} ranks (sha256 {digests[0]}; per rank: {' '.join(digests)})")
    return 0


def _progress(m: dict, config: TrainConfig) -> str:
    """The figures of one progress line that mean something for the run's objective."""
    if config.objective == "dsm":
        sigmas = config.noise_ladder().tolist()
        shown = sorted({0, len(sigmas) // 2, len(sigmas) - 1})
        return "  ".join(f"σ {sigmas[i]:.3g}: {m[f'dsm_loss_{i}']:.4f}" for i in shown)
    if config.objective == "nce":
        return f"acc {m['nce_accuracy']:.3f}  log Z {m['log_z']:+.2f}  E(data) {m['e_real']:+.3f}  E(noise) {m['e_noise']:+.3f}"
    acc = f"  acc {m['accuracy']:.2f}" if "accuracy" in m else ""
    return f"E(real) {m['e_real']:+.4f}  E(fake) {m['e_fake']:+.4f}  gap {m['gap']:+.4f}{acc}"


def cmd_ensemble(args) -> int:
    from .composition import ensemble

    members = [load_model(name, "cpu") for name in args.members]
    for name, m in zip(args.members, members):
        if m.kind != "jem":
            raise EBMError(f"{name}: a {m.kind} model; an ensemble is made of JEM models")
    digits = mnist(train=True, root=args.data)
    model = ensemble(members, digits.x[: args.n])
    info = {"members": [{"file": Path(m.source).name, **m.info} for m in members],
            "standardised_on": f"the first {min(args.n, len(digits.x))} digits of {digits.source}",
            "samplers": members[0].info.get("samplers", {})}
    save_model(model, args.out, info)
    for name, mu, s in zip(args.members, model.shift.tolist(), model.scale.tolist()):
        print(f"{name}: μ {mu:+.4f}  σ {s:.4f}")
    print(f"saved {args.out} ({len(members)} members)")
    return 0


def cmd_evaluate(args) -> int:
    from .metrics import evaluate, format_report

    device = resolve_device(args.device)
    model = _load(args.model, device)
    classifier = load_model(args.classifier, device)
    if classifier.kind != "classifier":
        raise EBMError(f"{args.classifier}: not an evaluation classifier (kind {classifier.kind})")
    test = mnist(train=False, root=args.data)
    report = evaluate(model, classifier, test, n_samples=args.n, sampler=args.sampler, steps=args.steps,
                      seed=args.seed, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


# --- entry point ------------------------------------------------------------------------------
def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, FileNotFoundError) and e.filename:
        text = f"no such file: {e.filename}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    config_names = [f.name for f in dataclasses.fields(TrainConfig)]
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already reported in one line
        return e.code if isinstance(e.code, int) else 0
    if args.command is None:
        parser.print_help()
        return 2
    try:
        configure_threads(args.threads)
        if args.command == "train":
            return cmd_train(args, config_names)
        return {"models": cmd_models, "sample": cmd_sample, "score": cmd_score,
                "inpaint": cmd_inpaint, "denoise": cmd_denoise, "evaluate": cmd_evaluate,
                "ensemble": cmd_ensemble}[args.command](args)
    except (EBMError, ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
