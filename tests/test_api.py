import pytest
import torch

import ebm_play
from ebm_play.errors import EBMError


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ebm_play.CNNEnergy(width=4)


def test_sample_starts_from_noise_and_is_reproducible(model):
    a = ebm_play.sample(model, n=5, steps=10, seed=1)
    b = ebm_play.sample(model, n=5, steps=10, seed=1)
    c = ebm_play.sample(model, n=5, steps=10, seed=2)
    assert a.shape == (5, 1, 28, 28) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sample_chains_records_every_step_and_streams(model):
    seen = []
    res = ebm_play.sample_chains(model, 3, 8, "ula", seed=0, keep_frames=4, callback=lambda s: seen.append(s.step),
                                 step_size=1e-3, temperature=1e-3)
    assert seen == list(range(9)) and res.energies.shape == (9, 3) and len(res.frames) == 3
    assert torch.allclose(res.energy, ebm_play.score(model, res.x), atol=1e-5)


def test_model_recommended_settings_are_used(model, tmp_path):
    path = ebm_play.save_model(model, tmp_path / "m.safetensors", info={"samplers": {"langevin": {"steps": 3, "noise": 0.0}}})
    m = ebm_play.load_model(path)
    res = ebm_play.sample_chains(m, 2, seed=0)
    assert res.steps[-1] == 3


def test_inpaint_keeps_the_observed_pixels_exactly(model):
    digit = ebm_play.sample_digits(False).x[:1]
    keep = torch.zeros(1, 1, 28, 28)
    keep[..., :, :14] = 1
    res = ebm_play.inpaint(model, digit, keep, n=3, steps=10, seed=0)
    assert torch.equal(res.x[..., :14], digit[..., :14].expand(3, 1, 28, 14))
    assert not torch.equal(res.x[0, ..., 14:], res.x[1, ..., 14:])
    with pytest.raises(EBMError, match="keeps every pixel"):
        ebm_play.inpaint(model, digit, torch.ones(1, 1, 28, 28))


def test_denoise_with_a_strong_data_term_stays_near_the_input(model):
    noisy = (ebm_play.sample_digits(False).x[:4] + 0.3 * torch.randn(4, 1, 28, 28)).clamp(-1, 1)
    far = ebm_play.denoise(model, noisy, data_weight=0.0, steps=30, seed=0, sampler="mala", step_size=1e-3).x
    near = ebm_play.denoise(model, noisy, data_weight=1e4, steps=30, seed=0, sampler="mala", step_size=1e-3).x
    assert (near - noisy).norm() < (far - noisy).norm()


@pytest.mark.parametrize("kwargs,msg", [
    (dict(n=0), "n must be"), (dict(steps=-1), "steps must be"), (dict(steps=1e9), "steps must be"),
    (dict(sampler="magic"), "unknown sampler"), (dict(x0=torch.zeros(2, 28)), "shape"),
    (dict(x0=torch.full((1, 1, 28, 28), 3.0)), r"\[−1, 1\]"), (dict(mask=torch.ones(3, 3)), "mask"),
    (dict(n=2.5), "whole number"),
])
def test_bad_arguments_are_user_errors(model, kwargs, msg):
    with pytest.raises(EBMError, match=msg):
        ebm_play.sample(model, **{"n": 2, "steps": 2, **kwargs})


def test_a_dsm_file_brings_its_own_sampler_to_sample_inpaint_denoise_and_compose(tmp_path):
    """Without a sampler named, a file that names one (info["sampler"]: ladder for dsm) gets it;
    older files keep langevin. Compositions that contain a dsm model walk its noise ladder."""
    digits = ebm_play.sample_digits(train=True).x
    tr = ebm_play.Trainer(ebm_play.TrainConfig(objective="dsm", width=4, sigma_levels=3, fresh_steps=6), digits[:200])
    m = ebm_play.load_model(ebm_play.save_model(tr.model, tmp_path / "d.safetensors", tr.metadata()))
    assert ebm_play.default_sampler(m) == "ladder"
    res = ebm_play.sample_chains(m, 2, seed=0)
    assert res.steps[-1] == 6 and res.x.abs().max() <= 1
    keep = torch.zeros(1, 1, 28, 28)
    keep[..., :14, :] = 1
    fills = ebm_play.inpaint(m, digits[:1], keep, n=2, steps=6, seed=0).x
    assert torch.equal(fills[:, :, :14], digits[:1, :, :14].expand(2, -1, -1, -1))
    assert ebm_play.denoise(m, digits[:2], 1.0, steps=6, sigma_max=0.2, seed=0).x.shape == (2, 1, 28, 28)
    both = ebm_play.compose((m, 1.0), (ebm_play.InkEnergy(), 1.0))
    assert ebm_play.sample(both, 2, 6, "ladder", seed=0).shape == (2, 1, 28, 28)
    assert ebm_play.default_sampler(ebm_play.CNNEnergy(width=4)) == "langevin"
    with pytest.raises(EBMError, match="noise-conditional"):
        ebm_play.sample(ebm_play.CNNEnergy(width=4), 2, 4, "ladder")
