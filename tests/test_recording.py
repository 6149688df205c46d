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


