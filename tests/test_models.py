import inspect
import itertools
import math
import re

import pytest
import torch

import ebm_play
from ebm_play.composition import ClassEnergy, compose, ensemble
from ebm_play.errors import EBMError
from ebm_play.models import (
    CONFIG_BOUNDS,
    MODEL_KINDS,
    JEMEnsemble,
    _subpixel_input_grad,
    build_model,
    check_config,
    state_shapes,
)


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.rand(5, 1, 28, 28) * 2 - 1


@pytest.mark.parametrize("model", [ebm_play.CNNEnergy(width=4), ebm_play.CNNEnergy(width=4, spectral_norm=True),
                                   ebm_play.JEMEnergy(width=4), ebm_play.RBM(hidden=8)])
def test_every_model_maps_images_to_one_energy_each(model, x):
    e = model(x)
    assert e.shape == (5,) and torch.isfinite(e).all()


def test_cnn_is_the_reference_architecture_at_width_16():
    m = ebm_play.CNNEnergy()
    convs = [l for l in m.body if isinstance(l, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [
        (1, 16, 5, 2, 4), (16, 32, 3, 2, 1), (32, 64, 3, 2, 1), (64, 64, 3, 2, 1)]
    linears = [l for l in (*m.body, m.head) if isinstance(l, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(256, 64), (64, 1)]


def test_jem_energies_and_probabilities(x):
    m = ebm_play.JEMEnergy(width=4)
    f = m.logits(x)
    assert torch.allclose(m(x), -torch.logsumexp(f, 1))
    assert torch.allclose(m(x, 3), -f[:, 3])
    y = torch.tensor([0, 1, 2, 3, 4])
    assert torch.allclose(m(x, y), -f[torch.arange(5), y])
    p = m.classify(x)
    assert p.shape == (5, 10) and torch.allclose(p.sum(1), torch.ones(5))
    # p(y|x) = exp(−E(x, y)) / exp(−E(x))
    assert torch.allclose(p[:, 3], torch.exp(-m(x, 3) + m(x)), atol=1e-6)


def _ensemble(members: int = 3) -> JEMEnsemble:
    torch.manual_seed(1)
    m = JEMEnsemble(members, width=4)
    with torch.no_grad():
        m.shift.uniform_(-2, 2)
        m.scale.uniform_(0.5, 2)
    return m


def test_ensemble_averages_standardised_member_energies(x):
    m = _ensemble()
    z = [(j(x) - mu) / s for j, mu, s in zip(m.members, m.shift, m.scale)]
    assert torch.allclose(m(x), sum(z) / 3, atol=1e-6)
    # class energies are standardised the same way, and p(y|x) = exp(−E(x, y)) / Σ_y' exp(−E(x, y'))
    z3 = [(j(x, 3) - mu) / s for j, mu, s in zip(m.members, m.shift, m.scale)]
    assert torch.allclose(m(x, 3), sum(z3) / 3, atol=1e-6)
    every = torch.stack([m(x, y) for y in range(10)], 1)
    assert torch.allclose(m.classify(x), torch.softmax(-every, 1), atol=1e-6)
    assert m.has_classes and m.is_energy
    with pytest.raises(EBMError, match="members"):
        JEMEnsemble(0, width=4)


def test_ensemble_from_trained_jems_is_standardised_on_the_given_digits(x):
    torch.manual_seed(0)
    jems = [ebm_play.JEMEnergy(width=4).eval() for _ in range(2)]
    for j in jems:  # energies that vary by more than float32 rounding of their mean
        torch.nn.init.normal_(j.head.weight, std=3.0)
    digits = torch.rand(64, 1, 28, 28) * 2 - 1
    m = ensemble(jems, digits)
    for i, original in enumerate(jems):
        z = (original(digits) - m.shift[i]) / m.scale[i]
        assert torch.allclose(m.members[i](x), original(x))
        assert abs(z.mean().item()) < 1e-4 and abs(z.std().item() - 1) < 1e-4  # float32
    with pytest.raises(EBMError, match="JEM models"):
        ensemble([ebm_play.CNNEnergy(width=4)], digits)
    with pytest.raises(EBMError, match="same width"):
        ensemble([jems[0], ebm_play.JEMEnergy(width=8)], digits)


def test_rbm_free_energy_equals_brute_force_sum_over_hidden_states():
    torch.manual_seed(1)
    rbm = ebm_play.RBM(hidden=4, visible=6)
    with torch.no_grad():
        rbm.W.normal_(0, 1)
        rbm.b.normal_(0, 1)
        rbm.c.normal_(0, 1)
    v = torch.bernoulli(torch.full((7, 6), 0.5))
    hs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))
    joint = torch.stack([rbm.joint_energy(v, h.expand(7, 4)) for h in hs], 1)
    brute = -torch.logsumexp(-joint, 1)
    assert torch.allclose(rbm.free_energy(v), brute, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: ebm_play.CNNEnergy(width=4), lambda: _noise_cnn().at_noise(0.05),
                                  lambda: ebm_play.NoiseMLPEnergy(hidden=8).at_noise(0.1)])
