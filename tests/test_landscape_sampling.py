"""Samplers side by side on a 2-D landscape (ebm_play.landscape_sampling): the square's sampler
settings and the comparison's bookkeeping, checked against the samplers run directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ebm_play
from ebm_play import EBMError
from ebm_play import landscapes as L
from ebm_play.landscape_sampling import FRAMES, SAMPLER_DEFAULTS, Comparison, describe, sampler_options
from ebm_play.runtime import make_generator


def test_sampler_options_suit_the_square_and_name_the_side_in_messages():
    for name, d in SAMPLER_DEFAULTS.items():
        opts = sampler_options(name)
        assert opts["step_size"] == d["step_size"] and opts["bounds"] == L.BOUNDS
    assert sampler_options("langevin")["noise"] == pytest.approx((2 * 0.002) ** 0.5, abs=1e-4)  # T = 1
    assert sampler_options("annealed", t_start=5.0) == {"step_size": 0.005, "bounds": L.BOUNDS, "base": "mala",
                                                         "t_end": 1.0, "t_start": 5.0}
    assert sampler_options("hmc", temperature=2.0)["leapfrog"] == 10
    with pytest.raises(EBMError, match="unknown sampler 'gibbs' for sampler B"):
        sampler_options("gibbs", side="B")
    with pytest.raises(EBMError, match="A step size must be between"):
        sampler_options("mala", step_size=5.0, side="A")
    with pytest.raises(EBMError, match="B temperature must be a finite number"):
        sampler_options("ula", temperature=float("inf"), side="B")
    assert describe("annealed", sampler_options("annealed")) == "annealed (step 0.005, T 20→1)"
    assert describe("langevin", sampler_options("langevin")) == "langevin (step 0.002, σ 0.0632)"


def test_a_comparison_is_the_samplers_themselves_from_one_start():
    """Each side equals the sampler run on its own from the same start with the same seed, and two
    identical sides stay identical (same noise); mode shares are those of the final chains."""
    well = L.landscape("double_well")
    modes = L.modes_of(well)
    mala = sampler_options("mala")
    cmp = Comparison(well, [("A", "mala", mala), ("B", "mala", mala), ("C", "ula", sampler_options("ula"))],
                     steps=120, chains=50, seed=3, modes=modes)
    assert list(cmp.run(every_s=0.0))[-1] == 120 and cmp.done
    a, b, c = cmp.particles()
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    x0 = L.start_points("first_mode", modes, 50, 3)
    alone = ebm_play.samplers.run("mala", well, x0, 120, generator=make_generator(4, x0.device), **mala)
    assert torch.equal(alone.x, torch.as_tensor(a))
    res = cmp.result()
    assert res["modes"] == 2 and [s["side"] for s in res["samplers"]] == ["A", "B", "C"]
    assert res["samplers"][0]["mode_share"] == pytest.approx(modes.occupancy(torch.as_tensor(a))[:2].tolist(), abs=1e-4)
    assert res["samplers"][0]["accept_rate"] == pytest.approx(alone.accept_rate, abs=1e-4)
    assert res["samplers"][2]["accept_rate"] is None  # ULA has no accept step
    steps = [k for k, _ in cmp.frames]
    assert steps[0] == 0 and steps[-1] == 120 and len(steps) <= FRAMES + 2
    assert all(len(states) == 3 and states[0].shape == (50, 2) for _, states in cmp.frames)


def test_closing_the_stream_stops_the_chains_and_bad_settings_are_refused():
    ring = L.landscape("ring")
    cmp = Comparison(ring, [("A", "ula", sampler_options("ula"))], steps=5000, chains=10, start="uniform")
    stream = cmp.run(every_s=0.0)
    for k in stream:
        if k >= 20:
            break
    stream.close()
    assert 20 <= cmp.step < 5000 and not cmp.done
    assert cmp.modes is None and "mode_share" not in cmp.result()["samplers"][0]  # a ring has no modes
    for kwargs, msg in ((dict(chains=0), "chains must be between 1 and 1000"),
                        (dict(steps=10**9), "steps must be between 1 and 5000"),
                        (dict(start="middle"), "start must be one of"), (dict(seed=-1), "seed")):
        with pytest.raises(EBMError, match=msg):
            Comparison(ring, [("A", "ula", sampler_options("ula"))], **kwargs)
    with pytest.raises(EBMError, match="at least one sampler"):
        Comparison(ring, [])
