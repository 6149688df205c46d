"""Recording chains: frames spread over the run within a memory budget, early stops kept consistent."""

from __future__ import annotations

import pytest
import torch

import ebm_play
from ebm_play import recording


@pytest.mark.parametrize("steps,frames", [(0, 5), (1, 2), (10, 11), (100, 7), (5000, 200), (3, 60)])
def test_frame_steps_are_even_distinct_and_include_both_ends(steps, frames):
    s = recording.frame_steps(steps, frames)
    assert s[0] == 0 and s[-1] == steps and s == sorted(set(s))
    assert len(s) == min(frames, steps + 1)


def test_frame_budget_keeps_memory_bounded():
    assert recording.frame_budget(16, 60) == 60
    assert recording.frame_budget(256, 200) * 256 * 28 * 28 * 4 <= recording.MAX_FRAME_BYTES


def test_a_job_around_another_sampling_call_records_it():
    """ChainJob.of runs ebm_play.inpaint (not sample_chains) in its thread and records every step."""
    from ebm_play import masks

    model, image, keep = ebm_play.CNNEnergy(width=2), torch.zeros(1, 1, 28, 28), masks.keep_half("top")
    out = {}

    def task(callback):
        out["res"] = ebm_play.inpaint(model, image, keep, n=2, steps=5, seed=0, callback=callback)
        return out["res"]

    job = recording.ChainJob.of(task, 2, 5, frames=3)
    for _ in job.snapshots(every=0.01):
        pass
    rec = job.recording
    assert torch.equal(rec.x, out["res"].x) and rec.steps == list(range(6)) and rec.frame_at == [0, 2, 5]
    assert torch.equal(rec.frames[0][:, :, :14].float(), image.expand(2, 1, 28, 28)[:, :, :14])  # kept, from step 0


def fake_recording(steps=20, chains=4, frames=6, accept=True) -> recording.Recording:
    r = recording.Recorder(steps, chains, frames)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((chains, 1, 28, 28), generator=g) * 2 - 1
    for k in range(steps + 1):
        x = (x * 0.9).clamp(-1, 1)
        st = ebm_play.samplers.Step(k, x, torch.full((chains,), 10.0 - k), accept=torch.ones(chains) if accept and k
                                    else None)
        assert r(st) is True
    return r.finish(x)


def test_stopping_early_keeps_a_consistent_recording():
    stop = {"now": False}
    r = recording.Recorder(100, 2, 11, should_stop=lambda: stop["now"])
    x = torch.zeros((2, 1, 28, 28))
    for k in range(101):
        stop["now"] = k == 37
        if r(ebm_play.samplers.Step(k, x, torch.zeros(2))) is False:
            break
    rec = r.finish(x)
    assert rec.stopped and rec.last_step == 37 and rec.frame_at[-1] == 37




def test_chains_start_where_asked_with_their_own_seed():
    assert recording.start_chains("uniform", 3, 0) is None  # the sampler draws it from the run's seed
    g = recording.start_chains("gaussian", 5, 7)
    assert g.shape == (5, 1, 28, 28) and g.abs().max() <= 1 and torch.equal(g, recording.start_chains("gaussian", 5, 7))
    digit = torch.linspace(-1, 1, 784).reshape(1, 1, 28, 28)
    assert torch.equal(recording.start_chains("image", 3, 0, image=digit), digit.repeat(3, 1, 1, 1))
    buffer = torch.rand(10, 1, 28, 28) * 2 - 1
    picked = recording.start_chains("buffer", 6, 1, buffer=buffer)
    assert all(any(torch.equal(p, b) for b in buffer) for p in picked)  # chains of the buffer, as they are
    for start, kw, msg in (("moon", {}, "unknown start 'moon'"), ("image", {}, "draw a digit"),
                           ("buffer", {}, "no buffer")):
        with pytest.raises(ebm_play.EBMError, match=msg):
            recording.start_chains(start, 2, 0, **kw)


def test_summary_reports_acceptance_and_the_step_size_of_the_last_update():
    rec = fake_recording(steps=10, chains=3)
    s = rec.summary()
    assert s["steps_done"] == 10 and s["energy"] == [0.0] * 3 and s["mean_energy"] == 0.0 and not s["stopped"]
    assert s["step_size"] is None and s["adapted"] is False
    r = recording.Recorder(2, 1, 3)
    for k in range(3):
        step = ebm_play.samplers.Step(k, torch.zeros(1, 1, 28, 28), torch.zeros(1))
        step.step_size, step.adapting = [1e-4, 2e-4, 3e-4][k], k < 2  # what MALA/HMC report while they adapt
        r(step)
    assert (r.rec.step_size, r.rec.adapting) == (3e-4, False)
