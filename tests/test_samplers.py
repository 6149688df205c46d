"""Samplers against targets whose answers are known in closed form.

Tolerances: with N independent chains, a sample mean has standard error sqrt(v/N) and a sample
variance sqrt(2/N)·v; we allow 5 standard errors (plus the sampler's known O(step) bias for ULA).
"""

import math
import re
import shutil

import pytest
import torch
from torch import nn

import ebm_play
from ebm_play import samplers
from ebm_play.errors import EBMError


class Gaussian(nn.Module):
    """E(x) = ½ Σ_i (x_i − μ_i)² / σ_i² on N×d points."""

    def __init__(self, mu, var):
        super().__init__()
        self.mu, self.var = torch.tensor(mu), torch.tensor(var)

    def forward(self, x):
        return 0.5 * ((x - self.mu) ** 2 / self.var).sum(1)


N = 4000
TARGET = Gaussian([1.0, -0.5], [1.0, 0.25])


def moments(x):
    return x.mean(0), x.var(0)


def check_moments(x, mu, var, var_factor=1.0):
    m, v = moments(x)
    var = torch.tensor(var) * var_factor
    se_m = (var / len(x)).sqrt()
    se_v = var * math.sqrt(2 / len(x))
    assert torch.all((m - torch.tensor(mu)).abs() < 5 * se_m), (m, mu)
    assert torch.all((v - var).abs() < 5 * se_v), (v, var)


def run(name, steps, seed=0, **opts):
    x0 = torch.zeros(N, 2)
    return samplers.run(name, TARGET, x0, steps, seed=seed, bounds=None, **opts)


def test_ula_matches_gaussian_up_to_its_known_bias():
    alpha = 0.01
    res = run("ula", 1500, step_size=alpha)
    # ULA on a Gaussian of variance s² is stationary at s² / (1 − α / (2 s²)).
    check_moments(res.x, [1.0, -0.5], [1.0, 0.25], var_factor=1.0)
    var = torch.tensor([1.0, 0.25])
    expected = var / (1 - alpha / (2 * var))
    assert torch.allclose(res.x.var(0), expected, rtol=5 * math.sqrt(2 / N))


def test_mala_is_exact_on_a_gaussian_and_reports_acceptance():
    res = run("mala", 400, step_size=0.2)
    check_moments(res.x, [1.0, -0.5], [1.0, 0.25])
    assert 0.3 < res.accept_rate < 1.0


def test_mala_with_a_huge_step_rejects_almost_everything():
    res = run("mala", 20, step_size=50.0)
    assert res.accept_rate < 0.05


def test_hmc_moments_and_acceptance():
    res = run("hmc", 150, step_size=0.15, leapfrog=7)  # ωT ≈ 1 and 2: no resonance
    check_moments(res.x, [1.0, -0.5], [1.0, 0.25])
    assert 0.8 < res.accept_rate <= 1.0


def test_temperature_scales_the_variance():
    res = run("mala", 400, step_size=0.2, temperature=4.0)
    check_moments(res.x, [1.0, -0.5], [4.0, 1.0])


def test_annealed_schedule_runs_from_hot_to_target_temperature():
    temps = []
    res = samplers.run("annealed", TARGET, torch.zeros(N, 2), 300, seed=0, base="mala", t_start=50.0, t_end=1.0,
                       step_size=0.1, bounds=None, callback=lambda s: temps.append(s.temperature))
    assert temps[0] == pytest.approx(50.0) and temps[-1] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(temps, temps[1:]))
    check_moments(res.x, [1.0, -0.5], [1.0, 0.25])


def reference_tutorial_langevin(model, x, steps, step_size, noise_sd, clamp, generator):
    """The reference tutorial's loop, written out as it is there (in-place noise, .backward())."""
    x = x.clone()
    for _ in range(steps):
        noise = torch.randn(x.shape, generator=generator) * noise_sd
        x = (x + noise).clamp(-1, 1).detach().requires_grad_(True)
        model(x).sum().backward()
        x.grad.data.clamp_(-clamp, clamp)
        x = (x - step_size * x.grad).clamp(-1, 1).detach()
    return x


