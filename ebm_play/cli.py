"""The command line: ``python -m ebm_play {models,sample,score,inpaint,denoise,evaluate,train} …``.

Energy convention everywhere: lower energy = more data-like, p(x) ∝ exp(−E(x)).
Images go in and out as PNG (any picture; read MNIST-style) or ``.npz`` (key ``x``, float32
N×1×28×28 in [−1, 1]). Mistakes a user can fix end in one line on stderr, ``error: …``, exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import signal
import sys
import time
import typing
from pathlib import Path

import numpy as np
import torch

from . import distributed, masks, samplers, settings
from .api import denoise, inpaint, sample_chains, score
from .archives import CLI_LIMITS
from .data import HELD_OUT, NAMES, Dataset, load_dataset, mnist, model_for, source_kind
from .errors import EBMError
from .files import atomic_write, check_output
from .images import OUTPUT_TYPES, load_images, save_images
from .metrics import CLASSIFIER_UPDATES
from .models import IMAGE_ENERGIES
from .reproduce import PRESETS, TRAIN_STEPS, run_info, settings_from_info
from .objectives import ABOUT, NCE_NOISES, OBJECTIVES
from .runtime import configure_threads, resolve_device
from .training import Interrupted, TrainConfig, Trainer
from .weights import load_model, read_metadata, resolve, save_model, shipped_models

PROG = "python -m ebm_play"
CONVENTION = "Energy convention: lower energy = more data-like, p(x) ∝ exp(−E(x))."
TRAINABLE = ("cnn", "jem", "rbm", "mlp2d")


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
        steps = settings.recommended(None, name)["steps"]
        shown = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in opts.items())
        lines.append(f"  {name:9s} steps {steps}" + (f", {shown}" if shown else ""))
    return "\n".join(lines)


# --- TrainConfig fields → flags, one for one ---------------------------------------------------
TRAIN_HELP = {
    "model": "model kind: cnn (CNN energy), jem (classifier-energy, needs labels), rbm, or mlp2d (2-D points)",
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
    "ema": "decay of a moving average of the weights, which the run samples and saves (0 = none; e.g. 0.995)",
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


DATA_HELP = ("training data: a folder of pictures, a .zip of them, an .npz (x: N×28×28, optional y), a .csv of 2-D "
             "points (mlp2d), a name "
             f"({', '.join(NAMES)}), or a folder that holds MNIST/raw. Default: MNIST from $EBM_PLAY_DATA or ./data, "
             "else the bundled 8,000-digit sample")


def _data_flags(p, train: bool = False) -> None:
    """--data and its companions (train: also --download and --preset; evaluate: --classifier-updates)."""
    what = DATA_HELP if train else "data to judge the model against (default: what the model was trained on)"
    p.add_argument("--data", metavar="PATH_OR_NAME", help=what)
    p.add_argument("--data-root", metavar="ROOT", help="torchvision's root for a set named in --data (default $EBM_PLAY_DATA or ./data)")
    p.add_argument("--labels-from-folders", action="store_true",
                   help="a folder or zip: each picture's sub-folder names its class (as torchvision's ImageFolder)")
    p.add_argument("--held-out", type=positive, metavar="F",
                   help=f"share of each class held out, for data without a test split (default {HELD_OUT})")
    if not train:
        p.add_argument("--classifier-updates", type=positive_int, default=CLASSIFIER_UPDATES, metavar="N",
                       help=f"other labelled data: batches the feature classifier trains on (default {CLASSIFIER_UPDATES})")
    if train:
        p.add_argument("--download", action="store_true", help="download a torchvision set (MNIST too) into its root if missing")
        p.add_argument("--preset", choices=list(PRESETS), help="start from a named recipe (fast: digits within minutes on a "
                                                               "CPU; reference: the defaults; landscape: the Landscape tab's "
                                                               "MLP on 2-D points); flags given override it")


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

    p = sub.add_parser("models", help="list the shipped models, or describe weight files", description="List the shipped "
                       "models (weights/*.safetensors), or describe files: kind, settings, data, the command that trains it.")
    p.add_argument("files", nargs="*", metavar="FILE", help="weight files to describe (default: the shipped models)")
    _common(p, seed=False)

    _image_commands(sub, fmt, epilog)
    _model_commands(sub, fmt)
    return parser


def _image_commands(sub, fmt, epilog: str) -> None:
    """sample, score, inpaint, denoise: a model's work on images."""
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
    m.add_argument("--keep", choices=masks.HALVES, help="keep this half of the digit and fill the other")
    p.add_argument("--n", type=positive_int, default=4, metavar="N", help="number of fills (default 4)")
    _sampler_args(p)
    p.add_argument("--out", required=True, metavar="FILE", help="output .png grid or .npz (keys x, energy, mask)")
    _common(p)

    p = sub.add_parser("denoise", help="clean up noisy images", formatter_class=fmt, epilog=epilog,
                       description="Sample from E(x) + λ‖x − x_noisy‖², starting at the noisy images, for a short run "
                                   "(default 40 updates): the model pulls each image onto the nearest digit. A larger "
                                   f"λ stays closer to the input, noise included. {CONVENTION}")
    _model_arg(p)
    p.add_argument("--in", dest="input", required=True, metavar="IMAGES", help="noisy images: a picture or .npz")
    p.add_argument("--weight", type=nonneg, default=0.0, metavar="λ",
                   help="λ, the pull towards the input (default 0; 0.01–0.03 stops long runs drifting)")
    _sampler_args(p)
    p.add_argument("--out", required=True, metavar="FILE", help="output .png grid or .npz (keys x, energy)")
    _common(p)


