import math

import pytest
import torch

import ebm_play
from ebm_play.errors import EBMError
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


def test_same_seed_same_run(digits):
    a, b = (ebm_play.Trainer(small(), digits.x, digits.y) for _ in range(2))
    for _ in range(3):
        ma, mb = a.step(), b.step()
    assert ma["loss"] == mb["loss"]


@pytest.mark.parametrize("bad", [dict(lr=-1), dict(batch_size=0), dict(reinit=2), dict(model="gan"),
                                 dict(classes=[11]), dict(noise=float("nan")), dict(step_size=float("inf"))])
def test_bad_training_options_are_user_errors(bad):
    with pytest.raises(EBMError):
        small(**bad)


def test_live_runs_take_new_settings_and_data(digits):
    tr = ebm_play.Trainer(small(), digits.x[:500], digits.y[:500])
    tr.step()
    assert tr.update_config(lr=5e-4, reinit=0.5, sampler_steps=3) == ["lr", "reinit", "sampler_steps"]
    assert tr.optimizer.param_groups[0]["lr"] == 5e-4 and tr.buffer.reinit == 0.5
    with pytest.raises(EBMError, match="width cannot change"):
        tr.update_config(width=32)
    with pytest.raises(EBMError, match="lr"):
        tr.update_config(lr=-1)
    tr.set_data(digits.x[:40])
    assert tr.step()["step"] == 2 and len(tr.data) == 40


def test_fresh_chains_step_by_step_end_at_fresh_samples(digits):
    tr = ebm_play.Trainer(small(), digits.x, digits.y)
    tr.step()
    chain = list(tr.fresh_chains(6, steps=5, seed=3))
    assert len(chain) == 6 and tr.model.training  # one state per update and the final one; the mode comes back
    assert torch.equal(chain[-1], tr.fresh_samples(6, steps=5, seed=3))
    assert not torch.equal(chain[0], chain[-1])
