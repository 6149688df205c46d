"""The shipped models load by name, give finite energies and evaluate sanely on a small subset.
(The targets themselves are for the model cards, not for tests.)"""

import pytest
import torch

import ebm_play
from ebm_play.evaluation import evaluate
from ebm_play.metrics import render_drawn_digits
from ebm_play.models import IMAGE_ENERGIES

ENERGIES = ["mnist", "mnist-jem", "mnist-ood", "mnist-rbm", "mnist-dsm"]


@pytest.fixture(scope="module")
def test_digits():
    return ebm_play.sample_digits(train=False)


@pytest.mark.parametrize("name", ENERGIES)
def test_shipped_energies_load_by_name_and_rank_digits_below_noise(name, test_digits):
    model = ebm_play.load_model(name)
    assert model.kind in IMAGE_ENERGIES
    assert all(m.get("train_steps", 0) > 0 for m in model.info.get("members", [model.info]))
    e_digits = ebm_play.score(model, test_digits.x[:200])
    e_noise = ebm_play.score(model, torch.rand(200, 1, 28, 28) * 2 - 1)
    assert torch.isfinite(e_digits).all() and torch.isfinite(e_noise).all()
    assert e_digits.mean() < e_noise.mean()


def test_evaluation_classifier_is_accurate(test_digits):
    clf = ebm_play.load_model("mnist-classifier")
    with torch.no_grad():
        acc = (clf(test_digits.x).argmax(1) == test_digits.y).float().mean().item()
    assert acc > 0.97


def test_pad_drawn_digits_read_as_their_digits():
    """The synthetic pad drawings that evaluate's "drawn accepted" figure uses are digits."""
    x, y = render_drawn_digits()
    assert x.shape == (100, 1, 28, 28) and torch.equal(y.bincount(), torch.full((10,), 10))
    with torch.no_grad():
        assert (ebm_play.load_model("mnist-classifier")(x).argmax(1) == y).float().mean() >= 0.95


@pytest.mark.parametrize("name", ENERGIES)
def test_quick_evaluate_gives_sane_figures(name, test_digits):
    model = ebm_play.load_model(name)
    report = evaluate(model, ebm_play.load_model("mnist-classifier"), test_digits,
                      n_samples=100, steps=20 if name != "mnist-rbm" else 50, log=lambda m: None)
    for key in ("samples", "held_out", "blurred"):
        q = report[key]
        assert q["fdd"] >= 0 and 0 <= q["confident"] <= 1 and 0 <= q["coverage"] <= 1
    assert report["held_out"]["fdd"] < report["blurred"]["fdd"]  # the yardsticks are ordered
    assert all(0 <= v <= 1 for v in report["ood_auroc"].values())
    assert report["ood_auroc"]["uniform noise"] > 0.9
    assert 0 <= report["drawn_accepted"] <= 1
    if model.has_classes:
        assert report["accuracy"] > 0.9
