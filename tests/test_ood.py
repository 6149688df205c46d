"""OOD scoring: percentile, threshold and TPR arithmetic on synthetic energies (exact values), the
scorer on a toy model whose energies are known, and the JEM "I don't know"."""

import numpy as np
import pytest
import torch
from torch import nn

import ebm_play
from ebm_play import EBMError, ood
from ebm_play.metrics import auroc


class MeanEnergy(nn.Module):
    """E(x) = mean pixel value: a constant image c has energy c exactly (for c = k/8)."""

    def forward(self, x):
        return x.flatten(1).mean(1)


def constant_images(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 28, 28).contiguous()


def test_percentile_counts_lower_energies_and_half_the_ties():
    ref = np.array([4.0, 1.0, 3.0, 2.0])
    assert ood.percentile(ref, 2.5) == 50.0
    assert ood.percentile(ref, 2.0) == 37.5  # one below, one tie counted half: (1 + 0.5) / 4
    assert ood.percentile(ref, 0.0) == 0.0 and ood.percentile(ref, 9.0) == 100.0
    assert ood.percentile(ref, [0.0, 2.5, 9.0]).tolist() == [0.0, 50.0, 100.0]


def test_threshold_accepts_at_least_the_asked_share_of_reference():
    ref = np.random.default_rng(0).permutation(np.arange(1, 101)).astype(float)  # energies 1..100, shuffled
    assert ood.threshold(ref, 0.95) == 95.0 and ood.accepted(ref, 95.0) == 0.95
    assert ood.threshold(ref, 0.951) == 96.0  # ⌈95.1⌉ = 96
    assert ood.threshold(ref, 1.0) == 100.0 and ood.threshold(ref, 0.001) == 1.0
    ten = np.arange(10.0)
    assert ood.threshold(ten, 0.7) == 6.0  # 0.7·10 is 7.000000000000001 in floating point: still the 7th
    assert ood.accepted(ten, ood.threshold(ten, 0.7)) == 0.7
    ties = np.array([1.0, 2.0, 2.0, 2.0, 5.0])
    assert ood.threshold(ties, 0.4) == 2.0 and ood.accepted(ties, 2.0) == 0.8  # ties: at least, not exactly


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.01, float("nan"), True, "0.9", None])
def test_tpr_must_be_in_zero_one(bad):
    with pytest.raises(EBMError, match="true-positive rate"):
        ood.threshold(np.arange(5.0), bad)


def test_roc_with_test_digits_as_positives():
    ref, out = np.array([0.0, 1.0, 2.0, 3.0]), np.array([2.5, 4.0])
    fpr, tpr = ood.roc(ref, out)
    # thresholds rising from −∞: accept 0, 1, 2 (TPR .25 … .75), then 2.5 (FPR .5), 3 (TPR 1), 4 (FPR 1)
    assert fpr.tolist() == [0, 0, 0, 0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0, 0.25, 0.5, 0.75, 0.75, 1.0, 1.0]
    area = np.trapezoid(tpr, fpr) if hasattr(np, "trapezoid") else np.trapz(tpr, fpr)
    assert area == pytest.approx(auroc(torch.tensor(ref), torch.tensor(out)))  # 7/8


def test_scorer_on_a_model_with_known_energies():
    ref_values = [k / 8 for k in range(-8, 9)]  # 17 reference energies −1, −0.875, …, 1
    sc = ood.OODScorer(MeanEnergy(), reference=constant_images(ref_values))
    assert sc.n == 17 and sc.reference.tolist() == ref_values
    v = sc.judge(constant_images([0.0]), tpr=0.5)  # k = ⌈8.5⌉ = 9: the 9th smallest, 0.0
    assert (v.energy, v.threshold, v.in_distribution, v.label) == (0.0, 0.0, True, "in-distribution")
    assert v.percentile == pytest.approx(100 * 8.5 / 17)
    v = sc.judge(constant_images([0.125]), tpr=0.5)
    assert not v.in_distribution and v.as_dict()["verdict"] == "out-of-distribution"

    rep = sc.compare_images(constant_images([0.25, 0.5, 0.75, 1.0]), tpr=0.5)
    assert rep.n == 4 and rep.threshold == 0.0 and rep.fpr_at_tpr == 0.0
    assert rep.auroc == pytest.approx(auroc(torch.tensor(ref_values), torch.tensor([0.25, 0.5, 0.75, 1.0])))
    assert rep.roc_fpr[0] == 0 and rep.roc_tpr[-1] == 1 and np.all(np.diff(rep.roc_fpr) >= 0)
    assert set(rep.as_dict()) >= {"auroc", "fpr_at_tpr", "threshold", "n"}
    with pytest.raises(EBMError, match="no images"):
        sc.compare([])