def test_energy_gradient_matches_finite_differences(x, make):
    """Directional derivatives of the written-out gradients (the σ-conditioned models' baseline B
    included) against central differences, in float64."""
    torch.manual_seed(0)
    m = make().double()
    x = x.double() if "mlp" not in type(getattr(m, "model", m)).kind else x.double().flatten(1)[:, :2]
    e, g = m.energy_and_grad(x)
    d = torch.randn_like(x)
    h = 1e-6
    fd = (m(x + h * d) - m(x - h * d)) / (2 * h)
    assert torch.allclose((g * d).flatten(1).sum(1), fd.detach(), rtol=1e-5, atol=1e-7)


def _autograd_energy_and_grad(energy, x):
    x = x.detach().requires_grad_(True)
    e = energy(x)
    return e.detach(), torch.autograd.grad(e.sum(), x)[0]


@pytest.mark.parametrize("make", [
    lambda: ebm_play.CNNEnergy(width=4), lambda: ebm_play.CNNEnergy(width=4, spectral_norm=True),
    lambda: ebm_play.JEMEnergy(width=4), lambda: ClassEnergy(ebm_play.JEMEnergy(width=4), 3),
    lambda: _ensemble(), lambda: ClassEnergy(_ensemble(), 3),
    lambda: compose((ebm_play.CNNEnergy(width=4), 1.0), (ClassEnergy(ebm_play.JEMEnergy(width=4), 7), -0.5)),
    lambda: _noise_cnn(), lambda: _noise_cnn().at_noise(0.3),
    lambda: compose((_noise_cnn(), 1.0), (ebm_play.InkEnergy(), 2.0)).at_noise(0.1)])
def test_written_out_gradients_equal_autograd(make, x):
    torch.manual_seed(0)
    m = make().double().eval()  # in training mode spectral norm takes a power-iteration step per call
    x = x.double()
    e, g = m.energy_and_grad(x)
    e_ref, g_ref = _autograd_energy_and_grad(m, x)
    assert torch.allclose(e, e_ref, atol=1e-12) and torch.allclose(g, g_ref, rtol=1e-9, atol=1e-14)


def test_float32_fast_path_follows_weight_updates(x):
    """In float32 the convolutions use weights packed once for oneDNN; an in-place update (as an
    optimiser step makes) must repack them."""
    torch.manual_seed(0)
    m = ebm_play.CNNEnergy(width=8).eval()
    for _ in range(2):
        e, g = m.energy_and_grad(x)
        e_ref, g_ref = _autograd_energy_and_grad(m, x)
        assert torch.allclose(e, e_ref, rtol=1e-5, atol=1e-6) and torch.allclose(g, g_ref, rtol=1e-4, atol=1e-7)
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(1.5)


