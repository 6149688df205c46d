import pytest
import torch

import ebm_play
from ebm_play.composition import ClassEnergy, ComposedEnergy, Expert, InkEnergy, SketchEnergy, SymmetryEnergy, compose
from ebm_play.errors import EBMError


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.rand(4, 1, 28, 28) * 2 - 1


def test_weighted_sum_with_negative_and_disabled_experts(x):
    a, b, c = ebm_play.CNNEnergy(width=4), ebm_play.CNNEnergy(width=4), ebm_play.CNNEnergy(width=4)
    e = ComposedEnergy([Expert("a", a, 1.0), Expert("b", b, -0.5), Expert("c", c, 3.0, enabled=False)])
    assert torch.allclose(e(x), a(x) - 0.5 * b(x))
    assert set(e.terms(x)) == {"a", "b"}


def test_class_experts_are_jem_conditional_energies(x):
    jem = ebm_play.JEMEnergy(width=4)
    e = compose((ClassEnergy(jem, 3), 1.0), (ClassEnergy(jem, 8), -1.0))
    f = jem.logits(x)
    assert torch.allclose(e(x), -f[:, 3] + f[:, 8])
    with pytest.raises(EBMError, match="class must be"):
        ClassEnergy(jem, 10)


def test_constraint_energies_vanish_where_the_constraint_holds():
    sym = torch.rand(2, 1, 28, 14) * 2 - 1
    sym = torch.cat([sym, torch.flip(sym, [-1])], -1)
    assert torch.allclose(SymmetryEnergy()(sym), torch.zeros(2))
    assert (SymmetryEnergy()(torch.rand(2, 1, 28, 28) * 2 - 1) > 1).all()
    target = torch.full((1, 1, 28, 28), -1.0)
    target[..., :7, :] = 1.0  # a quarter of the pixels full of ink
    assert InkEnergy(target=0.25)(target).item() == pytest.approx(0.0, abs=1e-10)
    assert InkEnergy(target=0.25)(-target).item() == pytest.approx(((0.75 - 0.25) / 0.05) ** 2)
    sketch = target.clone()
    assert SketchEnergy(sketch)(sketch).item() == 0.0
    assert SketchEnergy(sketch)(-sketch).item() > 0


def test_composed_energies_work_with_every_gradient_sampler():
    torch.manual_seed(0)
    e = compose((ebm_play.CNNEnergy(width=4), 1.0), (SymmetryEnergy(), 2.0))
    for s in ("langevin", "ula", "mala", "hmc", "annealed"):
        res = ebm_play.sample_chains(e, 3, 5, s, seed=0)
        assert res.x.shape == (3, 1, 28, 28) and torch.isfinite(res.energy).all()


def test_symmetry_expert_makes_samples_more_symmetric():
    e = compose((SymmetryEnergy(), 1.0))
    x0 = torch.rand(8, 1, 28, 28) * 2 - 1
    before = SymmetryEnergy()(x0).mean()
    after = SymmetryEnergy()(ebm_play.sample(e, x0=x0, steps=30, seed=0)).mean()
    assert after < before / 4


def test_nothing_enabled_is_an_error():
    with pytest.raises(EBMError):
        ComposedEnergy([Expert("a", SymmetryEnergy(), 0.0)])
