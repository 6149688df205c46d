import math

import pytest
import torch

import ebm_play
from ebm_play.errors import EBMError
from ebm_play.metrics import auroc
from ebm_play.runtime import make_generator
from ebm_play.training import ReplayBuffer, cd_loss


@pytest.fixture(scope="module")
def digits():
    return ebm_play.sample_digits(train=True)


def small(**kw):
    base = dict(width=8, batch_size=32, sampler_steps=10, buffer_size=256, lr=1e-3, seed=0)
    return ebm_play.TrainConfig(**{**base, **kw})


def gap_to_noise(model, x):
    noise = torch.rand(len(x), 1, 28, 28) * 2 - 1
    return (ebm_play.score(model, noise) - ebm_play.score(model, x)).mean().item()


def test_cd_loss_is_the_reference_formula():
    r, f = torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.0])
    assert cd_loss(r, f, 0.1).item() == pytest.approx(0.0 - 1.0 + 0.1 * (1.0 + 2.0))


def test_training_lowers_data_energy_relative_to_noise(digits):
    tr = ebm_play.Trainer(small(), digits.x, digits.y)
    held_out = digits.x[-200:]
    before = gap_to_noise(tr.model, held_out)
    for _ in range(30):
        m = tr.step()
    after = gap_to_noise(tr.model, held_out)
    assert after > before + 0.5, (before, after)
    assert set(m) >= {"loss", "e_real", "e_fake", "gap", "grad_norm", "steps_per_s", "rolled_back", "sampler_e_start",
                      "sampler_e_end"}
    assert m["sampler_e_end"] < m["sampler_e_start"]  # the chains went downhill in energy
    assert tr.state.step == 30 and len(tr.state.history) == 30


def test_jem_learns_to_classify(digits):
    tr = ebm_play.Trainer(small(model="jem", sampler_steps=5, jem_gen_weight=0.1), digits.x, digits.y)
    accs = [tr.step()["accuracy"] for _ in range(40)]
    assert sum(accs[-5:]) / 5 > 0.3  # chance is 0.1


def test_rbm_cd_lowers_free_energy_of_data(digits):
    for persistent in (True, False):
        tr = ebm_play.Trainer(small(model="rbm", hidden=32, lr=1e-2, persistent=persistent), digits.x, digits.y)
        before = gap_to_noise(tr.model, digits.x[-200:])
        for _ in range(30):
            tr.step()
        assert gap_to_noise(tr.model, digits.x[-200:]) > before + 10


def test_injected_nan_rolls_back_and_training_goes_on(digits):
    tr = ebm_play.Trainer(small(checkpoint_every=2), digits.x, digits.y)
    for _ in range(4):
        tr.step()
    good = {k: v.clone() for k, v in tr.model.state_dict().items()}
    with torch.no_grad():
        tr.model.head.weight[0, 0] = float("nan")
    m = tr.step()
    assert m["rolled_back"] and "non-finite" in m["event"]
    assert tr.state.events and tr.state.events[0].kind == "rollback"
    assert m["lr"] == pytest.approx(0.5e-3)
    assert all(torch.equal(v, good[k]) for k, v in tr.model.state_dict().items())
    m = tr.step()
    assert not m["rolled_back"] and math.isfinite(m["loss"])


