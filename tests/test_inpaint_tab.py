"""The Inpaint tab's endpoints without a server: kept pixels held exactly, the engine's mask
convention (keep_half="top" keeps the top), the engine's own defaults when no knob is set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ebm_play
from ebm_play import EBMError, masks
from ui import draw, inpaint_tab

pytestmark = pytest.mark.timeout(300)

TEST = ebm_play.sample_digits(train=False)
SID = "inpaint-tab-0001"


def run(fn, pg, *args, **kw) -> list:
    return list(fn(pg, *args, **kw))


def test_keep_half_keeps_that_half_exactly_and_fills_the_rest(pg):
    out = run(inpaint_tab.inpaint, pg, SID, None, 3, None, fills=3, steps=20, keep_half="top")
    first, last = out[0], out[-1]
    assert first[1:] == (None, first[2], None, None, None)  # a new run clears the old fills, strip and result
    assert first[2].constructor_args["value"] is None and "mnist" in first[2].constructor_args["label"]
    masked, fills, plot, strip, result, npz = last
    z = np.load(npz)
    x, keep, image = z["x"], z["keep"], z["image"]
    assert np.array_equal(image, TEST.x[3:4].numpy()) and keep[0, 0, :14].all() and not keep[0, 0, 14:].any()
    kept = np.broadcast_to(keep, x.shape) > 0.5
    assert np.array_equal(x[kept], np.broadcast_to(image, x.shape)[kept])  # bit for bit
    assert not np.allclose(x[~kept], np.broadcast_to(image, x.shape)[~kept])  # the rest was filled
    assert result["kept_exactly"] and result["erased_pixels"] == 392 and result["keep_half"] == "top"
    assert result["steps"] == 20 and len(result["energy"]) == 3 and result["input"] == f"test digit #3 (a {int(TEST.y[3])})"
    df = plot.constructor_args["value"]
    assert set(df["series"]) == {"fill 1", "fill 2", "fill 3"} and df["step"].max() == 20
    assert all(p.endswith(".png") for p in (masked, fills, strip))


def test_no_knob_set_runs_the_engines_defaults(pg):
    """What the tab runs with nothing set is ebm_play.inpaint with nothing set: the same fills bit for bit."""
    *_, npz = run(inpaint_tab.inpaint, pg, SID, None, 8, None, fills=2, sampler="langevin", seed=5,
                  keep_half="left")[-1]
    model = pg.current_model(SID)[0]
    direct = ebm_play.inpaint(model, TEST.x[8:9], masks.keep_half("left"), n=2, sampler="langevin", seed=5)
    assert np.array_equal(np.load(npz)["x"], direct.x.numpy())
    with_knob = run(inpaint_tab.inpaint, pg, SID, None, 8, None, fills=2, steps=3, sampler="langevin", seed=5,
                    step_size=1.0, keep_half="left")[-1][4]
    assert with_knob["options"]["step_size"] == 1.0 and with_knob["steps"] == 3


def test_the_page_reads_its_pads_and_its_erase_buttons_paint_the_engines_halves(pg):
    erased = inpaint_tab.erase_half(pg, "top")  # "Erase top half": paints the top, so the bottom is kept
    keep = draw.mask_keep(draw.pad_picture(erased.constructor_args["value"]))
    assert torch.equal(keep, masks.keep_half("bottom"))
    pad = draw.data_url(draw.enlarge(TEST.x[7:8]))
    *_, result, npz = run(inpaint_tab.inpaint_page, pg, SID, pad, None, erased.constructor_args["value"],
                          fills=2, steps=0)[-1]
    z = np.load(npz)
    assert result["input"] == "your drawing" and result["steps"] > 0  # 0 on the page = the default
    assert np.array_equal(z["keep"], masks.keep_half("bottom").numpy()) and result["kept_exactly"]
    with pytest.raises(EBMError):  # a page event never opens a path it is sent
        next(inpaint_tab.inpaint_page(pg, SID, {"path": "/etc/passwd"}, None, erased.constructor_args["value"]))


@pytest.mark.parametrize("kw,msg", [
    (dict(digit=1), "no mask"), (dict(digit=1, keep_half="middle"), "keep half: unknown value"),
    (dict(digit=1, keep_half="top", sampler="gibbs"), "Gibbs sampling needs an RBM"),
    (dict(digit=1, keep_half="top", steps=2001), "steps must be between 0 and 2000"),
    (dict(digit=2000, keep_half="top"), "test digit must be between 0 and 1999"),
])
def test_bad_requests_are_refused_before_any_work(pg, kw, msg):
    with pytest.raises(EBMError, match=msg):
        next(inpaint_tab.inpaint(pg, SID, **kw))
