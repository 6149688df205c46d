import itertools

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
from ebm_play.metrics import copy_rate, label_quality, nearest_distances  # noqa: E402


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