def test_slow_runaway_rolls_back_to_the_healthy_anchor_with_its_buffer(digits):
    """A loose bound first lets anchors form; then, with one sampler step, the fakes stay noise,
    the energy learns data-versus-noise and the mean gap E(fake) − E(real) climbs past a tight
    bound within a few updates, again after every rollback (a few sampler steps do not cure it)."""
    def state():  # weights, buffer and Adam's first moments
        moments = [v["exp_avg"].clone() for v in tr.optimizer.state_dict()["state"].values()]
        return [v.clone() for v in tr.model.state_dict().values()] + [tr.buffer.x.clone()] + moments

    tr = ebm_play.Trainer(small(drift_window=5, drift_bound=10.0), digits.x, digits.y)
    states = {}
    for _ in range(15):
        tr.step()
        states[tr.state.step] = state()
    tr.update_config(drift_bound=0.5, sampler_steps=1)
    events = []
    for _ in range(20):
        m = tr.step()
        if m["rolled_back"]:
            events.append(m)
            assert tr._anchor["step"] == 10  # healthy window 11–15 came after it; none since
            assert all(torch.equal(a, b) for a, b in zip(state(), states[10], strict=True))  # the anchor, unchanged
        else:
            states[tr.state.step] = state()
    assert len(events) >= 2 and all("drifting above the data" in m["event"] for m in events)
    assert "sampler steps now 2" in events[0]["event"] and "sampler steps now 4" in events[1]["event"]
    assert all(m["lr"] == 1e-3 for m in events)  # the rate stays: it only delays a runaway

    tr.update_config(sampler_steps=0)  # nothing to double: the rate halves instead
    m = next(m for m in (tr.step() for _ in range(30)) if m["rolled_back"])
    assert m["lr"] == pytest.approx(0.5e-3) and "lr now 0.0005" in m["event"]


def test_healthy_runs_move_their_anchor_and_can_turn_the_check_off(digits):
    tr = ebm_play.Trainer(small(drift_window=4, drift_bound=10.0), digits.x, digits.y)
    ms = [tr.step() for _ in range(16)]
    # healthy windows end at 8, 12 and 16; each snapshot becomes the anchor one healthy window later
    assert not any(m["rolled_back"] for m in ms) and (tr._anchor["step"], tr._candidate["step"]) == (12, 16)
    assert tr.update_config(drift_bound=None) == ["drift_bound"] and tr._anchor is None
    tr.step()
    tr.update_config(drift_bound=10.0)
    assert tr._anchor["step"] == 17 and "buffer" in tr._anchor
    assert ebm_play.Trainer(small(model="rbm", hidden=16), digits.x, digits.y)._anchor is None


def test_a_resumed_run_skips_its_first_drift_window(digits):
    """A resumed run starts from a fresh noise buffer, far above the data: not yet a runaway."""
    first = ebm_play.Trainer(small(sampler_steps=0, drift_bound=None), digits.x, digits.y)
    for _ in range(20):
        gap = first.step()["gap"]
    assert gap > 1  # the model tells noise from digits
    tr = ebm_play.Trainer(small(sampler_steps=0, drift_window=5), digits.x, digits.y, model=first.model,
                          start_step=20)  # as the CLI resumes
    ms = [tr.step() for _ in range(10)]
    assert [m["rolled_back"] for m in ms[:5]] == [False] * 5 and any(m["rolled_back"] for m in ms)
    assert "healthy checkpoint of update 20" in next(m["event"] for m in ms if m["rolled_back"])


def test_energy_blow_up_is_divergence(digits):
    tr = ebm_play.Trainer(small(energy_bound=1.0), digits.x, digits.y)
    with torch.no_grad():
        tr.model.head.bias.fill_(50.0)
    assert tr.step()["rolled_back"]


def test_class_subset(digits):
    tr = ebm_play.Trainer(small(classes=[3, 8]), digits.x, digits.y)
    assert set(tr.labels.unique().tolist()) == {3, 8}


def test_buffer_reinitialises_the_requested_fraction():
    g = ebm_play.runtime.make_generator(0, torch.device("cpu"))
    buf = ReplayBuffer(1000, 0.05, torch.device("cpu"), g)
    buf.x.fill_(0.5)
    _, x = buf.sample(10000)
    fresh = (x != 0.5).flatten(1).any(1).float().mean().item()
    assert abs(fresh - 0.05) < 5 * math.sqrt(0.05 * 0.95 / 10000)


