"""The Sample tab: its endpoints called directly on a Playground (no server), then /sample,
/sample_files and /score through a real server (conftest) driven by gradio_client: streaming,
downloads, cancelling, validation."""

from __future__ import annotations

import math
import secrets
import threading
import time
import types

import gradio as gr
import numpy as np
import pytest
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from test_recording import fake_recording

import ebm_play
from ebm_play import EBMError, media, settings
from ui import playback as P
from ui import sample_tab as S
from ui.canvas_pad import data_url


def chain_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "ebm-chains" and t.is_alive())


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def run(pg, **kw):
    """The last output of /sample (the final grid, energy plot and result)."""
    return list(S.sample(pg, **{"steps": 5, "chains": 2, **kw}))[-1]


def digit_png(path) -> str:
    ebm_play.images.grid(ebm_play.sample_digits(train=False).x[:1], 1, scale=4, pad=0).save(path)
    return str(path)


# --- the endpoints, no server ----------------------------------------------------------------------
def test_a_run_streams_frames_and_is_kept_for_scrubbing_and_downloads(pg):
    outputs = list(S.sample(pg, None, "langevin", 40, chains=4, seed=1, frames=5))
    grid, plot, result = outputs[-1]
    assert result["steps_done"] == 40 and result["frame_steps"] == [0, 10, 20, 30, 40] and len(result["energy"]) == 4
    with Image.open(grid) as im:
        assert im.size == media.chain_grid(torch.zeros(4, 1, 28, 28)).size
    assert isinstance(plot, gr.LinePlot) and plot.colors_in_legend[0] == "mean"
    rec = pg.records.get(result["record"])
    assert torch.equal(rec.x, pg.records.get(result["record"]).x)
    image, status = P.scrub(pg, result["record"], 19)
    assert status.startswith("frame 3 of 5 · step 20 of 40 · mean energy ") and image != grid
    gif, _mp4, _png, npz = P.sample_files(pg, result["record"], 5)
    with Image.open(gif) as im:
        assert im.n_frames == 5
    with np.load(npz) as z:
        assert np.allclose(z["energies"][-1], result["energy"], atol=1e-4)
    with pytest.raises(EBMError, match="unknown or expired recording"):
        P.sample_files(pg, "no-such-record", 5)


def test_play_ticks_through_the_frames_in_time_and_stops_at_the_last(pg):
    record = run(pg, steps=8, frames=5)[2]["record"]  # frames at steps 0, 2, 4, 6, 8
    timer, _slider, clock = P.play(pg, record, 8)
    assert timer.active is True and isinstance(clock, float)
    _timer, step, _grid, status, clock = P.tick(pg, record, 0, 10, time.monotonic())
    assert step == 2 and status.startswith("frame 2 of 5")  # on time: the next frame
    timer, step, _grid, _status, _clock = P.tick(pg, record, 2, 10, clock - 0.2)
    assert step == 6 and timer == gr.skip()  # 0.2 s late at 10 frames/s: two frames on, still playing
    timer, step, _grid, _status, _clock = P.tick(pg, record, 6, 10, clock)
    assert step == 8 and timer.active is False  # the last frame: the timer goes off by itself
    assert P.tick(pg, record, 8, 10, clock)[0].active is False
    assert P.tick(pg, "gone", 0, 10, None)[0].active is False and P.pause(pg).active is False


def test_samplers_are_offered_only_for_the_models_they_apply_to(pg, tmp_path):
    choices = lambda out: [c[0] for c in out[0].choices]
    cnn = S.knobs(pg, None, "mnist" if "mnist" in pg.models else pg.default_model, "gibbs", None, None)
    assert "gibbs" not in choices(cnn) and cnn[0].value == "langevin"  # gibbs on a CNN falls back
    rbm = str(ebm_play.save_model(ebm_play.RBM(hidden=8), tmp_path / "rbm.safetensors"))
    out = S.knobs(pg, None, "", "gibbs", None, rbm)
    assert "gibbs" in choices(out) and out[0].value == "gibbs"
    assert [k.visible for k in out[2:7]] == [False, False, False, False, False]  # Gibbs has no knobs
    with pytest.raises(EBMError, match="Gibbs sampling needs an RBM model"):
        run(pg, sampler="gibbs")
    assert run(pg, sampler="gibbs", model_file=rbm)[2]["sampler"] == "gibbs"


