"""Runs in a background thread: control never waits for the worker, budgets are checked before any
allocation, and an ended run keeps its weights and curves but not its trainer."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

import ebm_play
from ebm_play import EBMError
from ebm_play import landscapes as L
from ebm_play.runs import ImageViews, Limits, Run, Spec, check_budget, estimate
from ebm_play.training import TrainConfig, preset

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def digits():
    return ebm_play.sample_digits(train=True)


def wait_for(pred, timeout=30.0, what="the run"):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def image_run(digits, config=None, **kw) -> Run:
    config = config or preset("fast", buffer_size=256, batch_size=16, sampler_steps=5)
    est = estimate(config)
    return Run("image", Spec(config, digits.x[:512], digits.y[:512], source="test"), ImageViews(fresh_every=0),
               est, **kw)


def test_a_run_trains_pauses_steps_and_stops(digits):
    run = image_run(digits)
    wait_for(lambda: run.step >= 3)
    run.pause()
    assert run.state == "paused"
    wait_for(lambda: run.view.step == run.step, what="the view of the paused step")
    before = run.step
    run.step_once()
    run.step_once()
    wait_for(lambda: run.status()["pending_steps"] == 0, what="two single steps, shown")
    assert run.state == "paused" and run.step == before + 2 and run.view.step == run.step
    assert run.log[-1].endswith(f"2 single steps while paused: now at step {run.step}")  # one line for both
    assert run.log[-2].endswith(f"paused at step {before}")
    model = run.model_copy()
    wait_for(lambda: run.weights_step == run.step)
    assert model.kind == "cnn" and run.model_copy().info["train_steps"] == run.step
    run.resume()
    wait_for(lambda: run.step > before + 3)
    run.stop()
    run.join(10)
    assert run.state == "stopped" and run.trainer is None
    with pytest.raises(EBMError, match="already stopped"):
        run.stop()
    assert len(run.history) == run.step and run.model_copy().info["train_steps"] == run.step


def test_pause_and_stop_come_within_one_sampler_step_of_a_long_update(digits):
    """An update of 400 sampler steps is dropped at the next sampler step: the control call itself
    returns at once, and the update never lands (the step counter and the weights stay)."""
    steps_seen = []
    config = TrainConfig(batch_size=8, sampler_steps=400, buffer_size=64, drift_bound=None)
    run = image_run(digits, config)
    wait_for(lambda: run.trainer is not None and run.state == "running")
    tr = run.trainer
    original = tr.negatives

    def counted(x):  # record how many sampler steps each update got
        steps_seen.append(0)
        check = tr.interrupt
        tr.interrupt = lambda: steps_seen.__setitem__(-1, steps_seen[-1] + 1) or check()
        try:
            return original(x)
        finally:
            tr.interrupt = check

    tr.negatives = counted
    wait_for(lambda: steps_seen and steps_seen[-1] > 20, what="an update under way")
    t = time.perf_counter()
    run.stop()
    assert time.perf_counter() - t < 0.1  # a flag, not a wait
    run.join(30)
    assert run.state == "stopped" and run.step == 0  # the update in progress was dropped
    assert steps_seen[-1] < 400


def test_an_ended_run_frees_its_buffer_and_trainer(digits):
    run = image_run(digits, preset("fast", buffer_size=4096, batch_size=16, sampler_steps=2))
    wait_for(lambda: run.trainer is not None)
    buffer = weakref.ref(run.trainer.buffer.x)
    wait_for(lambda: run.step >= 1)
    run.stop()
    run.join(10)
    gc.collect()
    assert buffer() is None and run.trainer is None
    assert run.view.starts is None and run.view.buffer is not None  # the pictures stay


def test_live_changes_are_checked_by_the_caller_and_applied_by_the_worker(digits):
    run = image_run(digits)
    wait_for(lambda: run.step >= 1)
    with pytest.raises(EBMError, match="width cannot change"):
        run.change(width=99)
    with pytest.raises(EBMError, match="lr must be"):
        run.change(lr=-1.0)
    run.change(lr=5e-4)
    wait_for(lambda: run.config.lr == 5e-4, what="the new learning rate")
    run.stop()
    run.join(10)
    with pytest.raises(EBMError, match="start a new one"):
        run.change(lr=1e-3)


def test_a_landscape_run_pauses_when_nobody_watches():
    pts, _ = L.make_dataset("two_moons", 500, seed=0)
    config = L.train_config()
    from ebm_play.runs import LandscapeViews

    run = Run("landscape", Spec(config, pts, source="two moons"), LandscapeViews(), estimate(config, (2,)),
              idle_pause_s=0.5)
    wait_for(lambda: run.state == "paused", what="the idle pause")
    assert "nobody watched" in run.log[-1] and run.view.E is not None and run.view.E.shape == (80, 80)
    run.set_data(pts[:100])
    run.step_once()
    wait_for(lambda: run.view.data is not None and len(run.view.data) == 100, what="the new data in view")
    run.stop()
    run.join(10)


def test_failures_are_reported_and_end_the_run(digits, monkeypatch):
    run = image_run(digits, start=False)
    wait_for(lambda: run.state == "paused")
    monkeypatch.setattr(run.trainer, "step", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    run.step_once()
    wait_for(lambda: run.state == "failed")
    assert run.error == "RuntimeError: boom" and run.trainer is None


@pytest.mark.parametrize("change,msg", [
    (dict(buffer_size=400_000), "lower the buffer size"),
    (dict(batch_size=4096, width=64), "lower the batch size or width"),
    (dict(sampler_steps=1000, batch_size=2048), "lower the sampler steps"),
])
def test_the_budget_says_what_to_lower(change, msg):
    config = TrainConfig(**change)
    with pytest.raises(EBMError, match=msg):
        check_budget(estimate(config), Limits())


def test_the_estimate_counts_what_the_trainer_allocates(digits):
    """The buffer share of the estimate is the trainer's buffer and its two drift copies, exactly;
    the parameters are those of the model the config builds."""
    config = TrainConfig(buffer_size=1000, batch_size=8)
    est = estimate(config)
    tr = ebm_play.Trainer(config, digits.x[:64], digits.y[:64])
    buffers = [tr.buffer.x, tr._anchor["buffer"]]
    assert est.parts["replay buffer"] == 3 * buffers[0].numel() * 4  # the candidate copy comes later
    assert est.params == sum(p.numel() for p in tr.model.parameters())
    assert estimate(TrainConfig(buffer_size=1000, batch_size=8, drift_bound=None)).parts["replay buffer"] == 1000 * 784 * 4
    dsm = ebm_play.Trainer(preset("dsm", buffer_size=1000, batch_size=8), digits.x[:64])
    assert dsm.buffer is None and estimate(dsm.config).parts["replay buffer"] == 0  # no buffer, no sampler inside
    assert estimate(dsm.config).update_flops < estimate(preset("fast", batch_size=8)).update_flops / 5


def test_control_calls_from_many_threads_never_wait(digits):
    run = image_run(digits, TrainConfig(batch_size=8, sampler_steps=200, buffer_size=64, drift_bound=None))
    wait_for(lambda: run.state == "running")
    times, errors = [], []

    def hit():
        t = time.perf_counter()
        try:
            run.pause()
        except EBMError as e:
            errors.append(str(e))
        times.append(time.perf_counter() - t)

    threads = [threading.Thread(target=hit) for _ in range(45)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(times) < 0.5 and len(errors) == 44 and run.state == "paused"
    run.stop()
    run.join(30)


def test_fresh_chains_run_in_slices_while_the_model_waits(digits):
    """Fresh samples are drawn a few sampler updates at a time between the worker's other work; the
    model takes no step until the panel is done, and the panel is for that step."""
    config = TrainConfig(width=4, batch_size=16, sampler_steps=2, buffer_size=32, seed=0)
    views = ImageViews(fresh_every=3, fresh_steps=2 * ImageViews.FRESH_SLICE + 1)
    calls = []
    advance = views.advance
    views.advance = lambda tr, view: (calls.append(("slice", tr.state.step)), advance(tr, view))[1]
    run = Run("image", Spec(config, digits.x[:512], source="test"), views, estimate(config), start=False)
    wait_for(lambda: run.state == "paused" and not views.busy(), what="the first panel")
    step = run.trainer.step
    run.trainer.step = lambda: (calls.append(("step", run.trainer.state.step)), step())[1]
    calls.clear()
    run.resume()
    wait_for(lambda: run.view.fresh_step >= 3, what="the panel of step 3")
    run.stop()
    run.join(10)
    first = calls.index(("slice", 3))
    assert calls[first: first + 3] == [("slice", 3)] * 3  # 2 full slices and the rest (18 = 8 + 8 + 2 states)
    assert run.view.fresh_step == 3 and all(k == "step" for k, _ in calls[:first])


def test_the_quality_curve_never_judges_the_untrained_step_0(digits):
    """Issue #21: the chart started at confident = 1.0 at step 0, where fresh chains are noise that the
    classifier calls "8" with p > 0.9. The first point is at the first panel after an update."""
    config = TrainConfig(width=4, batch_size=16, sampler_steps=2, buffer_size=32, seed=0)
    views = ImageViews(fresh_every=2, fresh_steps=4, classifier=ebm_play.load_model("mnist-classifier"))
    run = Run("image", Spec(config, digits.x[:512], source="test"), views, estimate(config), max_steps=4)
    wait_for(lambda: run.state == "finished", what="4 updates")
    wait_for(lambda: views.quality, what="a judged panel")
    assert views.quality[0]["step"] > 0 and all(q["step"] > 0 for q in views.quality)
    assert run.view.fresh_step > 0  # the step-0 panel was drawn, just not judged
