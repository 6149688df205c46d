"""The Classify tab's endpoint without a server: p(y|x) next to the energy, and "I don't know"."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ebm_play.playground import Playground
from ui import classify_tab, draw

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pg():
    p = Playground("cpu")
    if not any(m.has_classes for m in p.models.values()):
        pytest.skip("no JEM model shipped")
    return p


def test_ten_probabilities_an_energy_and_an_answer(pg):
    plot, answer, r = classify_tab.classify(pg, "classify-tab-01", None, 1, 0.95)
    p = r["probabilities"]
    assert len(p) == 10 and sum(p) == pytest.approx(1.0, abs=1e-5) and r["prediction"] == int(np.argmax(p))
    assert r["answer"] in ("I don't know", str(r["prediction"]), f"probably {r['prediction']}") and r["answer"] in answer
    assert list(plot.constructor_args["value"]["digit"]) == [str(i) for i in range(10)]
    assert "test digit #1" in plot.constructor_args["label"] and r["model"] in plot.constructor_args["label"]
    if r["model"] == "mnist-ood":  # three JEMs averaged: the answer names the energy it uses
        assert "E(x) = mean_i (E_i(x) − μ_i)/σ_i" in answer


def test_noise_gets_i_dont_know_however_confident_the_classifier(pg):
    a = (np.random.default_rng(0).random((100, 100)) * 255).astype(np.uint8)
    _plot, answer, r = classify_tab.classify_page(pg, "classify-tab-01", draw.data_url(Image.fromarray(a)), None, 0.95)
    assert r["answer"] == "I don't know" and r["verdict"] == "out-of-distribution" and r["input"] == "your drawing"
