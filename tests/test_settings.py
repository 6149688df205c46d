"""Sampler settings: one resolver with a fixed order of precedence, every knob validated by name."""

import pytest

import ebm_play
from ebm_play import EBMError, settings


class Fake:
    kind = "cnn"
    info = {"samplers": {"mala": {"steps": 7, "step_size": 3e-4}}}


def test_precedence_is_sampler_then_kind_then_file_then_caller():
    assert settings.recommended(None, "mala")["steps"] == 100  # the sampler's own default
    assert settings.recommended(type("M", (), {"kind": "cnn"})(), "mala")["temperature"] == 1e-4  # kind table
    rec = settings.recommended(Fake(), "mala")
    assert rec["steps"] == 7 and rec["step_size"] == 3e-4 and rec["temperature"] == 1e-4  # the file wins
    s = settings.resolve(Fake(), "mala", step_size=1e-5, noise=0.3)  # noise: not a MALA knob, ignored
    assert s.steps == 7 and s.options["step_size"] == 1e-5 and "noise" not in s.options


def test_annealed_takes_its_base_settings_and_temperature_means_the_end():
    s = settings.resolve(Fake(), "annealed", base="mala", temperature=2e-4)
    assert s.options["base"] == "mala" and s.options["t_end"] == 2e-4 and "temperature" not in s.options
    assert s.options["step_size"] == 3e-4  # the file's MALA step size carries over to its annealed use
    assert settings.resolve(Fake(), "hmc", leapfrog=4).work(chains=10) == 10 * 100 * 4


@pytest.mark.parametrize("kw,msg", [(dict(step_size=float("nan")), "step size must be a finite number"),
                                    (dict(step_size=-1), "step size must be between"),
                                    (dict(leapfrog=2.5), "leapfrog steps must be a whole"),
                                    (dict(temperature="hot"), "temperature must be a number"),
                                    (dict(steps=-1), "steps must be between"),
                                    (dict(steps=10 ** 400), "about 10")])
def test_bad_values_are_named(kw, msg):
    with pytest.raises(EBMError, match=msg):
        settings.resolve(Fake(), "hmc", **kw)


def test_the_api_uses_the_same_settings():
    m = ebm_play.load_model("mnist")
    res = ebm_play.sample_chains(m, n=2, steps=3, sampler="mala", seed=0)
    assert res.accept_rate is not None
    with pytest.raises(EBMError, match="unknown sampler"):
        settings.resolve(m, "magic")


@pytest.mark.parametrize("v", [float("nan"), float("inf"), -float("inf"), 10 ** 400, -10 ** 400, "ten", None, True, [1]])
def test_validators_never_crash(v):
    from ebm_play import validate

    with pytest.raises(EBMError):
        validate.whole("n", v, 0, 10)
    with pytest.raises(EBMError):
        validate.number("x", v, 0, 10)


def test_samplers_are_offered_only_where_they_apply():
    cnn, rbm = ebm_play.CNNEnergy(width=2), ebm_play.RBM(hidden=4)
    assert "gibbs" not in settings.applicable(cnn) and "gibbs" in settings.applicable(rbm)
    assert set(settings.applicable(rbm)) >= set(ebm_play.samplers.GRADIENT_SAMPLERS) - set(settings.NEEDS)
    composed = ebm_play.compose((ebm_play.SymmetryEnergy(), 1.0))
    assert "gibbs" not in settings.applicable(composed)
    with pytest.raises(EBMError, match="Gibbs sampling needs an RBM.*mnist is a cnn model"):
        settings.check_applicable(cnn, "gibbs", "mnist")
    assert settings.check_applicable(rbm, "gibbs") == "gibbs"


def test_the_work_budget_counts_leapfrog_steps():
    settings.Settings("hmc", 100, {"leapfrog": 4}).check_work(800)  # 320,000: exactly the limit
    with pytest.raises(EBMError, match=r"chains × steps × leapfrog = 320,400, the limit is 320,000"):
        settings.Settings("hmc", 100, {"leapfrog": 4}).check_work(801)
    with pytest.raises(EBMError, match=r"too much work for one request: chains × steps = 20"):
        settings.Settings("ula", 10).check_work(2, limit=19)