def test_the_knobs_show_what_each_sampler_has(pg):
    model = pg.models[pg.default_model]
    hmc = S.knobs(pg, None, "", "hmc", None, None)
    assert hmc[5].visible and hmc[5].value == settings.resolve(model, "hmc").options["leapfrog"] and not hmc[7].visible
    annealed = S.knobs(pg, None, "", "annealed", "mala", None)
    assert annealed[6].visible and annealed[7].visible and annealed[7].value == "mala"
    want = settings.resolve(model, "annealed")  # the final temperature in the temperature field
    assert annealed[1] == want.steps and annealed[4].value == want.options["t_end"]
    label = S.knobs(pg, None, "", "langevin", None, None)[-1]
    assert label.interactive is pg.current_model(None)[0].has_classes


def test_start_from_the_replay_buffer_of_the_sessions_run(pg):
    sid = "buffer-" + secrets.token_hex(4)
    with pytest.raises(EBMError, match="this session has no training run"):
        run(pg, session=sid, start="buffer")
    buffer = torch.rand(8, 1, 28, 28) * 2 - 1
    pg.sessions.get(sid).runs["image"] = types.SimpleNamespace(view=types.SimpleNamespace(starts=buffer),
                                                               config=ebm_play.TrainConfig())
    result = run(pg, session=sid, start="buffer", steps=0, chains=3)[2]
    x = pg.records.get(result["record"]).x
    assert all(any(torch.allclose(c, b) for b in buffer) for c in x)  # 0 steps: the picked buffer chains
    pg.sessions.get(sid).runs["image"].view.starts = None  # the run has ended
    with pytest.raises(EBMError, match="has ended and its buffer is gone"):
        run(pg, session=sid, start="buffer")
    del pg.sessions.get(sid).runs["image"]


def test_start_from_a_drawing_on_the_pad(pg, tmp_path):
    png = digit_png(tmp_path / "digit.png")
    big = Image.open(png).resize((280, 280))
    result = run(pg, start="image", start_image=data_url(big), steps=0)[2]  # what the page's canvas pad sends
    x = pg.records.get(result["record"]).x
    assert torch.equal(x, ebm_play.preprocess(big).repeat(2, 1, 1, 1))  # 0 steps: the drawing itself
    editor = {"background": None, "layers": [], "composite": {"path": png}}  # an API caller's editor value
    assert torch.equal(P.digit_of(editor), ebm_play.preprocess(png)) and P.digit_of(None) is None
    with pytest.raises(EBMError, match="draw a digit on the pad"):
        run(pg, start="image", start_image="")  # an empty pad
    with pytest.raises(EBMError, match="the image is empty"):
        run(pg, start="image", start_image=data_url(Image.new("RGB", (280, 280))))  # a cleared, black pad
    with pytest.raises(EBMError, match=r"expected a picture \(data:image"):
        run(pg, start="image", start_image=png)  # a path typed by a caller is never opened