def test_jem_gradients_for_label_tensors(x):
    torch.manual_seed(0)
    m = ebm_play.JEMEnergy(width=4).double()
    x, y = x.double(), torch.tensor([0, 3, 9, 3, 1])
    e, g = m.energy_and_grad(x, y)
    e_ref, g_ref = _autograd_energy_and_grad(lambda v: m(v, y), x)
    assert torch.allclose(e, e_ref, atol=1e-12) and torch.allclose(g, g_ref, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("cin,k,p,size", [(c, k, p, s) for c in (1, 3) for k in (1, 2, 3, 4, 5, 7)
                                          for p in range(k) for s in (8, 28)])
def test_subpixel_input_gradient_equals_the_convolution_backward(cin, k, p, size):
    torch.manual_seed(k * 10 + p)
    conv = torch.nn.Conv2d(cin, 5, k, stride=2, padding=p).double()
    x = torch.randn(2, cin, size, size, dtype=torch.double, requires_grad=True)
    y = conv(x)
    g = torch.randn_like(y)
    (ref,) = torch.autograd.grad(y, x, g)
    assert torch.allclose(_subpixel_input_grad(conv.weight, p, x.shape, g), ref, atol=1e-12)


def test_bad_configurations_are_user_errors():
    with pytest.raises(EBMError, match="width"):
        ebm_play.CNNEnergy(width=0)
    with pytest.raises(EBMError, match="unknown model kind"):
        ebm_play.build_model("gan")
    with pytest.raises(EBMError, match="bad configuration"):
        ebm_play.build_model("cnn", depth=3)


# --- configurations from outside: bounded, and sized without building (issue #20) ----------------------
SMALL_CONFIGS = [("cnn", {"width": 3}), ("cnn", {"width": 2, "spectral_norm": True}), ("jem", {"width": 2, "n_classes": 4}),
                 ("jem", {"width": 2, "spectral_norm": True}), ("jem-ensemble", {"members": 2, "width": 2, "spectral_norm": True}),
                 ("rbm", {"hidden": 5}), ("mlp2d", {"hidden": 4, "layers": 2}), ("classifier", {"width": 2})]


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_config_bounds_cover_every_constructor_argument(kind):
    params = set(inspect.signature(MODEL_KINDS[kind].__init__).parameters) - {"self"}
    assert set(CONFIG_BOUNDS[kind]) == params


@pytest.mark.parametrize("kind,config", SMALL_CONFIGS)
def test_state_shapes_are_those_of_the_built_model(kind, config):
    torch.manual_seed(0)
    built = {k: tuple(v.shape) for k, v in build_model(kind, **config).state_dict().items()}
    assert state_shapes(kind, config) == built and list(state_shapes(kind, config)) == list(built)


def test_state_shapes_of_the_largest_configuration_allocate_nothing():
    shapes = state_shapes("jem-ensemble", {"members": 16, "width": 256, "spectral_norm": True})  # 1.25 GB if built
    assert sum(math.prod(s) for s in shapes.values()) == 313_188_944


@pytest.mark.parametrize("kind,config,words", [
    ("jem", {"n_classes": 500000}, "config 'n_classes' must be 2 to 100 for a jem model, got 500000"),
    ("jem", {"n_classes": -1}, "must be 2 to 10"), ("jem", {"n_classes": 1}, "must be 2 to 10"),
    ("rbm", {"visible": 10}, "config 'visible' must be 784 for a rbm model"),
    ("rbm", {"hidden": 8193}, "must be 1 to 8192"), ("mlp2d", {"layers": 200000}, "must be 1 to 16"),
    ("mlp2d", {"hidden": 16000}, "must be 1 to 1024"), ("classifier", {"width": 3000}, "must be 1 to 64"),
    ("jem-ensemble", {"members": 17}, "must be 1 to 16"), ("cnn", {"width": 10**400}, "got 1000000000"),
    ("cnn", {"width": "8"}, "must be a whole number"), ("cnn", {"width": 7.5}, "must be a whole number"),
    ("cnn", {"width": float("inf")}, "must be a whole number"), ("cnn", {"spectral_norm": "yes"}, "true or false"),
    ("cnn", {"depth": 3}, "no field 'depth'"), ("gan", {}, "unknown model kind"),
])
def test_check_config_names_the_field(kind, config, words):
    with pytest.raises(EBMError, match=re.escape(words)):
        check_config(kind, config)


def test_check_config_normalises_whole_floats_and_jem_needs_two_classes():
    assert check_config("cnn", {"width": 8.0}) == {"width": 8} and type(check_config("cnn", {"width": 8.0})["width"]) is int
    with pytest.raises(EBMError, match="n_classes"):
        ebm_play.JEMEnergy(width=2, n_classes=1)  # 0 classes made an energy of +inf


def _noise_cnn():
    """A σ-conditioned CNN with a fitted baseline and, unlike a fresh one, non-trivial modulations."""
    m = ebm_play.NoiseCNNEnergy(width=4, levels=4)
    m.fit_baseline(ebm_play.sample_digits(train=True).x[:500])
    torch.nn.init.normal_(m.film.weight, std=0.3)
    torch.nn.init.normal_(m.readout.weight, std=0.3)
    return m


def test_noise_conditional_cnn_is_its_energy_at_sigma_min_and_survives_a_file(x, tmp_path):
    """E(x) = E(x, σ_min); the fitted histogram baseline and the ladder travel in the file."""
    m = _noise_cnn().eval()
    assert m.kind in ebm_play.models.IMAGE_ENERGIES and m.noise_ladder().tolist() == pytest.approx([1.0, 0.2714, 0.0737, 0.02], rel=1e-3)
    assert torch.equal(m(x), m(x, 0.02)) and torch.equal(m(x), m.at_noise(0.02)(x))
    per_sample = m(x, torch.tensor([0.02, 0.1, 0.3, 0.5, 1.0]))
    assert torch.allclose(per_sample[1], m(x[1:2], 0.1)[0]) and torch.allclose(per_sample[4], m(x[4:5], 1.0)[0])
    loaded = ebm_play.load_model(ebm_play.save_model(m, tmp_path / "n.safetensors"))
    assert torch.equal(loaded(x), m(x)) and torch.equal(loaded.log_pi, m.log_pi)
    digit = ebm_play.sample_digits(train=False).x[:5]
    assert (m(digit) < m(x)).all()  # the baseline alone already rates digits far above uniform noise
    with pytest.raises(EBMError, match="sigma_min"):
        ebm_play.NoiseCNNEnergy(sigma_min=2.0)
    with pytest.raises(EBMError, match="bins"):
        ebm_play.NoiseCNNEnergy(bins=0)
