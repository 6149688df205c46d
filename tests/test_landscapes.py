"""2-D landscapes (ebm_play.landscapes): data sets, hand-made energies, the batched grid, the forces
of the loss, mode statistics, and the MLP energy trained by the shared trainer and sampled by the
shared samplers."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

import ebm_play
from ebm_play import landscapes as L
from ebm_play.errors import EBMError
from ebm_play.runtime import job_threads


@pytest.mark.parametrize("name", L.DATASETS)
def test_data_sets_are_seeded_and_inside_the_square(name):
    x, y = L.make_dataset(name, 500, seed=3)
    assert x.shape == (500, 2) and x.dtype == torch.float32 and y.shape == (500,)
    assert x.abs().max() <= 0.95 and torch.isfinite(x).all()
    assert x.std(0).min() > 0.1  # spread over the square, not a blob
    x2, y2 = L.make_dataset(name, 500, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, L.make_dataset(name, 500, seed=4)[0])
    expected = {"two_moons": 2, "rings": 3, "gaussians8": 8, "checkerboard": 8, "spiral": 2}[name]
    assert int(y.max()) + 1 == expected and int(y.min()) == 0


def test_data_set_mistakes_are_explained():
    with pytest.raises(EBMError, match="unknown data set"):
        L.make_dataset("moons")
    with pytest.raises(EBMError, match="n must be"):
        L.make_dataset("rings", 0)
    with pytest.raises(EBMError, match="square"):
        L.check_points([[0.0, 2.0]])
    with pytest.raises(EBMError, match="pairs"):
        L.check_points([1.0, 2.0, 3.0])
    with pytest.raises(EBMError, match="empty"):
        L.check_points(np.zeros((0, 2)))
    assert L.check_points([[0.5, -0.5]]).shape == (1, 2)


def test_energy_grid_is_one_batched_call_with_rows_along_y():
    calls = []

    def energy(x):
        calls.append(x.shape)
        return x[:, 0] + 10 * x[:, 1]

    xs, ys, E = L.energy_grid(energy, 50)
    assert calls == [(2500, 2)]  # the whole grid at once, not point by point
    assert E.shape == (50, 50) and xs[0] == -1 and xs[-1] == 1
    i, j = 7, 31
    assert E[i, j] == pytest.approx(xs[j] + 10 * ys[i], abs=1e-5)
    with pytest.raises(EBMError, match="resolution"):
        L.energy_grid(energy, 1)


def test_hand_made_energies():
    dw = L.hand_made("double_well")
    s = dw.config["separation"]
    e = dw(torch.tensor([[-s, 0.0], [s, 0.0], [0.0, 0.0], [s, 0.3]]))
    assert e[0] == pytest.approx(0) and e[1] == pytest.approx(0)
    assert e[2] == pytest.approx(dw.config["barrier"]) and e[3] > 1
    ring = L.hand_made("ring", radius=0.5)
    t = torch.linspace(0, 6, 7)
    on = torch.stack([0.5 * t.cos(), 0.5 * t.sin()], 1)
    assert ring(on).abs().max() < 1e-4 and (ring(on * 0.5) > 4).all()
    up = L.hand_made("half_plane", angle=90.0)
    assert up(torch.tensor([[0.0, 0.5]])) < 0.05 and up(torch.tensor([[0.0, -0.5]])) > 10
    gmm = L.hand_made("gmm")
    means = gmm.modes()
    x = torch.rand(64, 2) * 2 - 1
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.full((8,), 1 / 8)),
        torch.distributions.Independent(torch.distributions.Normal(means, torch.full_like(means, 0.08)), 1))
    assert torch.allclose(gmm(x), -mix.log_prob(x), atol=1e-4)  # the exact −log density
    with pytest.raises(EBMError, match="unknown hand-made"):
        L.hand_made("volcano")


def test_composition_of_2d_energies_is_a_weighted_sum():
    ring, up = L.hand_made("ring"), L.hand_made("half_plane")
    both = ebm_play.compose((ring, 1.0), (up, 2.0))
    x = torch.rand(32, 2) * 2 - 1
    assert torch.allclose(both(x), ring(x) + 2 * up(x))
    xs, ys, E = L.energy_grid(both, 60)
    i, j = np.unravel_index(E.argmin(), E.shape)
    assert ys[i] > 0 and abs(math.hypot(xs[j], ys[i]) - 0.6) < 0.1  # the upper arc of the ring


def test_force_grid_pulls_down_at_data_and_pushes_up_at_negatives():
    torch.manual_seed(0)
    model = ebm_play.MLPEnergy(hidden=32)
    data = torch.tensor([[-0.5, 0.0]]) + 0.05 * torch.randn(64, 2)
    negatives = torch.tensor([[0.5, 0.0]]) + 0.05 * torch.randn(64, 2)
    xs, ys, E, dE = L.cd_force_grid(model, data, negatives, alpha=0.0, resolution=41)

    def at(x, y):
        return dE[np.abs(ys - y).argmin(), np.abs(xs - x).argmin()]

    assert at(-0.5, 0.0) < 0 < at(0.5, 0.0)
    _, _, E2 = L.energy_grid(model, 41)
    assert np.allclose(E, E2, atol=1e-5)
    # ΔE is the first-order change of E under θ ← θ − η∇L: compare with a real small step
    eta = 1e-4
    loss = ebm_play.training.cd_loss(model(data), model(negatives), 0.0)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            p -= eta * g
    _, _, E3 = L.energy_grid(model, 41)
    assert np.allclose((E3 - E) / eta, dE, rtol=0.05, atol=0.05 * np.abs(dE).max())


def test_modes_occupancy_and_hops():
    modes = L.Modes.from_centres([[-0.5, 0.0], [0.5, 0.0]], radius=0.2)
    assert modes.k == 2
    left, right, nowhere = [-0.5, 0.0], [0.5, 0.05], [0.0, 0.9]
    x = torch.tensor([left, left, right, nowhere])
    assert modes.assign(x).tolist() == [0, 0, 1, -1]
    assert modes.occupancy(x).tolist() == pytest.approx([0.5, 0.25, 0.25])
    # chain 0 stays, chain 1 hops at step 2 (through the gap, which is not a hop) and back at 3
    traj = [torch.tensor([left, left]), torch.tensor([left, nowhere]), torch.tensor([left, right]),
            torch.tensor([left, left])]
    s = L.hop_statistics(traj, modes)
    assert s["chains_hopped"] == 0.5 and s["hops_per_chain"] == 1.0 and s["mean_first_hop"] == 2
    assert s["modes_reached"] == 2 and s["mode_share"] == [1.0, 0.0] and s["modes_visited"] == 1.5


def test_cluster_labels_find_hand_drawn_modes():
    g = torch.Generator().manual_seed(0)
    a = torch.tensor([[-0.6, 0.6]]) + 0.02 * torch.randn(30, 2, generator=g)
    b = torch.tensor([[0.5, -0.4]]) + 0.02 * torch.randn(20, 2, generator=g)
    labels = L.cluster_labels(torch.cat([a, b]))
    assert labels[:30].unique().tolist() == [0] and labels[30:].unique().tolist() == [1]  # largest first
    modes = L.modes_for("custom", data=torch.cat([a, b]))
    assert modes.k == 2


def test_mala_visits_both_wells_with_annealing_only():
    """From the left well, plain MALA at T = 1 stays stuck; annealed MALA (T 20 → 1) fills both."""
    dw = L.hand_made("double_well")
    modes = L.modes_for("double_well", dw)
    x0 = modes.anchors[0] + 0.02 * torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    shares = {}
    with job_threads(1):
        for name, opts in (("mala", {}), ("annealed", dict(base="mala", t_start=20.0, t_end=1.0))):
            tracker = L.ModeTracker(modes, 300)

            def track(rec, tracker=tracker):
                tracker.update(rec.x, rec.step)

            res = ebm_play.samplers.run(name, dw, x0, 600, seed=1, step_size=0.005, bounds=L.BOUNDS, callback=track,
                                        **opts)
            shares[name] = (modes.occupancy(res.x), tracker.summary(), res.accept_rate)
    stuck, mixed = shares["mala"], shares["annealed"]
    assert stuck[0][1] < 0.05 and stuck[1]["chains_hopped"] < 0.1  # the right well is barely reached
    assert mixed[0][0] > 0.25 and mixed[0][1] > 0.25  # both wells, roughly evenly
    assert mixed[1]["chains_hopped"] > 0.5 and mixed[2] > 0.8


def test_mlp_energy_is_lower_at_both_means_than_between():
    """Two Gaussians at (±0.5, 0): the trained MLP energy has both means below the midpoint."""
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[-0.5, 0.0], [0.5, 0.0]])
    data = means[torch.randint(2, (1000,), generator=g)] + 0.08 * torch.randn(1000, 2, generator=g)
    with job_threads(1):
        trainer = ebm_play.Trainer(L.train_config(seed=0), data)
        for _ in range(400):
            m = trainer.step()
    assert math.isfinite(m["loss"]) and not trainer.state.events
    with torch.no_grad():
        e = trainer.model(torch.tensor([[-0.5, 0.0], [0.5, 0.0], [0.0, 0.0]]))
    assert e[0] < e[2] - 0.5 and e[1] < e[2] - 0.5
    occupancy = L.Modes.from_centres(means, radius=0.25).occupancy(trainer.buffer.x)
    assert occupancy[0] > 0.3 and occupancy[1] > 0.3  # the replay buffer holds both modes


@pytest.mark.slow
def test_two_moons_fit_within_the_budget():
    """The Landscape tab's default settings fit two moons recognisably well inside 30 s on one
    thread: ≥ 90% of buffer particles on the moons (uniform noise: ~46%), ≥ 95% of the data covered."""
    data, labels = L.make_dataset("two_moons", 2000, seed=0)
    t0 = time.perf_counter()
    with job_threads(1):
        trainer = ebm_play.Trainer(L.train_config(), data)
        fit = {}
        while trainer.state.step < 1200:
            for _ in range(50):
                trainer.step()
            fit = L.fit_quality(trainer.buffer.x[:1000], data)
            if fit["precision"] >= 0.9 and fit["coverage"] >= 0.95:
                break
    seconds = time.perf_counter() - t0
    print(f"two moons: fit {fit} after {trainer.state.step} steps, {seconds:.1f} s")
    assert fit["precision"] >= 0.9 and fit["coverage"] >= 0.95, fit
    assert trainer.state.step <= 600  # ~5 s at ~80 steps/s on one idle thread
    occupancy = L.modes_for("two_moons", data=data, labels=labels).occupancy(trainer.buffer.x)
    assert min(occupancy[:2]) > 0.35  # both moons, not one
    assert seconds < 45  # generous: the target is < 30 s on an idle 2-core machine


def test_named_landscapes_cached_data_sets_and_clicked_points():
    assert L.dataset("spiral")[0] is L.dataset("spiral")[0]  # made once per process
    assert torch.equal(L.dataset("rings")[0], L.make_dataset("rings", 2000, seed=0)[0])
    up, right = L.landscape("half_plane_up"), L.landscape("half_plane_right")
    p = torch.tensor([[0.0, 0.5], [0.5, 0.0]])
    assert up(p)[0] < up(p)[1] and right(p)[1] < right(p)[0]  # low on the side the name says
    with pytest.raises(EBMError, match="unknown landscape"):
        L.landscape("volcano")
    pts = L.points_around(0.99, -0.2, 10, seed=1)
    assert pts.shape == (10, 2) and pts.abs().max() <= 0.98 and torch.equal(pts, L.points_around(0.99, -0.2, 10, 1))
    assert L.points_around(0.3, 0.4, 1).tolist() == [[pytest.approx(0.3), pytest.approx(0.4)]]
    with pytest.raises(EBMError, match="finite"):
        L.points_around(float("nan"), 0.0, 3)


def test_modes_of_a_composition_and_the_starting_points():
    well = L.landscape("double_well")
    composed = ebm_play.compose((L.landscape("ring"), 1.0), (L.landscape("gmm"), -1.0), (well, 0.5))
    assert L.modes_of(composed).k == 2  # the first positively weighted term with modes: the double well
    assert L.modes_of(L.landscape("ring")) is None and L.modes_of(L.landscape("gmm")).k == 8
    modes = L.modes_of(well)
    x = L.start_points("first_mode", modes, 200, seed=0)
    assert (modes.assign(x) == 0).all() and torch.equal(x, L.start_points("first_mode", modes, 200, seed=0))
    u = L.start_points("uniform", None, 2000, seed=0)
    assert u.abs().max() <= 1 and abs(float(u.mean())) < 0.05  # mean of 4,000 U(−1, 1): σ = 0.013, 4σ ≈ 0.05
    assert L.start_points("first_mode", None, 10).abs().max() < 0.1  # no modes: the centre


def test_force_grids_from_several_threads_at_once():
    """Forward-mode AD state is process-wide: two runs publishing forces at once must not break each
    other (without the lock, 4 threads × 10 grids failed ~2 times in 3)."""
    import threading

    errors = []

    def publish(seed):
        g = torch.Generator().manual_seed(seed)
        model, data = ebm_play.MLPEnergy(32), torch.rand(64, 2, generator=g) * 2 - 1
        for _ in range(10):
            try:
                L.cd_force_grid(model, data, data.flip(0), 0.1, 20)
            except RuntimeError as e:
                errors.append(e)

    with job_threads(1):
        threads = [threading.Thread(target=publish, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]


# --- objectives in the plane: score fields, mode shares, side by side, closed-form energies ---------
def test_score_field_is_the_slope_the_samplers_follow():
    """For the exact 8-Gaussian energy the field is −∇E, pointing into the nearest mode near each one;
    for a dsm model a noise level can be named."""
    gmm = L.hand_made("gmm", std=0.1)
    xs, ys, U, V = L.score_field(gmm, 21)
    assert U.shape == V.shape == (21, 21)
    pts = torch.tensor([[xs[15], ys[10]]])  # (0.5, 0): the mode at (0.7, 0) is to the right
    pts.requires_grad_(True)
    (g,) = torch.autograd.grad(gmm(pts).sum(), pts)
    assert U[10, 15] == pytest.approx(-g[0, 0].item(), rel=1e-4) and V[10, 15] == pytest.approx(-g[0, 1].item(), abs=1e-4)
    assert U[10, 15] > 0
    model = ebm_play.NoiseMLPEnergy(hidden=8, levels=3)
    *_, U1, _ = L.score_field(model, 5, sigma=1.0)
    *_, U2, _ = L.score_field(model, 5)
    assert not np.allclose(U1, U2)
    with pytest.raises(EBMError, match="dsm"):
        L.score_field(gmm, 5, sigma=0.1)


def test_mode_share_error_compares_mode_weights():
    modes = L.Modes.from_centres([[-0.5, 0.0], [0.5, 0.0]], radius=0.2)
    data = torch.tensor([[-0.5, 0.0]] * 50 + [[0.5, 0.0]] * 50)
    samples = torch.tensor([[-0.5, 0.0]] * 60 + [[0.5, 0.0]] * 20 + [[0.0, 0.9]] * 20)
    r = L.mode_share_error(samples, modes, data)
    assert r["samples"] == [0.6, 0.2, 0.2] and r["weights"] == [0.75, 0.25] and r["data_weights"] == [0.5, 0.5]
    assert r["max_error"] == 0.25 and r["outside"] == 0.2 and r["tv"] == pytest.approx(0.3)


def test_side_by_side_trains_each_objective_on_the_same_data_and_seed():
    data, labels = L.make_dataset("gaussians8", 500, seed=0)
    with job_threads(1):
        sbs = L.SideBySide(data, ("cd", "dsm", "nce"), seed=3, hidden=16)
        rows = sbs.step(3)
        samples = sbs.samples(50, seed=0, steps=20)
    assert set(rows) == {"cd", "dsm", "nce"} and all(r["step"] == 3 for r in rows.values())
    assert [tr.config.seed for tr in sbs.trainers.values()] == [3, 3, 3]
    assert sbs.trainers["dsm"].buffer is None and sbs.trainers["cd"].buffer is not None
    assert all(x.shape == (50, 2) and x.abs().max() <= 1 for x in samples.values())
    report = sbs.mode_report(L.modes_for("gaussians8", data=data, labels=labels), samples)
    assert set(report) == {"cd", "dsm", "nce"} and len(report["dsm"]["weights"]) == 8
    with pytest.raises(EBMError):
        L.SideBySide(data, ("cd", "cd"))


def _gaussian_data(n=4000):
    g = torch.Generator().manual_seed(0)
    mu, cov = torch.tensor([0.1, -0.2]), torch.tensor([[0.04, 0.012], [0.012, 0.02]])
    return mu + torch.randn(n, 2, generator=g) @ torch.linalg.cholesky(cov).T, cov


def _mean_hessian(energy, points):
    return torch.stack([torch.func.hessian(lambda v: energy(v[None])[0])(p) for p in points]).mean(0)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["dsm", "nce"])
def test_learned_energy_of_a_gaussian_has_the_closed_form_hessian(objective):
    """Data N(μ, Σ) in the plane. The optimal dsm energy at σ_min is that of N(μ, Σ + σ_min²I), the
    optimal nce energy (with log Z) that of N(μ, Σ) itself: quadratic, with Hessian (Σ + s²I)⁻¹. The
    learned energy's Hessian, averaged over 200 data points, matches it within 11% (Frobenius):
    five standard errors of the precision estimated from N = 4000 points (relative √(2/N) = 2.2%
    per entry), which the optimisation's own error must fit into (measured: dsm 3.0%, nce 1.6%).
    For nce the learned log Z also normalises: ∫exp(−E − log Z) over the square is 1 within
    exp(±0.09), five standard errors of log Z (about √((1 + 1/ν)/N) = 0.018)."""
    data, cov = _gaussian_data()
    with job_threads(1):
        tr = ebm_play.Trainer(L.train_config(objective=objective, lr_step_every=500, lr_gamma=0.5), data)
        for _ in range(2000):
            tr.step()
    model = tr.model.eval()
    s2 = tr.config.sigma_min ** 2 if objective == "dsm" else 0.0
    expected = torch.linalg.inv(cov + s2 * torch.eye(2))
    learned = _mean_hessian(model, data[:200])
    assert (learned - expected).norm() / expected.norm() < 0.11, (learned, expected)
    if objective == "nce":
        xs, _, E = L.energy_grid(model, 200)
        mass = np.exp(-E - tr.metadata()["log_z"]).sum() * (xs[1] - xs[0]) ** 2
        assert math.exp(-0.09) < mass < math.exp(0.09), mass