def test_dimmed_restarts_begin_at_every_ink_level():
    """Uniform noise has ink (mean pixel in [0, 1]) 0.5 in every image, spread √(1/12/784) = 0.0103
    across images; dimmed noise s·u with s ~ U(0, 1) has ink s/2: mean 0.25, spread 0.5/√12 = 0.144.
    A dimmed share d mixes the two: mean 0.5 − d/4."""
    n = 4000
    for dimmed in (0.0, 0.3, 1.0):
        g = ebm_play.runtime.make_generator(0, torch.device("cpu"))
        ink = ReplayBuffer(n, 0.05, torch.device("cpu"), g, dimmed=dimmed).x.add(1).div(2).flatten(1).mean(1)
        sd = math.sqrt(1 / 12 / 784)
        dim = ink < 0.5 - 6 * sd  # 6σ below the undimmed level: dimmed by s < 1 − 12σ
        assert abs(dim.float().mean().item() - dimmed * (1 - 12 * sd)) < 5 * math.sqrt(0.25 / n)
        assert abs(ink.mean().item() - (0.5 - dimmed / 4)) < 5 * 0.3 / math.sqrt(n)
    assert (ink < 0.01).sum() > 40  # all dimmed: s < 0.02 for 2% of restarts, near-blank images


def test_a_resumed_run_fills_its_buffer_as_its_step_says(digits):
    """The first fill of a resumed run is dimmed when the run is past ``dimmed_from``, like every later restart."""
    def ink(trainer):
        return trainer.buffer.x.add(1).div(2).flatten(1).mean(1).mean().item()

    config = small(dimmed=1.0, dimmed_from=10)
    fresh = ink(ebm_play.Trainer(config, digits.x, digits.y))
    resumed = ink(ebm_play.Trainer(config, digits.x, digits.y, start_step=10))
    assert fresh == pytest.approx(0.5, abs=0.01) and resumed == pytest.approx(0.25, abs=0.05)  # s·u: mean s/2


def test_same_seed_same_run(digits):
    a, b = (ebm_play.Trainer(small(), digits.x, digits.y) for _ in range(2))
    for _ in range(3):
        ma, mb = a.step(), b.step()
    assert ma["loss"] == mb["loss"]


@pytest.mark.parametrize("bad", [dict(lr=-1), dict(batch_size=0), dict(reinit=2), dict(model="gan"),
                                 dict(classes=[11]), dict(noise=float("nan")), dict(step_size=float("inf")),
                                 dict(drift_bound=-1), dict(drift_window=0), dict(dimmed=1.5), dict(dimmed_from=-1),
                                 dict(model="rbm", dimmed=0.5),
                                 dict(mirrored=1.5), dict(model="rbm", mirrored=0.5),
                                 dict(augment=-0.1), dict(model="rbm", augment=0.5)])
def test_bad_training_options_are_user_errors(bad):
    with pytest.raises(EBMError):
        small(**bad)


def test_live_runs_take_new_settings_and_data(digits):
    tr = ebm_play.Trainer(small(), digits.x[:500], digits.y[:500])
    tr.step()
    assert tr.update_config(lr=5e-4, reinit=0.5, sampler_steps=3) == ["lr", "reinit", "sampler_steps"]
    assert tr.optimizer.param_groups[0]["lr"] == 5e-4 and tr.buffer.reinit == 0.5
    assert tr.update_config(dimmed=0.5, dimmed_from=3) == ["dimmed", "dimmed_from"]
    assert tr.step()["step"] == 2 and tr.buffer.dimmed == 0.0
    assert tr.step()["step"] == 3 and tr.buffer.dimmed == 0.0
    tr.step()
    assert tr.buffer.dimmed == 0.5
    with pytest.raises(EBMError, match="width cannot change"):
        tr.update_config(width=32)
    with pytest.raises(EBMError, match="lr"):
        tr.update_config(lr=-1)
    tr.set_data(digits.x[:40])
    assert tr.step()["step"] == 5 and len(tr.data) == 40


def test_fresh_chains_step_by_step_end_at_fresh_samples(digits):
    tr = ebm_play.Trainer(small(), digits.x, digits.y)
    tr.step()
    chain = list(tr.fresh_chains(6, steps=5, seed=3))
    assert len(chain) == 6 and tr.model.training  # one state per update and the final one; the mode comes back
    assert torch.equal(chain[-1], tr.fresh_samples(6, steps=5, seed=3))
    assert not torch.equal(chain[0], chain[-1])