@pytest.mark.parametrize("kwargs,message", [
    (dict(chains=0), "chains must be between 1 and 256"),
    (dict(chains=2.5), "chains must be a whole number"),
    (dict(steps=5001), "steps must be between 0 and 5000"),
    (dict(chains=256, steps=5000), "too much work for one request"),
    (dict(sampler="hmc", steps=2000, chains=64, leapfrog=10), "chains × steps × leapfrog"),
    (dict(temperature=-1.0, sampler="ula"), "temperature must be between"),
    (dict(step_size=0.0, sampler="mala"), "step size must be between"),
    (dict(frames=1), "frames must be between 2 and"),
    (dict(seed=-3), "seed must be between"),
    (dict(sampler="nuts"), "sampler: unknown value 'nuts'"),
    (dict(start="image"), "draw a digit"),
    (dict(start="moon"), "start: unknown value 'moon'"),
    (dict(model="nope"), "unknown model 'nope'"),
    (dict(label=12), "class must be between -1 and 9"),
    (dict(label=3, model="mnist"), "needs a JEM model"),
])
def test_every_value_is_checked_before_any_chain_runs(pg, kwargs, message):
    if kwargs.get("model") == "mnist" and "mnist" not in pg.models:
        pytest.skip("no shipped mnist model")
    before = len(pg.records._items)
    with pytest.raises(EBMError, match=message):
        run(pg, **kwargs)
    assert len(pg.records._items) == before


def test_status_shows_acceptance_and_the_adapted_step_size():
    rec = fake_recording(steps=40, chains=20)
    df, cmap, legend = P.energy_frame(rec, marker=10)
    assert set(df["series"]) >= {"mean", "chain 1", f"chain {P.PLOT_CHAINS}", "training length (10 steps)"}
    assert f"chain {P.PLOT_CHAINS + 1}" not in set(df["series"])  # at most 16 chain lines
    assert legend == ["mean", "training length (10 steps)"] and cmap["mean"] == P.MEAN_COLOR
    assert P.energy_frame(rec, marker=100)[2] == ["mean"]  # a run shorter than training: no marker
    acc = P.accept_frame(rec)
    assert set(acc["series"]) == {"last 20 updates", "since the start"} and acc["value"].between(0, 1).all()
    rec.step_size, rec.meta["adapted"] = 3.0625e-05, True
    assert P.status_line(rec, False) == ("done · step 40 of 40 · mean energy -30 · acceptance 1.00 (last 20), "
                                         "1.00 overall · step size 3.06e-05 (adapted)")


def test_score_reads_a_picture_against_real_digits_and_noise(pg, tmp_path):
    energy, view, note = S.score(pg, None, {"path": digit_png(tmp_path / "d.png")})
    assert math.isfinite(energy) and f"**E(x) = {S.fmt(energy)}**" in note and "real test digits average" in note
    assert Image.open(view).size == (28 * 6, 28 * 6)  # one image: no frame
    with pytest.raises(EBMError, match="upload an image to score"):
        S.score(pg, None, None)


