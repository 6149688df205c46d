"""The OOD check tab's endpoints without a server: a digit below noise, plots that name the image
they show (issue #21: the marker and legend stayed on the first image), batches against test digits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import ebm_play
from ebm_play import EBMError, ood
from ui import draw, ood_tab
from ui.common import fmt

pytestmark = pytest.mark.timeout(300)

TEST = ebm_play.sample_digits(train=False)
SID = "ood-tab-0001"


def noise_url(seed=0) -> str:
    a = (np.random.default_rng(seed).random((100, 100)) * 255).astype(np.uint8)
    return draw.data_url(Image.fromarray(a))


def test_a_digit_scores_below_noise_and_each_plot_shows_its_own_image(pg):
    for model in ("mnist-ood", ood_tab.CURRENT):
        plot_d, text_d, digit = ood_tab.ood_score(pg, SID, None, 0, model)
        plot_n, text_n, noise = ood_tab.ood_score_page(pg, SID, noise_url(), None, model)
        assert digit["energy"] < noise["energy"] and digit["percentile"] < noise["percentile"]
        assert noise["verdict"] == "out-of-distribution" and noise["percentile"] > 99 and digit["tpr"] == 0.95
        assert noise["input"] == "your drawing" and digit["input"].startswith("test digit #0")
        for plot, r in ((plot_d, digit), (plot_n, noise)):
            df, label = plot.constructor_args["value"], plot.constructor_args["label"]
            # the same series names every time (the page keeps a legend's names), the figures in the title
            assert ood_tab.ME in set(df["source"]) and ood_tab.TEST in set(df["source"])
            assert r["input"] in label and fmt(r["energy"]) in label
            assert set(plot.constructor_args["color_map"]) == set(df["source"])
        assert "higher than" in text_n


def test_batches_give_an_auroc_against_test_digits(pg, tmp_path):
    grid, roc, text, result = ood_tab.ood_batch(pg, SID, None, "uniform noise")
    assert result["auroc"] > 0.9 and result["n"] == 500 and "AUROC" in text and "uniform noise" in \
        roc.constructor_args["label"]
    npz = tmp_path / "two.npz"
    np.savez(npz, x=TEST.x[:2].numpy())
    files = [{"path": str(npz), "orig_name": "two.npz"}]
    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((50, 50)) * 255).astype(np.uint8)).save(tmp_path / f"n{i}.png")
        files.append({"path": str(tmp_path / f"n{i}.png")})
    _grid, _roc, _text, result = ood_tab.ood_batch(pg, SID, files, "")
    assert result["n"] == 5 and 0 <= result["auroc"] <= 1 and 0 <= result["fpr_at_tpr"] <= 1
    (tmp_path / "notes.txt").write_text("not a picture")
    for files, builtin, msg in (([{"path": str(tmp_path / "notes.txt"), "orig_name": "notes.txt"}], "",
                                 "notes.txt: not an image"), (None, "zebras", "built-in set: unknown value"),
                                (None, "", "upload some images"), ("a path", "", "must be a list of uploaded files"),
                                ([{"path": str(npz)}] * 257, "", "too many files")):
        with pytest.raises(EBMError, match=msg):
            ood_tab.ood_batch(pg, SID, files, builtin)


def test_bad_requests_are_refused(pg):
    for args, msg in (((None, 1, "no-such-model"), "unknown model"),
                      ((None, 1, ood_tab.CURRENT, 2.0), "true-positive rate must be between")):
        with pytest.raises(EBMError, match=msg):
            ood_tab.ood_score(pg, SID, *args)


def test_builtin_set_names_match_the_engine():
    assert ood_tab.BUILTIN == list(ood.builtin_sets())