def _model_commands(sub, fmt) -> None:
    """evaluate, ensemble, train: making and judging models."""
    p = sub.add_parser("evaluate", help="sample quality and OOD figures of a model", formatter_class=fmt,
                       description="Sample quality (Fréchet digit distance, confident fraction, class coverage, judged "
                                   "by the evaluation classifier) of fresh chains from uniform noise, with held-out and "
                                   "blurred real digits for scale; OOD AUROC of the energy; JEM accuracy. " + CONVENTION)
    _model_arg(p)
    p.add_argument("--n", type=positive_int, default=1000, metavar="N", help="samples and OOD images per set (default 1000)")
    p.add_argument("--sampler", choices=list(samplers.SAMPLERS), help="default: the model's own (gibbs for an RBM)")
    p.add_argument("--steps", type=count, metavar="N", help="sampler updates (default: the model's recommendation)")
    _data_flags(p)
    p.add_argument("--classifier", default="mnist-classifier", metavar="NAME_OR_PATH", help="evaluation classifier (MNIST digits)")
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
    p.add_argument("--steps", type=count, default=TRAIN_STEPS, metavar="N",
                   help=f"updates to run (default {TRAIN_STEPS})")
    p.add_argument("--out", required=True, metavar="FILE", help="weights file to write (.safetensors)")
    _data_flags(p, train=True)
    p.add_argument("--log-every", type=positive_int, metavar="K", default=10, help="updates between progress lines (default 10)")
    p.add_argument("--save-every", type=count, metavar="K", default=100, help="updates between saves, 0 = only at the end (default 100)")
    p.add_argument("--resume", metavar="FILE", help="continue from a saved .safetensors (its training settings "
                                                    "are the defaults; flags given override them)")
    p.add_argument("--minutes", type=positive, metavar="M", help="stop after this wall-clock budget")
    _common(p, seed=False)  # --seed is a TrainConfig field
    _config_flags(p.add_argument_group("training settings (TrainConfig)"))


# --- helpers ----------------------------------------------------------------------------------
def _load(name: str, device: str):
    model = load_model(name, resolve_device(device))
    if model.kind not in IMAGE_ENERGIES:
        raise EBMError(f"{name}: a {model.kind} model is not an energy model of 28×28 images (use cnn, jem or rbm)")
    return model


def _check_out(path: str) -> None:
    """Refuse an output before the work, not after it (type, folder, not a regular file)."""
    check_output(path, OUTPUT_TYPES, "--out")


def _sampler_options(args) -> dict:
    return {dest: getattr(args, dest) for _, dest, _, _ in SAMPLER_FLAGS if hasattr(args, dest)}


def _write_npz(path: str, **arrays) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a name
        np.savez(f, **arrays)


