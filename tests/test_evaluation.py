"""The model card's reports: a model trained on other data is judged against its own held-out part."""

from __future__ import annotations

import numpy as np
import torch

import ebm_play
from ebm_play.data import load_dataset
from ebm_play.evaluation import evaluate_data, format_data_report
from ebm_play.metrics import data_ood_sets


def test_evaluate_data_on_the_bundled_glyphs():
    glyphs = load_dataset("glyphs")
    torch.manual_seed(0)
    model = ebm_play.CNNEnergy(width=4).eval()
    r = evaluate_data(model, glyphs, n_samples=40, steps=2, log=lambda m: None, classifier_updates=30)
    assert r["dataset"]["hash"] == glyphs.hash and r["classifier"]["classes"] == 8
    assert set(r["ood_auroc"]) == set(data_ood_sets(glyphs.test.x, 40))
    assert r["copy"]["samples"] == 0.0  # two sampler steps from noise copy nothing
    assert 0.0 <= r["copy"]["held_out"] <= 0.2 and "accuracy" not in r  # a CNN has no classes
    text = format_data_report(r)
    assert "copy rate" in text and "MNIST digits" in text and "FDD" in text
    unlabelled = load_dataset(glyphs.arg)
    unlabelled.train.y = unlabelled.test.y = None
    unlabelled.classes = []
    r = evaluate_data(model, unlabelled, n_samples=20, steps=1, log=lambda m: None)
    assert "classifier" not in r and "FDD" not in format_data_report(r)


class Memoriser(torch.nn.Module):
    """A model that memorises its training images: a Gaussian kernel density on them,
    E(x) = −log Σᵢ exp(−‖x − xᵢ‖² / 2σ²) with σ² = 10, so that one unclamped Langevin step of size
    10 lands on the nearest image (near one image the gradient is (x − xᵢ)/σ²)."""

    kind, has_classes = "memoriser", False

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.register_buffer("images", images.flatten(1))
        self.info = {"samplers": {"langevin": {"steps": 60, "step_size": 10.0, "noise": 0.005, "grad_clamp": 0.03}}}

    def forward(self, x):
        return -torch.logsumexp(-torch.cdist(x.flatten(1), self.images).pow(2) / 20, 1)


def test_copy_rate_catches_a_model_that_memorises_ten_images(tmp_path):
    x = load_dataset("glyphs").train.x[:20]
    np.savez(tmp_path / "twenty.npz", x=x.numpy())
    data = load_dataset(tmp_path / "twenty.npz", held_out=0.5)  # 10 to train on, 10 held out
    assert len(data.train.x) == 10
    r = evaluate_data(Memoriser(data.train.x), data, n_samples=50, log=lambda m: None)
    # the chains walk onto training images: the other nine kernels, at squared distances of ~100,
    # pull a sample off its image by about Σⱼ e^(−dⱼ²/20)·dⱼ ≈ 9·e⁻⁵·10 ≈ 0.6, against a
    # threshold (the 5% quantile of the training images' distances to each other) of ~7
    assert r["copy"]["samples"] == 1.0 and r["copy"]["samples_nn_median"] < 0.2 * r["copy"]["threshold"]
    assert r["copy"]["held_out"] <= 0.2  # fresh glyphs are not copies