def test_mirrored_negatives_are_the_batch_asymmetric_digits_flipped(digits):
    tr = ebm_play.Trainer(small(mirrored=0.25), digits.x, digits.y)
    x, y = digits.x[:32], digits.y[:32]
    asym = x[torch.isin(y, torch.tensor([2, 3, 4, 5, 6, 7, 9]))]
    assert len(asym) >= 8
    assert torch.equal(tr._mirrored(x, y), asym[:8].flip(-1))  # 0.25 × 32
    assert "e_mirrored" in tr.step()
    with pytest.raises(EBMError, match="labels"):
        ebm_play.Trainer(small(mirrored=0.25), digits.x)
    with pytest.raises(EBMError, match="labels"):
        ebm_play.Trainer(small(), digits.x).update_config(mirrored=0.5)
    with pytest.raises(EBMError, match="labels"):
        tr.set_data(digits.x)


def test_mirrored_negatives_teach_the_energy_to_reject_mirror_images(digits):
    """After 60 updates, held-out mirrored digits are told from the real ones far better with the
    negatives than without (AUROC 0.75 against 0.59 for seed 0). With about 340 images on each side
    one AUROC has a standard error near 0.02, so 0.08 is about three standard errors of the difference."""
    train_x, train_y = digits.x[:-500], digits.y[:-500]
    held = digits.x[-500:][torch.isin(digits.y[-500:], torch.tensor([2, 3, 4, 5, 6, 7, 9]))]
    separation = []
    for mirrored in (0.0, 1.0):
        tr = ebm_play.Trainer(small(mirrored=mirrored), train_x, train_y)
        for _ in range(60):
            tr.step()
        separation.append(auroc(ebm_play.score(tr.model, held), ebm_play.score(tr.model, held.flip(-1))))
    assert separation[1] > separation[0] + 0.08, separation


def test_augmented_digits_stay_readable_digits(digits):
    """Half the batch deformed, the rest untouched; the evaluation classifier still reads the
    deformed digits (it reads 98% of the originals in this sample)."""
    tr = ebm_play.Trainer(small(augment=0.5), digits.x, digits.y)
    x, y = digits.x[:256], digits.y[:256]
    a = tr._augmented(x)
    assert torch.equal(a[128:], x[128:]) and a.shape == x.shape
    assert (a[:128] != x[:128]).flatten(1).any(1).all()
    assert a.min() >= -1 and torch.allclose(a[:128].amax((1, 2, 3)), torch.ones(128))
    with torch.no_grad():
        read = (ebm_play.load_model("mnist-classifier")(a[:128]).argmax(1) == y[:128]).float().mean()
    assert read >= 0.9, read
    assert torch.isfinite(torch.tensor(tr.step()["loss"]))


def test_an_interrupted_update_changes_nothing(digits):
    """A stop or pause asked for mid-update drops the update whole: weights, optimiser, buffer and step stay."""
    calls = {"n": 0}

    def interrupt():
        calls["n"] += 1
        return calls["n"] > 5  # after five sampler steps of the first update

    tr = ebm_play.Trainer(ebm_play.TrainConfig(batch_size=8, sampler_steps=20, buffer_size=64), digits.x[:64],
                          digits.y[:64], interrupt=interrupt)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    buffer = tr.buffer.x.clone()
    with pytest.raises(ebm_play.training.Interrupted):
        tr.step()
    assert calls["n"] <= 7  # checked between sampler steps, not only at the end
    assert tr.state.step == 0 and torch.equal(tr.buffer.x, buffer)
    assert all(torch.equal(v, before[k]) for k, v in tr.model.state_dict().items())
    tr.interrupt = None
    assert tr.step()["step"] == 1


