"""The Denoise tab's endpoints without a server: seeded noise, the engine's own defaults when no knob
is set, curves that belong to their run."""

from __future__ import annotations

import re

import numpy as np
import pytest

import ebm_play
from ebm_play import EBMError
from ebm_play.corruptions import corrupt
from ui import denoise_tab, draw

pytestmark = pytest.mark.timeout(300)

TEST = ebm_play.sample_digits(train=False)
SID = "denoise-tab-0001"


def test_no_knob_set_runs_the_engines_defaults(pg):
    """Nothing set on the page: the tab runs ebm_play.denoise with nothing set (λ, steps, options all
    the engine's), so an improvement of its defaults reaches the page unchanged."""
    out = list(denoise_tab.denoise_page(pg, SID, None, 5, "gaussian", 0.5, 0, 0, 0, "langevin", 0, 0, 0, 0))
    *_, text, result, npz = out[-1]
    noisy = corrupt(TEST.x[5:6], "gaussian", 0.5, seed=0)
    direct = ebm_play.denoise(pg.current_model(SID)[0], noisy, sampler="langevin", seed=0)
    z = np.load(npz)
    assert np.array_equal(z["noisy"], noisy.numpy()) and np.array_equal(z["restored"], direct.x.numpy())
    assert result["steps"] == len(direct.steps) - 1 and result["data_weight"] == draw.engine_default(
        ebm_play.denoise, "data_weight")
    assert "Distance to the clean image" in text


def test_a_set_weight_restores_a_test_digit_and_the_curves_end_where_the_result_does(pg):
    out = list(denoise_tab.denoise(pg, SID, None, 5, "gaussian", 0.5, 0, 0.01, 60, "langevin", 0))
    first = out[0]
    assert first[3:] == ("", None, None) and first[1].constructor_args["value"] is None  # the old run's curves go
    trio, energy, dist, text, result, npz = out[-1]
    assert result["distance_restored"] < result["distance_noisy"] and result["energy_restored"] < result["energy_noisy"]
    z = np.load(npz)
    assert np.array_equal(z["clean"], TEST.x[5:6].numpy())
    assert np.linalg.norm(z["restored"] - z["clean"]) == pytest.approx(result["distance_restored"], rel=1e-5)
    d = dist.constructor_args["value"]
    assert d["step"].max() == 60 and d["value"].iloc[-1] == pytest.approx(result["distance_restored"], rel=1e-3)
    assert "test digit #5" in dist.constructor_args["label"] and "closer" in text
    for number in re.findall(r"\d+\.\d+", text):  # numbers for people: 4 significant digits, no float noise
        assert len(number.replace(".", "").lstrip("0")) <= 4, number


def test_salt_and_pepper_is_reproducible_with_its_seed(pg):
    a, b = (list(denoise_tab.denoise(pg, SID, None, 5, "salt_pepper", 0.2, 3, 0.01, 0))[-1][4] for _ in range(2))
    assert a["distance_noisy"] == b["distance_noisy"] > 0 and a["steps"] == 0


@pytest.mark.parametrize("args,msg", [
    ((None, 1, "speckle", 0.1), "unknown noise kind"), ((None, 1, "occlusion", 2.0), "between 0 and 1"),
    ((None, 1, "gaussian", 0.5, 0, -1.0), "λ"), ((None, 1, "gaussian", 0.5, 0, 0.01, 60, "gibbs"), "gradient sampler"),
])
def test_bad_requests_are_refused_before_any_work(pg, args, msg):
    with pytest.raises(EBMError, match=msg):
        next(denoise_tab.denoise(pg, SID, *args))
