"""ebm_play: energy-based models you can watch. Lower energy = more data-like, p(x) ∝ exp(−E(x)).

    import ebm_play
    model = ebm_play.load_model("mnist")
    x = ebm_play.sample(model, n=16, seed=0)       # N×1×28×28 in [−1, 1]
    e = ebm_play.score(model, x)                    # (N,) energies
"""

from . import runtime  # noqa: F401  (sets the OpenMP wait policy before torch spins up threads)
from .api import denoise, inpaint, sample, sample_chains, score
from .composition import ClassEnergy, ComposedEnergy, Expert, InkEnergy, SketchEnergy, SymmetryEnergy, compose, ensemble
from .data import Dataset, load_dataset, mnist, sample_digits
from .errors import EBMError
from .images import load_images, preprocess, save_images
from .models import (RBM, CNNEnergy, EnergyModel, JEMEnergy, JEMEnsemble, MLPEnergy, NoiseCNNEnergy, NoiseMLPEnergy,
                     build_model)
from .runtime import configure_threads, resolve_device
from .samplers import SAMPLERS
from .settings import default_sampler
from .training import TrainConfig, Trainer
from .weights import load_model, save_model, shipped_models

__all__ = [
    "CNNEnergy", "ClassEnergy", "ComposedEnergy", "Dataset", "EBMError", "EnergyModel", "Expert", "InkEnergy",
    "JEMEnergy", "JEMEnsemble", "MLPEnergy", "NoiseCNNEnergy", "NoiseMLPEnergy", "RBM", "SAMPLERS", "SketchEnergy",
    "SymmetryEnergy", "TrainConfig", "Trainer", "build_model", "compose", "configure_threads", "default_sampler",
    "denoise", "ensemble", "inpaint", "load_dataset", "load_images", "load_model", "mnist", "preprocess",
    "resolve_device", "sample", "sample_chains", "sample_digits", "save_images", "save_model", "score",
    "shipped_models",
]