# --- the other objectives: denoising score matching and noise-contrastive estimation -------------
def test_dsm_trains_without_mcmc_or_buffer_and_records_its_ladder(digits):
    tr = ebm_play.Trainer(small(objective="dsm", sigma_levels=4, lr=2e-3), digits.x, digits.y)
    assert tr.buffer is None and tr.model.kind == "cnn-noise"
    g = torch.Generator().manual_seed(1)
    held, z = digits.x[-256:], torch.randn(256, 1, 28, 28, generator=g)
    sigma = tr.config.noise_ladder()[torch.arange(256) % 4]

    def held_out_loss():  # the same images, levels and noise before and after
        return ebm_play.objectives.dsm_loss(tr.model, held, sigma, z).mean().item()

    before = held_out_loss()
    rows = [tr.step() for _ in range(30)]
    last = rows[-1]
    assert {f"dsm_loss_{i}" for i in range(4)} <= set(last) and "gap" not in last
    assert held_out_loss() < before - 0.001  # the histogram baseline alone: 0.100; 30 updates: 0.097
    assert set(tr.metric_names()) >= {"loss", "dsm_loss_3"}
    info = tr.metadata()
    assert info["objective"] == "dsm" and info["sampler"] == "ladder" and len(info["noise_ladder"]) == 4
    assert info["samplers"] == {"ladder": {"steps": 400, "step_size": 2e-5}}
    x = tr.fresh_samples(3, steps=8)
    assert x.shape == (3, 1, 28, 28) and x.abs().max() <= 1
    assert len(list(tr.fresh_chains(3, steps=8))) == 9


def test_dsm_model_is_an_ordinary_energy_at_its_smallest_noise(digits):
    tr = ebm_play.Trainer(small(objective="dsm", sigma_levels=3), digits.x, digits.y)
    m = tr.model.eval()
    x = digits.x[:5]
    assert torch.allclose(m(x), m(x, 0.02)) and not torch.allclose(m(x), m(x, 1.0))
    e, g = m.energy_and_grad(x, 0.1)  # the written-out gradient equals autograd's
    xr = x.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(m(xr, 0.1).sum(), xr)
    assert torch.allclose(e, m(x, 0.1), atol=1e-4) and torch.allclose(g, ga, atol=1e-4, rtol=1e-3)
    pi = m.log_pi.exp()  # the baseline's pixel histograms were fitted to the data: corners black, centre inked
    assert pi[0, 0, 0, 0] > 0.99 and pi[0, 14, 14, -1] > 0.2 and torch.allclose(pi.sum(-1), torch.ones(1, 28, 28))


def test_nce_learns_to_tell_data_from_noise(digits):
    """Against uniform noise the classification is easy (and the density model poor): it is learnt
    within 40 updates. The default noise for digits is a Gaussian fitted to them; its first log Z
    centres the logits (log q of digits and of Gaussian noise differ by hundreds of nats)."""
    assert ebm_play.Trainer(small(objective="nce"), digits.x[:300]).noise.name == "gaussian"
    tr = ebm_play.Trainer(small(objective="nce", nce_ratio=2, nce_noise="uniform"), digits.x, digits.y)
    assert tr.buffer is None and tr.model.kind == "cnn"
    rows = [tr.step() for _ in range(40)]
    assert rows[-1]["nce_accuracy"] > 0.9 and rows[-1]["loss"] < rows[0]["loss"]
    assert rows[-1]["e_noise"] > rows[-1]["e_real"] + 1
    info = tr.metadata()
    assert info["objective"] == "nce" and info["sampler"] == "langevin" and info["log_z"] == rows[-1]["log_z"] != 0
    assert tr._view.log_z in [p for g in tr.optimizer.param_groups for p in g["params"]]


@pytest.mark.parametrize("objective", ["dsm", "nce"])
def test_non_finite_updates_roll_back_for_every_objective(digits, objective):
    tr = ebm_play.Trainer(small(objective=objective, checkpoint_every=1), digits.x[:200], digits.y[:200])
    tr.step()
    good = {k: v.clone() for k, v in tr._view.state_dict().items()}
    with torch.no_grad():
        next(tr.model.parameters()).fill_(float("nan"))
    m = tr.step()
    assert m["rolled_back"] and "non-finite" in m["event"] and m["lr"] == pytest.approx(5e-4)
    assert all(torch.equal(v, good[k]) for k, v in tr._view.state_dict().items())
    assert not tr.step()["rolled_back"]


