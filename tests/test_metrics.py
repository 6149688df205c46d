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