def _summary(e: torch.Tensor) -> str:
    return f"energy mean {e.mean().item():.4g}, min {e.min().item():.4g}, max {e.max().item():.4g}"


# --- commands ---------------------------------------------------------------------------------
def _data_line(info: dict) -> str | None:
    d = info.get("dataset")
    if isinstance(d, dict):
        classes = d.get("classes") or []
        labels = f"{len(classes)} classes" if classes else "no labels"
        return (f"data {d.get('name')}: {d.get('size', 0):,} {d.get('unit', 'images')}, {d.get('train', 0):,} to train, "
                f"{d.get('held_out', 0):,} held out ({d.get('split')}), {labels}, sha256 {str(d.get('hash'))[:12]}")
    return f"data {info['data']}" if isinstance(info.get("data"), str) else None


def _describe(name: str, path, card: bool = False) -> None:
    try:
        meta = read_metadata(path)
    except EBMError as e:  # one bad file should not hide the others
        print(f"{name:16s} unreadable: {_one_line(e)}")
        return
    info = meta.get("info", {})
    config = " ".join(f"{k}={v}" for k, v in meta["config"].items())
    extra = f", {info['train_steps']} training steps" if "train_steps" in info else ""
    if meta["kind"] not in IMAGE_ENERGIES + ("mlp2d",):
        extra += " (not an image energy model: not for sample/score/inpaint/denoise)"
    print(f"{name:16s} {meta['kind']:10s} {config}{extra}")
    line = _data_line(info)
    if line and (card or "dataset" in info):
        print(f"{'':16s} {line}")
    if card:
        try:
            print(f"{'':16s} trained by: {settings_from_info(info).command(Path(path).name)}")
        except EBMError as e:
            print(f"{'':16s} trained by: unknown ({_one_line(e)})")


def cmd_models(args) -> int:
    if args.files:
        for f in args.files:
            _describe(Path(f).name, f, card=True)
        return 0
    names = shipped_models(energies_only=False)
    if not names:
        print(f"no shipped models yet (train one: {PROG} train --model cnn --out weights/mnist.safetensors)")
        return 0
    for name in names:
        _describe(name, resolve(name))
    return 0


def cmd_sample(args) -> int:
    _check_out(args.out)
    model = _load(args.model, args.device)
    extra = {"compile": True} if args.compile else {}
    sampler = args.sampler or settings.default_sampler(model)
    r = sample_chains(model, args.n, args.steps, sampler, args.seed, **extra, **_sampler_options(args))
    save_images(r.x, args.out, energy=r.energy.cpu().numpy())
    rate = "" if r.accept_rate is None else f", acceptance {r.accept_rate:.2f}"
    print(f"wrote {args.out}: {len(r.x)} samples after {r.steps[-1]} {sampler} steps, {_summary(r.energy)}{rate}")
    return 0


def cmd_score(args) -> int:
    if args.out:
        check_output(args.out, (".npz",), "--out")
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
        atomic_write(args.out, lambda tmp: _write_npz(tmp, energy=e.numpy().astype(np.float32)))
        print(f"wrote {args.out}")
    return 0


def cmd_inpaint(args) -> int:
    _check_out(args.out)
    model = _load(args.model, args.device)
    image = load_images(args.input)[:1]
    keep = masks.from_file(args.mask) if args.mask else masks.keep_half(args.keep)
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
    check_output(args.out, (".safetensors",), "--out")  # before any work: the run must end in a file
    with distributed.session(resolve_device(args.device)) as (world, device):
        return _train(args, config_names, world, device)


