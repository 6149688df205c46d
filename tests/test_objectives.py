"""The training objectives' losses (ebm_play.objectives) against closed-form answers.

Tolerances: a mean over N independent samples has standard error sd/√N; we allow 5 standard errors.
"""

import math

import pytest
import torch

from ebm_play import objectives
from ebm_play.errors import EBMError


def test_noise_ladder_is_geometric_from_max_to_min():
    s = objectives.noise_ladder(1.0, 0.01, 5)
    assert s.tolist() == pytest.approx([1.0, 10 ** -0.5, 0.1, 10 ** -1.5, 0.01], rel=1e-6)
    assert objectives.noise_ladder(0.5, 0.05, 1).tolist() == pytest.approx([0.05])
    for bad in [(0.01, 1.0, 5), (1.0, 0.0, 5), (1.0, 0.1, 0), (1.0, float("nan"), 3), (1.0, 0.1, 2.5), (0.3, 0.3, 4)]:
        with pytest.raises(EBMError):
            objectives.noise_ladder(*bad)


def test_dsm_loss_of_the_exact_score_is_its_known_minimum():
    """Data N(0, s²I); the exact energy at noise σ is |x|²/(2(s² + σ²)). For c times that energy, per
    dimension the residual σ∇E − z = cσ(x + σz)/v − z (v = s² + σ²) has mean square
    c²σ²s²/v² + (cσ²/v − 1)², which is smallest, s²/v, at c = 1: the loss is half of it."""
    g = torch.Generator().manual_seed(0)
    n, d, s = 20000, 3, 0.5
    x = s * torch.randn(n, d, generator=g)
    z = torch.randn(n, d, generator=g)
    for sigma in (0.1, 0.5, 2.0):
        v = s * s + sigma * sigma
        for c in (1.0, 1.5):
            per = objectives.dsm_loss(lambda x, sig: c * 0.5 * x.pow(2).sum(1) / v, x, torch.full((n,), sigma), z)
            expected = 0.5 * (c * c * sigma ** 2 * s * s / v ** 2 + (c * sigma ** 2 / v - 1) ** 2)
            se = per.std().item() / math.sqrt(n)
            assert abs(per.mean().item() - expected) < 5 * se, (sigma, c, per.mean().item(), expected)
        assert expected > s * s / (2 * v)


def test_dsm_loss_reaches_the_weights_through_the_input_gradient():
    w = torch.tensor(0.3, requires_grad=True)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    per = objectives.dsm_loss(lambda x, sig: 0.5 * w * x.pow(2).sum(1), x, torch.full((64,), 0.2), torch.randn(64, 2))
    per.mean().backward()
    assert w.grad is not None and w.grad != 0


def test_stratified_levels_put_every_level_in_a_batch():
    lv = objectives.levels_of_batch(23, 10)
    assert torch.bincount(lv, minlength=10).min() == 2 and lv[:10].tolist() == list(range(10))


def test_nce_loss_is_stationary_at_the_true_density():
    """Data N(0, 1) in 1-D against N(0, 4) noise, ν = 2. With the exact energy and log Z, the
    derivative of the expected loss in log Z, ν E_noise[σ(G)] − E_data[σ(−G)] (G the log-ratio), is 0:
    the sample version is within 5 standard errors of 0, and shifting log Z raises the loss."""
    g = torch.Generator().manual_seed(0)
    n, nu = 40000, 2
    x, y = torch.randn(n, 1, generator=g), 2 * torch.randn(nu * n, 1, generator=g)
    log_norm = -0.5 * math.log(2 * math.pi)

    def energy(x):  # −log N(x; 0, 1) without its constant; the constant is log Z
        return 0.5 * x.pow(2).sum(1)

    def log_q(x):
        return log_norm - math.log(2) - 0.5 * (x / 2).pow(2).sum(1)

    def loss(log_z):
        gd = objectives.nce_logits(energy(x) + log_z, log_q(x), nu)
        gn = objectives.nce_logits(energy(y) + log_z, log_q(y), nu)
        return gd, gn, objectives.nce_loss(gd, gn, nu).item()

    gd, gn, best = loss(-log_norm)
    slope = nu * torch.sigmoid(gn).mean().item() - torch.sigmoid(-gd).mean().item()
    se = torch.sigmoid(-gd).std().item() / math.sqrt(n) + nu * torch.sigmoid(gn).std().item() / math.sqrt(nu * n)
    assert abs(slope) < 5 * se, (slope, se)
    assert loss(-log_norm + 0.3)[2] > best and loss(-log_norm - 0.3)[2] > best
    acc = objectives.nce_accuracy(gd, gn)
    assert 0.5 < acc < 1


def test_gaussian_noise_is_fitted_to_the_data_and_has_its_exact_density():
    g = torch.Generator().manual_seed(0)
    cov = torch.tensor([[0.5, 0.2], [0.2, 0.3]])
    data = torch.randn(20000, 2, generator=g) @ torch.linalg.cholesky(cov).T + torch.tensor([0.3, -0.1])
    q = objectives.nce_noise("gaussian", data)
    y = q.sample(20000, g)
    assert torch.allclose(y.mean(0), torch.tensor([0.3, -0.1]), atol=5 * math.sqrt(0.5 / 20000) * 2)
    assert torch.allclose(torch.cov(y.T), cov, atol=0.02)  # 2 × 5 s.e. of a covariance entry at n = 20000
    fit = data[:10_000]  # the noise is fitted to at most 10,000 points
    exact = torch.distributions.MultivariateNormal(fit.mean(0), torch.cov(fit.T))
    assert torch.allclose(q.log_prob(y[:100]), exact.log_prob(y[:100]), atol=1e-4)
    u = objectives.nce_noise("uniform", torch.zeros(5, 1, 28, 28))
    s = u.sample(3, g)
    assert s.shape == (3, 1, 28, 28) and s.abs().max() <= 1
    assert u.log_prob(s).tolist() == pytest.approx([-784 * math.log(2)] * 3)
    with pytest.raises(EBMError):
        objectives.nce_noise("laplace", data)


def test_each_objective_names_the_curves_that_mean_something_for_it():
    assert {"e_real", "e_fake", "gap"} <= set(objectives.metric_names("cd"))
    assert "accuracy" in objectives.metric_names("cd", model="jem")
    dsm = objectives.metric_names("dsm", [1.0, 0.1])
    assert dsm["dsm_loss_1"] == "loss at σ = 0.1" and "gap" not in dsm
    assert {"nce_accuracy", "log_z"} <= set(objectives.metric_names("nce"))
    with pytest.raises(EBMError):
        objectives.metric_names("gan")