@pytest.mark.parametrize("objective", ["dsm", "nce"])
def test_an_interrupted_update_of_any_objective_changes_nothing(digits, objective):
    tr = ebm_play.Trainer(small(objective=objective), digits.x[:64], digits.y[:64], interrupt=lambda: True)
    before = {k: v.clone() for k, v in tr._view.state_dict().items()}
    with pytest.raises(ebm_play.training.Interrupted):
        tr.step()
    assert tr.state.step == 0 and all(torch.equal(v, before[k]) for k, v in tr._view.state_dict().items())


@pytest.mark.parametrize("bad", [dict(objective="gan"), dict(objective="dsm", model="rbm"), dict(objective="nce", model="jem"),
                                 dict(objective="dsm", mirrored=0.5), dict(objective="nce", dimmed=0.1),
                                 dict(objective="dsm", sigma_min=2.0), dict(objective="dsm", sigma_levels=0),
                                 dict(objective="dsm", ladder_step=-1.0), dict(objective="nce", nce_ratio=0),
                                 dict(objective="nce", nce_noise="laplace")])
def test_bad_objective_settings_are_user_errors(bad):
    with pytest.raises(EBMError):
        small(**bad)


def test_the_objective_and_ladder_are_fixed_during_a_run(digits):
    tr = ebm_play.Trainer(small(objective="dsm"), digits.x[:100])
    with pytest.raises(EBMError, match="cannot change"):
        tr.update_config(sigma_min=0.05)
    with pytest.raises(EBMError, match="cannot change"):
        tr.update_config(objective="cd")
    assert tr.update_config(lr=1e-4, ladder_step=1e-4) == ["lr", "ladder_step"]
    assert tr.metadata()["samplers"]["ladder"]["step_size"] == 1e-4


def test_the_moving_average_of_the_weights_is_what_a_run_samples_and_rolls_back(digits):
    """ema = d: after each good update a ← d·a + (1 − d)·p, from the initial weights; the run samples
    with the average, and a rollback takes the average back to its checkpoint too."""
    tr = ebm_play.Trainer(small(objective="dsm", sigma_levels=3, ema=0.75, checkpoint_every=2), digits.x[:200],
                          digits.y[:200])
    expected = [p.detach().clone() for p in tr.model.parameters()]
    at_checkpoint = None
    for step in range(3):
        tr.step()
        expected = [0.75 * a + 0.25 * p.detach() for a, p in zip(expected, tr.model.parameters())]
        at_checkpoint = expected if step == 1 else at_checkpoint
    assert tr.shown_model is tr.ema is not tr.model
    assert all(torch.allclose(a, e, atol=1e-6) for a, e in zip(tr.ema.parameters(), expected))
    x = tr.fresh_samples(4, steps=3, seed=0)
    ladder = ebm_play.samplers.SAMPLERS["ladder"]
    options = {k: v for k, v in tr.config.fresh_sampler_options().items() if k != "steps"}
    g = make_generator(0, "cpu")
    x0 = torch.rand((4, 1, 28, 28), generator=g) * 2 - 1
    *_, last = ladder(tr.ema.eval(), x0, 3, generator=g, **options)
    assert torch.equal(x, last.x)
    with torch.no_grad():
        next(tr.model.parameters()).fill_(float("nan"))
    assert tr.step()["rolled_back"]  # to the checkpoint of update 2
    assert all(torch.allclose(a, e, atol=1e-6) for a, e in zip(tr.ema.parameters(), at_checkpoint))
    plain = ebm_play.Trainer(small(), digits.x[:64], digits.y[:64])
    assert plain.ema is None and plain.shown_model is plain.model
    with pytest.raises(EBMError, match=r"ema must be in \[0, 1\)"):
        small(ema=1.0)