# --- through the server ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sample_streams_frames_then_the_final_grid(client):
    job = client.submit(None, "langevin", 800, None, None, None, 16, 3, frames=12, api_name="/sample")
    image, plot, result = job.result(timeout=50)
    assert len(job.outputs()) >= 3  # two streamed frames or more (one per 0.25 s over > 1 s), then the final grid
    assert result["steps_done"] == 800 and not result["stopped"] and len(result["energy"]) == 16
    assert result["frames"] == 12 and result["frame_steps"][0] == 0 and result["frame_steps"][-1] == 800
    assert all(math.isfinite(e) for e in result["energy"])
    with Image.open(image) as im:
        assert im.mode == "L" and im.size == media.chain_grid(torch.zeros(16, 1, 28, 28)).size
    assert plot is not None
    gif, mp4, png, npz = client.predict(result["record"], 5, api_name="/sample_files")
    with Image.open(gif) as im:
        assert im.n_frames == 12  # as many frames as requested
    with np.load(npz) as z:
        assert z["frames"].shape == (12, 16, 1, 28, 28) and list(z["frame_steps"]) == result["frame_steps"]
    assert Image.open(png).size[0] > 100 and (mp4 is not None) == media.video_available()
    with pytest.raises(AppError, match="unknown or expired recording"):
        client.predict("no-such-record", 5, api_name="/sample_files")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_cancelling_a_stream_stops_the_chains(client):
    before = chain_threads()
    job = client.submit(None, "langevin", 5000, None, None, None, 16, 0, api_name="/sample")
    wait_for(lambda: len(job.outputs()) >= 1, 30, "the first streamed frame")
    assert chain_threads() > before
    job.cancel()
    wait_for(lambda: chain_threads() <= before, 10, "the chains to stop after the cancel")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_the_stop_button_ends_a_run_and_keeps_what_it_recorded(client, app):
    sid = "test-" + secrets.token_hex(6)
    job = client.submit(sid, "langevin", 5000, None, None, None, 8, 0, frames=50, api_name="/sample")
    wait_for(lambda: len(job.outputs()) >= 1, 30, "the first streamed frame")
    S.sample_stop(app.playground, sid)  # what the Stop button does
    _image, _plot, result = job.result(timeout=20)
    assert result["stopped"] and 0 < result["steps_done"] < 5000
    assert result["frame_steps"][-1] == result["steps_done"]  # the last state is a frame


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_metropolis_samplers_report_acceptance_and_step_size(client):
    _image, _plot, result = client.predict(None, "mala", 20, None, None, None, 4, 0, api_name="/sample")
    assert result["options"]["temperature"] < 1e-2 and 0 <= result["accept_rate"] <= 1
    _image, _plot, result = client.predict(None, "hmc", 5, None, None, None, 4, 0, leapfrog=2, api_name="/sample")
    assert result["options"]["leapfrog"] == 2 and result["accept_rate"] is not None


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_start_from_an_uploaded_image_a_class_and_an_uploaded_model(client, app, tmp_path):
    image, _plot, result = client.predict(None, "langevin", 0, None, None, None, 2, 0, start="image",
                                          start_image=handle_file(digit_png(tmp_path / "d.png")), api_name="/sample")
    assert result["start"] == "image" and result["steps_done"] == 0
    with Image.open(image) as im:
        assert np.asarray(im).std() > 10  # the digit, not a blank grid
    if "mnist-jem" in app.playground.models:
        result = client.predict(None, "langevin", 5, None, None, None, 2, 0, label=3, model="mnist-jem",
                                api_name="/sample")[2]
        assert result["class"] == 3 and result["model"] == "mnist-jem"
    mine = ebm_play.save_model(ebm_play.CNNEnergy(width=2), tmp_path / "tiny.safetensors")
    result = client.predict(None, "langevin", 3, None, None, None, 2, 0, model_file=handle_file(str(mine)),
                            api_name="/sample")[2]
    assert result["model"] == "uploaded tiny.safetensors"
    from ebm_play.models import DigitClassifier

    clf = ebm_play.save_model(DigitClassifier(width=2), tmp_path / "clf.safetensors")
    with pytest.raises(AppError, match="not an energy model"):
        client.predict(None, "langevin", 3, None, None, None, 2, 0, model_file=handle_file(str(clf)),
                       api_name="/sample")
    with pytest.raises(AppError, match="steps must be between 0 and 5000"):
        client.predict(None, "langevin", 5001, None, None, None, 2, 0, api_name="/sample")


def test_the_pages_own_knob_values_leave_mala_adapting_its_step(pg):
    """The form fills every knob (so no field is blank), and the page sends them all back: a value
    still as filled in is no choice of the person's, so MALA keeps its warm-up adaptation (issue #21);
    a step size typed in is used as given."""
    model = pg.models[pg.default_model]
    shown = settings.shown(model, "mala").options
    page = dict(sampler="mala", steps=20, step_size=shown["step_size"], noise=shown.get("noise"),
                temperature=shown["temperature"])
    assert run(pg, **page)[2]["adapted"] is True
    typed = run(pg, **{**page, "step_size": 2e-5})[2]
    assert typed["adapted"] is False and typed["step_size"] == pytest.approx(2e-5)