def test_builtin_sets_and_cache_with_the_real_test_digits():
    model = MeanEnergy()
    sc = ood.scorer_for(model)
    assert ood.scorer_for(model) is sc and sc.n == len(ebm_play.sample_digits(train=False).x)
    sets = sc.builtin()
    assert set(sets) == {"uniform noise", "gaussian noise", "inverted digits", "rotated digits", "letters", "constant"}
    assert all(len(e) == ood.N_BUILTIN for e in sets.values())
    # mean pixel: inverted digits (mostly white) are far above the test digits (mostly black)
    assert sc.compare(sets["inverted digits"]).auroc == 1.0


def test_classify_says_i_dont_know_when_the_energy_is_too_high():
    torch.manual_seed(0)
    jem = ebm_play.JEMEnergy(width=4).eval()
    x = ebm_play.sample_digits(train=False).x[:1]
    sc = ood.OODScorer(jem, reference=ebm_play.sample_digits(train=False).x[:50])
    r = ood.classify(jem, x, 0.95, scorer=sc)
    assert len(r["probabilities"]) == 10 and sum(r["probabilities"]) == pytest.approx(1.0, abs=1e-9)
    assert r["prediction"] == int(np.argmax(r["probabilities"]))
    assert r["energy"] == pytest.approx(float(ebm_play.score(jem, x)[0]), abs=1e-5)
    sc.reference = np.sort(sc.reference) + 1e6  # every test digit far above: x is in-distribution
    r = ood.classify(jem, x, 0.95, scorer=sc, confident=0.05)
    assert r["in_distribution"] and r["answer"] == str(r["prediction"])
    sc.reference = np.sort(sc.reference) - 2e6  # every test digit far below: x is out-of-distribution
    r = ood.classify(jem, x, 0.95, scorer=sc, confident=0.05)
    assert not r["in_distribution"] and r["answer"] == "I don't know" and r["percentile"] == 100.0
    with pytest.raises(EBMError, match="needs a JEM"):
        ood.classify(ebm_play.CNNEnergy(width=4), x)


# --- a model of other data: judged against its own held-out images -----------------------------
from ebm_play.data import load_dataset  # noqa: E402


def test_a_model_of_other_data_is_judged_against_its_own_held_out_images():
    glyphs = load_dataset("glyphs")
    model = MeanEnergy()
    model.info = {"dataset": glyphs.info()}  # as a weights file trained on the bundled glyphs records it
    s = ood.scorer_for(model)
    assert s.reference_name == "held-out images of glyphs" and s.n == 400
    # percentiles are among those 400 images: the median held-out energy sits at 50 %
    e = s.energy(glyphs.test.x)
    assert s.percentile(float(np.median(e))) == pytest.approx(50.0, abs=0.25)
    assert set(s.builtin()) == {"MNIST digits", "uniform noise", "gaussian noise", "inverted images",
                                "rotated images", "letters", "constant"}
    # the AUROC is of held-out glyphs against MNIST digits; glyphs carry more ink (mean 0.19 against
    # 0.13), so under E = mean pixel most digits sit below them: under 0.5
    digits = s.builtin()["MNIST digits"]
    assert s.compare(digits).auroc == auroc(torch.from_numpy(e), torch.from_numpy(digits)) < 0.5
    plain = MeanEnergy()
    assert ood.scorer_for(plain).reference_name == "test digits" and ood.scorer_for(plain).n == 2000
    swapped = ood.scorer_for(plain, glyphs)  # data given (an app's upload): replaces the cached scorer
    assert swapped.n == 400 and ood.scorer_for(plain) is swapped


def test_a_model_in_memory_is_judged_against_the_data_set_reference_gives_it():
    glyphs = load_dataset("glyphs")
    model = MeanEnergy()
    model.info = {"dataset": {**glyphs.info(), "arg": "/tmp/gradio/x/upload.zip"}}  # a path is never followed
    assert ood.scorer_for(model).reference_name == "test digits"
    ood.set_reference(model, glyphs.reference())  # what the Playground does for a model of an upload
    s = ood.scorer_for(model)
    assert s.reference_name == "held-out images of glyphs" and s.n == 400 and ood.scorer_for(model) is s
    assert torch.equal(s.reference_images, glyphs.test.x) and len(glyphs.reference().train.x) == 0
    assert glyphs.reference().test.x.untyped_storage().nbytes() == glyphs.test.x.numel() * 4  # not the whole set


def test_classify_names_the_classes_of_its_data():
    glyphs = load_dataset("glyphs")
    torch.manual_seed(0)
    jem = ebm_play.JEMEnergy(width=4, n_classes=8).eval()
    jem.info = {"dataset": glyphs.info()}
    r = ood.classify(jem, glyphs.test.x[:1], tpr=1.0)
    assert r["classes"] == glyphs.classes and len(r["probabilities"]) == 8
    assert r["answer"].removeprefix("probably ") in glyphs.classes
    assert "held-out images of glyphs" in ood.classify(jem, torch.ones(1, 1, 28, 28), tpr=0.01)["explanation"] or \
        r["in_distribution"]
