import itertools

import numpy as np

import pytest
import torch

from ebm_play.metrics import auroc, blur, frechet_distance, ood_sets, render_letters, sample_quality
from ebm_play.models import DigitClassifier


def test_auroc_matches_the_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 5, (40,), generator=g).float(), torch.randint(2, 8, (30,), generator=g).float()
    pairs = [(1.0 if y > x else 0.5 if y == x else 0.0) for x, y in itertools.product(a.tolist(), b.tolist())]
    assert auroc(a, b) == pytest.approx(sum(pairs) / len(pairs))
    assert auroc(torch.zeros(3), torch.ones(3)) == 1.0 and auroc(torch.ones(3), torch.zeros(3)) == 0.0


def test_frechet_distance_of_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=g)
    b = torch.randn(20000, 3, generator=g) + torch.tensor([1.0, 0.0, 0.0])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # equal covariances: the distance is ‖Δμ‖² = 1 (up to sampling error)
    assert frechet_distance(a, b) == pytest.approx(1.0, abs=0.05)


def test_quality_figures_and_yardsticks_are_sane():
    torch.manual_seed(0)
    clf = DigitClassifier().eval()
    x = torch.rand(50, 1, 28, 28) * 2 - 1
    q = sample_quality(clf, x, clf.features(x).detach())
    assert q["fdd"] == pytest.approx(0.0, abs=1e-6) and 0 <= q["confident"] <= 1 and 0 <= q["coverage"] <= 1
    assert blur(x).shape == x.shape


def test_ood_sets_are_model_inputs():
    test = torch.rand(20, 1, 28, 28) * 2 - 1
    sets = ood_sets(test, 20)
    assert set(sets) == {"uniform noise", "gaussian noise", "inverted digits", "rotated digits", "letters", "constant"}
    for x in sets.values():
        assert x.shape == (20, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert len(render_letters()) == 52


# --- other data: nearest neighbours, copy rate, a classifier of its own --------------------------
import math  # noqa: E402

import ebm_play  # noqa: E402
from ebm_play.data import load_dataset  # noqa: E402
from ebm_play.metrics import (copy_rate, data_ood_sets, evaluate_data, format_data_report, label_quality,  # noqa: E402
                              nearest_distances)


def test_nearest_distances_match_brute_force():
    g = torch.Generator().manual_seed(0)
    x, ref = torch.rand(70, 1, 28, 28, generator=g), torch.rand(300, 1, 28, 28, generator=g)
    full = torch.cdist(x.flatten(1).double(), ref.flatten(1).double())
    assert torch.allclose(nearest_distances(x, ref, batch=32).double(), full.min(1).values, atol=1e-3)
    own = torch.cdist(ref.flatten(1).double(), ref.flatten(1).double()).fill_diagonal_(math.inf)
    assert torch.allclose(nearest_distances(ref, ref, exclude_self=True, batch=32).double(), own.min(1).values, atol=1e-3)


def test_copy_rate_of_copies_and_of_fresh_real_images():
    train, test = ebm_play.sample_digits(True).x, ebm_play.sample_digits(False).x
    r = copy_rate(train[:300], train[:2000], test, max_reference=2000)
    assert r["samples"] == 1.0 and r["samples_nn_median"] < 0.05  # every sample is a training image (float32: ~0.01)
    # fresh test digits, exchangeable with training ones, fall under the 5% quantile of the training
    # images' own nearest-neighbour distances about 5% of the time: 2,000 of them give
    # 0.05 ± 5·√(0.05·0.95/2000) = ±0.024
    assert r["held_out"] == pytest.approx(0.05, abs=0.024)
    assert r["threshold"] < r["train_nn_median"] <= r["held_out_nn_median"] * 1.1


def test_label_quality_for_k_classes():
    probs = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]
    q = label_quality(probs)
    assert q["coverage"] == pytest.approx(1.0) and q["confident"] == 1.0
    assert label_quality(torch.eye(3)[torch.zeros(4, dtype=torch.long)])["coverage"] == 0.0


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