def config_from_args(args, stored: dict | None = None) -> TrainConfig:
    """``train``'s settings: its flags over ``--preset`` over ``stored`` (a resumed file's settings)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig.from_dict({**(stored or {}), **PRESETS.get(args.preset, {}), **given})


def _resumed(args, given: dict, device: torch.device):
    """The model, training settings and step count of ``--resume FILE``, flags given overriding."""
    model = load_model(args.resume, device)
    name = Path(args.resume).name
    if model.kind not in TRAINABLE:
        raise EBMError(f"{name}: a {model.kind} model cannot be trained here ({', '.join(TRAINABLE)})")
    stored = model.info.get("train_config") or {"model": model.kind}
    if not isinstance(stored, dict):
        raise EBMError(f"{name}: its stored training settings are not an object")
    stored = dict(stored)
    for k in ("width", "hidden", "spectral_norm"):  # the architecture is the file's
        if k in model.config:
            if k in given and given[k] != model.config[k]:
                raise EBMError(f"--{k.replace('_', '-')} {given[k]} does not match the resumed model ({k} {model.config[k]})")
            stored[k] = model.config[k]
    try:
        config = config_from_args(args, stored)
    except (TypeError, OverflowError) as e:  # wrong types in the file: EBMError names the field itself
        raise EBMError(f"{name}: its stored training settings are malformed ({_one_line(e)})") from e
    return model, config, model.info.get("train_steps", 0)


def _train(args, config_names: list[str], world: distributed.World, device: torch.device) -> int:
    given = {k: getattr(args, k) for k in config_names if hasattr(args, k)}
    model, done, info = None, 0, {}
    if args.resume:
        model, config, done = _resumed(args, given, device)
        info = model.info
    else:
        config = config_from_args(args)
    if args.download and not world.is_main:
        distributed.barrier()  # rank 0 downloads alone; the others then read its files
    default = "two_moons" if config.model == "mlp2d" else None
    data = _dataset(args, info.get("dataset"), download=args.download and world.is_main, default=default)
    if args.download and world.is_main:
        distributed.barrier()
    points = data.train.x.dim() == 2
    if (config.model == "mlp2d") != points:
        raise EBMError(f"{data.name} holds {'2-D points' if points else '28×28 images'}, and {config.model} trains on "
                       f"{'2-D points (--model mlp2d)' if points else 'images'}")
    data.check_trainable(config.model, config.mirrored)
    model = model or model_for(config, data)
    trainer = Trainer(config, data.train.x, data.train.y, model=model, device=device, start_step=done)
    record = run_info(config, data, done + args.steps)
    stop = StopRequests()
    with stop.installed():  # until the run's objects are gone: a late Ctrl-C must not land in their teardown
        try:
            return _train_loop(args, trainer, data, record, done, world, stop)
        finally:
            trainer.close()  # DDP must go before the process group does
            del trainer, model, data  # freed here, not on return (torch's weakref callbacks run then)
            gc.collect()


class StopRequests:
    """Ctrl-C during training, as a request instead of an exception. The first asks the run to stop:
    the update in progress is dropped whole (``Trainer(interrupt=...)``; under torchrun the ranks
    finish it and stop together) and the weights are saved. Later ones are counted and ignored, so
    no number of Ctrl-C presses can abort the final save: the run always ends in a loadable file.
    SIGTERM or a second terminal's ``kill -9`` still end the process (the write is atomic)."""

    def __init__(self):
        self.count = 0

    def __call__(self, signum, frame) -> None:
        self.count += 1
        if self.count == 2:
            print("stopping: the weights are being saved (Ctrl-C cannot interrupt that)", file=sys.stderr, flush=True)

    def __bool__(self) -> bool:
        return self.count > 0

    @contextlib.contextmanager
    def installed(self):
        try:
            previous = signal.signal(signal.SIGINT, self)
        except ValueError:  # not the main thread: Ctrl-C belongs to whoever owns the process
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def _dataset(args, recorded: dict | None = None, download: bool = False, strict: bool = False,
             default: str | None = None) -> Dataset:
    """The data of ``--data`` and its flags; without ``--data``, what ``recorded`` (a weights file's
    ``info["dataset"]``) names, with its labels and held-out share; ``strict``: refuse other
    data than the recorded hash."""
    arg, folders, held = args.data or default, args.labels_from_folders, args.held_out
    if args.data is None and recorded:
        arg = recorded.get("arg")
        folders = folders or bool(recorded.get("labels_from_folders"))
        held = held or recorded.get("held_out_fraction") or None
    data = load_dataset(arg, CLI_LIMITS, root=args.data_root, download=download, labels_from_folders=folders,
                        held_out=held or HELD_OUT)
    if args.data is None and recorded and recorded.get("hash") not in (None, data.hash):
        note = (f"the data the model was trained on ({recorded.get('name')}, sha256 {str(recorded.get('hash'))[:12]}) "
                f"is not what {arg!r} holds now ({data.hash[:12]})")
        if strict:
            raise EBMError(note + ": pass --data")
        print(f"note: {note}", file=sys.stderr)
    return data