def test_reference_langevin_equals_the_tutorial_loop_given_the_same_noise():
    torch.manual_seed(0)
    model = ebm_play.CNNEnergy(width=4)
    x0 = torch.rand(6, 1, 28, 28) * 2 - 1
    ours = samplers.run("langevin", model, x0, 15, seed=3).x
    theirs = reference_tutorial_langevin(model, x0, 15, 10.0, 0.005, 0.03, ebm_play.runtime.make_generator(3, torch.device("cpu")))
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_records_carry_the_exact_energy_of_their_state():
    torch.manual_seed(0)
    model = ebm_play.CNNEnergy(width=4)
    x0 = torch.rand(3, 1, 28, 28) * 2 - 1
    for name in ("langevin", "ula", "mala", "hmc"):
        recs = list(samplers.SAMPLERS[name](model, x0, 4, generator=ebm_play.runtime.make_generator(0, torch.device("cpu"))))
        assert [r.step for r in recs] == list(range(5)), name
        for r in recs:
            assert torch.allclose(r.energy, model(r.x).detach(), atol=1e-5), name


@pytest.mark.parametrize("name", ["langevin", "ula", "mala", "hmc", "annealed"])
def test_mask_holds_observed_pixels_fixed(name):
    torch.manual_seed(0)
    model = ebm_play.CNNEnergy(width=4)
    x0 = torch.rand(4, 1, 28, 28) * 2 - 1
    keep = torch.zeros(1, 1, 28, 28)
    keep[..., :14, :] = 1
    res = samplers.run(name, model, x0, 10, seed=0, mask=keep)
    assert torch.equal(res.x[..., :14, :], x0[..., :14, :])
    assert not torch.allclose(res.x[..., 14:, :], x0[..., 14:, :])


def test_gibbs_mask_holds_observed_pixels():
    rbm = ebm_play.RBM(hidden=16)
    x0 = torch.randint(0, 2, (3, 1, 28, 28)).float() * 2 - 1
    keep = torch.zeros(1, 1, 28, 28)
    keep[..., :, :10] = 1
    res = samplers.run("gibbs", rbm, x0, 5, seed=0, mask=keep)
    assert torch.equal(res.x[..., :10], x0[..., :10])


def test_data_term_pulls_towards_the_observation():
    # E = 0 everywhere: the target is exp(−λ‖x − y‖²/T), a Gaussian at y of variance T/(2λ).
    flat = lambda x: x.sum(1) * 0.0  # noqa: E731
    y = torch.full((N, 2), 0.7)
    res = samplers.run("mala", flat, torch.zeros(N, 2), 300, seed=0, x_obs=y, data_weight=2.0, step_size=0.05, bounds=None)
    check_moments(res.x, [0.7, 0.7], [0.25, 0.25])


def test_bounds_clamp_langevin_and_wall_keeps_mala_near_the_box():
    flat = lambda x: -x.flatten(1).sum(1) * 100  # noqa: E731  (pulls every pixel up, out of the box)
    x0 = torch.zeros(8, 1, 28, 28)
    assert samplers.run("langevin", flat, x0, 20, seed=0).x.max() <= 1.0
    res = samplers.run("mala", flat, x0, 200, seed=0, step_size=1e-4, wall=1e4)
    assert res.x.max() < 1.05


def test_callback_can_stop_early_and_frames_are_kept():
    seen = []
    res = run("ula", 50, step_size=0.01, keep_frames=10, callback=lambda s: seen.append(s.step) or s.step < 20)
    assert seen[-1] == 20 and res.steps[-1] == 20
    res = run("ula", 50, step_size=0.01, keep_frames=10)
    assert len(res.frames) == 6 and res.energies.shape == (51, N)


