"""Corruptions: exact noise fractions, noise statistics and reproducibility with fixed seeds."""

import math

import pytest
import torch

from ebm_play import EBMError
from ebm_play.corruptions import KINDS, corrupt, gaussian, kind_of, occlusion, salt_pepper


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_salt_and_pepper_replaces_an_exact_fraction_half_black_half_white():
    x = torch.zeros(50, 1, 28, 28)
    y = salt_pepper(x, 0.2, gen())
    k = round(0.2 * 784)  # 157 per image: 78 pepper, 79 salt
    changed = (y != 0).flatten(1)
    assert changed.sum(1).tolist() == [k] * 50
    assert (y == -1).flatten(1).sum(1).tolist() == [k // 2] * 50
    assert (y == 1).flatten(1).sum(1).tolist() == [k - k // 2] * 50
    assert not torch.equal(changed[0], changed[1])  # each image gets its own pixels
    assert torch.equal(x, torch.zeros_like(x))  # the input is untouched


def test_salt_and_pepper_positions_are_uniform():
    y = salt_pepper(torch.zeros(2000, 1, 28, 28), 0.1, gen(1))
    per_pixel = (y != 0).float().mean(0).flatten()  # each pixel hit with probability 78/784 ≈ 0.0995
    assert per_pixel.mean().item() == pytest.approx(78 / 784, abs=1e-6)
    assert per_pixel.std().item() < 0.02  # binomial sd sqrt(p(1−p)/2000) ≈ 0.0067; no pixel favoured


def test_gaussian_noise_statistics():
    x = torch.zeros(400, 1, 28, 28)
    y = gaussian(x, 0.1, gen(2))  # clamping at ±1 is 10σ away: no effect
    d = (y - x).flatten()
    assert d.mean().item() == pytest.approx(0.0, abs=3 * 0.1 / math.sqrt(d.numel()) * 2)
    assert d.std().item() == pytest.approx(0.1, rel=0.01)
    big = gaussian(x, 2.0, gen(3))
    assert big.min() >= -1 and big.max() <= 1  # clamped to the pixel range
    assert (big.abs() == 1).float().mean().item() == pytest.approx(2 * 0.3085, abs=0.01)  # P(|N(0,4)| > 1)


def test_occlusion_covers_one_square_of_the_asked_area():
    x = -torch.ones(30, 1, 28, 28)
    y = occlusion(x, 0.25, gen(4))
    side = 14  # round(28·√0.25)
    for img in y[:, 0]:
        rows, cols = torch.nonzero(img == 1, as_tuple=True)
        assert len(rows) == side * side
        assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side
    corners = {(int(torch.nonzero(img == 1)[0, 0]), int(torch.nonzero(img == 1)[0, 1])) for img in y[:, 0]}
    assert len(corners) > 10  # random positions
    assert torch.equal(occlusion(x, 1.0, gen(), fill=0.0), torch.zeros_like(x))
    assert torch.equal(occlusion(x, 0.0, gen()), x)


def test_same_seed_same_noise_and_different_seed_different_noise():
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    for kind in KINDS:
        a, b = corrupt(x, kind, 0.3, seed=7), corrupt(x, kind, 0.3, seed=7)
        assert torch.equal(a, b), kind
        assert not torch.equal(a, corrupt(x, kind, 0.3, seed=8)), kind
        assert torch.equal(a, corrupt(x, kind, 0.3, generator=gen(7))), kind
        assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert torch.equal(corrupt(x, "gaussian", 0.0, seed=1), x)


def test_names_and_bad_values_are_rejected_clearly():
    assert kind_of("Salt-and-pepper") == "salt_pepper" and kind_of("gauss") == "gaussian"
    with pytest.raises(EBMError, match="unknown noise kind"):
        corrupt(torch.zeros(1, 1, 28, 28), "speckle", 0.1)
    with pytest.raises(EBMError, match="between 0 and 1"):
        corrupt(torch.zeros(1, 1, 28, 28), "salt_pepper", 1.5)
    with pytest.raises(EBMError, match="must be a number"):
        corrupt(torch.zeros(1, 1, 28, 28), "gaussian", float("nan"))
    with pytest.raises(EBMError, match=r"\[−1, 1\]"):
        corrupt(torch.full((1, 1, 28, 28), 3.0), "gaussian", 0.1)
    with pytest.raises(EBMError, match="no option"):
        corrupt(torch.zeros(1, 1, 28, 28), "gaussian", 0.1, fill=1.0)