def _train_loop(args, trainer: Trainer, data: Dataset, record: dict, done: int, world: distributed.World,
                stop: StopRequests) -> int:
    config = trainer.config
    out = Path(args.out)
    end = done + args.steps
    deadline = None if args.minutes is None else time.monotonic() + 60 * args.minutes
    if world.size == 1:  # under torchrun every rank must finish the update: DDP waits for all of them
        trainer.interrupt = stop.__bool__

    def say(text: str) -> None:  # rank 0 speaks for all; the other ranks print only errors
        if world.is_main:
            print(text, flush=True)

    def save(note: str) -> None:
        if not world.is_main:
            return
        extra = {"resumed_from": str(args.resume)} if args.resume else {}
        save_model(trainer.shown_model, out, info={**trainer.metadata(), **extra, "data": data.train.source, **record})
        say(f"{note}: saved {out} at step {trainer.state.step} ({len(trainer.state.events)} rollbacks)")

    arch = f"hidden {config.hidden}" if config.model in ("rbm", "mlp2d") else f"width {config.width}"
    if config.objective != "cd":
        arch += f", objective {config.objective}"
    ranks = "" if world.size == 1 else (f", {world.size} processes ({world.backend}), batch {config.batch_size} per "
                                        f"process ({config.batch_size * world.size} in all)")
    say(data.summary())
    unit = "points" if trainer.data.dim() == 2 else "images"
    say(f"training {config.model} ({arch}) on {data.train.source}, {len(trainer.data)} {unit}, device {trainer.device}{ranks}, "
        f"steps {done + 1}..{end}")
    t_log, n_log = time.perf_counter(), 0
    try:
        while trainer.state.step < end:
            # the ranks must stop at the same step, so the one that runs out of time (or was
            # interrupted) tells the rest
            asked = distributed.any_rank(bool(stop)) if world.size > 1 else bool(stop)
            if asked:
                raise Interrupted("stop requested")
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
    except (Interrupted, KeyboardInterrupt):  # KeyboardInterrupt: a SIGINT before the handler, or raised by code
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

    check_output(args.out, (".safetensors",), "--out")
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
    from .evaluation import evaluate, evaluate_data, format_data_report, format_report

    if args.json:
        check_output(args.json, (".json",), "--json")
    device = resolve_device(args.device)
    model = _load(args.model, device)
    recorded = model.info.get("dataset") if isinstance(model.info.get("dataset"), dict) else None
    digits = source_kind(args.data) == "mnist" if args.data else not recorded or recorded.get("name") == "mnist"
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if not digits:  # judged against its own held-out data
        data = _dataset(args, recorded, strict=args.data is None)
        report = evaluate_data(model, data, n_samples=args.n, sampler=args.sampler, steps=args.steps, seed=args.seed,
                               log=log, classifier_updates=args.classifier_updates)
        text = format_data_report(report)
    else:
        classifier = load_model(args.classifier, device)
        if classifier.kind != "classifier":
            raise EBMError(f"{args.classifier}: not an evaluation classifier (kind {classifier.kind})")
        test = mnist(train=False, root=args.data_root if args.data in (None, "mnist") else args.data)
        report = evaluate(model, classifier, test, n_samples=args.n, sampler=args.sampler, steps=args.steps,
                          seed=args.seed, log=log)
        text = format_report(report)
    print(text)
    if args.json:
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    return 0


# --- entry point ------------------------------------------------------------------------------
def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, FileNotFoundError) and e.filename:
        text = f"no such file: {e.filename}"
    if isinstance(e, MemoryError):
        text = "out of memory"
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # every failure ends in one line; EBM_PLAY_DEBUG=1 shows a bug's traceback
        if os.environ.get("EBM_PLAY_DEBUG") and not isinstance(e, EBMError):
            raise
        expected = isinstance(e, (EBMError, ValueError, OSError))  # a user's input or the system's answer
        hint = "" if expected else f" ({type(e).__name__}; EBM_PLAY_DEBUG=1 shows where)"
        print(f"error: {_one_line(e)}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