def test_same_seed_same_chains_different_seed_different():
    a, b, c = (run("mala", 5, seed=s, step_size=0.1).x for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_options_are_user_errors():
    with pytest.raises(EBMError, match="no option"):
        run("ula", 5, leapfrog=3)
    with pytest.raises(EBMError, match="unknown sampler"):
        samplers.run("nope", TARGET, torch.zeros(2, 2), 3)
    with pytest.raises(EBMError, match="temperature must be positive"):
        run("ula", 5, temperature=-1.0)
    with pytest.raises(EBMError, match="RBM"):
        samplers.run("gibbs", TARGET, torch.zeros(2, 2), 3)


def test_gibbs_reaches_the_exact_distribution_of_a_tiny_rbm():
    torch.manual_seed(0)
    rbm = ebm_play.RBM(hidden=2, visible=3)
    with torch.no_grad():
        rbm.W.copy_(torch.tensor([[1.5, -1.0], [-2.0, 0.5], [1.0, 1.0]]))
        rbm.b.copy_(torch.tensor([0.2, -0.3, 0.1]))
        rbm.c.copy_(torch.tensor([-0.5, 0.4]))
    states = torch.tensor([[(i >> k) & 1 for k in range(3)] for i in range(8)]).float()
    p = torch.softmax(-rbm.free_energy(states).detach(), 0)
    g = ebm_play.runtime.make_generator(0, torch.device("cpu"))
    v = torch.bernoulli(torch.full((20000, 3), 0.5), generator=g)
    with torch.no_grad():
        for _ in range(30):
            v, _ = rbm.gibbs_step(v, g)
    freq = torch.bincount((v * torch.tensor([1.0, 2.0, 4.0])).sum(1).long(), minlength=8).float() / len(v)
    se = (p * (1 - p) / len(v)).sqrt()
    assert torch.all((freq - p).abs() < 5 * se + 1e-3), (freq, p)


@pytest.mark.parametrize("bad", [dict(step_size=float("nan")), dict(step_size=0.0), dict(step_size=float("inf")),
                                 dict(noise=-1.0), dict(grad_clamp=-0.1), dict(data_weight=-1.0, x_obs=torch.zeros(1, 2)),
                                 dict(step_size="1e-3")])
def test_bad_numbers_are_rejected_with_their_name(bad):
    name = next(iter(bad))
    sampler = "langevin" if name in ("noise", "grad_clamp") else "mala"
    with pytest.raises(EBMError, match=name):
        samplers.run(sampler, TARGET, torch.zeros(2, 2), 3, bounds=None, **bad)
    with pytest.raises(EBMError, match="leapfrog"):
        samplers.run("hmc", TARGET, torch.zeros(2, 2), 3, leapfrog=10**6)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_step_gives_the_eager_chains_and_the_same_statistics():
    """The path CUDA runs use (CUDA graphs through torch.compile), checked on the CPU."""
    torch.manual_seed(0)
    model = ebm_play.CNNEnergy(width=4).eval()
    x0 = torch.rand(6, 1, 28, 28) * 2 - 1
    eager = samplers.run("langevin", model, x0, 15, seed=3).x
    fast = samplers.run("langevin", samplers.compiled(model), x0, 15, seed=3).x
    assert torch.allclose(eager, fast, atol=1e-5)
    x = samplers.run("mala", samplers.compiled(TARGET), torch.zeros(N, 2), 400, seed=0, bounds=None, step_size=0.2).x
    check_moments(x, [1.0, -0.5], [1.0, 0.25])


# --- one validator for every source of settings (issue #20) -------------------------------------------
@pytest.mark.parametrize("sampler,options,words", [
    ("langevin", [1, 2], "langevin settings must be a mapping"),
    ("ula", {"temperature": "hot"}, "temperature must be a number, got 'hot'"),
    ("mala", {"step_size": float("nan")}, "step_size must be a finite number"),
    ("mala", {"step_size": 10**400}, "step_size must be a finite number"),
    ("langevin", {"steps": 10**12}, "steps must be between 0 and 100000, got 1000000000000"),
    ("langevin", {"steps": 10**400}, "steps must be between 0 and 100000"),
    ("langevin", {"steps": float("inf")}, "steps must be a whole number"),
    ("langevin", {"bounds": (1.0, -1.0)}, "low < high"), ("langevin", {"bounds": [0, float("nan")]}, "finite"),
    ("langevin", {"bounds": "ab"}, "pair"),
    ("hmc", {"leapfrog": 2.5}, "leapfrog must be a whole number"), ("hmc", {"leapfrog": True}, "leapfrog"),
    ("langevin", {"grad_clamp": -1}, "grad_clamp must be 0 or more"),
    ("annealed", {"base": "gibbs"}, "gradient sampler as base"), ("annealed", {"temperature": 2.0}, "no option 'temperature'"),
    ("gibbs", {"step_size": 1.0}, "no option 'step_size'"), ("langevin", {"generator": None}, "no option 'generator'"),
    ("nope", {}, "unknown sampler"), (["langevin"], {}, "unknown sampler"),
])
def test_check_options_names_what_is_wrong(sampler, options, words):
    with pytest.raises(EBMError, match=re.escape(words)):
        samplers.check_options(sampler, options)


def test_check_options_normalises_and_refuses_per_call_inputs_in_recommendations():
    got = samplers.check_options("hmc", {"leapfrog": 3.0, "steps": 2.0, "bounds": [-1, 1], "temperature": 1})
    assert got == {"leapfrog": 3, "steps": 2, "bounds": (-1.0, 1.0), "temperature": 1.0}
    assert type(got["leapfrog"]) is int and type(got["temperature"]) is float
    assert samplers.check_options("annealed", {"base": "hmc", "leapfrog": 2}) == {"base": "hmc", "leapfrog": 2}
    mask = torch.ones(1, 2)
    assert samplers.check_options("langevin", {"mask": mask})["mask"] is mask
    for name in ("mask", "x_obs", "data_weight"):
        with pytest.raises(EBMError, match=f"a stored recommendation cannot set '{name}'"):
            samplers.check_options("langevin", {name: 1.0}, stored=True)


def test_run_goes_through_the_same_validator():
    with pytest.raises(EBMError, match="steps must be between 0 and 100000"):
        samplers.run("langevin", TARGET, torch.zeros(2, 2), 10**400)
    with pytest.raises(EBMError, match="temperature must be a number"):
        samplers.run("ula", TARGET, torch.zeros(2, 2), 2, temperature="hot")


WIDE = Gaussian([0.0] * 50, torch.linspace(0.25, 1.0, 50).tolist())  # 50 scales: acceptance falls smoothly with ε


@pytest.mark.parametrize("name,target,start", [("mala", 0.57, 1e-4), ("mala", 0.57, 50.0), ("hmc", 0.7, 1e-4),
                                               ("hmc", 0.7, 5.0)])
def test_step_size_adapts_to_the_target_acceptance_from_any_start(name, target, start):
    # Both starts are orders of magnitude off the right step (about 0.1 for MALA, 0.3 for HMC here).
    # After the warm-up the kernel is fixed, so its acceptance averages 200 updates × 1000 chains: the
    # sampling error is below 0.01 and what remains is the controller's settling error, within ±0.1.
    # (On the 2-D TARGET, HMC's acceptance is not monotone in ε, a resonance of the leapfrog: no
    # controller can hold 0.7 there.)
    seen = []
    res = samplers.run(name, WIDE, torch.zeros(1000, 50), 400, seed=0, bounds=None, step_size=start, adapt=True,
                       warmup=200, callback=seen.append, **({"leapfrog": 5} if name == "hmc" else {}))
    after = [s.accept.mean().item() for s in seen if s.accept is not None and not s.warmup]
    assert abs(sum(after) / len(after) - target) < 0.1, sum(after) / len(after)
    assert res.adapted and res.step_size != start
    assert [s.warmup for s in seen[1:]] == [True] * 200 + [False] * 200
    assert len({s.step_size for s in seen[201:]}) == 1  # fixed after the warm-up: detailed balance holds
    check_moments(res.x, [0.0] * 50, WIDE.var.tolist())  # exact after the warm-up


def test_no_step_size_means_adapt_and_a_given_one_is_kept():
    res = run("mala", 100)
    assert res.adapted and res.step_size != 1e-4
    res = run("mala", 100, step_size=0.2)
    assert not res.adapted and res.step_size == 0.2
    res = run("mala", 100, step_size=0.2, adapt=False)
    assert not res.adapted and res.step_size == 0.2


def test_burn_in_updates_are_unadjusted_warm_up_records():
    seen = []
    res = run("hmc", 30, step_size=0.3, burn_in=10, leapfrog=3, callback=seen.append)
    assert all(s.accept is None and s.warmup for s in seen[1:11])
    assert all(s.accept is not None for s in seen[11:])
    assert res.accept_rate is not None  # over the Metropolis updates only


@pytest.mark.parametrize("bad,msg", [(dict(adapt="yes"), "adapt"), (dict(warmup=-1), "warmup"),
                                     (dict(burn_in=2.5), "burn_in"), (dict(target_accept=1.5), "target_accept")])
def test_bad_warm_up_options_are_named(bad, msg):
    with pytest.raises(EBMError, match=msg):
        run("mala", 3, **bad)


# --- the ladder sampler: annealed Langevin down a noise ladder -----------------------------------
class NoisyMixture(nn.Module):
    """A σ-conditioned energy known exactly: E(x, σ) = −log Σ_k w_k N(x; μ_k, (s² + σ²)I), the mixture
    with noise σ added, as a dsm model would learn it (without σ: E(x, σ_min))."""

    def __init__(self, means, weights, std, ladder=(1.0, 0.02, 10)):
        super().__init__()
        self.means, self.log_w, self.std, self.ladder = torch.tensor(means), torch.tensor(weights).log(), std, ladder

    def forward(self, x, sigma=None):
        v = self.std ** 2 + (self.ladder[1] if sigma is None else sigma) ** 2
        d2 = (x[:, None, :] - self.means[None]).pow(2).sum(-1)
        return -torch.logsumexp(self.log_w - d2 / (2 * v) - math.log(2 * math.pi * v), 1)

    def noise_ladder(self):
        from ebm_play.objectives import noise_ladder

        return noise_ladder(*self.ladder)

    def at_noise(self, sigma):
        return lambda x: self(x, sigma)


MIX_MEANS = [[0.6, 0.0], [-0.3, 0.52], [-0.3, -0.52]]
MIX_WEIGHTS = [0.2, 0.3, 0.5]


def test_ladder_sampler_gets_mixture_weights_and_moments_right():
    """From uniform noise, 100 steps per level: the chains end with the mixture's mode weights
    (unequal, 0.2 / 0.3 / 0.5; each within 5 binomial standard errors) and its moments. Each mode is
    N(μ_k, v) at the last level, v = s² + σ_min²; ULA with step ε keeps variance v/(1 − ε/(2v)), and
    the final Tweedie step x − σ_min²∇E shrinks the offset from μ_k by s²/v: the variance about the
    mode is v/(1 − ε/(2v))·(s²/v)². Means and variances: 5 standard errors (√(var/N), var·√(2/N))."""
    target = NoisyMixture(MIX_MEANS, MIX_WEIGHTS, std=0.05)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(N, 2, generator=g) * 2 - 1
    eps = 8e-5
    res = samplers.run("ladder", target, x0, 1000, generator=g, step_size=eps, bounds=None)
    assert res.steps == list(range(1001)) and res.energies.shape == (1001, N)
    means = torch.tensor(MIX_MEANS)
    d, k = torch.cdist(res.x, means).min(1)
    assert (d < 0.3).all()  # every chain in a mode
    shares = torch.bincount(k, minlength=3).float() / N
    for share, w in zip(shares.tolist(), MIX_WEIGHTS):
        assert abs(share - w) < 5 * math.sqrt(w * (1 - w) / N), shares
    v = 0.05 ** 2 + 0.02 ** 2
    var = v / (1 - eps / (2 * v)) * (0.05 ** 2 / v) ** 2
    offsets = res.x - means[k]
    assert torch.all(offsets.mean(0).abs() < 5 * math.sqrt(var / N)), offsets.mean(0)
    assert torch.all((offsets.var(0) - var).abs() < 5 * var * math.sqrt(2 / N)), (offsets.var(0), var)


def test_plain_langevin_from_noise_gets_the_weights_wrong():
    """The contrast the ladder is for: ULA at the last level alone, as long, keeps each chain in the
    basin it started in, so the shares follow the basins' areas (about 1/3 each), not the weights."""
    target = NoisyMixture(MIX_MEANS, MIX_WEIGHTS, std=0.05)
    g = torch.Generator().manual_seed(0)
    res = samplers.run("ula", lambda x: target(x), torch.rand(N, 2, generator=g) * 2 - 1, 1000, generator=g,
                       step_size=8e-5, bounds=None)
    _, k = torch.cdist(res.x, torch.tensor(MIX_MEANS)).min(1)
    shares = torch.bincount(k, minlength=3).float() / N
    assert abs(shares[2] - 0.5) > 0.1, shares


def test_ladder_sampler_holds_masked_coordinates_and_needs_a_noise_ladder():
    target = NoisyMixture(MIX_MEANS, MIX_WEIGHTS, std=0.05)
    x0 = torch.full((64, 2), 0.6)
    res = samplers.run("ladder", target, x0, 50, seed=0, mask=torch.tensor([1.0, 0.0]), sigma_max=0.3, levels=5)
    assert torch.equal(res.x[:, 0], x0[:, 0]) and not torch.equal(res.x[:, 1], x0[:, 1])
    assert res.x.abs().max() <= 1  # the final state is clamped into the bounds
    with pytest.raises(EBMError, match="noise-conditional"):
        samplers.run("ladder", TARGET, x0, 10, seed=0)
    with pytest.raises(EBMError, match="sigma_min"):
        samplers.run("ladder", target, x0, 10, seed=0, sigma_min=2.0)
    assert len(samplers.run("ladder", target, x0, 0, seed=0).steps) == 1
